//! The sync's store in DynamoDB: each fleet-item transition is one
//! conditional write on [`Table`].
//!
//! `Demand`, `Start`, `RecordCommands` and `Renew` are pure expressions
//! (`Start` copies `requested_gen` into `running_gen` inside the write, so no
//! demand can slip between a read and the write; its condition is the exact
//! negation of [`state::start_refusal`] and of the quiet period, held to it by
//! the conformance properties). DynamoDB has no `max()`: a `Demand` moves
//! `last_change_at` only on condition that it is older, and when that
//! condition alone fails it is written again without it (a late event never
//! moves the newest change back, and a change older than the last start
//! counts from when it was seen, as the pure function says). `Finish` and `TakeOver` read the item, compute the next one
//! with the pure function, and write it on condition that the same wave
//! still holds the lease (and, for a take-over, that its lease expired):
//! only the holder can change what they write.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{Applied, FleetStore, WAVE_RECORD_DAYS, WaveRecord};
use crate::store::{
    Attrs, EXPIRES_AT, Expr, Items, PK, Reader, StoreError, Table, Updated, fleet_attrs, num, pin, pin_value,
    release_ref, release_value, string_list,
};
use crate::sync::state::{self, Fingerprint, FleetItem, KeptRelease, Op, Refusal, SCHEMA, Wave, WaveEnd};

const A_SCHEMA: &str = fleet_attrs::SCHEMA;
const A_REQUESTED: &str = fleet_attrs::REQUESTED_GEN;
const A_COMPLETED: &str = fleet_attrs::COMPLETED_GEN;
const A_WAVE: &str = "wave_id";
const A_RUNNING: &str = "running_gen";
const A_LEASE: &str = "lease_expires_at";
const A_SINCE: &str = "sending_since";
const A_COMMANDS: &str = "command_ids";
const A_SENT: &str = "sent";
const A_FP_START: &str = "fingerprint_start";
const A_FP_SYNCED: &str = "fingerprint_synced";
const A_FAILED_GEN: &str = "failed_gen";
const A_FAILED_ATTEMPTS: &str = "failed_attempts";
const A_FP_FAILED: &str = "fingerprint_failed";
const A_EPOCH: &str = fleet_attrs::EPOCH;
const A_SENDER: &str = "sender";
const A_LAST_CHANGE: &str = "last_change_at";
const A_UNSYNCED: &str = "unsynced_since";
const A_TRIGGER: &str = "trigger_at";
const A_ALLOW_SHRINK: &str = fleet_attrs::ALLOW_SHRINK_GEN;
const A_ALLOW_SPENT: &str = "allow_shrink_spent";
const A_LAST_START: &str = "last_start_at";
const A_REFUSED: &str = fleet_attrs::REFUSED_GEN;
const A_MANIFEST_START: &str = "manifest_start";
const A_RELEASE: &str = fleet_attrs::RELEASE_MANIFEST;
const A_PIN: &str = fleet_attrs::PIN;
const A_RELEASES: &str = fleet_attrs::RELEASES;
const A_ROLLBACK: &str = "rollback_to";
const A_CHANGES_START: &str = "changes_through";
const A_SYNCED_THROUGH: &str = "synced_through";
const A_LAST_SYNCED: &str = "last_synced_wave";
const A_LAST_WAVE: &str = "last_wave";

fn kept_value(r: &KeptRelease) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("id".to_owned(), AttributeValue::S(r.id.clone())),
        ("manifest".to_owned(), release_value(&r.manifest)),
        ("wave_id".to_owned(), AttributeValue::S(r.wave_id.clone())),
    ]))
}

fn kept(r: &Reader<'_>) -> Result<Vec<KeptRelease>, StoreError> {
    r.maps(A_RELEASES)?
        .iter()
        .map(|inner| {
            Ok(KeptRelease {
                id: inner.string("id")?.unwrap_or_default(),
                manifest: release_ref(inner, "manifest")?
                    .ok_or_else(|| r.bad(A_RELEASES, "releases with a manifest"))?,
                wave_id: inner.string("wave_id")?.unwrap_or_default(),
            })
        })
        .collect()
}

