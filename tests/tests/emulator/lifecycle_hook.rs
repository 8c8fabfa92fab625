//! `lifecycle-hook` against the emulator's lifecycle simulation: instances
//! wait in `Pending:Wait` / `Terminating:Wait` until fleetkeeper completes
//! their actions; assertions are on lifecycle states, recorded completions
//! and heartbeats, registrations, mount targets and catch-up commands.

use std::time::Duration;

use std::sync::Arc;

use fleetkeeper::Component;
use fleetkeeper::config::vars;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::TestClock;
use fleetkeeper_tests::events::{command_status_on, scheduled};
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document, upload};
use fleetkeeper_tests::inprocess::{deps_with_clock, invocation, set_var};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::{Value, json};

struct World {
    emulator: Emulator,
    clients: fleetkeeper::Clients,
    fleet: Fleet,
    env: Vec<(String, String)>,
    clock: TestClock,
}

impl World {
    async fn new(spec: FleetSpec) -> World {
        World::with(spec, |_| {}).await
    }

    async fn with(spec: FleetSpec, tweak: impl FnOnce(&mut Vec<(String, String)>)) -> World {
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        let fleet = Fleet::provision(&clients, &spec).await;
        create_sync_document(&clients, &fleet).await;
        upload(&clients, &fleet, &["index.php".into()]).await;
        let mut env = fleet.env();
        tweak(&mut env);
        let clock = TestClock::new(&emulator).await;
        World { emulator, clients, fleet, env, clock }
    }

    async fn handle(&self, payload: Value) -> Value {
        let clock = Arc::new(self.clock.clone());
        let deps = deps_with_clock(&self.emulator, Component::LifecycleHook, &self.env, clock).await;
        let f = lifecycle_hook::Function::new(deps).expect("config");
        let summary = lifecycle_hook::function_handler(invocation(payload, &self.clock, Duration::from_secs(60)), &f)
            .await
            .expect("lifecycle-hook");
        serde_json::to_value(summary).expect("json")
    }

    /// The lifecycle events AWS sent for the fleet's group, newest last.
    async fn events(&self) -> Vec<Value> {
        self.emulator.lifecycle_events(&self.fleet.asg_name).await
    }

    async fn event_for(&self, instance: &str, transition: &str) -> Value {
        self.events()
            .await
            .into_iter()
            .rev()
            .find(|e| {
                e["detail"]["EC2InstanceId"] == instance
                    && e["detail"]["LifecycleTransition"].as_str().unwrap_or_default().ends_with(transition)
            })
            .unwrap_or_else(|| panic!("no {transition} event for {instance}"))
    }

    /// The instance's lifecycle state, in the group or in its warm pool.
    async fn state(&self, instance: &str) -> Option<String> {
        self.fleet.lifecycle_state(&self.clients, instance).await
    }

    async fn targets(&self) -> Vec<String> {
        self.fleet.targets(&self.clients).await.into_iter().map(|(id, _)| id).collect()
    }

    async fn history(&self) -> Vec<Value> {
        self.emulator.lifecycle_actions(&self.fleet.asg_name).await["history"].as_array().cloned().unwrap_or_default()
    }

