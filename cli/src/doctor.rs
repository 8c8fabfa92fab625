//! `fleetkeeper doctor`: each check names the AWS fact that failed and the
//! fix. What is checked, and what is reported as "could not check":
//!
//! | check | checked | could not check |
//! |---|---|---|
//! | load balancer -> instances | the instances' security groups (every network interface) admit each of the load balancer's groups on the target port and the health-check port: by group id, by a CIDR covering the load balancer's subnets, or all traffic | rules by prefix list, a load balancer without security groups, a target group no load balancer uses |
//! | instances -> mount targets | each mount target's groups admit TCP 2049 from every instance in its AZ: by one of the instance's groups, or a CIDR covering its private address | rules by prefix list |
//! | mount targets per AZ | every AZ of every managed group has an `available` mount target | |
//! | hooks | fleetkeeper's hooks exist on every group, with the deployment's `DefaultResult` and a `HeartbeatTimeout` above twice `FLEET_RECONCILE_INTERVAL_SECONDS` | |
//! | EventBridge rules | the template's rules exist, are enabled, and target this fleet's functions (their `FLEET_NAME`) or its upload queue | |
//! | bucket events | the codebase bucket sends events to EventBridge | |
//! | lock table | its key is `pk` (string), its TTL is on `expires_at` | |
//! | document | it declares every parameter the functions send | |
//! | SSM agents | every in-service instance is `Online` with an agent at least 3.3.2746.0 | |
//! | lease | no wave holds an expired lease | |

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{Instance, IpPermission, SecurityGroup};
use fleetkeeper::config::vars;
use fleetkeeper::events::Transition;
use fleetkeeper::lifecycle::reconcile::audit_hooks;
use fleetkeeper::ssm_document::{self, PARAMETERS};
use fleetkeeper::stack;
use fleetkeeper::store::Table;
use fleetkeeper::sync::store::FleetStore;
use fleetkeeper::{Component, Config};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::{CliError, exit};
use crate::settings::{Aws, Sources};

/// What the deployment chose (the checks compare with it).
#[derive(Debug, Clone)]
pub struct Expect {
    /// The hooks' `DefaultResult` (`HookDefaultResult` of the stack).
    pub hook_default_result: &'static str,
    /// Check the EventBridge rules and the bucket's events.
    pub events: bool,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// A problem: `fact` says what, `fix` how.
    Fail,
    /// Could not be checked: `fact` says why.
    CouldNotCheck,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Which (`lb-to-instances`, ...), with its subject.
    pub check: String,
    /// The verdict.
    pub result: Verdict,
    /// The AWS fact behind it.
    pub fact: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

/// Every check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Doctor {
    /// `fleetkeeper.doctor/1`.
    pub schema: &'static str,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Doctor {
    fn pass(&mut self, check: impl Into<String>, fact: impl Into<String>) {
        self.push(check, Verdict::Pass, fact, None);
    }

    fn fail(&mut self, check: impl Into<String>, fact: impl Into<String>, fix: impl Into<String>) {
        self.push(check, Verdict::Fail, fact, Some(fix.into()));
    }

    fn unknown(&mut self, check: impl Into<String>, why: impl Into<String>) {
        self.push(check, Verdict::CouldNotCheck, why, None);
    }

    fn push(&mut self, check: impl Into<String>, result: Verdict, fact: impl Into<String>, fix: Option<String>) {
        self.checks.push(Check { check: check.into(), result, fact: fact.into(), fix });
    }

    /// (failed, could not check).
    pub fn counts(&self) -> (usize, usize) {
        let n = |v| self.checks.iter().filter(|c| c.result == v).count();
        (n(Verdict::Fail), n(Verdict::CouldNotCheck))
    }

    /// 0 all good, 1 problems found, 2 something could not be checked.
    pub fn exit_code(&self) -> u8 {
        match self.counts() {
            (0, 0) => exit::OK,
            (0, _) => exit::COULD_NOT,
            _ => exit::PROBLEMS,
        }
    }
}

/// What the checks share: the fleet's instances and their groups.
struct Fleet {
    /// In-service (or waiting) members, described.
    instances: Vec<Instance>,
    /// Every managed group's AZs.
    zones: BTreeMap<String, Vec<String>>,
    /// Security groups by id, described.
    groups: BTreeMap<String, SecurityGroup>,
    /// The members in service (the agent check's; a launching instance may
    /// not be registered with SSM yet).
    in_service: BTreeSet<String>,
}