fn fingerprint_value(fp: &Fingerprint) -> AttributeValue {
    let mut m = HashMap::from([("count".to_owned(), num(fp.count)), ("newest_ms".to_owned(), num(fp.newest_ms))]);
    if fp.digest != 0 {
        m.insert("digest".to_owned(), num(fp.digest));
    }
    AttributeValue::M(m)
}

impl Table {
    /// One conditional update of the fleet item: the item after it, or the
    /// item as it was when the condition failed.
    async fn fleet_update(
        &self,
        update: String,
        condition: Option<String>,
        expr: Expr,
    ) -> Result<Result<FleetItem, Option<FleetItem>>, StoreError> {
        let pk = self.keys().fleet_pk();
        Ok(match self.update(&pk, update, condition, expr, true).await? {
            Updated::Written(attrs) => Ok(parse_fleet(&pk, &attrs)?),
            Updated::ConditionFailed(old) => Err(old.map(|attrs| parse_fleet(&pk, &attrs)).transpose()?),
        })
    }
}

/// How a `Demand` is written: the first attempt checks both conditions
/// below; when one of them fails, the next attempt writes what the pure
/// function would have.
#[derive(Debug, Clone, Copy)]
struct DemandWrite {
    /// Raise `last_change_at` (on condition that it is older).
    raise: bool,
    /// The changes are newer than the last start (else they count from
    /// when they were seen: a late event).
    after_start: bool,
}

impl Table {
    /// `Demand`: one write, or two or three when a late event's time must
    /// not move `last_change_at` back or start a wave at once. With
    /// `allow_shrink`, `allow_shrink_gen` becomes the generation requested,
    /// in the same write (`SET requested_gen = if_not_exists(...) + :count`
    /// instead of `ADD`).
    async fn demand(
        &self,
        op: &Op,
        changes: Option<state::ChangeTimes>,
        how: DemandWrite,
    ) -> Result<Applied, StoreError> {
        let Op::Demand { count, epoch, allow_shrink, .. } = op else {
            return Err(StoreError::Invariant(format!("not a demand: {op:?}")));
        };
        let mut e = Expr::default();
        let (schema, completed, requested, ep) = (e.n(A_SCHEMA), e.n(A_COMPLETED), e.n(A_REQUESTED), e.n(A_EPOCH));
        let (s, zero, c) = (e.v("schema", num(SCHEMA)), e.v("zero", num(0)), e.v("count", num(*count)));
        let newest = e.v("schema_read", num(fleet_attrs::SCHEMA_READ));
        let epv = e.v("epoch", AttributeValue::S(epoch.clone()));
        let mut set = format!(
            "{schema} = if_not_exists({schema}, {s}), {completed} = if_not_exists({completed}, {zero}), {ep} = if_not_exists({ep}, {epv})"
        );
        let mut condition = format!("(attribute_not_exists({schema}) OR {schema} <= {newest})");
        if let Some(t) = changes {
            let (unsynced, oldest) = (e.n(A_UNSYNCED), e.v("oldest", num(t.oldest)));
            set.push_str(&format!(", {unsynced} = if_not_exists({unsynced}, {oldest})"));
            if how.raise {
                let (last, last_start) = (e.n(A_LAST_CHANGE), e.n(A_LAST_START));
                let newest = if how.after_start { t.newest } else { t.seen.max(t.newest) };
                let nv = e.v("newest", num(newest));
                set.push_str(&format!(", {last} = {nv}"));
                condition.push_str(&format!(" AND (attribute_not_exists({last}) OR {last} < {nv})"));
                if how.after_start {
                    condition.push_str(&format!(" AND (attribute_not_exists({last_start}) OR {last_start} <= {nv})"));
                }
            }
        }
        let update = if *allow_shrink {
            let allow = e.n(A_ALLOW_SHRINK);
            set.push_str(&format!(
                ", {requested} = if_not_exists({requested}, {zero}) + {c}, {allow} = if_not_exists({requested}, {zero}) + {c}"
            ));
            format!("SET {set}")
        } else {
            format!("SET {set} ADD {requested} {c}")
        };
        match self.fleet_update(update, Some(condition), e).await? {
            Ok(item) => Ok(Applied::Won(Box::new(item))),
            // (An item of a newer schema fails to parse before this.)
            Err(Some(old)) if how.raise && changes.is_some() => {
                let t = changes.unwrap_or(state::ChangeTimes::at(0));
                let late = how.after_start && old.last_start_at.is_some_and(|start| t.newest < start);
                let next = if late {
                    // Counted from when it was seen, as the pure function does.
                    DemandWrite { raise: true, after_start: false }
                } else if old.last_change_at.is_some_and(|last| last >= t.newest_after(old.last_start_at)) {
                    DemandWrite { raise: false, after_start: false }
                } else {
                    return Ok(Applied::Lost(refusal(Some(old), op)?));
                };
                Box::pin(self.demand(op, changes, next)).await
            }
            Err(old) => Ok(Applied::Lost(refusal(old, op)?)),
        }
    }
}

