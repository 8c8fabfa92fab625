//! The thin executor: observe what AWS reports, plan, perform the plan.
//!
//! Stateless: each run re-plans from AWS. It creates, it never deletes. A
//! `MountTargetConflict` answer means someone else may have just made the
//! mount target: it re-reads, and if the AZ still has none it reports AWS's
//! message and moves on (never loops). Creation is asynchronous on AWS; new
//! mount targets are waited for within a bounded budget, then reported as in
//! progress for the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use aws_sdk_efs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_efs::operation::create_mount_target::CreateMountTargetError;

use super::plan::{Action, FileSystem, Inputs, LifeCycle, MountTarget, Subnet, plan};
use crate::Clients;
use crate::clock::Clock;
use crate::error::{AwsError, Kind};

/// What the reconcile needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The managed groups.
    pub asg_names: Vec<String>,
    /// The file system.
    pub file_system_id: String,
    /// Security groups for new mount targets.
    pub security_groups: Vec<String>,
    /// Plan and log only.
    pub dry_run: bool,
    /// Check that each mount target's security groups admit NFS (a
    /// warning only; the lifecycle gate leaves it to the mount-target
    /// function's own runs).
    pub check_nfs: bool,
}

/// How long to poll a new mount target between looks.
const POLL: Duration = Duration::from_secs(3);

/// A reconcile that could not complete: an AWS failure while observing, or a
/// transient or configuration error while creating. Everything the reconcile
/// reads comes from the configuration, so each of these is worth surfacing
/// (a retry, or an operator, can fix it); per-AZ refusals are part of the
/// [`Report`] instead.
#[derive(Debug, Error)]
pub enum MountError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The file system does not exist.
    #[error("file system {0} does not exist")]
    NoFileSystem(String),
}

/// What happened in one AZ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An available mount target serves the AZ.
    Kept,
    /// One was created and is available.
    Created,
    /// Creation or an update is under way: the next run looks again.
    InProgress,
    /// Nothing was done (see the reason).
    Refused,
    /// AWS refused the creation (see the reason); the next run tries again.
    Failed,
    /// Dry run: this is what would be done.
    Planned,
}

/// One AZ in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneReport {
    /// The AZ.
    pub zone: String,
    /// What happened.
    pub outcome: Outcome,
    /// The planned action.
    pub action: Action,
    /// The mount target serving (or soon serving) the AZ.
    pub mount_target_id: Option<String>,
    /// Why, for refusals and failures.
    pub reason: Option<String>,
    /// Whether one of its security groups admits TCP 2049 (checked for
    /// existing and new mount targets).
    pub nfs_admitted: Option<bool>,
}

/// The reconcile's report (part of the function's response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The file system.
    pub file_system_id: String,
    /// One entry per AZ.
    pub zones: Vec<ZoneReport>,
    /// Mount targets outside the fleet's AZs (never deleted).
    pub unused_mount_targets: Vec<String>,
    /// Managed groups that do not exist.
    pub missing_groups: Vec<String>,
    /// Nothing was written.
    pub dry_run: bool,
}

impl Report {
    /// Whether work is still under way (the next run continues it).
    pub fn in_progress(&self) -> bool {
        self.zones.iter().any(|z| z.outcome == Outcome::InProgress)
    }

    /// The report of one AZ.
    pub fn zone(&self, zone: &str) -> Option<&ZoneReport> {
        self.zones.iter().find(|z| z.zone == zone)
    }
}

