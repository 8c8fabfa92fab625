//! The managed Auto Scaling groups, as AWS describes them.

use std::collections::BTreeSet;

use aws_sdk_autoscaling::types::AutoScalingGroup;

use crate::Clients;
use crate::error::AwsError;

/// The managed groups that exist, and the configured names that do not.
#[derive(Debug, Clone, Default)]
pub struct ManagedGroups {
    /// The groups found, across pages.
    pub found: Vec<AutoScalingGroup>,
    /// Configured names with no group (logged by callers, never fatal).
    pub missing: Vec<String>,
}

/// Describes `names` (`FLEET_ASG_NAMES`).
pub async fn managed_groups(clients: &Clients, names: &[String]) -> Result<ManagedGroups, AwsError> {
    let found = clients
        .autoscaling
        .describe_auto_scaling_groups()
        .set_auto_scaling_group_names(Some(names.to_vec()))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeAutoScalingGroups", e))?;
    let present: BTreeSet<&str> = found.iter().filter_map(|g| g.auto_scaling_group_name()).collect();
    let missing = names.iter().filter(|n| !present.contains(n.as_str())).cloned().collect();
    Ok(ManagedGroups { found, missing })
}

/// The target groups attached to a group: `TargetGroupARNs` and the
/// identifiers of its `TrafficSources`.
pub fn attached_target_groups(group: &AutoScalingGroup) -> BTreeSet<String> {
    let mut attached: BTreeSet<String> = group.target_group_arns().iter().cloned().collect();
    attached.extend(group.traffic_sources().iter().filter_map(|t| t.identifier().map(str::to_owned)));
    attached
}
