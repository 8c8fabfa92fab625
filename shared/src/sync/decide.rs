//! Deciding about a running wave from what SSM reports (pure).
//!
//! Used by the completion event handler and the scheduled sweep alike. The
//! lease expresses liveness, not the wave's length: while SSM reports any of
//! the wave's commands as non-terminal, the lease is renewed; the wave is
//! finished only when all are terminal, or when its commands expired (their
//! delivery plus execution timeout), or when the instances still pending
//! went away (the executor marks them [`InvocationView::gone`]). A wave
//! whose sending stopped (paused, or its sender died and its lease expired)
//! is resumed from its record; one with no record is judged on the commands
//! found by their `Comment`, once its lease expired.
//!
//! A wave whose release the instances' shrink guard refused ends
//! [`WaveEnd::Refused`]: `current` was kept, nobody is blamed, and the
//! generation waits for new demand (or a sync with `allow_shrink`). When
//! some instances took it, those that refused had measured it against an
//! older release (they missed a wave): they catch up like unreachable ones.
//!
//! A wave fails as a release (or configuration) failure, not the hosts'
//! fault, when more than half of the instances it ran on failed: then nobody's
//! failures count toward quarantine (a circuit breaker: a bad release or a
//! fleet-wide misconfiguration must not quarantine the whole fleet). A wave
//! never succeeds without syncing anywhere, unless every instance left.

use std::collections::HashMap;

use serde::Serialize;

use super::state::{Op, Wave, WaveEnd};
use crate::events::CommandStatus;
use crate::ssm_document::history::{InstanceResult, instance_result};

/// One invocation of a command, as SSM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationView {
    /// The instance.
    pub instance_id: String,
    /// Its status.
    pub status: CommandStatus,
    /// Its `StatusDetails` (`Undeliverable`, `DeliveryTimedOut`, ...).
    pub details: String,
    /// The instance left the fleet while the invocation was pending: it
    /// counts as ended ([`InstanceResult::Gone`]).
    pub gone: bool,
    /// The instance is in service but its agent lost its connection while
    /// the invocation was pending: the wave stops waiting for it
    /// ([`InstanceResult::Unreachable`]; the sweep catches it up later).
    pub unreachable: bool,
    /// The shrink guard refused the release there, and why.
    pub refused: Option<String>,
    /// An object changed after the wave's manifest was written (exact
    /// releases): the instance kept `current`. Not its failure, nor the
    /// release's: the change is demand for the next wave.
    pub stale: bool,
}

impl InvocationView {
    /// An invocation as listed.
    pub fn new(instance_id: impl Into<String>, status: &str, details: &str) -> Self {
        InvocationView {
            instance_id: instance_id.into(),
            status: CommandStatus::parse(status),
            details: details.to_owned(),
            gone: false,
            unreachable: false,
            refused: None,
            stale: false,
        }
    }

    /// Whether the wave still waits for it.
    pub fn pending(&self) -> bool {
        !self.gone && !self.unreachable && !self.status.is_terminal()
    }

    fn result(&self) -> InstanceResult {
        match (self.gone, self.unreachable) {
            (true, _) => InstanceResult::Gone,
            (_, true) if !self.status.is_terminal() => InstanceResult::Unreachable,
            _ if self.refused.is_some() && self.status.is_terminal() => InstanceResult::Refused,
            // Never attempted the release the wave names: it had moved on.
            _ if self.stale && self.status.is_terminal() => InstanceResult::NotAttempted,
            _ => instance_result(&self.status, &self.details),
        }
    }
}

/// One command of a wave, as SSM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandView {
    /// The command id.
    pub command_id: String,
    /// The command's own status.
    pub status: CommandStatus,
    /// Its invocations (empty when not listed).
    pub invocations: Vec<InvocationView>,
}

impl CommandView {
    /// Whether it may still change: its status says so, or one of its
    /// invocations (a command's status can lag its invocations).
    pub fn pending(&self) -> bool {
        (!self.status.is_terminal() && !self.invocations.iter().any(|i| i.gone || i.unreachable))
            || self.invocations.iter().any(InvocationView::pending)
    }
}

