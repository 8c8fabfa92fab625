//! The lock table as the sync needs it: the fleet item (the coalescing
//! lock), the per-wave records, and (through
//! [`RunHistory`]) the instances' run histories.
//!
//! Implemented over [`MemoryTable`] (the executable specification: it
//! applies [`super::state::apply`] under the table's lock) and over
//! [`crate::store::Table`] (DynamoDB, in [`dynamo`]). Every fleet-item
//! transition is one conditional write there; the conformance properties
//! (`conformance`) hold both to the same results.

pub mod dynamo;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::state::{self, FleetItem, Op, Refusal, WaveEnd};
use crate::ssm_document::history::RunHistory;
use crate::store::{Items, MemoryTable, StoreError};

/// The result of a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The write happened; the item after it (boxed: an item is far larger
    /// than a refusal).
    Won(Box<FleetItem>),
    /// The condition failed; why.
    Lost(Refusal),
}

/// One wave, for the record (and for the operator). Lists name only the
/// instances of note; the synced ones are counted (a record stays well under
/// DynamoDB's 400 KB item limit up to about 15,000 instances).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WaveRecord {
    /// The wave id.
    pub wave_id: String,
    /// Its generation.
    pub target: u64,
    /// The generation's lineage.
    pub epoch: String,
    /// Why it started (`upload`, `follow-up`, `retry`, `manual: ...`, `sweep`).
    pub reason: String,
    /// Epoch ms.
    pub started_at: u64,
    /// The document version it runs (pinned when it started).
    pub document_version: String,
    /// When its commands expire (delivery plus execution timeout, and a
    /// margin), epoch ms: past it, a wave is finished without them.
    pub commands_expire_at: u64,
    /// Instances it is sent to, in sending order (resuming reads it).
    pub instances: Vec<String>,
    /// Quarantined instances left out.
    pub quarantined: Vec<String>,
    /// In service, but not `Online` in SSM when it started: the sweep
    /// catches them up.
    pub not_online: Vec<String>,
    /// Agents too old for the document (`ENV_VAR` needs 3.3.2746.0): left out.
    pub too_old: Vec<String>,
    /// Instances with a catch-up in flight: left out, never run twice at once.
    pub busy: Vec<String>,
    /// Its commands.
    pub command_ids: Vec<String>,
    /// How it ended (absent while running).
    pub end: Option<WaveEnd>,
    /// Epoch ms.
    pub finished_at: Option<u64>,
    /// How many instances synced.
    pub synced: u64,
    /// Instances that failed.
    pub failed: Vec<String>,
    /// Instances it never ran on.
    pub not_attempted: Vec<String>,
    /// Instances that went away (refused at send as no longer running, or
    /// left while it ran).
    pub gone: Vec<String>,
    /// Instances in service that it never reached: caught up later.
    pub unreachable: Vec<String>,
    /// Why it failed without blaming its hosts, if it did.
    pub blame: Option<String>,
    /// The release it syncs (marker mode: the marker's id).
    pub release: Option<String>,
    /// The shrink guard is lifted for it (a manual sync with `allow_shrink`).
    pub allow_shrink: bool,
    /// Exact releases: the key of its manifest in the manifest bucket.
    pub manifest: Option<String>,
    /// The manifest's sha256 (hex).
    pub manifest_sha256: Option<String>,
    /// The manifest pins versions (a versioned bucket).
    pub manifest_versioned: bool,
    /// Codebase keys its manifest refused (unsafe as a path), escaped, with
    /// why: the first [`crate::sync::manifest::MAX_REFUSED_LISTED`].
    pub refused_keys: Vec<String>,
    /// How many keys it refused in all.
    pub refused_key_count: u64,
    /// A rollback: the id of the release it put back (its manifest is the
    /// record's).
    pub rollback_to: Option<String>,
}

/// How long a wave record is kept (DynamoDB TTL deletes it later).
pub const WAVE_RECORD_DAYS: u64 = 30;

/// The lock table, as the sync needs it.
pub trait FleetStore: RunHistory {
    /// Reads the fleet item (strongly consistent).
    fn load(&self) -> impl Future<Output = Result<Option<FleetItem>, StoreError>> + Send;
    /// Applies one transition as one conditional write.
    fn apply(&self, op: &Op) -> impl Future<Output = Result<Applied, StoreError>> + Send;
    /// Writes (overwrites) a wave record; a record without an `end` never
    /// overwrites a finished one (a slow sender's last write must not erase
    /// a settle's result). Returns whether it was written.
    fn put_wave(&self, record: &WaveRecord) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Reads a wave record.
    fn wave(&self, wave_id: &str) -> impl Future<Output = Result<Option<WaveRecord>, StoreError>> + Send;
}

impl FleetStore for MemoryTable {
    async fn load(&self) -> Result<Option<FleetItem>, StoreError> {
        let pk = self.keys().fleet_pk();
        self.with(|items| items.get(&pk).map(|item| MemoryTable::read(&pk, item)).transpose())
    }

    async fn apply(&self, op: &Op) -> Result<Applied, StoreError> {
        let pk = self.keys().fleet_pk();
        self.with(|items| {
            let current: Option<FleetItem> = items.get(&pk).map(|item| MemoryTable::read(&pk, item)).transpose()?;
            Ok(match state::apply(current.as_ref(), op) {
                Ok(next) => {
                    let item = items.entry(pk.clone()).or_default();
                    // The fleet item's own fields only: no stale wave left behind.
                    item.clear();
                    MemoryTable::write(item, &next)?;
                    Applied::Won(Box::new(next))
                }
                Err(refusal) => Applied::Lost(refusal),
            })
        })
    }

    async fn put_wave(&self, record: &WaveRecord) -> Result<bool, StoreError> {
        let pk = self.keys().wave_pk(&record.wave_id);
        self.with(|items| {
            let item = items.entry(pk).or_default();
            let finished = item.get("end").is_some_and(|e| !e.is_null());
            if record.end.is_none() && finished {
                return Ok(false);
            }
            item.clear();
            MemoryTable::write(item, record)?;
            Ok(true)
        })
    }

    async fn wave(&self, wave_id: &str) -> Result<Option<WaveRecord>, StoreError> {
        let pk = self.keys().wave_pk(wave_id);
        self.with(|items| items.get(&pk).map(|item| MemoryTable::read(&pk, item)).transpose())
    }
}