impl Table {
    /// `Rollback` and `Unpin`: read, compute with the pure function, write
    /// on condition that the counters and the pin are as read (and, for a
    /// rollback, that no wave started): a lost race reads again.
    async fn pin_write(&self, op: &Op) -> Result<Applied, StoreError> {
        for _ in 0..8 {
            let current = self.load().await?;
            let next = match state::apply(current.as_ref(), op) {
                Ok(next) => next,
                Err(refusal) => return Ok(Applied::Lost(refusal)),
            };
            let current = current.unwrap_or_default();
            let mut e = Expr::default();
            let (requested, completed, wave, pinned) = (e.n(A_REQUESTED), e.n(A_COMPLETED), e.n(A_WAVE), e.n(A_PIN));
            let rq = e.v("rq", num(current.requested_gen));
            let cg = e.v("cg", num(current.completed_gen));
            let nrq = e.v("nrq", num(next.requested_gen));
            let mut condition = format!("{requested} = {rq} AND {completed} = {cg}");
            if matches!(op, Op::Rollback { .. }) {
                condition.push_str(&format!(" AND attribute_not_exists({wave})"));
            }
            condition.push_str(&match &current.pin {
                Some(p) => format!(" AND {pinned}.{} = {}", e.n("since"), e.v("since", num(p.since))),
                None => format!(" AND attribute_not_exists({pinned})"),
            });
            // A pinned item is schema 2: older functions refuse it.
            let schema = if next.pin.is_some() { fleet_attrs::SCHEMA_PINNED } else { SCHEMA };
            let (sa, sv) = (e.n(A_SCHEMA), e.v("schema", num(schema)));
            let mut sets = vec![format!("{requested} = {nrq}"), format!("{sa} = {sv}")];
            let mut removes = Vec::new();
            match &next.pin {
                Some(p) => sets.push(format!("{pinned} = {}", e.v("pin", pin_value(p)))),
                None => removes.push(pinned.clone()),
            }
            if let Some(w) = &next.wave {
                let mut values = vec![
                    (A_WAVE, AttributeValue::S(w.id.clone())),
                    (A_SENDER, AttributeValue::S(w.sender.clone())),
                    (A_RUNNING, num(w.target)),
                    (A_LEASE, num(w.lease_expires_at)),
                    (A_SINCE, num(w.sending_since)),
                    (A_COMMANDS, AttributeValue::L(Vec::new())),
                    (A_SENT, AttributeValue::Bool(false)),
                    (A_LAST_START, num(w.sending_since)),
                    (A_CHANGES_START, num(w.changes_through)),
                ];
                values.extend(w.manifest.as_ref().map(|m| (A_MANIFEST_START, release_value(m))));
                values.extend(w.rollback.as_ref().map(|r| (A_ROLLBACK, AttributeValue::S(r.clone()))));
                for (attr, value) in values {
                    let (n, v) = (e.n(attr), e.v(attr, value));
                    sets.push(format!("{n} = {v}"));
                }
                removes.push(e.n(A_FP_START));
            }
            let mut update = format!("SET {}", sets.join(", "));
            if !removes.is_empty() {
                update.push_str(&format!(" REMOVE {}", removes.join(", ")));
            }
            match self.fleet_update(update, Some(condition), e).await? {
                Ok(item) => return Ok(Applied::Won(Box::new(item))),
                Err(_) => continue,
            }
        }
        Err(StoreError::Invariant(format!("{op:?}: the fleet item kept moving under eight tries")))
    }
}