impl Fleet {
    /// An instance's security groups, from every network interface.
    fn groups_of(i: &Instance) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = i
            .network_interfaces()
            .iter()
            .flat_map(|n| n.groups())
            .filter_map(|g| g.group_id().map(str::to_owned))
            .collect();
        out.extend(i.security_groups().iter().filter_map(|g| g.group_id().map(str::to_owned)));
        out
    }

    fn rules<'a>(&'a self, groups: &'a BTreeSet<String>) -> impl Iterator<Item = &'a IpPermission> + 'a {
        groups.iter().filter_map(|g| self.groups.get(g)).flat_map(|g| g.ip_permissions())
    }
}

/// Whether a rule covers TCP `port`.
fn covers_port(p: &IpPermission, port: i32) -> bool {
    match p.ip_protocol() {
        Some("-1" | "all") => true,
        Some("tcp" | "6") => p.from_port().unwrap_or(0) <= port && port <= p.to_port().unwrap_or(65535),
        _ => false,
    }
}

/// How a set of rules admits a source on a port.
#[derive(Debug, PartialEq, Eq)]
enum Admits {
    Yes,
    No,
    /// Only rules by prefix list could admit it.
    PrefixListOnly,
}

/// Whether `rules` admit, on `port`, a source in one of `source_groups` or
/// inside every network of `source_nets`.
fn admits<'a>(
    rules: impl Iterator<Item = &'a IpPermission>,
    port: i32,
    source_groups: &BTreeSet<String>,
    source_nets: &[Ipv4Net],
) -> Admits {
    let mut prefix = false;
    // CIDRs of every rule on the port together (one rule per subnet is
    // common): each source network inside one of them.
    let mut cidrs: Vec<Ipv4Net> = Vec::new();
    for p in rules.filter(|p| covers_port(p, port)) {
        if p.user_id_group_pairs().iter().any(|g| g.group_id().is_some_and(|id| source_groups.contains(id))) {
            return Admits::Yes;
        }
        cidrs.extend(p.ip_ranges().iter().filter_map(|r| r.cidr_ip()?.parse::<Ipv4Net>().ok()));
        prefix |= !p.prefix_list_ids().is_empty();
    }
    if !source_nets.is_empty() && source_nets.iter().all(|n| cidrs.iter().any(|c| c.contains(n))) {
        return Admits::Yes;
    }
    if prefix { Admits::PrefixListOnly } else { Admits::No }
}

/// Runs every check.
pub async fn run(aws: &Aws, sources: &Sources, expect: &Expect) -> Doctor {
    let mut d = Doctor { schema: "fleetkeeper.doctor/1", checks: Vec::new() };
    // Validated as lifecycle-hook: a fleet without a codebase is checked too.
    let config = match sources.config(Component::LifecycleHook) {
        Ok(c) => c,
        Err(e) => {
            d.unknown("configuration", format!("{e} (see --env-file, --from-function, --set)"));
            return d;
        }
    };
    let mut fleet = match observe(aws, &config).await {
        Ok(f) => f,
        Err(e) => {
            d.unknown("fleet", format!("cannot read the fleet's instances: {e}"));
            return d;
        }
    };
    load_balancer(&mut d, aws, &config, &fleet).await;
    mounts(&mut d, aws, &config, &mut fleet).await;
    if config.dry_run {
        d.unknown("hooks", format!("{} is true: a dry-run stack deploys no hooks", vars::DRY_RUN));
    } else {
        hooks(&mut d, aws, &config, expect).await;
    }
    if expect.events {
        rules(&mut d, aws, &config).await;
        bucket_events(&mut d, aws, &config).await;
    }
    lock_table(&mut d, aws, &config).await;
    document(&mut d, aws, &config).await;
    agents(&mut d, aws, &fleet).await;
    lease(&mut d, aws, &config).await;
    d
}