    /// Catch-up commands sent to `instance`.
    async fn catch_ups(&self, instance: &str) -> Vec<(String, String, String)> {
        let out = self.clients.ssm.list_commands().instance_id(instance).send().await.expect("list");
        out.commands()
            .iter()
            .filter(|c| c.comment().is_some_and(|c| c.starts_with("fleetkeeper catch-up")))
            .map(|c| {
                (
                    c.command_id().unwrap_or_default().to_owned(),
                    c.comment().unwrap_or_default().to_owned(),
                    c.parameters().and_then(|p| p.get("generation")).map(|g| g.join(",")).unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn finish_catch_up(&self, instance: &str, status: &str) -> Value {
        let (command, ..) = self.catch_ups(instance).await.pop().expect("a catch-up");
        self.emulator.set_invocation(&command, Some(instance), status).await;
        self.handle(command_status_on(&command, &self.fleet.document, status, &[instance.to_owned()])).await
    }

    async fn mount_target_zones(&self) -> Vec<String> {
        self.fleet.mount_target_zones(&self.clients).await
    }

    async fn first(&self) -> (String, String) {
        let m = self.fleet.members(&self.clients).await.into_iter().next().expect("an instance");
        (m.id, m.zone)
    }
}

fn driven(summary: &Value) -> &Value {
    &summary["driven"][0]
}

#[tokio::test]
async fn a_launch_is_gated_until_mounted_synced_and_healthy() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, zone) = w.first().await;
    assert_eq!(w.state(&id).await.as_deref(), Some("Pending:Wait"));

    let first = w.handle(w.event_for(&id, "LAUNCHING").await).await;
    let d = driven(&first);
    assert_eq!(d["result"], "in_progress", "{first}");
    assert!(d["reason"].as_str().unwrap_or_default().contains("catch-up sync to generation 0 running"), "{d}");
    assert_eq!(w.mount_target_zones().await, std::slice::from_ref(&zone), "the AZ's mount target, and only it");
    let catch_ups = w.catch_ups(&id).await;
    assert_eq!(catch_ups.len(), 1);
    assert_eq!(catch_ups[0].1, format!("fleetkeeper catch-up {id} gen 0"));
    assert!(w.targets().await.is_empty(), "no traffic before the code is there");
    assert_eq!(w.state(&id).await.as_deref(), Some("Pending:Wait"));
    let history = w.history().await;
    assert_eq!(history.iter().filter(|h| h["Kind"] == "heartbeat").count(), 1, "pending work heartbeats: {history:?}");

    let done = w.finish_catch_up(&id, "Success").await;
    let d = driven(&done);
    assert_eq!(d["result"], "continue", "{done}");
    assert!(
        d["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str().unwrap_or_default().starts_with("registered in")))
    );
    assert_eq!(w.targets().await, std::slice::from_ref(&id));
    assert_eq!(w.state(&id).await.as_deref(), Some("InService"));
    let completions: Vec<Value> = w.history().await.into_iter().filter(|h| h["Kind"] == "complete").collect();
    assert_eq!(completions.len(), 1);
    assert_eq!((completions[0]["Result"].as_str(), completions[0]["By"].as_str()), (Some("CONTINUE"), Some("token")));
}

#[tokio::test]
async fn a_redelivered_event_after_continue_is_harmless() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    let event = w.event_for(&id, "LAUNCHING").await;
    w.handle(event.clone()).await;
    w.finish_catch_up(&id, "Success").await;
    let again = w.handle(event).await;
    assert_eq!(driven(&again)["result"], "not_active", "{again}");
    assert_eq!(w.history().await.iter().filter(|h| h["Kind"] == "complete").count(), 1, "completed once");
    assert_eq!(w.catch_ups(&id).await.len(), 1, "no second catch-up");
}

#[tokio::test]
async fn a_failed_catch_up_is_retried_once_then_abandoned_and_the_group_replaces() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    w.handle(w.event_for(&id, "LAUNCHING").await).await;
    let retry = w.finish_catch_up(&id, "Failed").await;
    assert_eq!(driven(&retry)["result"], "in_progress", "{retry}");
    assert_eq!(w.catch_ups(&id).await.len(), 2, "retried once");
    let gave_up = w.finish_catch_up(&id, "Failed").await;
    let d = driven(&gave_up);
    assert_eq!(d["result"], "abandon", "{gave_up}");
    assert!(d["reason"].as_str().unwrap_or_default().contains("replace instances in a loop"), "{d}");
    assert!(w.targets().await.is_empty(), "never registered");
    assert_eq!(w.state(&id).await, None, "abandoned: terminated");
    let members = w.fleet.members(&w.clients).await;
    assert_eq!(members.len(), 1, "the group replaced it");
    assert_eq!(members[0].lifecycle_state, "Pending:Wait");
}

#[tokio::test]
async fn the_agent_is_waited_for_before_the_catch_up() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    w.emulator.set_agent(&id, None).await;
    let waiting = w.handle(w.event_for(&id, "LAUNCHING").await).await;
    assert!(driven(&waiting)["reason"].as_str().unwrap_or_default().contains("SSM agent"), "{waiting}");
    assert!(w.catch_ups(&id).await.is_empty(), "nothing sent to an instance SSM does not manage");
    w.emulator.set_agent(&id, Some("Online")).await;
    let reconciled = w.handle(scheduled()).await;
    assert_eq!(reconciled["reconcile"]["driven"][0]["instance_id"], id, "{reconciled}");
    assert_eq!(w.catch_ups(&id).await.len(), 1);
}