/// Classifies a failed condition from the item as it was.
fn refusal(old: Option<FleetItem>, op: &Op) -> Result<Refusal, StoreError> {
    match state::apply(old.as_ref(), op) {
        Err(refusal) => Ok(refusal),
        // The pure function would have applied it: the two disagree.
        Ok(_) => Err(StoreError::Invariant(format!("condition failed for {op:?} but the item allows it"))),
    }
}

impl FleetStore for Table {
    async fn load(&self) -> Result<Option<FleetItem>, StoreError> {
        let pk = self.keys().fleet_pk();
        self.get(&pk).await?.map(|attrs| parse_fleet(&pk, &attrs)).transpose()
    }

    async fn apply(&self, op: &Op) -> Result<Applied, StoreError> {
        let mut e = Expr::default();
        let (update, condition) = match op {
            Op::Demand { changes, .. } => {
                return self.demand(op, *changes, DemandWrite { raise: true, after_start: true }).await;
            }
            Op::Trigger { at, now, replacing } => {
                let (attr, atv, nowv) = (e.n(A_TRIGGER), e.v("at", num(*at)), e.v("now", num(*now)));
                let mut condition = format!("attribute_not_exists({attr}) OR {attr} < {nowv}");
                if let Some(r) = replacing {
                    let rv = e.v("replacing", num(*r));
                    condition.push_str(&format!(" OR {attr} = {rv}"));
                }
                (format!("SET {attr} = {atv}"), Some(condition))
            }
            Op::ClearTrigger { at } => {
                let (attr, atv) = (e.n(A_TRIGGER), e.v("at", num(*at)));
                (format!("REMOVE {attr}"), Some(format!("{attr} = {atv}")))
            }
            Op::Start { wave_id, now, lease_ms, quiet } => {
                let (wave, running, requested, completed) =
                    (e.n(A_WAVE), e.n(A_RUNNING), e.n(A_REQUESTED), e.n(A_COMPLETED));
                let (lease, since, cmds, sent, fp) =
                    (e.n(A_LEASE), e.n(A_SINCE), e.n(A_COMMANDS), e.n(A_SENT), e.n(A_FP_START));
                let (fgen, fatt) = (e.n(A_FAILED_GEN), e.n(A_FAILED_ATTEMPTS));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let exp = e.v("exp", num(now + lease_ms));
                let nowv = e.v("now", num(*now));
                let empty = e.v("empty", AttributeValue::L(Vec::new()));
                let no = e.v("no", AttributeValue::Bool(false));
                let max = e.v("max", num(u64::from(state::MAX_ATTEMPTS)));
                let sender = e.n(A_SENDER);
                let (unsynced, last_start) = (e.n(A_UNSYNCED), e.n(A_LAST_START));
                // (An older version's finish may have left a wave's manifest.)
                let (manifest, rollback, pinned) = (e.n(A_MANIFEST_START), e.n(A_ROLLBACK), e.n(A_PIN));
                // The wave's listing includes the newest change known now.
                let (changes, last_change, zero) = (e.n(A_CHANGES_START), e.n(A_LAST_CHANGE), e.v("zero", num(0)));
                let update = format!(
                    "SET {wave} = {w}, {sender} = {w}, {running} = {requested}, {lease} = {exp}, {since} = {nowv}, {cmds} = {empty}, {sent} = {no}, {last_start} = {nowv}, {changes} = if_not_exists({last_change}, {zero}) REMOVE {fp}, {unsynced}, {manifest}, {rollback}"
                );
                // The exact negation of state::start_refusal ...
                let mut condition = format!(
                    "attribute_not_exists({wave}) AND attribute_not_exists({pinned}) AND {requested} > {completed} AND (attribute_not_exists({fgen}) OR {fgen} < {requested} OR {fatt} < {max})"
                );
                // ... and of the quiet period (state::Quiet::until): quiet
                // since the newest change, or the first unsynced one is old
                // enough (a bound below zero cannot hold: left out).
                if let Some(q) = quiet.filter(|q| q.quiet_ms > 0) {
                    let last = e.n(A_LAST_CHANGE);
                    let mut any = vec![format!("attribute_not_exists({last})")];
                    if let Some(before) = now.checked_sub(q.quiet_ms) {
                        any.push(format!("{last} <= {}", e.v("quiet_before", num(before))));
                    }
                    if let Some(before) = now.checked_sub(q.max_delay_ms) {
                        // max(unsynced_since, last_start_at) + max delay <= now.
                        let fb = e.v("forced_before", num(before));
                        any.push(format!(
                            "({unsynced} <= {fb} AND (attribute_not_exists({last_start}) OR {last_start} <= {fb}))"
                        ));
                    }
                    condition.push_str(&format!(" AND ({})", any.join(" OR ")));
                }
                (update, Some(condition))
            }
            Op::RecordCommands { wave_id, sender, command_ids, sent, fingerprint, manifest } => {
                let (wave, cmds, sent_attr, sender_attr) = (e.n(A_WAVE), e.n(A_COMMANDS), e.n(A_SENT), e.n(A_SENDER));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let sv = e.v("sender", AttributeValue::S(sender.clone()));
                let ids = e.v("ids", string_list(command_ids));
                let mut update = format!("SET {cmds} = list_append({cmds}, {ids})");
                if *sent {
                    let yes = e.v("yes", AttributeValue::Bool(true));
                    update.push_str(&format!(", {sent_attr} = {yes}"));
                }
                if let Some(f) = fingerprint {
                    let (fp, fv) = (e.n(A_FP_START), e.v("fp", fingerprint_value(f)));
                    update.push_str(&format!(", {fp} = {fv}"));
                }
                if let Some(m) = manifest {
                    let (attr, v) = (e.n(A_MANIFEST_START), e.v("manifest", release_value(m)));
                    update.push_str(&format!(", {attr} = {v}"));
                }
                (update, Some(format!("{wave} = {w} AND {sender_attr} = {sv}")))
            }
            Op::Pause { wave_id, sender, until } => {
                let (wave, lease, sender_attr) = (e.n(A_WAVE), e.n(A_LEASE), e.n(A_SENDER));
                let (w, end) = (e.v("w", AttributeValue::S(wave_id.clone())), e.v("until", num(*until)));
                let sv = e.v("sender", AttributeValue::S(sender.clone()));
                (format!("SET {lease} = {end}"), Some(format!("{wave} = {w} AND {sender_attr} = {sv}")))
            }
            Op::Resume { wave_id, sender, now, lease_ms } => {
                let (wave, lease, sent, sender_attr) = (e.n(A_WAVE), e.n(A_LEASE), e.n(A_SENT), e.n(A_SENDER));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let (exp, nowv, no) =
                    (e.v("exp", num(now + lease_ms)), e.v("now", num(*now)), e.v("no", AttributeValue::Bool(false)));
                let sv = e.v("sender", AttributeValue::S(sender.clone()));
                (
                    format!("SET {lease} = {exp}, {sender_attr} = {sv}"),
                    Some(format!("{wave} = {w} AND {sent} = {no} AND {lease} < {nowv}")),
                )
            }
            Op::Renew { wave_id, sender, now, lease_ms } => {
                let (wave, lease) = (e.n(A_WAVE), e.n(A_LEASE));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let exp = e.v("exp", num(now + lease_ms));
                let mut condition = format!("{wave} = {w}");
                if let Some(sender) = sender {
                    let (sender_attr, sv) = (e.n(A_SENDER), e.v("sender", AttributeValue::S(sender.clone())));
                    condition.push_str(&format!(" AND {sender_attr} = {sv}"));
                }
                (format!("SET {lease} = {exp}"), Some(condition))
            }
            Op::Rollback { .. } | Op::Unpin => return self.pin_write(op).await,
            Op::Finish { wave_id, .. } | Op::TakeOver { wave_id, .. } => {
                // Read, compute with the pure function, write on condition
                // that the same wave still holds (see the module docs).
                let current = self.load().await?;
                let next = match state::apply(current.as_ref(), op) {
                    Ok(next) => next,
                    Err(refusal) => return Ok(Applied::Lost(refusal)),
                };
                let (wave, completed, fgen, fatt) =
                    (e.n(A_WAVE), e.n(A_COMPLETED), e.n(A_FAILED_GEN), e.n(A_FAILED_ATTEMPTS));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let c = e.v("completed", num(next.completed_gen));
                let fg = e.v("fgen", num(next.failed_gen));
                let fa = e.v("fatt", num(u64::from(next.failed_attempts)));
                let (spent, refused) = (e.n(A_ALLOW_SPENT), e.n(A_REFUSED));
                let (sv, rv) = (e.v("spent", num(next.allow_shrink_spent)), e.v("refused", num(next.refused_gen)));
                let mut update =
                    format!("SET {completed} = {c}, {fgen} = {fg}, {fatt} = {fa}, {spent} = {sv}, {refused} = {rv}");
                if let Some(fp) = &next.fingerprint_synced {
                    let (attr, v) = (e.n(A_FP_SYNCED), e.v("fps", fingerprint_value(fp)));
                    update.push_str(&format!(", {attr} = {v}"));
                }
                if let Some(fp) = &next.fingerprint_failed {
                    let (attr, v) = (e.n(A_FP_FAILED), e.v("fpf", fingerprint_value(fp)));
                    update.push_str(&format!(", {attr} = {v}"));
                }
                let mut gone =
                    vec![A_RUNNING, A_LEASE, A_SINCE, A_COMMANDS, A_SENT, A_FP_START, A_SENDER, A_MANIFEST_START];
                if next.fingerprint_failed.is_none() {
                    gone.push(A_FP_FAILED);
                }
                match &next.release {
                    Some(m) => {
                        let (attr, v) = (e.n(A_RELEASE), e.v("release", release_value(m)));
                        update.push_str(&format!(", {attr} = {v}"));
                    }
                    None => gone.push(A_RELEASE),
                }
                if !next.releases.is_empty() {
                    let (attr, v) = (
                        e.n(A_RELEASES),
                        e.v("releases", AttributeValue::L(next.releases.iter().map(kept_value).collect())),
                    );
                    update.push_str(&format!(", {attr} = {v}"));
                }
                gone.extend([A_ROLLBACK, A_CHANGES_START]);
                if next.synced_through > 0 {
                    let (attr, v) = (e.n(A_SYNCED_THROUGH), e.v("synced_through", num(next.synced_through)));
                    update.push_str(&format!(", {attr} = {v}"));
                }
                for (attr, name, id) in [
                    (A_LAST_SYNCED, "last_synced", &next.last_synced_wave),
                    (A_LAST_WAVE, "last_wave", &next.last_wave),
                ] {
                    if let Some(id) = id {
                        let (attr, v) = (e.n(attr), e.v(name, AttributeValue::S(id.clone())));
                        update.push_str(&format!(", {attr} = {v}"));
                    }
                }
                let removed: Vec<String> = gone.iter().map(|a| e.n(a)).collect();
                update.push_str(&format!(" REMOVE {wave}, {}", removed.join(", ")));
                let mut condition = format!("{wave} = {w}");
                if let Op::TakeOver { now, .. } = op {
                    let (lease, nowv) = (e.n(A_LEASE), e.v("now", num(*now)));
                    condition.push_str(&format!(" AND {lease} < {nowv}"));
                }
                (update, Some(condition))
            }
        };
        match self.fleet_update(update, condition, e).await? {
            Ok(item) => Ok(Applied::Won(Box::new(item))),
            Err(old) => Ok(Applied::Lost(refusal(old, op)?)),
        }
    }