async fn observe(aws: &Aws, config: &Config) -> Result<Fleet, CliError> {
    let c = &aws.clients;
    let groups = c
        .autoscaling
        .describe_auto_scaling_groups()
        .set_auto_scaling_group_names(Some(config.asg_names.clone()))
        .send()
        .await
        .map_err(|e| CliError::aws("autoscaling:DescribeAutoScalingGroups", e))?;
    let mut zones = BTreeMap::new();
    let mut ids = Vec::new();
    let mut in_service = BTreeSet::new();
    for g in groups.auto_scaling_groups() {
        let name = g.auto_scaling_group_name().unwrap_or_default().to_owned();
        let mut azs = g.availability_zones().to_vec();
        azs.sort();
        azs.dedup();
        zones.insert(name, azs);
        for i in g.instances() {
            let state = i.lifecycle_state().map(|s| s.as_str()).unwrap_or_default();
            let Some(id) = i.instance_id() else { continue };
            if !state.starts_with("Terminat") {
                ids.push(id.to_owned());
            }
            if state == "InService" {
                in_service.insert(id.to_owned());
            }
        }
    }
    // A filter, not InstanceIds: an instance EC2 does not list yet (just
    // launched, eventually consistent) is left out instead of failing all.
    let mut instances = Vec::new();
    for chunk in ids.chunks(200) {
        let filter = aws_sdk_ec2::types::Filter::builder().name("instance-id").set_values(Some(chunk.to_vec())).build();
        let mut pages = c.ec2.describe_instances().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CliError::aws("ec2:DescribeInstances", e))?;
            instances.extend(page.reservations().iter().flat_map(|r| r.instances()).cloned());
        }
    }
    let mut fleet = Fleet { instances, zones, groups: BTreeMap::new(), in_service };
    let wanted: BTreeSet<String> = fleet.instances.iter().flat_map(Fleet::groups_of).collect();
    describe_groups(aws, &mut fleet, wanted).await?;
    Ok(fleet)
}

async fn describe_groups(aws: &Aws, fleet: &mut Fleet, ids: BTreeSet<String>) -> Result<(), CliError> {
    let missing: Vec<String> = ids.into_iter().filter(|g| !fleet.groups.contains_key(g)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for chunk in missing.chunks(200) {
        let filter = aws_sdk_ec2::types::Filter::builder().name("group-id").set_values(Some(chunk.to_vec())).build();
        let mut pages = aws.clients.ec2.describe_security_groups().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| CliError::aws("ec2:DescribeSecurityGroups", e))?;
            for g in page.security_groups() {
                fleet.groups.insert(g.group_id().unwrap_or_default().to_owned(), g.clone());
            }
        }
    }
    Ok(())
}

async fn load_balancer(d: &mut Doctor, aws: &Aws, config: &Config, fleet: &Fleet) {
    let elb = &aws.clients.elbv2;
    if config.target_group_arns.is_empty() {
        return;
    }
    let tgs =
        match elb.describe_target_groups().set_target_group_arns(Some(config.target_group_arns.clone())).send().await {
            Ok(out) => out.target_groups().to_vec(),
            Err(e) => {
                return d.unknown(
                    "lb-to-instances",
                    CliError::aws("elasticloadbalancing:DescribeTargetGroups", e).to_string(),
                );
            }
        };
    for tg in tgs {
        let name = tg.target_group_name().unwrap_or_default().to_owned();
        let check = format!("lb-to-instances {name}");
        if tg.load_balancer_arns().is_empty() {
            d.unknown(check, format!("no load balancer forwards to target group {name}: nothing to check against"));
            continue;
        }
        let lbs = match elb
            .describe_load_balancers()
            .set_load_balancer_arns(Some(tg.load_balancer_arns().to_vec()))
            .send()
            .await
        {
            Ok(out) => out.load_balancers().to_vec(),
            Err(e) => {
                d.unknown(check, CliError::aws("elasticloadbalancing:DescribeLoadBalancers", e).to_string());
                continue;
            }
        };
        let lb_groups: BTreeSet<String> = lbs.iter().flat_map(|l| l.security_groups()).cloned().collect();
        if lb_groups.is_empty() {
            d.unknown(
                check,
                format!("the load balancers of {name} have no security groups: their sources are not known"),
            );
            continue;
        }
        let subnets: Vec<String> =
            lbs.iter().flat_map(|l| l.availability_zones()).filter_map(|z| z.subnet_id().map(str::to_owned)).collect();
        let nets = match aws.clients.ec2.describe_subnets().set_subnet_ids(Some(subnets)).send().await {
            Ok(out) => out.subnets().iter().filter_map(|s| s.cidr_block()?.parse().ok()).collect::<Vec<Ipv4Net>>(),
            Err(e) => {
                d.unknown(check, CliError::aws("ec2:DescribeSubnets", e).to_string());
                continue;
            }
        };
        let port = tg.port().unwrap_or(80);
        let health = match tg.health_check_port() {
            Some("traffic-port") | None => port,
            Some(p) => p.parse().unwrap_or(port),
        };
        let ports: BTreeSet<i32> = [port, health].into();
        for port in ports {
            let what =
                if port == health && port != tg.port().unwrap_or(80) { "health-check port" } else { "target port" };
            let mut refused = Vec::new();
            let mut prefix_only = Vec::new();
            for i in &fleet.instances {
                let id = i.instance_id().unwrap_or_default().to_owned();
                let groups = Fleet::groups_of(i);
                match admits(fleet.rules(&groups), port, &lb_groups, &nets) {
                    Admits::Yes => {}
                    Admits::No => refused.push(format!("{id} ({})", groups.into_iter().collect::<Vec<_>>().join(", "))),
                    Admits::PrefixListOnly => prefix_only.push(id),
                }
            }
            let lb = lb_groups.iter().cloned().collect::<Vec<_>>().join(", ");
            let check = format!("lb-to-instances {name} tcp/{port}");
            if !refused.is_empty() {
                let first = refused[0].split(' ').next().unwrap_or_default().to_owned();
                let group = fleet
                    .instances
                    .iter()
                    .find(|i| i.instance_id() == Some(first.as_str()))
                    .and_then(|i| Fleet::groups_of(i).into_iter().next())
                    .unwrap_or_default();
                d.fail(
                    check,
                    format!(
                        "no security group of {} admits TCP {port} ({what}) from the load balancer's group(s) {lb}: \
                         health checks fail and every target turns unhealthy",
                        refused.join("; ")
                    ),
                    format!(
                        "aws ec2 authorize-security-group-ingress --group-id {group} --protocol tcp --port {port} --source-group {}",
                        lb_groups.iter().next().cloned().unwrap_or_default()
                    ),
                );
            } else if !prefix_only.is_empty() {
                d.unknown(
                    check,
                    format!(
                        "only rules by prefix list could admit TCP {port} to {}: not resolved",
                        prefix_only.join(", ")
                    ),
                );
            } else if fleet.instances.is_empty() {
                d.unknown(check, "no instances in the managed groups to check");
            } else {
                d.pass(check, format!("the {} instance(s) admit TCP {port} ({what}) from {lb}", fleet.instances.len()));
            }
        }
    }
}

