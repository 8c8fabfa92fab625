//! Where the fleet item, the per-wave records and the per-instance records
//! live: [`DynamoStore`] (the lock table) and [`MemoryStore`] (the executable
//! specification: it applies [`super::state::apply`] under a mutex).
//!
//! Items of the lock table (one string partition key `pk`):
//!
//! | `pk` | what |
//! |---|---|
//! | `<fleet>` | the fleet item ([`FleetItem`]): small and hot |
//! | `<fleet>#wave#<wave_id>` | one wave's record ([`WaveRecord`]), expires after 30 days |
//! | `<fleet>#instance#<id>` | one instance's sync record ([`InstanceRecord`]) |
//!
//! Every fleet-item transition is one conditional write. `Demand`, `Start`,
//! `RecordCommands` and `Renew` are pure expressions (`Start` copies
//! `requested_gen` into `running_gen` inside the write, so no demand can slip
//! between a read and the write). `Finish` and `TakeOver` read the item,
//! compute the next one with the pure function, and write it on condition
//! that the same wave still holds the lease (and, for a take-over, that its
//! lease expired): only the holder can change what they write.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};
use serde::Serialize;
use thiserror::Error;

use super::state::{self, Fingerprint, FleetItem, Op, Refusal, SCHEMA, Wave, WaveEnd};
use crate::error::AwsError;
use crate::lifecycle::record::LifecycleRecord;

/// The result of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The write happened; the item after it.
    Won(FleetItem),
    /// The condition failed; why.
    Lost(Refusal),
}

/// A store failure (never a lost race: that is [`Applied::Lost`]).
#[derive(Debug, Error)]
pub enum StoreError {
    /// DynamoDB failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// An item this version cannot read (corrupt, or written by a newer schema).
    #[error("lock table item {pk:?} is unreadable: {why}")]
    Unreadable {
        /// Its key.
        pk: String,
        /// Why.
        why: String,
    },
}

impl StoreError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Aws(e) if e.is_retryable())
    }
}

/// One instance's outcome in a wave or a catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

/// An instance's sync record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    /// The recovery catch-up of a quarantined instance, while in flight.
    pub recovery_command: Option<String>,
    /// The generation that recovery catch-up syncs to.
    pub recovery_gen: u64,
    /// When the last recovery catch-up was sent, epoch ms.
    pub recovery_sent_at: Option<u64>,
}

impl InstanceRecord {
    /// Whether waves leave it out.
    pub fn quarantined(&self) -> bool {
        self.quarantined_since.is_some()
    }
}

/// One wave, for the record (and for the operator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WaveRecord {
    /// The wave id.
    pub wave_id: String,
    /// Its generation.
    pub target: u64,
    /// Why it started (`upload`, `follow-up`, `retry`, `manual: ...`, `sweep`).
    pub reason: String,
    /// Epoch ms.
    pub started_at: u64,
    /// Instances it was sent to.
    pub instances: Vec<String>,
    /// Quarantined instances left out.
    pub quarantined: Vec<String>,
    /// Its commands.
    pub command_ids: Vec<String>,
    /// How it ended (absent while running).
    pub end: Option<WaveEnd>,
    /// Epoch ms.
    pub finished_at: Option<u64>,
    /// Instances that synced.
    pub succeeded: Vec<String>,
    /// Instances that failed.
    pub failed: Vec<String>,
    /// Instances it never ran on.
    pub not_attempted: Vec<String>,
    /// Instances that went away.
    pub gone: Vec<String>,
}

/// How long a wave record is kept (DynamoDB TTL deletes it later).
pub const WAVE_RECORD_DAYS: u64 = 30;

