//! The fleet item and its transitions, as pure functions.
//!
//! The fleet item (`pk = <FLEET_NAME>`) is the coalescing lock:
//!
//! * `requested_gen` counts *demand* (not content: the bucket is mutable;
//!   S3 holds at least generation N's content once N is requested);
//! * a *wave* holds the lease: its `wave_id` (a uuid: another invocation
//!   releases it), its target generation (the fencing token sent to the
//!   instances), an absolute `lease_expires_at` (DynamoDB TTL never decides
//!   expiry), `sending_since`, the command ids recorded so far and whether
//!   sending completed;
//! * `completed_gen` is the last generation synced everywhere;
//! * `epoch` is the counter's lineage: random, written once with the item.
//!   The instances compare generations only within one lineage, so a
//!   counter that starts again (a new table, a changed `FLEET_NAME`, a
//!   deleted item) never makes them skip a sync as "superseded";
//! * `failed_gen` / `failed_attempts` remember the last failed generation: it
//!   is retried automatically once, then only new demand or a manual sync
//!   (which is new demand) starts a wave. A release the instances refused
//!   (their shrink guard) is not retried automatically at all;
//! * the quiet period (`FLEET_SYNC_QUIET_SECONDS`): `last_change_at` is the
//!   newest relevant change's S3 event time, `unsynced_since` the first
//!   change no wave has taken yet. A wave starts only once no change
//!   happened for the quiet period, or the first unsynced change is
//!   `FLEET_SYNC_MAX_DELAY_SECONDS` old (a trickle still syncs); a manual
//!   sync starts at once. `trigger_at` is the delayed start on its way (one
//!   at a time);
//! * `allow_shrink_gen`: a manual sync with `allow_shrink` lifts the
//!   instances' shrink guard for waves up to its generation (a wave allows
//!   it while `completed_gen < allow_shrink_gen <= target`).
//!
//! Each transition is one conditional write in [`super::store`]; here it is
//! a function from the current item to the next one, or a [`Refusal`]. The
//! [`super::store::MemoryStore`] applies these functions; the DynamoDB store
//! writes the same conditions and values; the property tests and the
//! emulator tests hold both to the same results.

use serde::{Deserialize, Serialize};

/// The schema version this code writes and understands.
pub const SCHEMA: u64 = crate::store::fleet_attrs::SCHEMA_VERSION;

/// How many waves may fail for one generation before it waits for new demand:
/// the first attempt and one automatic retry.
pub const MAX_ATTEMPTS: u32 = 2;

/// A cheap fingerprint of the codebase prefix: object count, newest
/// `LastModified` and a digest of every key's ETag (excluded keys left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Objects under the prefix, excludes left out.
    pub count: u64,
    /// The newest `LastModified`, epoch ms (0 for an empty prefix).
    pub newest_ms: u64,
    /// [`crate::sync::manifest::digest`] of the keys and their ETags: a
    /// same-size change within the second leaves count and time as they
    /// were. 0 when unknown (recorded by an older version).
    #[serde(default)]
    pub digest: u64,
}

impl Fingerprint {
    /// Whether two fingerprints show the same codebase: by digest when both
    /// have one, else by count and newest time.
    pub fn same_codebase(&self, other: &Fingerprint) -> bool {
        if self.digest != 0 && other.digest != 0 {
            return self.count == other.count && self.digest == other.digest;
        }
        self.count == other.count && self.newest_ms == other.newest_ms
    }
}

pub use crate::store::{CatchUpPlan, Pin, ReleaseRef};

/// How many releases the fleet item remembers (rollback targets are the
/// newest `FLEET_KEEP_RELEASES` of them).
pub const MAX_HISTORY: usize = 20;

/// A release the fleet served: a successful wave's manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeptRelease {
    /// Its id: the manifest's sha256, first 12 digits.
    pub id: String,
    /// Its manifest, as the generation of the wave that made it.
    pub manifest: ReleaseRef,
    /// That wave (its record names the marker's release id, if any).
    pub wave_id: String,
}

impl KeptRelease {
    /// The release a successful wave's manifest makes.
    pub fn of(manifest: &ReleaseRef, wave_id: &str) -> Self {
        KeptRelease {
            id: manifest.sha256.chars().take(12).collect(),
            manifest: manifest.clone(),
            wave_id: wave_id.to_owned(),
        }
    }
}

/// The wave holding the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Wave {
    /// The lease owner: a uuid per wave.
    pub id: String,
    /// The generation it syncs to (`running_gen`): the fencing token.
    pub target: u64,
    /// Absolute expiry, epoch ms.
    pub lease_expires_at: u64,
    /// When the wave was started (before anything was sent), epoch ms.
    pub sending_since: u64,
    /// Command ids recorded so far.
    pub command_ids: Vec<String>,
    /// Whether every chunk was sent and recorded.
    pub sent: bool,
    /// The codebase fingerprint when the wave started (taken by the winner).
    pub fingerprint: Option<Fingerprint>,
    /// Its manifest (exact releases), once the winner wrote it.
    pub manifest: Option<ReleaseRef>,
    /// The invocation allowed to send (the starter's token is the wave id; a
    /// resumer's is new): a slow sender whose wave was resumed can no longer
    /// renew, record or pause it.
    pub sender: String,
    /// A rollback: the id of the release it puts back (its `manifest`).
    pub rollback: Option<String>,
    /// The newest change (S3 event time, epoch ms) the fleet item knew of
    /// when the wave started, so one its listing includes (0: none known).
    pub changes_through: u64,
}

/// The fleet item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FleetItem {
    /// Demand counter.
    pub requested_gen: u64,
    /// Last generation synced everywhere.
    pub completed_gen: u64,
    /// The running wave, if any.
    pub wave: Option<Wave>,
    /// The generation of the last failed wave (0: none).
    pub failed_gen: u64,
    /// How many waves failed for `failed_gen`.
    pub failed_attempts: u32,
    /// The fingerprint of the last successful wave.
    pub fingerprint_synced: Option<Fingerprint>,
    /// The fingerprint of the last failed wave: while its generation is held,
    /// a different codebase is new demand (a fix whose event was lost).
    pub fingerprint_failed: Option<Fingerprint>,
    /// The counter's lineage (see the module docs); empty until the item exists.
    pub epoch: String,
    /// The newest relevant change, by its S3 event time, epoch ms.
    pub last_change_at: Option<u64>,
    /// The first change no wave has taken yet, epoch ms (cleared by `Start`).
    pub unsynced_since: Option<u64>,
    /// When the delayed start on its way is due, epoch ms.
    pub trigger_at: Option<u64>,
    /// The generation whose sync lifted the shrink guard (0: none).
    pub allow_shrink_gen: u64,
    /// The highest target of a wave that ran to an end (success, failure or
    /// refusal): a lift up to it is spent, whatever the wave's outcome.
    pub allow_shrink_spent: u64,
    /// When the last wave started, epoch ms: a change older than it (a late
    /// or redelivered event) was already in that wave's listing.
    pub last_start_at: Option<u64>,
    /// The generation whose release the instances' guard refused.
    pub refused_gen: u64,
    /// The manifest of the release the fleet serves (`completed_gen`'s):
    /// the last successful wave's, absent when it had none. Catch-ups
    /// materialize it ([`FleetItem::materializable_release`]).
    #[serde(rename = "release_manifest")]
    pub release: Option<ReleaseRef>,
    /// The releases the fleet served, oldest first (at most
    /// [`MAX_HISTORY`]): what a rollback may put back.
    pub releases: Vec<KeptRelease>,
    /// The rollback that pinned the fleet, if any: no wave starts until
    /// `resume` ([`Refusal::Pinned`]).
    pub pin: Option<Pin>,
    /// The newest change every instance of the last successful wave has:
    /// that wave's `changes_through` (a rollback's leaves it), epoch ms; 0:
    /// none known. With `last_change_at`, the fleet's freshness.
    pub synced_through: u64,
    /// The last wave that succeeded (its record says when it finished).
    pub last_synced_wave: Option<String>,
    /// The last wave that ended, however (its record says how, per instance).
    pub last_wave: Option<String>,
}