/// Why a wave failed without blaming its hosts, or why it cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "blame", rename_all = "snake_case")]
pub enum Blame {
    /// More than half of the instances it ran on failed: the release or the
    /// configuration (agent too old, no S3 permission, wrong region), not
    /// the hosts. Nobody is quarantined for it.
    Release {
        /// Instances that failed.
        failed: usize,
        /// Instances it ran on (synced or failed).
        attempted: usize,
    },
    /// It reached no instance: every one was unreachable (agents lost, an
    /// SSM outage).
    Unreachable {
        /// How many.
        unreachable: usize,
    },
    /// No instance could be sent the wave at all (all quarantined, all
    /// agents too old, none online): a configuration failure.
    Configuration {
        /// What stood in the way.
        reason: String,
    },
    /// The instances' shrink guard refused the release (`current` kept).
    Refused {
        /// Instances that refused it.
        refused: usize,
        /// Why, as the first of them said.
        reason: String,
    },
}

impl Blame {
    /// A one-line description for logs and responses.
    pub fn describe(&self) -> String {
        match self {
            Blame::Release { failed, attempted } => format!(
                "release or configuration failure: {failed} of {attempted} instances failed; nobody is quarantined for it"
            ),
            Blame::Unreachable { unreachable } => {
                format!(
                    "no instance was reached ({unreachable} unreachable): an SSM or agent outage, or a configuration failure"
                )
            }
            Blame::Configuration { reason } => format!("configuration failure: {reason}"),
            Blame::Refused { refused, reason } => format!(
                "release refused by the shrink guard on {refused} instance(s): {reason}; to switch anyway, invoke codebase-sync with {{\"action\": \"sync\", \"allow_shrink\": true}}"
            ),
        }
    }
}

/// How a finished wave went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveResult {
    /// Success when every instance synced, went away, or was unreachable
    /// (and at least one synced, unless every one left).
    pub end: WaveEnd,
    /// Each instance's result.
    pub results: Vec<(String, InstanceResult)>,
    /// Why it failed without blaming its hosts.
    pub blame: Option<Blame>,
}

impl WaveResult {
    /// The instances with `result`.
    pub fn with(&self, result: InstanceResult) -> Vec<String> {
        self.results.iter().filter(|(_, r)| *r == result).map(|(i, _)| i.clone()).collect()
    }

    /// The results to count in the instances' run histories: a release
    /// failure counts against nobody.
    pub fn countable(&self) -> Vec<(String, InstanceResult)> {
        self.results
            .iter()
            .map(|(id, r)| match (r, &self.blame) {
                // A release failure, or a release the guard refused (its
                // wave skips the release check), counts against nobody.
                (InstanceResult::Failed, Some(Blame::Release { .. } | Blame::Refused { .. })) => {
                    (id.clone(), InstanceResult::NotAttempted)
                }
                _ => (id.clone(), *r),
            })
            .collect()
    }
}

/// What to do with a running wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "settlement", rename_all = "snake_case")]
pub enum Settlement {
    /// Some command still runs: renew the lease.
    Running {
        /// Commands not yet terminal.
        pending: usize,
    },
    /// The sender may still be sending (not every id recorded, lease valid).
    Sending,
    /// Sending stopped before the end (paused, or the sender died and its
    /// lease expired): take the lease and send the rest.
    Resume,
    /// Every command is terminal (or expired, or its instances went away):
    /// finish the wave.
    Done(WaveResult),
    /// The sender died before sending anything and left no record: abandon the wave.
    Dead,
}

