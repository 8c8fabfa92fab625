//! `mount-targets` against the emulator: the mount targets that exist
//! afterwards, and that a second run changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper::clock::SystemClock;
use fleetkeeper::config::vars;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::events::{autoscaling_notice, scheduled};
use fleetkeeper_tests::fleet::{Fleet, FleetSpec};
use fleetkeeper_tests::inprocess::{deps, invocation, set_var};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::{Value, json};

/// Zone -> (subnet, mount target id) as EFS reports them.
async fn mount_targets(emulator: &Emulator, file_system_id: &str) -> BTreeMap<String, (String, String)> {
    let clients = emulator.clients().await;
    let out = clients.efs.describe_mount_targets().file_system_id(file_system_id).send().await.expect("describe");
    out.mount_targets()
        .iter()
        .map(|m| {
            (
                m.availability_zone_name().unwrap_or_default().to_owned(),
                (m.subnet_id().to_owned(), m.mount_target_id().to_owned()),
            )
        })
        .collect()
}

async fn run(emulator: &Emulator, env: &[(String, String)], payload: Value) -> Value {
    let deps = deps(emulator, Component::MountTargets, env).await;
    let event = invocation(payload, &SystemClock, Duration::from_secs(60));
    let summary = mount_targets::function_handler(event, &deps).await.expect("handler");
    serde_json::to_value(summary).expect("json")
}

fn outcomes(summary: &Value) -> Vec<(String, String)> {
    summary["reconcile"]["zones"]
        .as_array()
        .expect("zones")
        .iter()
        .map(|z| {
            (z["zone"].as_str().unwrap_or_default().to_owned(), z["outcome"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

#[tokio::test]
async fn one_mount_target_per_zone_in_the_first_subnet_and_a_second_run_is_a_noop() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let spec = FleetSpec { instances: 0, second_subnet_in_first_zone: true, ..FleetSpec::default() };
    let fleet = Fleet::provision(&clients, &spec).await;
    // VPCZoneIdentifier: a(1st), a(2nd), b, c.
    assert_eq!(fleet.subnets[0].zone, fleet.subnets[1].zone);

    let first = run(&emulator, &fleet.env(), scheduled()).await;
    assert_eq!(
        outcomes(&first),
        pairs(&[("us-east-1a", "created"), ("us-east-1b", "created"), ("us-east-1c", "created")])
    );
    let made = mount_targets(&emulator, &fleet.file_system_id).await;
    assert_eq!(made.len(), 3, "{made:?}");
    assert_eq!(made["us-east-1a"].0, fleet.subnets[0].id, "the first subnet of the AZ, in VPCZoneIdentifier order");
    assert_eq!(made["us-east-1b"].0, fleet.subnets[2].id);
    assert_eq!(made["us-east-1c"].0, fleet.subnets[3].id);
    for z in first["reconcile"]["zones"].as_array().expect("zones") {
        assert_eq!(z["nfs_admitted"], true, "the fleet's EFS group admits 2049: {z}");
    }
    let groups = clients
        .efs
        .describe_mount_target_security_groups()
        .mount_target_id(&made["us-east-1a"].1)
        .send()
        .await
        .expect("groups");
    assert_eq!(groups.security_groups(), std::slice::from_ref(&fleet.efs_security_group));

    let second = run(&emulator, &fleet.env(), scheduled()).await;
    assert_eq!(outcomes(&second), pairs(&[("us-east-1a", "kept"), ("us-east-1b", "kept"), ("us-east-1c", "kept")]));
    assert_eq!(mount_targets(&emulator, &fleet.file_system_id).await, made, "a second run changes nothing");
}

#[tokio::test]
async fn a_mount_target_made_by_hand_in_another_subnet_of_the_zone_counts() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let spec = FleetSpec { instances: 0, zones: 2, second_subnet_in_first_zone: true, ..FleetSpec::default() };
    let fleet = Fleet::provision(&clients, &spec).await;
    let by_hand = clients
        .efs
        .create_mount_target()
        .file_system_id(&fleet.file_system_id)
        .subnet_id(&fleet.subnets[1].id)
        .send()
        .await
        .expect("by hand");

    let summary = run(&emulator, &fleet.env(), scheduled()).await;
    assert_eq!(outcomes(&summary), pairs(&[("us-east-1a", "kept"), ("us-east-1b", "created")]));
    let made = mount_targets(&emulator, &fleet.file_system_id).await;
    assert_eq!(made["us-east-1a"], (fleet.subnets[1].id.clone(), by_hand.mount_target_id().to_owned()));
    assert_eq!(made.len(), 2);
    let zone_a = &summary["reconcile"]["zones"][0];
    assert_eq!(zone_a["nfs_admitted"], false, "made without security groups: warned: {zone_a}");
}

#[tokio::test]
async fn mount_targets_in_another_vpc_refuse_and_create_nothing() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, zones: 2, ..FleetSpec::default() }).await;
    let other = Fleet::provision(&clients, &FleetSpec { instances: 0, zones: 1, ..FleetSpec::default() }).await;
    clients
        .efs
        .create_mount_target()
        .file_system_id(&fleet.file_system_id)
        .subnet_id(&other.subnets[0].id)
        .send()
        .await
        .expect("mount target in the other VPC");

    let summary = run(&emulator, &fleet.env(), scheduled()).await;
    assert_eq!(outcomes(&summary), pairs(&[("us-east-1a", "refused"), ("us-east-1b", "refused")]));
    let reason = summary["reconcile"]["zones"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&other.vpc_id) && reason.contains(&fleet.vpc_id), "{reason}");
    let made = mount_targets(&emulator, &fleet.file_system_id).await;
    assert_eq!(made.len(), 1, "nothing created: {made:?}");
}

