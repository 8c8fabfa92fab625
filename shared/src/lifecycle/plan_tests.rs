//! Every branch of the lifecycle planner, and which observations it asks for.

use super::plan::*;
use super::record::{CatchUp, PlanRecord};
use crate::events::{LifecycleAction, Place, Transition};

const NOW: u64 = 10_000_000;
const TG1: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/a/1";
const TG2: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/b/2";

fn action(transition: Transition, origin: Place, destination: Place) -> LifecycleAction {
    LifecycleAction {
        auto_scaling_group_name: "web".into(),
        lifecycle_hook_name: "fk".into(),
        instance_id: "i-0123456789abcdef0".into(),
        transition,
        token: Some("t".into()),
        origin: Some(origin),
        destination: Some(destination),
        notification_metadata: None,
        time_ms: None,
    }
}

/// The same action found by the reconcile (no token).
fn found(a: LifecycleAction) -> LifecycleAction {
    LifecycleAction { token: None, ..a }
}

fn launch() -> LifecycleAction {
    action(Transition::Launching, Place::Ec2, Place::AutoScalingGroup)
}

fn terminate() -> LifecycleAction {
    action(Transition::Terminating, Place::AutoScalingGroup, Place::Ec2)
}

fn target(arn: &str, health: Health) -> TargetObs {
    TargetObs { arn: arn.into(), health, healthy_within_ms: 60_000, drain_within_ms: 300_000 }
}

/// A world where everything is ready.
fn ready(state: &str) -> Observed {
    Observed {
        active: Some(true),
        hook: Some(HookObs { global_timeout_ms: 172_800_000, default_result: Completion::Abandon }),
        lifecycle_state: Some(Some(state.into())),
        instance: Some(InstanceState::Running { zone: "us-east-1a".into() }),
        mount: Some(MountState::Ready),
        agent_online: Some(true),
        catch_up: Some(CatchUpState::Succeeded),
        targets: Some(vec![target(TG1, Health::Healthy)]),
    }
}

fn synced() -> PlanRecord {
    PlanRecord {
        started_at: NOW - 60_000,
        catch_up: Some(CatchUp {
            attempt: 1,
            generation: 7,
            epoch: String::new(),
            command_id: Some("c".into()),
            sent_at: NOW - 30_000,
            manifest: None,
            rollback: false,
            keep: vec![],
        }),
        registered: vec![],
        registered_at: None,
        drain_started_at: None,
    }
}

fn fresh() -> PlanRecord {
    PlanRecord { started_at: NOW, ..PlanRecord::default() }
}

const ALL: Duties = Duties { mount: true, catch_up: true };

/// Runs the planner against `world`, answering each observation it asks
/// for; returns its decision and the stages it asked for.
fn decide(a: &LifecycleAction, r: &PlanRecord, world: &Observed, duties: Duties, now: u64) -> (Next, Vec<Stage>) {
    let mut seen = Observed::default();
    let mut asked = Vec::new();
    loop {
        match next(a, r, &seen, duties, now) {
            Next::Observe { stage } => {
                assert!(!asked.contains(&stage), "asked twice for {stage:?}");
                asked.push(stage);
                match stage {
                    Stage::Active => seen.active = world.active,
                    Stage::Hook => seen.hook = world.hook,
                    Stage::Lifecycle => seen.lifecycle_state = world.lifecycle_state.clone(),
                    Stage::Instance => seen.instance = world.instance.clone(),
                    Stage::Mount => seen.mount = world.mount.clone(),
                    Stage::Agent => seen.agent_online = world.agent_online,
                    Stage::CatchUp => seen.catch_up = world.catch_up.clone(),
                    Stage::Targets => seen.targets = world.targets.clone(),
                }
            }
            other => return (other, asked),
        }
    }
}

fn is_abandon(n: &Next, needle: &str) -> bool {
    matches!(n, Next::Abandon { reason, .. } if reason.contains(needle))
}

fn is_wait(n: &Next, needle: &str) -> bool {
    matches!(n, Next::Wait { reason, .. } if reason.contains(needle))
}

fn is_refused(n: &Next, needle: &str) -> bool {
    matches!(n, Next::Refused { reason } if reason.contains(needle))
}

