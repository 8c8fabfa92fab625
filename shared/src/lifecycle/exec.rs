//! The lifecycle executor: drives one action as far as it can within the
//! invocation, persisting each step, and returns "in progress" (after a
//! heartbeat) when it must wait. Continued by the next event (the
//! catch-up's status event, the schedule), never by polling past the
//! deadline.

use std::collections::BTreeSet;

use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthStateEnum};
use aws_sdk_ssm::types::InstanceInformationStringFilter;
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use super::plan::{
    CatchUpState, Duties, Health, InstanceState, MountState, Next, Observed, Stage, TargetObs, next, phase,
};
use super::record::{ActionState, CatchUp, LifecycleRecord, PlanRecord};
use super::store::RecordStore;
use crate::Clients;
use crate::clock::Clock;
use crate::config::{CodebaseConfig, Config};
use crate::error::AwsError;
use crate::events::{CommandStatus, CommandStatusChange, LifecycleAction, Place, Transition};
use crate::mount_targets::{self, Outcome as MountOutcome};
use crate::ssm_document::history::{InstanceResult, Synced};
use crate::ssm_document::run::{LISTING_LAG_MS, Sent};
use crate::ssm_document::{self, SyncParameters, catch_up_comment};
use crate::store::StoreError;

/// How long a finished instance item is kept after the instance is gone.
const GONE_RETENTION_SECS: u64 = 7 * 86_400;

/// Why an invocation stops when another one moved the instance's record.
const RACED: &str = "another invocation advanced this instance first: it continues";

/// At most this many planner steps per action and invocation.
const MAX_STEPS: usize = 24;

/// The gate's settings, resolved from the configuration once.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// `FLEET_ASG_NAMES`.
    pub asg_names: Vec<String>,
    /// `FLEET_LIFECYCLE_HOOK_NAMES`.
    pub hook_names: Vec<String>,
    /// `FLEET_TARGET_GROUP_ARNS`.
    pub target_group_arns: Vec<String>,
    /// The mount-target reconcile, when a file system is configured.
    pub mount: Option<mount_targets::Target>,
    /// The catch-up, when a codebase is configured.
    pub catch_up: Option<CatchUpSettings>,
    /// `FLEET_DRY_RUN`.
    pub dry_run: bool,
    /// `FLEET_RECONCILE_INTERVAL_SECONDS`.
    pub reconcile_interval_s: u64,
}

/// What a catch-up sends.
#[derive(Debug, Clone)]
pub struct CatchUpSettings {
    /// The codebase.
    pub codebase: CodebaseConfig,
    /// `FLEET_SYNC_DESTINATION`.
    pub destination: String,
    /// `FLEET_SYNC_DOCUMENT`.
    pub document: String,
    /// The bucket's region.
    pub region: String,
    /// `FLEET_SYNC_QUARANTINE_AFTER`.
    pub quarantine_after: u32,
}

impl GateSettings {
    /// The gate's settings of a configuration validated for `lifecycle-hook`.
    pub fn from_config(config: &Config, region: &str) -> Self {
        let catch_up = config.codebase.as_ref().and_then(|c| {
            Some(CatchUpSettings {
                destination: c.destination.clone()?,
                document: c.document.clone()?,
                codebase: c.clone(),
                region: c.region.clone().unwrap_or_else(|| region.to_owned()),
                quarantine_after: config.quarantine_after,
            })
        });
        GateSettings {
            asg_names: config.asg_names.clone(),
            hook_names: config.lifecycle_hook_names.clone(),
            target_group_arns: config.target_group_arns.clone(),
            mount: mount_targets::Target::from_config(config),
            catch_up,
            dry_run: config.dry_run,
            reconcile_interval_s: config.reconcile_interval_seconds,
        }
    }

    fn duties(&self) -> Duties {
        Duties { mount: self.mount.is_some(), catch_up: self.catch_up.is_some() }
    }
}

