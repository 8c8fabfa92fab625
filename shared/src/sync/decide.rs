//! Deciding about a running wave from what SSM reports (pure).
//!
//! Used by the completion event handler and the scheduled sweep alike. The
//! lease expresses liveness, not the wave's length: while SSM reports any of
//! the wave's commands as non-terminal, the lease is renewed; the wave is
//! finished only when all are terminal; a wave whose sender died before
//! recording every command id is judged on the commands found by their
//! `Comment` too, and only once its lease expired.

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
}

/// One command of a wave, as SSM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandView {
    /// The command id.
    pub command_id: String,
    /// The command's own status.
    pub status: CommandStatus,
    /// Its invocations.
    pub invocations: Vec<InvocationView>,
}

/// How a finished wave went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveResult {
    /// Success only if every instance synced (or went away).
    pub end: WaveEnd,
    /// Each instance's result.
    pub results: Vec<(String, InstanceResult)>,
}

impl WaveResult {
    /// The instances with `result`.
    pub fn with(&self, result: InstanceResult) -> Vec<String> {
        self.results.iter().filter(|(_, r)| *r == result).map(|(i, _)| i.clone()).collect()
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
    /// Every command is terminal: finish the wave.
    Done(WaveResult),
    /// The sender died before sending anything: abandon the wave.
    Dead,
}

/// Decides about `wave` from its `commands` (recorded ids, plus those found
/// by comment when not every id was recorded) at `now`. `intended` is the
/// instances the wave meant to reach (its record, written before sending):
/// one that no command reached was never attempted, so the wave cannot be a
/// success (its sender died midway); `None` when the record is missing.
pub fn settle(wave: &Wave, commands: &[CommandView], intended: Option<&[String]>, now: u64) -> Settlement {
    let pending = commands
        .iter()
        .filter(|c| !c.status.is_terminal() || c.invocations.iter().any(|i| !i.status.is_terminal()))
        .count();
    if pending > 0 {
        return Settlement::Running { pending };
    }
    if !wave.sent && wave.lease_expires_at >= now {
        return Settlement::Sending;
    }
    if commands.is_empty() {
        // Sent to nobody (nothing to sync), or the sender died first.
        return if wave.sent {
            Settlement::Done(WaveResult { end: WaveEnd::Success, results: Vec::new() })
        } else {
            Settlement::Dead
        };
    }
    let mut results: Vec<(String, InstanceResult)> = Vec::new();
    for inv in commands.iter().flat_map(|c| &c.invocations) {
        let result = instance_result(&inv.status);
        match results.iter_mut().find(|(id, _)| *id == inv.instance_id) {
            // An instance in two commands (a retried chunk): the better result counts.
            Some((_, r)) if rank(result) < rank(*r) => *r = result,
            Some(_) => {}
            None => results.push((inv.instance_id.clone(), result)),
        }
    }
    for id in intended.unwrap_or_default() {
        if !results.iter().any(|(i, _)| i == id) {
            results.push((id.clone(), InstanceResult::NotAttempted));
        }
    }
    let success = results.iter().all(|(_, r)| matches!(r, InstanceResult::Synced | InstanceResult::Gone));
    Settlement::Done(WaveResult { end: if success { WaveEnd::Success } else { WaveEnd::Failure }, results })
}

fn rank(r: InstanceResult) -> u8 {
    match r {
        InstanceResult::Synced => 0,
        InstanceResult::Gone => 1,
        InstanceResult::Failed => 2,
        InstanceResult::NotAttempted => 3,
    }
}

/// The store transition a settlement calls for: a wave whose ids were all
/// recorded is finished outright; one whose sender died is taken over, which
/// the store allows only once its lease expired.
pub fn transition(wave: &Wave, settlement: &Settlement, now: u64, lease_ms: u64) -> Option<Op> {
    let finish = |end| {
        if wave.sent {
            Op::Finish { wave_id: wave.id.clone(), end }
        } else {
            Op::TakeOver { wave_id: wave.id.clone(), now, end }
        }
    };
    match settlement {
        Settlement::Running { .. } => Some(Op::Renew { wave_id: wave.id.clone(), now, lease_ms }),
        Settlement::Sending => None,
        Settlement::Done(result) => Some(finish(result.end)),
        Settlement::Dead => Some(finish(WaveEnd::Abandoned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(sent: bool, lease: u64) -> Wave {
        Wave {
            id: "w".into(),
            target: 3,
            lease_expires_at: lease,
            sending_since: 0,
            command_ids: vec!["c1".into()],
            sent,
            fingerprint: None,
        }
    }

    fn cmd(status: &str, invocations: &[(&str, &str)]) -> CommandView {
        CommandView {
            command_id: "c1".into(),
            status: CommandStatus::parse(status),
            invocations: invocations
                .iter()
                .map(|(i, s)| InvocationView { instance_id: (*i).into(), status: CommandStatus::parse(s) })
                .collect(),
        }
    }

    #[test]
    fn running_commands_renew_even_when_the_lease_expired() {
        for lease in [0, 1_000_000] {
            let s =
                settle(&wave(true, lease), &[cmd("InProgress", &[("a", "Success"), ("b", "InProgress")])], None, 500);
            assert_eq!(s, Settlement::Running { pending: 1 });
            assert!(matches!(transition(&wave(true, lease), &s, 500, 10), Some(Op::Renew { .. })));
        }
        // A command whose status lags its invocations still counts as running.
        let s = settle(&wave(true, 0), &[cmd("InProgress", &[("a", "Success")])], None, 500);
        assert_eq!(s, Settlement::Running { pending: 1 });
    }

    #[test]
    fn all_success_finishes_with_success() {
        let s = settle(&wave(true, 1_000), &[cmd("Success", &[("a", "Success"), ("b", "Success")])], None, 500);
        let Settlement::Done(r) = &s else { panic!("{s:?}") };
        assert_eq!(r.end, WaveEnd::Success);
        assert_eq!(r.with(InstanceResult::Synced), ["a", "b"]);
        assert_eq!(
            transition(&wave(true, 1_000), &s, 500, 10),
            Some(Op::Finish { wave_id: "w".into(), end: WaveEnd::Success })
        );
    }

    #[test]
    fn a_failed_instance_fails_the_wave_and_cancelled_ones_are_not_blamed() {
        let s = settle(
            &wave(true, 1_000),
            &[cmd("Failed", &[("a", "Success"), ("b", "Failed"), ("c", "Cancelled"), ("d", "TimedOut")])],
            None,
            5,
        );
        let Settlement::Done(r) = s else { panic!() };
        assert_eq!(r.end, WaveEnd::Failure);
        assert_eq!(r.with(InstanceResult::Failed), ["b", "d"]);
        assert_eq!(r.with(InstanceResult::NotAttempted), ["c"]);
    }

    #[test]
    fn instances_that_went_away_do_not_fail_the_wave() {
        let s = settle(
            &wave(true, 1_000),
            &[cmd("Failed", &[("a", "Success"), ("b", "Undeliverable"), ("c", "Terminated")])],
            None,
            5,
        );
        let Settlement::Done(r) = s else { panic!() };
        assert_eq!(r.end, WaveEnd::Success);
        assert_eq!(r.with(InstanceResult::Gone), ["b", "c"]);
    }

    #[test]
    fn an_instance_in_a_retried_chunk_keeps_its_best_result() {
        let commands = [cmd("Failed", &[("a", "Failed")]), cmd("Success", &[("a", "Success")])];
        let Settlement::Done(r) = settle(&wave(true, 1_000), &commands, None, 5) else { panic!() };
        assert_eq!(r.results, [("a".to_owned(), InstanceResult::Synced)]);
    }

    #[test]
    fn unrecorded_ids_wait_for_the_lease_then_take_over() {
        let terminal = [cmd("Success", &[("a", "Success")])];
        assert_eq!(settle(&wave(false, 1_000), &terminal, None, 500), Settlement::Sending);
        assert_eq!(transition(&wave(false, 1_000), &Settlement::Sending, 500, 10), None);
        let s = settle(&wave(false, 1_000), &terminal, None, 1_001);
        assert!(matches!(
            transition(&wave(false, 1_000), &s, 1_001, 10),
            Some(Op::TakeOver { end: WaveEnd::Success, .. })
        ));
    }

    #[test]
    fn a_sender_that_died_before_sending_is_dead_only_after_its_lease() {
        assert_eq!(settle(&wave(false, 1_000), &[], None, 500), Settlement::Sending);
        assert_eq!(settle(&wave(false, 1_000), &[], None, 1_001), Settlement::Dead);
        assert!(matches!(
            transition(&wave(false, 1_000), &Settlement::Dead, 1_001, 10),
            Some(Op::TakeOver { end: WaveEnd::Abandoned, .. })
        ));
    }

    #[test]
    fn an_intended_instance_no_command_reached_fails_the_wave() {
        let intended = ["a".to_owned(), "b".to_owned()];
        let s = settle(&wave(false, 0), &[cmd("Success", &[("a", "Success")])], Some(&intended), 5);
        let Settlement::Done(r) = s else { panic!("{s:?}") };
        assert_eq!(r.end, WaveEnd::Failure, "the sender died before reaching b");
        assert_eq!(r.with(InstanceResult::NotAttempted), ["b"]);
    }

    #[test]
    fn a_wave_sent_to_nobody_is_done() {
        let s = settle(&wave(true, 1_000), &[], None, 5);
        assert_eq!(s, Settlement::Done(WaveResult { end: WaveEnd::Success, results: vec![] }));
    }
}