impl FleetItem {
    /// Whether a wave targeting `target` now may shrink the release: a
    /// manual sync with `allow_shrink` it covers, whose lift no wave that ran
    /// to an end has spent yet.
    pub fn allows_shrink(&self, target: u64) -> bool {
        self.allow_shrink_gen > self.completed_gen.max(self.allow_shrink_spent) && self.allow_shrink_gen <= target
    }

    /// Whether a release the instances refused is not yet followed by one
    /// they took (or lifted by `allow_shrink`): catch-ups must not put what
    /// the prefix holds live meanwhile (new demand may only be part of the
    /// fix, and waits for its own wave).
    pub fn refusal_held(&self) -> bool {
        crate::store::fleet_attrs::release_held(self.refused_gen, self.completed_gen, self.allow_shrink_gen)
    }

    /// What a catch-up of an instance behind the fleet syncs.
    pub fn catch_up_plan(&self) -> CatchUpPlan {
        CatchUpPlan::of(self.pin.as_ref(), self.refusal_held(), self.release.as_ref(), self.completed_gen)
    }

    /// The generation the fleet serves: the pin's while pinned.
    pub fn fleet_gen(&self) -> u64 {
        self.pin.as_ref().map_or(self.completed_gen, |p| p.manifest.generation)
    }

    /// The release the fleet serves (the pinned one while pinned), by its
    /// manifest's sha256.
    pub fn serving(&self) -> Option<&str> {
        match &self.pin {
            Some(p) => Some(&p.manifest.sha256),
            None => self.release.as_ref().map(|r| r.sha256.as_str()),
        }
    }

    /// The releases a rollback may put back: the newest `keep` the fleet
    /// served (instances keep them, see the document's `keep`).
    pub fn rollback_targets(&self, keep: usize) -> &[KeptRelease] {
        &self.releases[self.releases.len().saturating_sub(keep)..]
    }

    /// The ids of the releases no instance may delete: the rollback targets
    /// and the pinned one (the document's `keep`).
    pub fn keep_ids(&self, keep: usize) -> Vec<String> {
        let targets: Vec<&str> = self.rollback_targets(keep).iter().map(|r| r.id.as_str()).collect();
        crate::store::keep_ids(&targets, self.pin.as_ref())
    }

    /// The pin of a rollback not yet done everywhere (its wave failed, or
    /// was never sent).
    pub fn pending_pin(&self) -> Option<&Pin> {
        self.pin.as_ref().filter(|p| self.completed_gen < p.manifest.generation)
    }

    /// Refuses `release` as a rollback target when the fleet already serves
    /// it, except to retry a rollback to it that is not done everywhere.
    pub fn not_served(&self, release: &KeptRelease) -> Result<(), TargetError> {
        let retry = self.pending_pin().is_some_and(|p| p.manifest.sha256 == release.manifest.sha256);
        if !retry && Some(release.manifest.sha256.as_str()) == self.serving() {
            return Err(TargetError::Refused(format!("the fleet already serves release {}", release.id)));
        }
        Ok(())
    }

    /// The release `to` names among the rollback targets: `previous` (the
    /// one served before the current one), a generation, or a prefix of its
    /// id (at least 7 hex digits, not all decimal). Marker release ids are
    /// resolved by the caller from the waves' records. While a rollback is
    /// not done everywhere, `previous` is that rollback again (a retry),
    /// never one release further back.
    pub fn rollback_target(&self, to: &str, keep: usize) -> Result<&KeptRelease, TargetError> {
        let targets = self.rollback_targets(keep);
        let listed = || {
            let ids: Vec<String> =
                targets.iter().map(|r| format!("{} (generation {})", r.id, r.manifest.generation)).collect();
            if ids.is_empty() { "none yet (no exact release succeeded)".to_owned() } else { ids.join(", ") }
        };
        let not_kept = |why: String| TargetError::NotKept(format!("{why}; kept: {}", listed()));
        let digits = !to.is_empty() && to.bytes().all(|b| b.is_ascii_digit());
        let found = if to == "previous" {
            match self.pending_pin() {
                Some(p) => targets
                    .iter()
                    .rfind(|r| r.manifest.sha256 == p.manifest.sha256)
                    .ok_or_else(|| not_kept(format!("the pinned release {} is no longer kept", p.release)))?,
                None => {
                    let serving = self.serving();
                    match targets.iter().rposition(|r| Some(r.manifest.sha256.as_str()) == serving) {
                        Some(i) => i.checked_sub(1).map(|p| &targets[p]),
                        // Serving no kept release (a wave without a manifest): the newest kept one.
                        None => targets.last(),
                    }
                    .ok_or_else(|| not_kept("no release before the current one is kept".into()))?
                }
            }
        } else if digits {
            targets
                .iter()
                .rfind(|r| r.manifest.generation.to_string() == to)
                .ok_or_else(|| not_kept(format!("no kept release of generation {to}")))?
        } else if to.len() >= 7 && to.bytes().all(|b| b.is_ascii_hexdigit()) {
            let to = to.to_ascii_lowercase();
            let matching: Vec<&KeptRelease> = targets.iter().filter(|r| r.manifest.sha256.starts_with(&to)).collect();
            match matching.len() {
                1 => matching[0],
                0 => return Err(not_kept(format!("no kept release {to}"))),
                _ => {
                    return Err(TargetError::Refused(format!(
                        "{to} names more than one kept release; kept: {}",
                        listed()
                    )));
                }
            }
        } else {
            return Err(not_kept(format!("unknown release {to:?}")));
        };
        self.not_served(found)?;
        Ok(found)
    }
}

/// Why no rollback target was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Nothing kept goes by that name (a release marker's id may).
    NotKept(String),
    /// It names a release that cannot be the target (served already, or
    /// more than one).
    Refused(String),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetError::NotKept(why) | TargetError::Refused(why) => f.write_str(why),
        }
    }
}

/// The quiet period a start waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quiet {
    /// No change for this long, ms (0: no quiet period).
    pub quiet_ms: u64,
    /// ... or the first unsynced change is this old, ms.
    pub max_delay_ms: u64,
}

impl Quiet {
    /// When a wave may start given `item`'s changes (`None`: at once).
    pub fn until(&self, item: &FleetItem) -> Option<u64> {
        if self.quiet_ms == 0 {
            return None;
        }
        let quiet_end = item.last_change_at?.saturating_add(self.quiet_ms);
        Some(match item.unsynced_since {
            // A change stamped before the last start (a late event) forces
            // nothing: the max delay runs from the start at the earliest.
            Some(first) => {
                let first = first.max(item.last_start_at.unwrap_or(0));
                quiet_end.min(first.saturating_add(self.max_delay_ms))
            }
            None => quiet_end,
        })
    }
}

/// The event times of one invocation's relevant changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeTimes {
    /// The oldest, epoch ms.
    pub oldest: u64,
    /// The newest, epoch ms.
    pub newest: u64,
    /// When they were seen (the invocation's now), epoch ms: the time of a
    /// change older than the last start (a late or redelivered event), so
    /// that it waits for the quiet period from its arrival instead of
    /// starting a wave at once.
    pub seen: u64,
}

impl ChangeTimes {
    /// Changes all made at `at`, seen then.
    pub fn at(at: u64) -> Self {
        ChangeTimes { oldest: at, newest: at, seen: at }
    }

    /// The time the quiet period runs from, given the last start.
    pub fn newest_after(&self, last_start_at: Option<u64>) -> u64 {
        match last_start_at {
            Some(start) if self.newest < start => self.seen.max(self.newest),
            _ => self.newest,
        }
    }
}