/// A gate failure worth surfacing: AWS or the lock table failed.
#[derive(Debug, Error)]
pub enum GateError {
    /// The lock table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The mount-target reconcile failed.
    #[error(transparent)]
    Mount(#[from] mount_targets::MountError),
    /// A request could not be built.
    #[error("request: {0}")]
    Build(String),
}

/// What driving one action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Driven {
    /// The instance.
    pub instance_id: String,
    /// Its group.
    pub group: String,
    /// The hook.
    pub hook: String,
    /// `launching` / `terminating`.
    pub transition: Transition,
    /// The launch phase or `terminate`.
    pub phase: String,
    /// `continue`, `abandon`, `in_progress`, `not_active`, `dry_run`.
    pub result: String,
    /// Why (what is waited for, why it was abandoned).
    pub reason: Option<String>,
    /// Warnings (a group not in use, a drain cut short).
    pub warnings: Vec<String>,
    /// What this invocation did, in order.
    pub actions: Vec<String>,
}

/// The gate.
pub struct Gate<'a, S> {
    /// SDK clients.
    pub clients: &'a Clients,
    /// The lock table.
    pub store: &'a S,
    /// Settings.
    pub settings: &'a GateSettings,
    /// Time.
    pub clock: &'a dyn Clock,
    /// Stop starting new work after this moment, epoch ms on `clock` (the
    /// invocation's deadline minus a margin).
    pub until: u64,
}