/// The lock table, as the sync needs it.
pub trait FleetStore: Send + Sync {
    /// Reads the fleet item (strongly consistent).
    fn load(&self) -> impl Future<Output = Result<Option<FleetItem>, StoreError>> + Send;
    /// Applies one transition as one conditional write.
    fn apply(&self, op: &Op) -> impl Future<Output = Result<Applied, StoreError>> + Send;
    /// Writes (overwrites) a wave record.
    fn put_wave(&self, record: &WaveRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Reads a wave record.
    fn wave(&self, wave_id: &str) -> impl Future<Output = Result<Option<WaveRecord>, StoreError>> + Send;
    /// Reads instance records (an instance never seen has a default record).
    fn instances(&self, ids: &[String]) -> impl Future<Output = Result<Vec<InstanceRecord>, StoreError>> + Send;
    /// Records each instance's result for `generation`: a success resets its
    /// failures and lifts a quarantine; a failure counts, and quarantines at
    /// `quarantine_after` consecutive failures. Returns the new records.
    fn record_results(
        &self,
        generation: u64,
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
    /// Reads an instance's lifecycle record and its version (0: none yet).
    fn lifecycle(&self, instance_id: &str) -> impl Future<Output = Result<(LifecycleRecord, u64), StoreError>> + Send;
    /// Writes an instance's lifecycle record if its version is still
    /// `expected`; returns the new version, or `None` when another writer
    /// moved it first. `expires_at` (epoch seconds) lets DynamoDB delete the
    /// whole instance item once the instance is gone.
    fn save_lifecycle(
        &self,
        instance_id: &str,
        record: &LifecycleRecord,
        expected: u64,
        expires_at: Option<u64>,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
}

/// What a result does to an instance record (shared by both stores).
pub fn next_record(mut r: InstanceRecord, generation: u64, result: InstanceResult, now: u64, k: u32) -> InstanceRecord {
    match result {
        InstanceResult::Synced => {
            r.sync_failures = 0;
            r.quarantined_since = None;
            r.last_synced_gen = r.last_synced_gen.max(generation);
        }
        InstanceResult::Failed => {
            r.sync_failures += 1;
            if r.sync_failures >= k && r.quarantined_since.is_none() {
                r.quarantined_since = Some(now);
            }
        }
        InstanceResult::NotAttempted | InstanceResult::Gone => {}
    }
    r
}

// ---------------------------------------------------------------------------
// MemoryStore
// ---------------------------------------------------------------------------

/// The in-memory store: the pure transitions under a mutex.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    fleet: Option<FleetItem>,
    waves: HashMap<String, WaveRecord>,
    instances: HashMap<String, InstanceRecord>,
    lifecycles: HashMap<String, (LifecycleRecord, u64)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

impl FleetStore for MemoryStore {
    async fn load(&self) -> Result<Option<FleetItem>, StoreError> {
        Ok(self.with(|m| m.fleet.clone()))
    }

    async fn apply(&self, op: &Op) -> Result<Applied, StoreError> {
        Ok(self.with(|m| match state::apply(m.fleet.as_ref(), op) {
            Ok(next) => {
                m.fleet = Some(next.clone());
                Applied::Won(next)
            }
            Err(refusal) => Applied::Lost(refusal),
        }))
    }

    async fn put_wave(&self, record: &WaveRecord) -> Result<(), StoreError> {
        self.with(|m| m.waves.insert(record.wave_id.clone(), record.clone()));
        Ok(())
    }

    async fn wave(&self, wave_id: &str) -> Result<Option<WaveRecord>, StoreError> {
        Ok(self.with(|m| m.waves.get(wave_id).cloned()))
    }

    async fn instances(&self, ids: &[String]) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(self.with(|m| ids.iter().map(|id| m.instances.get(id).cloned().unwrap_or_else(|| fresh(id))).collect()))
    }

    async fn record_results(
        &self,
        generation: u64,
        results: &[(String, InstanceResult)],
        now: u64,
        quarantine_after: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(self.with(|m| {
            results
                .iter()
                .map(|(id, result)| {
                    let current = m.instances.get(id).cloned().unwrap_or_else(|| fresh(id));
                    let next = next_record(current, generation, *result, now, quarantine_after);
                    m.instances.insert(id.clone(), next.clone());
                    next
                })
                .collect()
        }))
    }

    async fn set_recovery(
        &self,
        instance_id: &str,
        command: Option<String>,
        generation: u64,
        sent_at: u64,
    ) -> Result<(), StoreError> {
        self.with(|m| {
            let r = m.instances.entry(instance_id.to_owned()).or_insert_with(|| fresh(instance_id));
            r.recovery_command = command;
            r.recovery_gen = generation;
            r.recovery_sent_at = Some(sent_at);
        });
        Ok(())
    }

    async fn lifecycle(&self, instance_id: &str) -> Result<(LifecycleRecord, u64), StoreError> {
        Ok(self.with(|m| m.lifecycles.get(instance_id).cloned().unwrap_or_default()))
    }

    async fn save_lifecycle(
        &self,
        instance_id: &str,
        record: &LifecycleRecord,
        expected: u64,
        _expires_at: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|m| {
            let current = m.lifecycles.get(instance_id).map(|(_, v)| *v).unwrap_or(0);
            if current != expected {
                return None;
            }
            m.lifecycles.insert(instance_id.to_owned(), (record.clone(), expected + 1));
            Some(expected + 1)
        }))
    }
}

