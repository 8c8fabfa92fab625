//! The lock table's mechanics: the key scheme, conditional updates,
//! consistent reads, versioned documents, and an in-memory table with the
//! same atomicity. It knows no domain type: each domain declares the narrow
//! trait it needs ([`crate::sync::store::FleetStore`],
//! [`crate::lifecycle::store::RecordStore`],
//! [`crate::ssm_document::history::RunHistory`]) and implements it over
//! [`Items`] or directly over
//! [`Table`] (DynamoDB) and [`MemoryTable`] (the executable specification).
//!
//! Items of the lock table (one string partition key `pk`):
//!
//! | `pk` | what |
//! |---|---|
//! | `<fleet>` | the fleet item: small and hot |
//! | `<fleet>#wave#<wave_id>` | one wave's record, expires after 30 days |
//! | `<fleet>#instance#<id>` | one instance: its document runs and its lifecycle record |
//!
//! | module | what |
//! |---|---|
//! | [`expr`] | `UpdateItem` expressions and typed reads of attributes |
//! | [`table`] | [`Table`]: the lock table in DynamoDB |
//! | [`memory`] | [`MemoryTable`]: the same table in memory, one lock per step |

pub mod expr;
pub mod memory;
pub mod table;

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

pub use expr::{Expr, Reader, num, pin, pin_value, release_ref, release_value, string_list};
pub use memory::MemoryTable;
pub use table::{Attrs, Table, Updated};

use crate::error::AwsError;

/// The partition key attribute.
pub const PK: &str = "pk";

/// Attributes of the fleet item that more than one domain reads.
pub mod fleet_attrs {
    /// The demand counter (`requested_gen`): the generation a catch-up syncs to.
    pub const REQUESTED_GEN: &str = "requested_gen";
    /// The counter's lineage (`epoch`), sent with every generation.
    pub const EPOCH: &str = "epoch";
    /// The item's schema version.
    pub const SCHEMA: &str = "schema";
    /// The last generation synced everywhere.
    pub const COMPLETED_GEN: &str = "completed_gen";
    /// The generation whose release the instances' shrink guard refused.
    pub const REFUSED_GEN: &str = "refused_gen";
    /// The generation up to which a manual sync lifted the shrink guard.
    pub const ALLOW_SHRINK_GEN: &str = "allow_shrink_gen";
    /// The manifest of the release the fleet serves (a map: `key`,
    /// `sha256`): what catch-ups materialize (exact releases).
    pub const RELEASE_MANIFEST: &str = "release_manifest";
    /// The release a rollback pinned the fleet to (a map, see
    /// [`super::Pin`]); absent when the fleet is not pinned.
    pub const PIN: &str = "pin";
    /// The releases the fleet served (a list of maps: `id`, `manifest`,
    /// `wave_id`), oldest first.
    pub const RELEASES: &str = "releases";

    /// Whether a refused release is not yet followed by one the instances
    /// took, nor lifted by `allow_shrink`: no catch-up may put what the
    /// prefix holds live meanwhile (the sync's sweep and the lifecycle
    /// gate's launches alike).
    pub fn release_held(refused_gen: u64, completed_gen: u64, allow_shrink_gen: u64) -> bool {
        refused_gen > completed_gen && allow_shrink_gen <= refused_gen
    }
    /// The schema version this code writes (an unpinned fleet item).
    pub const SCHEMA_VERSION: u64 = 1;
    /// The schema version of a pinned fleet item: a version of the
    /// functions from before rollback (which reads 1 only, and would start a
    /// wave over the pin) refuses it, and says so, instead of undoing the
    /// rollback.
    pub const SCHEMA_PINNED: u64 = 2;
    /// The newest schema version this code reads.
    pub const SCHEMA_READ: u64 = SCHEMA_PINNED;
}

/// A wave's manifest (exact releases): its key in the manifest bucket and
/// the sha256 of its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReleaseRef {
    /// `manifests/<fleet>/<sha256>.jsonl.gz`.
    pub key: String,
    /// Hex.
    pub sha256: String,
    /// The generation whose wave wrote it: it names the fleet's release
    /// only while that is `completed_gen` (an older version of the
    /// functions advances `completed_gen` without touching it).
    #[serde(default)]
    pub generation: u64,
    /// It pins versions: its objects can be fetched whatever was written
    /// since. An unversioned manifest names ETags that the next upload
    /// replaces.
    #[serde(default)]
    pub versioned: bool,
}