/// How a wave ended, as decided from SSM's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveEnd {
    /// Every targeted instance synced: `completed_gen` advances.
    Success,
    /// Some instance failed: `completed_gen` stays, the failure is counted.
    Failure,
    /// Nothing was ever sent (the sender died first): nobody's fault.
    Abandoned,
    /// The instances' shrink guard refused the release: `completed_gen`
    /// stays, nobody's fault, and it is not retried without new demand (the
    /// same content would be refused again).
    Refused,
}

/// Why a transition was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// A wave holds the lease.
    Busy {
        /// Its id.
        wave_id: String,
        /// Its target.
        target: u64,
        /// When its lease expires, epoch ms.
        lease_expires_at: u64,
    },
    /// Nothing to do: every requested generation is synced.
    CaughtUp,
    /// The requested generation failed [`MAX_ATTEMPTS`] times: only new
    /// demand (an upload, a manual sync) starts a wave.
    Held {
        /// The generation.
        generation: u64,
        /// Its failed attempts.
        attempts: u32,
    },
    /// The caller's wave is no longer the running one (a stale holder).
    Stale {
        /// The running wave, if any.
        current: Option<String>,
    },
    /// Taking over (or resuming) needs an expired lease.
    LeaseLive {
        /// When it expires, epoch ms.
        lease_expires_at: u64,
    },
    /// Resuming needs a wave whose sending is not complete.
    Sent,
    /// Another invocation sends this wave now (it was resumed).
    NotSender,
    /// The quiet period holds the wave back until `until` (epoch ms).
    Quiet {
        /// When it may start.
        until: u64,
    },
    /// A delayed start is already on its way.
    TriggerPending {
        /// When it is due, epoch ms.
        at: u64,
    },
    /// A rollback pinned the fleet: no wave runs until `resume`.
    Pinned {
        /// The pinned release.
        release: String,
        /// Since when, epoch ms.
        since: u64,
    },
    /// `resume`, but the fleet is not pinned.
    NotPinned,
    /// A rollback to a release the fleet no longer keeps.
    UnknownRelease {
        /// The release asked for.
        release: String,
    },
}

/// A transition: what it needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `ADD requested_gen :count` (creates the item, with `epoch` as its
    /// lineage when it has none; `count` 0 only makes sure the item exists).
    Demand {
        /// How many generations of demand (1 per invocation).
        count: u64,
        /// A fresh lineage, kept only if the item has none yet.
        epoch: String,
        /// The changes' event times (`None`: no S3 change, e.g. a manual sync).
        changes: Option<ChangeTimes>,
        /// A manual sync with `allow_shrink`: lifts the shrink guard up to
        /// the generation this demand requests (in the same write).
        allow_shrink: bool,
    },
    /// Take the lease for a new wave targeting `requested_gen`.
    Start {
        /// The new wave's id.
        wave_id: String,
        /// Now, epoch ms.
        now: u64,
        /// Lease length, ms.
        lease_ms: u64,
        /// The quiet period to respect (`None`: start at once).
        quiet: Option<Quiet>,
    },
    /// Note a delayed start due at `at`, unless another one is on its way
    /// (one not yet due at `now`, other than `replacing`: the trigger that
    /// is being handled).
    Trigger {
        /// When it is due, epoch ms.
        at: u64,
        /// Now, epoch ms.
        now: u64,
        /// The trigger this invocation handles, if any.
        replacing: Option<u64>,
    },
    /// Forget the delayed start due at `at` (it could not be queued).
    ClearTrigger {
        /// When it was due.
        at: u64,
    },
    /// Append command ids (after each chunk); `sent` after the last; the
    /// codebase fingerprint once the winner took it.
    RecordCommands {
        /// The holder.
        wave_id: String,
        /// The sender's token.
        sender: String,
        /// Ids to append.
        command_ids: Vec<String>,
        /// Sending is complete.
        sent: bool,
        /// The codebase fingerprint, when taken.
        fingerprint: Option<Fingerprint>,
        /// The wave's manifest, once written.
        manifest: Option<ReleaseRef>,
    },
    /// The sender stops before sending everything (out of time, or an AWS
    /// error): the lease expires at `until` (as soon as what it sent is
    /// surely listed by SSM), so the next invocation resumes.
    Pause {
        /// The holder.
        wave_id: String,
        /// The sender's token.
        sender: String,
        /// The new expiry, epoch ms.
        until: u64,
    },
    /// Take the lease of a wave whose sending stopped (paused, or its sender
    /// died and its lease expired), to send the rest.
    Resume {
        /// The wave.
        wave_id: String,
        /// The resumer's token (becomes the wave's sender).
        sender: String,
        /// Now, epoch ms.
        now: u64,
        /// Lease length, ms.
        lease_ms: u64,
    },
    /// Extend the lease: a sender before each chunk (with its token), or a
    /// settle while SSM reports the wave's commands running.
    Renew {
        /// The holder.
        wave_id: String,
        /// The sender's token, when a sender renews.
        sender: Option<String>,
        /// Now, epoch ms.
        now: u64,
        /// Lease length, ms.
        lease_ms: u64,
    },
    /// Finish the wave (its commands are all terminal) and release.
    Finish {
        /// The holder.
        wave_id: String,
        /// How it ended.
        end: WaveEnd,
    },
    /// Roll back: a new generation (demand + 1) whose wave puts back the
    /// kept release `to`, and pin the fleet to it.
    Rollback {
        /// The rollback wave's id.
        wave_id: String,
        /// Now, epoch ms.
        now: u64,
        /// Lease length, ms.
        lease_ms: u64,
        /// The release (one of [`FleetItem::releases`]).
        to: KeptRelease,
        /// Why, as the operator gave it.
        reason: String,
        /// The invocation asking (see [`Pin::request`]).
        request: String,
    },
    /// Unpin (`resume`): demand + 1, so the next wave syncs the codebase as
    /// it is.
    Unpin,
    /// Finish a wave whose sender died: only once its lease expired.
    TakeOver {
        /// The dead wave.
        wave_id: String,
        /// Now, epoch ms.
        now: u64,
        /// How it ended (from its commands found by comment, if any).
        end: WaveEnd,
    },
}

impl Op {
    /// The wave this transition must be holding, if any.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Op::Demand { .. }
            | Op::Start { .. }
            | Op::Trigger { .. }
            | Op::ClearTrigger { .. }
            | Op::Rollback { .. }
            | Op::Unpin => None,
            Op::RecordCommands { wave_id, .. }
            | Op::Renew { wave_id, .. }
            | Op::Finish { wave_id, .. }
            | Op::TakeOver { wave_id, .. }
            | Op::Pause { wave_id, .. }
            | Op::Resume { wave_id, .. } => Some(wave_id),
        }
    }
}

