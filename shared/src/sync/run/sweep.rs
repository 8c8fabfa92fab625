//! The sweep: the scheduled, level-triggered backstop of the sync.
//!
//! * settles the running wave from SSM directly (status events are best
//!   effort), resumes it when its sending stopped, and lets go of instances
//!   that left while their invocations were pending;
//! * starts a wave for demand no wave covers;
//! * compares the codebase's fingerprint with the last synced one (or, while
//!   a failed generation is held, with the failed one), so a change whose
//!   event was lost still syncs;
//! * catches up every instance in service that is behind the fleet (its
//!   agent was offline at a wave's start, it came back from Standby, it was
//!   attached without a lifecycle hook, it was launched during a wave), and
//!   offers each quarantined instance a recovery catch-up at most hourly.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::{
    CatchUpReport, MAX_CATCH_UPS_PER_SWEEP, RECOVERY_SPACING_MS, StartOutcome, SweepReport, SyncContext, SyncError,
    Trigger,
};
use crate::ssm_document::history::{InstanceRecord, InstanceResult, Synced, instance_result};
use crate::ssm_document::run::{invocation_status, resolve, send_catch_up};
use crate::ssm_document::{SyncParameters, new_epoch};
use crate::sync::codebase::fingerprint;
use crate::sync::state::{Fingerprint, FleetItem, Op, Refusal, start_refusal};
use crate::sync::store::FleetStore;