/// Observes, plans and applies: every AZ of the managed groups, or only
/// `only_zone`. New mount targets are waited for at most `budget`.
pub async fn reconcile(
    clients: &Clients,
    clock: &dyn Clock,
    target: &Target,
    only_zone: Option<&str>,
    budget: Duration,
) -> Result<Report, MountError> {
    let until = clock.deadline_in(budget);
    let observed = observe(clients, target).await?;
    let inputs = Inputs {
        subnets: observed.subnets,
        file_system: observed.file_system,
        mount_targets: observed.mount_targets,
        only_zone: only_zone.map(str::to_owned),
    };
    let plan = plan(&inputs);
    info!(file_system = %target.file_system_id, zones = plan.zones.len(), dry_run = target.dry_run, "mount target plan");
    let mut zones = Vec::new();
    for zone in &plan.zones {
        let report = if target.dry_run {
            planned(zone.zone.clone(), zone.action.clone())
        } else {
            apply_zone(clients, clock, target, &inputs, &zone.zone, &zone.action, until).await?
        };
        zones.push(report);
    }
    if target.check_nfs {
        check_nfs(clients, &mut zones).await;
    }
    for z in &zones {
        info!(zone = %z.zone, outcome = ?z.outcome, mount_target = ?z.mount_target_id, reason = ?z.reason, "zone");
    }
    Ok(Report {
        file_system_id: target.file_system_id.clone(),
        zones,
        unused_mount_targets: plan.unused.clone(),
        missing_groups: observed.missing_groups,
        dry_run: target.dry_run,
    })
}

