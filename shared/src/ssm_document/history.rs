//! What a run of the document did on an instance, and each instance's
//! history of runs: consecutive failures, quarantine, the last generation
//! it synced, a quarantined instance's recovery catch-up. Fleet waves and
//! catch-ups both write it; it lives in the instance's item
//! (`<fleet>#instance#<id>`) next to its lifecycle record.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::events::CommandStatus;
use crate::store::{Expr, Items, MemoryTable, Reader, StoreError, Table, Updated, num};

/// One instance's outcome in a wave or a catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceResult {
    /// The document succeeded.
    Synced,
    /// The document failed or timed out on the instance: counts toward quarantine.
    Failed,
    /// Never ran there (cancelled, e.g. after `MaxErrors`): not the instance's fault.
    NotAttempted,
    /// The instance went away during the wave.
    Gone,
    /// In service, but its agent never got the command (`Undeliverable`,
    /// `DeliveryTimedOut`, refused at send, offline): not a failure of the
    /// release nor of the host; the sweep catches it up once reachable.
    Unreachable,
    /// The instance's shrink guard refused the release (exit
    /// [`REFUSED_EXIT`]): `current` was kept. A release failure, never the
    /// host's: it does not count toward quarantine.
    Refused,
}

/// The document's exit status when its shrink guard refuses a release.
pub const REFUSED_EXIT: i32 = 65;

/// How the document's refusal line starts (on standard error).
pub const REFUSED_PREFIX: &str = "fleetkeeper: refused: ";

/// Why the shrink guard refused, when an invocation's exit status and
/// output say it did (both must: another failure may exit 65 too).
pub fn refusal(response_code: i32, output: &str) -> Option<String> {
    if response_code != REFUSED_EXIT {
        return None;
    }
    let line = output.lines().find_map(|l| l.trim().strip_prefix(REFUSED_PREFIX))?;
    let mut why: String = line.chars().filter(|c| !c.is_control()).take(300).collect();
    if why.is_empty() {
        why = "the shrink guard refused the release".into();
    }
    Some(why)
}

/// The document's exit status when an object changed after the wave's
/// manifest was written (exact releases on an unversioned bucket): the
/// instance kept `current`, and the change's own wave takes a fresh
/// manifest.
pub const STALE_EXIT: i32 = 75;

/// How the document's stale line starts.
pub const STALE_PREFIX: &str = "fleetkeeper: stale: ";

/// Whether an invocation's exit status and output say its manifest was
/// stale (both must).
pub fn stale(response_code: i32, output: &str) -> bool {
    response_code == STALE_EXIT && output.lines().any(|l| l.trim().starts_with(STALE_PREFIX))
}

/// One terminal invocation, by its `Status` and `StatusDetails`, as an
/// instance result. SSM reports `Undeliverable` as `Failed` and
/// `DeliveryTimedOut` as `TimedOut`: only the details tell them apart from a
/// failed or timed-out run.
pub fn instance_result(status: &CommandStatus, details: &str) -> InstanceResult {
    let details: String = details.chars().filter(|c| !c.is_whitespace()).collect();
    match (status, details.as_str()) {
        (CommandStatus::Success, _) => InstanceResult::Synced,
        (_, "Undeliverable" | "DeliveryTimedOut") => InstanceResult::Unreachable,
        (CommandStatus::OtherTerminal(s), _) if s == "Undeliverable" => InstanceResult::Unreachable,
        (CommandStatus::Cancelled, _) => InstanceResult::NotAttempted,
        (CommandStatus::OtherTerminal(s), _) if s == "Terminated" => InstanceResult::NotAttempted,
        _ => InstanceResult::Failed,
    }
}

/// An instance's history of runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceRecord {
    /// `i-...`.
    pub instance_id: String,
    /// Consecutive failed waves or catch-ups.
    pub sync_failures: u32,
    /// When it was quarantined (epoch ms): left out of waves until a
    /// successful catch-up.
    pub quarantined_since: Option<u64>,
    /// The last generation it synced.
    pub last_synced_gen: u64,
    /// The lineage of that generation (the fleet item's `epoch`).
    pub last_synced_epoch: String,
    /// The recovery catch-up of a quarantined instance, while in flight.
    pub recovery_command: Option<String>,
    /// The generation that recovery catch-up syncs to.
    pub recovery_gen: u64,
    /// When the last recovery catch-up was sent, epoch ms.
    pub recovery_sent_at: Option<u64>,
}

