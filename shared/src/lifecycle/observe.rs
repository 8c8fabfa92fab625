//! One observation per planner stage. Whatever an action finds ready is
//! kept in its record ([`super::record::Ready`]), so a later invocation
//! does not ask again.

use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::InstanceInformationStringFilter;

use super::gate::{Drive, Gate, GateError};
use super::plan::{CatchUpState, Health, InstanceState, MountState, Stage};
use super::store::RecordStore;
use crate::error::AwsError;
use crate::events::{CommandStatus, LifecycleAction, Transition};
use crate::mount_targets::{self, Outcome as MountOutcome};
use crate::ssm_document::run::LISTING_LAG_MS;

impl<S: RecordStore> Gate<'_, S> {
    pub(super) async fn observe(&self, stage: Stage, action: &LifecycleAction, d: &mut Drive) -> Result<(), GateError> {
        let c = self.clients;
        let id = &action.instance_id;
        match stage {
            Stage::Active => {
                let active = self.heartbeat(action).await?;
                if active {
                    d.heartbeat_at = Some(self.clock.now_ms());
                    d.out.actions.push("heartbeat".into());
                }
                d.seen.active = Some(active);
            }
            Stage::Hook => {
                let hook = self.hook_settings(&action.auto_scaling_group_name, &action.lifecycle_hook_name).await?;
                d.state.global_deadline = Some(d.state.started_at + hook.global_timeout_ms);
                d.state.default_result = Some(hook.default_result);
                d.seen.hook = Some(hook);
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
                d.seen.lifecycle_state = Some(state);
            }
            Stage::Instance => {
                let instance = match c.ec2.describe_instances().instance_ids(id).send().await {
                    Ok(out) => out.reservations().iter().flat_map(|r| r.instances()).next().map(|i| {
                        let zone = i.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_owned();
                        match i.state().and_then(|s| s.name()).map(|n| n.as_str()) {
                            Some("running") => InstanceState::Running { zone },
                            Some("pending") => InstanceState::Pending,
                            Some("stopping" | "stopped") => InstanceState::Stopped,
                            _ => InstanceState::Gone,
                        }
                    }),
                    // EC2 is eventually consistent right after a launch.
                    Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Some(InstanceState::NotFound),
                    Err(e) => return Err(AwsError::from_sdk("DescribeInstances", e).into()),
                };
                let instance = instance.unwrap_or(InstanceState::NotFound);
                if let InstanceState::Running { zone } = &instance {
                    d.state.ready.zone = Some(zone.clone());
                }
                d.seen.instance = Some(instance);
            }
            Stage::Mount => {
                let mount = self.mount_state(d.seen.instance.as_ref()).await?;
                d.state.ready.mount = mount == MountState::Ready;
                d.seen.mount = Some(mount);
            }
            Stage::Agent => {
                let filter = InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .values(id)
                    .build()
                    .map_err(|e| AwsError::construction("DescribeInstanceInformation", e))?;
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
                d.state.ready.agent = online;
                d.seen.agent_online = Some(online);
            }
            Stage::CatchUp => {
                let Some(catch_up) = d.state.catch_up.as_mut() else {
                    d.seen.catch_up = Some(CatchUpState::Missing);
                    return Ok(());
                };
                if catch_up.command_id.is_none() {
                    catch_up.command_id = self.find_catch_up(id, catch_up).await?;
                }
                let sent_at = catch_up.sent_at;
                d.seen.catch_up = Some(match catch_up.command_id.clone() {
                    // Not listed, but perhaps only not yet: never sent twice.
                    None if self.clock.now_ms() < sent_at + LISTING_LAG_MS => CatchUpState::Running,
                    None => CatchUpState::Missing,
                    Some(command_id) => self.catch_up_status(&command_id, id).await?,
                });
            }
            Stage::Targets => {
                // A launch need not ask for the health of a target group
                // fleetkeeper has not registered it in yet: registering an
                // instance that is registered already changes nothing.
                let unregistered = |tg: &str| {
                    action.transition == Transition::Launching && !d.record.registered.iter().any(|t| t == tg)
                };
                let targets = self.targets(&action.auto_scaling_group_name, id, unregistered).await?;
                if action.transition == Transition::Terminating && targets.iter().any(|t| t.health == Health::Draining)
                {
                    d.state.drain_started_at.get_or_insert(self.clock.now_ms());
                }
                d.seen.targets = Some(targets);
            }
        }
        Ok(())
    }

    /// The AZ's mount target: one `DescribeMountTargets` when it is there
    /// and available; the full (creating) reconcile only when it is not.
    async fn mount_state(&self, instance: Option<&InstanceState>) -> Result<MountState, GateError> {
        let (Some(target), Some(InstanceState::Running { zone })) = (&self.settings.mount, instance) else {
            return Ok(MountState::Ready);
        };
        if let Some(why) = self.cache.mount_refusals.lock().ok().and_then(|c| c.get(zone).cloned()) {
            return Ok(MountState::Refused(why));
        }
        let listed = self
            .clients
            .efs
            .describe_mount_targets()
            .file_system_id(&target.file_system_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeMountTargets", e))?;
        let available = listed
            .mount_targets()
            .iter()
            .any(|m| m.availability_zone_name() == Some(zone.as_str()) && m.life_cycle_state().as_str() == "available");
        if available && listed.next_marker().is_none_or(str::is_empty) {
            return Ok(MountState::Ready);
        }
        let budget = self.clock.left_until(self.until).min(std::time::Duration::from_secs(20));
        let report = mount_targets::reconcile(self.clients, self.clock, target, Some(zone), budget).await?;
        let state = match report.zone(zone) {
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
        };
        if let (MountState::Refused(why), Ok(mut c)) = (&state, self.cache.mount_refusals.lock()) {
            c.insert(zone.clone(), why.clone());
        }
        Ok(state)
    }

    pub(super) async fn catch_up_status(&self, command_id: &str, id: &str) -> Result<CatchUpState, GateError> {
        let (status, _, refused) =
            crate::ssm_document::run::invocation_status(&self.clients.ssm, command_id, id).await?;
        Ok(match status {
            CommandStatus::Success => CatchUpState::Succeeded,
            // (A warm-pool instance coming back with a release its guard
            // will not shrink: it stays out of service, like any failure.)
            _ if refused.is_some() => CatchUpState::Failed(format!("release refused: {}", refused.unwrap_or_default())),
            s if s.is_terminal() => CatchUpState::Failed(format!("{s:?}")),
            _ => CatchUpState::Running,
        })
    }
}