fn fresh(id: &str) -> InstanceRecord {
    InstanceRecord { instance_id: id.to_owned(), ..InstanceRecord::default() }
}

// ---------------------------------------------------------------------------
// DynamoStore
// ---------------------------------------------------------------------------

/// The lock table in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    fleet: String,
}

// Attribute names, always used through `#placeholders` (several are
// DynamoDB reserved words).
const PK: &str = "pk";
const A_SCHEMA: &str = "schema";
const A_REQUESTED: &str = "requested_gen";
const A_COMPLETED: &str = "completed_gen";
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
const A_EXPIRES: &str = "expires_at";
const A_LIFECYCLE: &str = "lifecycle";
const A_LC_VERSION: &str = "lifecycle_version";

/// Builds an `UpdateItem` expression's names and values.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn n(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_owned());
        key
    }

    fn v(&mut self, name: &str, value: AttributeValue) -> String {
        let key = format!(":{name}");
        self.values.insert(key.clone(), value);
        key
    }

    /// Drops placeholders the final expressions do not use (DynamoDB
    /// rejects unused ones), so branches may name attributes freely.
    fn prune(&mut self, texts: &[&str]) {
        let used = |placeholder: &str| {
            texts.iter().any(|t| {
                t.match_indices(placeholder).any(|(at, _)| {
                    let next = t[at + placeholder.len()..].chars().next();
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
        };
        self.names.retain(|k, _| used(k));
        self.values.retain(|k, _| used(k));
    }
}

fn num(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn fingerprint_value(fp: &Fingerprint) -> AttributeValue {
    AttributeValue::M(HashMap::from([("count".to_owned(), num(fp.count)), ("newest_ms".to_owned(), num(fp.newest_ms))]))
}

impl DynamoStore {
    /// The lock table `table` of fleet `fleet`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, fleet: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into(), fleet: fleet.into() }
    }

    fn wave_pk(&self, wave_id: &str) -> String {
        format!("{}#wave#{wave_id}", self.fleet)
    }

    fn instance_pk(&self, instance_id: &str) -> String {
        format!("{}#instance#{instance_id}", self.fleet)
    }

    async fn update(
        &self,
        update: String,
        condition: Option<String>,
        mut expr: Expr,
    ) -> Result<Result<FleetItem, Option<FleetItem>>, StoreError> {
        expr.prune(&[&update, condition.as_deref().unwrap_or_default()]);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(self.fleet.clone()))
            .update_expression(update)
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(if expr.values.is_empty() { None } else { Some(expr.values) })
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let attrs = out.attributes.unwrap_or_default();
                Ok(Ok(parse_fleet(&self.fleet, &attrs)?))
            }
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_conditional_check_failed_exception() => {
                let old = match ctx.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                match old {
                    Some(attrs) if !attrs.is_empty() => Ok(Err(Some(parse_fleet(&self.fleet, &attrs)?))),
                    _ => Ok(Err(None)),
                }
            }
            Err(e) => Err(AwsError::from_sdk("UpdateItem", e).into()),
        }
    }

    /// Classifies a failed condition from the item as it was.
    fn refusal(old: Option<FleetItem>, op: &Op) -> Result<Refusal, StoreError> {
        match state::apply(old.as_ref(), op) {
            Err(refusal) => Ok(refusal),
            // The pure function would have applied it: the two disagree.
            Ok(_) => Err(StoreError::Unreadable {
                pk: String::new(),
                why: format!("condition failed for {op:?} but the item allows it"),
            }),
        }
    }
}

impl FleetStore for DynamoStore {
    async fn load(&self) -> Result<Option<FleetItem>, StoreError> {
        self.get(&self.fleet).await?.map(|attrs| parse_fleet(&self.fleet, &attrs)).transpose()
    }