#[test]
fn a_ready_launch_continues_after_every_check() {
    let (n, asked) = decide(&launch(), &synced(), &ready("Pending:Wait"), ALL, NOW);
    assert_eq!(n, Next::Continue { warnings: vec![] });
    use Stage::*;
    assert_eq!(asked, [Active, Hook, Instance, Mount, Agent, CatchUp, Targets], "the token proves the action");
    let (n, asked) = decide(&found(launch()), &synced(), &ready("Pending:Wait"), ALL, NOW);
    assert_eq!(n, Next::Continue { warnings: vec![] });
    assert_eq!(asked, [Active, Hook, Lifecycle, Instance, Mount, Agent, CatchUp, Targets], "found: the state too");
}

#[test]
fn a_new_launch_sends_its_catch_up_and_looks_no_further() {
    let (n, asked) = decide(&launch(), &fresh(), &ready("Pending:Wait"), ALL, NOW);
    assert_eq!(n, Next::SendCatchUp { attempt: 1 });
    assert!(!asked.contains(&Stage::Targets) && !asked.contains(&Stage::CatchUp), "{asked:?}");
}

#[test]
fn an_action_the_hook_no_longer_holds_costs_one_look() {
    let mut world = ready("Pending:Wait");
    world.active = Some(false);
    for a in [launch(), terminate(), found(launch())] {
        let (n, asked) = decide(&a, &synced(), &world, ALL, NOW);
        assert!(matches!(&n, Next::NotActive { reason } if reason.contains("holds no action")), "{n:?}");
        assert_eq!(asked, [Stage::Active]);
    }
}

#[test]
fn an_action_found_without_its_token_must_be_the_one_its_state_stands_for() {
    for state in [Some("InService"), Some("Terminating:Wait"), Some("Pending"), Some("Warmed:Pending:Wait"), None] {
        let mut world = ready("x");
        world.lifecycle_state = Some(state.map(str::to_owned));
        let (n, asked) = decide(&found(launch()), &synced(), &world, ALL, NOW);
        assert!(matches!(&n, Next::NotActive { reason } if reason.starts_with("lifecycle state")), "{state:?}: {n:?}");
        assert_eq!(asked, [Stage::Active, Stage::Hook, Stage::Lifecycle]);
    }
    // The same Warmed:Pending:Wait is a launch into the pool, or a scale-in back to it.
    let into_pool = found(action(Transition::Launching, Place::Ec2, Place::WarmPool));
    let back_to_pool = found(action(Transition::Terminating, Place::AutoScalingGroup, Place::WarmPool));
    let world = ready("Warmed:Pending:Wait");
    assert_eq!(decide(&into_pool, &fresh(), &world, ALL, NOW).0, Next::SendCatchUp { attempt: 1 });
    assert!(matches!(decide(&back_to_pool, &fresh(), &world, ALL, NOW).0, Next::Deregister { .. }));
    // A terminate found in Pending:Wait is not active.
    let (n, _) = decide(&found(terminate()), &fresh(), &ready("Pending:Wait"), ALL, NOW);
    assert!(matches!(n, Next::NotActive { .. }));
}

#[test]
fn a_gone_instance_is_abandoned_and_never_registered() {
    // EC2 not listing a new instance is eventual consistency first, then gone.
    let mut world = ready("Pending:Wait");
    world.instance = Some(InstanceState::NotFound);
    assert!(is_wait(&decide(&launch(), &fresh(), &world, ALL, NOW).0, "does not list the instance yet"));
    let (n, _) = decide(&launch(), &fresh(), &world, ALL, NOW + NOT_FOUND_GRACE_MS);
    assert!(is_abandon(&n, "has not known the instance"), "{n:?}");

    let mut world = ready("Pending:Wait");
    world.instance = Some(InstanceState::Gone);
    let mut record = fresh();
    record.registered = vec![TG1.into()];
    let (n, asked) = decide(&launch(), &record, &world, ALL, NOW);
    assert_eq!(
        n,
        Next::Abandon {
            reason: "the instance is gone (shutting down or terminated)".into(),
            deregister: vec![TG1.into()],
            class: None,
        }
    );
    assert!(!asked.contains(&Stage::Targets));
}

#[test]
fn a_pending_or_stopped_instance_waits() {
    for (state, needle) in [(InstanceState::Pending, "pending"), (InstanceState::Stopped, "stopped")] {
        let mut world = ready("Pending:Wait");
        world.instance = Some(state);
        assert!(is_wait(&decide(&launch(), &fresh(), &world, ALL, NOW).0, needle));
    }
}