/// Applies `op` to the current item (`None`: no item yet).
pub fn apply(current: Option<&FleetItem>, op: &Op) -> Result<FleetItem, Refusal> {
    if let Op::Demand { count, epoch, changes, allow_shrink } = op {
        let mut next = current.cloned().unwrap_or_default();
        next.requested_gen += count;
        if next.epoch.is_empty() {
            next.epoch.clone_from(epoch);
        }
        if let Some(c) = changes {
            let newest = c.newest_after(next.last_start_at);
            next.last_change_at = Some(next.last_change_at.map_or(newest, |t| t.max(newest)));
            next.unsynced_since.get_or_insert(c.oldest);
        }
        if *allow_shrink {
            next.allow_shrink_gen = next.requested_gen;
        }
        return Ok(next);
    }
    let item = current.cloned().unwrap_or_default();
    match op {
        Op::Trigger { at, now, replacing } => {
            if let Some(pending) = item.trigger_at
                && pending >= *now
                && Some(pending) != *replacing
            {
                return Err(Refusal::TriggerPending { at: pending });
            }
            let mut next = item;
            next.trigger_at = Some(*at);
            return Ok(next);
        }
        Op::ClearTrigger { at } => {
            if item.trigger_at != Some(*at) {
                return Err(Refusal::TriggerPending { at: item.trigger_at.unwrap_or_default() });
            }
            let mut next = item;
            next.trigger_at = None;
            return Ok(next);
        }
        _ => {}
    }
    match op {
        Op::Rollback { wave_id, now, lease_ms, to, reason, request } => {
            if let Some(w) = &item.wave {
                return Err(Refusal::Busy {
                    wave_id: w.id.clone(),
                    target: w.target,
                    lease_expires_at: w.lease_expires_at,
                });
            }
            if !item.releases.iter().any(|r| r.manifest.sha256 == to.manifest.sha256) {
                return Err(Refusal::UnknownRelease { release: to.id.clone() });
            }
            let mut next = item;
            next.requested_gen += 1;
            let target = next.requested_gen;
            let manifest = ReleaseRef { generation: target, ..to.manifest.clone() };
            next.pin = Some(Pin {
                release: to.id.clone(),
                manifest: manifest.clone(),
                reason: reason.clone(),
                since: *now,
                request: request.clone(),
            });
            next.last_start_at = Some(*now);
            next.wave = Some(Wave {
                id: wave_id.clone(),
                target,
                lease_expires_at: now + lease_ms,
                sending_since: *now,
                sender: wave_id.clone(),
                manifest: Some(manifest),
                rollback: Some(to.id.clone()),
                ..Wave::default()
            });
            return Ok(next);
        }
        Op::Unpin => {
            if item.pin.is_none() {
                return Err(Refusal::NotPinned);
            }
            let mut next = item;
            next.pin = None;
            next.requested_gen += 1;
            return Ok(next);
        }
        _ => {}
    }
    if let Op::Start { wave_id, now, lease_ms, quiet } = op {
        start_refusal(&item)?;
        if let Some(until) = quiet.and_then(|q| q.until(&item))
            && *now < until
        {
            return Err(Refusal::Quiet { until });
        }
        let mut next = item;
        next.unsynced_since = None;
        next.last_start_at = Some(*now);
        next.wave = Some(Wave {
            id: wave_id.clone(),
            target: next.requested_gen,
            lease_expires_at: now + lease_ms,
            sending_since: *now,
            sender: wave_id.clone(),
            changes_through: next.last_change_at.unwrap_or_default(),
            ..Wave::default()
        });
        return Ok(next);
    }
    // Every other transition must hold the running wave.
    let holder = op.holder().unwrap_or_default();
    let wave = match &item.wave {
        Some(w) if w.id == holder => w.clone(),
        other => return Err(Refusal::Stale { current: other.as_ref().map(|w| w.id.clone()) }),
    };
    let token = match op {
        Op::RecordCommands { sender, .. } | Op::Pause { sender, .. } => Some(sender),
        Op::Renew { sender, .. } => sender.as_ref(),
        _ => None,
    };
    if token.is_some_and(|t| *t != wave.sender) {
        return Err(Refusal::NotSender);
    }
    let mut next = item;
    match op {
        Op::RecordCommands { command_ids, sent, fingerprint, manifest, .. } => {
            if let Some(w) = next.wave.as_mut() {
                w.command_ids.extend(command_ids.iter().cloned());
                w.sent |= *sent;
                if fingerprint.is_some() {
                    w.fingerprint = *fingerprint;
                }
                if manifest.is_some() {
                    w.manifest.clone_from(manifest);
                }
            }
        }
        Op::Pause { until, .. } => {
            if let Some(w) = next.wave.as_mut() {
                w.lease_expires_at = *until;
            }
        }
        Op::Resume { now, lease_ms, sender, .. } => {
            if wave.sent {
                return Err(Refusal::Sent);
            }
            if wave.lease_expires_at >= *now {
                return Err(Refusal::LeaseLive { lease_expires_at: wave.lease_expires_at });
            }
            if let Some(w) = next.wave.as_mut() {
                w.lease_expires_at = now + lease_ms;
                w.sender.clone_from(sender);
            }
        }
        Op::Renew { now, lease_ms, .. } => {
            if let Some(w) = next.wave.as_mut() {
                w.lease_expires_at = now + lease_ms;
            }
        }
        Op::Finish { end, .. } => finish(&mut next, &wave, *end),
        Op::TakeOver { now, end, .. } => {
            if wave.lease_expires_at >= *now {
                return Err(Refusal::LeaseLive { lease_expires_at: wave.lease_expires_at });
            }
            finish(&mut next, &wave, *end);
        }
        Op::Demand { .. }
        | Op::Start { .. }
        | Op::Trigger { .. }
        | Op::ClearTrigger { .. }
        | Op::Rollback { .. }
        | Op::Unpin => {}
    }
    Ok(next)
}

/// A wave that ran somewhere to an end spends the `allow_shrink` lift up to
/// its target: a success or a refusal at once, a failure once no automatic
/// retry is left (the retry still may shrink). A wave sent nowhere spends
/// nothing.
fn spend_lift(item: &mut FleetItem, wave: &Wave, end: WaveEnd) {
    let ran = !wave.command_ids.is_empty();
    let last_try = item.failed_gen == wave.target && item.failed_attempts + 1 >= MAX_ATTEMPTS;
    let spends = match end {
        WaveEnd::Success | WaveEnd::Refused => ran,
        WaveEnd::Failure => ran && last_try,
        WaveEnd::Abandoned => false,
    };
    if spends {
        item.allow_shrink_spent = item.allow_shrink_spent.max(wave.target);
    }
}

/// Why no wave can start now, if none can.
pub fn start_refusal(item: &FleetItem) -> Result<(), Refusal> {
    if let Some(w) = &item.wave {
        return Err(Refusal::Busy { wave_id: w.id.clone(), target: w.target, lease_expires_at: w.lease_expires_at });
    }
    if let Some(pin) = &item.pin {
        return Err(Refusal::Pinned { release: pin.release.clone(), since: pin.since });
    }
    if item.requested_gen <= item.completed_gen {
        return Err(Refusal::CaughtUp);
    }
    if item.failed_gen >= item.requested_gen && item.failed_attempts >= MAX_ATTEMPTS {
        return Err(Refusal::Held { generation: item.failed_gen, attempts: item.failed_attempts });
    }
    Ok(())
}

