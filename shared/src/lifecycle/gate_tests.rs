//! The gate's timing paths and AWS's unmodeled answers, at the SDK level
//! with `aws-smithy-mocks` and an injected clock (the emulator shows the
//! same paths end to end with its readiness timelines; these pin the exact
//! calls). They prove the heartbeats, the health and drain bounds, the
//! global-timeout rule, stopping when the invocation's time is up, and that
//! "No active Lifecycle Action found" ends an action without completing
//! anything else.

use std::time::Duration;

use aws_sdk_autoscaling::operation::complete_lifecycle_action::{
    CompleteLifecycleActionError, CompleteLifecycleActionOutput,
};
use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::operation::describe_auto_scaling_instances::DescribeAutoScalingInstancesOutput;
use aws_sdk_autoscaling::operation::describe_lifecycle_hooks::DescribeLifecycleHooksOutput;
use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatOutput;
use aws_sdk_autoscaling::types::{AutoScalingGroup, AutoScalingInstanceDetails, LifecycleHook};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{Instance, InstanceState as Ec2State, InstanceStateName, Placement, Reservation};
use aws_sdk_elasticloadbalancingv2::operation::deregister_targets::DeregisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_group_attributes::DescribeTargetGroupAttributesOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput;
use aws_sdk_elasticloadbalancingv2::operation::register_targets::RegisterTargetsOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    TargetDescription, TargetGroup, TargetGroupAttribute, TargetHealth, TargetHealthDescription, TargetHealthStateEnum,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::error::ErrorMetadata;

use aws_sdk_autoscaling::operation::record_lifecycle_action_heartbeat::RecordLifecycleActionHeartbeatError;

use super::action::Outcome;
use super::gate::{Gate, GateSettings};
use super::plan::{GLOBAL_MARGIN_MS, TARGET_MARGIN_MS};
use crate::Clients;
use crate::clock::{Clock, ManualClock};
use crate::events::{LifecycleAction, Place, Transition};
use crate::store::MemoryTable;

const TG: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/1";
const ID: &str = "i-0123456789abcdef0";
const T0: u64 = 1_800_000_000_000;

fn settings() -> GateSettings {
    GateSettings {
        asg_names: vec!["web".into()],
        hook_names: vec!["fk".into()],
        target_group_arns: vec![TG.into()],
        mount: None,
        catch_up: None,
        dry_run: false,
        reconcile_interval_s: 300,
        retrigger: None,
    }
}

fn action(transition: Transition) -> LifecycleAction {
    let (origin, destination) = match transition {
        Transition::Launching => (Place::Ec2, Place::AutoScalingGroup),
        Transition::Terminating => (Place::AutoScalingGroup, Place::Ec2),
    };
    LifecycleAction {
        auto_scaling_group_name: "web".into(),
        lifecycle_hook_name: "fk".into(),
        instance_id: ID.into(),
        transition,
        token: Some("11111111-2222-3333-4444-555555555555".into()),
        origin: Some(origin),
        destination: Some(destination),
        notification_metadata: None,
        time_ms: None,
    }
}

fn health(state: Option<TargetHealthStateEnum>) -> DescribeTargetHealthOutput {
    let mut d = TargetHealthDescription::builder().target(TargetDescription::builder().id(ID).build());
    if let Some(s) = state {
        d = d.target_health(TargetHealth::builder().state(s).build());
    } else {
        d = d.target_health(
            TargetHealth::builder()
                .state(TargetHealthStateEnum::Unused)
                .reason(aws_sdk_elasticloadbalancingv2::types::TargetHealthReasonEnum::NotRegistered)
                .build(),
        );
    }
    DescribeTargetHealthOutput::builder().target_health_descriptions(d.build()).build()
}

/// The calls a test can count.
struct Calls {
    heartbeat: Rule,
    complete: Rule,
    register: Rule,
    deregister: Rule,
}

/// Clients answering as AWS would for one instance in `lifecycle_state`,
/// with the target group's health answers in `healths` (the last repeats).
fn clients(
    lifecycle_state: &'static str,
    healths: Vec<Option<TargetHealthStateEnum>>,
    complete: Rule,
) -> (Clients, Calls) {
    let heartbeat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
        .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
    clients_with(lifecycle_state, healths, complete, heartbeat, "ABANDON", ok_register())
}

fn ok_register() -> Rule {
    mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .then_output(|| RegisterTargetsOutput::builder().build())
}