fn planned(zone: String, action: Action) -> ZoneReport {
    let mount_target_id = match &action {
        Action::Keep { mount_target_id } => Some(mount_target_id.clone()),
        Action::Wait { mount_target_id, .. } => mount_target_id.clone(),
        _ => None,
    };
    let reason = match &action {
        Action::Refuse { reason } | Action::Wait { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    ZoneReport { zone, outcome: Outcome::Planned, action, mount_target_id, reason, nfs_admitted: None }
}

async fn apply_zone(
    clients: &Clients,
    clock: &dyn Clock,
    target: &Target,
    inputs: &Inputs,
    zone: &str,
    action: &Action,
    until: u64,
) -> Result<ZoneReport, MountError> {
    let report = |outcome, mount_target_id: Option<String>, reason: Option<String>| ZoneReport {
        zone: zone.to_owned(),
        outcome,
        action: action.clone(),
        mount_target_id,
        reason,
        nfs_admitted: None,
    };
    match action {
        Action::Keep { mount_target_id } => Ok(report(Outcome::Kept, Some(mount_target_id.clone()), None)),
        Action::Refuse { reason } => Ok(report(Outcome::Refused, None, Some(reason.clone()))),
        Action::Wait { mount_target_id: None, reason } => Ok(report(Outcome::InProgress, None, Some(reason.clone()))),
        Action::Wait { mount_target_id: Some(id), .. } => {
            let (outcome, reason) = wait_available(clients, clock, id, until).await?;
            Ok(report(outcome, Some(id.clone()), reason))
        }
        Action::Create { subnet_id } => {
            // The zone's subnets from the planned one on: a subnet without
            // a free address (NoFreeAddressesInSubnet) is not the zone's end.
            let mut candidates: Vec<&str> =
                inputs.subnets.iter().filter(|s| s.zone == zone).map(|s| s.id.as_str()).collect();
            candidates.dedup();
            let start = candidates.iter().position(|s| s == subnet_id).unwrap_or(0);
            let mut created = Err(None);
            let mut subnet_id: &str = subnet_id;
            for candidate in &candidates[start..] {
                subnet_id = candidate;
                let attempt = clients
                    .efs
                    .create_mount_target()
                    .file_system_id(&target.file_system_id)
                    .subnet_id(*candidate)
                    .set_security_groups(Some(target.security_groups.clone()))
                    .send()
                    .await;
                match attempt {
                    Err(SdkError::ServiceError(ctx)) if ctx.err().is_no_free_addresses_in_subnet() => {
                        warn!(zone, subnet = %candidate, "no free address in the subnet: trying the zone's next one");
                        created = Err(Some(SdkError::ServiceError(ctx)));
                    }
                    other => {
                        created = other.map_err(Some);
                        break;
                    }
                }
            }
            let created = match created {
                Ok(mt) => Ok(mt),
                Err(Some(e)) => Err(e),
                Err(None) => return Ok(report(Outcome::Refused, None, Some(format!("no subnet in {zone}")))),
            };
            match created {
                Ok(mt) => {
                    let id = mt.mount_target_id().to_owned();
                    info!(zone, subnet = %subnet_id, mount_target = %id, "created mount target");
                    let created_state = LifeCycle::parse(mt.life_cycle_state().as_str());
                    let (outcome, reason) = if created_state == LifeCycle::Available {
                        (Outcome::Created, None)
                    } else {
                        match wait_available(clients, clock, &id, until).await? {
                            (Outcome::Kept, r) => (Outcome::Created, r),
                            other => other,
                        }
                    };
                    Ok(report(outcome, Some(id), reason))
                }
                Err(SdkError::ServiceError(ctx)) if ctx.err().is_mount_target_conflict() => {
                    let message = match ctx.err() {
                        CreateMountTargetError::MountTargetConflict(c) => c.message().unwrap_or_default().to_owned(),
                        other => other.message().unwrap_or_default().to_owned(),
                    };
                    // Someone else may have made it; re-read once, never loop.
                    let now = read_mount_targets(clients, &inputs.file_system.id).await?;
                    match now.into_iter().find(|m| m.zone == zone) {
                        Some(m) if m.state == LifeCycle::Available => {
                            Ok(report(Outcome::Kept, Some(m.id), Some("made by someone else meanwhile".into())))
                        }
                        Some(m) => {
                            Ok(report(Outcome::InProgress, Some(m.id), Some("made by someone else meanwhile".into())))
                        }
                        None => {
                            warn!(zone, subnet = %subnet_id, %message, "mount target conflict and none in the zone");
                            Ok(report(Outcome::Failed, None, Some(format!("MountTargetConflict: {message}"))))
                        }
                    }
                }
                Err(err) => {
                    let err = AwsError::from_sdk("CreateMountTarget", err);
                    if err.kind == Kind::Rejected {
                        warn!(zone, subnet = %subnet_id, error = %err, "mount target not created");
                        Ok(report(Outcome::Failed, None, Some(err.to_string())))
                    } else {
                        Err(err.into())
                    }
                }
            }
        }
    }
}

/// Polls one mount target until it is available or `until` passes.
async fn wait_available(
    clients: &Clients,
    clock: &dyn Clock,
    id: &str,
    until: u64,
) -> Result<(Outcome, Option<String>), MountError> {
    loop {
        let out = clients
            .efs
            .describe_mount_targets()
            .mount_target_id(id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeMountTargets", e))?;
        let state = out.mount_targets().first().map(|m| LifeCycle::parse(m.life_cycle_state().as_str()));
        match state {
            Some(LifeCycle::Available) => return Ok((Outcome::Kept, None)),
            Some(LifeCycle::Creating | LifeCycle::Updating) => {}
            Some(other) => return Ok((Outcome::Refused, Some(format!("mount target {id} became {other:?}")))),
            None => return Ok((Outcome::Failed, Some(format!("mount target {id} disappeared")))),
        }
        if clock.deadline_in(POLL) > until {
            return Ok((Outcome::InProgress, Some(format!("mount target {id} is not available yet"))));
        }
        clock.sleep(POLL).await;
    }
}

/// What AWS reports, as planner inputs.
struct Observed {
    subnets: Vec<Subnet>,
    file_system: FileSystem,
    mount_targets: Vec<MountTarget>,
    missing_groups: Vec<String>,
}

async fn observe(clients: &Clients, target: &Target) -> Result<Observed, MountError> {
    let crate::groups::ManagedGroups { found: groups, missing: missing_groups } =
        crate::groups::managed_groups(clients, &target.asg_names).await?;
    for g in &missing_groups {
        warn!(group = %g, "managed group does not exist");
    }
    // VPCZoneIdentifier order, group by group in configuration order. A
    // group defined by Availability Zones only launches into the default
    // subnet of each (its AZs, in order): those are its subnets.
    let mut subnet_ids: Vec<String> = Vec::new();
    let mut zones_only: Vec<String> = Vec::new();
    for name in &target.asg_names {
        if let Some(g) = groups.iter().find(|g| g.auto_scaling_group_name() == Some(name.as_str())) {
            let listed: Vec<&str> = g
                .vpc_zone_identifier()
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if listed.is_empty() {
                zones_only.extend(g.availability_zones().iter().cloned());
            }
            subnet_ids.extend(listed.into_iter().map(str::to_owned));
        }
    }
    subnet_ids.extend(default_subnets(clients, &zones_only).await?);

    let file_system = match clients.efs.describe_file_systems().file_system_id(&target.file_system_id).send().await {
        Ok(out) => match out.file_systems().first() {
            Some(fs) => FileSystem {
                id: fs.file_system_id().to_owned(),
                state: LifeCycle::parse(fs.life_cycle_state().as_str()),
                one_zone: fs.availability_zone_name().map(str::to_owned),
            },
            None => return Err(MountError::NoFileSystem(target.file_system_id.clone())),
        },
        Err(e) if e.as_service_error().is_some_and(|e| e.is_file_system_not_found()) => {
            return Err(MountError::NoFileSystem(target.file_system_id.clone()));
        }
        Err(e) => return Err(AwsError::from_sdk("DescribeFileSystems", e).into()),
    };
    let mount_targets = read_mount_targets(clients, &file_system.id).await?;

    let described = describe_subnets(clients, &subnet_ids).await?;
    let subnets = subnet_ids.iter().filter_map(|id| described.get(id).cloned()).collect();
    Ok(Observed { subnets, file_system, mount_targets, missing_groups })
}

/// The default subnets of `zones` (where a group without subnets launches:
/// Auto Scaling user guide, "a default subnet in each Availability Zone"),
/// in the order of `zones`.
async fn default_subnets(clients: &Clients, zones: &[String]) -> Result<Vec<String>, MountError> {
    if zones.is_empty() {
        return Ok(Vec::new());
    }
    let filter = |name: &str, values: Vec<String>| {
        aws_sdk_ec2::types::Filter::builder().name(name).set_values(Some(values)).build()
    };
    let resp = clients
        .ec2
        .describe_subnets()
        .filters(filter("default-for-az", vec!["true".into()]))
        .filters(filter("availability-zone", zones.to_vec()))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeSubnets", e))?;
    let mut found: Vec<(usize, String)> = resp
        .subnets()
        .iter()
        .filter_map(|s| {
            let zone = zones.iter().position(|z| Some(z.as_str()) == s.availability_zone())?;
            Some((zone, s.subnet_id()?.to_owned()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, id)| id).collect())
}

async fn describe_subnets(clients: &Clients, ids: &[String]) -> Result<BTreeMap<String, Subnet>, MountError> {
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let unique: Vec<String> = ids.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let resp = clients
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(unique))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeSubnets", e))?;
    for s in resp.subnets() {
        if let (Some(id), Some(zone), Some(vpc)) = (s.subnet_id(), s.availability_zone(), s.vpc_id()) {
            out.insert(id.to_owned(), Subnet { id: id.to_owned(), zone: zone.to_owned(), vpc_id: vpc.to_owned() });
        }
    }
    Ok(out)
}

/// Every mount target of the file system, across pages.
async fn read_mount_targets(clients: &Clients, file_system_id: &str) -> Result<Vec<MountTarget>, MountError> {
    let mut all = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = clients
            .efs
            .describe_mount_targets()
            .file_system_id(file_system_id)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DescribeMountTargets", e))?;
        all.extend(out.mount_targets().iter().cloned());
        match out.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    // Older descriptions lack the AZ or VPC: take them from the subnet.
    let lacking: Vec<String> = all
        .iter()
        .filter(|m| m.availability_zone_name().is_none() || m.vpc_id().is_none())
        .map(|m| m.subnet_id().to_owned())
        .collect();
    let subnets = describe_subnets(clients, &lacking).await?;
    Ok(all
        .iter()
        .map(|m| {
            let from_subnet = subnets.get(m.subnet_id());
            MountTarget {
                id: m.mount_target_id().to_owned(),
                subnet_id: m.subnet_id().to_owned(),
                zone: m
                    .availability_zone_name()
                    .map(str::to_owned)
                    .or_else(|| from_subnet.map(|s| s.zone.clone()))
                    .unwrap_or_default(),
                vpc_id: m
                    .vpc_id()
                    .map(str::to_owned)
                    .or_else(|| from_subnet.map(|s| s.vpc_id.clone()))
                    .unwrap_or_default(),
                state: LifeCycle::parse(m.life_cycle_state().as_str()),
            }
        })
        .collect())
}

/// Warns when no security group of a serving mount target admits TCP 2049.
/// Best effort: a warning-only check never fails the reconcile (an IAM gap
/// here is logged, and the zone's `nfs_admitted` stays unknown).
async fn check_nfs(clients: &Clients, zones: &mut [ZoneReport]) {
    for z in zones.iter_mut() {
        let Some(id) = z.mount_target_id.clone() else { continue };
        if !matches!(z.outcome, Outcome::Kept | Outcome::Created | Outcome::Planned) {
            continue;
        }
        match nfs_admitted(clients, &id).await {
            Ok((admitted, groups)) => {
                if !admitted {
                    warn!(zone = %z.zone, mount_target = %id, security_groups = ?groups, "no security group of the mount target admits TCP 2049 (NFS)");
                }
                z.nfs_admitted = Some(admitted);
            }
            Err(e) => {
                warn!(zone = %z.zone, mount_target = %id, error = %e, "could not check the mount target's security groups (a warning only)")
            }
        }
    }
}

async fn nfs_admitted(clients: &Clients, id: &str) -> Result<(bool, Vec<String>), AwsError> {
    let groups = clients
        .efs
        .describe_mount_target_security_groups()
        .mount_target_id(id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeMountTargetSecurityGroups", e))?
        .security_groups;
    if groups.is_empty() {
        return Ok((false, groups));
    }
    let described = clients
        .ec2
        .describe_security_groups()
        .set_group_ids(Some(groups.clone()))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeSecurityGroups", e))?;
    Ok((described.security_groups().iter().flat_map(|g| g.ip_permissions()).any(admits_nfs), groups))
}

/// Whether an ingress rule admits TCP 2049.
pub fn admits_nfs(p: &aws_sdk_ec2::types::IpPermission) -> bool {
    match p.ip_protocol() {
        Some("-1" | "all") => true,
        Some("tcp" | "6") => {
            let from = p.from_port().unwrap_or(0);
            let to = p.to_port().unwrap_or(65535);
            from <= 2049 && 2049 <= to
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! Paths the emulator cannot show (moto's mount targets are `available`
    //! at once and never race): SDK-level tests with `aws-smithy-mocks`.

    use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
    use aws_sdk_autoscaling::types::AutoScalingGroup;
    use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
    use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;
    use aws_sdk_ec2::types::{IpPermission, SecurityGroup};
    use aws_sdk_efs::operation::create_mount_target::CreateMountTargetOutput;
    use aws_sdk_efs::operation::describe_file_systems::DescribeFileSystemsOutput;
    use aws_sdk_efs::operation::describe_mount_target_security_groups::DescribeMountTargetSecurityGroupsOutput;
    use aws_sdk_efs::operation::describe_mount_targets::DescribeMountTargetsOutput;
    use aws_sdk_efs::types::error::MountTargetConflict;
    use aws_sdk_efs::types::{
        FileSystemDescription, FileSystemSize, LifeCycleState, MountTargetDescription, PerformanceMode,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

    use super::*;
    use crate::clock::ManualClock;

    fn target() -> Target {
        Target {
            asg_names: vec!["web".into()],
            file_system_id: "fs-12345678".into(),
            security_groups: vec!["sg-12345678".into()],
            dry_run: false,
            check_nfs: true,
        }
    }

    fn clients(efs: &[&Rule]) -> Clients {
        let group = AutoScalingGroup::builder().auto_scaling_group_name("web").vpc_zone_identifier("subnet-a").build();
        clients_in(group, &[("subnet-a", "az-a")], efs)
    }

    /// Clients for one group `group` whose VPC has `subnets` (id, AZ).
    fn clients_in(group: AutoScalingGroup, subnets: &[(&str, &str)], efs: &[&Rule]) -> Clients {
        let group = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups)
            .then_output(move || DescribeAutoScalingGroupsOutput::builder().auto_scaling_groups(group.clone()).build());
        let listed: Vec<aws_sdk_ec2::types::Subnet> = subnets
            .iter()
            .map(|(id, zone)| {
                aws_sdk_ec2::types::Subnet::builder().subnet_id(*id).availability_zone(*zone).vpc_id("vpc-1").build()
            })
            .collect();
        let subnets = mock!(aws_sdk_ec2::Client::describe_subnets)
            .then_output(move || DescribeSubnetsOutput::builder().set_subnets(Some(listed.clone())).build());
        let groups = mock!(aws_sdk_ec2::Client::describe_security_groups).then_output(|| {
            DescribeSecurityGroupsOutput::builder()
                .security_groups(
                    SecurityGroup::builder()
                        .group_id("sg-12345678")
                        .ip_permissions(
                            IpPermission::builder().ip_protocol("tcp").from_port(2049).to_port(2049).build(),
                        )
                        .build(),
                )
                .build()
        });
        Clients {
            autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, &[&group]),
            ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&subnets, &groups]),
            efs: mock_client!(aws_sdk_efs, RuleMode::Sequential, efs),
            elbv2: mock_client!(aws_sdk_elasticloadbalancingv2, &[]),
            ssm: mock_client!(aws_sdk_ssm, &[]),
            dynamodb: mock_client!(aws_sdk_dynamodb, &[]),
            sqs: mock_client!(aws_sdk_sqs, &[]),
            s3: mock_client!(aws_sdk_s3, &[]),
            region: "us-east-1".into(),
        }
    }

    fn file_system() -> Rule {
        mock!(aws_sdk_efs::Client::describe_file_systems).then_output(|| {
            DescribeFileSystemsOutput::builder()
                .file_systems(
                    FileSystemDescription::builder()
                        .owner_id("123456789012")
                        .creation_token("t")
                        .file_system_id("fs-12345678")
                        .creation_time(aws_smithy_types::DateTime::from_secs(0))
                        .life_cycle_state(LifeCycleState::Available)
                        .number_of_mount_targets(0)
                        .size_in_bytes(FileSystemSize::builder().value(0).build())
                        .performance_mode(PerformanceMode::GeneralPurpose)
                        .set_tags(Some(vec![]))
                        .build()
                        .expect("file system"),
                )
                .build()
        })
    }

    fn description(id: &str, state: LifeCycleState) -> MountTargetDescription {
        MountTargetDescription::builder()
            .mount_target_id(id)
            .file_system_id("fs-12345678")
            .subnet_id("subnet-a")
            .availability_zone_name("az-a")
            .vpc_id("vpc-1")
            .life_cycle_state(state)
            .build()
            .expect("mount target")
    }

    fn listing(found: Option<MountTargetDescription>) -> Rule {
        mock!(aws_sdk_efs::Client::describe_mount_targets).then_output(move || {
            DescribeMountTargetsOutput::builder().set_mount_targets(Some(found.clone().into_iter().collect())).build()
        })
    }

    fn conflict() -> Rule {
        mock!(aws_sdk_efs::Client::create_mount_target).then_error(|| {
            CreateMountTargetError::MountTargetConflict(
                MountTargetConflict::builder()
                    .error_code("MountTargetConflict")
                    .message("requested subnet for new mount target is not in the same VPC as existing mount targets")
                    .build()
                    .expect("error"),
            )
        })
    }

    fn nfs_groups() -> Rule {
        mock!(aws_sdk_efs::Client::describe_mount_target_security_groups).then_output(|| {
            DescribeMountTargetSecurityGroupsOutput::builder().security_groups("sg-12345678").build().expect("groups")
        })
    }

    #[tokio::test]
    async fn conflict_with_a_mount_target_made_meanwhile_keeps_it() {
        let create = conflict();
        let rules = [
            file_system(),
            listing(None),
            create.clone(),
            listing(Some(description("fsmt-1", LifeCycleState::Available))),
            nfs_groups(),
        ];
        let c = clients(&rules.iter().collect::<Vec<_>>());
        let report =
            reconcile(&c, &ManualClock::at(0), &target(), None, Duration::from_secs(30)).await.expect("reconcile");
        let zone = report.zone("az-a").expect("zone");
        assert_eq!((zone.outcome.clone(), zone.mount_target_id.as_deref()), (Outcome::Kept, Some("fsmt-1")));
        assert_eq!(zone.nfs_admitted, Some(true));
        assert_eq!(create.num_calls(), 1);
    }

    #[tokio::test]
    async fn conflict_without_a_mount_target_reports_aws_message_and_never_loops() {
        let create = conflict();
        let rules = [file_system(), listing(None), create.clone(), listing(None)];
        let c = clients(&rules.iter().collect::<Vec<_>>());
        let report =
            reconcile(&c, &ManualClock::at(0), &target(), None, Duration::from_secs(30)).await.expect("reconcile");
        let zone = report.zone("az-a").expect("zone");
        assert_eq!(zone.outcome, Outcome::Failed);
        assert!(zone.reason.as_deref().unwrap_or_default().contains("not in the same VPC"), "{zone:?}");
        assert_eq!(create.num_calls(), 1, "one attempt, no loop");
    }

    fn creating() -> Rule {
        mock!(aws_sdk_efs::Client::create_mount_target).then_output(|| {
            let d = description("fsmt-new", LifeCycleState::Creating);
            CreateMountTargetOutput::builder()
                .mount_target_id(d.mount_target_id())
                .file_system_id(d.file_system_id())
                .subnet_id(d.subnet_id())
                .life_cycle_state(LifeCycleState::Creating)
                .build()
                .expect("output")
        })
    }

    #[tokio::test]
    async fn a_new_mount_target_still_creating_at_the_budget_is_in_progress() {
        let poll = mock!(aws_sdk_efs::Client::describe_mount_targets)
            .match_requests(|r| r.mount_target_id() == Some("fsmt-new"))
            .sequence()
            .output(|| {
                DescribeMountTargetsOutput::builder()
                    .mount_targets(description("fsmt-new", LifeCycleState::Creating))
                    .build()
            })
            .times(10)
            .build();
        let rules = [file_system(), listing(None), creating(), poll.clone()];
        let c = clients(&rules.iter().collect::<Vec<_>>());
        let clock = ManualClock::at(0);
        let report = reconcile(&c, &clock, &target(), None, Duration::from_secs(10)).await.expect("reconcile");
        let zone = report.zone("az-a").expect("zone");
        assert_eq!((zone.outcome.clone(), zone.mount_target_id.as_deref()), (Outcome::InProgress, Some("fsmt-new")));
        assert!(report.in_progress());
        assert_eq!(poll.num_calls(), 4, "polls at 0, 3, 6 and 9 s within a 10 s budget");
        assert!(clock.now_ms() <= 10_000, "never past the budget");
        assert_eq!(zone.nfs_admitted, None, "not serving yet: not checked");
    }

    #[tokio::test]
    async fn a_new_mount_target_that_becomes_available_is_created() {
        let poll = mock!(aws_sdk_efs::Client::describe_mount_targets)
            .sequence()
            .output(|| {
                DescribeMountTargetsOutput::builder()
                    .mount_targets(description("fsmt-new", LifeCycleState::Creating))
                    .build()
            })
            .output(|| {
                DescribeMountTargetsOutput::builder()
                    .mount_targets(description("fsmt-new", LifeCycleState::Available))
                    .build()
            })
            .build();
        let rules = [file_system(), listing(None), creating(), poll.clone(), nfs_groups()];
        let c = clients(&rules.iter().collect::<Vec<_>>());
        let report =
            reconcile(&c, &ManualClock::at(0), &target(), None, Duration::from_secs(60)).await.expect("reconcile");
        let zone = report.zone("az-a").expect("zone");
        assert_eq!(zone.outcome, Outcome::Created);
        assert_eq!(zone.nfs_admitted, Some(true));
        assert_eq!(poll.num_calls(), 2);
    }

    #[test]
    fn nfs_rules() {
        let rule = |proto: &str, from: i32, to: i32| {
            IpPermission::builder().ip_protocol(proto).from_port(from).to_port(to).build()
        };
        assert!(admits_nfs(&rule("tcp", 2049, 2049)));
        assert!(admits_nfs(&rule("tcp", 0, 65535)));
        assert!(admits_nfs(&IpPermission::builder().ip_protocol("-1").build()));
        assert!(!admits_nfs(&rule("tcp", 22, 22)));
        assert!(!admits_nfs(&rule("udp", 2049, 2049)));
    }

    fn created_in(subnet: &'static str) -> Rule {
        mock!(aws_sdk_efs::Client::create_mount_target)
            .match_requests(move |r| r.subnet_id() == Some(subnet))
            .then_output(move || {
                CreateMountTargetOutput::builder()
                    .mount_target_id("fsmt-new")
                    .file_system_id("fs-12345678")
                    .subnet_id(subnet)
                    .life_cycle_state(LifeCycleState::Available)
                    .build()
                    .expect("output")
            })
    }

    #[tokio::test]
    async fn a_subnet_without_a_free_address_makes_the_mount_target_in_the_zone_s_next_subnet() {
        let full = mock!(aws_sdk_efs::Client::create_mount_target)
            .match_requests(|r| r.subnet_id() == Some("subnet-a"))
            .then_error(|| {
                CreateMountTargetError::NoFreeAddressesInSubnet(
                    aws_sdk_efs::types::error::NoFreeAddressesInSubnet::builder()
                        .error_code("NoFreeAddressesInSubnet")
                        .build()
                        .expect("error"),
                )
            });
        let next = created_in("subnet-b");
        let rules = [file_system(), listing(None), full.clone(), next.clone()];
        let group =
            AutoScalingGroup::builder().auto_scaling_group_name("web").vpc_zone_identifier("subnet-a,subnet-b").build();
        let c = clients_in(group, &[("subnet-a", "az-a"), ("subnet-b", "az-a")], &rules.iter().collect::<Vec<_>>());
        let target = Target { check_nfs: false, ..target() };
        let report =
            reconcile(&c, &ManualClock::at(0), &target, None, Duration::from_secs(30)).await.expect("reconcile");
        let zone = report.zone("az-a").expect("zone");
        assert_eq!((zone.outcome.clone(), zone.mount_target_id.as_deref()), (Outcome::Created, Some("fsmt-new")));
        assert_eq!((full.num_calls(), next.num_calls()), (1, 1), "fixed, not refused");
    }

    #[tokio::test]
    async fn a_group_defined_by_availability_zones_only_uses_their_default_subnets() {
        let create = created_in("subnet-default-b");
        let rules = [file_system(), listing(None), create.clone()];
        let group = AutoScalingGroup::builder().auto_scaling_group_name("web").availability_zones("az-b").build();
        let c = clients_in(group, &[("subnet-default-b", "az-b")], &rules.iter().collect::<Vec<_>>());
        let target = Target { check_nfs: false, ..target() };
        let report =
            reconcile(&c, &ManualClock::at(0), &target, None, Duration::from_secs(30)).await.expect("reconcile");
        let zone = report.zone("az-b").expect("the AZ is planned from its default subnet");
        assert_eq!(zone.outcome, Outcome::Created, "{report:?}");
        assert_eq!(create.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_security_group_check_that_fails_is_a_warning_never_an_error() {
        let denied = mock!(aws_sdk_efs::Client::describe_mount_target_security_groups).then_error(|| {
            aws_sdk_efs::operation::describe_mount_target_security_groups::DescribeMountTargetSecurityGroupsError::generic(
                aws_smithy_types::error::ErrorMetadata::builder().code("AccessDeniedException").build(),
            )
        });
        let rules = [file_system(), listing(Some(description("fsmt-1", LifeCycleState::Available))), denied.clone()];
        let c = clients(&rules.iter().collect::<Vec<_>>());
        let report =
            reconcile(&c, &ManualClock::at(0), &target(), None, Duration::from_secs(30)).await.expect("not an error");
        let zone = report.zone("az-a").expect("zone");
        assert_eq!((zone.outcome.clone(), zone.nfs_admitted), (Outcome::Kept, None));
        assert_eq!(denied.num_calls(), 1);
    }
}