/// Decides about `wave` from its `commands` (recorded ids, plus those found
/// by comment when not every id was recorded) at `now`. `intended` is the
/// instances the wave meant to reach (its record, written before sending;
/// `None` when the record is missing): one that no command reached was never
/// attempted. `expires_at` is when the wave's commands expire (their
/// delivery plus execution timeout): past it, what is still pending was
/// unreachable.
pub fn settle(
    wave: &Wave,
    commands: &[CommandView],
    intended: Option<&[String]>,
    now: u64,
    expires_at: u64,
) -> Settlement {
    if !wave.sent && wave.lease_expires_at < now && intended.is_some() {
        return Settlement::Resume;
    }
    // Only the sender extends a sending wave's lease (bounded by its own
    // deadline): a settle renewing it would keep a dead sender's wave.
    if !wave.sent && wave.lease_expires_at >= now {
        return Settlement::Sending;
    }
    let pending = commands.iter().filter(|c| c.pending()).count();
    let expired = now >= expires_at;
    if pending > 0 && !expired {
        return Settlement::Running { pending };
    }
    if commands.is_empty() {
        // Sent to nobody (nothing to sync), or the sender died first.
        return if wave.sent {
            Settlement::Done(WaveResult { end: WaveEnd::Success, results: Vec::new(), blame: None })
        } else {
            Settlement::Dead
        };
    }
    // In the order first seen; indexed by instance (a linear search made
    // the settle of n instances O(n²): BENCHMARKS.md, planner throughput).
    let mut results: Vec<(String, InstanceResult)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for inv in commands.iter().flat_map(|c| &c.invocations) {
        // Past the commands' expiry, what never ended never reached an agent.
        let result = if inv.pending() { InstanceResult::Unreachable } else { inv.result() };
        match index.get(inv.instance_id.as_str()) {
            // An instance in two commands (a retried chunk): the better result counts.
            Some(&at) if rank(result) < rank(results[at].1) => results[at].1 = result,
            Some(_) => {}
            None => {
                index.insert(&inv.instance_id, results.len());
                results.push((inv.instance_id.clone(), result));
            }
        }
    }
    for id in intended.unwrap_or_default() {
        if !index.contains_key(id.as_str()) {
            index.insert(id, results.len());
            results.push((id.clone(), InstanceResult::NotAttempted));
        }
    }
    let refusal = commands.iter().flat_map(|c| &c.invocations).find_map(|i| i.refused.clone());
    Settlement::Done(judge(results, refusal))
}

/// The end and the blame of a wave from its instances' results; `refusal`
/// is why the first refusing instance refused.
pub fn judge(results: Vec<(String, InstanceResult)>, refusal: Option<String>) -> WaveResult {
    let count = |r: InstanceResult| results.iter().filter(|(_, x)| *x == r).count();
    let (synced, failed, unreachable) =
        (count(InstanceResult::Synced), count(InstanceResult::Failed), count(InstanceResult::Unreachable));
    let refused = count(InstanceResult::Refused);
    if refused > 0 && synced == 0 {
        let reason = refusal.unwrap_or_else(|| "the shrink guard refused the release".into());
        return WaveResult { end: WaveEnd::Refused, results, blame: Some(Blame::Refused { refused, reason }) };
    }
    // Some instances took the release within their guard: those that refused
    // measured it against an older release (they missed a wave), and catch
    // up to it like an instance that was unreachable.
    let attempted = synced + failed;
    let blame = if failed > 0 && failed * 2 > attempted {
        Some(Blame::Release { failed, attempted })
    } else if synced == 0 && unreachable > 0 {
        Some(Blame::Unreachable { unreachable })
    } else {
        None
    };
    let clean = results.iter().all(|(_, r)| {
        matches!(
            r,
            InstanceResult::Synced | InstanceResult::Gone | InstanceResult::Unreachable | InstanceResult::Refused
        )
    });
    let end = if clean && blame.is_none() { WaveEnd::Success } else { WaveEnd::Failure };
    WaveResult { end, results, blame }
}

fn rank(r: InstanceResult) -> u8 {
    match r {
        InstanceResult::Synced => 0,
        InstanceResult::Gone => 1,
        InstanceResult::Unreachable => 2,
        InstanceResult::Refused => 3,
        InstanceResult::Failed => 4,
        InstanceResult::NotAttempted => 5,
    }
}