impl ReleaseRef {
    /// Whether a catch-up can materialize it as the fleet's release at
    /// `completed_gen`.
    pub fn materializable(&self, completed_gen: u64) -> bool {
        self.versioned && self.generation == completed_gen && completed_gen > 0
    }
}

/// A fleet pinned by a rollback: no wave runs until `{"action": "resume"}`
/// (uploads still count as demand), and catch-ups materialize the pinned
/// release.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Pin {
    /// The release's id, as shown (its manifest's sha256, first 12 digits).
    pub release: String,
    /// Its manifest, as the rollback's generation (`generation`).
    pub manifest: ReleaseRef,
    /// Why, as the operator gave it.
    pub reason: String,
    /// When the rollback started, epoch ms.
    pub since: u64,
    /// The invocation that asked for it (Lambda's request id: an
    /// asynchronous invocation retried by Lambda keeps it), so that a retry
    /// never rolls back one release further.
    pub request: String,
}

/// What a catch-up of an instance behind the fleet syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUpPlan {
    /// The release's manifest, as its generation.
    Exact {
        /// The manifest (its `generation` is the catch-up's).
        release: ReleaseRef,
        /// The fleet is pinned to it: nothing else may go live.
        pinned: bool,
    },
    /// The prefix as it is, as the generation requested.
    Prefix,
    /// No catch-up may run: why (said loudly, never retried in a loop).
    Hold(String),
}

impl CatchUpPlan {
    /// The plan of a fleet: pinned (`pin`), holding a refused release
    /// (`held`), serving `release` as `completed_gen`.
    pub fn of(pin: Option<&Pin>, held: bool, release: Option<&ReleaseRef>, completed_gen: u64) -> Self {
        if let Some(pin) = pin {
            if pin.manifest.versioned {
                return CatchUpPlan::Exact { release: pin.manifest.clone(), pinned: true };
            }
            return CatchUpPlan::Hold(format!(
                "the fleet is pinned to release {} (a rollback: {}) and the codebase bucket is not versioned, so its \
                 objects cannot be fetched as they were: a catch-up would serve the codebase as it is now. It waits \
                 for {{\"action\": \"resume\"}} (or turn on versioning, then roll back again)",
                pin.release, pin.reason
            ));
        }
        if held {
            return CatchUpPlan::Hold(
                "the codebase's last release was refused by the instances' shrink guard: catch-ups wait for a release \
                 the fleet takes (a fixed upload), or a sync with allow_shrink"
                    .to_owned(),
            );
        }
        match release.filter(|r| r.materializable(completed_gen)) {
            Some(r) => CatchUpPlan::Exact { release: r.clone(), pinned: false },
            None => CatchUpPlan::Prefix,
        }
    }

    /// The plan once the means are known: an exact plan without a manifest
    /// bucket or a document that takes one becomes the prefix, or a hold
    /// while pinned (the prefix is not the pinned release).
    pub fn usable(self, exact_possible: bool) -> Self {
        match self {
            CatchUpPlan::Exact { pinned: true, .. } if !exact_possible => CatchUpPlan::Hold(
                "the fleet is pinned by a rollback, and the sync document or the functions' configuration takes no \
                 manifest: a catch-up would serve the codebase as it is now. It waits for {\"action\": \"resume\"}"
                    .to_owned(),
            ),
            CatchUpPlan::Exact { pinned: false, .. } if !exact_possible => CatchUpPlan::Prefix,
            other => other,
        }
    }
}

/// The fleet item as a catch-up needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lineage {
    /// The counter's lineage.
    pub epoch: String,
    /// The demand counter: the generation a catch-up syncs to.
    pub requested_gen: u64,
    /// A refused release holds catch-ups ([`fleet_attrs::release_held`]).
    pub release_held: bool,
    /// The last generation synced everywhere.
    pub completed_gen: u64,
    /// Its release's manifest (exact releases): a catch-up materializes it,
    /// as `completed_gen`, when [`ReleaseRef::materializable`].
    pub release: Option<ReleaseRef>,
    /// The rollback that pinned the fleet, if any.
    pub pin: Option<Pin>,
    /// The ids of the releases the fleet served, oldest first (its history).
    pub releases: Vec<String>,
}

impl Lineage {
    /// The ids of the releases no instance may delete: the newest `keep`
    /// the fleet served, and the pinned one.
    pub fn keep_ids(&self, keep: usize) -> Vec<String> {
        keep_ids(&self.releases[self.releases.len().saturating_sub(keep)..], self.pin.as_ref())
    }