async fn mounts(d: &mut Doctor, aws: &Aws, config: &Config, fleet: &mut Fleet) {
    let Some(efs) = &config.efs else { return };
    let fs = &efs.file_system_id;
    let targets = match aws.clients.efs.describe_mount_targets().file_system_id(fs).send().await {
        Ok(out) => out.mount_targets().to_vec(),
        Err(e) => {
            return d.unknown("mount-targets", CliError::aws("elasticfilesystem:DescribeMountTargets", e).to_string());
        }
    };
    // Every AZ of every managed group.
    for (group, zones) in &fleet.zones {
        let missing: Vec<String> = zones
            .iter()
            .filter(|z| {
                !targets.iter().any(|m| {
                    m.availability_zone_name() == Some(z.as_str()) && m.life_cycle_state().as_str() == "available"
                })
            })
            .cloned()
            .collect();
        let check = format!("mount-targets-per-az {group}");
        if missing.is_empty() {
            d.pass(check, format!("every AZ of {group} ({}) has an available mount target of {fs}", zones.join(", ")));
        } else {
            d.fail(
                check,
                format!("no available mount target of {fs} in {}: instances there cannot mount it", missing.join(", ")),
                "fleetkeeper reconcile mounts (or wait for the mount-targets function's next run)",
            );
        }
    }
    // NFS from the instances to the mount target of their AZ.
    for m in &targets {
        let id = m.mount_target_id().to_owned();
        let zone = m.availability_zone_name().unwrap_or_default();
        let check = format!("instances-to-mount-target {id} ({zone})");
        let groups = match aws.clients.efs.describe_mount_target_security_groups().mount_target_id(&id).send().await {
            Ok(out) => out.security_groups().iter().cloned().collect::<BTreeSet<String>>(),
            Err(e) => {
                d.unknown(check, CliError::aws("elasticfilesystem:DescribeMountTargetSecurityGroups", e).to_string());
                continue;
            }
        };
        // Described once, with the instances' (a group may be both).
        if let Err(e) = describe_groups(aws, fleet, groups.clone()).await {
            d.unknown(check, e.to_string());
            continue;
        }
        let here: Vec<&Instance> = fleet
            .instances
            .iter()
            .filter(|i| i.placement().and_then(|p| p.availability_zone()) == Some(zone))
            .collect();
        let mut refused = Vec::new();
        let mut prefix_only = Vec::new();
        for i in &here {
            let iid = i.instance_id().unwrap_or_default().to_owned();
            let address: Vec<Ipv4Net> = i
                .private_ip_address()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .map(Ipv4Net::from)
                .into_iter()
                .collect();
            match admits(fleet.rules(&groups), 2049, &Fleet::groups_of(i), &address) {
                Admits::Yes => {}
                Admits::No => refused.push(iid),
                Admits::PrefixListOnly => prefix_only.push(iid),
            }
        }
        let mt_groups = groups.iter().cloned().collect::<Vec<_>>().join(", ");
        if !refused.is_empty() {
            let source = here
                .iter()
                .find(|i| i.instance_id() == Some(refused[0].as_str()))
                .and_then(|i| Fleet::groups_of(i).into_iter().next())
                .unwrap_or_default();
            d.fail(
                check,
                format!(
                    "the mount target's group(s) {mt_groups} admit no TCP 2049 from {}: mounts there hang",
                    refused.join(", ")
                ),
                format!(
                    "aws ec2 authorize-security-group-ingress --group-id {} --protocol tcp --port 2049 --source-group {source}",
                    groups.iter().next().cloned().unwrap_or_default()
                ),
            );
        } else if !prefix_only.is_empty() {
            d.unknown(check, format!("only rules by prefix list could admit NFS from {}", prefix_only.join(", ")));
        } else {
            d.pass(check, format!("{mt_groups} admit TCP 2049 from the {} instance(s) in {zone}", here.len()));
        }
    }
}