impl InstanceRecord {
    /// The record of an instance never seen.
    pub fn fresh(id: &str) -> Self {
        InstanceRecord { instance_id: id.to_owned(), ..InstanceRecord::default() }
    }

    /// Whether waves leave it out.
    pub fn quarantined(&self) -> bool {
        self.quarantined_since.is_some()
    }

    /// Whether it lacks generation `generation` of lineage `epoch`.
    pub fn behind(&self, epoch: &str, generation: u64) -> bool {
        self.last_synced_epoch != epoch || self.last_synced_gen < generation
    }
}

/// A generation of one lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced<'a> {
    /// The lineage (`epoch`).
    pub epoch: &'a str,
    /// The generation.
    pub generation: u64,
}

/// What a result does to an instance record: the specification both stores
/// are held to. `last_synced_gen` only moves up within a lineage; a new
/// lineage replaces it.
pub fn next_record(mut r: InstanceRecord, at: Synced<'_>, result: InstanceResult, now: u64, k: u32) -> InstanceRecord {
    match result {
        InstanceResult::Synced => {
            r.sync_failures = 0;
            r.quarantined_since = None;
            if r.last_synced_epoch != at.epoch {
                r.last_synced_epoch = at.epoch.to_owned();
                r.last_synced_gen = at.generation;
            } else {
                r.last_synced_gen = r.last_synced_gen.max(at.generation);
            }
        }
        InstanceResult::Failed => {
            r.sync_failures += 1;
            if r.sync_failures >= k && r.quarantined_since.is_none() {
                r.quarantined_since = Some(now);
            }
        }
        InstanceResult::NotAttempted | InstanceResult::Gone | InstanceResult::Unreachable | InstanceResult::Refused => {
        }
    }
    r
}

/// Whether a result changes an instance's record at all (the others never
/// create an item: an item without its TTL would live forever).
pub fn counts(result: InstanceResult) -> bool {
    matches!(result, InstanceResult::Synced | InstanceResult::Failed)
}

/// The instances' run histories, as the lock table keeps them.
pub trait RunHistory: Send + Sync {
    /// Reads instance records (an instance never seen has a fresh record).
    fn instances(&self, ids: &[String]) -> impl Future<Output = Result<Vec<InstanceRecord>, StoreError>> + Send;

    /// Records each instance's result for generation `at` ([`next_record`]:
    /// a success resets its failures and lifts a quarantine; a failure
    /// counts, and quarantines at `quarantine_after` consecutive failures).
    /// Returns the new records.
    fn record_results(
        &self,
        at: Synced<'_>,
        results: &[(String, InstanceResult)],
        now: u64,
        quarantine_after: u32,
    ) -> impl Future<Output = Result<Vec<InstanceRecord>, StoreError>> + Send;

