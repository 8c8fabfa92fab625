//! The scheduled reconcile: the level-triggered backstop of the gate.
//!
//! * Instances found in `Pending:Wait` / `Terminating:Wait` (and their warm
//!   pool forms) on fleetkeeper's hooks are driven by instance id: events
//!   can be lost, and every pending record is continued this way.
//! * `InService` instances missing from a managed target group that is not
//!   attached to their group are registered.
//! * Targets of managed groups whose instance has left every managed group
//!   are deregistered — only when fleetkeeper's own instance record says it
//!   registered them (target groups may be shared with other teams).

use std::collections::{BTreeSet, HashMap};

use aws_sdk_autoscaling::types::LifecycleState;
use serde::Serialize;
use tracing::{info, warn};

use super::exec::{Driven, Gate, GateError, action_of};
use super::store::RecordStore;
use crate::error::AwsError;
use crate::events::{LifecycleAction, Place, Transition};

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
    /// Work left for the next run (out of time).
    pub truncated: bool,
    /// Our hooks whose heartbeat timeout is not above twice the reconcile
    /// interval (`group/hook: timeout s`): a lost event can let them time out.
    pub short_heartbeats: Vec<String>,
}

impl<S: RecordStore> Gate<'_, S> {
    /// Runs the reconcile.
    pub async fn reconcile(&self) -> Result<ReconcileReport, GateError> {
        let mut report = ReconcileReport::default();
        let managed = crate::groups::managed_groups(self.clients, &self.settings.asg_names).await?;
        report.missing_groups = managed.missing;
        let groups = managed.found;

        // 1. Drive every instance waiting on one of our hooks.
        for g in &groups {
            let name = g.auto_scaling_group_name().unwrap_or_default();
            let hooks = self
                .clients
                .autoscaling
                .describe_lifecycle_hooks()
                .auto_scaling_group_name(name)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeLifecycleHooks", e))?;
            let ours: Vec<(String, Transition)> = hooks
                .lifecycle_hooks()
                .iter()
                .filter_map(|h| {
                    let hook = h.lifecycle_hook_name()?;
                    let transition = Transition::parse(h.lifecycle_transition()?)?;
                    self.settings.hook_names.iter().any(|n| n == hook).then(|| (hook.to_owned(), transition))
                })
                .collect();
            let floor = 2 * self.settings.reconcile_interval_s;
            for h in hooks.lifecycle_hooks() {
                let (Some(hook), Some(timeout)) = (h.lifecycle_hook_name(), h.heartbeat_timeout()) else { continue };
                if ours.iter().any(|(n, _)| n == hook) && u64::try_from(timeout).unwrap_or(0) <= floor {
                    warn!(group = %name, hook, heartbeat_timeout = timeout, reconcile_interval = self.settings.reconcile_interval_s,
                        "a hook's heartbeat timeout is not above twice the reconcile interval: an action whose event was lost may time out first");
                    report.short_heartbeats.push(format!("{name}/{hook}: {timeout} s"));
                }
            }
            for instance in g.instances() {
                let (Some(id), Some(state)) = (instance.instance_id(), instance.lifecycle_state()) else { continue };
                let Some((transition, origin, destination)) = waiting(state) else { continue };
                for (hook, hook_transition) in &ours {
                    if *hook_transition != transition {
                        continue;
                    }
                    if self.clock.now_ms() >= self.until {
                        report.truncated = true;
                        return Ok(report);
                    }
                    let action = self.pending_action(id, name, hook, transition, origin, destination).await?;
                    report.driven.push(self.drive(&action).await?);
                }
            }
        }
        if self.settings.dry_run {
            return Ok(report);
        }

        // 2. Registrations: InService members of each group, in the managed
        //    target groups not attached to it.
        let mut members: BTreeSet<String> = BTreeSet::new();
        // Each target group is described once per run (steps 2 and 3 share it).
        let mut targets: HashMap<String, BTreeSet<String>> = HashMap::new();
        for g in &groups {
            members.extend(g.instances().iter().filter_map(|i| i.instance_id().map(str::to_owned)));
            let attached = crate::groups::attached_target_groups(g);
            let in_service: Vec<&str> = g
                .instances()
                .iter()
                .filter(|i| {
                    i.lifecycle_state() == Some(&LifecycleState::InService)
                        && i.health_status().is_none_or(|h| h.eq_ignore_ascii_case("healthy"))
                })
                .filter_map(|i| i.instance_id())
                .collect();
            for tg in self.settings.target_group_arns.iter().filter(|t| !attached.contains(*t)) {
                let present = self.targets_of(tg, &mut targets).await?.clone();
                for id in in_service.iter().filter(|i| !present.contains(**i)) {
                    if self.remember_registration(id, tg).await? {
                        self.register(tg, id).await?;
                        info!(instance_id = %id, target_group = %tg, "registered an InService instance that was missing");
                        report.registered.push(((*id).to_owned(), tg.clone()));
                    }
                }
            }
        }

        // 3. Targets whose instance left every managed group, registered by us.
        for tg in &self.settings.target_group_arns {
            for id in self.targets_of(tg, &mut targets).await?.clone() {
                if members.contains(&id) {
                    continue;
                }
                let (mut record, version) = self.store.lifecycle(&id).await?;
                if !record.registered.contains(tg) {
                    continue; // not ours to remove
                }
                self.deregister(tg, &id).await?;
                record.registered.retain(|t| t != tg);
                if self.store.save_lifecycle(&id, &record, version, None).await?.is_none() {
                    warn!(instance_id = %id, "instance record moved while deregistering: the next run looks again");
                }
                info!(instance_id = %id, target_group = %tg, "deregistered a departed instance fleetkeeper had registered");
                report.deregistered.push((id, tg.clone()));
            }
        }
        Ok(report)
    }

    /// The action an instance waits on: the record's, if it is unfinished
    /// for this hook (it knows the warm-pool phase), else derived from the
    /// lifecycle state.
    async fn pending_action(
        &self,
        id: &str,
        group: &str,
        hook: &str,
        transition: Transition,
        origin: Place,
        destination: Place,
    ) -> Result<LifecycleAction, GateError> {
        let (record, _) = self.store.lifecycle(id).await?;
        if let Some(state) = record.action
            && state.done.is_none()
            && state.hook == hook
            && state.group == group
            && state.transition == transition
        {
            return Ok(action_of(id, &state));
        }
        let action = LifecycleAction {
            auto_scaling_group_name: group.to_owned(),
            lifecycle_hook_name: hook.to_owned(),
            instance_id: id.to_owned(),
            transition,
            token: None,
            origin: Some(origin),
            destination: Some(destination),
            notification_metadata: None,
        };
        Ok(action)
    }

    /// The non-draining targets of `tg`, described once per run.
    async fn targets_of<'c>(
        &self,
        tg: &str,
        cache: &'c mut HashMap<String, BTreeSet<String>>,
    ) -> Result<&'c BTreeSet<String>, GateError> {
        if !cache.contains_key(tg) {
            let described = self.describe_targets(tg).await?;
            cache.insert(tg.to_owned(), described);
        }
        Ok(cache.entry(tg.to_owned()).or_default())
    }

    async fn describe_targets(&self, tg: &str) -> Result<BTreeSet<String>, GateError> {
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
            .filter(|d| d.target_health().and_then(|h| h.state()).map(|s| s.as_str()) != Some("draining"))
            .filter_map(|d| d.target().and_then(|t| t.id()).map(str::to_owned))
            .collect())
    }

    /// Records that fleetkeeper registers `id` in `tg` (before registering).
    async fn remember_registration(&self, id: &str, tg: &str) -> Result<bool, GateError> {
        let (mut record, version) = self.store.lifecycle(id).await?;
        if !record.registered.iter().any(|t| t == tg) {
            record.registered.push(tg.to_owned());
        }
        Ok(self.store.save_lifecycle(id, &record, version, None).await?.is_some())
    }
}

/// The transition, origin and destination a waiting lifecycle state stands for.
fn waiting(state: &LifecycleState) -> Option<(Transition, Place, Place)> {
    match state.as_str() {
        "Pending:Wait" => Some((Transition::Launching, Place::Ec2, Place::AutoScalingGroup)),
        "Warmed:Pending:Wait" => Some((Transition::Launching, Place::Ec2, Place::WarmPool)),
        "Terminating:Wait" => Some((Transition::Terminating, Place::AutoScalingGroup, Place::Ec2)),
        "Warmed:Terminating:Wait" => Some((Transition::Terminating, Place::WarmPool, Place::Ec2)),
        _ => None,
    }
}
