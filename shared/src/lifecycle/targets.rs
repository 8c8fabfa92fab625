//! The managed target groups not attached to the Auto Scaling group:
//! registration, deregistration and health, shared by the gate and the
//! reconcile (one reading of target health for both).

use std::collections::BTreeSet;

use aws_sdk_elasticloadbalancingv2::error::SdkError;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthDescription, TargetHealthStateEnum};
use tracing::info;

use super::gate::{Gate, GateError};
use super::plan::{Health, TargetObs};
use super::store::RecordStore;
use crate::error::AwsError;

/// AWS's defaults, for a target group that does not say.
const DEFAULT_INTERVAL_S: i32 = 30;
const DEFAULT_THRESHOLD: i32 = 5;
const DEFAULT_DEREGISTRATION_DELAY_S: u64 = 300;

/// An instance's health in a target group, from `DescribeTargetHealth`.
pub fn health_of(d: Option<&TargetHealthDescription>) -> Health {
    let h = d.and_then(|d| d.target_health());
    let state = h.and_then(|h| h.state()).cloned();
    let reason = h.and_then(|h| h.reason()).map(|r| r.as_str().to_owned()).unwrap_or_default();
    match state {
        None => Health::Absent,
        Some(TargetHealthStateEnum::Healthy) => Health::Healthy,
        Some(TargetHealthStateEnum::Draining) => Health::Draining,
        Some(TargetHealthStateEnum::Unused) if reason == "Target.NotRegistered" => Health::Absent,
        Some(TargetHealthStateEnum::Unused) if reason == "Target.NotInUse" => Health::NotInUse,
        Some(other) => Health::NotYet(format!("{} {reason}", other.as_str()).trim().to_owned()),
    }
}

impl<S: RecordStore> Gate<'_, S> {
    /// The managed target groups not attached to the group, and the
    /// instance's health in each (`absent`: groups known not to hold it,
    /// not asked). A group's bounds are read only when the health needs
    /// one (not yet healthy: the health bound; draining: the drain bound).
    pub(super) async fn targets(
        &self,
        group: &str,
        id: &str,
        absent: impl Fn(&str) -> bool,
    ) -> Result<Vec<TargetObs>, GateError> {
        let attached = self.attached(group).await?;
        let managed: Vec<String> =
            self.settings.target_group_arns.iter().filter(|t| !attached.contains(*t)).cloned().collect();
        let mut out = Vec::new();
        for arn in &managed {
            let health = if absent(arn) {
                Health::Absent
            } else {
                let described = self
                    .clients
                    .elbv2
                    .describe_target_health()
                    .target_group_arn(arn)
                    .targets(TargetDescription::builder().id(id).build())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("DescribeTargetHealth", e))?;
                health_of(described.target_health_descriptions().first())
            };
            let healthy_within_ms = match health {
                Health::NotYet(_) => self.health_bound(arn).await?,
                _ => 0,
            };
            let drain_within_ms = match health {
                Health::Draining => self.drain_bound(arn).await?,
                _ => 0,
            };
            out.push(TargetObs { arn: arn.clone(), health, healthy_within_ms, drain_within_ms });
        }
        Ok(out)
    }

    /// A target group's health bound: interval × healthy threshold, ms
    /// (once per invocation).
    async fn health_bound(&self, arn: &str) -> Result<u64, GateError> {
        if let Some(b) = self.cache.target_groups.lock().ok().and_then(|c| c.get(arn).and_then(|b| b.0)) {
            return Ok(b);
        }
        let described = self
            .clients
            .elbv2
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeTargetGroups", e))?;
        let tg = described.target_groups().first();
        let interval = tg.and_then(|t| t.health_check_interval_seconds()).unwrap_or(DEFAULT_INTERVAL_S);
        let threshold = tg.and_then(|t| t.healthy_threshold_count()).unwrap_or(DEFAULT_THRESHOLD);
        let bound = u64::try_from(interval.max(1) * threshold.max(1)).unwrap_or(150) * 1000;
        if let Ok(mut c) = self.cache.target_groups.lock() {
            c.entry(arn.to_owned()).or_default().0 = Some(bound);
        }
        Ok(bound)
    }

    /// A target group's drain bound: its deregistration delay, ms (once per
    /// invocation).
    async fn drain_bound(&self, arn: &str) -> Result<u64, GateError> {
        if let Some(b) = self.cache.target_groups.lock().ok().and_then(|c| c.get(arn).and_then(|b| b.1)) {
            return Ok(b);
        }
        let attrs = self
            .clients
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
            .unwrap_or(DEFAULT_DEREGISTRATION_DELAY_S);
        let bound = delay * 1000;
        if let Ok(mut c) = self.cache.target_groups.lock() {
            c.entry(arn.to_owned()).or_default().1 = Some(bound);
        }
        Ok(bound)
    }

    /// Target groups attached to the group (`TargetGroupARNs` and
    /// `TrafficSources`), once per invocation (the reconcile fills it from
    /// the groups it described).
    pub(super) async fn attached(&self, group: &str) -> Result<BTreeSet<String>, GateError> {
        if let Some(a) = self.cache.attached.lock().ok().and_then(|c| c.get(group).cloned()) {
            return Ok(a);
        }
        let out = self
            .clients
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeAutoScalingGroups", e))?;
        let attached: BTreeSet<String> =
            out.auto_scaling_groups().iter().flat_map(crate::groups::attached_target_groups).collect();
        if let Ok(mut c) = self.cache.attached.lock() {
            c.insert(group.to_owned(), attached.clone());
        }
        Ok(attached)
    }

    /// Registers on the target group's own port (no `Port`): fleetkeeper
    /// registers and deregisters the same way, so a registration it made is
    /// always the one it removes. A registration someone else made on
    /// another port is not fleetkeeper's, and survives.
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

    /// Deregisters (AWS answers 200 for a target that is not registered).
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
            // An absent target is what deregistering wants (older emulators
            // and some SDK paths answer InvalidTarget for it).
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_target_exception() => {
                info!(instance_id = %id, target_group = %tg, "not registered: nothing to deregister");
            }
            Err(e) => return Err(AwsError::from_sdk("DeregisterTargets", e).into()),
        }
        Ok(())
    }
}