#[tokio::test]
async fn dry_run_plans_and_creates_nothing() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, zones: 2, ..FleetSpec::default() }).await;
    let mut env = fleet.env();
    set_var(&mut env, vars::DRY_RUN, "true");
    let summary = run(&emulator, &env, json!({"action": "reconcile"})).await;
    assert_eq!(summary["reconcile"]["dry_run"], true);
    assert_eq!(outcomes(&summary), pairs(&[("us-east-1a", "planned"), ("us-east-1b", "planned")]));
    assert_eq!(summary["reconcile"]["zones"][0]["action"]["action"], "create");
    assert!(mount_targets(&emulator, &fleet.file_system_id).await.is_empty());
}

#[tokio::test]
async fn events_of_other_groups_are_skipped_and_change_nothing() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, zones: 2, ..FleetSpec::default() }).await;
    let foreign = autoscaling_notice("EC2 Instance Launch Successful", "someone-elses-group", "i-0123456789abcdef0");
    let summary = run(&emulator, &fleet.env(), foreign).await;
    assert_eq!(summary["triggers"], 0);
    assert_eq!(summary["skipped"]["by_reason"]["not_managed"], 1, "{summary}");
    assert_eq!(summary["reconcile"], Value::Null);
    assert!(mount_targets(&emulator, &fleet.file_system_id).await.is_empty());

    let ours = autoscaling_notice("EC2 Instance Launch Successful", &fleet.asg_name, "i-0123456789abcdef0");
    let summary = run(&emulator, &fleet.env(), ours).await;
    assert_eq!(summary["triggers"], 1);
    assert_eq!(mount_targets(&emulator, &fleet.file_system_id).await.len(), 2);
}

#[tokio::test]
async fn a_missing_group_is_reported_and_the_others_are_served() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, zones: 1, ..FleetSpec::default() }).await;
    let mut env = fleet.env();
    set_var(&mut env, vars::ASG_NAMES, &format!("{},no-such-group", fleet.asg_name));
    let summary = run(&emulator, &env, scheduled()).await;
    assert_eq!(summary["reconcile"]["missing_groups"], json!(["no-such-group"]));
    assert_eq!(outcomes(&summary), pairs(&[("us-east-1a", "created")]));
}

#[tokio::test]
async fn the_library_entry_ensures_one_zone_only() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let deps = deps(&emulator, Component::MountTargets, &fleet.env()).await;
    let target = fleetkeeper::mount_targets::Target::from_config(&deps.config).expect("efs configured");
    let report = fleetkeeper::mount_targets::reconcile(
        &clients,
        &fleetkeeper::clock::SystemClock,
        &target,
        Some("us-east-1b"),
        Duration::from_secs(10),
    )
    .await
    .expect("ensure");
    assert_eq!(report.zones.len(), 1);
    let made = mount_targets(&emulator, &fleet.file_system_id).await;
    assert_eq!(made.keys().collect::<Vec<_>>(), ["us-east-1b"]);
}

#[tokio::test]
async fn the_real_bootstrap_reconciles_on_its_schedule() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 2, ..FleetSpec::default() }).await;
    let mut process = LambdaProcess::start_function(&emulator, Component::MountTargets, &fleet.env()).await;
    let answer = process.invoke(scheduled()).await.response();
    assert_eq!(outcomes(&answer).len(), 3, "{answer}");
    assert_eq!(mount_targets(&emulator, &fleet.file_system_id).await.len(), 3);
    let again = process.invoke(scheduled()).await.response();
    assert!(outcomes(&again).iter().all(|(_, o)| o == "kept"), "{again}");
    let logs = process.stop().await.stdout();
    assert!(logs.contains("reconciled mount targets"), "{logs}");
}
