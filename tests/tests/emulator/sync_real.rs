//! The codebase sync on the emulator as slow and strict as AWS: the review's
//! failing scenarios (`../shared/reviews/sync-path-2ca1350.md`), driven by the
//! event router and the local agent on the test clock.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use fleetkeeper::Component;
use fleetkeeper::clock::Clock;
use fleetkeeper::config::vars;
use fleetkeeper::ssm_document::history::{Claim, RunHistory};
use fleetkeeper::sync::state::{Op, WaveEnd};
use fleetkeeper::sync::store::{FleetStore, WaveRecord};
use fleetkeeper_tests::emulator::Caller;
use fleetkeeper_tests::fleet::{FleetSpec, lock_table};
use fleetkeeper_tests::inprocess::set_var;
use fleetkeeper_tests::router::Path;
use serde_json::Value;

use crate::world::World;

/// How often the schedules fire in these scenarios.
const SWEEP: Duration = Duration::from_secs(5 * 60);

fn plain(instances: i32) -> FleetSpec {
    FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() }
}

/// The codebase-sync responses of a settle round.
fn dispatches(deliveries: &[fleetkeeper_tests::router::Delivery]) -> Vec<Value> {
    deliveries
        .iter()
        .filter(|d| d.to == Component::CodebaseSync && d.path == Path::Sqs)
        .map(|d| d.reply.clone().unwrap_or_else(|e| serde_json::json!({"error": e})))
        .collect()
}

#[tokio::test]
async fn an_instance_lost_mid_wave_is_reported_gone_within_one_sweep() {
    let mut w = World::new(plain(3)).await;
    w.upload(&["v1.php"]).await;
    w.router.pump().await;
    let item = w.item().await;
    let wave = item.wave.clone().expect("a wave runs");
    let ids = w.instances().await;
    let lost = ids[2].clone();
    w.clients.ec2.terminate_instances().instance_ids(&lost).send().await.expect("terminate");
    w.settle().await;
    assert!(w.has(&ids[0], "v1.php") && w.has(&ids[1], "v1.php"));
    assert!(w.item().await.wave.is_some(), "the lost instance's invocation is still InProgress");

    w.clock.advance(SWEEP).await;
    w.tick().await;
    let item = w.item().await;
    assert_eq!(item.wave, None, "settled within one sweep, lease released");
    assert_eq!(item.completed_gen, wave.target, "the release is not blamed for an instance that went away");
    let record = w.wave(&wave.id).await;
    assert_eq!(record.end, Some(WaveEnd::Success));
    assert!(record.gone.contains(&lost), "{record:?}");
}

#[tokio::test]
async fn agents_that_lost_their_connection_do_not_hold_the_wave() {
    let mut w = World::new(plain(2)).await;
    w.upload(&["v1.php"]).await;
    w.router.pump().await;
    let wave = w.item().await.wave.expect("a wave runs");
    // Both instances stay in service but their agents never answer again.
    for id in w.instances().await {
        w.emulator.set_agent(&id, Some("ConnectionLost")).await;
    }
    // Their invocations would wait for the commands' expiry (2 hours): the
    // sweep stops waiting for agents that lost their connection.
    w.clock.advance(SWEEP).await;
    w.tick().await;
    let item = w.item().await;
    assert_eq!(item.wave, None, "one sweep later the wave is over");
    let record = w.wave(&wave.id).await;
    assert_eq!(record.end, Some(WaveEnd::Failure), "it reached nobody: never a success");
    assert_eq!(record.unreachable.len(), 2, "{record:?}");
    assert!(record.blame.is_some_and(|b| b.contains("no instance was reached")));
    let records = w.store().instances(&w.instances().await).await.expect("records");
    assert!(records.iter().all(|r| r.sync_failures == 0), "unreachable is nobody's failure");
}

