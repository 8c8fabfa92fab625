//! The scheduled reconcile: the level-triggered backstop of the gate.
//!
//! 1. Instances waiting on one of fleetkeeper's hooks (group members and
//!    warm-pool instances, which AWS lists only through `DescribeWarmPool`)
//!    are driven by instance id. Each is probed first (a heartbeat by
//!    instance id on the hook): an instance held only by another hook, or by
//!    an action fleetkeeper already finished, costs one call and is left
//!    alone.
//! 2. `InService` members missing from a managed target group that is not
//!    attached to their group are registered, after a fresh read of their
//!    state (a `draining` target is being removed: it is not missing).
//! 3. Targets fleetkeeper registered (its instance record says so; target
//!    groups may be shared) are deregistered only on positive evidence that
//!    the instance left: a fresh read shows it in no group at all, or out of
//!    service in a managed one (Standby, terminating, detaching, back in the
//!    pool). A member of a group fleetkeeper does not manage (any more) is
//!    left registered. Nothing is deregistered while a configured group is
//!    missing (a typo or a rename must not empty a healthy fleet), and per
//!    run at most a quarter of a target group's targets (at least one) and
//!    [`MAX_DEREGISTRATIONS`] in all.
//!
//! One failing instance never stops the others: its error is reported and
//! the run goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_autoscaling::types::AutoScalingGroup;
use serde::Serialize;
use tracing::{error, info, warn};

use super::action::{destination_in, origin_in, out_of_service};
use super::gate::{Driven, Gate, GateError};
use super::plan::Health;
use super::store::RecordStore;
use super::targets::health_of;
use crate::error::AwsError;
use crate::events::{LifecycleAction, Transition};

/// Deregistrations of departed instances per run, at most: a mistake (or a
/// view of AWS that is wrong) removes a few targets, not a fleet.
pub const MAX_DEREGISTRATIONS: usize = 20;

/// One instance the run could not handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceError {
    /// The instance.
    pub instance_id: String,
    /// What was being done.
    pub step: &'static str,
    /// The error.
    pub error: String,
    /// Whether a later run may succeed.
    pub retryable: bool,
}

/// What the reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Actions driven (instances waiting on fleetkeeper's hooks).
    pub driven: Vec<Driven>,
    /// `(instance, target group)` registrations repaired.
    pub registered: Vec<(String, String)>,
    /// `(instance, target group)` deregistrations of departed instances.
    pub deregistered: Vec<(String, String)>,
    /// Managed groups that do not exist.
    pub missing_groups: Vec<String>,
    /// Why deregistrations were held back, when they were.
    pub held_back: Option<String>,
    /// Instances that failed (the others were handled).
    pub errors: Vec<InstanceError>,
    /// Work left for the next run (out of time).
    pub truncated: bool,
    /// Our hooks whose heartbeat timeout is not above twice the reconcile
    /// interval (`group/hook: timeout s`): a lost event can let them time out.
    pub short_heartbeats: Vec<String>,
    /// Groups with two of fleetkeeper's hooks on one transition (`group:
    /// hook, hook`): each instance would be gated twice. Remove one.
    pub duplicate_hooks: Vec<String>,
}

impl ReconcileReport {
    fn failed(&mut self, instance_id: &str, step: &'static str, e: &GateError) {
        error!(instance_id, step, error = %e, "reconcile: this instance failed; the others go on");
        self.errors.push(InstanceError {
            instance_id: instance_id.to_owned(),
            step,
            error: e.to_string(),
            retryable: e.is_retryable(),
        });
    }
}

/// fleetkeeper's hooks on one group, as the reconcile warns of them and
/// `fleetkeeper doctor` fails on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookAudit {
    /// Ours (named in `FLEET_LIFECYCLE_HOOK_NAMES`), with their transition.
    pub ours: Vec<(String, Transition)>,
    /// Ours whose `HeartbeatTimeout` (seconds) is not above twice the
    /// reconcile interval: an action whose event was lost may time out first.
    pub short_heartbeats: Vec<(String, i32)>,
    /// A transition with two of ours: each instance would be gated twice.
    pub duplicates: Vec<(Transition, Vec<String>)>,
}