async fn hooks(d: &mut Doctor, aws: &Aws, config: &Config, expect: &Expect) {
    let floor = 2 * config.reconcile_interval_seconds;
    for group in &config.asg_names {
        let check = format!("hooks {group}");
        let hooks = match aws.clients.autoscaling.describe_lifecycle_hooks().auto_scaling_group_name(group).send().await
        {
            Ok(out) => out.lifecycle_hooks().to_vec(),
            Err(e) => {
                d.unknown(check, CliError::aws("autoscaling:DescribeLifecycleHooks", e).to_string());
                continue;
            }
        };
        // The lifecycle reconcile's own audit (heartbeats, duplicates).
        let audit = audit_hooks(&hooks, &config.lifecycle_hook_names, config.reconcile_interval_seconds);
        let ours: Vec<_> = hooks
            .iter()
            .filter(|h| audit.ours.iter().any(|(n, _)| Some(n.as_str()) == h.lifecycle_hook_name()))
            .collect();
        let put_hook = |name: &str| {
            format!("aws autoscaling put-lifecycle-hook --auto-scaling-group-name {group} --lifecycle-hook-name {name}")
        };
        let mut problems = Vec::new();
        let mut fixes = Vec::new();
        for transition in [Transition::Launching, Transition::Terminating] {
            if !audit.ours.iter().any(|(_, t)| *t == transition) {
                problems.push(format!(
                    "no fleetkeeper hook ({}) on {}",
                    config.lifecycle_hook_names.join(", "),
                    transition.as_aws()
                ));
                fixes.push("deploy the stack's hooks (or name yours in FLEET_LIFECYCLE_HOOK_NAMES)".to_owned());
            }
        }
        for (transition, same) in &audit.duplicates {
            problems.push(format!("{} on {}: each instance is gated twice", same.join(" and "), transition.as_aws()));
            fixes.push(format!(
                "aws autoscaling delete-lifecycle-hook --auto-scaling-group-name {group} --lifecycle-hook-name {}",
                same[1]
            ));
        }
        for h in &ours {
            let name = h.lifecycle_hook_name().unwrap_or_default();
            let result = h.default_result().unwrap_or("ABANDON");
            if result != expect.hook_default_result {
                problems.push(format!(
                    "{name}'s DefaultResult is {result}, the deployment's is {}",
                    expect.hook_default_result
                ));
                fixes.push(format!("{} --default-result {}", put_hook(name), expect.hook_default_result));
            }
        }
        for (name, heartbeat) in &audit.short_heartbeats {
            problems.push(format!(
                "{name}'s HeartbeatTimeout {heartbeat}s is not above twice {} ({}s): a lost event lets it time out",
                vars::RECONCILE_INTERVAL_SECONDS,
                config.reconcile_interval_seconds
            ));
            fixes.push(format!("{} --heartbeat-timeout {}", put_hook(name), 3 * config.reconcile_interval_seconds));
        }
        if problems.is_empty() {
            d.pass(
                check,
                format!(
                    "{} fleetkeeper hook(s), DefaultResult {}, heartbeats above {floor}s",
                    ours.len(),
                    expect.hook_default_result
                ),
            );
        } else {
            d.fail(check, problems.join("; "), fixes.join("; "));
        }
    }
}