    /// What a catch-up syncs.
    pub fn catch_up_plan(&self) -> CatchUpPlan {
        CatchUpPlan::of(self.pin.as_ref(), self.release_held, self.release.as_ref(), self.completed_gen)
    }
}

/// The document's `keep`: the ids of `targets` (a fleet's rollback
/// targets) and of the pinned release, each once, only well-formed ones.
pub fn keep_ids<S: AsRef<str>>(targets: &[S], pin: Option<&Pin>) -> Vec<String> {
    let mut ids: Vec<String> = targets.iter().map(|id| id.as_ref().to_owned()).collect();
    if let Some(p) = pin
        && !ids.contains(&p.release)
    {
        ids.push(p.release.clone());
    }
    ids.retain(|id| crate::params::KEEP.is_match(id));
    ids
}

/// The DynamoDB TTL attribute (epoch seconds) on items that expire.
pub const EXPIRES_AT: &str = "expires_at";

/// The keys of one fleet's items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    fleet: String,
}

impl Keys {
    /// The keys of fleet `fleet` (`FLEET_NAME`).
    pub fn new(fleet: impl Into<String>) -> Self {
        Keys { fleet: fleet.into() }
    }

    /// The fleet name.
    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    /// `<fleet>`: the fleet item.
    pub fn fleet_pk(&self) -> String {
        self.fleet.clone()
    }

    /// `<fleet>#wave#<wave_id>`.
    pub fn wave_pk(&self, wave_id: &str) -> String {
        format!("{}#wave#{wave_id}", self.fleet)
    }

    /// `<fleet>#instance#<id>`.
    pub fn instance_pk(&self, instance_id: &str) -> String {
        format!("{}#instance#{instance_id}", self.fleet)
    }
}

/// A store failure (never a lost race: each domain reports those as data).
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
    /// A request that could not be built, or the store and the specification
    /// disagree: a bug, never an input.
    #[error("lock table invariant broken: {0}")]
    Invariant(String),
}

impl StoreError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Aws(e) if e.is_retryable())
    }
}

/// Where a versioned document lives in an item: its attribute (JSON) and its
/// version counter (advanced by every write, conditional on the old value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc {
    /// The attribute holding the document as JSON.
    pub attr: &'static str,
    /// The attribute holding its version (absent: 0).
    pub version: &'static str,
}

/// Generic access to a fleet's items: plain numbers, and versioned JSON
/// documents read with their version and written only if the version is
/// still the one read (concurrent writers lose, never overwrite each other).
pub trait Items: Send + Sync {
    /// The fleet's keys.
    fn keys(&self) -> &Keys;

    /// A number attribute of item `pk` (strongly consistent), if present.
    fn number(&self, pk: &str, attr: &str) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// The fleet item's lineage and demand counter (`epoch`,
    /// `requested_gen`), creating the item with lineage `epoch` when there is
    /// none yet (no demand is added).
    fn lineage(&self, epoch: &str) -> impl Future<Output = Result<Lineage, StoreError>> + Send;

    /// Reads the document `doc` of item `pk` (strongly consistent) and its
    /// version; the default value and version 0 when there is none.
    fn load_doc<T: DeserializeOwned + Default + Send>(
        &self,
        pk: &str,
        doc: Doc,
    ) -> impl Future<Output = Result<(T, u64), StoreError>> + Send;

    /// Writes `value` if the version is still `expected`; returns the new
    /// version, or `None` when another writer moved it first. `expires_at`
    /// (epoch seconds) sets the item's TTL, `None` clears it. `fields` are
    /// plain string attributes written alongside (e.g. the instance id).
    fn save_doc<T: Serialize + Sync>(
        &self,
        pk: &str,
        doc: Doc,
        value: &T,
        expected: u64,
        expires_at: Option<u64>,
        fields: &[(&'static str, String)],
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
}

#[cfg(test)]
mod release_tests {
    use super::ReleaseRef;

    #[test]
    fn only_a_versioned_manifest_of_the_completed_generation_is_materializable() {
        let r = |generation, versioned| ReleaseRef { key: "k".into(), sha256: "s".into(), generation, versioned };
        assert!(r(7, true).materializable(7));
        assert!(!r(7, false).materializable(7), "an unversioned manifest names ETags the next upload replaces");
        assert!(!r(6, true).materializable(7), "completed moved on without it (an older version of the functions)");
        assert!(!r(0, true).materializable(0));
    }
}
