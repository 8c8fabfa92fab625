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

use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};

use super::{
    COMMENT_LOOKBACK_MS, CatchUpReport, MAX_CATCH_UPS_PER_SWEEP, RECOVERY_SPACING_MS, StartOutcome, SweepReport,
    SyncContext, SyncError, Trigger,
};
use crate::error::AwsError;
use crate::ssm_document::history::{InstanceRecord, InstanceResult, PENDING, Synced, instance_result, pending_since};
use crate::ssm_document::run::{invocation_status, invoked_after, resolve, send_catch_up};
use crate::ssm_document::{SyncParameters, catch_up_comment, new_epoch};
use crate::sync::codebase::fingerprint;
use crate::sync::state::{Fingerprint, FleetItem, Op, Refusal, start_refusal};
use crate::sync::store::FleetStore;

/// How long a catch-up claim may stay unsent before a sweep drops it: far
/// longer than sending one command takes (bounded attempts), shorter than
/// the sweep interval.
const CLAIM_GRACE_MS: u64 = 2 * 60 * 1000;

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
    /// recorded), then new ones, never to an instance a wave is sending to,
    /// at most [`MAX_CATCH_UPS_PER_SWEEP`] per run.
    ///
    /// A catch-up and a wave must never run at once on one instance. Each
    /// new catch-up is first claimed in the instance's record (a
    /// [`PENDING`] marker, conditional on none in flight), then the lease is
    /// read again: a wave that started before the claim is seen here (the
    /// instance is left to it), one that starts after sees the claim (and
    /// leaves the instance out). A claim whose sender died is resolved by the
    /// next sweep: the command found by its comment is adopted, or the claim
    /// is dropped.
    async fn catch_up(&self, item: &FleetItem) -> Result<Vec<CatchUpReport>, SyncError> {
        if self.settings.dry_run {
            return Ok(Vec::new());
        }
        let eligible = self.eligible().await?;
        let now = self.clock.now_ms();
        let in_wave = self.wave_instances(item).await?;
        let mut out = Vec::new();
        let mut due: Vec<(InstanceRecord, bool)> = Vec::new();
        for (id, r) in &eligible.records {
            let quarantined = r.quarantined();
            if let Some(command) = &r.recovery_command {
                let (report, freed) = self.catch_up_in_flight(r, command, quarantined, now).await?;
                out.push(report);
                if !freed {
                    continue;
                }
            }
            // (A busy instance is online too: its claim was just dropped.)
            let online =
                eligible.instances.contains(id) || eligible.quarantined.contains(id) || eligible.busy.contains(id);
            if !online || in_wave.as_ref().is_none_or(|w| w.contains(id)) {
                continue;
            }
            if quarantined {
                if r.recovery_sent_at.is_none_or(|t| now >= t + RECOVERY_SPACING_MS) {
                    due.push((InstanceRecord { recovery_command: None, ..r.clone() }, true));
                }
            } else if r.behind(&item.epoch, item.completed_gen) && item.completed_gen > 0 {
                due.push((InstanceRecord { recovery_command: None, ..r.clone() }, false));
            }
        }
        if due.is_empty() {
            return Ok(out);
        }
        let generation = item.requested_gen;
        let claim = format!("{PENDING}{now}");
        let mut claimed = Vec::new();
        for (r, recovery) in due.into_iter().take(MAX_CATCH_UPS_PER_SWEEP) {
            if self.store.claim_catch_up(&r.instance_id, &claim, generation, now).await? {
                claimed.push((r, recovery));
            }
        }
        // Claimed, now look: a wave that won the lease before the claims.
        let current = self.store.load().await?.unwrap_or_default();
        let in_wave = self.wave_instances(&current).await?;
        let s = self.settings;
        let prepared = async {
            let document = resolve(&self.clients.ssm, &s.document, None).await?;
            let parameters = SyncParameters::new(&s.codebase, &s.destination, &item.epoch, generation, &s.region)
                .to_ssm(Some(&document))?;
            Ok::<_, SyncError>((document, parameters))
        };
        let (document, parameters) = match prepared.await {
            Ok(p) => p,
            Err(e) => {
                for (r, _) in &claimed {
                    self.drop_claim(r).await;
                }
                return Err(e);
            }
        };
        let mut claimed = claimed.into_iter();
        for (r, recovery) in claimed.by_ref() {
            let id = &r.instance_id;
            let report = |action: &str, command_id| CatchUpReport {
                instance_id: id.clone(),
                action: action.to_owned(),
                generation,
                command_id,
                recovery,
            };
            if in_wave.as_ref().is_none_or(|w| w.contains(id)) {
                self.drop_claim(&r).await;
                out.push(report("left to the wave", None));
                continue;
            }
            if self.clock.now_ms() > self.until {
                self.drop_claim(&r).await;
                break;
            }
            match send_catch_up(&self.clients.ssm, &document, parameters.clone(), id, generation, self.clock).await {
                Ok(Some(command)) => {
                    self.store.set_recovery(id, Some(command.clone()), generation, now).await?;
                    info!(instance_id = %id, generation, recovery, "catch-up sent to an instance behind the fleet");
                    out.push(report("sent", Some(command)));
                }
                Ok(None) => {
                    self.drop_claim(&r).await;
                    out.push(report("not online", None));
                }
                Err(e) => {
                    // Perhaps sent (the lookup itself may have failed): this
                    // claim stays for the next sweep to resolve by comment.
                    for (rest, _) in claimed.by_ref() {
                        self.drop_claim(&rest).await;
                    }
                    return Err(e.into());
                }
            }
        }
        for (rest, _) in claimed {
            self.drop_claim(&rest).await;
        }
        Ok(out)
    }

    /// The instances the wave holding `item`'s lease goes to: empty with no
    /// wave; `None` when a wave holds it whose record is not written yet (it
    /// may go to any instance).
    async fn wave_instances(&self, item: &FleetItem) -> Result<Option<BTreeSet<String>>, SyncError> {
        Ok(match &item.wave {
            None => Some(BTreeSet::new()),
            Some(w) => self.store.wave(&w.id).await?.map(|r| r.instances.into_iter().collect()),
        })
    }

    /// Drops a claim that was not sent (best effort: a claim left behind is
    /// resolved by the next sweep).
    async fn drop_claim(&self, r: &InstanceRecord) {
        let id = &r.instance_id;
        if let Err(e) = self.store.set_recovery(id, None, r.recovery_gen, r.recovery_sent_at.unwrap_or(0)).await {
            warn!(instance_id = %id, error = %e, "could not drop a catch-up claim: the next sweep resolves it");
        }
    }

    /// A catch-up in flight, or a claim whose command was never recorded;
    /// `true` when the instance is free for a new catch-up now.
    async fn catch_up_in_flight(
        &self,
        r: &InstanceRecord,
        command: &str,
        recovery: bool,
        now: u64,
    ) -> Result<(CatchUpReport, bool), SyncError> {
        let Some(claimed_at) = pending_since(command) else {
            return Ok((self.catch_up_ended(r, command, recovery, now).await?, false));
        };
        let id = &r.instance_id;
        if let Some(found) = self.find_catch_up(id, r.recovery_gen, claimed_at).await? {
            info!(instance_id = %id, command_id = %found, "a catch-up sent but never recorded: adopted");
            self.store.set_recovery(id, Some(found.clone()), r.recovery_gen, claimed_at).await?;
            return Ok((self.catch_up_ended(r, &found, recovery, now).await?, false));
        }
        let report = |action: &str| CatchUpReport {
            instance_id: id.clone(),
            action: action.to_owned(),
            generation: r.recovery_gen,
            command_id: None,
            recovery,
        };
        if now < claimed_at + CLAIM_GRACE_MS {
            // Another invocation may be sending it right now.
            return Ok((report("being sent"), false));
        }
        warn!(instance_id = %id, "a catch-up claim whose sender died before sending: dropped");
        self.store.set_recovery(id, None, r.recovery_gen, r.recovery_sent_at.unwrap_or(0)).await?;
        Ok((report("claim dropped"), true))
    }

    /// The catch-up command sent to `id` for `generation` since `since`, by
    /// its comment.
    async fn find_catch_up(&self, id: &str, generation: u64, since: u64) -> Result<Option<String>, SyncError> {
        let comment = catch_up_comment(id, generation);
        let filter = |key: CommandFilterKey, value: &str| CommandFilter::builder().key(key).value(value).build();
        let mut pages = self
            .clients
            .ssm
            .list_commands()
            .instance_id(id)
            .filters(filter(CommandFilterKey::DocumentName, &self.settings.document)?)
            .filters(filter(CommandFilterKey::InvokedAfter, &invoked_after(since.saturating_sub(COMMENT_LOOKBACK_MS)))?)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListCommands", e))?;
            if let Some(c) = page.commands().iter().find(|c| c.comment() == Some(comment.as_str())) {
                return Ok(c.command_id().map(str::to_owned));
            }
        }
        Ok(None)
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