/// AWS's answer when the hook holds no action with that token or instance.
fn no_active_heartbeat() -> Rule {
    mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat).then_error(|| {
        RecordLifecycleActionHeartbeatError::generic(
            ErrorMetadata::builder()
                .code("ValidationError")
                .message("No active Lifecycle Action found with token 11111111-2222-3333-4444-555555555555")
                .build(),
        )
    })
}

fn clients_with(
    lifecycle_state: &'static str,
    healths: Vec<Option<TargetHealthStateEnum>>,
    complete: Rule,
    heartbeat: Rule,
    default_result: &'static str,
    register: Rule,
) -> (Clients, Calls) {
    let hooks = mock!(aws_sdk_autoscaling::Client::describe_lifecycle_hooks).then_output(move || {
        DescribeLifecycleHooksOutput::builder()
            .lifecycle_hooks(
                LifecycleHook::builder()
                    .lifecycle_hook_name("fk")
                    .global_timeout(172_800)
                    .heartbeat_timeout(300)
                    .default_result(default_result)
                    .build(),
            )
            .build()
    });
    let instances = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_instances).then_output(move || {
        DescribeAutoScalingInstancesOutput::builder()
            .auto_scaling_instances(
                AutoScalingInstanceDetails::builder()
                    .instance_id(ID)
                    .auto_scaling_group_name("web")
                    .availability_zone("us-east-1a")
                    .lifecycle_state(lifecycle_state)
                    .health_status("HEALTHY")
                    .protected_from_scale_in(false)
                    .build(),
            )
            .build()
    });
    let groups = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
        DescribeAutoScalingGroupsOutput::builder()
            .auto_scaling_groups(AutoScalingGroup::builder().auto_scaling_group_name("web").build())
            .build()
    });
    let ec2 = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(
                        Instance::builder()
                            .instance_id(ID)
                            .state(Ec2State::builder().name(InstanceStateName::Running).build())
                            .placement(Placement::builder().availability_zone("us-east-1a").build())
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let tgs = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_groups).then_output(|| {
        DescribeTargetGroupsOutput::builder()
            .target_groups(
                TargetGroup::builder()
                    .target_group_arn(TG)
                    .health_check_interval_seconds(10)
                    .healthy_threshold_count(3)
                    .build(),
            )
            .build()
    });
    let attrs = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_group_attributes).then_output(|| {
        DescribeTargetGroupAttributesOutput::builder()
            .attributes(
                TargetGroupAttribute::builder().key("deregistration_delay.timeout_seconds").value("120").build(),
            )
            .build()
    });
    let mut seq = mock!(aws_sdk_elasticloadbalancingv2::Client::describe_target_health).sequence();
    for h in healths {
        seq = seq.output(move || health(h.clone()));
    }
    let health_rule = seq.repeatedly().build();
    let deregister = mock!(aws_sdk_elasticloadbalancingv2::Client::deregister_targets)
        .then_output(|| DeregisterTargetsOutput::builder().build());
    let clients = Clients {
        autoscaling: mock_client!(
            aws_sdk_autoscaling,
            RuleMode::MatchAny,
            &[&hooks, &instances, &groups, &heartbeat, &complete]
        ),
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&ec2]),
        elbv2: mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            &[&tgs, &attrs, &health_rule, &register, &deregister]
        ),
        efs: mock_client!(aws_sdk_efs, &[]),
        ssm: mock_client!(aws_sdk_ssm, &[]),
        dynamodb: mock_client!(aws_sdk_dynamodb, &[]),
        sqs: mock_client!(aws_sdk_sqs, &[]),
        s3: mock_client!(aws_sdk_s3, &[]),
        region: "us-east-1".into(),
    };
    (clients, Calls { heartbeat, complete, register, deregister })
}

fn ok_complete() -> Rule {
    mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action)
        .then_output(|| CompleteLifecycleActionOutput::builder().build())
}

fn gate<'a>(
    clients: &'a Clients,
    store: &'a MemoryTable,
    settings: &'a GateSettings,
    clock: &'a ManualClock,
) -> Gate<'a, MemoryTable> {
    Gate {
        clients,
        store,
        settings,
        clock,
        until: clock.deadline_in(Duration::from_secs(600)),
        cache: Default::default(),
    }
}