#[tokio::test]
async fn a_reset_demand_counter_never_makes_an_instance_skip_a_sync() {
    let mut w = World::new(plain(1)).await;
    for n in 1..=3 {
        w.upload(&[&format!("before-{n}.php")]).await;
        w.settle().await;
    }
    let id = w.instances().await.remove(0);
    assert!(w.has(&id, "before-3.php"));
    assert_eq!(w.item().await.completed_gen, 3);

    // The lock table is recreated (a stack redeployed): demand starts at 1 again.
    let table = lock_table(&w.clients, &format!("{}-new", w.fleet.lock_table)).await;
    let mut env = w.env.clone();
    set_var(&mut env, vars::LOCK_TABLE, &table);
    for c in [Component::CodebaseSync, Component::SyncCompletion, Component::LifecycleHook] {
        w.reroute(c, &env).await;
    }
    w.upload(&["after-reset.php"]).await;
    let round = w.settle().await;
    assert!(round.runs.iter().all(|r| r.ok()), "{:?}", round.runs.iter().map(|r| &r.run.stdout).collect::<Vec<_>>());
    assert!(w.has(&id, "after-reset.php"), "the live tree has the new content, never 'superseded'");
}

#[tokio::test]
async fn an_instance_left_out_of_a_wave_is_caught_up_within_one_sweep() {
    let mut w = World::new(plain(2)).await;
    let ids = w.instances().await;
    w.emulator.set_agent(&ids[1], Some("ConnectionLost")).await;
    w.upload(&["v1.php"]).await;
    w.settle().await;
    assert!(w.has(&ids[0], "v1.php"));
    assert!(!w.has(&ids[1], "v1.php"), "its agent was offline at the wave's start");
    let item = w.item().await;
    assert!(item.wave.is_none(), "the wave did not wait for it");

    w.emulator.set_agent(&ids[1], Some("Online")).await;
    w.clock.advance(SWEEP).await;
    w.tick().await;
    assert!(w.has(&ids[1], "v1.php"), "caught up by the next sweep");
    let records = w.store().instances(&ids).await.expect("records");
    assert!(records.iter().all(|r| r.last_synced_gen >= item.completed_gen), "{records:?}");
}

#[tokio::test]
async fn an_instance_attached_without_a_hook_is_caught_up_by_the_sweep() {
    let mut w = World::new(plain(1)).await;
    w.upload(&["v1.php"]).await;
    w.settle().await;
    let extra = w.fleet.launch_outside(&w.clients).await;
    w.clients
        .autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(&w.fleet.asg_name)
        .max_size(20)
        .send()
        .await
        .expect("update");
    w.clients
        .autoscaling
        .attach_instances()
        .auto_scaling_group_name(&w.fleet.asg_name)
        .instance_ids(&extra)
        .send()
        .await
        .expect("attach");
    w.clock.advance(SWEEP).await;
    w.tick().await;
    assert!(w.has(&extra, "v1.php"), "no lifecycle hook fires on AttachInstances: the sweep caught it up");
}

#[tokio::test]
async fn a_fleet_wide_failure_is_reported_loudly_and_quarantines_nobody() {
    let mut w = World::new(plain(3)).await;
    let ids = w.instances().await;
    for id in &ids {
        w.emulator.set_agent_version(id, "Online", "3.1.0.0").await;
    }
    for n in 1..=4 {
        w.upload(&[&format!("v{n}.php")]).await;
        w.settle().await;
        w.clock.advance(SWEEP).await;
        w.tick().await;
    }
    let item = w.item().await;
    assert_eq!(item.completed_gen, 0, "never reported as synced");
    let records = w.store().instances(&ids).await.expect("records");
    assert!(records.iter().all(|r| !r.quarantined()), "nobody quarantined: {records:?}");
    let last = w.router.log.iter().rev().find_map(|d| match (&d.reply, d.to) {
        (Ok(v), Component::CodebaseSync | Component::SyncCompletion) if v.to_string().contains("configuration") => {
            Some(v.clone())
        }
        _ => None,
    });
    assert!(last.is_some(), "a response says it is a configuration failure");
}