impl<S: RecordStore> Gate<'_, S> {
    /// Drives one action as far as it can go now.
    pub async fn drive(&self, action: &LifecycleAction) -> Result<Driven, GateError> {
        let id = &action.instance_id;
        let phase = match action.transition {
            Transition::Launching => phase(action),
            Transition::Terminating => "terminate".to_owned(),
        };
        let (mut record, mut version) = self.store.lifecycle(id).await?;
        let mut state = record.for_action(action, &phase, self.clock.now_ms());
        let mut seen = Observed::default();
        let mut out = Driven {
            instance_id: id.clone(),
            group: action.auto_scaling_group_name.clone(),
            hook: action.lifecycle_hook_name.clone(),
            transition: action.transition,
            phase: phase.clone(),
            result: "in_progress".into(),
            reason: None,
            warnings: Vec::new(),
            actions: Vec::new(),
        };
        for _ in 0..MAX_STEPS {
            let now = self.clock.now_ms();
            let decision =
                next(action, &PlanRecord::new(&state, &record.registered), &seen, self.settings.duties(), now);
            if let Next::Observe { stage } = decision {
                self.observe(stage, action, &mut state, &mut seen).await?;
                continue;
            }
            info!(instance_id = %id, hook = %action.lifecycle_hook_name, next = ?decision, "lifecycle step");
            if self.settings.dry_run {
                out.result = "dry_run".into();
                out.reason = Some(format!("{decision:?}"));
                return Ok(out);
            }
            if self.clock.now_ms() >= self.until && !matches!(decision, Next::Wait { .. } | Next::NotActive { .. }) {
                // Out of time: keep the hook alive, the next event continues.
                self.heartbeat(action, &state).await?;
                out.reason = Some("the invocation's time is up: continued by the next event".into());
                return Ok(out);
            }
            match decision {
                Next::Observe { .. } => {}
                Next::NotActive { state: lifecycle_state } => {
                    state.done = Some("not_active".into());
                    state.step = format!("not active ({})", lifecycle_state.as_deref().unwrap_or("not in a group"));
                    record.action = Some(state);
                    self.save(id, &record, version, gone_expiry(&seen, self.clock.now_ms())).await?;
                    out.result = "not_active".into();
                    out.reason = Some(format!("lifecycle state {}", lifecycle_state.as_deref().unwrap_or("none")));
                    return Ok(out);
                }
                Next::Wait { reason } => {
                    state.step = reason.clone();
                    record.action = Some(state.clone());
                    if self.save(id, &record, version, None).await?.is_none() {
                        out.reason = Some(RACED.into());
                        return Ok(out);
                    }
                    self.heartbeat(action, &state).await?;
                    out.actions.push("heartbeat".into());
                    out.reason = Some(reason);
                    return Ok(out);
                }
                Next::SendCatchUp { attempt } => {
                    let Some(settings) = &self.settings.catch_up else { return Ok(out) };
                    let (epoch, generation) = self.store.requested().await?;
                    state.catch_up = Some(CatchUp {
                        phase: phase.clone(),
                        attempt,
                        generation,
                        epoch: epoch.clone(),
                        command_id: None,
                        sent_at: now,
                    });
                    state.step = format!("sending catch-up to generation {generation} (attempt {attempt})");
                    record.action = Some(state.clone());
                    // The intent is on record before the command exists: a
                    // racing invocation loses here instead of sending twice.
                    let Some(v) = self.save(id, &record, version, None).await? else {
                        out.reason = Some("another invocation is sending the catch-up".into());
                        return Ok(out);
                    };
                    version = v;
                    match self.send_catch_up(id, &epoch, generation, settings).await? {
                        Sent::Command(command_id) => {
                            out.actions
                                .push(format!("catch-up {command_id} to generation {generation} (attempt {attempt})"));
                            if let Some(c) = state.catch_up.as_mut() {
                                c.command_id = Some(command_id);
                            }
                            seen.catch_up = Some(CatchUpState::Running);
                        }
                        Sent::InDoubt => {
                            // Perhaps sent, not listed yet: the intent stays
                            // and a later observation finds it by comment.
                            out.actions
                                .push(format!("catch-up to generation {generation} in doubt (attempt {attempt})"));
                            seen.catch_up = Some(CatchUpState::Running);
                        }
                        Sent::Refused => {
                            // SSM refused the instance (agent not registered yet).
                            state.catch_up = None;
                            seen.agent_online = Some(false);
                        }
                    }
                    record.action = Some(state.clone());
                    version = self.save(id, &record, version, None).await?.unwrap_or(version);
                }
                Next::Register { target_groups } => {
                    for tg in &target_groups {
                        if !record.registered.contains(tg) {
                            record.registered.push(tg.clone());
                        }
                    }
                    state.registered_at.get_or_insert(now);
                    record.action = Some(state.clone());
                    // Recorded before registering: a rollback or the reconcile
                    // can always tell what fleetkeeper registered.
                    let Some(v) = self.save(id, &record, version, None).await? else {
                        out.reason = Some(RACED.into());
                        return Ok(out);
                    };
                    version = v;
                    for tg in &target_groups {
                        self.register(tg, id).await?;
                        out.actions.push(format!("registered in {tg}"));
                    }
                    seen.targets = None;
                }
                Next::Deregister { target_groups } => {
                    for tg in &target_groups {
                        self.deregister(tg, id).await?;
                        out.actions.push(format!("deregistered from {tg}"));
                    }
                    record.registered.retain(|t| !target_groups.contains(t));
                    state.drain_started_at.get_or_insert(now);
                    record.action = Some(state.clone());
                    let Some(v) = self.save(id, &record, version, None).await? else {
                        out.reason = Some(RACED.into());
                        return Ok(out);
                    };
                    version = v;
                    seen.targets = None;
                }
                Next::Continue { warnings } => {
                    for w in &warnings {
                        warn!(instance_id = %id, warning = %w, "lifecycle warning");
                    }
                    self.complete(action, &state, "CONTINUE").await?;
                    out.actions.push("CONTINUE".into());
                    if let Some(c) = &state.catch_up
                        && let Some(settings) = &self.settings.catch_up
                    {
                        let results = [(id.clone(), InstanceResult::Synced)];
                        let at = Synced { epoch: &c.epoch, generation: c.generation };
                        self.store.record_results(at, &results, now, settings.quarantine_after).await?;
                    }
                    state.done = Some("continue".into());
                    state.step = "completed: CONTINUE".into();
                    let expires = (action.transition == Transition::Terminating
                        && action.destination != Some(Place::WarmPool))
                    .then(|| now / 1000 + GONE_RETENTION_SECS);
                    if expires.is_some() {
                        record.registered.clear();
                    }
                    record.action = Some(state);
                    self.save(id, &record, version, expires).await?;
                    out.result = "continue".into();
                    out.warnings = warnings;
                    return Ok(out);
                }
                Next::Abandon { reason, deregister } => {
                    warn!(instance_id = %id, %reason, "abandoning the lifecycle action");
                    for tg in &deregister {
                        self.deregister(tg, id).await?;
                        out.actions.push(format!("deregistered from {tg}"));
                    }
                    record.registered.retain(|t| !deregister.contains(t));
                    self.complete(action, &state, "ABANDON").await?;
                    out.actions.push("ABANDON".into());
                    state.done = Some("abandon".into());
                    state.step = format!("completed: ABANDON ({reason})");
                    record.action = Some(state);
                    self.save(id, &record, version, Some(now / 1000 + GONE_RETENTION_SECS)).await?;
                    out.result = "abandon".into();
                    out.reason = Some(reason);
                    return Ok(out);
                }
            }
        }
        out.reason = Some("step limit reached: continued by the next event".into());
        Ok(out)
    }

    async fn save(
        &self,
        id: &str,
        record: &LifecycleRecord,
        version: u64,
        expires: Option<u64>,
    ) -> Result<Option<u64>, GateError> {
        let saved = self.store.save_lifecycle(id, record, version, expires).await?;
        if saved.is_none() {
            info!(instance_id = %id, "instance record moved meanwhile: another invocation drives it");
        }
        Ok(saved)
    }

    async fn observe(
        &self,
        stage: Stage,
        action: &LifecycleAction,
        state: &mut ActionState,
        seen: &mut Observed,
    ) -> Result<(), GateError> {
        let c = self.clients;
        let id = &action.instance_id;
        match stage {
            Stage::Hook => {
                let out = c
                    .autoscaling
                    .describe_lifecycle_hooks()
                    .auto_scaling_group_name(&action.auto_scaling_group_name)
                    .lifecycle_hook_names(&action.lifecycle_hook_name)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeLifecycleHooks", e))?;
                // AWS's default and maximum: 48 hours.
                let secs = out.lifecycle_hooks().first().and_then(|h| h.global_timeout()).unwrap_or(172_800);
                seen.global_timeout_ms = Some(u64::try_from(secs).unwrap_or(172_800) * 1000);
            }
            Stage::Lifecycle => {
                let out = c
                    .autoscaling
                    .describe_auto_scaling_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeAutoScalingInstances", e))?;
                let state = out
                    .auto_scaling_instances()
                    .iter()
                    .find(|i| i.auto_scaling_group_name() == Some(action.auto_scaling_group_name.as_str()))
                    .and_then(|i| i.lifecycle_state().map(str::to_owned));
                seen.lifecycle_state = Some(state);
            }
            Stage::Instance => {
                let result = c.ec2.describe_instances().instance_ids(id).send().await;
                let instance = match result {
                    Ok(out) => out.reservations().iter().flat_map(|r| r.instances()).next().map(|i| {
                        let zone = i.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_owned();
                        match i.state().and_then(|s| s.name()).map(|n| n.as_str()) {
                            Some("running") => InstanceState::Running { zone },
                            Some("pending") => InstanceState::Pending,
                            Some("stopping" | "stopped") => InstanceState::Stopped,
                            _ => InstanceState::Gone,
                        }
                    }),
                    Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => None,
                    Err(e) => return Err(AwsError::from_sdk("DescribeInstances", e).into()),
                };
                seen.instance = Some(instance.unwrap_or(InstanceState::Gone));
            }
            Stage::Mount => {
                let (Some(target), Some(InstanceState::Running { zone })) = (&self.settings.mount, &seen.instance)
                else {
                    seen.mount = Some(MountState::Ready);
                    return Ok(());
                };
                let budget = self.clock.left_until(self.until).min(std::time::Duration::from_secs(20));
                let report = mount_targets::reconcile(c, self.clock, target, Some(zone), budget).await?;
                seen.mount = Some(match report.zone(zone) {
                    Some(z) => match z.outcome {
                        MountOutcome::Kept | MountOutcome::Created => MountState::Ready,
                        MountOutcome::InProgress => MountState::InProgress,
                        MountOutcome::Planned => match z.action {
                            mount_targets::plan::Action::Keep { .. } => MountState::Ready,
                            _ => MountState::InProgress,
                        },
                        MountOutcome::Refused | MountOutcome::Failed => {
                            MountState::Refused(z.reason.clone().unwrap_or_else(|| "refused".into()))
                        }
                    },
                    None => MountState::Refused(format!("{zone} is not planned")),
                });
            }
            Stage::Agent => {
                let filter = InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .values(id)
                    .build()
                    .map_err(|e| GateError::Build(e.to_string()))?;
                let out = c
                    .ssm
                    .describe_instance_information()
                    .filters(filter)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeInstanceInformation", e))?;
                let online = out.instance_information_list().iter().any(|i| {
                    i.instance_id() == Some(id.as_str()) && i.ping_status().map(|p| p.as_str()) == Some("Online")
                });
                seen.agent_online = Some(online);
            }
            Stage::CatchUp => {
                let Some(catch_up) = state.catch_up.as_mut() else {
                    seen.catch_up = Some(CatchUpState::Missing);
                    return Ok(());
                };
                if catch_up.command_id.is_none() {
                    catch_up.command_id = self.find_catch_up(id, catch_up).await?;
                }
                seen.catch_up = Some(match &catch_up.command_id {
                    // Not listed, but perhaps only not yet: never sent twice.
                    None if self.clock.now_ms() < catch_up.sent_at + LISTING_LAG_MS => CatchUpState::Running,
                    None => CatchUpState::Missing,
                    Some(command_id) => self.catch_up_status(command_id, id).await?,
                });
            }
            Stage::Targets => {
                seen.targets = Some(self.targets(&action.auto_scaling_group_name, id).await?);
                if action.transition == Transition::Terminating
                    && seen.targets.as_ref().is_some_and(|t| t.iter().any(|t| t.health == Health::Draining))
                {
                    state.drain_started_at.get_or_insert(self.clock.now_ms());
                }
            }
        }
        Ok(())
    }

    /// The managed target groups not attached to the group, and the
    /// instance's health in each.
    async fn targets(&self, group: &str, id: &str) -> Result<Vec<TargetObs>, GateError> {
        let attached = self.attached(group).await?;
        let managed: Vec<String> =
            self.settings.target_group_arns.iter().filter(|t| !attached.contains(*t)).cloned().collect();
        if managed.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.clients;
        let described = c
            .elbv2
            .describe_target_groups()
            .set_target_group_arns(Some(managed.clone()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeTargetGroups", e))?;
        let mut out = Vec::new();
        for arn in &managed {
            let tg = described.target_groups().iter().find(|t| t.target_group_arn() == Some(arn.as_str()));
            let interval = tg.and_then(|t| t.health_check_interval_seconds()).unwrap_or(30);
            let threshold = tg.and_then(|t| t.healthy_threshold_count()).unwrap_or(5);
            let attrs = c
                .elbv2
                .describe_target_group_attributes()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeTargetGroupAttributes", e))?;
            let delay = attrs
                .attributes()
                .iter()
                .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
                .and_then(|a| a.value())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(300);
            let health = c
                .elbv2
                .describe_target_health()
                .target_group_arn(arn)
                .targets(TargetDescription::builder().id(id).build())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("DescribeTargetHealth", e))?;
            let h = health.target_health_descriptions().first().and_then(|d| d.target_health());
            let state = h.and_then(|h| h.state()).cloned();
            let reason = h.and_then(|h| h.reason()).map(|r| r.as_str().to_owned()).unwrap_or_default();
            let health = match state {
                None => Health::Absent,
                Some(TargetHealthStateEnum::Healthy) => Health::Healthy,
                Some(TargetHealthStateEnum::Draining) => Health::Draining,
                Some(TargetHealthStateEnum::Unused) if reason == "Target.NotRegistered" => Health::Absent,
                Some(TargetHealthStateEnum::Unused) if reason == "Target.NotInUse" => Health::NotInUse,
                Some(other) => Health::NotYet(format!("{} {reason}", other.as_str()).trim().to_owned()),
            };
            out.push(TargetObs {
                arn: arn.clone(),
                health,
                healthy_within_ms: u64::try_from(interval.max(1) * threshold.max(1)).unwrap_or(150) * 1000,
                drain_within_ms: delay * 1000,
            });
        }
        Ok(out)
    }

    /// Target groups attached to the group (`TargetGroupARNs` and `TrafficSources`).
    async fn attached(&self, group: &str) -> Result<BTreeSet<String>, GateError> {
        let out = self
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeAutoScalingGroups", e))?;
        Ok(out.auto_scaling_groups().iter().flat_map(crate::groups::attached_target_groups).collect())
    }

    pub(super) async fn register(&self, tg: &str, id: &str) -> Result<(), GateError> {
        self.clients
            .elbv2
            .register_targets()
            .target_group_arn(tg)
            .targets(TargetDescription::builder().id(id).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("RegisterTargets", e))?;
        info!(instance_id = %id, target_group = %tg, "registered");
        Ok(())
    }

    pub(super) async fn deregister(&self, tg: &str, id: &str) -> Result<(), GateError> {
        let result = self
            .clients
            .elbv2
            .deregister_targets()
            .target_group_arn(tg)
            .targets(TargetDescription::builder().id(id).build())
            .send()
            .await;
        match result {
            Ok(_) => info!(instance_id = %id, target_group = %tg, "deregistered"),
            // An absent target is what deregistering wants.
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_target_exception() => {
                info!(instance_id = %id, target_group = %tg, "not registered: nothing to deregister");
            }
            Err(e) => return Err(AwsError::from_sdk("DeregisterTargets", e).into()),
        }
        Ok(())
    }

    /// Sends the catch-up (at most once: [`ssm_document::run::send_once`]).
    async fn send_catch_up(
        &self,
        id: &str,
        epoch: &str,
        generation: u64,
        settings: &CatchUpSettings,
    ) -> Result<Sent, GateError> {
        let document = ssm_document::run::resolve(&self.clients.ssm, &settings.document, None).await?;
        let parameters =
            SyncParameters::new(&settings.codebase, &settings.destination, epoch, generation, &settings.region)
                .to_ssm(Some(&document))
                .map_err(|e| GateError::Build(e.to_string()))?;
        let comment = catch_up_comment(id, generation);
        let sent =
            ssm_document::run::send_catch_up(&self.clients.ssm, &document, parameters, id, comment, self.clock).await?;
        if sent == Sent::Refused {
            warn!(instance_id = %id, "SSM refused the instance (InvalidInstanceId): waiting for its agent");
        }
        Ok(sent)
    }

    /// A catch-up whose id was never recorded, found by its comment (`None`
    /// within [`LISTING_LAG_MS`] of sending may mean "not listed yet").
    async fn find_catch_up(&self, id: &str, catch_up: &CatchUp) -> Result<Option<String>, GateError> {
        let Some(settings) = &self.settings.catch_up else { return Ok(None) };
        let comment = catch_up_comment(id, catch_up.generation);
        Ok(ssm_document::run::find_command(&self.clients.ssm, &settings.document, &comment, None, catch_up.sent_at)
            .await?)
    }

    async fn catch_up_status(&self, command_id: &str, id: &str) -> Result<CatchUpState, GateError> {
        let (status, _) = ssm_document::run::invocation_status(&self.clients.ssm, command_id, id).await?;
        Ok(match status {
            CommandStatus::Success => CatchUpState::Succeeded,
            s if s.is_terminal() => CatchUpState::Failed(format!("{s:?}")),
            _ => CatchUpState::Running,
        })
    }

    /// Completes the action (token when known, else instance id); an action
    /// that is no longer active is success after a state check.
    async fn complete(&self, action: &LifecycleAction, state: &ActionState, result: &str) -> Result<(), GateError> {
        let mut request = self
            .clients
            .autoscaling
            .complete_lifecycle_action()
            .auto_scaling_group_name(&action.auto_scaling_group_name)
            .lifecycle_hook_name(&action.lifecycle_hook_name)
            .lifecycle_action_result(result);
        request = match &state.token {
            Some(token) => request.lifecycle_action_token(token),
            None => request.instance_id(&action.instance_id),
        };
        match request.send().await {
            Ok(_) => {
                info!(instance_id = %action.instance_id, result, "lifecycle action completed");
                Ok(())
            }
            Err(e) if no_active_action(&e) => {
                // Completed already (a duplicate, or a stale token): check the state.
                if state.token.is_some() {
                    let by_instance = self
                        .clients
                        .autoscaling
                        .complete_lifecycle_action()
                        .auto_scaling_group_name(&action.auto_scaling_group_name)
                        .lifecycle_hook_name(&action.lifecycle_hook_name)
                        .lifecycle_action_result(result)
                        .instance_id(&action.instance_id)
                        .send()
                        .await;
                    match by_instance {
                        Ok(_) => return Ok(()),
                        Err(e) if no_active_action(&e) => {}
                        Err(e) => return Err(AwsError::from_sdk("CompleteLifecycleAction", e).into()),
                    }
                }
                info!(instance_id = %action.instance_id, result, "no active lifecycle action: already completed");
                Ok(())
            }
            Err(e) => Err(AwsError::from_sdk("CompleteLifecycleAction", e).into()),
        }
    }

    async fn heartbeat(&self, action: &LifecycleAction, state: &ActionState) -> Result<(), GateError> {
        let mut request = self
            .clients
            .autoscaling
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&action.auto_scaling_group_name)
            .lifecycle_hook_name(&action.lifecycle_hook_name);
        request = match &state.token {
            Some(token) => request.lifecycle_action_token(token),
            None => request.instance_id(&action.instance_id),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if no_active_action(&e) => Ok(()),
            Err(e) => Err(AwsError::from_sdk("RecordLifecycleActionHeartbeat", e).into()),
        }
    }

    /// A catch-up's status event: continues the instance it belongs to.
    pub async fn on_command_status(&self, change: &CommandStatusChange) -> Result<Option<Driven>, GateError> {
        let mut instances = change.instance_ids.clone();
        if instances.is_empty() {
            // Events may omit resources: the comment names the instance.
            let out = self.clients.ssm.list_commands().command_id(&change.command_id).send().await;
            if let Ok(out) = out
                && let Some(comment) = out.commands().first().and_then(|c| c.comment())
                && let Some(rest) = comment.strip_prefix("fleetkeeper catch-up ")
                && let Some(instance) = rest.split(' ').next()
            {
                instances.push(instance.to_owned());
            }
        }
        for id in instances {
            let (record, _) = self.store.lifecycle(&id).await?;
            let Some(state) = record.action else { continue };
            let ours =
                state.catch_up.as_ref().and_then(|c| c.command_id.as_deref()) == Some(change.command_id.as_str());
            if ours && state.done.is_none() {
                let action = action_of(&id, &state);
                return Ok(Some(self.drive(&action).await?));
            }
        }
        Ok(None)
    }
}