#[tokio::test]
async fn a_target_that_never_turns_healthy_is_waited_for_with_heartbeats_then_deregistered_and_abandoned() {
    use TargetHealthStateEnum::Initial;
    // Not registered by fleetkeeper yet: registered without asking; then `initial`.
    let (clients, calls) = clients("Pending:Wait", vec![Some(Initial)], ok_complete());
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    let g = gate(&clients, &store, &settings, &clock);

    let first = g.drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(first.result.as_str(), "in_progress");
    assert!(first.reason.as_deref().unwrap_or_default().contains("initial"), "{first:?}");
    assert_eq!((calls.register.num_calls(), calls.heartbeat.num_calls()), (1, 1), "registered, then a heartbeat");

    // Within interval × threshold (30 s) + margin: still waiting, another heartbeat.
    clock.advance(60_000);
    let second = g.drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(second.result.as_str(), "in_progress");
    assert_eq!((calls.register.num_calls(), calls.heartbeat.num_calls()), (1, 2), "never registered twice");

    clock.advance(30_000 + TARGET_MARGIN_MS);
    let third = g.drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(third.result.as_str(), "abandon", "{third:?}");
    assert_eq!(
        third.actions,
        ["heartbeat".to_owned(), format!("deregistered from {TG}"), "ABANDON".to_owned()],
        "probed, rolled back, then abandoned"
    );
    assert_eq!((calls.deregister.num_calls(), calls.complete.num_calls()), (1, 1));
    let (record, _) = crate::lifecycle::store::RecordStore::lifecycle(&store, ID).await.expect("record");
    assert!(record.registered.is_empty(), "nothing left registered on record");
}

#[tokio::test]
async fn a_drain_is_waited_for_within_the_deregistration_delay_then_terminate_continues() {
    use TargetHealthStateEnum::{Draining, Healthy};
    let (clients, calls) = clients("Terminating:Wait", vec![Some(Healthy), Some(Draining)], ok_complete());
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    let g = gate(&clients, &store, &settings, &clock);

    let first = g.drive(&action(Transition::Terminating)).await.expect("drive");
    assert_eq!(first.result.as_str(), "in_progress");
    assert_eq!(first.actions, ["heartbeat".to_owned(), format!("deregistered from {TG}")], "probed, then deregistered");

    clock.advance(100_000);
    assert_eq!(
        g.drive(&action(Transition::Terminating)).await.expect("drive").result.as_str(),
        "in_progress",
        "within 120 s + margin"
    );
    assert_eq!(calls.heartbeat.num_calls(), 2);

    clock.advance(120_000 + TARGET_MARGIN_MS);
    let last = g.drive(&action(Transition::Terminating)).await.expect("drive");
    assert_eq!(last.result.as_str(), "continue", "{last:?}");
    assert!(last.warnings[0].contains("past its deregistration delay"));
    assert_eq!((calls.deregister.num_calls(), calls.complete.num_calls()), (1, 1));
}

#[tokio::test]
async fn near_the_global_timeout_a_launch_is_abandoned() {
    let (clients, calls) = clients("Pending:Wait", vec![Some(TargetHealthStateEnum::Initial)], ok_complete());
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    let g = gate(&clients, &store, &settings, &clock);
    assert_eq!(g.drive(&action(Transition::Launching)).await.expect("drive").result.as_str(), "in_progress");
    clock.advance(172_800_000 - GLOBAL_MARGIN_MS);
    // A later invocation: its own deadline.
    let g = gate(&clients, &store, &settings, &clock);
    let late = g.drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(late.result.as_str(), "abandon");
    assert_eq!(
        late.reason.as_deref(),
        Some("the lifecycle hook's global timeout is near: its DefaultResult ABANDON applies")
    );
    assert_eq!(calls.complete.num_calls(), 1);
}

#[tokio::test]
async fn out_of_time_the_hook_is_kept_alive_and_nothing_completes() {
    let (clients, calls) = clients("Pending:Wait", vec![Some(TargetHealthStateEnum::Healthy)], ok_complete());
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    let g = Gate { until: clock.now_ms(), ..gate(&clients, &store, &settings, &clock) };
    let d = g.drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(d.result.as_str(), "in_progress");
    assert!(d.reason.as_deref().unwrap_or_default().contains("time is up"), "{d:?}");
    assert_eq!((calls.heartbeat.num_calls(), calls.complete.num_calls()), (1, 0));
}

