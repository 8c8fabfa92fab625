//! Settling a wave: deciding from SSM's answers, recording the results, the
//! follow-up.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use super::{SettleOutcome, StartOutcome, StartWhen, SyncContext, SyncError, Trigger};
use crate::ssm_document::history::{InstanceResult, Synced};
use crate::sync::decide::{CommandView, Settlement, WaveResult, settle, transition};
use crate::sync::state::{FleetItem, Op, Refusal, Wave, WaveEnd, start_refusal};
use crate::sync::store::{Applied, FleetStore, WaveRecord};

impl<S: FleetStore> SyncContext<'_, S> {
    /// Settles the running wave from what SSM reports, resumes it when its
    /// sending stopped, and starts the follow-up when it finished and more is
    /// requested (or a retry is due).
    pub async fn settle(&self, trigger: Trigger) -> Result<SettleOutcome, SyncError> {
        let Some(item) = self.store.load().await? else { return Ok(SettleOutcome::NoWave) };
        let Some(wave) = item.wave.clone() else { return Ok(SettleOutcome::NoWave) };
        let record = self.store.wave(&wave.id).await?;
        let mut listed = self.wave_commands(&wave).await?;
        if let Trigger::Event { command_id, status } = &trigger
            && status.is_terminal()
            && let Some(l) = listed.iter_mut().find(|l| &l.command_id == command_id)
        {
            // The event is fresher than the listing (eventual consistency).
            l.status = status.clone();
        }
        let intended: Option<Vec<String>> = record.as_ref().map(|r| {
            r.instances.iter().filter(|i| !r.gone.contains(i) && !r.unreachable.contains(i)).cloned().collect()
        });
        let expires_at = record
            .as_ref()
            .map_or(u64::MAX, |r| if r.commands_expire_at == 0 { u64::MAX } else { r.commands_expire_at });
        let now = self.clock.now_ms();
        // First on the commands' statuses alone (one listing): a wave still
        // running costs nothing more.
        let mut views: Vec<CommandView> = listed
            .iter()
            .map(|l| CommandView { command_id: l.command_id.clone(), status: l.status.clone(), invocations: vec![] })
            .collect();
        let mut settlement = settle(&wave, &views, intended.as_deref(), now, expires_at);
        let mut departed: Vec<String> = Vec::new();
        if matches!(settlement, Settlement::Running { .. }) && trigger == Trigger::Sweep {
            // The sweep looks at what is pending: instances that left, and
            // agents that lost their connection, no longer hold the wave
            // (their invocations would wait for the commands' expiry).
            for v in &mut views {
                v.invocations = self.invocations(&v.command_id).await?;
            }
            let pending: Vec<String> = views
                .iter()
                .flat_map(|v| &v.invocations)
                .filter(|i| i.pending())
                .map(|i| i.instance_id.clone())
                .collect();
            let (gone, lost) = if pending.is_empty() {
                (BTreeSet::new(), BTreeSet::new())
            } else {
                let gone = self.departed(&pending).await?;
                let agents = self.agents(&pending).await?;
                let lost: BTreeSet<String> = pending
                    .iter()
                    .filter(|i| !gone.contains(*i) && !agents.get(*i).is_some_and(|a| a.online))
                    .cloned()
                    .collect();
                (gone, lost)
            };
            for v in &mut views {
                let stop: Vec<String> = v
                    .invocations
                    .iter()
                    .filter(|i| i.pending() && (gone.contains(&i.instance_id) || lost.contains(&i.instance_id)))
                    .map(|i| i.instance_id.clone())
                    .collect();
                if !stop.is_empty() && !self.settings.dry_run {
                    self.cancel(&v.command_id, &stop).await;
                }
                for i in &mut v.invocations {
                    i.gone |= gone.contains(&i.instance_id);
                    i.unreachable |= lost.contains(&i.instance_id);
                }
            }
            departed = gone.into_iter().chain(lost).collect();
            settlement = settle(&wave, &views, intended.as_deref(), now, expires_at);
        } else if matches!(settlement, Settlement::Done(_)) {
            // Every command ended: now its invocations (once per command).
            for v in &mut views {
                v.invocations = self.invocations(&v.command_id).await?;
            }
            settlement = settle(&wave, &views, intended.as_deref(), now, expires_at);
        }
        if self.settings.dry_run {
            return Ok(SettleOutcome::DryRun { settlement });
        }
        if settlement == Settlement::Resume {
            return Ok(match self.resume(&wave).await? {
                Some(resumed) => SettleOutcome::Resumed(resumed),
                None => SettleOutcome::Sending { wave_id: wave.id },
            });
        }
        let Some(op) = transition(&wave, &settlement, now, self.settings.lease_ms) else {
            return Ok(SettleOutcome::Sending { wave_id: wave.id });
        };
        let item = match self.store.apply(&op).await? {
            Applied::Won(item) => *item,
            Applied::Lost(Refusal::LeaseLive { .. }) => return Ok(SettleOutcome::Sending { wave_id: wave.id }),
            // The SDK retried a Finish or TakeOver whose first attempt committed: ours.
            Applied::Lost(Refusal::Stale { current: None })
                if matches!(op, Op::Finish { .. } | Op::TakeOver { .. }) =>
            {
                match self.store.load().await? {
                    Some(after) if after.wave.is_none() && ended_as_ours(&after, &wave, &op) => after,
                    _ => return Ok(SettleOutcome::Stale { wave_id: wave.id }),
                }
            }
            Applied::Lost(_) => return Ok(SettleOutcome::Stale { wave_id: wave.id }),
        };
        let result = match (&op, settlement) {
            (Op::Renew { .. }, Settlement::Running { pending }) => {
                info!(wave_id = %wave.id, pending, released = ?departed, "wave still running: lease renewed");
                return Ok(SettleOutcome::Renewed { wave_id: wave.id, pending, released: departed });
            }
            (_, Settlement::Done(result)) => result,
            (_, _) => WaveResult { end: WaveEnd::Abandoned, results: Vec::new(), blame: None },
        };
        let quarantined = self.record_results(&item, &wave, &result, record, now).await?;
        if result.end == WaveEnd::Success {
            self.mark_kept(&item).await;
        }
        match &result.blame {
            Some(blame) => {
                warn!(wave_id = %wave.id, generation = wave.target, blame = %blame.describe(), failed = ?result.with(InstanceResult::Failed), "wave failed")
            }
            None => {
                info!(wave_id = %wave.id, generation = wave.target, end = ?result.end, failed = ?result.with(InstanceResult::Failed), "wave finished")
            }
        }
        let follow_up = self.follow_up(&wave, result.end, &item).await?;
        Ok(SettleOutcome::Finished {
            wave_id: wave.id.clone(),
            target: wave.target,
            end: result.end,
            synced: result.with(InstanceResult::Synced).len(),
            failed: result.with(InstanceResult::Failed),
            not_attempted: result.with(InstanceResult::NotAttempted),
            gone: result.with(InstanceResult::Gone),
            unreachable: result.with(InstanceResult::Unreachable),
            refused: result.with(InstanceResult::Refused),
            quarantined,
            blame: result.blame.clone(),
            taken_over: matches!(op, Op::TakeOver { .. }),
            follow_up: follow_up.map(Box::new),
        })
    }

    /// Tags the manifests of the releases a rollback may put back as kept
    /// (the manifest bucket's expiry never removes them), and the one that
    /// just left that window as not (best effort: the next success tags
    /// again; a manifest expires only after `ManifestRetentionDays`).
    async fn mark_kept(&self, item: &FleetItem) {
        let Some(store) = &self.settings.manifest else { return };
        let keep = self.settings.release.keep_releases;
        let s3 = store.client(&self.clients.s3);
        // Kept: the rollback targets, the pinned release and the one served.
        let mut kept: Vec<&crate::store::ReleaseRef> =
            item.rollback_targets(keep).iter().map(|r| &r.manifest).collect();
        kept.extend(item.pin.as_ref().map(|p| &p.manifest));
        kept.extend(item.release.as_ref());
        let left = item
            .releases
            .len()
            .checked_sub(keep + 1)
            .map(|i| &item.releases[i].manifest)
            .filter(|m| !kept.iter().any(|k| k.sha256 == m.sha256));
        let mut marked = std::collections::BTreeSet::new();
        let marks = kept.into_iter().map(|m| (m, true)).chain(left.map(|m| (m, false)));
        for (manifest, keep) in marks {
            if !marked.insert(manifest.key.clone()) {
                continue;
            }
            if let Err(e) = crate::sync::manifest::mark_kept(&s3, &store.bucket, &manifest.key, keep).await {
                warn!(manifest = %manifest.key, keep, error = %e, "could not tag a release's manifest: the next successful wave tags it again");
            }
        }
    }

    async fn follow_up(&self, wave: &Wave, end: WaveEnd, item: &FleetItem) -> Result<Option<StartOutcome>, SyncError> {
        if start_refusal(item).is_err() {
            return Ok(None);
        }
        let reason = match end {
            WaveEnd::Failure if item.requested_gen == wave.target => "retry",
            WaveEnd::Abandoned if item.requested_gen == wave.target => "restart after a dead sender",
            _ => "follow-up",
        };
        // A follow-up waits for the changes made during the wave to settle.
        Ok(Some(self.start(reason, StartWhen::Quiet { due: None }).await?))
    }

    /// Writes the instances' results and the finished wave record; returns
    /// the instances this wave quarantined.
    async fn record_results(
        &self,
        item: &FleetItem,
        wave: &Wave,
        result: &WaveResult,
        record: Option<WaveRecord>,
        now: u64,
    ) -> Result<Vec<String>, SyncError> {
        let epoch =
            record.as_ref().map(|r| r.epoch.clone()).filter(|e| !e.is_empty()).unwrap_or_else(|| item.epoch.clone());
        let countable = result.countable();
        let failing: Vec<String> =
            countable.iter().filter(|(_, r)| *r == InstanceResult::Failed).map(|(i, _)| i.clone()).collect();
        let before: BTreeSet<String> = self
            .store
            .instances(&failing)
            .await?
            .into_iter()
            .filter(|r| r.quarantined())
            .map(|r| r.instance_id)
            .collect();
        let at = Synced { epoch: &epoch, generation: wave.target };
        let records = self.store.record_results(at, &countable, now, self.settings.quarantine_after).await?;
        let by_id: BTreeMap<&str, bool> = records.iter().map(|r| (r.instance_id.as_str(), r.quarantined())).collect();
        let quarantined: Vec<String> =
            failing.iter().filter(|i| by_id.get(i.as_str()) == Some(&true) && !before.contains(*i)).cloned().collect();
        for id in &quarantined {
            warn!(instance_id = %id, failures = self.settings.quarantine_after, "instance quarantined: left out of waves until a successful catch-up");
        }
        let mut record = record.unwrap_or_else(|| WaveRecord {
            wave_id: wave.id.clone(),
            target: wave.target,
            epoch: epoch.clone(),
            reason: "unknown (record missing)".into(),
            started_at: wave.sending_since,
            ..WaveRecord::default()
        });
        record.command_ids = wave.command_ids.clone();
        record.end = Some(result.end);
        record.finished_at = Some(now);
        record.synced = result.with(InstanceResult::Synced).len() as u64;
        record.failed = result.with(InstanceResult::Failed);
        record.not_attempted = result.with(InstanceResult::NotAttempted);
        record.blame = result.blame.as_ref().map(crate::sync::decide::Blame::describe);
        for (list, kind) in
            [(&mut record.gone, InstanceResult::Gone), (&mut record.unreachable, InstanceResult::Unreachable)]
        {
            for id in result.with(kind) {
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
        self.store.put_wave(&record).await?;
        Ok(quarantined)
    }
}

/// Whether `after` (read after a refused Finish or TakeOver) is what our own
/// `op` would have written: the SDK's retry of a committed write. (An
/// abandoned end leaves no mark of its own; taking it as ours at worst
/// records nothing and starts the next wave, which is conditional anyway.)
fn ended_as_ours(after: &FleetItem, wave: &Wave, op: &Op) -> bool {
    let end = match op {
        Op::Finish { end, .. } | Op::TakeOver { end, .. } => *end,
        _ => return false,
    };
    match end {
        WaveEnd::Success => after.completed_gen >= wave.target,
        WaveEnd::Failure => after.failed_gen == wave.target,
        WaveEnd::Abandoned => true,
        WaveEnd::Refused => after.failed_gen == wave.target,
    }
}