#[test]
fn the_mount_target_is_ensured_first() {
    let mut world = ready("Pending:Wait");
    world.mount = Some(MountState::InProgress);
    assert!(is_wait(&decide(&launch(), &fresh(), &world, ALL, NOW).0, "mount target"));
    world.mount = Some(MountState::Refused("One Zone file system in us-east-1b".into()));
    let (n, _) = decide(&launch(), &fresh(), &world, ALL, NOW);
    assert!(is_refused(&n, "One Zone"), "a refusal holds the instance, never ABANDONs it: {n:?}");
    // Without a file system configured, no mount target is looked at.
    let (n, asked) = decide(&launch(), &synced(), &world, Duties { mount: false, catch_up: true }, NOW);
    assert_eq!(n, Next::Continue { warnings: vec![] });
    assert!(!asked.contains(&Stage::Mount));
}

#[test]
fn the_agent_is_waited_for_within_a_bound() {
    let mut world = ready("Pending:Wait");
    world.agent_online = Some(false);
    assert!(is_wait(&decide(&launch(), &fresh(), &world, ALL, NOW).0, "SSM agent"));
    let late = NOW + AGENT_WAIT_MS;
    let (n, _) = decide(&launch(), &fresh(), &world, ALL, late);
    assert!(is_refused(&n, "has not come Online") && is_refused(&n, "instance profile"), "{n:?}");
    // Once the catch-up is sent, a flapping agent does not stop the wait on its command.
    let (n, asked) = decide(&launch(), &synced(), &world, ALL, late);
    assert_eq!(n, Next::Continue { warnings: vec![] });
    assert!(asked.contains(&Stage::CatchUp));
}

#[test]
fn the_catch_up_is_waited_for_retried_once_then_abandoned() {
    let world = |state| {
        let mut w = ready("Pending:Wait");
        w.catch_up = Some(state);
        w
    };
    let record = synced();
    assert!(is_wait(&decide(&launch(), &record, &world(CatchUpState::Running), ALL, NOW).0, "generation 7"));
    let failed = world(CatchUpState::Failed("Failed".into()));
    assert_eq!(decide(&launch(), &record, &failed, ALL, NOW).0, Next::SendCatchUp { attempt: 2 });
    let mut second = record.clone();
    if let Some(c) = second.catch_up.as_mut() {
        c.attempt = 2;
    }
    let (n, _) = decide(&launch(), &second, &failed, ALL, NOW);
    assert!(is_abandon(&n, "failed twice") && is_abandon(&n, "replace instances in a loop"), "{n:?}");
    assert!(matches!(n, Next::Abandon { class: Some(CATCH_UP_FAILED), .. }), "the breaker counts it: {n:?}");
}

#[test]
fn a_catch_up_being_sent_is_given_a_grace_then_sent_again_if_it_never_was() {
    let mut record = synced();
    if let Some(c) = record.catch_up.as_mut() {
        c.command_id = None;
        c.sent_at = NOW - 1_000;
    }
    let (n, asked) = decide(&launch(), &record, &ready("Pending:Wait"), ALL, NOW);
    assert!(is_wait(&n, "being sent"));
    assert!(!asked.contains(&Stage::CatchUp));
    let mut world = ready("Pending:Wait");
    world.catch_up = Some(CatchUpState::Missing);
    assert_eq!(decide(&launch(), &record, &world, ALL, NOW + SEND_GRACE_MS).0, Next::SendCatchUp { attempt: 1 });
    world.catch_up = Some(CatchUpState::Succeeded);
    assert_eq!(decide(&launch(), &record, &world, ALL, NOW + SEND_GRACE_MS).0, Next::Continue { warnings: vec![] });
}

#[test]
fn into_the_warm_pool_prepares_without_registering() {
    let into = action(Transition::Launching, Place::Ec2, Place::WarmPool);
    let (n, _) = decide(&into, &fresh(), &ready("Warmed:Pending:Wait"), ALL, NOW);
    assert_eq!(n, Next::SendCatchUp { attempt: 1 });
    let (n, asked) = decide(&into, &synced(), &ready("Warmed:Pending:Wait"), ALL, NOW);
    assert_eq!(n, Next::Continue { warnings: vec![] });
    assert!(!asked.contains(&Stage::Targets), "never registered from the pool");
}

#[test]
fn out_of_the_warm_pool_catches_up_again_then_registers() {
    // Leaving the pool is another action (its own record state): no catch-up yet.
    let out = action(Transition::Launching, Place::WarmPool, Place::AutoScalingGroup);
    let (n, _) = decide(&out, &fresh(), &ready("Pending:Wait"), ALL, NOW);
    assert_eq!(n, Next::SendCatchUp { attempt: 1 });
    let mut world = ready("Pending:Wait");
    world.targets = Some(vec![target(TG1, Health::Absent)]);
    let (n, _) = decide(&out, &synced(), &world, ALL, NOW);
    assert_eq!(n, Next::Register { target_groups: vec![TG1.into()] });
}