    async fn apply(&self, op: &Op) -> Result<Applied, StoreError> {
        let mut e = Expr::default();
        let (update, condition) = match op {
            Op::Demand { count } => {
                let (schema, completed, requested) = (e.n(A_SCHEMA), e.n(A_COMPLETED), e.n(A_REQUESTED));
                let (s, zero, c) = (e.v("schema", num(SCHEMA)), e.v("zero", num(0)), e.v("count", num(*count)));
                (
                    format!(
                        "SET {schema} = if_not_exists({schema}, {s}), {completed} = if_not_exists({completed}, {zero}) ADD {requested} {c}"
                    ),
                    Some(format!("attribute_not_exists({schema}) OR {schema} <= {s}")),
                )
            }
            Op::Start { wave_id, now, lease_ms, fingerprint } => {
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
                let mut update = format!(
                    "SET {wave} = {w}, {running} = {requested}, {lease} = {exp}, {since} = {nowv}, {cmds} = {empty}, {sent} = {no}"
                );
                match fingerprint {
                    Some(f) => {
                        let fv = e.v("fp", fingerprint_value(f));
                        update.push_str(&format!(", {fp} = {fv}"));
                    }
                    None => update.push_str(&format!(" REMOVE {fp}")),
                }
                let condition = format!(
                    "attribute_not_exists({wave}) AND {requested} > {completed} AND (attribute_not_exists({fgen}) OR {fgen} < {requested} OR {fatt} < {max})"
                );
                (update, Some(condition))
            }
            Op::RecordCommands { wave_id, command_ids, sent } => {
                let (wave, cmds, sent_attr) = (e.n(A_WAVE), e.n(A_COMMANDS), e.n(A_SENT));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let ids = e.v("ids", AttributeValue::L(command_ids.iter().cloned().map(AttributeValue::S).collect()));
                let mut update = format!("SET {cmds} = list_append({cmds}, {ids})");
                if *sent {
                    let yes = e.v("yes", AttributeValue::Bool(true));
                    update.push_str(&format!(", {sent_attr} = {yes}"));
                }
                (update, Some(format!("{wave} = {w}")))
            }
            Op::Renew { wave_id, now, lease_ms } => {
                let (wave, lease) = (e.n(A_WAVE), e.n(A_LEASE));
                let w = e.v("w", AttributeValue::S(wave_id.clone()));
                let exp = e.v("exp", num(now + lease_ms));
                (format!("SET {lease} = {exp}"), Some(format!("{wave} = {w}")))
            }
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
                let mut update = format!("SET {completed} = {c}, {fgen} = {fg}, {fatt} = {fa}");
                if let Some(fp) = &next.fingerprint_synced {
                    let (attr, v) = (e.n(A_FP_SYNCED), e.v("fps", fingerprint_value(fp)));
                    update.push_str(&format!(", {attr} = {v}"));
                }
                let removed: Vec<String> =
                    [A_RUNNING, A_LEASE, A_SINCE, A_COMMANDS, A_SENT, A_FP_START].iter().map(|a| e.n(a)).collect();
                update.push_str(&format!(" REMOVE {wave}, {}", removed.join(", ")));
                let mut condition = format!("{wave} = {w}");
                if let Op::TakeOver { now, .. } = op {
                    let (lease, nowv) = (e.n(A_LEASE), e.v("now", num(*now)));
                    condition.push_str(&format!(" AND {lease} < {nowv}"));
                }
                (update, Some(condition))
            }
        };
        match self.update(update, condition, e).await? {
            Ok(item) => Ok(Applied::Won(item)),
            Err(old) => {
                let mut refusal = Self::refusal(old, op);
                if let Err(StoreError::Unreadable { pk, .. }) = &mut refusal {
                    pk.clone_from(&self.fleet);
                }
                Ok(Applied::Lost(refusal?))
            }
        }
    }

    async fn put_wave(&self, r: &WaveRecord) -> Result<(), StoreError> {
        let list = |v: &[String]| AttributeValue::L(v.iter().cloned().map(AttributeValue::S).collect());
        let mut item = HashMap::from([
            (PK.to_owned(), AttributeValue::S(self.wave_pk(&r.wave_id))),
            ("wave_id".to_owned(), AttributeValue::S(r.wave_id.clone())),
            ("target".to_owned(), num(r.target)),
            ("reason".to_owned(), AttributeValue::S(r.reason.clone())),
            ("started_at".to_owned(), num(r.started_at)),
            ("instances".to_owned(), list(&r.instances)),
            ("quarantined".to_owned(), list(&r.quarantined)),
            ("command_ids".to_owned(), list(&r.command_ids)),
            ("succeeded".to_owned(), list(&r.succeeded)),
            ("failed".to_owned(), list(&r.failed)),
            ("not_attempted".to_owned(), list(&r.not_attempted)),
            ("gone".to_owned(), list(&r.gone)),
            (A_EXPIRES.to_owned(), num(r.finished_at.unwrap_or(r.started_at) / 1000 + WAVE_RECORD_DAYS * 86_400)),
        ]);
        if let Some(end) = r.end {
            item.insert("end".to_owned(), AttributeValue::S(end_name(end).to_owned()));
        }
        if let Some(t) = r.finished_at {
            item.insert("finished_at".to_owned(), num(t));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("PutItem", e))?;
        Ok(())
    }

    async fn wave(&self, wave_id: &str) -> Result<Option<WaveRecord>, StoreError> {
        let pk = self.wave_pk(wave_id);
        let Some(a) = self.get(&pk).await? else { return Ok(None) };
        let r = Reader { pk: &pk, attrs: &a };
        Ok(Some(WaveRecord {
            wave_id: r.string("wave_id")?.unwrap_or_default(),
            target: r.number("target")?.unwrap_or_default(),
            reason: r.string("reason")?.unwrap_or_default(),
            started_at: r.number("started_at")?.unwrap_or_default(),
            instances: r.strings("instances")?,
            quarantined: r.strings("quarantined")?,
            command_ids: r.strings("command_ids")?,
            end: r.string("end")?.map(|s| parse_end(&pk, &s)).transpose()?,
            finished_at: r.number("finished_at")?,
            succeeded: r.strings("succeeded")?,
            failed: r.strings("failed")?,
            not_attempted: r.strings("not_attempted")?,
            gone: r.strings("gone")?,
        }))
    }

    async fn instances(&self, ids: &[String]) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut found: HashMap<String, InstanceRecord> = HashMap::new();
        let unique: Vec<&String> = {
            let mut seen = std::collections::BTreeSet::new();
            ids.iter().filter(|id| seen.insert(id.as_str())).collect()
        };
        // BatchGetItem takes 100 keys; unprocessed keys are asked again.
        for chunk in unique.chunks(100) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for id in chunk {
                keys = keys.keys(HashMap::from([(PK.to_owned(), AttributeValue::S(self.instance_pk(id)))]));
            }
            let mut request = Some(HashMap::from([(
                self.table.clone(),
                keys.build().map_err(|e| StoreError::Unreadable { pk: self.table.clone(), why: e.to_string() })?,
            )]));
            while let Some(items) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(items))
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("BatchGetItem", e))?;
                for attrs in out.responses.unwrap_or_default().remove(&self.table).unwrap_or_default() {
                    let record = parse_instance(&attrs)?;
                    found.insert(record.instance_id.clone(), record);
                }
                request = out.unprocessed_keys.filter(|u| !u.is_empty());
            }
        }
        Ok(ids.iter().map(|id| found.get(id).cloned().unwrap_or_else(|| fresh(id))).collect())
    }

    async fn record_results(
        &self,
        generation: u64,
        results: &[(String, InstanceResult)],
        now: u64,
        quarantine_after: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut out = Vec::new();
        for (id, result) in results {
            let mut e = Expr::default();
            let (iid, failures, quarantined, last) =
                (e.n("instance_id"), e.n("sync_failures"), e.n("quarantined_since"), e.n("last_synced_gen"));
            let idv = e.v("id", AttributeValue::S(id.clone()));
            let update = match result {
                InstanceResult::Synced => {
                    let (zero, g) = (e.v("zero", num(0)), e.v("gen", num(generation)));
                    format!("SET {iid} = {idv}, {failures} = {zero}, {last} = {g} REMOVE {quarantined}")
                }
                InstanceResult::Failed => {
                    let one = e.v("one", num(1));
                    format!("SET {iid} = {idv} ADD {failures} {one}")
                }
                InstanceResult::NotAttempted | InstanceResult::Gone => {
                    format!("SET {iid} = {idv}")
                }
            };
            let attrs = self.instance_update(id, update, None, e).await?.unwrap_or_default();
            let mut record = parse_instance(&attrs)?;
            if *result == InstanceResult::Failed && record.sync_failures >= quarantine_after && !record.quarantined() {
                let mut e = Expr::default();
                let (q, failures) = (e.n("quarantined_since"), e.n("sync_failures"));
                let (t, k) = (e.v("now", num(now)), e.v("k", num(u64::from(quarantine_after))));
                let update = format!("SET {q} = if_not_exists({q}, {t})");
                let condition = format!("{failures} >= {k}");
                if let Some(attrs) = self.instance_update(id, update, Some(condition), e).await? {
                    record = parse_instance(&attrs)?;
                }
            }
            out.push(record);
        }
        Ok(out)
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
        self.instance_update(instance_id, update, None, e).await?;
        Ok(())
    }

    async fn lifecycle(&self, instance_id: &str) -> Result<(LifecycleRecord, u64), StoreError> {
        let pk = self.instance_pk(instance_id);
        let Some(attrs) = self.get(&pk).await? else { return Ok((LifecycleRecord::default(), 0)) };
        let r = Reader { pk: &pk, attrs: &attrs };
        let version = r.number(A_LC_VERSION)?.unwrap_or(0);
        let record = match r.string(A_LIFECYCLE)? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Unreadable { pk: pk.clone(), why: format!("lifecycle record: {e}") })?,
            None => LifecycleRecord::default(),
        };
        Ok((record, version))
    }

    async fn save_lifecycle(
        &self,
        instance_id: &str,
        record: &LifecycleRecord,
        expected: u64,
        expires_at: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let json = serde_json::to_string(record)
            .map_err(|e| StoreError::Unreadable { pk: self.instance_pk(instance_id), why: e.to_string() })?;
        let mut e = Expr::default();
        let (iid, lc, version, expires) = (e.n("instance_id"), e.n(A_LIFECYCLE), e.n(A_LC_VERSION), e.n(A_EXPIRES));
        let idv = e.v("id", AttributeValue::S(instance_id.to_owned()));
        let j = e.v("json", AttributeValue::S(json));
        let (old, new) = (e.v("old", num(expected)), e.v("new", num(expected + 1)));
        let mut update = format!("SET {iid} = {idv}, {lc} = {j}, {version} = {new}");
        match expires_at {
            Some(t) => {
                let tv = e.v("expires", num(t));
                update.push_str(&format!(", {expires} = {tv}"));
            }
            None => update.push_str(&format!(" REMOVE {expires}")),
        }
        let condition = if expected == 0 {
            format!("attribute_not_exists({version}) OR {version} = {old}")
        } else {
            format!("{version} = {old}")
        };
        Ok(self.instance_update(instance_id, update, Some(condition), e).await?.map(|_| expected + 1))
    }
}