    /// Records a quarantined instance's recovery catch-up (`command: None`:
    /// none in flight; `sent_at` is kept to space the attempts).
    fn set_recovery(
        &self,
        instance_id: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims the instance for a catch-up before it is sent: sets
    /// `recovery_command` to `claim` (an encoded [`Claim`]) only when no
    /// catch-up is in flight (`recovery_sent_at` is left alone: a dropped
    /// claim must not space the next recovery). `false`: another invocation
    /// holds it. A wave
    /// starting afterwards sees the claim and leaves the instance out; one
    /// that started before is seen by the claimer (claim, then look).
    fn claim_catch_up(
        &self,
        instance_id: &str,
        claim: &str,
        generation: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces `recovery_command` with `command` (`None`: removes it) only
    /// while it is still `expected`, with the generation and the time sent;
    /// `false` when someone else changed it first (two invocations never
    /// both record one catch-up's outcome, or overwrite each other's).
    fn replace_recovery(
        &self,
        instance_id: &str,
        expected: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A catch-up claimed but whose command is not recorded (yet): the value of
/// `recovery_command` while its claimer sends (`pending@<made>/<until>/<nonce>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// When it was claimed, epoch ms.
    pub made: u64,
    /// Until when its claimer may still send: its invocation's deadline plus
    /// the listing's lag. Past it, a lookup by comment is trustworthy.
    pub until: u64,
    /// Unique per claim; part of the catch-up's comment.
    pub nonce: String,
}

/// The prefix of an encoded [`Claim`].
pub const PENDING: &str = "pending@";

impl Claim {
    /// A fresh claim.
    pub fn new(made: u64, until: u64) -> Self {
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Claim { made, until, nonce }
    }

    /// As stored in `recovery_command`.
    pub fn encode(&self) -> String {
        format!("{PENDING}{}/{}/{}", self.made, self.until, self.nonce)
    }

    /// A stored claim (`None`: `recovery_command` holds a command id).
    pub fn parse(value: &str) -> Option<Claim> {
        let mut parts = value.strip_prefix(PENDING)?.splitn(3, '/');
        let made = parts.next()?.parse().ok()?;
        let until = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_owned();
        Some(Claim { made, until, nonce })
    }

    /// The comment of the catch-up sent under this claim.
    pub fn comment(&self, instance_id: &str, generation: u64) -> String {
        format!("{} #{}", super::catch_up_comment(instance_id, generation), self.nonce)
    }
}

impl RunHistory for MemoryTable {
    async fn instances(&self, ids: &[String]) -> Result<Vec<InstanceRecord>, StoreError> {
        self.with(|items| ids.iter().map(|id| memory_record(self, items, id)).collect())
    }

    async fn record_results(
        &self,
        at: Synced<'_>,
        results: &[(String, InstanceResult)],
        now: u64,
        quarantine_after: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        self.with(|items| {
            results
                .iter()
                .map(|(id, result)| {
                    let current = memory_record(self, items, id)?;
                    let next = next_record(current, at, *result, now, quarantine_after);
                    if counts(*result) {
                        MemoryTable::write(items.entry(self.keys().instance_pk(id)).or_default(), &next)?;
                    }
                    Ok(next)
                })
                .collect()
        })
    }

    async fn set_recovery(
        &self,
        instance_id: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> Result<(), StoreError> {
        self.with(|items| {
            let mut r = memory_record(self, items, instance_id)?;
            r.recovery_command = command;
            r.recovery_gen = generation;
            r.recovery_sent_at = Some(sent_at);
            MemoryTable::write(items.entry(self.keys().instance_pk(instance_id)).or_default(), &r)
        })
    }

    async fn claim_catch_up(&self, instance_id: &str, claim: &str, generation: u64) -> Result<bool, StoreError> {
        let accept = |current: Option<&str>| current.is_none_or(|c| c == claim);
        self.recovery_if(instance_id, accept, Some(claim.to_owned()), generation, None)
    }

    async fn replace_recovery(
        &self,
        instance_id: &str,
        expected: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> Result<bool, StoreError> {
        // A retried write whose first attempt committed finds its own value.
        let retried = command.clone();
        let accept = move |current: Option<&str>| {
            current == Some(expected) || (retried.is_some() && current == retried.as_deref())
        };
        self.recovery_if(instance_id, accept, command, generation, Some(sent_at))
    }
}

impl MemoryTable {
    /// Sets the recovery fields when `accept` takes the current command.
    fn recovery_if(
        &self,
        instance_id: &str,
        accept: impl FnOnce(Option<&str>) -> bool,
        command: Option<String>,
        generation: u64,
        sent_at: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.with(|items| {
            let mut r = memory_record(self, items, instance_id)?;
            if !accept(r.recovery_command.as_deref()) {
                return Ok(false);
            }
            r.recovery_command = command;
            r.recovery_gen = generation;
            if sent_at.is_some() {
                r.recovery_sent_at = sent_at;
            }
            MemoryTable::write(items.entry(self.keys().instance_pk(instance_id)).or_default(), &r)?;
            Ok(true)
        })
    }
}

fn memory_record(
    table: &MemoryTable,
    items: &HashMap<String, crate::store::memory::Item>,
    id: &str,
) -> Result<InstanceRecord, StoreError> {
    let pk = table.keys().instance_pk(id);
    match items.get(&pk) {
        Some(item) => {
            let mut r: InstanceRecord = MemoryTable::read(&pk, item)?;
            r.instance_id = id.to_owned();
            Ok(r)
        }
        None => Ok(InstanceRecord::fresh(id)),
    }
}

impl RunHistory for Table {
    async fn instances(&self, ids: &[String]) -> Result<Vec<InstanceRecord>, StoreError> {
        let pks: Vec<String> = ids.iter().map(|id| self.keys().instance_pk(id)).collect();
        let mut found: HashMap<String, InstanceRecord> = HashMap::new();
        for attrs in self.batch_get(&pks).await? {
            // The id is the key's: an item written by the lifecycle gate
            // alone may lack the attribute.
            let mut record = parse_instance(&attrs)?;
            if let Some(AttributeValue::S(pk)) = attrs.get(crate::store::PK)
                && let Some(id) = pk.rsplit('#').next()
            {
                record.instance_id = id.to_owned();
            }
            found.insert(record.instance_id.clone(), record);
        }
        Ok(ids.iter().map(|id| found.get(id).cloned().unwrap_or_else(|| InstanceRecord::fresh(id))).collect())
    }

    async fn record_results(
        &self,
        at: Synced<'_>,
        results: &[(String, InstanceResult)],
        now: u64,
        quarantine_after: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        // One or two conditional writes per instance, at most 16 in flight:
        // a 1,000-instance wave must fit in an invocation.
        let writes: Vec<_> =
            results.iter().map(|(id, result)| self.record_one(at, id, *result, now, quarantine_after)).collect();
        futures::stream::iter(writes).buffered(RECORD_CONCURRENCY).try_collect().await
    }

    async fn set_recovery(
        &self,
        instance_id: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        let (iid, cmd, g, at) =
            (e.n("instance_id"), e.n("recovery_command"), e.n("recovery_gen"), e.n("recovery_sent_at"));
        let (idv, gv, atv) = (
            e.v("id", AttributeValue::S(instance_id.to_owned())),
            e.v("gen", num(generation)),
            e.v("at", num(sent_at)),
        );
        let mut update = format!("SET {iid} = {idv}, {g} = {gv}, {at} = {atv}");
        match command {
            Some(c) => {
                let cv = e.v("cmd", AttributeValue::S(c));
                update.push_str(&format!(", {cmd} = {cv}"));
            }
            None => update.push_str(&format!(" REMOVE {cmd}")),
        }
        self.update(&self.keys().instance_pk(instance_id), update, None, e, false).await?;
        Ok(())
    }

    async fn claim_catch_up(&self, instance_id: &str, claim: &str, generation: u64) -> Result<bool, StoreError> {
        let mut e = Expr::default();
        let (iid, cmd, g) = (e.n("instance_id"), e.n("recovery_command"), e.n("recovery_gen"));
        let (idv, cv, gv) = (
            e.v("id", AttributeValue::S(instance_id.to_owned())),
            e.v("claim", AttributeValue::S(claim.to_owned())),
            e.v("gen", num(generation)),
        );
        let update = format!("SET {iid} = {idv}, {cmd} = {cv}, {g} = {gv}");
        // A retried claim whose first attempt committed finds its own value.
        let condition = format!("attribute_not_exists({cmd}) OR {cmd} = {cv}");
        let pk = self.keys().instance_pk(instance_id);
        Ok(matches!(self.update(&pk, update, Some(condition), e, false).await?, Updated::Written(_)))
    }

    async fn replace_recovery(
        &self,
        instance_id: &str,
        expected: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> Result<bool, StoreError> {
        let mut e = Expr::default();
        let (cmd, g, sent) = (e.n("recovery_command"), e.n("recovery_gen"), e.n("recovery_sent_at"));
        let (ev, gv, atv) = (
            e.v("expected", AttributeValue::S(expected.to_owned())),
            e.v("gen", num(generation)),
            e.v("at", num(sent_at)),
        );
        let mut update = format!("SET {g} = {gv}, {sent} = {atv}");
        // A retried write whose first attempt committed finds its own value.
        let condition = match command {
            Some(c) => {
                let cv = e.v("cmd", AttributeValue::S(c));
                update.push_str(&format!(", {cmd} = {cv}"));
                format!("{cmd} = {ev} OR {cmd} = {cv}")
            }
            None => {
                // A per-call mark: the SDK's retry of a committed clear finds
                // its own write, and only its own (never another clearer's).
                let by = e.n("recovery_cleared_by");
                let mark = e.v("mark", AttributeValue::S(uuid::Uuid::new_v4().simple().to_string()));
                update.push_str(&format!(", {by} = {mark} REMOVE {cmd}"));
                format!("{cmd} = {ev} OR {by} = {mark}")
            }
        };
        let pk = self.keys().instance_pk(instance_id);
        Ok(matches!(self.update(&pk, update, Some(condition), e, false).await?, Updated::Written(_)))
    }
}

/// The item an unconditional update wrote.
fn written(updated: Updated) -> HashMap<String, AttributeValue> {
    match updated {
        Updated::Written(attrs) => attrs,
        Updated::ConditionFailed(_) => HashMap::new(),
    }
}

/// How many instance records are written at once.
const RECORD_CONCURRENCY: usize = 16;

impl Table {
    async fn record_one(
        &self,
        at: Synced<'_>,
        id: &str,
        result: InstanceResult,
        now: u64,
        quarantine_after: u32,
    ) -> Result<InstanceRecord, StoreError> {
        let pk = self.keys().instance_pk(id);
        let mut e = Expr::default();
        let (iid, failures, quarantined, last, lineage) = (
            e.n("instance_id"),
            e.n("sync_failures"),
            e.n("quarantined_since"),
            e.n("last_synced_gen"),
            e.n("last_synced_epoch"),
        );
        let idv = e.v("id", AttributeValue::S(id.to_owned()));
        let attrs = match result {
            InstanceResult::Synced => {
                // `last_synced_gen` only moves up within a lineage: DynamoDB
                // has no max(), so the raise is conditional and, when it is
                // refused, the rest is written without it.
                let (zero, g, ep) = (
                    e.v("zero", num(0)),
                    e.v("gen", num(at.generation)),
                    e.v("epoch", AttributeValue::S(at.epoch.to_owned())),
                );
                let update = format!(
                    "SET {iid} = {idv}, {failures} = {zero}, {last} = {g}, {lineage} = {ep} REMOVE {quarantined}"
                );
                let raise = format!(
                    "attribute_not_exists({last}) OR {last} < {g} OR attribute_not_exists({lineage}) OR {lineage} <> {ep}"
                );
                match self.update(&pk, update, Some(raise), e, false).await? {
                    Updated::Written(attrs) => attrs,
                    Updated::ConditionFailed(_) => {
                        let mut e = Expr::default();
                        let (iid, failures, quarantined) =
                            (e.n("instance_id"), e.n("sync_failures"), e.n("quarantined_since"));
                        let (idv, zero) = (e.v("id", AttributeValue::S(id.to_owned())), e.v("zero", num(0)));
                        let update = format!("SET {iid} = {idv}, {failures} = {zero} REMOVE {quarantined}");
                        written(self.update(&pk, update, None, e, false).await?)
                    }
                }
            }
            InstanceResult::Failed => {
                let one = e.v("one", num(1));
                written(self.update(&pk, format!("SET {iid} = {idv} ADD {failures} {one}"), None, e, false).await?)
            }
            // Nothing changes: read, never create an item.
            InstanceResult::NotAttempted
            | InstanceResult::Gone
            | InstanceResult::Unreachable
            | InstanceResult::Refused => self.get(&pk).await?.unwrap_or_default(),
        };
        let mut record = if attrs.is_empty() { InstanceRecord::fresh(id) } else { parse_instance(&attrs)? };
        record.instance_id = id.to_owned();
        if result == InstanceResult::Failed && record.sync_failures >= quarantine_after && !record.quarantined() {
            let mut e = Expr::default();
            let (q, failures) = (e.n("quarantined_since"), e.n("sync_failures"));
            let (t, k) = (e.v("now", num(now)), e.v("k", num(u64::from(quarantine_after))));
            let update = format!("SET {q} = if_not_exists({q}, {t})");
            let condition = format!("{failures} >= {k}");
            if let Updated::Written(attrs) = self.update(&pk, update, Some(condition), e, false).await? {
                record = parse_instance(&attrs)?;
                record.instance_id = id.to_owned();
            }
        }
        Ok(record)
    }
}

fn parse_instance(attrs: &HashMap<String, AttributeValue>) -> Result<InstanceRecord, StoreError> {
    let pk = match attrs.get(crate::store::PK) {
        Some(AttributeValue::S(s)) => s.as_str(),
        _ => "",
    };
    let r = Reader { pk, attrs };
    Ok(InstanceRecord {
        instance_id: r.string("instance_id")?.unwrap_or_default(),
        sync_failures: u32::try_from(r.number("sync_failures")?.unwrap_or_default()).unwrap_or(u32::MAX),
        quarantined_since: r.number("quarantined_since")?,
        last_synced_gen: r.number("last_synced_gen")?.unwrap_or_default(),
        last_synced_epoch: r.string("last_synced_epoch")?.unwrap_or_default(),
        recovery_command: r.string("recovery_command")?,
        recovery_gen: r.number("recovery_gen")?.unwrap_or_default(),
        recovery_sent_at: r.number("recovery_sent_at")?,
    })
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn a_stale_run_is_told_by_its_status_and_its_line() {
        let line = "fleetkeeper: manifest abc 3 keys\nfleetkeeper: stale: lib/a.php changed since the wave's manifest";
        assert!(stale(STALE_EXIT, line));
        assert!(!stale(STALE_EXIT, "some other failure exiting 75"));
        assert!(!stale(2, line), "the status must say so too");
    }
}