#[tokio::test]
async fn a_token_no_longer_active_ends_that_action_and_completes_nothing_else() {
    let gone = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action).then_error(|| {
        CompleteLifecycleActionError::generic(
            ErrorMetadata::builder()
                .code("ValidationError")
                .message("No active Lifecycle Action found with token 11111111-2222-3333-4444-555555555555")
                .build(),
        )
    });
    let (clients, calls) = clients("Pending:Wait", vec![Some(TargetHealthStateEnum::Healthy)], gone);
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    let d = gate(&clients, &store, &settings, &clock)
        .drive(&action(Transition::Launching))
        .await
        .expect("an inactive action is not an error");
    assert_eq!(d.result.as_str(), "not_active");
    assert_eq!(calls.complete.num_calls(), 1, "never again by instance id: that would finish another action");
    let (record, _) = crate::lifecycle::store::RecordStore::lifecycle(&store, ID).await.expect("record");
    assert_eq!(record.action.and_then(|a| a.done), Some(Outcome::NotActive));
}

#[tokio::test]
async fn a_stale_event_costs_one_heartbeat_and_never_touches_the_record_of_the_current_action() {
    let (clients, calls) = clients_with(
        "Pending:Wait",
        vec![Some(TargetHealthStateEnum::Healthy)],
        ok_complete(),
        no_active_heartbeat(),
        "ABANDON",
        ok_register(),
    );
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    // The current action (another token) is in progress on record.
    let mut current = action(Transition::Launching);
    current.token = Some("99999999-2222-3333-4444-555555555555".into());
    let state = super::record::ActionState::new(&current, T0 - 5_000);
    let record = super::record::LifecycleRecord { action: Some(state), registered: vec![] };
    use crate::lifecycle::store::RecordStore;
    store.save_lifecycle(ID, &record, 0, None).await.expect("save").expect("saved");

    let d = gate(&clients, &store, &settings, &clock).drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(d.result.as_str(), "not_active", "{d:?}");
    assert_eq!((calls.heartbeat.num_calls(), calls.complete.num_calls(), calls.register.num_calls()), (1, 0, 0));
    let (after, _) = store.lifecycle(ID).await.expect("record");
    assert_eq!(after, record, "the current action's record is untouched");

    // A duplicate of an action already finished asks AWS nothing.
    let mut done = record.clone();
    if let Some(a) = done.action.as_mut() {
        a.done = Some(Outcome::Continue);
    }
    store.save_lifecycle(ID, &done, 1, None).await.expect("save").expect("saved");
    let d = gate(&clients, &store, &settings, &clock).drive(&current).await.expect("drive");
    assert_eq!(d.result.as_str(), "not_active");
    assert_eq!(calls.heartbeat.num_calls(), 1, "no call for a finished duplicate");
}

#[tokio::test]
async fn any_other_validation_error_is_an_error() {
    let bad = mock!(aws_sdk_autoscaling::Client::complete_lifecycle_action).then_error(|| {
        CompleteLifecycleActionError::generic(
            ErrorMetadata::builder().code("ValidationError").message("Unable to complete").build(),
        )
    });
    let (clients, _) = clients("Pending:Wait", vec![Some(TargetHealthStateEnum::Healthy)], bad);
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    assert!(gate(&clients, &store, &settings, &clock).drive(&action(Transition::Launching)).await.is_err());
}