#[tokio::test]
async fn a_shutting_down_instance_still_online_does_not_abort_the_wave() {
    let mut w = World::new(plain(3)).await;
    let ids = w.instances().await;
    // A hookless termination: the group and SSM have not noticed yet.
    w.clients.ec2.terminate_instances().instance_ids(&ids[2]).send().await.expect("terminate");
    w.upload(&["v1.php"]).await;
    let round = w.settle().await;
    let answers = dispatches(&round.deliveries);
    assert!(answers.iter().all(|a| a.get("error").is_none()), "{answers:?}");
    assert!(w.has(&ids[0], "v1.php") && w.has(&ids[1], "v1.php"));
    let item = w.item().await;
    assert_eq!((item.completed_gen, item.wave.is_none()), (1, true), "{item:?}");
}

#[tokio::test]
async fn an_error_after_winning_the_lease_leaves_the_wave_resumable_at_once() {
    let mut w = World::new(plain(2)).await;
    // The first delivery meets an SSM that does not answer.
    let target = crate::targets::in_process_broken_ssm(&w.emulator, Component::CodebaseSync, &w.env, &w.clock).await;
    w.router.route(Component::CodebaseSync, target);
    w.upload(&["v1.php"]).await;
    let first = w.router.pump().await;
    assert!(first.iter().any(|d| d.to == Component::CodebaseSync && d.reply.is_err()), "the delivery failed");
    // SQS redelivers (no time passes): a healthy invocation must not find a stuck lease.
    w.reroute(Component::CodebaseSync, &w.env.clone()).await;
    w.settle().await;
    let ids = w.instances().await;
    assert!(ids.iter().all(|id| w.has(id, "v1.php")), "synced without waiting for the lease to expire");
}

#[tokio::test]
async fn only_the_winner_lists_the_codebase() {
    let mut w = World::new(plain(1)).await;
    let keys: Vec<String> = (0..40).map(|i| format!("burst/{i}.php")).collect();
    fleetkeeper_tests::fleet::upload(&w.clients, &w.fleet, &keys).await;
    w.router.pump().await;
    let calls = w.emulator.calls(Caller::Function(Component::CodebaseSync)).await;
    assert_eq!(calls.of("ListObjectsV2"), 1, "4 invocations, 1 winner: {:?}", calls.0);
}

#[tokio::test]
async fn a_dead_senders_wave_is_taken_over_by_its_comment() {
    let mut w = World::new(plain(1)).await;
    let store = w.store();
    store
        .apply(&Op::Demand {
            count: 1,
            epoch: fleetkeeper::ssm_document::new_epoch(),
            changes: None,
            allow_shrink: false,
        })
        .await
        .expect("demand");
    let now = w.clock.now_ms() + 123; // never a whole second
    let started =
        store.apply(&Op::Start { wave_id: "dead".into(), now, lease_ms: 60_000, quiet: None }).await.expect("start");
    assert!(matches!(started, fleetkeeper::sync::store::Applied::Won(_)));
    store
        .put_wave(&WaveRecord {
            wave_id: "dead".into(),
            target: 1,
            instances: w.instances().await,
            ..WaveRecord::default()
        })
        .await
        .expect("record");
    // The sender died before sending anything; its lease runs out.
    w.clock.advance(Duration::from_secs(120)).await;
    let round = w.tick().await;
    let sweeps: Vec<&Value> = round
        .deliveries
        .iter()
        .filter(|d| d.to == Component::SyncCompletion)
        .filter_map(|d| d.reply.as_ref().ok())
        .collect();
    assert!(!sweeps.is_empty(), "{:?}", round.deliveries.iter().map(|d| &d.reply).collect::<Vec<_>>());
    let id = w.instances().await.remove(0);
    assert!(w.has(&id, "index.php"), "the demand was synced after the take-over");
}