impl<S: FleetStore> SyncContext<'_, S> {
    /// The sweep (see the module docs).
    pub async fn sweep(&self) -> Result<SweepReport, SyncError> {
        let settled = self.settle(Trigger::Sweep).await?;
        let mut report = SweepReport { settled, started: None, fingerprint_changed: false, catch_ups: Vec::new() };
        let item = self.store.load().await?;
        let compare_with = match &item {
            // Never any demand: the first sweep syncs an existing codebase.
            None => Some(None),
            Some(item) => match start_refusal(item) {
                Ok(()) => {
                    report.started = Some(self.start("sweep: demand without a wave").await?);
                    None
                }
                Err(Refusal::CaughtUp) => Some(item.fingerprint_synced),
                // A held generation waits for new demand: a changed codebase is.
                Err(Refusal::Held { .. }) => Some(item.fingerprint_failed.or(item.fingerprint_synced)),
                Err(_) => None,
            },
        };
        if let Some(reference) = compare_with {
            self.sweep_fingerprint(&mut report, reference).await?;
        }
        if let Some(item) = self.store.load().await? {
            report.catch_ups = self.catch_up(&item).await?;
        }
        Ok(report)
    }

    async fn sweep_fingerprint(
        &self,
        report: &mut SweepReport,
        reference: Option<Fingerprint>,
    ) -> Result<(), SyncError> {
        let s = self.settings;
        let now = fingerprint(&self.clients.s3, &s.codebase, &s.excludes).await?;
        let changed = match reference {
            Some(fp) => fp != now,
            None => now.count > 0,
        };
        if !changed {
            return Ok(());
        }
        info!(?reference, current = ?now, "codebase changed without a sync (a lost event): recording demand");
        report.fingerprint_changed = true;
        if s.dry_run {
            report.started = Some(StartOutcome::DryRun { refusal: None, instances: self.eligible().await?.instances });
            return Ok(());
        }
        self.store.apply(&Op::Demand { count: 1, epoch: new_epoch() }).await?;
        report.started = Some(self.start("sweep: codebase changed").await?);
        Ok(())
    }

    /// Catch-ups of the instances behind the fleet, and recoveries of the
    /// quarantined ones: first the catch-ups in flight (their outcome
    /// recorded), then new ones, never to an instance the running wave is
    /// still sending to, at most [`MAX_CATCH_UPS_PER_SWEEP`] per run.
    async fn catch_up(&self, item: &FleetItem) -> Result<Vec<CatchUpReport>, SyncError> {
        if self.settings.dry_run {
            return Ok(Vec::new());
        }
        let eligible = self.eligible().await?;
        let now = self.clock.now_ms();
        let in_wave: BTreeSet<String> = match &item.wave {
            Some(w) => self.store.wave(&w.id).await?.map(|r| r.instances.into_iter().collect()).unwrap_or_default(),
            None => BTreeSet::new(),
        };
        let mut out = Vec::new();
        let mut due: Vec<(&InstanceRecord, bool)> = Vec::new();
        for (id, r) in &eligible.records {
            let quarantined = r.quarantined();
            if let Some(command) = &r.recovery_command {
                out.push(self.catch_up_ended(r, command, quarantined, now).await?);
                continue;
            }
            let online = eligible.instances.contains(id) || eligible.quarantined.contains(id);
            if !online || in_wave.contains(id) {
                continue;
            }
            if quarantined {
                if r.recovery_sent_at.is_none_or(|t| now >= t + RECOVERY_SPACING_MS) {
                    due.push((r, true));
                }
            } else if r.behind(&item.epoch, item.completed_gen) && item.completed_gen > 0 {
                due.push((r, false));
            }
        }
        if due.is_empty() {
            return Ok(out);
        }
        let s = self.settings;
        let document = resolve(&self.clients.ssm, &s.document, None).await?;
        let parameters = SyncParameters::new(&s.codebase, &s.destination, &item.epoch, item.requested_gen, &s.region)
            .to_ssm(Some(&document))?;
        for (r, recovery) in due.into_iter().take(MAX_CATCH_UPS_PER_SWEEP) {
            if self.clock.now_ms() > self.until {
                break;
            }
            let id = &r.instance_id;
            let generation = item.requested_gen;
            let report = |action: &str, command_id| CatchUpReport {
                instance_id: id.clone(),
                action: action.to_owned(),
                generation,
                command_id,
                recovery,
            };
            match send_catch_up(&self.clients.ssm, &document, parameters.clone(), id, generation).await? {
                Some(command) => {
                    self.store.set_recovery(id, Some(command.clone()), generation, now).await?;
                    info!(instance_id = %id, generation, recovery, "catch-up sent to an instance behind the fleet");
                    out.push(report("sent", Some(command)));
                }
                None => out.push(report("not online", None)),
            }
        }
        Ok(out)
    }

    /// A command status event that is not the running wave's: the outcome
    /// of a sweep's catch-up, recorded at once (the next sweep would too).
    pub async fn catch_up_event(
        &self,
        command_id: &str,
        instance_ids: &[String],
    ) -> Result<Vec<CatchUpReport>, SyncError> {
        let mut out = Vec::new();
        let now = self.clock.now_ms();
        for r in self.store.instances(instance_ids).await? {
            if r.recovery_command.as_deref() == Some(command_id) {
                let recovery = r.quarantined();
                out.push(self.catch_up_ended(&r, command_id, recovery, now).await?);
            }
        }
        Ok(out)
    }

    /// A catch-up in flight: still running, or its outcome recorded.
    async fn catch_up_ended(
        &self,
        r: &InstanceRecord,
        command: &str,
        recovery: bool,
        now: u64,
    ) -> Result<CatchUpReport, SyncError> {
        let id = &r.instance_id;
        let (status, details) = invocation_status(&self.clients.ssm, command, id).await?;
        let report = |action: &str| CatchUpReport {
            instance_id: id.clone(),
            action: action.to_owned(),
            generation: r.recovery_gen,
            command_id: Some(command.to_owned()),
            recovery,
        };
        if !status.is_terminal() {
            return Ok(report("running"));
        }
        let result = instance_result(&status, &details);
        let epoch = self.store.load().await?.map(|i| i.epoch).unwrap_or_default();
        let at = Synced { epoch: &epoch, generation: r.recovery_gen };
        self.store.record_results(at, &[(id.clone(), result)], now, self.settings.quarantine_after).await?;
        self.store.set_recovery(id, None, r.recovery_gen, r.recovery_sent_at.unwrap_or(now)).await?;
        let action = match result {
            InstanceResult::Synced => "synced",
            InstanceResult::Failed => "failed",
            _ => "unreachable",
        };
        if result == InstanceResult::Failed {
            warn!(instance_id = %id, recovery, "catch-up failed");
        } else {
            info!(instance_id = %id, action, recovery, "catch-up ended");
        }
        Ok(report(action))
    }
}