    async fn put_wave(&self, r: &WaveRecord) -> Result<bool, StoreError> {
        let list = |v: &[String]| string_list(v);
        let mut item: Attrs = HashMap::from([
            (PK.to_owned(), AttributeValue::S(self.keys().wave_pk(&r.wave_id))),
            ("wave_id".to_owned(), AttributeValue::S(r.wave_id.clone())),
            ("target".to_owned(), num(r.target)),
            ("epoch".to_owned(), AttributeValue::S(r.epoch.clone())),
            ("reason".to_owned(), AttributeValue::S(r.reason.clone())),
            ("started_at".to_owned(), num(r.started_at)),
            ("document_version".to_owned(), AttributeValue::S(r.document_version.clone())),
            ("commands_expire_at".to_owned(), num(r.commands_expire_at)),
            ("instances".to_owned(), list(&r.instances)),
            ("quarantined".to_owned(), list(&r.quarantined)),
            ("not_online".to_owned(), list(&r.not_online)),
            ("too_old".to_owned(), list(&r.too_old)),
            ("busy".to_owned(), list(&r.busy)),
            ("command_ids".to_owned(), list(&r.command_ids)),
            ("synced".to_owned(), num(r.synced)),
            ("failed".to_owned(), list(&r.failed)),
            ("not_attempted".to_owned(), list(&r.not_attempted)),
            ("gone".to_owned(), list(&r.gone)),
            ("unreachable".to_owned(), list(&r.unreachable)),
            (EXPIRES_AT.to_owned(), num(r.finished_at.unwrap_or(r.started_at) / 1000 + WAVE_RECORD_DAYS * 86_400)),
        ]);
        if let Some(end) = r.end {
            item.insert("end".to_owned(), AttributeValue::S(end_name(end).to_owned()));
        }
        if let Some(t) = r.finished_at {
            item.insert("finished_at".to_owned(), num(t));
        }
        if let Some(b) = &r.blame {
            item.insert("blame".to_owned(), AttributeValue::S(b.clone()));
        }
        if let Some(release) = &r.release {
            item.insert("release".to_owned(), AttributeValue::S(release.clone()));
        }
        if r.allow_shrink {
            item.insert("allow_shrink".to_owned(), AttributeValue::Bool(true));
        }
        if let (Some(key), Some(sha)) = (&r.manifest, &r.manifest_sha256) {
            item.insert("manifest".to_owned(), AttributeValue::S(key.clone()));
            item.insert("manifest_sha256".to_owned(), AttributeValue::S(sha.clone()));
            item.insert("manifest_versioned".to_owned(), AttributeValue::Bool(r.manifest_versioned));
        }
        if let Some(to) = &r.rollback_to {
            item.insert("rollback_to".to_owned(), AttributeValue::S(to.clone()));
        }
        if r.refused_key_count > 0 {
            item.insert("refused_keys".to_owned(), list(&r.refused_keys));
            item.insert("refused_key_count".to_owned(), num(r.refused_key_count));
        }
        // A running snapshot never overwrites a finished record.
        let condition = r.end.is_none().then(|| "attribute_not_exists(#end)".to_owned());
        self.put(item, condition, &[("#end", "end")]).await
    }