#[tokio::test]
async fn a_held_generation_still_notices_a_changed_codebase() {
    let mut w = World::new(plain(1)).await;
    let id = w.instances().await.remove(0);
    w.emulator.set_agent_version(&id, "Online", "3.1.0.0").await;
    w.upload(&["broken.php"]).await;
    w.settle().await;
    w.clock.advance(SWEEP).await;
    w.tick().await;
    w.emulator.set_agent_version(&id, "Online", "3.3.2746.0").await;
    // A fix is uploaded, but its event is lost.
    w.router.drop_s3_events = true;
    w.upload(&["fixed.php"]).await;
    w.router.pump().await;
    w.router.drop_s3_events = false;
    w.clock.advance(SWEEP).await;
    w.tick().await;
    assert!(w.has(&id, "fixed.php"), "the sweep's fingerprint saw the change");
}

#[tokio::test]
async fn gone_and_unattempted_results_never_create_instance_items() {
    let w = World::new(plain(0)).await;
    let store = w.store();
    let ghost = "i-0123456789abcdef0".to_owned();
    store
        .record_results(
            fleetkeeper::ssm_document::history::Synced { epoch: "", generation: 1 },
            &[(ghost.clone(), fleetkeeper::ssm_document::history::InstanceResult::Gone)],
            1,
            3,
        )
        .await
        .expect("record");
    let raw = w
        .clients
        .dynamodb
        .get_item()
        .table_name(&w.fleet.lock_table)
        .key("pk", AttributeValue::S(format!("{}#instance#{ghost}", w.fleet.name)))
        .send()
        .await
        .expect("get");
    assert_eq!(raw.item, None, "an item without a TTL would live forever");
}

#[tokio::test]
async fn settling_a_thousand_instance_wave_costs_one_list_per_event() {
    let mut w = World::new(plain(1000)).await;
    w.upload(&["v1.php"]).await;
    w.router.pump().await;
    let wave = w.item().await.wave.expect("a wave runs");
    assert_eq!(wave.command_ids.len(), 20, "1,000 instances in chunks of 50");
    w.emulator.forget_calls(Caller::Function(Component::SyncCompletion)).await;
    for command in &wave.command_ids {
        w.emulator.set_invocation(command, None, "Success").await;
    }
    let round = w.settle().await;
    let events = round.deliveries.iter().filter(|d| d.to == Component::SyncCompletion).count() as u64;
    assert_eq!(events, 20);
    assert_eq!(w.item().await.completed_gen, wave.target);
    let calls = w.emulator.calls(Caller::Function(Component::SyncCompletion)).await;
    assert!(calls.of("ListCommands") <= events + 1, "one listing per status event: {:?}", calls.0);
    assert!(calls.of("ListCommandInvocations") <= 20, "the invocations once per command: {:?}", calls.0);
    assert!(calls.of("GetCommandInvocation") == 0, "{:?}", calls.0);
}

/// The document of the first release: its parameters are the "old set".
pub(crate) const PREVIOUS_DOCUMENT: &str = "tests/emulator/fixtures/sync-document-2ca1350.yaml";

#[tokio::test]
async fn todays_functions_sync_with_the_previous_document() {
    // The functions were updated before the document (an upgrade in
    // progress): they leave out the parameters it does not declare.
    let mut w = World::with_document(plain(2), PREVIOUS_DOCUMENT, |_| {}).await;
    w.upload(&["v1.php"]).await;
    let round = w.settle().await;
    assert!(
        !round.runs.is_empty() && round.runs.iter().all(|r| r.ok()),
        "{:?}",
        round.runs.iter().map(|r| &r.run.stderr).collect::<Vec<_>>()
    );
    for id in w.instances().await {
        assert!(w.has(&id, "v1.php"), "{id}");
    }
    let item = w.item().await;
    assert_eq!(item.completed_gen, item.requested_gen);
}

