//! The sweep: the scheduled, level-triggered backstop of the sync.

use tracing::info;

use super::{RECOVERY_SPACING_MS, Recovery, StartOutcome, SweepReport, SyncContext, SyncError};
use crate::ssm_document::SyncParameters;
use crate::ssm_document::history::InstanceResult;
use crate::ssm_document::run::{invocation_status, send_catch_up};
use crate::sync::codebase::fingerprint;
use crate::sync::state::{Fingerprint, Op, Refusal, start_refusal};
use crate::sync::store::FleetStore;

impl<S: FleetStore> SyncContext<'_, S> {
    /// The sweep: settle a running wave; start one for demand no wave
    /// covers; compare the codebase's fingerprint with the last synced one so
    /// a change whose event was lost still syncs.
    pub async fn sweep(&self) -> Result<SweepReport, SyncError> {
        let settled = self.settle().await?;
        let report = SweepReport { settled, started: None, fingerprint_changed: false, recoveries: Vec::new() };
        let item = self.store.load().await?;
        let mut report = match &item {
            // Never any demand: the first sweep syncs an existing codebase.
            None => self.sweep_fingerprint(report, None).await?,
            Some(item) => match start_refusal(item) {
                Ok(()) => SweepReport { started: Some(self.start("sweep: demand without a wave").await?), ..report },
                Err(Refusal::CaughtUp) => self.sweep_fingerprint(report, item.fingerprint_synced).await?,
                Err(_) => report,
            },
        };
        report.recoveries = self.recover().await?;
        Ok(report)
    }

    /// Offers each quarantined instance (in service, online) a catch-up, at
    /// most once per [`RECOVERY_SPACING_MS`]: a success lifts the quarantine
    /// and the instance rejoins the waves; a failure counts and waits.
    pub(super) async fn recover(&self) -> Result<Vec<Recovery>, SyncError> {
        if self.settings.dry_run {
            return Ok(Vec::new());
        }
        let quarantined = self.eligible().await?.quarantined;
        if quarantined.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.settings;
        let now = self.clock.now_ms();
        let requested = self.store.load().await?.map(|i| i.requested_gen).unwrap_or(0);
        let mut out = Vec::new();
        for r in self.store.instances(&quarantined).await? {
            let id = r.instance_id.clone();
            let recovery = |action: &str, generation, command_id: Option<String>| Recovery {
                instance_id: id.clone(),
                action: action.to_owned(),
                generation,
                command_id,
            };
            if let Some(command) = &r.recovery_command {
                let status = invocation_status(&self.clients.ssm, command, &id).await?;
                if !status.is_terminal() {
                    out.push(recovery("running", r.recovery_gen, Some(command.clone())));
                    continue;
                }
                let result = if status.is_success() { InstanceResult::Synced } else { InstanceResult::Failed };
                self.store.record_results(r.recovery_gen, &[(id.clone(), result)], now, s.quarantine_after).await?;
                self.store.set_recovery(&id, None, r.recovery_gen, r.recovery_sent_at.unwrap_or(now)).await?;
                let action = if status.is_success() { "recovered" } else { "still failing" };
                info!(instance_id = %id, action, "quarantine recovery catch-up ended");
                out.push(recovery(action, r.recovery_gen, Some(command.clone())));
            } else if r.recovery_sent_at.is_none_or(|t| now >= t + RECOVERY_SPACING_MS) {
                let parameters = SyncParameters::new(&s.codebase, &s.destination, requested, &s.region).to_ssm()?;
                match send_catch_up(&self.clients.ssm, &s.document, parameters, &id, requested).await? {
                    Some(command) => {
                        self.store.set_recovery(&id, Some(command.clone()), requested, now).await?;
                        info!(instance_id = %id, generation = requested, "quarantine recovery catch-up sent");
                        out.push(recovery("sent", requested, Some(command)));
                    }
                    None => out.push(recovery("not online", requested, None)),
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn sweep_fingerprint(
        &self,
        mut report: SweepReport,
        synced: Option<Fingerprint>,
    ) -> Result<SweepReport, SyncError> {
        let s = self.settings;
        let now = fingerprint(&self.clients.s3, &s.codebase, &s.excludes).await?;
        let changed = match synced {
            Some(fp) => fp != now,
            None => now.count > 0,
        };
        if !changed {
            return Ok(report);
        }
        info!(?synced, current = ?now, "codebase changed without a sync (a lost event): recording demand");
        report.fingerprint_changed = true;
        if s.dry_run {
            report.started = Some(StartOutcome::DryRun { refusal: None, instances: self.eligible().await?.instances });
            return Ok(report);
        }
        self.store.apply(&Op::Demand { count: 1 }).await?;
        report.started = Some(self.start("sweep: codebase changed").await?);
        Ok(report)
    }
}