async fn rules(d: &mut Doctor, aws: &Aws, config: &Config) {
    let fleet = config.fleet_name.clone().unwrap_or_default();
    for (suffix, target) in stack::RULES {
        if !stack::deploys(target, config.codebase.is_some(), config.efs.is_some()) {
            continue;
        }
        let name = format!("{fleet}-{suffix}");
        let check = format!("rule {name}");
        let rule = match aws.events.describe_rule().name(&name).send().await {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                d.fail(
                    check,
                    format!("EventBridge rule {name} does not exist: its events never reach fleetkeeper"),
                    "deploy the stack (infra/template.yaml)",
                );
                continue;
            }
            Err(e) => {
                d.unknown(check, CliError::aws("events:DescribeRule", e).to_string());
                continue;
            }
        };
        if rule.state().map(|s| s.as_str()) != Some("ENABLED") {
            d.fail(
                check,
                format!("rule {name} is {}", rule.state().map(|s| s.as_str()).unwrap_or("?")),
                format!("aws events enable-rule --name {name}"),
            );
            continue;
        }
        let targets = match aws.events.list_targets_by_rule().rule(&name).send().await {
            Ok(out) => out.targets().iter().map(|t| t.arn().to_owned()).collect::<Vec<_>>(),
            Err(e) => {
                d.unknown(check, CliError::aws("events:ListTargetsByRule", e).to_string());
                continue;
            }
        };
        let ok = match target {
            None => targets.iter().any(|a| a.starts_with("arn:aws:sqs:") || a.contains(":sqs:")),
            Some(_) => {
                let mut ours = false;
                let mut unreadable = None;
                for arn in targets.iter().filter(|a| a.contains(":lambda:")) {
                    match crate::settings::function_environment(&aws.lambda, arn).await {
                        Ok(env) => ours |= env.get(vars::FLEET_NAME) == Some(&fleet),
                        Err(e) => unreadable = Some(e.to_string()),
                    }
                }
                if !ours && let Some(why) = unreadable {
                    d.unknown(check, format!("rule {name}'s target could not be read: {why}"));
                    continue;
                }
                ours
            }
        };
        if ok {
            d.pass(check, format!("enabled, targets {}", targets.join(", ")));
        } else {
            d.fail(
                check,
                format!(
                    "rule {name} targets {:?}: none is {}",
                    targets,
                    match target {
                        None => "an SQS queue".to_owned(),
                        Some(_) => format!("a function of fleet {fleet} (FLEET_NAME)"),
                    }
                ),
                "deploy the stack again (its rules target its own functions)",
            );
        }
    }
}

async fn bucket_events(d: &mut Doctor, aws: &Aws, config: &Config) {
    let Some(codebase) = &config.codebase else { return };
    let check = format!("bucket-events {}", codebase.bucket);
    // The bucket's own region (S3 answers another region's client with a
    // redirect the Rust SDK does not follow).
    let s3 = match &codebase.region {
        Some(r) if Some(r.as_str()) != aws.clients.s3.config().region().map(|x| x.as_ref()) => {
            let regional = aws.clients.s3.config().to_builder().region(aws_config::Region::new(r.clone()));
            aws_sdk_s3::Client::from_conf(regional.build())
        }
        _ => aws.clients.s3.clone(),
    };
    match s3.get_bucket_notification_configuration().bucket(&codebase.bucket).send().await {
        Ok(out) if out.event_bridge_configuration().is_some() => {
            d.pass(check, "the codebase bucket sends its events to EventBridge")
        }
        Ok(_) => d.fail(
            check,
            format!("bucket {} does not send events to EventBridge: uploads never start a sync (only the sweep's fingerprint finds them)", codebase.bucket),
            format!(
                "aws s3api put-bucket-notification-configuration --bucket {} --notification-configuration '{{\"EventBridgeConfiguration\": {{}}}}'",
                codebase.bucket
            ),
        ),
        Err(e) => d.unknown(check, CliError::aws("s3:GetBucketNotification", e).to_string()),
    }
}