#[tokio::test]
async fn the_previous_parameter_set_runs_on_todays_document() {
    // A function from before the lineage parameter sends the old set.
    let mut w = World::new(plain(1)).await;
    let id = w.instances().await.remove(0);
    let old: std::collections::HashMap<String, Vec<String>> = [
        ("bucket", w.fleet.bucket.as_str()),
        ("prefix", w.fleet.prefix.as_str()),
        ("destination", w.fleet.destination.as_str()),
        ("excludes", "media/*"),
        ("generation", "1"),
        ("region", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), vec![v.to_owned()]))
    .collect();
    w.clients
        .ssm
        .send_command()
        .document_name(&w.fleet.document)
        .instance_ids(&id)
        .set_parameters(Some(old))
        .send()
        .await
        .expect("SSM accepts the old parameter set: every new parameter has a default");
    let round = w.settle().await;
    assert!(round.runs.iter().all(|r| r.ok()), "{:?}", round.runs.iter().map(|r| &r.run.stderr).collect::<Vec<_>>());
    assert!(w.has(&id, "index.php"));
}

/// The `(command id, comment)` of every command sent to `instance`.
async fn commands_to(w: &World, instance: &str) -> Vec<(String, String)> {
    let listed = w.clients.ssm.list_commands().instance_id(instance).send().await.expect("list_commands");
    listed
        .commands()
        .iter()
        .map(|c| (c.command_id().unwrap_or_default().to_owned(), c.comment().unwrap_or_default().to_owned()))
        .collect()
}

/// A sweep's claim made at `now`: it holds until the sweep's deadline (a
/// minute later) plus the listing's lag.
fn sweep_claim(now: u64) -> Claim {
    Claim::new(now, now + 60_000 + fleetkeeper::ssm_document::run::LISTING_LAG_MS)
}

/// A fleet of two whose second instance missed the wave of `v1.php` (its
/// agent was offline) and is online again: a catch-up is due.
async fn one_behind() -> (World, String) {
    let mut w = World::new(plain(2)).await;
    let ids = w.instances().await;
    w.emulator.set_agent(&ids[1], Some("ConnectionLost")).await;
    w.upload(&["v1.php"]).await;
    w.settle().await;
    assert!(!w.has(&ids[1], "v1.php"));
    w.emulator.set_agent(&ids[1], Some("Online")).await;
    (w, ids[1].clone())
}

#[tokio::test]
async fn a_catch_up_sent_but_never_recorded_is_adopted_not_sent_again() {
    // A sweep claimed the instance, sent its catch-up and died before
    // recording the command id (SIGKILL, timeout): the next sweep must not
    // send a second one to run beside it.
    let (mut w, behind) = one_behind().await;
    let item = w.item().await;
    let now = w.clock.now_ms();
    let claim = sweep_claim(now);
    assert!(w.store().claim_catch_up(&behind, &claim.encode(), item.requested_gen).await.expect("claim"));
    let wave_command = commands_to(&w, &w.instances().await[0]).await.remove(0).0;
    let parameters = w.clients.ssm.list_commands().command_id(&wave_command).send().await.expect("list").commands()[0]
        .parameters()
        .cloned()
        .unwrap_or_default();
    let orphan = w
        .clients
        .ssm
        .send_command()
        .document_name(&w.fleet.document)
        .instance_ids(&behind)
        .set_parameters(Some(parameters))
        .comment(claim.comment(&behind, item.requested_gen))
        .send()
        .await
        .expect("the dead sweep's command")
        .command()
        .and_then(|c| c.command_id())
        .unwrap_or_default()
        .to_owned();

    w.clock.advance(SWEEP).await;
    w.tick().await;
    let sent = commands_to(&w, &behind).await;
    assert_eq!(sent.iter().filter(|(_, c)| c.starts_with("fleetkeeper catch-up")).count(), 1, "{sent:?}");
    assert!(sent.iter().any(|(id, _)| id == &orphan), "the orphan was adopted");
    assert!(w.has(&behind, "v1.php"));
    assert!(w.agent.overlaps().is_empty());
    let record = w.store().instances(std::slice::from_ref(&behind)).await.expect("records").remove(0);
    assert_eq!(record.recovery_command, None, "its outcome recorded: {record:?}");
    assert!(record.last_synced_gen >= item.completed_gen, "{record:?}");
}

