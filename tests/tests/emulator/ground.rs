//! The ground the other tests stand on: the event router and the local
//! agent driving in-process handlers on the test clock, the call recorder
//! attributing every AWS call to its function, and Lambda's retry rules in
//! the router.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper::clock::Clock;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::Caller;
use fleetkeeper_tests::fleet::{FleetSpec, upload};
use fleetkeeper_tests::router::{InProcess, Path};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::{Value, json};

use crate::world::World;

#[tokio::test]
async fn routed_events_and_the_local_agent_gate_launches_and_sync_a_burst() {
    let mut w = World::new(FleetSpec { instances: 2, ..FleetSpec::default() }).await;
    w.settle().await;
    let members = w.fleet.members(&w.clients).await;
    assert!(members.iter().all(|m| m.lifecycle_state == "InService"), "{members:?}");
    assert_eq!(w.fleet.targets(&w.clients).await.len(), 2);
    for m in &members {
        assert!(w.current(&m.id).is_some(), "{}: the catch-up put a release in place", m.id);
    }

    let keys: Vec<String> = (0..25).map(|i| format!("burst/f{i}.php")).collect();
    upload(&w.clients, &w.fleet, &keys).await;
    w.settle().await;
    let batches: Vec<_> = w.router.log.iter().filter(|d| d.path == Path::Sqs).collect();
    assert_eq!(batches.len(), 3, "25 events in SQS batches of 10");
    let waves: std::collections::BTreeSet<String> =
        w.agent.runs.iter().filter(|r| r.generation != "0").map(|r| r.generation.clone()).collect();
    let expected: std::collections::BTreeSet<String> = ["1".to_owned(), "3".to_owned()].into();
    assert_eq!(waves, expected, "the first batch's wave, then one follow-up for the two coalesced batches");
    assert!(w.agent.runs.iter().all(|r| r.ok()), "every run succeeded");
    for m in &members {
        let release = w.agent.on_instance(&m.id, &w.fleet.destination).join("current/burst/f24.php");
        assert!(release.exists(), "{}: the last upload is live", m.id);
    }
    assert!(w.agent.overlaps().is_empty(), "runs never overlap on one instance");
    assert!(w.router.dead_letters.is_empty() && w.router.failed_async.is_empty());
}

#[tokio::test]
async fn every_aws_call_is_attributed_to_its_function() {
    let mut w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    w.settle().await;
    let gate = w.emulator.calls(Caller::Function(Component::LifecycleHook)).await;
    assert_eq!(gate.of("CompleteLifecycleAction"), 1, "{:?}", gate.operations());
    assert_eq!(gate.of("SendCommand"), 1, "one catch-up");
    let sync = w.emulator.calls(Caller::Function(Component::CodebaseSync)).await;
    assert_eq!(sync.total(), 0, "no upload event yet: codebase-sync made no call");
    let agent = w.emulator.calls(Caller::Agent).await;
    assert!(agent.of("ListObjectsV2") >= 1, "the instance's aws s3 sync: {:?}", agent.operations());
    assert_eq!(agent.of("CompleteLifecycleAction"), 0);

    // A real bootstrap signs with the function's own key too.
    let mut process = LambdaProcess::start_function(&w.emulator, Component::MountTargets, &w.fleet.env()).await;
    w.emulator.forget_calls(Caller::Function(Component::MountTargets)).await;
    process.invoke(fleetkeeper_tests::events::scheduled()).await.response();
    process.stop().await;
    let mounts = w.emulator.calls(Caller::Function(Component::MountTargets)).await;
    assert_eq!(mounts.of("DescribeFileSystems"), 1, "{:?}", mounts.operations());
    assert_eq!(mounts.errors(), 0);
}

#[tokio::test]
async fn the_test_clock_moves_handlers_and_emulator_together() {
    let w = World::new(FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let before = w.clock.now_ms();
    w.clock.sleep(Duration::from_secs(3 * 3600)).await;
    assert!(w.clock.now_ms() >= before + 3 * 3_600_000);
    assert_eq!(w.emulator.clock_offset_ms().await, 3 * 3_600_000);
    let other = Emulator::from_env();
    assert_eq!(other.clock_offset_ms().await, 0, "another test's account keeps its own clock");
}

fn failing(times: u32, calls: Arc<AtomicU32>) -> InProcess {
    InProcess(Box::new(move |_payload: Value| {
        let calls = calls.clone();
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= times { Err(format!("attempt {n} failed")) } else { Ok(json!({"ok": n})) }
        })
    }))
}

#[tokio::test]
async fn async_deliveries_are_retried_twice_then_kept_as_failed() {
    let mut w = World::new(FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let calls = Arc::new(AtomicU32::new(0));
    w.router.route(Component::MountTargets, failing(2, calls.clone()));
    let first = w.router.tick().await;
    let mine = |d: &&fleetkeeper_tests::router::Delivery| d.to == Component::MountTargets;
    assert!(first.iter().filter(mine).all(|d| d.reply.is_err() && d.attempt == 1));
    w.router.pump().await;
    let third = w.router.pump().await;
    assert!(third.iter().filter(mine).any(|d| d.attempt == 3 && d.reply.is_ok()), "the second retry succeeds");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(w.router.failed_async.is_empty());

    let always = Arc::new(AtomicU32::new(0));
    w.router.route(Component::MountTargets, failing(u32::MAX, always.clone()));
    w.router.tick().await;
    w.router.pump().await;
    w.router.pump().await;
    w.router.pump().await;
    assert_eq!(always.load(Ordering::SeqCst), 3, "one try and two retries");
    assert_eq!(w.router.failed_async.len(), 1, "then the on-failure destination");
}

#[tokio::test]
async fn a_failing_sqs_batch_returns_to_the_queue_until_the_dead_letter_queue() {
    let mut w = World::new(FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let calls = Arc::new(AtomicU32::new(0));
    w.router.route(Component::CodebaseSync, failing(u32::MAX, calls.clone()));
    upload(&w.clients, &w.fleet, &["a.php".into(), "b.php".into()]).await;
    for _ in 0..8 {
        w.router.pump().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), w.router.max_receive, "received maxReceiveCount times");
    assert_eq!(w.router.dead_letters.len(), 2, "both messages dead-lettered");
    assert!(w.router.idle());
}