impl DynamoStore {
    /// A strongly consistent read of one item.
    async fn get(&self, pk: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetItem", e))?;
        Ok(out.item)
    }

    /// Updates an instance record; `None` when the condition failed.
    async fn instance_update(
        &self,
        instance_id: &str,
        update: String,
        condition: Option<String>,
        mut expr: Expr,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        expr.prune(&[&update, condition.as_deref().unwrap_or_default()]);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(self.instance_pk(instance_id)))
            .update_expression(update)
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(if expr.values.is_empty() { None } else { Some(expr.values) })
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_conditional_check_failed_exception() => Ok(None),
            Err(e) => Err(AwsError::from_sdk("UpdateItem", e).into()),
        }
    }
}

fn end_name(end: WaveEnd) -> &'static str {
    match end {
        WaveEnd::Success => "success",
        WaveEnd::Failure => "failure",
        WaveEnd::Abandoned => "abandoned",
    }
}

fn parse_end(pk: &str, s: &str) -> Result<WaveEnd, StoreError> {
    match s {
        "success" => Ok(WaveEnd::Success),
        "failure" => Ok(WaveEnd::Failure),
        "abandoned" => Ok(WaveEnd::Abandoned),
        other => Err(StoreError::Unreadable { pk: pk.to_owned(), why: format!("unknown wave end {other:?}") }),
    }
}

