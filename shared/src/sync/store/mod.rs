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
    /// The write happened; the item after it.
    Won(FleetItem),
    /// The condition failed; why.
    Lost(Refusal),
}

/// One wave, for the record (and for the operator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
pub trait FleetStore: RunHistory {
    /// Reads the fleet item (strongly consistent).
    fn load(&self) -> impl Future<Output = Result<Option<FleetItem>, StoreError>> + Send;
    /// Applies one transition as one conditional write.
    fn apply(&self, op: &Op) -> impl Future<Output = Result<Applied, StoreError>> + Send;
    /// Writes (overwrites) a wave record.
    fn put_wave(&self, record: &WaveRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
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
                    Applied::Won(next)
                }
                Err(refusal) => Applied::Lost(refusal),
            })
        })
    }

    async fn put_wave(&self, record: &WaveRecord) -> Result<(), StoreError> {
        let pk = self.keys().wave_pk(&record.wave_id);
        self.with(|items| {
            let item = items.entry(pk).or_default();
            item.clear();
            MemoryTable::write(item, record)
        })
    }

    async fn wave(&self, wave_id: &str) -> Result<Option<WaveRecord>, StoreError> {
        let pk = self.keys().wave_pk(wave_id);
        self.with(|items| items.get(&pk).map(|item| MemoryTable::read(&pk, item)).transpose())
    }
}