#[tokio::test]
async fn a_continue_by_default_result_near_the_global_timeout_never_counts_as_a_sync() {
    let heartbeat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
        .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
    let (clients, calls) = clients_with(
        "Pending:Wait",
        vec![Some(TargetHealthStateEnum::Healthy)],
        ok_complete(),
        heartbeat,
        "CONTINUE",
        ok_register(),
    );
    let codebase = crate::config::CodebaseConfig {
        bucket: "code".into(),
        prefix: "app/".into(),
        excludes: vec![],
        destination: Some("/var/www".into()),
        document: Some("sync".into()),
        region: None,
    };
    let settings = GateSettings {
        catch_up: Some(super::gate::CatchUpSettings {
            codebase,
            destination: "/var/www".into(),
            document: "sync".into(),
            region: "us-east-1".into(),
            quarantine_after: 3,
            manifest: None,
            keep_releases: 3,
        }),
        ..settings()
    };
    let (store, clock) = (MemoryTable::default(), ManualClock::at(T0));
    // Began 48 hours ago (less the margin); its catch-up never finished.
    let mut state =
        super::record::ActionState::new(&action(Transition::Launching), T0 + GLOBAL_MARGIN_MS - 172_800_000);
    state.catch_up = Some(super::record::CatchUp {
        attempt: 1,
        generation: 5,
        epoch: "0123456789abcdef0123456789abcdef".into(),
        command_id: Some("cmd-1".into()),
        sent_at: T0 - 3_600_000,
        manifest: None,
        rollback: false,
        keep: vec![],
    });
    let record = super::record::LifecycleRecord { action: Some(state), registered: vec![] };
    use crate::lifecycle::store::RecordStore;
    use crate::ssm_document::history::RunHistory;
    store.save_lifecycle(ID, &record, 0, None).await.expect("save").expect("saved");

    let d = gate(&clients, &store, &settings, &clock).drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(d.result.as_str(), "continue", "{d:?}");
    assert!(d.warnings.iter().any(|w| w.contains("DefaultResult CONTINUE")), "{d:?}");
    assert_eq!(calls.complete.num_calls(), 1);
    let synced = store.instances(&[ID.to_owned()]).await.expect("records");
    assert!(synced.iter().all(|r| r.last_synced_gen == 0), "never recorded as synced: {synced:?}");
}

#[tokio::test]
async fn the_health_wait_starts_when_the_instance_is_registered_not_when_it_was_meant_to_be() {
    use TargetHealthStateEnum::Initial;
    use aws_sdk_elasticloadbalancingv2::operation::register_targets::RegisterTargetsError;
    // The first RegisterTargets fails (after the intent is on record); the
    // next drive comes five minutes later.
    let register = mock!(aws_sdk_elasticloadbalancingv2::Client::register_targets)
        .sequence()
        .error(|| RegisterTargetsError::generic(ErrorMetadata::builder().code("ServiceUnavailable").build()))
        .output(|| RegisterTargetsOutput::builder().build())
        .repeatedly()
        .build();
    let heartbeat = mock!(aws_sdk_autoscaling::Client::record_lifecycle_action_heartbeat)
        .then_output(|| RecordLifecycleActionHeartbeatOutput::builder().build());
    let (clients, calls) =
        clients_with("Pending:Wait", vec![None, Some(Initial)], ok_complete(), heartbeat, "ABANDON", register);
    let (store, settings, clock) = (MemoryTable::default(), settings(), ManualClock::at(T0));
    let failed = gate(&clients, &store, &settings, &clock).drive(&action(Transition::Launching)).await;
    assert!(failed.is_err(), "the registration failed: {failed:?}");
    clock.advance(300_000);
    let d = gate(&clients, &store, &settings, &clock).drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(d.result.as_str(), "in_progress", "registered now, so waited for (interval x threshold 30 s): {d:?}");
    assert!(d.reason.as_deref().unwrap_or_default().contains("initial"), "{d:?}");
    assert_eq!((calls.register.num_calls(), calls.complete.num_calls()), (2, 0));
}

#[tokio::test]
async fn a_re_trigger_that_could_not_be_queued_is_not_counted_as_on_its_way() {
    use TargetHealthStateEnum::Initial;
    use aws_sdk_sqs::operation::send_message::SendMessageError;
    let (mut clients, _) = clients("Pending:Wait", vec![Some(Initial)], ok_complete());
    let refused = mock!(aws_sdk_sqs::Client::send_message)
        .then_error(|| SendMessageError::generic(ErrorMetadata::builder().code("AccessDenied").build()));
    clients.sqs = mock_client!(aws_sdk_sqs, &[&refused]);
    let settings =
        GateSettings { retrigger: Some("https://sqs.us-east-1.amazonaws.com/123456789012/q".into()), ..settings() };
    let (store, clock) = (MemoryTable::default(), ManualClock::at(T0));
    let d = gate(&clients, &store, &settings, &clock).drive(&action(Transition::Launching)).await.expect("drive");
    assert_eq!(d.result.as_str(), "in_progress", "{d:?}");
    assert_eq!(refused.num_calls(), 1);
    use crate::lifecycle::store::RecordStore;
    let (record, _) = store.lifecycle(ID).await.expect("record");
    let at = record.action.and_then(|a| a.retrigger_at);
    assert_eq!(at, None, "the next drive may queue one again, not wait for a message that never left");
}