#[tokio::test]
async fn a_claim_whose_sender_died_before_sending_holds_until_it_ends_then_is_replaced() {
    let (mut w, behind) = one_behind().await;
    let item = w.item().await;
    let now = w.clock.now_ms();
    assert!(w.store().claim_catch_up(&behind, &sweep_claim(now).encode(), item.requested_gen).await.expect("claim"));
    // Until the claim ends its claimer may be sending it: nobody else does.
    w.clock.advance(Duration::from_secs(60)).await;
    w.tick().await;
    assert!(commands_to(&w, &behind).await.iter().all(|(_, c)| !c.starts_with("fleetkeeper catch-up")));
    // Past it, the claim is dropped and the catch-up sent in the same sweep.
    w.clock.advance(SWEEP).await;
    w.tick().await;
    assert!(w.has(&behind, "v1.php"), "{:?}", commands_to(&w, &behind).await);
    assert!(w.agent.overlaps().is_empty());
}

#[tokio::test]
async fn a_wave_leaves_out_an_instance_with_a_catch_up_claimed_and_it_catches_up_after() {
    let mut w = World::new(plain(2)).await;
    w.settle().await;
    let ids = w.instances().await;
    let now = w.clock.now_ms();
    let item = w.item().await;
    assert!(w.store().claim_catch_up(&ids[1], &sweep_claim(now).encode(), item.requested_gen).await.expect("claim"));
    w.upload(&["v2.php"]).await;
    w.settle().await;
    assert!(w.has(&ids[0], "v2.php"));
    assert!(!w.has(&ids[1], "v2.php"), "left out of the wave: a catch-up may be running on it");
    let wave_id = commands_to(&w, &ids[0])
        .await
        .iter()
        .find_map(|(_, c)| c.strip_prefix("fleetkeeper wave ").map(str::to_owned))
        .expect("a wave command");
    let record = w.wave(&wave_id).await;
    assert!(record.busy.contains(&ids[1]) && !record.instances.contains(&ids[1]), "{record:?}");

    // The claim's sender never sent: once the claim ends the sweep catches it up.
    w.clock.advance(SWEEP).await;
    w.tick().await;
    assert!(w.has(&ids[1], "v2.php"));
    assert!(w.agent.overlaps().is_empty());
}

#[tokio::test]
async fn a_wave_whose_every_instance_is_catching_up_waits_without_counting_a_failure() {
    let mut w = World::new(plain(1)).await;
    w.settle().await;
    let id = w.instances().await.remove(0);
    let now = w.clock.now_ms();
    let item = w.item().await;
    assert!(w.store().claim_catch_up(&id, &sweep_claim(now).encode(), item.requested_gen).await.expect("claim"));
    w.upload(&["v2.php"]).await;
    w.settle().await;
    let item = w.item().await;
    assert!(item.wave.is_none(), "the lease was released");
    assert_eq!((item.failed_gen, item.failed_attempts), (0, 0), "busy is nobody's failure: {item:?}");
    assert!(item.completed_gen < item.requested_gen, "the demand waits");
    w.clock.advance(SWEEP).await;
    w.tick().await;
    w.clock.advance(SWEEP).await;
    w.tick().await;
    let item = w.item().await;
    assert!(w.has(&id, "v2.php"));
    assert_eq!(item.completed_gen, item.requested_gen, "{item:?}");
}

#[tokio::test]
async fn an_unreadable_claim_never_holds_an_instance() {
    // A claim in a format this version cannot read (an older version's)
    // must not keep the instance busy for every wave and sweep to come.
    let (mut w, behind) = one_behind().await;
    let item = w.item().await;
    let now = w.clock.now_ms();
    w.store().set_recovery(&behind, Some(format!("pending@{now}")), item.requested_gen, 0).await.expect("old claim");
    w.clock.advance(SWEEP).await;
    w.tick().await;
    w.clock.advance(SWEEP).await;
    w.tick().await;
    assert!(w.has(&behind, "v1.php"), "{:?}", commands_to(&w, &behind).await);
    let record = w.store().instances(std::slice::from_ref(&behind)).await.expect("records").remove(0);
    assert_eq!(record.recovery_command, None, "{record:?}");
}
