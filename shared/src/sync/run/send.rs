//! Starting a wave, sending its chunks, resuming one whose sending stopped.
//!
//! Only the winner of `Start` does the expensive work (listing the fleet and
//! the codebase). Whatever happens after winning, the lease never waits for
//! its expiry: before the wave's record exists an error releases it
//! (`Finish{Abandoned}`: the demand is still there); after, the wave is
//! paused (its lease ends at once) and the next invocation resumes it from
//! the record.

use std::collections::{BTreeSet, HashMap};

use tracing::{info, warn};

use super::{
    CHUNK_BUDGET_MS, EXPIRY_MARGIN_MS, StartOutcome, StartWhen, SyncContext, SyncError, TriggerState, WaveStarted,
    refused,
};
use crate::config::RateControls;
use crate::ssm_document::run::{DELIVERY_TIMEOUT_S, Sent, command, resolve, send_once};
use crate::ssm_document::{
    Guard, MAX_INSTANCE_IDS, ManifestRef, ManifestStore, PinnedDocument, SyncParameters, chunk_rates, chunks,
    wave_comment,
};
use crate::sync::codebase::{fingerprint_of, release_id};
use crate::sync::decide::Blame;
use crate::sync::manifest::{self, Manifest};
use crate::sync::state::{Fingerprint, FleetItem, Op, Refusal, ReleaseRef, Wave, WaveEnd, start_refusal};
use crate::sync::store::{Applied, FleetStore, WaveRecord};

/// A wave's manifest, written.
struct Written {
    key: String,
    sha256: String,
    versioned: bool,
    /// The prefix's fingerprint, from the same listing (not in marker mode).
    fingerprint: Option<Fingerprint>,
    refused: Vec<String>,
    refused_count: u64,
}

/// The manifest a wave's record names, as the fleet item keeps it.
fn record_release(record: &WaveRecord) -> Option<ReleaseRef> {
    Some(ReleaseRef {
        key: record.manifest.clone()?,
        sha256: record.manifest_sha256.clone()?,
        generation: record.target,
        versioned: record.manifest_versioned,
    })
}

/// What one chunk's `SendCommand` (with its retries) did.
#[derive(Debug, Default)]
struct ChunkSent {
    command_ids: Vec<String>,
    /// Refused, and no longer running in EC2.
    gone: Vec<String>,
    /// Refused although running (agent not registered, not online).
    unreachable: Vec<String>,
    /// Why sending stopped before the whole chunk was sent (a `SendCommand`
    /// in doubt, out of time): the wave pauses, the resumer sends the rest.
    stopped: Option<&'static str>,
}

/// Why a chunk stopped when a `SendCommand`'s outcome is unknown.
const IN_DOUBT: &str = "a SendCommand's answer was lost and its command is not listed yet: resuming once SSM lists it";

impl ChunkSent {
    /// Takes a whole-chunk `SendCommand`'s outcome; `true` when the chunk is
    /// done with (sent, or in doubt: never sent again), `false` when SSM
    /// refused an instance.
    fn ended(&mut self, sent: Sent) -> bool {
        match sent {
            Sent::Command(id) => self.command_ids.push(id),
            Sent::InDoubt => self.stopped = Some(IN_DOUBT),
            Sent::Refused => return false,
        }
        true
    }
}