    async fn wave(&self, wave_id: &str) -> Result<Option<WaveRecord>, StoreError> {
        let pk = self.keys().wave_pk(wave_id);
        let Some(a) = self.get(&pk).await? else { return Ok(None) };
        let r = Reader { pk: &pk, attrs: &a };
        Ok(Some(WaveRecord {
            wave_id: r.string("wave_id")?.unwrap_or_default(),
            target: r.number("target")?.unwrap_or_default(),
            epoch: r.string("epoch")?.unwrap_or_default(),
            reason: r.string("reason")?.unwrap_or_default(),
            started_at: r.number("started_at")?.unwrap_or_default(),
            document_version: r.string("document_version")?.unwrap_or_default(),
            commands_expire_at: r.number("commands_expire_at")?.unwrap_or_default(),
            instances: r.strings("instances")?,
            quarantined: r.strings("quarantined")?,
            not_online: r.strings("not_online")?,
            too_old: r.strings("too_old")?,
            busy: r.strings("busy")?,
            command_ids: r.strings("command_ids")?,
            end: r.string("end")?.map(|s| parse_end(&pk, &s)).transpose()?,
            finished_at: r.number("finished_at")?,
            synced: r.number("synced")?.unwrap_or_default(),
            failed: r.strings("failed")?,
            not_attempted: r.strings("not_attempted")?,
            gone: r.strings("gone")?,
            unreachable: r.strings("unreachable")?,
            blame: r.string("blame")?,
            release: r.string("release")?,
            allow_shrink: r.boolean("allow_shrink")?,
            manifest: r.string("manifest")?,
            manifest_sha256: r.string("manifest_sha256")?,
            manifest_versioned: r.boolean("manifest_versioned")?,
            refused_keys: r.strings("refused_keys")?,
            refused_key_count: r.number("refused_key_count")?.unwrap_or_default(),
            rollback_to: r.string("rollback_to")?,
        }))
    }
}

