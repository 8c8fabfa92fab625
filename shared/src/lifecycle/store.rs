//! The lock table as the lifecycle gate needs it: each instance's
//! lifecycle record (a versioned document in its item), the demand counter
//! a catch-up syncs to, and (through [`RunHistory`]) the instance's run
//! history, which a successful catch-up updates.

use std::future::Future;

use super::breaker::Breaker;
use super::record::LifecycleRecord;
use crate::ssm_document::history::RunHistory;
use crate::store::{Doc, Items, Lineage, StoreError};

/// Where the lifecycle record lives in the instance's item.
const RECORD: Doc = Doc { attr: "lifecycle", version: "lifecycle_version" };

/// Where the launch breaker lives in its item.
const BREAKER: Doc = Doc { attr: "breaker", version: "breaker_version" };

/// The lock table, as the lifecycle gate needs it.
pub trait RecordStore: RunHistory {
    /// The generation a catch-up syncs to: the fleet's lineage and demand
    /// counter (`requested_gen`; 0 before any demand), and whether a refused
    /// release holds catch-ups. The fleet item is created with a fresh
    /// lineage when it does not exist yet, so every document run carries one.
    fn requested(&self) -> impl Future<Output = Result<Lineage, StoreError>> + Send;

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

    /// The fleet's launch breaker and its version (0: none yet).
    fn breaker(&self) -> impl Future<Output = Result<(Breaker, u64), StoreError>> + Send;

    /// Writes the launch breaker if its version is still `expected`.
    fn save_breaker(
        &self,
        breaker: &Breaker,
        expected: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
}

impl<T: Items + RunHistory> RecordStore for T {
    async fn requested(&self) -> Result<Lineage, StoreError> {
        self.lineage(&crate::ssm_document::new_epoch()).await
    }

    async fn lifecycle(&self, instance_id: &str) -> Result<(LifecycleRecord, u64), StoreError> {
        self.load_doc(&self.keys().instance_pk(instance_id), RECORD).await
    }

    async fn save_lifecycle(
        &self,
        instance_id: &str,
        record: &LifecycleRecord,
        expected: u64,
        expires_at: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let pk = self.keys().instance_pk(instance_id);
        self.save_doc(&pk, RECORD, record, expected, expires_at, &[("instance_id", instance_id.to_owned())]).await
    }

    async fn breaker(&self) -> Result<(Breaker, u64), StoreError> {
        self.load_doc(&breaker_pk(self), BREAKER).await
    }

    async fn save_breaker(&self, breaker: &Breaker, expected: u64) -> Result<Option<u64>, StoreError> {
        self.save_doc(&breaker_pk(self), BREAKER, breaker, expected, None, &[]).await
    }
}

fn breaker_pk<T: Items>(store: &T) -> String {
    format!("{}#breaker#launch", store.keys().fleet_pk())
}