/// Whether an error is AWS's unmodeled `ValidationError` "No active
/// Lifecycle Action found ..." (matched by code and message: the SDK has no
/// typed variant for it).
pub fn no_active_action<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ValidationError") && e.message().is_some_and(|m| m.contains("No active Lifecycle Action found"))
}

/// The lifecycle action a record stands for (for continuing without its event).
pub fn action_of(instance_id: &str, state: &ActionState) -> LifecycleAction {
    let place = |p: &str| match p {
        "EC2" => Some(Place::Ec2),
        "WarmPool" => Some(Place::WarmPool),
        _ => Some(Place::AutoScalingGroup),
    };
    let (origin, destination) = match state.phase.split_once("->") {
        Some((o, d)) => (place(o), place(d)),
        None => (Some(Place::AutoScalingGroup), Some(Place::Ec2)),
    };
    LifecycleAction {
        auto_scaling_group_name: state.group.clone(),
        lifecycle_hook_name: state.hook.clone(),
        instance_id: instance_id.to_owned(),
        transition: state.transition,
        token: state.token.clone(),
        origin,
        destination,
        notification_metadata: None,
    }
}

fn gone_expiry(seen: &Observed, now: u64) -> Option<u64> {
    matches!(seen.instance, Some(InstanceState::Gone)).then(|| now / 1000 + GONE_RETENTION_SECS)
}