impl<S: FleetStore> SyncContext<'_, S> {
    /// Tries to start a wave for what is requested, then sends it. A start
    /// `when` quiet that the quiet period holds back queues the delayed
    /// start (one at a time) and reports when the wave may start.
    pub async fn start(&self, reason: &str, when: StartWhen) -> Result<StartOutcome, SyncError> {
        let s = self.settings;
        let quiet = match when {
            StartWhen::Now => None,
            StartWhen::Quiet { .. } => Some(s.quiet()),
        };
        if s.dry_run {
            let item = self.store.load().await?;
            let refusal = item.as_ref().and_then(|i| {
                start_refusal(i).err().or_else(|| {
                    let until = quiet.and_then(|q| q.until(i))?;
                    (self.clock.now_ms() < until).then_some(Refusal::Quiet { until })
                })
            });
            let instances = if refusal.is_none() { self.eligible().await?.instances } else { Vec::new() };
            return Ok(StartOutcome::DryRun { refusal, instances });
        }
        // Up to a few rounds: a wave with nothing to sync completes at once,
        // and demand may have moved on meanwhile.
        let mut last = None;
        for _ in 0..3 {
            let wave_id = uuid::Uuid::new_v4().to_string();
            let now = self.clock.now_ms();
            let op = Op::Start { wave_id: wave_id.clone(), now, lease_ms: self.sender_lease_ms(now), quiet };
            let item = match self.store.apply(&op).await? {
                Applied::Won(item) => *item,
                // The SDK retried a Start whose first attempt committed: ours.
                Applied::Lost(Refusal::Busy { wave_id: holder, .. }) if holder == wave_id => {
                    self.store.load().await?.unwrap_or_default()
                }
                Applied::Lost(Refusal::Quiet { until }) => {
                    let due = match when {
                        StartWhen::Quiet { due } => due,
                        StartWhen::Now => None,
                    };
                    let waiting = self.hold_until(until, due).await?;
                    return Ok(last.unwrap_or(waiting));
                }
                Applied::Lost(refusal) => return Ok(last.unwrap_or_else(|| refused(refusal))),
            };
            let Some(wave) = item.wave.clone() else { return Ok(last.unwrap_or(StartOutcome::CaughtUp)) };
            info!(wave_id = %wave.id, generation = wave.target, reason, "starting sync wave");
            let started = self.send_new(&item, &wave, reason).await?;
            let empty = started.completed_empty;
            last = Some(StartOutcome::Started(Box::new(started)));
            if !empty {
                break;
            }
        }
        Ok(last.unwrap_or(StartOutcome::CaughtUp))
    }

    /// Rolls back to the kept release `to` names (`previous`, a generation,
    /// a release id or a prefix of it, or the marker's release id of the
    /// wave that made it), and pins the fleet: a new generation whose wave
    /// every instance holding that release takes by switching `current`,
    /// with no download. Refused (nothing written) while a wave runs, or
    /// when the release is not kept. `request` (Lambda's request id) makes a
    /// retried invocation a no-op. Also returns warnings for the operator.
    pub async fn rollback(
        &self,
        to: &str,
        reason: &str,
        request: &str,
    ) -> Result<(StartOutcome, Vec<String>), SyncError> {
        let s = self.settings;
        let refuse = |why: String| Err(SyncError::Rollback(why));
        if s.manifest.is_none() {
            return refuse(format!(
                "exact releases are off ({} is not set): there is no kept release to roll back to",
                crate::config::vars::MANIFEST_BUCKET
            ));
        }
        let document = resolve(&self.clients.ssm, &s.document, None).await?;
        if !(document.declared.contains("rollback") && document.declared.contains("keep")) {
            return refuse(format!(
                "document {} version {} does not take rollback and keep: update the document (an older one would \
                 download the release again and prune the fleet's rollback targets)",
                document.name, document.version
            ));
        }
        let keep = s.release.keep_releases;
        for _ in 0..3 {
            let item = self.store.load().await?.unwrap_or_default();
            // A retry of the request that pinned the fleet (Lambda's retry of
            // an asynchronous invocation keeps its request id) changes nothing
            // once its wave runs or is done; one whose wave was never sent
            // goes on below, as a retry of that rollback.
            if let Some(pin) = item.pin.as_ref().filter(|p| !request.is_empty() && p.request == request)
                && (item.wave.is_some() || item.pending_pin().is_none())
            {
                info!(release = %pin.release, request, "rollback: this request pinned the fleet already (a retry)");
                return Ok((StartOutcome::Pinned { release: pin.release.clone(), since: pin.since }, Vec::new()));
            }
            let target = self.rollback_target(&item, to, keep).await;
            if let Some(w) = &item.wave {
                // Never settled or resumed from here: settling may resume the
                // running wave or start its follow-up, which would send the
                // release being rolled back from to more instances.
                if let (Some(running), Ok(t)) = (&w.rollback, &target)
                    && *running == t.id
                {
                    info!(wave_id = %w.id, release = %t.id, "rollback: a wave rolling back to it already runs");
                    return Ok((StartOutcome::Coalesced { wave_id: w.id.clone(), target: w.target }, Vec::new()));
                }
                let now = self.clock.now_ms();
                let what = if w.rollback.is_some() { "a rollback wave" } else { "wave" };
                let when = match w.lease_expires_at.checked_sub(now) {
                    Some(left) => format!("its lease ends in {} s at the latest", left.div_ceil(1000)),
                    None => "its lease expired: the next sweep settles it".to_owned(),
                };
                return refuse(format!(
                    "{what} {} (generation {}) is running: roll back once it ends ({when})",
                    w.id, w.target
                ));
            }
            let target = target?;
            let mut warnings = Vec::new();
            if !target.manifest.versioned {
                warnings.push(format!(
                    "release {} was listed on an unversioned bucket: an instance that does not hold it cannot get it \
                     (its run fails as stale), and launches wait until resume",
                    target.id
                ));
            }
            let wave_id = uuid::Uuid::new_v4().to_string();
            let now = self.clock.now_ms();
            let op = Op::Rollback {
                wave_id: wave_id.clone(),
                now,
                lease_ms: self.sender_lease_ms(now),
                to: target.clone(),
                reason: reason.to_owned(),
                request: request.to_owned(),
            };
            let item = match self.store.apply(&op).await? {
                Applied::Won(item) => *item,
                Applied::Lost(Refusal::Busy { wave_id: holder, .. }) if holder == wave_id => {
                    self.store.load().await?.unwrap_or_default()
                }
                // A wave started, or the release left the history, meanwhile: look again.
                Applied::Lost(_) => continue,
            };
            let Some(wave) = item.wave.clone() else { continue };
            warn!(wave_id = %wave.id, generation = wave.target, release = %target.id,
                from_generation = target.manifest.generation, reason, "rollback: the fleet is pinned");
            for w in &warnings {
                warn!(warning = %w, "rollback");
            }
            let why = format!("rollback to {} (generation {}): {reason}", target.id, target.manifest.generation);
            let not_sent = |why: &str| {
                SyncError::Rollback(format!(
                    "the fleet is pinned to release {} but its rollback wave was not sent ({why}); the sweep's \
                     catch-ups put it back on the instances behind: invoke the rollback again (to {}), or resume",
                    target.id, target.id
                ))
            };
            let started = self.send_new(&item, &wave, &why).await.map_err(|e| not_sent(&e.to_string()))?;
            let after = self.store.load().await?.unwrap_or_default();
            if after.wave.is_none() && after.completed_gen < wave.target {
                let why = match (&started.paused, &started.blame) {
                    (Some(paused), _) => paused.clone(),
                    (None, Some(blame)) => blame.describe(),
                    (None, None) => "it ended at once".to_owned(),
                };
                return Err(not_sent(&why));
            }
            return Ok((StartOutcome::Started(Box::new(started)), warnings));
        }
        refuse("the fleet item kept changing: try again".into())
    }

    /// The kept release `to` names: by the rules of
    /// [`crate::sync::state::FleetItem::rollback_target`], or as the release
    /// marker's id of the wave that made it (while its record lasts, 30
    /// days); one that names two different releases is refused.
    async fn rollback_target(
        &self,
        item: &FleetItem,
        to: &str,
        keep: usize,
    ) -> Result<crate::sync::state::KeptRelease, SyncError> {
        use crate::sync::state::TargetError;
        let by_rule = item.rollback_target(to, keep).cloned();
        let mut by_marker = None;
        if to != "previous" {
            for kept in item.rollback_targets(keep).iter().rev() {
                if let Some(record) = self.store.wave(&kept.wave_id).await?
                    && record.release.as_deref() == Some(to)
                {
                    by_marker = Some(kept.clone());
                    break;
                }
            }
        }
        match (by_rule, by_marker) {
            (Ok(a), Some(b)) if a.manifest.sha256 != b.manifest.sha256 => Err(SyncError::Rollback(format!(
                "{to:?} names two releases: {} (generation {}) and the release marker's {} (generation {}): name the \
                 release by its id",
                a.id, a.manifest.generation, b.id, b.manifest.generation
            ))),
            (Ok(a), _) => Ok(a),
            // Only a name nothing kept goes by may be a marker's release id.
            (Err(TargetError::NotKept(_)), Some(b)) => {
                item.not_served(&b).map_err(|e| SyncError::Rollback(e.to_string()))?;
                Ok(b)
            }
            (Err(why), _) => Err(SyncError::Rollback(why.to_string())),
        }
    }

    /// Unpins the fleet (`resume`) and starts a wave of the codebase as it is.
    pub async fn resume_pinned(&self, reason: &str) -> Result<StartOutcome, SyncError> {
        match self.store.apply(&Op::Unpin).await? {
            Applied::Won(item) => {
                info!(requested_gen = item.requested_gen, reason, "resume: the fleet is unpinned");
            }
            Applied::Lost(Refusal::NotPinned) => {
                return Err(SyncError::Rollback("the fleet is not pinned: nothing to resume".into()));
            }
            Applied::Lost(other) => return Err(SyncError::Rollback(format!("resume refused: {other:?}"))),
        }
        self.start(&format!("resume: {reason}"), StartWhen::Now).await
    }

    /// The quiet period holds a wave back until `until`: queues the delayed
    /// start for then, unless one is already on its way (`due`: the one
    /// this invocation handles, which it replaces). A start that cannot be
    /// queued is left to the sweep (latency, never a lost sync: the demand
    /// is recorded).
    pub(super) async fn hold_until(&self, until: u64, due: Option<u64>) -> Result<StartOutcome, SyncError> {
        let now = self.clock.now_ms();
        // SQS delays at most 15 minutes: a longer wait is a chain of
        // triggers, each due when its message arrives (never early).
        let at = until.min(now + u64::try_from(crate::trigger::MAX_DELAY.as_millis()).unwrap_or(900_000));
        let trigger = match self.store.apply(&Op::Trigger { at, now, replacing: due }).await? {
            Applied::Lost(Refusal::TriggerPending { at }) => TriggerState::OnItsWay { due: at },
            Applied::Lost(other) => TriggerState::NotQueued { why: format!("{other:?}") },
            Applied::Won(_) => match self.queue_start(at, now).await {
                Ok(()) => TriggerState::Queued { due: at },
                Err(why) => {
                    warn!(until, why, "could not queue the delayed start: the sweep starts the wave");
                    if let Err(e) = self.store.apply(&Op::ClearTrigger { at }).await {
                        warn!(error = %e, "could not clear the delayed start: the next one is queued once it is due");
                    }
                    TriggerState::NotQueued { why }
                }
            },
        };
        info!(until, ?trigger, "quiet period: the wave waits for the codebase to settle");
        Ok(StartOutcome::Waiting { until, trigger })
    }

    /// Sends `codebase-sync` its own delayed start, due at `until` (at most
    /// [`crate::trigger::MAX_DELAY`] from `now`).
    async fn queue_start(&self, until: u64, now: u64) -> Result<(), String> {
        let Some(url) = &self.settings.trigger_queue_url else {
            return Err(format!("{} is not set", crate::config::vars::RETRIGGER_QUEUE_URL));
        };
        let body = serde_json::json!({ "action": "sync-due", "due": until, "reason": "quiet period over" });
        let delay = std::time::Duration::from_millis(until.saturating_sub(now).div_ceil(1000) * 1000);
        crate::trigger::Retrigger { sqs: &self.clients.sqs, queue_url: url }
            .send(&body, delay)
            .await
            .map_err(|e| e.to_string())
    }

    /// Lists the codebase and writes the wave's manifest (exact releases).
    /// On a versioned bucket in marker mode, each key's version is the
    /// newest one not newer than the marker (`not_after`).
    async fn write_manifest(&self, store: &ManifestStore, not_after: Option<u64>) -> Result<Written, SyncError> {
        let s = self.settings;
        let s3 = &self.clients.s3;
        let versioned = match manifest::versioned(s3, &s.codebase.bucket).await {
            Ok(v) => v,
            // Only the bucket owner may read its versioning state (S3 API
            // reference, GetBucketVersioning): a codebase bucket of another
            // account is taken as unversioned (ETags and If-Match).
            Err(e) if e.code() == Some("AccessDenied") => {
                warn!(error = %e, "the codebase bucket's versioning cannot be read: manifests pin ETags, not versions");
                false
            }
            Err(e) => return Err(e.into()),
        };
        let entries = manifest::list(s3, &s.codebase, &s.excludes, versioned, not_after.filter(|_| versioned)).await?;
        // The fingerprint of the prefix (not in marker mode: the marker's is taken apart).
        let fingerprint = s.marker_key().is_none().then(|| fingerprint_of(&entries));
        let sifted = manifest::sift(entries);
        if !sifted.refused.is_empty() {
            warn!(
                refused = sifted.refused.len(),
                first = ?sifted.refused.first(),
                "codebase keys that cannot be a path are left out of the release"
            );
        }
        let m = Manifest::encode(&s.codebase.bucket, &s.codebase.prefix, versioned, &sifted.entries);
        let key = m.key(&s.fleet);
        manifest::publish(&store.client(s3), &store.bucket, &key, &m).await?;
        info!(key, sha256 = %m.sha256, objects = m.count, versioned, "the wave's manifest is written");
        Ok(Written {
            key,
            sha256: m.sha256,
            versioned,
            fingerprint,
            refused_count: sifted.refused.len() as u64,
            refused: sifted
                .refused
                .iter()
                .take(manifest::MAX_REFUSED_LISTED)
                .map(|r| format!("{}: {}", r.key, r.why))
                .collect(),
        })
    }

    /// The document's manifest parameters for a wave's record (none when
    /// it has no manifest, or the manifest bucket is no longer configured).
    fn manifest_ref(&self, record: &WaveRecord) -> Option<ManifestRef> {
        Some(self.settings.manifest.as_ref()?.reference(&record_release(record)?))
    }

    /// Releases a wave that could not be sent at all: its demand is still
    /// there, so the next invocation starts again at once.
    async fn release(&self, wave: &Wave, why: &str) {
        warn!(wave_id = %wave.id, why, "releasing the lease of a wave that was never sent");
        let finish = Op::Finish { wave_id: wave.id.clone(), end: WaveEnd::Abandoned };
        if let Err(e) = self.store.apply(&finish).await {
            warn!(wave_id = %wave.id, error = %e, "could not release: the lease expires on its own");
        }
    }

    /// A freshly started wave: what to send, its record, the codebase's
    /// fingerprint, then the chunks.
    async fn send_new(&self, item: &FleetItem, wave: &Wave, reason: &str) -> Result<WaveStarted, SyncError> {
        let s = self.settings;
        let prepared = async {
            let eligible = self.eligible().await?;
            let document = resolve(&self.clients.ssm, &s.document, None).await?;
            if let (Some(to), Some(m)) = (&wave.rollback, &wave.manifest) {
                // A rollback: the kept release's manifest, nothing listed.
                if s.manifest.is_none() || !document.declared.contains("manifest") {
                    return Err(SyncError::Rollback(format!(
                        "document {} version {} or the functions' configuration takes no manifest: a rollback \
                         cannot be sent (update the document, set {})",
                        document.name,
                        document.version,
                        crate::config::vars::MANIFEST_BUCKET
                    )));
                }
                let kept = item.releases.iter().find(|r| r.manifest.sha256 == m.sha256);
                let release = match kept {
                    Some(k) => self.store.wave(&k.wave_id).await?.and_then(|r| r.release),
                    None => None,
                };
                info!(wave_id = %wave.id, to, generation = wave.target, "rolling back");
                let written = Written {
                    key: m.key.clone(),
                    sha256: m.sha256.clone(),
                    versioned: m.versioned,
                    fingerprint: None,
                    refused: Vec::new(),
                    refused_count: 0,
                };
                return Ok::<_, SyncError>((eligible, document, release, Some(written)));
            }
            // In marker mode the marker names the release (read once, by the winner).
            let marker = match s.marker_key() {
                Some(key) => release_id(&self.clients.s3, &s.codebase.bucket, &key).await?,
                None => None,
            };
            // Exact releases: what the instances materialize, listed once,
            // before anything is on record.
            // A wave that cannot have its manifest (an AWS error, a listing
            // too long for the time left, a pinned document without the
            // parameter) still runs, as `aws s3 sync` of the prefix: loudly,
            // and its record says so (no manifest).
            let exact = match &s.manifest {
                Some(_) if !document.declared.contains("manifest") => {
                    warn!(document = %document.name, version = %document.version,
                        "the document version takes no manifest: this wave syncs the prefix as it is");
                    None
                }
                Some(store) => {
                    let not_after = marker.as_ref().map(|m| m.modified_ms);
                    let listing = self.clock.left_until(self.until) / 3;
                    match tokio::time::timeout(listing, self.write_manifest(store, not_after)).await {
                        Ok(Ok(written)) => Some(written),
                        Ok(Err(e)) => {
                            warn!(error = %e, "the wave's manifest could not be written: this wave syncs the prefix as it is");
                            None
                        }
                        Err(_) => {
                            warn!(
                                "listing the codebase for the manifest took too long: this wave syncs the prefix as it is"
                            );
                            None
                        }
                    }
                }
                None => None,
            };
            Ok::<_, SyncError>((eligible, document, marker.map(|m| m.release), exact))
        };
        let (eligible, document, release, exact) = match prepared.await {
            Ok(p) => p,
            Err(e) => {
                self.release(wave, &e.to_string()).await;
                return Err(e);
            }
        };
        if eligible.instances.is_empty() && !eligible.busy.is_empty() {
            // Every instance that could take the wave is running a catch-up
            // (to the generation requested when it was sent): nobody's
            // fault, and two runs at once on a host are never allowed. The
            // demand stays; the sweep starts the wave once they are done.
            self.release(wave, "every eligible instance has a catch-up in flight").await;
            return Ok(WaveStarted {
                wave_id: wave.id.clone(),
                target: wave.target,
                reason: reason.to_owned(),
                busy: eligible.busy.clone(),
                paused: Some(
                    "every eligible instance has a catch-up in flight: the sweep starts the wave later".into(),
                ),
                ..WaveStarted::default()
            });
        }
        let expires_at = wave.sending_since
            + (u64::try_from(DELIVERY_TIMEOUT_S).unwrap_or(3600) + document.execution_timeout_s) * 1000
            + EXPIRY_MARGIN_MS;
        let mut record = WaveRecord {
            wave_id: wave.id.clone(),
            target: wave.target,
            epoch: item.epoch.clone(),
            reason: reason.to_owned(),
            started_at: wave.sending_since,
            document_version: document.version.clone(),
            commands_expire_at: expires_at,
            instances: eligible.instances.clone(),
            quarantined: eligible.quarantined.clone(),
            not_online: eligible.not_online.clone(),
            too_old: eligible.too_old.clone(),
            busy: eligible.busy.clone(),
            release: release.clone(),
            allow_shrink: item.allows_shrink(wave.target),
            manifest: exact.as_ref().map(|e| e.key.clone()),
            manifest_sha256: exact.as_ref().map(|e| e.sha256.clone()),
            manifest_versioned: exact.as_ref().is_some_and(|e| e.versioned),
            refused_keys: exact.as_ref().map(|e| e.refused.clone()).unwrap_or_default(),
            refused_key_count: exact.as_ref().map_or(0, |e| e.refused_count),
            rollback_to: wave.rollback.clone(),
            ..WaveRecord::default()
        };
        if record.allow_shrink {
            warn!(wave_id = %wave.id, generation = wave.target, "the shrink guard is lifted for this wave (allow_shrink)");
        }
        let mut report = WaveStarted {
            wave_id: wave.id.clone(),
            target: wave.target,
            reason: reason.to_owned(),
            instances: eligible.instances.clone(),
            quarantined: eligible.quarantined.clone(),
            not_online: eligible.not_online.clone(),
            too_old: eligible.too_old.clone(),
            busy: eligible.busy.clone(),
            ..WaveStarted::default()
        };
        // The intended instances are on record before anything is sent.
        if let Err(e) = self.store.put_wave(&record).await {
            self.release(wave, &e.to_string()).await;
            return Err(e.into());
        }
        if eligible.instances.is_empty() {
            // Nothing to send. A fleet with no instance in service has
            // nothing to sync; one whose instances all had to be left out
            // must never be reported as synced.
            let blame = eligible.why_none().map(|reason| Blame::Configuration { reason });
            let end = if blame.is_some() { WaveEnd::Failure } else { WaveEnd::Success };
            match &blame {
                Some(b) => {
                    warn!(wave_id = %wave.id, generation = wave.target, blame = %b.describe(), "the wave cannot run")
                }
                None => {
                    info!(wave_id = %wave.id, generation = wave.target, "no instance in service: the generation completes with nothing to do")
                }
            }
            let done = Op::RecordCommands {
                wave_id: wave.id.clone(),
                sender: wave.sender.clone(),
                command_ids: vec![],
                sent: true,
                fingerprint: None,
                manifest: record_release(&record),
            };
            self.store.apply(&done).await?;
            if let Applied::Won(_) = self.store.apply(&Op::Finish { wave_id: wave.id.clone(), end }).await? {
                record.end = Some(end);
                record.finished_at = Some(self.clock.now_ms());
                record.blame = blame.as_ref().map(Blame::describe);
                self.store.put_wave(&record).await?;
                report.completed_empty = blame.is_none();
                report.blame = blame;
            }
            return Ok(report);
        }
        // The codebase's fingerprint (the lost-event backstop), taken by the
        // winner only, within a share of the time left; the manifest's
        // listing is the prefix's (in marker mode the marker is).
        let listing = self.clock.left_until(self.until) / 3;
        let manifest = record_release(&record);
        let fp = match exact.and_then(|e| e.fingerprint) {
            Some(fp) => Some(fp),
            // A rollback's content is not the prefix's.
            None if wave.rollback.is_some() => None,
            None => match tokio::time::timeout(listing, self.fingerprint()).await {
                Ok(fp) => Some(fp?),
                Err(_) => {
                    warn!(wave_id = %wave.id, "listing the codebase took too long: this wave records no fingerprint");
                    None
                }
            },
        };
        if fp.is_some() || manifest.is_some() {
            let op = Op::RecordCommands {
                wave_id: wave.id.clone(),
                sender: wave.sender.clone(),
                command_ids: vec![],
                sent: false,
                fingerprint: fp,
                manifest,
            };
            self.store.apply(&op).await?;
        }
        self.send_chunks(item, wave, record, &document, &BTreeSet::new(), report).await
    }

    /// Resumes a wave whose sending stopped (paused, or its sender died and
    /// its lease expired): takes its lease, then sends what its record says
    /// was not sent yet. `None` when another invocation resumed it first.
    pub(super) async fn resume(&self, wave: &Wave) -> Result<Option<WaveStarted>, SyncError> {
        let Some(record) = self.store.wave(&wave.id).await? else { return Ok(None) };
        let now = self.clock.now_ms();
        let sender = format!("{}@{now}", wave.id);
        let op =
            Op::Resume { wave_id: wave.id.clone(), sender: sender.clone(), now, lease_ms: self.sender_lease_ms(now) };
        let item = match self.store.apply(&op).await? {
            Applied::Won(item) => *item,
            // The SDK retried a Resume whose first attempt committed: ours.
            Applied::Lost(Refusal::LeaseLive { .. }) => match self.store.load().await? {
                Some(item) if item.wave.as_ref().is_some_and(|w| w.sender == sender) => item,
                _ => return Ok(None),
            },
            Applied::Lost(_) => return Ok(None),
        };
        info!(wave_id = %wave.id, generation = wave.target, "resuming a wave whose sending stopped");
        let document = resolve(&self.clients.ssm, &self.settings.document, Some(&record.document_version)).await?;
        let listed = self.wave_commands(wave).await?;
        // Commands sent but never recorded (found by their comment) are
        // adopted: once the wave says it is sent, only recorded ones count.
        let adopt: Vec<String> =
            listed.iter().map(|c| c.command_id.clone()).filter(|id| !wave.command_ids.contains(id)).collect();
        // The manifest its sender wrote into the record but did not live
        // to record in the fleet item: a success must still name it.
        let manifest = if wave.manifest.is_none() { record_release(&record) } else { None };
        if !adopt.is_empty() || manifest.is_some() {
            let op = Op::RecordCommands {
                wave_id: wave.id.clone(),
                sender: sender.clone(),
                command_ids: adopt.clone(),
                sent: false,
                fingerprint: None,
                manifest,
            };
            if let Applied::Lost(_) = self.store.apply(&op).await? {
                return Ok(None);
            }
        }
        let mut wave = wave.clone();
        wave.command_ids.extend(adopt);
        wave.sender.clone_from(&sender);
        let wave = &wave;
        let covered: BTreeSet<String> = listed.into_iter().flat_map(|c| c.instance_ids).collect();
        let report = WaveStarted {
            wave_id: wave.id.clone(),
            target: wave.target,
            reason: format!("resumed: {}", record.reason),
            instances: record.instances.clone(),
            ..WaveStarted::default()
        };
        Ok(Some(self.send_chunks(&item, wave, record, &document, &covered, report).await?))
    }

    /// Sends the record's instances not `covered` yet, chunk by chunk, while
    /// the invocation has time; pauses the wave when it runs out or an AWS
    /// call fails, as the wave's sender (`wave.sender`). `item` is the fleet
    /// item as the wave took or resumed its lease (its releases decide what
    /// the instances keep).
    async fn send_chunks(
        &self,
        item: &FleetItem,
        wave: &Wave,
        mut record: WaveRecord,
        document: &PinnedDocument,
        covered: &BTreeSet<String>,
        mut report: WaveStarted,
    ) -> Result<WaveStarted, SyncError> {
        let sender = wave.sender.as_str();
        let s = self.settings;
        let mut parameters = SyncParameters::new(
            &s.codebase,
            &s.destination,
            &record.epoch,
            wave.target,
            &s.region,
            s.release.max_shrink_percent,
        );
        parameters.release = record.release.clone().unwrap_or_default();
        parameters.manifest = self.manifest_ref(&record);
        // A rollback puts back a release the fleet served: no guard.
        parameters.rollback = record.rollback_to.is_some() && parameters.manifest.is_some();
        if record.allow_shrink || parameters.rollback {
            parameters.guard = Guard::Lifted;
        }
        let parameters = self.retention(parameters, item).to_ssm(Some(document))?;
        let skip: BTreeSet<&String> = covered.iter().chain(&record.gone).chain(&record.unreachable).collect();
        let todo: Vec<String> = record.instances.iter().filter(|i| !skip.contains(i)).cloned().collect();
        let parts = chunks(&todo);
        // The rate controls are split over the whole wave's chunks.
        let rates = chunk_rates(&s.rate, record.instances.len().div_ceil(MAX_INSTANCE_IDS).max(1));
        let comment = wave_comment(&wave.id);
        let mut sent_ids: Vec<String> = wave.command_ids.clone();
        let record_op = |ids: Vec<String>, sent: bool| Op::RecordCommands {
            wave_id: wave.id.clone(),
            sender: sender.to_owned(),
            command_ids: ids,
            sent,
            fingerprint: None,
            manifest: None,
        };
        if parts.is_empty() {
            record.command_ids = sent_ids;
            self.store.put_wave(&record).await?;
            self.store.apply(&record_op(vec![], true)).await?;
            return Ok(report);
        }
        for (n, chunk) in parts.iter().enumerate() {
            let last = n + 1 == parts.len();
            if self.clock.now_ms() + CHUNK_BUDGET_MS > self.until {
                report.paused =
                    Some(format!("out of time after {n} of {} chunks: the next invocation resumes", parts.len()));
                self.pause(wave, sender, &record).await;
                break;
            }
            // Only the lease holder sends: renew first (a stale sender stops).
            let now = self.clock.now_ms();
            let renew = Op::Renew {
                wave_id: wave.id.clone(),
                sender: Some(sender.to_owned()),
                now,
                lease_ms: self.sender_lease_ms(now),
            };
            if let Applied::Lost(r) = self.store.apply(&renew).await? {
                warn!(wave_id = %wave.id, refusal = ?r, "lost the lease while sending");
                report.paused = Some("lost the lease".into());
                break;
            }
            let rate = &rates[n % rates.len()];
            let sent = match self.send_chunk(document, chunk, &parameters, &comment, rate).await {
                Ok(sent) => sent,
                Err(e) => {
                    warn!(wave_id = %wave.id, error = %e, "sending failed: pausing the wave for the next invocation");
                    self.pause(wave, sender, &record).await;
                    return Err(e);
                }
            };
            report.gone.extend(sent.gone.iter().cloned());
            report.unreachable.extend(sent.unreachable.iter().cloned());
            report.command_ids.extend(sent.command_ids.iter().cloned());
            record.gone.extend(sent.gone);
            record.unreachable.extend(sent.unreachable);
            sent_ids.extend(sent.command_ids.iter().cloned());
            let done = last && sent.stopped.is_none();
            if done {
                // The record is complete before the wave says it is sent: a
                // settle right after never misses what was dropped.
                record.command_ids = sent_ids.clone();
                self.store.put_wave(&record).await?;
            }
            if let Applied::Lost(r) = self.store.apply(&record_op(sent.command_ids, done)).await? {
                warn!(wave_id = %wave.id, refusal = ?r, "lost the lease while recording");
                report.paused = Some("lost the lease".into());
                break;
            }
            if let Some(why) = sent.stopped {
                warn!(wave_id = %wave.id, why, "sending stopped: pausing the wave for the next invocation");
                report.paused = Some(why.to_owned());
                self.pause(wave, sender, &record).await;
                break;
            }
        }
        info!(
            wave_id = %wave.id,
            generation = wave.target,
            instances = record.instances.len(),
            commands = report.command_ids.len(),
            gone = report.gone.len(),
            unreachable = report.unreachable.len(),
            paused = report.paused.is_some(),
            "sync wave sent"
        );
        Ok(report)
    }

    /// Pauses the wave with what was learned recorded: its lease ends once
    /// what was sent is surely listed ([`Self::pause_until`]).
    async fn pause(&self, wave: &Wave, sender: &str, record: &WaveRecord) {
        if let Err(e) = self.store.put_wave(record).await {
            warn!(wave_id = %wave.id, error = %e, "could not record the paused wave");
        }
        let op = Op::Pause { wave_id: wave.id.clone(), sender: sender.to_owned(), until: self.pause_until() };
        if let Err(e) = self.store.apply(&op).await {
            warn!(wave_id = %wave.id, error = %e, "could not pause: the lease expires on its own");
        }
    }

    /// One `SendCommand`. On `InvalidInstanceId` (an instance shutting down
    /// while still listed `Online`, an agent that deregistered), asks EC2
    /// and SSM which instances are still running and online, sets the others
    /// aside and retries once; if SSM still refuses, sends to each instance
    /// alone, so one refused instance never stops the others.
    async fn send_chunk(
        &self,
        document: &PinnedDocument,
        chunk: &[String],
        parameters: &HashMap<String, Vec<String>>,
        comment: &str,
        rate: &RateControls,
    ) -> Result<ChunkSent, SyncError> {
        let mut out = ChunkSent::default();
        // At most one command per chunk, whatever the SDK hears back ([`send_once`]).
        let send = |targets: Vec<String>, rate: RateControls| async move {
            let request = command(&self.clients.ssm, document, parameters.clone(), comment.to_owned())
                .set_instance_ids(Some(targets))
                .max_concurrency(rate.max_concurrency)
                .max_errors(rate.max_errors);
            send_once(&self.clients.ssm, request, self.clock).await
        };
        if out.ended(send(chunk.to_vec(), rate.clone()).await?) {
            return Ok(out);
        }
        let running = self.running(chunk).await?;
        let agents = self.agents(chunk).await?;
        let mut keep = Vec::new();
        for id in chunk {
            if !running.contains(id) {
                out.gone.push(id.clone());
            } else if !agents.get(id).is_some_and(|a| a.online) {
                out.unreachable.push(id.clone());
            } else {
                keep.push(id.clone());
            }
        }
        warn!(gone = ?out.gone, unreachable = ?out.unreachable, "InvalidInstanceId: setting aside the instances that left or are offline");
        if keep.is_empty() {
            return Ok(out);
        }
        if out.ended(send(keep.clone(), rate.clone()).await?) {
            return Ok(out);
        }
        // SSM still refuses one it lists as online: each instance alone,
        // while there is time (the resumer sends to the rest).
        let single = RateControls { max_concurrency: "1".into(), max_errors: "0".into() };
        for id in keep {
            if self.clock.now_ms() + CHUNK_BUDGET_MS > self.until {
                out.stopped = Some("out of time while sending to instances one by one");
                return Ok(out);
            }
            match send(vec![id.clone()], single.clone()).await? {
                Sent::Command(command_id) => out.command_ids.push(command_id),
                Sent::Refused => out.unreachable.push(id),
                Sent::InDoubt => {
                    out.stopped = Some(IN_DOUBT);
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}