fn end_name(end: WaveEnd) -> &'static str {
    match end {
        WaveEnd::Success => "success",
        WaveEnd::Failure => "failure",
        WaveEnd::Abandoned => "abandoned",
        WaveEnd::Refused => "refused",
    }
}

fn parse_end(pk: &str, s: &str) -> Result<WaveEnd, StoreError> {
    match s {
        "success" => Ok(WaveEnd::Success),
        "failure" => Ok(WaveEnd::Failure),
        "abandoned" => Ok(WaveEnd::Abandoned),
        "refused" => Ok(WaveEnd::Refused),
        other => Err(StoreError::Unreadable { pk: pk.to_owned(), why: format!("unknown wave end {other:?}") }),
    }
}

fn fingerprint(r: &Reader<'_>, attr: &str) -> Result<Option<Fingerprint>, StoreError> {
    r.map(attr, |inner| match (inner.number("count")?, inner.number("newest_ms")?) {
        (Some(count), Some(newest_ms)) => {
            Ok(Fingerprint { count, newest_ms, digest: inner.number("digest")?.unwrap_or(0) })
        }
        _ => Err(r.bad(attr, "a fingerprint")),
    })
}

fn parse_fleet(pk: &str, attrs: &Attrs) -> Result<FleetItem, StoreError> {
    let r = Reader { pk, attrs };
    let schema = r.number(A_SCHEMA)?.unwrap_or(SCHEMA);
    if schema > fleet_attrs::SCHEMA_READ {
        return Err(StoreError::Unreadable {
            pk: pk.to_owned(),
            why: format!("written by schema {schema}; this version reads up to {}", fleet_attrs::SCHEMA_READ),
        });
    }
    let wave = match r.string(A_WAVE)? {
        Some(id) => Some(Wave {
            id,
            target: r.number(A_RUNNING)?.ok_or_else(|| r.bad(A_RUNNING, "present"))?,
            lease_expires_at: r.number(A_LEASE)?.unwrap_or_default(),
            sending_since: r.number(A_SINCE)?.unwrap_or_default(),
            command_ids: r.strings(A_COMMANDS)?,
            sent: r.boolean(A_SENT)?,
            fingerprint: fingerprint(&r, A_FP_START)?,
            manifest: release_ref(&r, A_MANIFEST_START)?,
            sender: r.string(A_SENDER)?.unwrap_or_default(),
            rollback: r.string(A_ROLLBACK)?,
            changes_through: r.number(A_CHANGES_START)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(FleetItem {
        requested_gen: r.number(A_REQUESTED)?.unwrap_or_default(),
        completed_gen: r.number(A_COMPLETED)?.unwrap_or_default(),
        wave,
        failed_gen: r.number(A_FAILED_GEN)?.unwrap_or_default(),
        failed_attempts: u32::try_from(r.number(A_FAILED_ATTEMPTS)?.unwrap_or_default()).unwrap_or(u32::MAX),
        fingerprint_synced: fingerprint(&r, A_FP_SYNCED)?,
        fingerprint_failed: fingerprint(&r, A_FP_FAILED)?,
        epoch: r.string(A_EPOCH)?.unwrap_or_default(),
        last_change_at: r.number(A_LAST_CHANGE)?,
        unsynced_since: r.number(A_UNSYNCED)?,
        trigger_at: r.number(A_TRIGGER)?,
        allow_shrink_gen: r.number(A_ALLOW_SHRINK)?.unwrap_or_default(),
        allow_shrink_spent: r.number(A_ALLOW_SPENT)?.unwrap_or_default(),
        last_start_at: r.number(A_LAST_START)?,
        refused_gen: r.number(A_REFUSED)?.unwrap_or_default(),
        release: release_ref(&r, A_RELEASE)?,
        releases: kept(&r)?,
        pin: pin(&r, A_PIN)?,
        synced_through: r.number(A_SYNCED_THROUGH)?.unwrap_or_default(),
        last_synced_wave: r.string(A_LAST_SYNCED)?,
        last_wave: r.string(A_LAST_WAVE)?,
    })
}