/// Typed reads of an item's attributes.
struct Reader<'a> {
    pk: &'a str,
    attrs: &'a HashMap<String, AttributeValue>,
}

impl Reader<'_> {
    fn bad(&self, attr: &str, what: &str) -> StoreError {
        StoreError::Unreadable { pk: self.pk.to_owned(), why: format!("{attr} is not {what}") }
    }

    fn number(&self, attr: &str) -> Result<Option<u64>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| self.bad(attr, "a whole number")),
            Some(_) => Err(self.bad(attr, "a number")),
        }
    }

    fn string(&self, attr: &str) -> Result<Option<String>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(attr, "a string")),
        }
    }

    fn strings(&self, attr: &str) -> Result<Vec<String>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(Vec::new()),
            Some(AttributeValue::L(items)) => items
                .iter()
                .map(|i| match i {
                    AttributeValue::S(s) => Ok(s.clone()),
                    _ => Err(self.bad(attr, "a list of strings")),
                })
                .collect(),
            Some(AttributeValue::Ss(items)) => Ok(items.clone()),
            Some(_) => Err(self.bad(attr, "a list")),
        }
    }

    fn boolean(&self, attr: &str) -> Result<bool, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(false),
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.bad(attr, "a boolean")),
        }
    }

    fn fingerprint(&self, attr: &str) -> Result<Option<Fingerprint>, StoreError> {
        match self.attrs.get(attr) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::M(m)) => {
                let inner = Reader { pk: self.pk, attrs: m };
                match (inner.number("count")?, inner.number("newest_ms")?) {
                    (Some(count), Some(newest_ms)) => Ok(Some(Fingerprint { count, newest_ms })),
                    _ => Err(self.bad(attr, "a fingerprint")),
                }
            }
            Some(_) => Err(self.bad(attr, "a map")),
        }
    }
}