async fn lock_table(d: &mut Doctor, aws: &Aws, config: &Config) {
    let Some(table) = &config.lock_table else { return };
    let check = format!("lock-table {table}");
    let described = match aws.clients.dynamodb.describe_table().table_name(table).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            return d.fail(check, format!("table {table} does not exist"), "deploy the stack (its LockTable)");
        }
        Err(e) => return d.unknown(check, CliError::aws("dynamodb:DescribeTable", e).to_string()),
    };
    let t = described.table();
    let keys: Vec<(String, String)> = t
        .map(|t| {
            t.key_schema().iter().map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned())).collect()
        })
        .unwrap_or_default();
    let pk_string = t
        .map(|t| {
            t.attribute_definitions()
                .iter()
                .any(|a| a.attribute_name() == fleetkeeper::store::PK && a.attribute_type().as_str() == "S")
        })
        .unwrap_or(false);
    if keys != [(fleetkeeper::store::PK.to_owned(), "HASH".to_owned())] || !pk_string {
        return d.fail(
            check,
            format!(
                "table {table}'s key is {keys:?}; fleetkeeper needs one string hash key named {}",
                fleetkeeper::store::PK
            ),
            "point FLEET_LOCK_TABLE at the stack's LockTable",
        );
    }
    match aws.clients.dynamodb.describe_time_to_live().table_name(table).send().await {
        Ok(out) => {
            let ttl = out.time_to_live_description();
            let on = ttl.and_then(|t| t.time_to_live_status()).map(|s| s.as_str()) == Some("ENABLED")
                && ttl.and_then(|t| t.attribute_name()) == Some(fleetkeeper::store::EXPIRES_AT);
            if on {
                d.pass(
                    check,
                    format!("key {} (string), TTL on {}", fleetkeeper::store::PK, fleetkeeper::store::EXPIRES_AT),
                );
            } else {
                d.fail(
                    check,
                    format!("TTL is not enabled on {}: wave records and claims are never deleted", fleetkeeper::store::EXPIRES_AT),
                    format!("aws dynamodb update-time-to-live --table-name {table} --time-to-live-specification Enabled=true,AttributeName={}", fleetkeeper::store::EXPIRES_AT),
                );
            }
        }
        Err(e) => d.unknown(check, CliError::aws("dynamodb:DescribeTimeToLive", e).to_string()),
    }
}

async fn document(d: &mut Doctor, aws: &Aws, config: &Config) {
    let Some(name) = config.codebase.as_ref().and_then(|c| c.document.clone()) else { return };
    let check = format!("document {name}");
    match ssm_document::run::resolve(&aws.clients.ssm, &name, None).await {
        Ok(doc) => {
            let missing: Vec<&str> =
                PARAMETERS.iter().map(|(p, _)| *p).filter(|p| !doc.declared.contains(*p)).collect();
            if missing.is_empty() {
                d.pass(check, format!("version {} declares all {} parameters", doc.version, PARAMETERS.len()));
            } else {
                d.fail(
                    check,
                    format!(
                        "version {} (the default) lacks {}: the features that need them are off or refused",
                        doc.version,
                        missing.join(", ")
                    ),
                    "deploy the stack's SyncDocument (infra/sync-document.yaml) and make it the default version",
                );
            }
        }
        Err(e) => d.unknown(check, CliError::fleet(e).to_string()),
    }
}