/// Audits a group's `hooks` against fleetkeeper's hook `names` and the
/// reconcile interval.
pub fn audit_hooks(
    hooks: &[aws_sdk_autoscaling::types::LifecycleHook],
    names: &[String],
    reconcile_interval_s: u64,
) -> HookAudit {
    let mut audit = HookAudit::default();
    let floor = 2 * reconcile_interval_s;
    for h in hooks {
        let (Some(hook), Some(transition)) =
            (h.lifecycle_hook_name(), h.lifecycle_transition().and_then(Transition::parse))
        else {
            continue;
        };
        if !names.iter().any(|n| n == hook) {
            continue;
        }
        audit.ours.push((hook.to_owned(), transition));
        // AWS's default when none was set: 3600 s.
        let timeout = h.heartbeat_timeout().unwrap_or(3600);
        if u64::try_from(timeout).unwrap_or(0) <= floor {
            audit.short_heartbeats.push((hook.to_owned(), timeout));
        }
    }
    for transition in [Transition::Launching, Transition::Terminating] {
        let same: Vec<String> = audit.ours.iter().filter(|(_, t)| *t == transition).map(|(h, _)| h.clone()).collect();
        if same.len() > 1 {
            audit.duplicates.push((transition, same));
        }
    }
    audit
}

/// A member's state, read fresh: `(group, lifecycle state, health)`.
type Fresh = HashMap<String, (String, String, String)>;