#[test]
fn a_draining_target_of_a_launch_is_registered_again() {
    let mut world = ready("Pending:Wait");
    world.targets = Some(vec![target(TG1, Health::Draining)]);
    assert_eq!(decide(&launch(), &synced(), &world, ALL, NOW).0, Next::Register { target_groups: vec![TG1.into()] });
}

#[test]
fn registration_is_only_for_the_missing_groups_then_health_is_waited_for() {
    let mut world = ready("Pending:Wait");
    world.targets = Some(vec![target(TG1, Health::Healthy), target(TG2, Health::Absent)]);
    let record = synced();
    assert_eq!(decide(&launch(), &record, &world, ALL, NOW).0, Next::Register { target_groups: vec![TG2.into()] });

    world.targets = Some(vec![target(TG1, Health::Healthy), target(TG2, Health::NotYet("initial".into()))]);
    let mut registered = record.clone();
    registered.registered = vec![TG2.into()];
    registered.registered_at = Some(NOW);
    assert!(is_wait(&decide(&launch(), &registered, &world, ALL, NOW + 30_000).0, "initial"));
    let late = NOW + 60_000 + TARGET_MARGIN_MS;
    let (n, _) = decide(&launch(), &registered, &world, ALL, late);
    assert_eq!(
        n,
        Next::Abandon {
            reason: format!("{TG2} did not report the instance healthy in time (still initial)"),
            deregister: vec![TG2.into()],
            class: Some(NEVER_HEALTHY),
        },
        "a failure after registration deregisters first"
    );
}

#[test]
fn a_group_not_in_use_proceeds_with_a_warning() {
    let mut world = ready("Pending:Wait");
    world.targets = Some(vec![target(TG1, Health::NotInUse)]);
    let (n, _) = decide(&launch(), &synced(), &world, ALL, NOW);
    assert!(
        matches!(&n, Next::Continue { warnings } if warnings.len() == 1 && warnings[0].contains("Target.NotInUse")),
        "{n:?}"
    );
}

#[test]
fn with_only_attached_groups_there_is_nothing_to_register() {
    let mut world = ready("Pending:Wait");
    world.targets = Some(vec![]);
    assert_eq!(decide(&launch(), &synced(), &world, ALL, NOW).0, Next::Continue { warnings: vec![] });
}

#[test]
fn a_plain_launch_without_codebase_or_file_system_only_registers() {
    let (n, asked) = decide(&launch(), &fresh(), &ready("Pending:Wait"), Duties::default(), NOW);
    assert_eq!(n, Next::Continue { warnings: vec![] });
    assert_eq!(asked, [Stage::Active, Stage::Hook, Stage::Instance, Stage::Targets]);
}

#[test]
fn near_the_global_timeout_the_hook_s_default_result_applies() {
    let mut record = synced();
    record.registered = vec![TG1.into()];
    let near = record.started_at + 172_800_000 - GLOBAL_MARGIN_MS;
    let (n, asked) = decide(&launch(), &record, &ready("Pending:Wait"), ALL, near);
    assert_eq!(
        n,
        Next::Abandon {
            reason: "the lifecycle hook's global timeout is near: its DefaultResult ABANDON applies".into(),
            deregister: vec![TG1.into()],
            class: None,
        }
    );
    assert_eq!(asked, [Stage::Active, Stage::Hook]);
    let mut world = ready("Pending:Wait");
    world.hook = Some(HookObs { global_timeout_ms: 172_800_000, default_result: Completion::Continue });
    let (n, _) = decide(&launch(), &record, &world, ALL, near);
    assert!(matches!(&n, Next::Continue { warnings } if warnings[0].contains("DefaultResult CONTINUE")), "{n:?}");
    // A refused launch holds until then.
    world.mount = Some(MountState::Refused("wrong VPC".into()));
    assert!(is_refused(&decide(&launch(), &record, &world, ALL, near - 1).0, "wrong VPC"));

    // Terminate: still deregistered (one call), only the drain is cut short.
    let mut world = ready("Terminating:Wait");
    world.targets = Some(vec![target(TG1, Health::Healthy)]);
    let late = NOW + 172_800_000;
    assert_eq!(
        decide(&terminate(), &fresh(), &world, ALL, late).0,
        Next::Deregister { target_groups: vec![TG1.into()] }
    );
    world.targets = Some(vec![target(TG1, Health::Draining)]);
    let (n, _) = decide(&terminate(), &fresh(), &world, ALL, late);
    assert!(matches!(n, Next::Continue { .. }), "{n:?}");
}

