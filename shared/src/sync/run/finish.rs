//! Settling a wave: deciding from SSM's answers, recording the results, the follow-up.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::{SettleOutcome, StartOutcome, SyncContext, SyncError};
use crate::ssm_document::history::InstanceResult;
use crate::sync::decide::{Settlement, WaveResult, settle, transition};
use crate::sync::state::{FleetItem, Op, Refusal, Wave, WaveEnd, start_refusal};
use crate::sync::store::{Applied, FleetStore, WaveRecord};

impl<S: FleetStore> SyncContext<'_, S> {
    /// Settles the running wave from what SSM reports, and starts the
    /// follow-up when it finished and more is requested (or a retry is due).
    pub async fn settle(&self) -> Result<SettleOutcome, SyncError> {
        let Some(wave) = self.store.load().await?.and_then(|i| i.wave) else { return Ok(SettleOutcome::NoWave) };
        let record = self.store.wave(&wave.id).await?;
        let intended: Option<Vec<String>> =
            record.as_ref().map(|r| r.instances.iter().filter(|i| !r.gone.contains(i)).cloned().collect());
        let commands = self.observe(&wave).await?;
        let now = self.clock.now_ms();
        let settlement = settle(&wave, &commands, intended.as_deref(), now);
        if self.settings.dry_run {
            return Ok(SettleOutcome::DryRun { settlement });
        }
        let Some(op) = transition(&wave, &settlement, now, self.settings.lease_ms) else {
            return Ok(SettleOutcome::Sending { wave_id: wave.id });
        };
        let applied = self.store.apply(&op).await?;
        let item = match applied {
            Applied::Won(item) => item,
            Applied::Lost(Refusal::LeaseLive { .. }) => return Ok(SettleOutcome::Sending { wave_id: wave.id }),
            Applied::Lost(_) => return Ok(SettleOutcome::Stale { wave_id: wave.id }),
        };
        let (end, result) = match (&op, settlement) {
            (Op::Renew { .. }, Settlement::Running { pending }) => {
                info!(wave_id = %wave.id, pending, "wave still running: lease renewed");
                return Ok(SettleOutcome::Renewed { wave_id: wave.id, pending });
            }
            (_, Settlement::Done(result)) => (result.end, result),
            (_, _) => (WaveEnd::Abandoned, WaveResult { end: WaveEnd::Abandoned, results: Vec::new() }),
        };
        let quarantined = self.record_results(&wave, &result, record, now).await?;
        info!(wave_id = %wave.id, generation = wave.target, end = ?end, failed = ?result.with(InstanceResult::Failed), "wave finished");
        let follow_up = self.follow_up(&wave, end, &item).await?;
        Ok(SettleOutcome::Finished {
            wave_id: wave.id.clone(),
            target: wave.target,
            end,
            synced: result.with(InstanceResult::Synced).len(),
            failed: result.with(InstanceResult::Failed),
            not_attempted: result.with(InstanceResult::NotAttempted),
            quarantined,
            taken_over: matches!(op, Op::TakeOver { .. }),
            follow_up: follow_up.map(Box::new),
        })
    }

    pub(super) async fn follow_up(
        &self,
        wave: &Wave,
        end: WaveEnd,
        item: &FleetItem,
    ) -> Result<Option<StartOutcome>, SyncError> {
        if start_refusal(item).is_err() {
            return Ok(None);
        }
        let reason = match end {
            WaveEnd::Failure if item.requested_gen == wave.target => "retry",
            WaveEnd::Abandoned if item.requested_gen == wave.target => "restart after a dead sender",
            _ => "follow-up",
        };
        Ok(Some(self.start(reason).await?))
    }

    /// Writes the instances' results and the finished wave record; returns
    /// the instances this wave quarantined.
    pub(super) async fn record_results(
        &self,
        wave: &Wave,
        result: &WaveResult,
        record: Option<WaveRecord>,
        now: u64,
    ) -> Result<Vec<String>, SyncError> {
        let before: BTreeSet<String> = self
            .store
            .instances(&result.with(InstanceResult::Failed))
            .await?
            .into_iter()
            .filter(|r| r.quarantined())
            .map(|r| r.instance_id)
            .collect();
        let records =
            self.store.record_results(wave.target, &result.results, now, self.settings.quarantine_after).await?;
        let quarantined: Vec<String> = records
            .into_iter()
            .filter(|r| r.quarantined() && !before.contains(&r.instance_id))
            .map(|r| r.instance_id)
            .collect();
        for id in &quarantined {
            warn!(instance_id = %id, failures = self.settings.quarantine_after, "instance quarantined: left out of waves until a successful catch-up");
        }
        let mut record = record.unwrap_or_else(|| WaveRecord {
            wave_id: wave.id.clone(),
            target: wave.target,
            reason: "unknown (record missing)".into(),
            started_at: wave.sending_since,
            ..WaveRecord::default()
        });
        record.command_ids = wave.command_ids.clone();
        record.end = Some(result.end);
        record.finished_at = Some(now);
        record.succeeded = result.with(InstanceResult::Synced);
        record.failed = result.with(InstanceResult::Failed);
        record.not_attempted = result.with(InstanceResult::NotAttempted);
        let mut gone = record.gone.clone();
        gone.extend(result.with(InstanceResult::Gone));
        record.gone = gone;
        self.store.put_wave(&record).await?;
        Ok(quarantined)
    }
}