/// The store transition a settlement calls for: a wave whose ids were all
/// recorded is finished outright; one whose sender died is taken over, which
/// the store allows only once its lease expired; a stopped one is resumed.
pub fn transition(wave: &Wave, settlement: &Settlement, now: u64, lease_ms: u64) -> Option<Op> {
    let finish = |end| {
        if wave.sent {
            Op::Finish { wave_id: wave.id.clone(), end }
        } else {
            Op::TakeOver { wave_id: wave.id.clone(), now, end }
        }
    };
    match settlement {
        Settlement::Running { .. } => Some(Op::Renew { wave_id: wave.id.clone(), sender: None, now, lease_ms }),
        Settlement::Sending => None,
        // The resumer's token: never the token of an earlier sender of the wave.
        Settlement::Resume => {
            Some(Op::Resume { wave_id: wave.id.clone(), sender: format!("{}@{now}", wave.id), now, lease_ms })
        }
        Settlement::Done(result) => Some(finish(result.end)),
        Settlement::Dead => Some(finish(WaveEnd::Abandoned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: u64 = u64::MAX;

    fn wave(sent: bool, lease: u64) -> Wave {
        Wave {
            id: "w".into(),
            target: 3,
            lease_expires_at: lease,
            command_ids: vec!["c1".into()],
            sent,
            ..Wave::default()
        }
    }

    fn cmd(status: &str, invocations: &[(&str, &str)]) -> CommandView {
        CommandView {
            command_id: "c1".into(),
            status: CommandStatus::parse(status),
            invocations: invocations.iter().map(|(i, s)| InvocationView::new(*i, s, s)).collect(),
        }
    }

    fn detailed(status: &str, invocations: &[(&str, &str, &str)]) -> CommandView {
        CommandView {
            command_id: "c1".into(),
            status: CommandStatus::parse(status),
            invocations: invocations.iter().map(|(i, s, d)| InvocationView::new(*i, s, d)).collect(),
        }
    }

    fn done(s: Settlement) -> WaveResult {
        match s {
            Settlement::Done(r) => r,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn an_instance_whose_manifest_went_stale_is_nobodys_failure() {
        // Ten instances; an upload after the manifest makes the last three stale.
        let mut c = cmd("Failed", &[]);
        for n in 0..10 {
            let mut inv = InvocationView::new(format!("i-{n}"), if n < 7 { "Success" } else { "Failed" }, "Failed");
            inv.stale = n >= 7;
            c.invocations.push(inv);
        }
        let r = done(settle(&wave(true, NEVER), &[c], None, 10, NEVER));
        assert_eq!(r.with(InstanceResult::NotAttempted), ["i-7", "i-8", "i-9"]);
        assert!(r.countable().iter().all(|(_, r)| *r != InstanceResult::Failed), "never counted toward quarantine");
        assert_eq!(r.blame, None);
        assert_eq!(r.end, WaveEnd::Failure, "the fleet did not converge: the upload's wave follows");
        // Stale with no stale line (another failure exiting 75) is a failure.
        let plain = InvocationView::new("i-x", "Failed", "Failed");
        assert_eq!(plain.result(), InstanceResult::Failed);
    }

    #[test]
    fn running_commands_renew_even_when_the_lease_expired() {
        for lease in [0, 1_000_000] {
            let s = settle(
                &wave(true, lease),
                &[cmd("InProgress", &[("a", "Success"), ("b", "InProgress")])],
                None,
                500,
                NEVER,
            );
            assert_eq!(s, Settlement::Running { pending: 1 });
            assert!(matches!(transition(&wave(true, lease), &s, 500, 10), Some(Op::Renew { .. })));
        }
        // A command whose status lags its invocations still counts as running.
        let s = settle(&wave(true, 0), &[cmd("InProgress", &[("a", "Success")])], None, 500, NEVER);
        assert_eq!(s, Settlement::Running { pending: 1 });
    }

    #[test]
    fn all_success_finishes_with_success() {
        let s = settle(&wave(true, 1_000), &[cmd("Success", &[("a", "Success"), ("b", "Success")])], None, 500, NEVER);
        assert_eq!(
            transition(&wave(true, 1_000), &s, 500, 10),
            Some(Op::Finish { wave_id: "w".into(), end: WaveEnd::Success })
        );
        let r = done(s);
        assert_eq!((r.end, &r.blame), (WaveEnd::Success, &None));
        assert_eq!(r.with(InstanceResult::Synced), ["a", "b"]);
    }

    #[test]
    fn a_few_failed_hosts_fail_the_wave_and_count_against_them() {
        let ok: Vec<(String, String)> = (0..5).map(|i| (format!("ok{i}"), "Success".to_owned())).collect();
        let mut invocations: Vec<(&str, &str)> = ok.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        invocations.extend([("b", "Failed"), ("c", "Cancelled")]);
        let r = done(settle(&wave(true, 1_000), &[cmd("Failed", &invocations)], None, 5, NEVER));
        assert_eq!((r.end, r.blame.clone()), (WaveEnd::Failure, None));
        assert_eq!(r.with(InstanceResult::Failed), ["b"]);
        assert_eq!(r.with(InstanceResult::NotAttempted), ["c"]);
        assert!(r.countable().contains(&("b".to_owned(), InstanceResult::Failed)), "b's failure counts");
    }

    #[test]
    fn most_failing_blames_the_release_and_counts_against_nobody() {
        let r = done(settle(
            &wave(true, 1_000),
            &[detailed(
                "Failed",
                &[("a", "Success", "Success"), ("b", "Failed", "Failed"), ("c", "TimedOut", "ExecutionTimedOut")],
            )],
            None,
            5,
            NEVER,
        ));
        assert_eq!(r.end, WaveEnd::Failure);
        assert_eq!(r.blame, Some(Blame::Release { failed: 2, attempted: 3 }));
        assert!(
            r.countable().iter().all(|(_, x)| *x != InstanceResult::Failed),
            "nobody quarantined for a bad release"
        );
        assert!(r.blame.map(|b| b.describe()).unwrap_or_default().contains("configuration"));
    }

    #[test]
    fn unreachable_and_departed_instances_do_not_fail_the_wave() {
        let r = done(settle(
            &wave(true, 1_000),
            &[detailed(
                "Failed",
                &[
                    ("a", "Success", "Success"),
                    ("b", "Failed", "Undeliverable"),
                    ("c", "TimedOut", "DeliveryTimedOut"),
                    ("d", "Cancelled", "Terminated"),
                ],
            )],
            None,
            5,
            NEVER,
        ));
        assert_eq!(r.with(InstanceResult::Unreachable), ["b", "c"]);
        assert_eq!(r.with(InstanceResult::NotAttempted), ["d"], "cancelled by MaxErrors");
        assert_eq!(r.end, WaveEnd::Failure, "d was never attempted");
        let r = done(settle(
            &wave(true, 1_000),
            &[detailed("Failed", &[("a", "Success", "Success"), ("b", "Failed", "Undeliverable")])],
            None,
            5,
            NEVER,
        ));
        assert_eq!((r.end, r.blame), (WaveEnd::Success, None), "b is caught up later");
    }

    #[test]
    fn a_wave_that_reached_nobody_is_never_a_success() {
        let r = done(settle(
            &wave(true, 1_000),
            &[detailed("Failed", &[("a", "Failed", "Undeliverable"), ("b", "Failed", "Undeliverable")])],
            None,
            5,
            NEVER,
        ));
        assert_eq!((r.end, r.blame), (WaveEnd::Failure, Some(Blame::Unreachable { unreachable: 2 })));
    }

    #[test]
    fn instances_that_went_away_end_their_invocations() {
        let mut c = cmd("InProgress", &[("a", "Success"), ("b", "InProgress")]);
        assert_eq!(
            settle(&wave(true, 1_000), std::slice::from_ref(&c), None, 5, NEVER),
            Settlement::Running { pending: 1 }
        );
        c.invocations[1].gone = true;
        let r = done(settle(&wave(true, 1_000), &[c], None, 5, NEVER));
        assert_eq!((r.end, r.with(InstanceResult::Gone)), (WaveEnd::Success, vec!["b".to_owned()]));
    }

    #[test]
    fn past_the_commands_expiry_what_is_pending_was_unreachable() {
        let c = cmd("InProgress", &[("a", "Success"), ("b", "InProgress")]);
        assert!(matches!(
            settle(&wave(true, 1_000), std::slice::from_ref(&c), None, 99, 100),
            Settlement::Running { .. }
        ));
        let r = done(settle(&wave(true, 1_000), &[c], None, 100, 100));
        assert_eq!((r.end, r.with(InstanceResult::Unreachable)), (WaveEnd::Success, vec!["b".to_owned()]));
    }

    #[test]
    fn an_instance_in_a_retried_chunk_keeps_its_best_result() {
        let commands = [cmd("Failed", &[("a", "Failed")]), cmd("Success", &[("a", "Success")])];
        let r = done(settle(&wave(true, 1_000), &commands, None, 5, NEVER));
        assert_eq!(r.results, [("a".to_owned(), InstanceResult::Synced)]);
    }

    #[test]
    fn a_stopped_sender_with_a_record_is_resumed_once_its_lease_is_over() {
        let running = [cmd("InProgress", &[("a", "InProgress")])];
        let intended = ["a".to_owned(), "b".to_owned()];
        // While its lease holds the sender is at work: a settle leaves the
        // lease alone (renewing it would keep a dead sender's wave alive).
        let s = settle(&wave(false, 1_000), &running, Some(&intended), 500, NEVER);
        assert_eq!(s, Settlement::Sending, "even while what was sent runs");
        assert_eq!(transition(&wave(false, 1_000), &s, 500, 10), None);
        let s = settle(&wave(false, 1_000), &running, Some(&intended), 1_001, NEVER);
        assert_eq!(s, Settlement::Resume, "even while what was sent still runs");
        assert!(matches!(transition(&wave(false, 1_000), &s, 1_001, 10), Some(Op::Resume { .. })));
    }

    #[test]
    fn unrecorded_ids_without_a_record_wait_for_the_lease_then_take_over() {
        let terminal = [cmd("Success", &[("a", "Success")])];
        assert_eq!(settle(&wave(false, 1_000), &terminal, None, 500, NEVER), Settlement::Sending);
        assert_eq!(transition(&wave(false, 1_000), &Settlement::Sending, 500, 10), None);
        let s = settle(&wave(false, 1_000), &terminal, None, 1_001, NEVER);
        assert!(matches!(
            transition(&wave(false, 1_000), &s, 1_001, 10),
            Some(Op::TakeOver { end: WaveEnd::Success, .. })
        ));
    }

    #[test]
    fn a_sender_that_died_before_sending_is_dead_only_after_its_lease() {
        assert_eq!(settle(&wave(false, 1_000), &[], None, 500, NEVER), Settlement::Sending);
        assert_eq!(settle(&wave(false, 1_000), &[], None, 1_001, NEVER), Settlement::Dead);
        assert!(matches!(
            transition(&wave(false, 1_000), &Settlement::Dead, 1_001, 10),
            Some(Op::TakeOver { end: WaveEnd::Abandoned, .. })
        ));
    }

    #[test]
    fn an_intended_instance_no_command_reached_fails_the_wave() {
        let intended = ["a".to_owned(), "b".to_owned()];
        let r = done(settle(&wave(true, 0), &[cmd("Success", &[("a", "Success")])], Some(&intended), 5, NEVER));
        assert_eq!(r.end, WaveEnd::Failure, "b was never reached");
        assert_eq!(r.with(InstanceResult::NotAttempted), ["b"]);
    }

    #[test]
    fn a_wave_sent_to_nobody_is_done() {
        let s = settle(&wave(true, 1_000), &[], None, 5, NEVER);
        assert_eq!(s, Settlement::Done(WaveResult { end: WaveEnd::Success, results: vec![], blame: None }));
    }

    #[test]
    fn a_refusal_ends_the_wave_only_when_nobody_took_the_release() {
        let results = |rs: &[InstanceResult]| -> Vec<(String, InstanceResult)> {
            rs.iter().enumerate().map(|(i, r)| (format!("i-{i}"), *r)).collect()
        };
        let all = judge(results(&[InstanceResult::Refused, InstanceResult::Refused]), Some("empty".into()));
        assert_eq!(all.end, WaveEnd::Refused);
        assert!(matches!(&all.blame, Some(Blame::Refused { refused: 2, reason }) if reason == "empty"));
        let straggler = judge(results(&[InstanceResult::Synced, InstanceResult::Refused]), Some("loses".into()));
        assert_eq!(straggler.end, WaveEnd::Success, "the fleet took it: the straggler catches up");
        assert_eq!(straggler.blame, None);
        assert_eq!(straggler.with(InstanceResult::Refused), ["i-1"]);
        let with_failure = judge(results(&[InstanceResult::Refused, InstanceResult::Failed]), None);
        assert_eq!(with_failure.end, WaveEnd::Refused);
        assert_eq!(
            with_failure.countable()[1].1,
            InstanceResult::NotAttempted,
            "a host failing in a refused wave is not counted"
        );
    }
}