async fn agents(d: &mut Doctor, aws: &Aws, fleet: &Fleet) {
    let ids: Vec<String> = fleet.in_service.iter().cloned().collect();
    if ids.is_empty() {
        return;
    }
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for chunk in ids.chunks(50) {
        let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .set_values(Some(chunk.to_vec()))
            .build();
        let Ok(filter) = filter else { continue };
        let mut pages = aws.clients.ssm.describe_instance_information().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => {
                    for info in p.instance_information_list() {
                        seen.insert(
                            info.instance_id().unwrap_or_default().to_owned(),
                            (
                                info.ping_status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                                info.agent_version().unwrap_or_default().to_owned(),
                            ),
                        );
                    }
                }
                Err(e) => {
                    return d.unknown("ssm-agents", CliError::aws("ssm:DescribeInstanceInformation", e).to_string());
                }
            }
        }
    }
    let mut problems = Vec::new();
    for id in &ids {
        match seen.get(id) {
            None => problems.push(format!("{id} is not managed by SSM")),
            Some((ping, _)) if ping != "Online" => problems.push(format!("{id}'s agent is {ping}")),
            Some((_, version)) if !ssm_document::agent_supported(version) => {
                problems.push(format!("{id}'s agent {version} is older than 3.3.2746.0 (ENV_VAR parameters)"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        d.pass("ssm-agents", format!("{} instance(s) Online with an agent of 3.3.2746.0 or later", ids.len()));
    } else {
        d.fail(
            "ssm-agents",
            format!("{}: waves leave them out", problems.join("; ")),
            "attach AmazonSSMManagedInstanceCore to the instance role and update the agent (AWS-UpdateSSMAgent)",
        );
    }
}

async fn lease(d: &mut Doctor, aws: &Aws, config: &Config) {
    let (Some(fleet), Some(table)) = (&config.fleet_name, &config.lock_table) else { return };
    let store = Table::new(aws.clients.dynamodb.clone(), table, fleet);
    let now = fleetkeeper::clock::Clock::now_ms(&fleetkeeper::clock::SystemClock);
    match store.load().await {
        Ok(Some(item)) => match item.wave {
            // A sender out of time pauses its wave (a short lease) for the
            // next sweep to resume: stale only past a sweep interval.
            Some(w) if w.lease_expires_at + 1000 * config.reconcile_interval_seconds + 60_000 < now => d.fail(
                "lease",
                format!(
                    "wave {} (generation {}) holds a lease that expired {} s ago: its sender is gone",
                    w.id,
                    w.target,
                    (now - w.lease_expires_at) / 1000
                ),
                "fleetkeeper unlock (the next sweep also settles it)",
            ),
            Some(w) if w.lease_expires_at < now => d.pass(
                "lease",
                format!(
                    "wave {}'s lease expired {} s ago: the next sweep settles or resumes it",
                    w.id,
                    (now - w.lease_expires_at) / 1000
                ),
            ),
            Some(w) => d.pass("lease", format!("wave {} holds a live lease", w.id)),
            None => d.pass("lease", "no wave holds the lease"),
        },
        Ok(None) => d.pass("lease", "no sync has happened yet"),
        Err(e) => d.unknown("lease", CliError::fleet(e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{IpRange, PrefixListId, UserIdGroupPair};

    use super::*;

    fn rule(proto: &str, from: i32, to: i32) -> aws_sdk_ec2::types::builders::IpPermissionBuilder {
        IpPermission::builder().ip_protocol(proto).from_port(from).to_port(to)
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_rule_admits_by_group_by_covering_cidr_or_all_traffic() {
        let lb = set(&["sg-lb"]);
        let nets: Vec<Ipv4Net> = vec!["10.0.1.0/24".parse().expect("net"), "10.0.2.0/24".parse().expect("net")];
        let by_group =
            rule("tcp", 80, 80).user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-lb").build()).build();
        let other_group =
            rule("tcp", 80, 80).user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-x").build()).build();
        let vpc = rule("tcp", 0, 65535).ip_ranges(IpRange::builder().cidr_ip("10.0.0.0/16").build()).build();
        let one_subnet = rule("tcp", 80, 80).ip_ranges(IpRange::builder().cidr_ip("10.0.1.0/24").build()).build();
        let all = IpPermission::builder()
            .ip_protocol("-1")
            .user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-lb").build())
            .build();
        let anywhere = IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let no_source = IpPermission::builder().ip_protocol("-1").build();
        let wrong_port =
            rule("tcp", 443, 443).user_id_group_pairs(UserIdGroupPair::builder().group_id("sg-lb").build()).build();
        let udp = rule("udp", 80, 80).ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build();
        let prefix =
            rule("tcp", 80, 80).prefix_list_ids(PrefixListId::builder().prefix_list_id("pl-1").build()).build();
        let check = |rules: &[&IpPermission]| admits(rules.iter().copied(), 80, &lb, &nets);
        assert_eq!(check(&[&by_group]), Admits::Yes);
        assert_eq!(check(&[&vpc]), Admits::Yes);
        assert_eq!(check(&[&all]), Admits::Yes);
        assert_eq!(check(&[&anywhere]), Admits::Yes);
        assert_eq!(check(&[&no_source]), Admits::No);
        assert_eq!(check(&[&other_group]), Admits::No);
        assert_eq!(check(&[&one_subnet]), Admits::No, "a CIDR must cover every subnet of the load balancer");
        let other_subnet = rule("tcp", 80, 80).ip_ranges(IpRange::builder().cidr_ip("10.0.2.0/24").build()).build();
        assert_eq!(check(&[&one_subnet, &other_subnet]), Admits::Yes, "one rule per subnet covers them together");
        assert_eq!(check(&[&wrong_port, &udp]), Admits::No);
        assert_eq!(check(&[&prefix]), Admits::PrefixListOnly);
        assert_eq!(check(&[&prefix, &by_group]), Admits::Yes);
        assert_eq!(check(&[]), Admits::No);
    }

    #[test]
    fn exit_codes_rank_problems_above_what_could_not_be_checked() {
        let mut d = Doctor::default();
        d.pass("a", "ok");
        assert_eq!(d.exit_code(), 0);
        d.unknown("b", "why");
        assert_eq!(d.exit_code(), 2);
        d.fail("c", "fact", "fix");
        assert_eq!(d.exit_code(), 1);
        assert_eq!(d.counts(), (1, 1));
    }
}
