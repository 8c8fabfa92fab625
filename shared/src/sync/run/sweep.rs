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
    COMMENT_LOOKBACK_MS, CatchUpReport, MAX_CATCH_UPS_PER_SWEEP, RECOVERY_SPACING_MS, StartOutcome, StartWhen,
    SweepReport, SyncContext, SyncError, Trigger,
};
use crate::ssm_document::history::{Claim, InstanceRecord, InstanceResult, PENDING, Synced, instance_result};
use crate::ssm_document::run::{
    DEFAULT_EXECUTION_TIMEOUT_S, DELIVERY_TIMEOUT_S, LISTING_LAG_MS, Sent, find_command, invocation_status, resolve,
    send_catch_up,
};
use crate::ssm_document::{SyncParameters, new_epoch};
use crate::store::StoreError;
use crate::sync::state::{CatchUpPlan, ChangeTimes, Fingerprint, FleetItem, Op, Refusal, start_refusal};
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
                    let due = StartWhen::Quiet { due: None };
                    report.started = Some(self.start("sweep: demand without a wave", due).await?);
                    None
                }
                Err(Refusal::CaughtUp) => Some(item.fingerprint_synced),
                // A held generation waits for new demand: a changed codebase
                // is. A refused release without its wave's fingerprint (the
                // listing timed out) waits for an event: compared with the
                // last synced one it would be sent, and refused, every sweep.
                Err(Refusal::Held { .. }) if item.refusal_held() => item.fingerprint_failed.map(Some),
                Err(Refusal::Held { .. }) => Some(item.fingerprint_failed.or(item.fingerprint_synced)),
                // Pinned: said at every sweep, so a forgotten pin shows in the logs.
                Err(Refusal::Pinned { release, since }) => {
                    let pinned_s = self.clock.now_ms().saturating_sub(since) / 1000;
                    let behind = item.requested_gen.saturating_sub(item.fleet_gen());
                    warn!(release, pinned_s, behind, "the fleet is pinned by a rollback: no wave runs until resume");
                    None
                }
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
        let now = self.fingerprint().await?;
        let changed = match reference {
            // In marker mode a missing marker releases nothing.
            _ if s.release.marker.is_some() && now.count == 0 => false,
            Some(fp) => !fp.same_codebase(&now),
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
        // Stamped now, when it is seen: a deletion leaves no newer
        // `LastModified`, and an upload may still be going on.
        let at = self.clock.now_ms();
        let changes = Some(ChangeTimes::at(at));
        self.store.apply(&Op::Demand { count: 1, epoch: new_epoch(), changes, allow_shrink: false }).await?;
        report.started = Some(self.start("sweep: codebase changed", StartWhen::Quiet { due: None }).await?);
        Ok(())
    }

    /// Catch-ups of the instances behind the fleet, and recoveries of the
    /// quarantined ones: first the catch-ups in flight (their outcome
    /// recorded), then new ones, never to an instance a wave is sending to,
    /// at most [`MAX_CATCH_UPS_PER_SWEEP`] per run and never more in flight
    /// than the waves' `MaxConcurrency` allows.
    ///
    /// A catch-up and a wave must never run at once on one instance. Each
    /// new catch-up is first claimed in the instance's record (a [`Claim`],
    /// conditional on none in flight), then the lease is read again: a wave
    /// that started before the claim is seen here (the instance is left to
    /// it), one that starts after sees the claim (and leaves the instance
    /// out). A claim holds until its claimer's deadline plus the listing's
    /// lag; after that a sweep resolves it by the catch-up's comment (which
    /// carries the claim's nonce): the command found is adopted, or the claim
    /// dropped. Every change to a claim or a recorded catch-up is
    /// conditional on the value read, so two invocations never both record
    /// one outcome or overwrite each other's.
    async fn catch_up(&self, item: &FleetItem) -> Result<Vec<CatchUpReport>, SyncError> {
        if self.settings.dry_run {
            return Ok(Vec::new());
        }
        let eligible = self.eligible().await?;
        let now = self.clock.now_ms();
        let in_wave = self.wave_instances(item).await?;
        // The instances refused what the prefix holds now, or a rollback
        // pinned a release that cannot be materialized: a catch-up would put
        // the prefix live. New demand (a fix, allow_shrink) or a resume ends it.
        let plan = item.catch_up_plan();
        let held = matches!(plan, CatchUpPlan::Hold(_));
        if let CatchUpPlan::Hold(why) = &plan {
            warn!(why, "no catch-up is sent");
        }
        let fleet_gen = item.fleet_gen();
        let mut out = Vec::new();
        let mut in_flight = 0;
        let mut due: Vec<(InstanceRecord, bool)> = Vec::new();
        for (id, r) in &eligible.records {
            let quarantined = r.quarantined();
            if let Some(command) = &r.recovery_command {
                // One instance's trouble never stops the others' catch-ups.
                let (report, freed) = match self.catch_up_in_flight(r, command, quarantined, now).await {
                    Ok(done) => done,
                    Err(e) => {
                        warn!(instance_id = %id, command, error = %e, "could not follow a catch-up: the next sweep retries");
                        in_flight += 1;
                        continue;
                    }
                };
                in_flight += usize::from(matches!(report.action.as_str(), "running" | "being sent"));
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
            let free = InstanceRecord { recovery_command: None, ..r.clone() };
            if held {
                continue;
            }
            if quarantined {
                if r.recovery_sent_at.is_none_or(|t| now >= t + RECOVERY_SPACING_MS) {
                    due.push((free, true));
                }
            } else if r.behind(&item.epoch, fleet_gen) && fleet_gen > 0 {
                due.push((free, false));
            }
        }
        let room = concurrency_limit(&self.settings.rate.max_concurrency, eligible.records.len())
            .saturating_sub(in_flight)
            .min(MAX_CATCH_UPS_PER_SWEEP);
        if due.len() > room {
            info!(
                due = due.len(),
                in_flight, room, "catch-ups held back by the rate controls: the next sweeps send them"
            );
        }
        due.truncate(room);
        if due.is_empty() {
            return Ok(out);
        }
        let s = self.settings;
        let document = resolve(&self.clients.ssm, &s.document, None).await?;
        // Exact releases: a catch-up of an instance behind the fleet
        // materializes the release the fleet serves, as its generation, when
        // its manifest can still be materialized (a versioned bucket). A
        // recovery (its record may name a higher generation that failed), an
        // unversioned bucket, or a document without the parameter: the
        // prefix as it is, as the generation requested. While pinned, the
        // pinned release only (a recovery too), switched to with no download
        // by an instance that holds it.
        let exact_possible = s.manifest.is_some() && document.declared.contains("manifest");
        let (exact, pinned) = match plan.usable(exact_possible) {
            CatchUpPlan::Exact { release, pinned } => {
                (s.manifest.as_ref().map(|m| (m.reference(&release), release.generation)), pinned)
            }
            CatchUpPlan::Prefix => (None, false),
            CatchUpPlan::Hold(why) => {
                warn!(why, "no catch-up is sent");
                return Ok(out);
            }
        };
        let plan = |recovery: bool| match &exact {
            Some((m, generation)) if !recovery || pinned => (*generation, Some(m.clone())),
            _ => (item.requested_gen, None),
        };
        let claim = Claim::new(now, self.deadline.saturating_add(LISTING_LAG_MS));
        let token = claim.encode();
        let mut claimed = Vec::new();
        for (r, recovery) in due {
            if self.store.claim_catch_up(&r.instance_id, &token, plan(recovery).0).await? {
                claimed.push((r, recovery));
            }
        }
        // Claimed, now look: a wave that won the lease before the claims.
        let current = self.store.load().await?.unwrap_or_default();
        let in_wave = self.wave_instances(&current).await?;
        // (No release id: without a manifest a catch-up syncs the prefix as
        // it is, perhaps half-way through a deploy whose marker is not
        // written yet.)
        let parameters = |recovery: bool| {
            let (generation, manifest) = plan(recovery);
            let p = SyncParameters::new(
                &s.codebase,
                &s.destination,
                &item.epoch,
                generation,
                &s.region,
                crate::ssm_document::CATCH_UP_MAX_SHRINK,
            );
            let rollback = pinned && manifest.is_some();
            SyncParameters { manifest, rollback, ..self.retention(p, item) }.to_ssm(Some(&document))
        };
        let prepared = parameters(false).and_then(|exact| Ok((exact, parameters(true)?)));
        let (exact_parameters, plain_parameters) = match prepared {
            Ok(p) => p,
            Err(e) => {
                for (r, _) in &claimed {
                    self.drop_claim(r, &token).await;
                }
                return Err(e.into());
            }
        };
        let mut claimed = claimed.into_iter();
        for (r, recovery) in claimed.by_ref() {
            let id = &r.instance_id;
            let generation = plan(recovery).0;
            let parameters = if recovery { &plain_parameters } else { &exact_parameters };
            let report = |action: &str, command_id| CatchUpReport {
                instance_id: id.clone(),
                action: action.to_owned(),
                generation,
                command_id,
                recovery,
            };
            if in_wave.as_ref().is_none_or(|w| w.contains(id)) {
                self.drop_claim(&r, &token).await;
                out.push(report("left to the wave", None));
                continue;
            }
            if self.clock.now_ms() > self.until {
                self.drop_claim(&r, &token).await;
                break;
            }
            let comment = claim.comment(id, generation);
            match send_catch_up(&self.clients.ssm, &document, parameters.clone(), id, comment, self.clock).await {
                Ok(Sent::Command(command)) => {
                    if !self.store.replace_recovery(id, &token, Some(command.clone()), generation, now).await? {
                        warn!(instance_id = %id, command_id = %command, "a catch-up sent under a claim someone else changed");
                    }
                    info!(instance_id = %id, generation, recovery, "catch-up sent to an instance behind the fleet");
                    out.push(report("sent", Some(command)));
                }
                Ok(Sent::InDoubt) => {
                    // The claim stays: once it ends, a sweep finds the
                    // command by its comment, or drops the claim.
                    out.push(report("in doubt", None));
                }
                Ok(Sent::Refused) => {
                    self.drop_claim(&r, &token).await;
                    out.push(report("not online", None));
                }
                Err(e) => {
                    // Refused by SSM (nothing sent): every claim not sent goes.
                    self.drop_claim(&r, &token).await;
                    for (rest, _) in claimed.by_ref() {
                        self.drop_claim(&rest, &token).await;
                    }
                    return Err(e.into());
                }
            }
        }
        for (rest, _) in claimed {
            self.drop_claim(&rest, &token).await;
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

    /// Drops our claim `token` that was not sent (best effort: a claim left
    /// behind is resolved by a later sweep).
    async fn drop_claim(&self, r: &InstanceRecord, token: &str) {
        if let Err(e) = self.release_claim(r, token).await {
            warn!(instance_id = %r.instance_id, error = %e, "could not drop a catch-up claim: a later sweep resolves it");
        }
    }

    /// Removes `claim` from the instance's record if it is still there,
    /// leaving the last catch-up's time as it was; `true` when removed.
    async fn release_claim(&self, r: &InstanceRecord, claim: &str) -> Result<bool, StoreError> {
        let sent_at = r.recovery_sent_at.unwrap_or(0);
        self.store.replace_recovery(&r.instance_id, claim, None, r.recovery_gen, sent_at).await
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
        let id = &r.instance_id;
        let claim = match Claim::parse(command) {
            Some(claim) => claim,
            None if command.starts_with(PENDING) => {
                // A claim this version cannot read (written by an older one):
                // its claimer is long gone, and it must not hold the instance.
                warn!(instance_id = %id, command, "an unreadable catch-up claim: dropped");
                return self.drop_dead_claim(r, command, recovery).await;
            }
            None => return Ok((self.catch_up_ended(r, command, recovery, now).await?, false)),
        };
        let report = |action: &str| CatchUpReport {
            instance_id: id.clone(),
            action: action.to_owned(),
            generation: r.recovery_gen,
            command_id: None,
            recovery,
        };
        if now < claim.until {
            // Its claimer may still be sending it.
            return Ok((report("being sent"), false));
        }
        // Past the claim, whatever its claimer sent is listed.
        let comment = claim.comment(id, r.recovery_gen);
        let only = std::slice::from_ref(id);
        if let Some(found) =
            find_command(&self.clients.ssm, &self.settings.document, &comment, Some(only), claim.made).await?
        {
            info!(instance_id = %id, command_id = %found, "a catch-up sent but never recorded: adopted");
            if !self.store.replace_recovery(id, command, Some(found.clone()), r.recovery_gen, claim.made).await? {
                return Ok((report("recorded elsewhere"), false));
            }
            let adopted = InstanceRecord {
                recovery_command: Some(found.clone()),
                recovery_sent_at: Some(claim.made),
                ..r.clone()
            };
            return Ok((self.catch_up_ended(&adopted, &found, recovery, now).await?, false));
        }
        warn!(instance_id = %id, "a catch-up claim whose sender died before sending: dropped");
        self.drop_dead_claim(r, command, recovery).await
    }

    /// Drops a claim nobody will send; `true` when the instance is free now.
    async fn drop_dead_claim(
        &self,
        r: &InstanceRecord,
        claim: &str,
        recovery: bool,
    ) -> Result<(CatchUpReport, bool), SyncError> {
        let dropped = self.release_claim(r, claim).await?;
        let report = CatchUpReport {
            instance_id: r.instance_id.clone(),
            action: "claim dropped".into(),
            generation: r.recovery_gen,
            command_id: None,
            recovery,
        };
        Ok((report, dropped))
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

    /// A catch-up in flight: still running, or its outcome recorded (by the
    /// one invocation that clears it first).
    async fn catch_up_ended(
        &self,
        r: &InstanceRecord,
        command: &str,
        recovery: bool,
        now: u64,
    ) -> Result<CatchUpReport, SyncError> {
        let id = &r.instance_id;
        let (status, details, refused) = invocation_status(&self.clients.ssm, command, id).await?;
        let report = |action: &str| CatchUpReport {
            instance_id: id.clone(),
            action: action.to_owned(),
            generation: r.recovery_gen,
            command_id: Some(command.to_owned()),
            recovery,
        };
        let sent_at = r.recovery_sent_at.unwrap_or(now);
        // Past its delivery and execution timeouts an invocation SSM still
        // does not know (history purged, a wrong id) never reached the agent.
        let lifetime_ms = (u64::try_from(DELIVERY_TIMEOUT_S).unwrap_or(3600) + DEFAULT_EXECUTION_TIMEOUT_S) * 1000;
        let stale = now > sent_at + lifetime_ms + COMMENT_LOOKBACK_MS;
        let result = match (status.is_terminal(), stale) {
            (true, _) if refused.is_some() => InstanceResult::Refused,
            (true, _) => instance_result(&status, &details),
            (false, true) => InstanceResult::Unreachable,
            (false, false) => return Ok(report("running")),
        };
        if !self.store.replace_recovery(id, command, None, r.recovery_gen, sent_at).await? {
            return Ok(report("recorded elsewhere"));
        }
        let epoch = self.store.load().await?.map(|i| i.epoch).unwrap_or_default();
        let at = Synced { epoch: &epoch, generation: r.recovery_gen };
        self.store.record_results(at, &[(id.clone(), result)], now, self.settings.quarantine_after).await?;
        let action = match result {
            InstanceResult::Synced => "synced",
            InstanceResult::Failed => "failed",
            InstanceResult::Refused => "refused",
            _ => "unreachable",
        };
        if let Some(why) = &refused {
            warn!(instance_id = %id, recovery, why, "catch-up refused by the instance's shrink guard: current kept");
        } else if result == InstanceResult::Failed {
            warn!(instance_id = %id, recovery, "catch-up failed");
        } else {
            info!(instance_id = %id, action, recovery, "catch-up ended");
        }
        Ok(report(action))
    }
}

/// How many catch-ups may run at once: the waves' `MaxConcurrency` (`50`,
/// or `10%` of the `fleet` in service, at least one).
fn concurrency_limit(max_concurrency: &str, fleet: usize) -> usize {
    match max_concurrency.strip_suffix('%') {
        Some(percent) => (percent.parse::<usize>().unwrap_or(100) * fleet).div_ceil(100).max(1),
        None => max_concurrency.parse().unwrap_or(1).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::concurrency_limit;

    #[test]
    fn catch_ups_share_the_waves_concurrency() {
        assert_eq!(concurrency_limit("50", 1_000), 50);
        assert_eq!(concurrency_limit("10%", 1_000), 100);
        assert_eq!(concurrency_limit("10%", 3), 1, "at least one");
        assert_eq!(concurrency_limit("33%", 10), 4, "rounded up");
        assert_eq!(concurrency_limit("0", 10), 1);
    }
}