#[test]
fn terminate_deregisters_then_waits_for_the_drain_within_its_delay() {
    let mut world = ready("Terminating:Wait");
    world.targets = Some(vec![target(TG1, Health::Healthy), target(TG2, Health::Absent)]);
    let (n, asked) = decide(&terminate(), &fresh(), &world, ALL, NOW);
    assert_eq!(n, Next::Deregister { target_groups: vec![TG1.into()] });
    assert_eq!(asked, [Stage::Active, Stage::Hook, Stage::Targets], "terminate never syncs or mounts");

    world.targets = Some(vec![target(TG1, Health::Draining)]);
    let mut draining = fresh();
    draining.drain_started_at = Some(NOW);
    assert!(is_wait(&decide(&terminate(), &draining, &world, ALL, NOW + 100_000).0, "draining"));
    let (n, _) = decide(&terminate(), &draining, &world, ALL, NOW + 300_000 + TARGET_MARGIN_MS);
    assert!(
        matches!(&n, Next::Continue { warnings } if warnings[0].contains("past its deregistration delay")),
        "{n:?}"
    );

    world.targets = Some(vec![target(TG1, Health::Absent)]);
    assert_eq!(decide(&terminate(), &draining, &world, ALL, NOW).0, Next::Continue { warnings: vec![] });
}

#[test]
fn terminating_out_of_the_warm_pool_is_a_terminate() {
    let from_pool = action(Transition::Terminating, Place::WarmPool, Place::Ec2);
    let mut world = ready("Warmed:Terminating:Wait");
    world.targets = Some(vec![]);
    assert_eq!(decide(&from_pool, &fresh(), &world, ALL, NOW).0, Next::Continue { warnings: vec![] });
}

#[test]
fn a_scale_in_back_into_the_warm_pool_is_deregistered_drained_and_completed() {
    let back = action(Transition::Terminating, Place::AutoScalingGroup, Place::WarmPool);
    let mut world = ready("Warmed:Pending:Wait");
    world.targets = Some(vec![target(TG1, Health::Healthy)]);
    let (n, asked) = decide(&back, &fresh(), &world, ALL, NOW);
    assert_eq!(n, Next::Deregister { target_groups: vec![TG1.into()] });
    assert!(!asked.contains(&Stage::CatchUp) && !asked.contains(&Stage::Mount), "{asked:?}");
    world.targets = Some(vec![target(TG1, Health::Draining)]);
    let mut draining = fresh();
    draining.drain_started_at = Some(NOW);
    assert!(is_wait(&decide(&back, &draining, &world, ALL, NOW + 1_000).0, "draining"));
    world.targets = Some(vec![target(TG1, Health::Absent)]);
    assert_eq!(decide(&back, &draining, &world, ALL, NOW + 1_000).0, Next::Continue { warnings: vec![] });
}

#[test]
fn every_wait_says_when_to_look_again_but_a_running_command_s() {
    let mut world = ready("Pending:Wait");
    world.instance = Some(InstanceState::Pending);
    assert!(matches!(decide(&launch(), &fresh(), &world, ALL, NOW).0, Next::Wait { recheck_s: Some(15), .. }));
    let mut world = ready("Pending:Wait");
    world.catch_up = Some(CatchUpState::Running);
    let (n, _) = decide(&launch(), &synced(), &world, ALL, NOW);
    assert!(matches!(n, Next::Wait { recheck_s: None, .. }), "its status event continues it: {n:?}");
    let mut in_doubt = synced();
    if let Some(c) = in_doubt.catch_up.as_mut() {
        c.command_id = None;
        c.sent_at = NOW - SEND_GRACE_MS;
    }
    assert!(matches!(decide(&launch(), &in_doubt, &world, ALL, NOW).0, Next::Wait { recheck_s: Some(30), .. }));
    let mut world = ready("Terminating:Wait");
    world.targets = Some(vec![target(TG1, Health::Draining)]);
    let mut draining = fresh();
    draining.drain_started_at = Some(NOW);
    let (n, _) = decide(&terminate(), &draining, &world, ALL, NOW + 100_000);
    assert!(matches!(n, Next::Wait { recheck_s: Some(200), .. }), "the rest of the deregistration delay: {n:?}");
}