impl<S: RecordStore> Gate<'_, S> {
    /// Runs the reconcile.
    pub async fn reconcile(&self) -> Result<ReconcileReport, GateError> {
        let mut report = ReconcileReport::default();
        let managed = crate::groups::managed_groups(self.clients, &self.settings.asg_names).await?;
        report.missing_groups.clone_from(&managed.missing);
        for name in &managed.missing {
            warn!(group = %name, "a configured Auto Scaling group does not exist: nothing is deregistered until it does (or the configuration drops it)");
        }
        let groups = managed.found;
        if let Ok(mut c) = self.cache.attached.lock() {
            for g in &groups {
                c.insert(
                    g.auto_scaling_group_name().unwrap_or_default().to_owned(),
                    crate::groups::attached_target_groups(g),
                );
            }
        }

        // 1. Drive every instance waiting on one of our hooks (one group's
        //    failure is reported; the others go on).
        for g in &groups {
            match self.drive_waiting(g, &mut report).await {
                Ok(true) => return Ok(report),
                Ok(false) => {}
                Err(e) => report.failed(g.auto_scaling_group_name().unwrap_or_default(), "group", &e),
            }
        }
        if self.settings.dry_run {
            return Ok(report);
        }

        // Each managed target group's targets, described once per run.
        let mut targets: BTreeMap<String, BTreeMap<String, Health>> = BTreeMap::new();
        for tg in &self.settings.target_group_arns {
            targets.insert(tg.clone(), self.describe_targets(tg).await?);
        }

        // 2. Registrations of InService members, after a fresh read.
        let mut candidates: Vec<(String, String)> = Vec::new();
        for g in &groups {
            let attached = crate::groups::attached_target_groups(g);
            for tg in self.settings.target_group_arns.iter().filter(|t| !attached.contains(*t)) {
                let present = &targets[tg];
                for i in g.instances() {
                    let (Some(id), Some(state)) = (i.instance_id(), i.lifecycle_state()) else { continue };
                    if state.as_str() == "InService" && !present.contains_key(id) {
                        candidates.push((id.to_owned(), tg.clone()));
                    }
                }
            }
        }
        let ids: BTreeSet<String> = candidates.iter().map(|(id, _)| id.clone()).collect();
        let fresh = self.fresh_states(&ids).await?;
        for (id, tg) in candidates {
            let serving = fresh.get(&id).is_some_and(|(group, state, health)| {
                self.settings.asg_names.contains(group)
                    && state == "InService"
                    && health.eq_ignore_ascii_case("healthy")
            });
            if !serving {
                continue;
            }
            match self.repair_registration(&id, &tg).await {
                Ok(true) => report.registered.push((id, tg)),
                Ok(false) => {}
                Err(e) => report.failed(&id, "register", &e),
            }
        }

        // 3. Deregistrations, on positive evidence only.
        if !report.missing_groups.is_empty() {
            report.held_back = Some(format!(
                "configured groups missing ({}): nothing is deregistered while they are",
                report.missing_groups.join(", ")
            ));
            return Ok(report);
        }
        let serving: BTreeSet<String> = groups
            .iter()
            .flat_map(|g| g.instances())
            .filter(|i| i.lifecycle_state().is_some_and(|s| !out_of_service(s.as_str())))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect();
        let mut suspects: Vec<(String, String)> = Vec::new();
        for (tg, members) in &targets {
            for (id, health) in members {
                if *health != Health::Draining && !serving.contains(id) {
                    suspects.push((id.clone(), tg.clone()));
                }
            }
        }
        let ids: BTreeSet<String> = suspects.iter().map(|(id, _)| id.clone()).collect();
        let fresh = if ids.is_empty() { Fresh::new() } else { self.fresh_states(&ids).await? };
        // Positive evidence only: out of service in a managed group, or in no
        // group at all (detached, or terminated: then its item expires). An
        // instance of a group that is not managed (any more) is not
        // fleetkeeper's to take out.
        let orphans: BTreeSet<String> = ids.iter().filter(|id| !fresh.contains_key(*id)).cloned().collect();
        let gone = self.gone_from_ec2(&orphans).await?;
        let mut per_group: BTreeMap<String, usize> = BTreeMap::new();
        for (id, tg) in suspects {
            let left = match fresh.get(&id) {
                None => true,
                Some((group, state, _)) => self.settings.asg_names.contains(group) && out_of_service(state),
            };
            if !left {
                if let Some((group, _, _)) = fresh.get(&id).filter(|(g, _, _)| !self.settings.asg_names.contains(g)) {
                    info!(instance_id = %id, group = %group, target_group = %tg,
                        "registered by fleetkeeper, now in a group it does not manage: left registered");
                }
                continue;
            }
            // At most a quarter of a target group's targets (at least one),
            // and MAX_DEREGISTRATIONS in all, per run.
            let present = targets.get(&tg).map_or(0, BTreeMap::len);
            let done = per_group.entry(tg.clone()).or_default();
            if report.deregistered.len() >= MAX_DEREGISTRATIONS || *done >= (present / 4).max(1) {
                report.held_back = Some(format!(
                    "at most a quarter of a target group's targets (at least one) and {MAX_DEREGISTRATIONS} in all \
                     are deregistered per run: the next run continues"
                ));
                continue;
            }
            let waiting = fresh.get(&id).is_some_and(|(_, state, _)| state.ends_with(":Wait"));
            match self.remove_departed(&id, &tg, gone.contains(&id), waiting).await {
                Ok(true) => {
                    *done += 1;
                    report.deregistered.push((id, tg));
                }
                Ok(false) => {}
                Err(e) => report.failed(&id, "deregister", &e),
            }
        }
        Ok(report)
    }

    /// Drives the instances of `g` (and of its warm pool) that wait on our
    /// hooks; `true` when the run is out of time.
    async fn drive_waiting(&self, g: &AutoScalingGroup, report: &mut ReconcileReport) -> Result<bool, GateError> {
        let name = g.auto_scaling_group_name().unwrap_or_default();
        let hooks = self
            .clients
            .autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(name)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeLifecycleHooks", e))?;
        let audit = audit_hooks(hooks.lifecycle_hooks(), &self.settings.hook_names, self.settings.reconcile_interval_s);
        for h in hooks.lifecycle_hooks() {
            // The drives below need these settings: no second describe.
            if let Some(hook) = h.lifecycle_hook_name().filter(|n| audit.ours.iter().any(|(o, _)| o == n)) {
                self.remember_hook(name, hook, super::hook_api::hook_obs(Some(h)));
            }
        }
        for (hook, timeout) in &audit.short_heartbeats {
            warn!(group = %name, hook, heartbeat_timeout = timeout, reconcile_interval = self.settings.reconcile_interval_s,
                "a hook's heartbeat timeout is not above twice the reconcile interval: an action whose event was lost may time out first");
            report.short_heartbeats.push(format!("{name}/{hook}: {timeout} s"));
        }
        for (_, same) in &audit.duplicates {
            error!(group = %name, hooks = ?same, "two of fleetkeeper's hooks on one transition: each instance is gated twice; remove one");
            report.duplicate_hooks.push(format!("{name}: {}", same.join(", ")));
        }
        let ours = audit.ours;
        if ours.is_empty() {
            return Ok(false);
        }
        let mut waiting: Vec<(String, String)> = g
            .instances()
            .iter()
            .filter_map(|i| Some((i.instance_id()?.to_owned(), i.lifecycle_state()?.as_str().to_owned())))
            .collect();
        if g.warm_pool_configuration().is_some() {
            waiting.extend(self.warm_pool(name).await?);
        }
        let mut actions = Vec::new();
        for (id, state) in waiting {
            for (hook, transition) in &ours {
                let Some(destination) = destination_in(&state, *transition) else { continue };
                actions.push(LifecycleAction {
                    auto_scaling_group_name: name.to_owned(),
                    lifecycle_hook_name: hook.clone(),
                    instance_id: id.clone(),
                    transition: *transition,
                    token: None,
                    origin: origin_in(&state),
                    destination: Some(destination),
                    notification_metadata: None,
                    time_ms: None,
                });
            }
        }
        // First keep every waiting action alive (one heartbeat each), so an
        // instance at the end of a long list, or behind failing ones, never
        // times out; then drive those our hooks hold (dry run: all of them).
        // A drive probes again on purpose: by the record's token when it
        // has one, which tells a stale action from the one in progress.
        let mut held = Vec::new();
        for action in actions {
            if self.clock.now_ms() >= self.until {
                report.truncated = true;
                return Ok(true);
            }
            if self.settings.dry_run {
                held.push(action);
                continue;
            }
            match self.heartbeat(&action).await {
                Ok(true) => held.push(action),
                Ok(false) => {} // another hook's, or over
                Err(e) => report.failed(&action.instance_id, "heartbeat", &e),
            }
        }
        for action in held {
            if self.clock.now_ms() >= self.until {
                report.truncated = true;
                return Ok(true);
            }
            match self.drive(&action).await {
                Ok(driven) => report.driven.push(driven),
                Err(e) => report.failed(&action.instance_id, "drive", &e),
            }
        }
        Ok(false)
    }

    /// The warm pool's instances and their states (AWS lists them only here,
    /// not in `DescribeAutoScalingGroups`).
    async fn warm_pool(&self, group: &str) -> Result<Vec<(String, String)>, GateError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .clients
                .autoscaling
                .describe_warm_pool()
                .auto_scaling_group_name(group)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeWarmPool", e))?;
            out.extend(
                page.instances()
                    .iter()
                    .filter_map(|i| Some((i.instance_id()?.to_owned(), i.lifecycle_state()?.as_str().to_owned()))),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// `DescribeAutoScalingInstances` of `ids` now (50 per call):
    /// instance -> (group, lifecycle state, health). An instance absent
    /// from the answer is in no group.
    async fn fresh_states(&self, ids: &BTreeSet<String>) -> Result<Fresh, GateError> {
        let mut out = Fresh::new();
        let ids: Vec<String> = ids.iter().cloned().collect();
        for chunk in ids.chunks(50) {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .clients
                    .autoscaling
                    .describe_auto_scaling_instances()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeAutoScalingInstances", e))?;
                for i in page.auto_scaling_instances() {
                    if let (Some(id), Some(group), Some(state)) =
                        (i.instance_id(), i.auto_scaling_group_name(), i.lifecycle_state())
                    {
                        let health = i.health_status().unwrap_or("HEALTHY").to_owned();
                        out.insert(id.to_owned(), (group.to_owned(), state.to_owned(), health));
                    }
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    /// Of `ids`, those EC2 reports `shutting-down` or `terminated`, or does
    /// not know (each is asked on its own: one unknown id fails a batch).
    async fn gone_from_ec2(&self, ids: &BTreeSet<String>) -> Result<BTreeSet<String>, GateError> {
        let mut gone = BTreeSet::new();
        for id in ids {
            let state = match self.clients.ec2.describe_instances().instance_ids(id).send().await {
                Ok(out) => out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .find_map(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned())),
                Err(e) if aws_sdk_ec2::error::ProvideErrorMetadata::code(&e) == Some("InvalidInstanceID.NotFound") => {
                    None
                }
                Err(e) => {
                    // Not known to be gone: no expiry, and the others go on.
                    warn!(instance_id = %id, error = %AwsError::from_sdk("DescribeInstances", e), "could not tell whether the instance is gone");
                    continue;
                }
            };
            if state.as_deref().is_none_or(|s| s == "shutting-down" || s == "terminated") {
                gone.insert(id.clone());
            }
        }
        Ok(gone)
    }

    /// Every target of `tg` and its health (`draining` included: it is
    /// being removed, so neither missing nor ours to remove again).
    async fn describe_targets(&self, tg: &str) -> Result<BTreeMap<String, Health>, GateError> {
        let out = self
            .clients
            .elbv2
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| Some((d.target()?.id()?.to_owned(), health_of(Some(d)))))
            .filter(|(_, h)| *h != Health::Absent)
            .collect())
    }

    /// Registers an InService member in `tg`, recorded first as ours;
    /// `false` when its record shows an unfinished terminate (it is
    /// leaving) or another writer moved the record.
    async fn repair_registration(&self, id: &str, tg: &str) -> Result<bool, GateError> {
        let (mut record, version) = self.store.lifecycle(id).await?;
        if record.action.as_ref().is_some_and(|a| a.done.is_none() && a.transition == Transition::Terminating) {
            return Ok(false);
        }
        if !record.registered.iter().any(|t| t == tg) {
            record.registered.push(tg.to_owned());
        }
        if self.save(id, &record, version, None).await?.is_none() {
            return Ok(false);
        }
        self.register(tg, id).await?;
        info!(instance_id = %id, target_group = %tg, "registered an InService instance that was missing");
        Ok(true)
    }

    /// Deregisters a departed instance from `tg` if fleetkeeper registered
    /// it and no lifecycle action of it is in progress (the gate does that
    /// one's deregistering). The item of an instance gone from EC2 expires.
    async fn remove_departed(&self, id: &str, tg: &str, gone: bool, waiting: bool) -> Result<bool, GateError> {
        let (mut record, version) = self.store.lifecycle(id).await?;
        if !record.registered.iter().any(|t| t == tg) {
            return Ok(false); // not ours to remove
        }
        let now = self.clock.now_ms();
        if waiting && record.action.as_ref().is_some_and(|a| a.done.is_none()) {
            return Ok(false); // the gate is driving it (it still waits on a hook)
        }
        self.deregister(tg, id).await?;
        record.registered.retain(|t| t != tg);
        let expires = gone.then(|| now / 1000 + super::gate::GONE_RETENTION_SECS);
        if self.save(id, &record, version, expires).await?.is_none() {
            warn!(instance_id = %id, "instance record moved while deregistering: the next run looks again");
        }
        info!(instance_id = %id, target_group = %tg, "deregistered an instance that left service, which fleetkeeper had registered");
        Ok(true)
    }
}