#[tokio::test]
async fn terminate_deregisters_then_continues() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    w.handle(w.event_for(&id, "LAUNCHING").await).await;
    w.finish_catch_up(&id, "Success").await;
    assert_eq!(w.targets().await, std::slice::from_ref(&id));

    w.fleet.scale_to(&w.clients, 0).await;
    assert_eq!(w.state(&id).await.as_deref(), Some("Terminating:Wait"));
    let left = w.handle(w.event_for(&id, "TERMINATING").await).await;
    let d = driven(&left);
    assert_eq!(d["result"], "continue", "{left}");
    assert!(
        d["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str().unwrap_or_default().starts_with("deregistered from")))
    );
    assert!(w.targets().await.is_empty());
    assert_eq!(w.state(&id).await, None, "terminated");
}

#[tokio::test]
async fn target_groups_attached_to_the_group_are_left_to_the_group() {
    let w = World::new(FleetSpec { instances: 1, attach_target_group: true, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    w.handle(w.event_for(&id, "LAUNCHING").await).await;
    let done = w.finish_catch_up(&id, "Success").await;
    let d = driven(&done);
    assert_eq!(d["result"], "continue", "{done}");
    assert!(
        d["actions"]
            .as_array()
            .is_some_and(|a| !a.iter().any(|x| x.as_str().unwrap_or_default().starts_with("registered"))),
        "{d}"
    );
    assert_eq!(w.targets().await, [id], "registered by the group itself, on CONTINUE");
}

#[tokio::test]
async fn foreign_groups_foreign_hooks_and_test_notifications_are_skipped_without_writes() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    let mut foreign_group = w.event_for(&id, "LAUNCHING").await;
    foreign_group["detail"]["AutoScalingGroupName"] = json!("someone-elses");
    let mut foreign_hook = w.event_for(&id, "LAUNCHING").await;
    foreign_hook["detail"]["LifecycleHookName"] = json!("their-hook");
    let test = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "t", "body": json!({
        "AccountId": "123456789012", "AutoScalingGroupName": w.fleet.asg_name, "Service": "AWS Auto Scaling",
        "Event": "autoscaling:TEST_NOTIFICATION", "Time": "2026-11-01T00:00:00Z"}).to_string()}]});
    for (payload, reason) in
        [(foreign_group, "not_managed"), (foreign_hook, "not_managed"), (test, "test_notification")]
    {
        let s = w.handle(payload).await;
        assert_eq!(s["skipped"]["by_reason"][reason], 1, "{s}");
        assert_eq!(s["driven"], json!([]));
    }
    assert!(w.catch_ups(&id).await.is_empty());
    assert!(w.mount_target_zones().await.is_empty());
    assert!(w.history().await.is_empty(), "no heartbeat, no completion");
}