fn finish(item: &mut FleetItem, wave: &Wave, end: WaveEnd) {
    spend_lift(item, wave, end);
    match end {
        WaveEnd::Success => {
            item.completed_gen = item.completed_gen.max(wave.target);
            item.failed_gen = 0;
            item.failed_attempts = 0;
            item.fingerprint_failed = None;
            if wave.fingerprint.is_some() {
                item.fingerprint_synced = wave.fingerprint;
            }
            item.release.clone_from(&wave.manifest);
            item.last_synced_wave = Some(wave.id.clone());
            if wave.rollback.is_none() {
                item.synced_through = item.synced_through.max(wave.changes_through);
            }
            // A new release joins the history (a rollback's is there already;
            // the same content synced again moves to the newest place).
            if let (Some(m), None) = (&wave.manifest, &wave.rollback) {
                item.releases.retain(|r| r.manifest.sha256 != m.sha256);
                item.releases.push(KeptRelease::of(m, &wave.id));
                let over = item.releases.len().saturating_sub(MAX_HISTORY);
                item.releases.drain(..over);
            }
        }
        WaveEnd::Failure => {
            item.failed_attempts = if item.failed_gen == wave.target { item.failed_attempts + 1 } else { 1 };
            item.failed_gen = wave.target;
            if wave.fingerprint.is_some() {
                item.fingerprint_failed = wave.fingerprint;
            }
        }
        WaveEnd::Refused => {
            item.refused_gen = item.refused_gen.max(wave.target);
            item.failed_gen = wave.target;
            item.failed_attempts = item.failed_attempts.max(MAX_ATTEMPTS);
            if wave.fingerprint.is_some() {
                item.fingerprint_failed = wave.fingerprint;
            }
        }
        WaveEnd::Abandoned => {}
    }
    item.last_wave = Some(wave.id.clone());
    item.wave = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_by_digest_when_both_have_one() {
        let fp = |count, newest_ms, digest| Fingerprint { count, newest_ms, digest };
        assert!(!fp(3, 5, 11).same_codebase(&fp(3, 5, 12)), "a same-size change within the second");
        assert!(fp(3, 5, 11).same_codebase(&fp(3, 5, 11)));
        assert!(!fp(3, 5, 11).same_codebase(&fp(4, 5, 11)));
        assert!(fp(3, 5, 11).same_codebase(&fp(3, 9, 11)), "the digest decides, not the time");
        assert!(fp(3, 5, 0).same_codebase(&fp(3, 5, 11)), "recorded by an older version: count and time");
        assert!(!fp(3, 5, 0).same_codebase(&fp(3, 6, 11)));
    }

    fn start(id: &str, now: u64) -> Op {
        Op::Start { wave_id: id.into(), now, lease_ms: 1_000, quiet: None }
    }

    fn demand(count: u64) -> Op {
        Op::Demand { count, epoch: "e1".into(), changes: None, allow_shrink: false }
    }

    fn finish_op(id: &str, end: WaveEnd) -> Op {
        Op::Finish { wave_id: id.into(), end }
    }

    fn run(ops: &[Op]) -> (Option<FleetItem>, Vec<Result<(), Refusal>>) {
        let mut item: Option<FleetItem> = None;
        let mut results = Vec::new();
        for op in ops {
            match apply(item.as_ref(), op) {
                Ok(next) => {
                    item = Some(next);
                    results.push(Ok(()));
                }
                Err(r) => results.push(Err(r)),
            }
        }
        (item, results)
    }

    #[test]
    fn demand_creates_and_counts() {
        let (item, _) = run(&[demand(1), demand(3)]);
        assert_eq!(item.map(|i| (i.requested_gen, i.completed_gen)), Some((4, 0)));
    }

    #[test]
    fn start_targets_requested_gen_and_excludes_a_second_wave() {
        let (item, results) = run(&[demand(2), start("w1", 10), start("w2", 11)]);
        let wave = item.and_then(|i| i.wave).expect("wave");
        assert_eq!((wave.id.as_str(), wave.target, wave.lease_expires_at, wave.sending_since), ("w1", 2, 1_010, 10));
        assert!(matches!(&results[2], Err(Refusal::Busy { wave_id, target: 2, .. }) if wave_id == "w1"));
    }

    #[test]
    fn nothing_to_start_without_demand() {
        let (_, results) = run(&[start("w1", 0)]);
        assert_eq!(results, [Err(Refusal::CaughtUp)]);
        let (_, results) = run(&[demand(1), start("w1", 0), finish_op("w1", WaveEnd::Success), start("w2", 1)]);
        assert_eq!(results[3], Err(Refusal::CaughtUp));
    }

    #[test]
    fn burst_during_a_wave_makes_one_follow_up_covering_it() {
        let mut ops = vec![demand(1), start("w1", 0)];
        for _ in 0..5 {
            ops.push(demand(1));
            ops.push(start("loser", 1));
        }
        ops.push(finish_op("w1", WaveEnd::Success));
        ops.push(start("w2", 2));
        let (item, results) = run(&ops);
        let item = item.expect("item");
        assert_eq!(item.completed_gen, 1);
        assert_eq!(item.wave.as_ref().map(|w| (w.id.as_str(), w.target)), Some(("w2", 6)));
        assert_eq!(results.iter().filter(|r| matches!(r, Err(Refusal::Busy { .. }))).count(), 5);
    }

    #[test]
    fn a_failed_generation_is_retried_once_then_held_until_new_demand() {
        let (item, results) = run(&[
            demand(1),
            start("w1", 0),
            finish_op("w1", WaveEnd::Failure),
            start("w2", 1),
            finish_op("w2", WaveEnd::Failure),
            start("w3", 2),
        ]);
        assert_eq!(results[3], Ok(()), "one automatic retry");
        assert_eq!(results[5], Err(Refusal::Held { generation: 1, attempts: 2 }));
        let item = item.expect("item");
        assert_eq!((item.completed_gen, item.failed_gen, item.failed_attempts), (0, 1, 2));
        // New demand (an upload, a manual sync) starts again.
        let next = apply(Some(&item), &demand(1)).expect("demand");
        let next = apply(Some(&next), &start("w4", 3)).expect("start");
        assert_eq!(next.wave.map(|w| w.target), Some(2));
    }

    #[test]
    fn success_clears_the_failure_and_promotes_the_fingerprint() {
        let fp = Fingerprint { count: 3, newest_ms: 99, digest: 7 };
        let (item, _) = run(&[
            demand(1),
            start("w1", 0),
            finish_op("w1", WaveEnd::Failure),
            Op::Start { wave_id: "w2".into(), now: 1, lease_ms: 10, quiet: None },
            Op::RecordCommands {
                wave_id: "w2".into(),
                sender: "w2".into(),
                command_ids: vec![],
                sent: false,
                fingerprint: Some(fp),
                manifest: None,
            },
            finish_op("w2", WaveEnd::Success),
        ]);
        let item = item.expect("item");
        assert_eq!((item.completed_gen, item.failed_gen, item.failed_attempts), (1, 0, 0));
        assert_eq!(item.fingerprint_synced, Some(fp));
    }

    #[test]
    fn stale_holders_change_nothing() {
        let (item, _) = run(&[demand(1), start("w1", 0)]);
        let item = item.expect("item");
        for op in [
            Op::RecordCommands {
                wave_id: "old".into(),
                sender: "old".into(),
                command_ids: vec!["c".into()],
                sent: true,
                fingerprint: None,
                manifest: None,
            },
            Op::Pause { wave_id: "old".into(), sender: "old".into(), until: 0 },
            Op::Resume { wave_id: "old".into(), sender: "r".into(), now: 10_000, lease_ms: 10 },
            Op::Renew { wave_id: "old".into(), sender: None, now: 5, lease_ms: 10 },
            finish_op("old", WaveEnd::Success),
            Op::TakeOver { wave_id: "old".into(), now: 10_000, end: WaveEnd::Abandoned },
        ] {
            assert_eq!(apply(Some(&item), &op), Err(Refusal::Stale { current: Some("w1".into()) }), "{op:?}");
        }
        let idle = apply(Some(&item), &finish_op("w1", WaveEnd::Success)).expect("finish");
        assert_eq!(
            apply(Some(&idle), &finish_op("w1", WaveEnd::Success)),
            Err(Refusal::Stale { current: None }),
            "a duplicate completion is stale"
        );
    }

    #[test]
    fn take_over_needs_an_expired_lease_and_abandon_counts_nothing() {
        let (item, _) = run(&[demand(1), start("w1", 0)]);
        let item = item.expect("item");
        let early = Op::TakeOver { wave_id: "w1".into(), now: 500, end: WaveEnd::Abandoned };
        assert_eq!(apply(Some(&item), &early), Err(Refusal::LeaseLive { lease_expires_at: 1_000 }));
        let late = Op::TakeOver { wave_id: "w1".into(), now: 1_001, end: WaveEnd::Abandoned };
        let next = apply(Some(&item), &late).expect("taken over");
        assert_eq!((&next.wave, next.completed_gen, next.failed_attempts), (&None, 0, 0));
        assert!(start_refusal(&next).is_ok(), "the demand is still there to start a new wave");
    }

    #[test]
    fn record_and_renew_hold_the_wave() {
        let (item, _) = run(&[
            demand(1),
            start("w1", 0),
            Op::RecordCommands {
                wave_id: "w1".into(),
                sender: "w1".into(),
                command_ids: vec!["a".into()],
                sent: false,
                fingerprint: None,
                manifest: None,
            },
            Op::RecordCommands {
                wave_id: "w1".into(),
                sender: "w1".into(),
                command_ids: vec!["b".into()],
                sent: true,
                fingerprint: None,
                manifest: None,
            },
            Op::Renew { wave_id: "w1".into(), sender: Some("w1".into()), now: 700, lease_ms: 1_000 },
        ]);
        let wave = item.and_then(|i| i.wave).expect("wave");
        assert_eq!(wave.command_ids, ["a", "b"]);
        assert!(wave.sent);
        assert_eq!(wave.lease_expires_at, 1_700);
    }

    #[test]
    fn the_lineage_is_written_once_with_the_item() {
        let (item, _) = run(&[
            Op::Demand { count: 0, epoch: "first".into(), changes: None, allow_shrink: false },
            Op::Demand { count: 1, epoch: "second".into(), changes: None, allow_shrink: false },
        ]);
        let item = item.expect("item");
        assert_eq!((item.epoch.as_str(), item.requested_gen), ("first", 1), "count 0 only creates the item");
    }

    #[test]
    fn a_paused_wave_is_resumed_once_its_pause_ends_and_only_once() {
        let pause = Op::Pause { wave_id: "w1".into(), sender: "w1".into(), until: 3 };
        let (item, _) = run(&[demand(1), start("w1", 0), pause]);
        let item = item.expect("item");
        assert_eq!(item.wave.as_ref().map(|w| w.lease_expires_at), Some(3), "the lease ends at the pause's end");
        let early = Op::Resume { wave_id: "w1".into(), sender: "r0".into(), now: 2, lease_ms: 1_000 };
        assert_eq!(apply(Some(&item), &early), Err(Refusal::LeaseLive { lease_expires_at: 3 }));
        let resume = |now| Op::Resume { wave_id: "w1".into(), sender: "r1".into(), now, lease_ms: 1_000 };
        let resumed = apply(Some(&item), &resume(5)).expect("resumed");
        assert_eq!(resumed.wave.as_ref().map(|w| w.lease_expires_at), Some(1_005));
        assert_eq!(
            apply(Some(&resumed), &resume(6)),
            Err(Refusal::LeaseLive { lease_expires_at: 1_005 }),
            "one resumer"
        );
        // The first sender, slow rather than dead, can no longer send.
        let record = |sender: &str, sent| Op::RecordCommands {
            wave_id: "w1".into(),
            sender: sender.into(),
            command_ids: vec![],
            sent,
            fingerprint: None,
            manifest: None,
        };
        assert_eq!(apply(Some(&resumed), &record("w1", false)), Err(Refusal::NotSender));
        let renew = Op::Renew { wave_id: "w1".into(), sender: Some("w1".into()), now: 7, lease_ms: 10 };
        assert_eq!(apply(Some(&resumed), &renew), Err(Refusal::NotSender));
        let sent = apply(Some(&resumed), &record("r1", true)).expect("record");
        assert_eq!(apply(Some(&sent), &resume(5_000)), Err(Refusal::Sent), "nothing left to send");
    }

    #[test]
    fn a_failed_waves_fingerprint_is_kept_until_a_success() {
        let fp = Fingerprint { count: 1, newest_ms: 2, digest: 0 };
        let record = |id: &str| Op::RecordCommands {
            wave_id: id.into(),
            sender: id.into(),
            command_ids: vec![],
            sent: true,
            fingerprint: Some(fp),
            manifest: None,
        };
        let (item, _) = run(&[demand(1), start("w1", 0), record("w1"), finish_op("w1", WaveEnd::Failure)]);
        let item = item.expect("item");
        assert_eq!(item.fingerprint_failed, Some(fp));
        let next = apply(Some(&item), &start("w2", 1)).expect("retry");
        let next = apply(Some(&next), &finish_op("w2", WaveEnd::Success)).expect("success");
        assert_eq!(next.fingerprint_failed, None);
    }

    fn upload(at: u64) -> Op {
        Op::Demand { count: 1, epoch: "e1".into(), changes: Some(ChangeTimes::at(at)), allow_shrink: false }
    }

    #[test]
    fn freshness_is_the_newest_change_the_last_successful_wave_listed() {
        let (item, _) = run(&[upload(100), upload(250), start("w1", 300)]);
        let item = item.expect("item");
        assert_eq!(item.wave.as_ref().map(|w| w.changes_through), Some(250));
        // A change while it runs is not in its listing.
        let item = apply(Some(&item), &upload(400)).expect("upload");
        let failed = apply(Some(&item), &finish_op("w1", WaveEnd::Failure)).expect("failure");
        assert_eq!(
            (failed.synced_through, failed.last_synced_wave.as_deref()),
            (0, None),
            "a failure delivers nothing"
        );
        assert_eq!(failed.last_wave.as_deref(), Some("w1"));
        let done = apply(Some(&item), &finish_op("w1", WaveEnd::Success)).expect("success");
        assert_eq!((done.synced_through, done.last_synced_wave.as_deref()), (250, Some("w1")));
        assert_eq!(done.last_change_at, Some(400), "behind by the change made while it ran");
        let next = apply(Some(&done), &start("w2", 500)).expect("follow-up");
        let next = apply(Some(&next), &finish_op("w2", WaveEnd::Success)).expect("success");
        assert_eq!((next.synced_through, next.last_synced_wave.as_deref()), (400, Some("w2")));
    }

    #[test]
    fn a_rollback_wave_delivers_no_newer_change() {
        let item = three_releases();
        let through = item.synced_through;
        let rolled = rollback(&item, "previous").expect("rollback");
        assert_eq!(rolled.wave.as_ref().map(|w| w.changes_through), Some(0));
        let done = apply(Some(&rolled), &finish_op("rb", WaveEnd::Success)).expect("success");
        assert_eq!((done.synced_through, done.last_synced_wave.as_deref()), (through, Some("rb")));
    }

    const QUIET: Quiet = Quiet { quiet_ms: 30_000, max_delay_ms: 300_000 };

    fn quiet_start(id: &str, now: u64) -> Op {
        Op::Start { wave_id: id.into(), now, lease_ms: 1_000, quiet: Some(QUIET) }
    }

    #[test]
    fn a_wave_waits_until_no_change_happened_for_the_quiet_period() {
        let (item, results) = run(&[upload(1_000), upload(5_000), quiet_start("w1", 20_000)]);
        assert_eq!(results[2], Err(Refusal::Quiet { until: 35_000 }), "quiet from the newest change");
        let item = item.expect("item");
        assert_eq!((item.last_change_at, item.unsynced_since), (Some(5_000), Some(1_000)));
        assert_eq!(apply(Some(&item), &quiet_start("w1", 34_999)), Err(Refusal::Quiet { until: 35_000 }));
        let started = apply(Some(&item), &quiet_start("w1", 35_000)).expect("quiet now");
        assert_eq!(started.wave.map(|w| w.target), Some(2));
        assert_eq!(started.unsynced_since, None, "the wave took every change so far");
        assert_eq!(started.last_change_at, Some(5_000));
    }

    #[test]
    fn a_late_event_never_moves_the_newest_change_back() {
        let (item, _) = run(&[upload(9_000), upload(2_000)]);
        let item = item.expect("item");
        assert_eq!((item.last_change_at, item.unsynced_since), (Some(9_000), Some(9_000)));
    }

    #[test]
    fn a_trickle_still_syncs_after_the_max_delay() {
        let mut ops = Vec::new();
        for t in (0..=400_000).step_by(10_000) {
            ops.push(upload(1_000 + t));
        }
        let (item, _) = run(&ops);
        let item = item.expect("item");
        assert_eq!(QUIET.until(&item), Some(301_000), "first unsynced change plus the max delay");
        assert!(apply(Some(&item), &quiet_start("w1", 301_000)).is_ok());
    }

    #[test]
    fn a_manual_start_or_no_quiet_period_starts_at_once() {
        let (item, results) = run(&[upload(1_000), start("w1", 1_001)]);
        assert_eq!(results[1], Ok(()));
        assert!(item.and_then(|i| i.wave).is_some());
        let none = Quiet { quiet_ms: 0, max_delay_ms: 0 };
        let (_, results) =
            run(&[upload(1_000), Op::Start { wave_id: "w1".into(), now: 1_001, lease_ms: 1, quiet: Some(none) }]);
        assert_eq!(results[1], Ok(()));
        // Demand without a change (a manual sync coalesced into a wave) has nothing to wait for.
        let (_, results) = run(&[demand(1), quiet_start("w1", 1)]);
        assert_eq!(results[1], Ok(()));
    }

    #[test]
    fn one_delayed_start_is_on_its_way_at_a_time() {
        let trigger = |at, now, replacing| Op::Trigger { at, now, replacing };
        let (item, results) = run(&[
            upload(0),
            trigger(30_000, 1, None),
            trigger(31_000, 2, None),
            trigger(40_000, 30_000, Some(30_000)),
            trigger(50_000, 40_001, None),
        ]);
        assert_eq!(results[1], Ok(()));
        assert_eq!(results[2], Err(Refusal::TriggerPending { at: 30_000 }), "one on its way");
        assert_eq!(results[3], Ok(()), "the trigger being handled queues the next");
        assert_eq!(results[4], Ok(()), "one past due was delivered or lost: a new one may go");
        let item = item.expect("item");
        assert_eq!(item.trigger_at, Some(50_000));
        assert_eq!(
            apply(Some(&item), &Op::ClearTrigger { at: 40_000 }),
            Err(Refusal::TriggerPending { at: 50_000 }),
            "only its own"
        );
        let cleared = apply(Some(&item), &Op::ClearTrigger { at: 50_000 }).expect("cleared");
        assert_eq!(cleared.trigger_at, None);
    }

    #[test]
    fn allow_shrink_covers_the_waves_up_to_its_generation_until_one_runs() {
        let allow = Op::Demand { count: 1, epoch: "e1".into(), changes: None, allow_shrink: true };
        let sent = |id: &str| Op::RecordCommands {
            wave_id: id.into(),
            sender: id.into(),
            command_ids: vec!["c".into()],
            sent: true,
            fingerprint: None,
            manifest: None,
        };
        let (item, _) = run(&[demand(1), allow, start("w1", 0)]);
        let item = item.expect("item");
        assert_eq!(item.allow_shrink_gen, 2, "in the demand's own write");
        assert!(item.allows_shrink(2));
        let unsent = apply(Some(&item), &finish_op("w1", WaveEnd::Success)).expect("sent nowhere");
        assert_eq!(unsent.allow_shrink_spent, 0, "a wave sent nowhere spends nothing");
        let item = apply(Some(&item), &sent("w1")).expect("sent");
        let failed = apply(Some(&item), &finish_op("w1", WaveEnd::Failure)).expect("failed");
        assert!(failed.allows_shrink(2), "the automatic retry still may shrink");
        let retry = apply(Some(&failed), &start("w2", 1)).and_then(|i| apply(Some(&i), &sent("w2"))).expect("retry");
        let spent = apply(Some(&retry), &finish_op("w2", WaveEnd::Failure)).expect("failed again");
        assert!(!spent.allows_shrink(2), "no retry left: spent");
        for end in [WaveEnd::Refused, WaveEnd::Success] {
            let ended = apply(Some(&item), &finish_op("w1", end)).expect("ended");
            assert!(!ended.allows_shrink(2), "{end:?}: a wave that ran spends the lift");
            let later = apply(Some(&ended), &demand(1)).expect("demand");
            assert!(!later.allows_shrink(later.requested_gen), "{end:?}: a later shrink is guarded again");
        }
    }

    #[test]
    fn a_late_event_from_before_the_last_start_forces_nothing() {
        let (item, _) = run(&[upload(1_000), quiet_start("w1", 40_000), finish_op("w1", WaveEnd::Success)]);
        let item = item.expect("item");
        // Alone, a redelivered event counts from when it arrived.
        let redelivered = ChangeTimes { oldest: 1_000, newest: 1_000, seen: 120_000 };
        let alone = Op::Demand { count: 1, epoch: "e1".into(), changes: Some(redelivered), allow_shrink: false };
        let alone = apply(Some(&item), &alone).expect("demand");
        assert_eq!(QUIET.until(&alone), Some(150_000), "quiet from its arrival, not at once");
        // A redelivered event of the first upload, then a real change.
        let late = apply(Some(&item), &upload(1_000)).and_then(|i| apply(Some(&i), &upload(100_000)));
        let late = late.expect("demand");
        assert_eq!(QUIET.until(&late), Some(130_000), "quiet from the newest change, max delay from the start");
        assert!(apply(Some(&late), &quiet_start("w2", 120_000)).is_err(), "not forced by the late event's age");
    }

    #[test]
    fn a_refused_release_waits_for_new_demand() {
        let (item, results) = run(&[demand(1), start("w1", 0), finish_op("w1", WaveEnd::Refused), start("w2", 1)]);
        assert_eq!(results[3], Err(Refusal::Held { generation: 1, attempts: MAX_ATTEMPTS }), "no automatic retry");
        let item = item.expect("item");
        assert_eq!(item.completed_gen, 0);
        assert!(item.refusal_held(), "catch-ups hold");
        assert!(apply(Some(&item), &demand(1)).expect("demand").refusal_held(), "until a release is taken");
        let lifted = Op::Demand { count: 1, epoch: "e1".into(), changes: None, allow_shrink: true };
        assert!(!apply(Some(&item), &lifted).expect("demand").refusal_held(), "or the guard lifted");
        let next = apply(Some(&item), &demand(1)).and_then(|i| apply(Some(&i), &start("w3", 2)));
        assert_eq!(next.expect("new demand").wave.map(|w| w.target), Some(2));
    }

    /// A fleet that served three exact releases (generations 1 to 3).
    fn three_releases() -> FleetItem {
        let mut item = None;
        for n in 1..=3u64 {
            let id = format!("w{n}");
            let manifest = ReleaseRef {
                key: format!("manifests/f/{n}.jsonl.gz"),
                sha256: format!("{n}{}", "a".repeat(63)),
                generation: n,
                versioned: true,
            };
            for op in [
                demand(1),
                start(&id, n),
                Op::RecordCommands {
                    wave_id: id.clone(),
                    sender: id.clone(),
                    command_ids: vec![],
                    sent: true,
                    fingerprint: None,
                    manifest: Some(manifest),
                },
                finish_op(&id, WaveEnd::Success),
            ] {
                item = Some(apply(item.as_ref(), &op).expect("applies"));
            }
        }
        item.expect("item")
    }

    fn rollback(item: &FleetItem, to: &str) -> Result<FleetItem, Refusal> {
        let to = item.rollback_target(to, 3).map_err(|e| Refusal::UnknownRelease { release: e.to_string() })?.clone();
        let op = Op::Rollback {
            wave_id: "rb".into(),
            now: 50,
            lease_ms: 10,
            to,
            reason: "500s".into(),
            request: "r1".into(),
        };
        apply(Some(item), &op)
    }

    #[test]
    fn successful_releases_are_kept_newest_last_and_bounded() {
        let item = three_releases();
        let gens: Vec<u64> = item.releases.iter().map(|r| r.manifest.generation).collect();
        assert_eq!(gens, [1, 2, 3]);
        assert_eq!(item.releases[0].id, format!("1{}", "a".repeat(11)), "the id: the sha256's first 12 digits");
        assert_eq!(item.keep_ids(2), [item.releases[1].id.clone(), item.releases[2].id.clone()]);
        assert_eq!(item.rollback_targets(2).len(), 2);
        let mut long = item.clone();
        for n in 0..30 {
            long.releases.push(KeptRelease::of(
                &ReleaseRef { sha256: format!("{n:064}"), generation: 10 + n, ..ReleaseRef::default() },
                "w",
            ));
        }
        let wave = Wave {
            id: "w".into(),
            target: 99,
            manifest: Some(ReleaseRef { sha256: "f".repeat(64), generation: 99, ..ReleaseRef::default() }),
            ..Wave::default()
        };
        finish(&mut long, &wave, WaveEnd::Success);
        assert_eq!(long.releases.len(), MAX_HISTORY);
        assert_eq!(long.releases.last().map(|r| r.manifest.generation), Some(99));
    }

    #[test]
    fn a_rollback_is_a_new_generation_whose_wave_puts_an_old_release_back_and_pins() {
        let item = three_releases();
        let next = rollback(&item, "previous").expect("rolls back");
        let wave = next.wave.clone().expect("a rollback wave");
        assert_eq!((next.requested_gen, wave.target), (4, 4), "a new, higher generation");
        let m = wave.manifest.clone().expect("the old release's manifest");
        assert_eq!((m.sha256.as_bytes()[0], m.generation), (b'2', 4), "generation 2's content, as generation 4");
        assert_eq!(wave.rollback.as_deref(), Some(&item.releases[1].id[..]));
        let pin = next.pin.clone().expect("pinned");
        assert_eq!((pin.reason.as_str(), pin.since, pin.manifest.generation), ("500s", 50, 4));
        // Its success serves it, as generation 4, and adds no release.
        let done = apply(Some(&next), &finish_op("rb", WaveEnd::Success)).expect("finish");
        assert_eq!(done.completed_gen, 4);
        assert_eq!(done.release.as_ref().map(|r| (&r.sha256[..1], r.generation)), Some(("2", 4)));
        assert_eq!(done.releases, item.releases, "the history is unchanged");
        assert!(done.release.as_ref().is_some_and(|r| r.materializable(done.completed_gen)));
        assert_eq!(done.serving().map(|s| &s[..1]), Some("2"));
        // Previous is now generation 1's; the current one is refused.
        assert_eq!(done.rollback_target("previous", 3).map(|r| r.manifest.generation), Ok(1));
        assert!(done.rollback_target("2", 3).is_err_and(|e| e.to_string().contains("already serves")));
        assert_eq!(done.rollback_target("3", 3).map(|r| r.manifest.generation), Ok(3), "forward again, by generation");
    }

    #[test]
    fn a_rollback_not_done_yet_is_retried_never_taken_one_release_further() {
        let item = three_releases();
        let pinned = rollback(&item, "previous").expect("pinned");
        // Its wave was never sent (released), or failed: `previous` is it again.
        let released = apply(Some(&pinned), &finish_op("rb", WaveEnd::Abandoned)).expect("released");
        assert!(released.pin.is_some(), "still pinned");
        let again = released.rollback_target("previous", 3).expect("a retry");
        assert_eq!(again.manifest.generation, 2, "the same release, not generation 1's");
        let id = &item.releases[1].id;
        assert_eq!(released.rollback_target(id, 3).map(|r| r.manifest.generation), Ok(2), "named: the same");
        let retried = rollback(&released, "previous").expect("re-issued");
        assert_eq!(retried.wave.as_ref().map(|w| (w.target, w.rollback.as_deref())), Some((5, Some(id.as_str()))));
        // Once done, `previous` goes one further back, deliberately.
        let done = apply(Some(&retried), &finish_op("rb", WaveEnd::Success)).expect("done");
        assert_eq!(done.rollback_target("previous", 3).map(|r| r.manifest.generation), Ok(1));
        assert!(done.rollback_target(id, 3).is_err_and(|e| e.to_string().contains("already serves")));
    }

    #[test]
    fn a_pinned_fleet_counts_demand_and_starts_nothing_until_resume() {
        let item = three_releases();
        let pinned = rollback(&item, "1").and_then(|i| apply(Some(&i), &finish_op("rb", WaveEnd::Success)));
        let pinned = pinned.expect("pinned");
        let (after, results) = {
            let mut item = pinned.clone();
            let mut results = Vec::new();
            for op in [demand(1), start("w9", 60), demand(1), start("w10", 61)] {
                match apply(Some(&item), &op) {
                    Ok(next) => {
                        item = next;
                        results.push(Ok(()));
                    }
                    Err(r) => results.push(Err(r)),
                }
            }
            (item, results)
        };
        assert!(matches!(&results[1], Err(Refusal::Pinned { release, since: 50 }) if *release == item.releases[0].id));
        assert!(matches!(results[3], Err(Refusal::Pinned { .. })));
        assert_eq!((after.requested_gen, after.completed_gen), (6, 4), "uploads keep counting");
        let resumed = apply(Some(&after), &Op::Unpin).expect("resume");
        assert!(resumed.pin.is_none());
        assert_eq!(resumed.requested_gen, 7, "resume is demand: the next wave syncs the codebase as it is");
        let wave = apply(Some(&resumed), &start("w11", 70)).expect("starts").wave.expect("wave");
        assert_eq!((wave.target, wave.rollback), (7, None));
        assert_eq!(apply(Some(&resumed), &Op::Unpin), Err(Refusal::NotPinned));
    }

    #[test]
    fn a_rollback_waits_for_the_running_wave_and_needs_a_kept_release() {
        let item = three_releases();
        let busy = apply(Some(&apply(Some(&item), &demand(1)).expect("demand")), &start("w4", 9)).expect("start");
        assert!(matches!(rollback(&busy, "previous"), Err(Refusal::Busy { .. })));
        let gone = KeptRelease { id: "gone".into(), ..KeptRelease::default() };
        let op = Op::Rollback {
            wave_id: "rb".into(),
            now: 1,
            lease_ms: 1,
            to: gone,
            reason: String::new(),
            request: String::new(),
        };
        assert_eq!(apply(Some(&item), &op), Err(Refusal::UnknownRelease { release: "gone".into() }));
        for bad in ["7", "zzzzzzz", "abc", "", "previous!"] {
            assert!(item.rollback_target(bad, 3).is_err(), "{bad}");
        }
        assert!(
            item.rollback_target("1", 2).is_err_and(|e| e.to_string().contains("kept:")),
            "older than the kept releases"
        );
        assert_eq!(item.rollback_target(&item.releases[0].id[..7], 3).map(|r| r.manifest.generation), Ok(1));
        assert!(FleetItem::default().rollback_target("previous", 3).is_err_and(|e| e.to_string().contains("none yet")));
    }

    #[test]
    fn catch_ups_materialize_the_pinned_release_or_wait_loudly() {
        let item = three_releases();
        let pinned = rollback(&item, "previous").expect("pinned");
        // Even before the rollback wave succeeds: the pinned release, as its generation.
        match pinned.catch_up_plan() {
            CatchUpPlan::Exact { release, pinned: true } => {
                assert_eq!((&release.sha256[..1], release.generation), ("2", 4))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pinned.fleet_gen(), 4);
        let mut unversioned = pinned.clone();
        if let Some(p) = unversioned.pin.as_mut() {
            p.manifest.versioned = false;
        }
        assert!(matches!(unversioned.catch_up_plan(), CatchUpPlan::Hold(why) if why.contains("not versioned")));
        assert!(matches!(pinned.catch_up_plan().usable(false), CatchUpPlan::Hold(why) if why.contains("resume")));
        assert!(matches!(item.catch_up_plan(), CatchUpPlan::Exact { pinned: false, .. }));
        assert_eq!(item.catch_up_plan().usable(false), CatchUpPlan::Prefix, "not pinned: the prefix, as before");
    }
}