fn parse_fleet(pk: &str, attrs: &HashMap<String, AttributeValue>) -> Result<FleetItem, StoreError> {
    let r = Reader { pk, attrs };
    let schema = r.number(A_SCHEMA)?.unwrap_or(SCHEMA);
    if schema > SCHEMA {
        return Err(StoreError::Unreadable {
            pk: pk.to_owned(),
            why: format!("written by schema {schema}; this version reads {SCHEMA}"),
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
            fingerprint: r.fingerprint(A_FP_START)?,
        }),
        None => None,
    };
    Ok(FleetItem {
        requested_gen: r.number(A_REQUESTED)?.unwrap_or_default(),
        completed_gen: r.number(A_COMPLETED)?.unwrap_or_default(),
        wave,
        failed_gen: r.number(A_FAILED_GEN)?.unwrap_or_default(),
        failed_attempts: u32::try_from(r.number(A_FAILED_ATTEMPTS)?.unwrap_or_default()).unwrap_or(u32::MAX),
        fingerprint_synced: r.fingerprint(A_FP_SYNCED)?,
    })
}

fn parse_instance(attrs: &HashMap<String, AttributeValue>) -> Result<InstanceRecord, StoreError> {
    let pk = match attrs.get(PK) {
        Some(AttributeValue::S(s)) => s.as_str(),
        _ => "",
    };
    let r = Reader { pk, attrs };
    Ok(InstanceRecord {
        instance_id: r.string("instance_id")?.unwrap_or_default(),
        sync_failures: u32::try_from(r.number("sync_failures")?.unwrap_or_default()).unwrap_or(u32::MAX),
        quarantined_since: r.number("quarantined_since")?,
        last_synced_gen: r.number("last_synced_gen")?.unwrap_or_default(),
        recovery_command: r.string("recovery_command")?,
        recovery_gen: r.number("recovery_gen")?.unwrap_or_default(),
        recovery_sent_at: r.number("recovery_sent_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_placeholders_are_pruned_but_prefixes_are_not_confused() {
        let mut e = Expr::default();
        let (sent, sent_at, wave) = (e.n("sent"), e.n("sent_at"), e.n("wave_id"));
        let (w, unused) = (e.v("w", num(1)), e.v("unused", num(2)));
        let update = format!("SET {sent_at} = {w}");
        let condition = format!("{wave} = {w}");
        e.prune(&[&update, &condition]);
        assert!(e.names.contains_key(&sent_at) && e.names.contains_key(&wave));
        assert!(!e.names.contains_key(&sent), "#sent only appears as a prefix of #sent_at");
        assert!(e.values.contains_key(&w) && !e.values.contains_key(&unused));
    }
}