#[tokio::test]
async fn the_reconcile_drives_instances_whose_events_were_lost() {
    let w = World::new(FleetSpec { instances: 2, ..FleetSpec::default() }).await;
    let first = w.handle(scheduled()).await;
    assert_eq!(first["reconcile"]["driven"].as_array().map(Vec::len), Some(2), "{first}");
    let members = w.fleet.members(&w.clients).await;
    for m in &members {
        let (command, ..) = w.catch_ups(&m.id).await.pop().expect("catch-up");
        w.emulator.set_invocation(&command, Some(&m.id), "Success").await;
    }
    let second = w.handle(scheduled()).await;
    let results: Vec<&str> = second["reconcile"]["driven"]
        .as_array()
        .expect("driven")
        .iter()
        .map(|d| d["result"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(results, ["continue", "continue"], "{second}");
    for m in &members {
        assert_eq!(w.state(&m.id).await.as_deref(), Some("InService"));
    }
    let by: Vec<String> = w
        .history()
        .await
        .into_iter()
        .filter(|h| h["Kind"] == "complete")
        .map(|h| h["By"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(by, ["instance_id", "instance_id"], "no token without an event: completed by instance id");
}

#[tokio::test]
async fn the_reconcile_repairs_registrations_and_removes_only_its_own_departed_targets() {
    let w =
        World::new(FleetSpec { instances: 1, launch_hook: false, terminate_hook: false, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    assert!(w.targets().await.is_empty());
    // Someone else's target in the shared group: an instance outside the fleet.
    let stranger = w.fleet.launch_outside(&w.clients).await;
    w.clients
        .elbv2
        .register_targets()
        .target_group_arn(&w.fleet.target_group_arn)
        .targets(aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder().id(&stranger).build())
        .send()
        .await
        .expect("register");

    let repaired = w.handle(scheduled()).await;
    assert_eq!(repaired["reconcile"]["registered"], json!([[id, w.fleet.target_group_arn]]), "{repaired}");
    assert_eq!(repaired["reconcile"]["deregistered"], json!([]), "never someone else's target");
    let mut expected = vec![id.clone(), stranger.clone()];
    expected.sort();
    assert_eq!(w.targets().await, expected);

    // Our instance leaves the group (detached): its target goes, the stranger's stays.
    w.fleet.detach(&w.clients, &id).await;
    let cleaned = w.handle(scheduled()).await;
    assert_eq!(cleaned["reconcile"]["deregistered"], json!([[id, w.fleet.target_group_arn]]), "{cleaned}");
    assert_eq!(w.targets().await, [stranger]);
}

#[tokio::test]
async fn a_warm_pool_instance_is_prepared_without_registering_then_caught_up_again_on_leaving() {
    let w = World::new(FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let id = w.emulator.warm_pool_launch(&w.fleet.asg_name, 1).await.remove(0);
    assert_eq!(w.state(&id).await.as_deref(), Some("Warmed:Pending:Wait"));
    assert!(w.fleet.members(&w.clients).await.is_empty(), "AWS lists pool instances only with the pool");
    let into = w.handle(w.event_for(&id, "LAUNCHING").await).await;
    assert_eq!(driven(&into)["destination"], "warm_pool", "{into}");
    let prepared = w.finish_catch_up(&id, "Success").await;
    assert_eq!(driven(&prepared)["result"], "continue", "{prepared}");
    assert_eq!(w.state(&id).await.as_deref(), Some("Warmed:Stopped"));
    assert!(w.targets().await.is_empty(), "the pool serves no traffic");

    assert_eq!(w.emulator.warm_pool_promote(&id).await, "Pending:Wait");
    let out = w.handle(w.event_for(&id, "LAUNCHING").await).await;
    assert_eq!(driven(&out)["destination"], "auto_scaling_group", "{out}");
    assert_eq!(w.catch_ups(&id).await.len(), 2, "it may have slept for days: a second catch-up");
    let served = w.finish_catch_up(&id, "Success").await;
    assert_eq!(driven(&served)["result"], "continue", "{served}");
    assert_eq!(w.state(&id).await.as_deref(), Some("InService"));
    assert_eq!(w.targets().await, [id]);
}

#[tokio::test]
async fn dry_run_plans_and_writes_nothing() {
    let w = World::with(FleetSpec { instances: 1, ..FleetSpec::default() }, |env| set_var(env, vars::DRY_RUN, "true"))
        .await;
    let (id, _) = w.first().await;
    let s = w.handle(w.event_for(&id, "LAUNCHING").await).await;
    assert_eq!(driven(&s)["result"], "dry_run", "{s}");
    assert!(w.catch_ups(&id).await.is_empty());
    assert!(w.mount_target_zones().await.is_empty());
    assert!(w.history().await.is_empty());
    assert_eq!(w.state(&id).await.as_deref(), Some("Pending:Wait"));
}

#[tokio::test]
async fn without_a_codebase_or_file_system_the_gate_only_registers() {
    let w = World::with(FleetSpec { instances: 1, ..FleetSpec::default() }, |env| {
        env.retain(|(k, _)| {
            !k.starts_with("FLEET_CODEBASE")
                && !k.starts_with("FLEET_SYNC")
                && !k.starts_with("FLEET_EFS")
                && !k.starts_with("FLEET_MOUNT")
        });
    })
    .await;
    let (id, _) = w.first().await;
    let s = w.handle(w.event_for(&id, "LAUNCHING").await).await;
    assert_eq!(driven(&s)["result"], "continue", "{s}");
    assert_eq!(w.targets().await, std::slice::from_ref(&id));
    assert!(w.catch_ups(&id).await.is_empty());
    assert!(w.mount_target_zones().await.is_empty());
}

#[tokio::test]
async fn the_real_bootstrap_gates_a_launch() {
    let w = World::new(FleetSpec { instances: 1, ..FleetSpec::default() }).await;
    let (id, _) = w.first().await;
    let mut process = LambdaProcess::start_function(&w.emulator, Component::LifecycleHook, &w.env).await;
    let first = process.invoke(w.event_for(&id, "LAUNCHING").await).await.response();
    assert_eq!(first["driven"][0]["result"], "in_progress", "{first}");
    let (command, ..) = w.catch_ups(&id).await.pop().expect("catch-up");
    w.emulator.set_invocation(&command, Some(&id), "Success").await;
    let done = process
        .invoke(command_status_on(&command, &w.fleet.document, "Success", std::slice::from_ref(&id)))
        .await
        .response();
    assert_eq!(done["driven"][0]["result"], "continue", "{done}");
    assert_eq!(w.state(&id).await.as_deref(), Some("InService"));
    process.stop().await;
}

#[tokio::test]
async fn a_hook_whose_heartbeat_a_lost_event_could_outlast_is_reported() {
    // Hooks that time out after 300 s.
    let every_five_minutes =
        World::new(FleetSpec { instances: 0, heartbeat_timeout: 300, ..FleetSpec::default() }).await;
    let report = every_five_minutes.handle(scheduled()).await;
    let fleet = &every_five_minutes.fleet;
    let mut short: Vec<String> =
        [&fleet.launch_hook, &fleet.terminate_hook].iter().map(|h| format!("{}/{h}: 300 s", fleet.asg_name)).collect();
    short.sort();
    let mut got: Vec<String> =
        serde_json::from_value(report["reconcile"]["short_heartbeats"].clone()).unwrap_or_default();
    got.sort();
    assert_eq!(got, short, "300 s is not above 2 x 300 s: {report}");

    let every_two_minutes =
        World::with(FleetSpec { instances: 0, heartbeat_timeout: 300, ..FleetSpec::default() }, |env| {
            set_var(env, fleetkeeper::config::vars::RECONCILE_INTERVAL_SECONDS, "120")
        })
        .await;
    let report = every_two_minutes.handle(scheduled()).await;
    assert_eq!(report["reconcile"]["short_heartbeats"], json!([]), "{report}");
}

#[tokio::test]
async fn two_of_fleetkeeper_s_hooks_on_one_transition_are_reported() {
    let w = World::with(FleetSpec { instances: 0, ..FleetSpec::default() }, |env| {
        let hooks =
            env.iter().find(|(k, _)| k == vars::LIFECYCLE_HOOK_NAMES).map(|(_, v)| v.clone()).unwrap_or_default();
        set_var(env, vars::LIFECYCLE_HOOK_NAMES, &format!("{hooks},second-launch"));
    })
    .await;
    w.clients
        .autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name(&w.fleet.asg_name)
        .lifecycle_hook_name("second-launch")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(3600)
        .send()
        .await
        .expect("put_lifecycle_hook");
    let report = w.handle(scheduled()).await;
    let duplicates = &report["reconcile"]["duplicate_hooks"];
    assert_eq!(duplicates.as_array().map(Vec::len), Some(1), "{report}");
    assert!(duplicates[0].as_str().unwrap_or_default().contains("second-launch"), "{report}");
}

#[tokio::test]
async fn when_launches_keep_failing_the_same_way_the_breaker_holds_them_instead_of_cycling_the_group() {
    let w = World::new(FleetSpec { instances: 3, ..FleetSpec::default() }).await;
    let ids: Vec<String> = w.fleet.members(&w.clients).await.into_iter().map(|m| m.id).collect();
    let mut results = Vec::new();
    for id in &ids {
        w.handle(w.event_for(id, "LAUNCHING").await).await;
        w.finish_catch_up(id, "Failed").await;
        let last = w.finish_catch_up(id, "Failed").await;
        results.push(driven(&last).clone());
    }
    assert_eq!(results[0]["result"], "abandon", "{results:?}");
    assert_eq!(results[1]["result"], "abandon", "{results:?}");
    let held = &results[2];
    assert_eq!((held["result"].as_str(), held["refused"].as_bool()), (Some("in_progress"), Some(true)), "{held}");
    assert!(held["reason"].as_str().unwrap_or_default().contains("circuit breaker"), "{held}");
    assert_eq!(w.state(&ids[2]).await.as_deref(), Some("Pending:Wait"), "held, not replaced");
    let abandoned = w.history().await.into_iter().filter(|h| h["Result"] == "ABANDON").count();
    assert_eq!(abandoned, 2, "the group replaced two instances, not a third");
}

/// An SQS batch of hook messages (the bodies an SQS hook target receives).
fn sqs_batch(bodies: &[(&str, Value)]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .map(|(id, body)| {
            json!({"messageId": id, "receiptHandle": format!("r-{id}"), "body": body.to_string(), "attributes": {},
                "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1"})
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn a_failing_message_of_a_batch_never_blocks_the_others_and_only_a_retryable_one_comes_back() {
    let w = World::new(FleetSpec { instances: 2, ..FleetSpec::default() }).await;
    let ids: Vec<String> = w.fleet.members(&w.clients).await.into_iter().map(|m| m.id).collect();
    let body = |e: Value| e["detail"].clone();
    // The first instance's record is unreadable: no retry can fix that.
    w.fleet.corrupt_lifecycle_record(&w.clients, &ids[0]).await;
    let batch = sqs_batch(&[
        ("m-1", body(w.event_for(&ids[0], "LAUNCHING").await)),
        ("m-2", body(w.event_for(&ids[1], "LAUNCHING").await)),
    ]);
    let s = w.handle(batch).await;
    assert_eq!(s["driven"].as_array().map(Vec::len), Some(1), "the other message was handled: {s}");
    assert_eq!(s["driven"][0]["instance_id"], ids[1].as_str());
    assert_eq!(s["failed"][0]["retryable"], false, "{s}");
    assert_eq!(s["batchItemFailures"], json!([]), "a permanent failure is not redelivered: {s}");

    // AWS failing transiently (Auto Scaling unreachable): both come back, by message id.
    let mut deps = deps_with_clock(&w.emulator, Component::LifecycleHook, &w.env, Arc::new(w.clock.clone())).await;
    let config =
        w.emulator.sdk_config_as(fleetkeeper_tests::emulator::Caller::Function(Component::LifecycleHook)).await;
    let dead = aws_sdk_autoscaling::config::Builder::from(&config).endpoint_url("http://127.0.0.1:9").build();
    deps.clients.autoscaling = aws_sdk_autoscaling::Client::from_conf(dead);
    let f = lifecycle_hook::Function::new(deps).expect("config");
    let batch = sqs_batch(&[
        ("m-3", body(w.event_for(&ids[1], "LAUNCHING").await)),
        ("m-4", body(w.event_for(&ids[1], "LAUNCHING").await)),
    ]);
    let s = lifecycle_hook::function_handler(invocation(batch, &w.clock, Duration::from_secs(60)), &f)
        .await
        .expect("a partial batch response, not an error");
    let s = serde_json::to_value(s).expect("json");
    assert_eq!(s["batchItemFailures"], json!([{"itemIdentifier": "m-3"}, {"itemIdentifier": "m-4"}]), "{s}");
}
