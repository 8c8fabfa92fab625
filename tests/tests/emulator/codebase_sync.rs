//! `codebase-sync` and `sync-completion` against the emulator: bursts of
//! uploads become one wave plus one follow-up, asserted on the commands SSM
//! received and on the lock table.

use std::sync::Arc;
use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper::clock::{Clock, SharedClock};
use fleetkeeper::config::vars;
use fleetkeeper::ssm_document::history::RunHistory;
use fleetkeeper::store::Table;
use fleetkeeper::sync::state::FleetItem;
use fleetkeeper::sync::store::{FleetStore, WaveRecord};
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::TestClock;
use fleetkeeper_tests::events::{command_status, s3_notification, s3_notification_at, scheduled, sqs_message};
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document, upload};
use fleetkeeper_tests::inprocess::{deps_with_clock, invocation, set_var};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::{Value, json};

/// A sent command, as SSM lists it.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    instances: Vec<String>,
    generation: String,
    comment: String,
    parameters: Vec<(String, Vec<String>)>,
    max_concurrency: String,
}

struct World {
    emulator: Emulator,
    clients: fleetkeeper::Clients,
    fleet: Fleet,
    env: Vec<(String, String)>,
    clock: TestClock,
}

impl World {
    async fn new(instances: i32) -> World {
        World::with(instances, |_| {}).await
    }

    async fn with(instances: i32, tweak: impl FnOnce(&mut Vec<(String, String)>)) -> World {
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        let spec = FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() };
        let fleet = Fleet::provision(&clients, &spec).await;
        create_sync_document(&clients, &fleet).await;
        upload(&clients, &fleet, &["index.php".into(), "lib/a.php".into()]).await;
        let mut env = fleet.env();
        tweak(&mut env);
        let clock = TestClock::new(&emulator).await;
        World { emulator, clients, fleet, env, clock }
    }

    fn shared_clock(&self) -> SharedClock {
        Arc::new(self.clock.clone())
    }

    async fn dispatcher(&self) -> codebase_sync::Function {
        let deps = deps_with_clock(&self.emulator, Component::CodebaseSync, &self.env, self.shared_clock()).await;
        codebase_sync::Function::new(deps).expect("config")
    }

    async fn completion(&self) -> sync_completion::Function {
        let deps = deps_with_clock(&self.emulator, Component::SyncCompletion, &self.env, self.shared_clock()).await;
        sync_completion::Function::new(deps).expect("config")
    }

    async fn dispatch(&self, payload: Value) -> Value {
        let f = self.dispatcher().await;
        let summary = codebase_sync::function_handler(invocation(payload, &self.clock, Duration::from_secs(60)), &f)
            .await
            .expect("codebase-sync");
        serde_json::to_value(summary).expect("json")
    }

    async fn uploads(&self, n: usize, tag: &str) -> Value {
        let keys: Vec<String> = (0..n).map(|i| format!("{tag}/file-{i}.php")).collect();
        upload(&self.clients, &self.fleet, &keys).await;
        let keys: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.fleet.prefix)).collect();
        self.dispatch(s3_notification(&self.fleet.bucket, &keys)).await
    }

    async fn complete(&self, payload: Value) -> Value {
        let f = self.completion().await;
        let summary = sync_completion::function_handler(invocation(payload, &self.clock, Duration::from_secs(60)), &f)
            .await
            .expect("sync-completion");
        serde_json::to_value(summary).expect("json")
    }

    /// Every wave command sent with the fleet's document, oldest first
    /// (catch-ups left out).
    async fn sent(&self) -> Vec<Sent> {
        let out = self
            .clients
            .ssm
            .list_commands()
            .filters(
                aws_sdk_ssm::types::CommandFilter::builder()
                    .key(aws_sdk_ssm::types::CommandFilterKey::DocumentName)
                    .value(&self.fleet.document)
                    .build()
                    .expect("filter"),
            )
            .send()
            .await
            .expect("list_commands");
        let mut sent: Vec<Sent> = out
            .commands()
            .iter()
            .filter(|c| c.comment().is_some_and(|c| c.starts_with("fleetkeeper wave")))
            .map(|c| {
                let mut parameters: Vec<(String, Vec<String>)> =
                    c.parameters().map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
                parameters.sort();
                Sent {
                    id: c.command_id().unwrap_or_default().to_owned(),
                    instances: c.instance_ids().to_vec(),
                    generation: c
                        .parameters()
                        .and_then(|p| p.get("generation"))
                        .map(|v| v.join(","))
                        .unwrap_or_default(),
                    comment: c.comment().unwrap_or_default().to_owned(),
                    parameters,
                    max_concurrency: c.max_concurrency().unwrap_or_default().to_owned(),
                }
            })
            .collect();
        sent.sort_by_key(|s| s.generation.parse::<u64>().unwrap_or_default());
        sent
    }

    /// Ends every invocation of `command` (`instance: None`: all of them).
    async fn end(&self, command: &str, instance: Option<&str>, status: &str) {
        self.emulator.set_invocation(command, instance, status).await;
    }

    async fn event_for(&self, command: &str, status: &str) -> Value {
        self.complete(command_status(command, &self.fleet.document, status)).await
    }

    fn store(&self) -> Table {
        self.fleet.store(&self.clients)
    }

    async fn item(&self) -> FleetItem {
        self.store().load().await.expect("load").unwrap_or_default()
    }

    async fn wave_record(&self, wave_id: &str) -> WaveRecord {
        self.store().wave(wave_id).await.expect("wave").expect("record")
    }

    async fn members(&self) -> Vec<String> {
        let mut m: Vec<String> = self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect();
        m.sort();
        m
    }
}

fn started(summary: &Value) -> &Value {
    assert_eq!(summary["wave"]["outcome"], "started", "{summary}");
    &summary["wave"]
}

#[tokio::test]
async fn a_burst_becomes_one_wave_then_exactly_one_follow_up_then_nothing() {
    let w = World::new(3).await;
    // 300 uploads in 3 batches (3 invocations, 100 records each).
    let first = w.uploads(100, "a").await;
    let wave = started(&first);
    assert_eq!((first["relevant"].as_u64(), first["requested_gen"].as_u64()), (Some(100), Some(1)));
    assert_eq!(wave["target"], 1);
    let mut instances: Vec<String> = serde_json::from_value(wave["instances"].clone()).expect("ids");
    instances.sort();
    assert_eq!(instances, w.members().await, "every InService, Online instance");
    for tag in ["b", "c"] {
        let more = w.uploads(100, tag).await;
        assert_eq!(more["wave"]["outcome"], "coalesced", "{more}");
        assert_eq!(more["wave"]["wave_id"], wave["wave_id"]);
    }
    let sent = w.sent().await;
    assert_eq!(sent.len(), 1, "uploads during the wave send no command");
    assert_eq!(sent[0].comment, format!("fleetkeeper wave {}", wave["wave_id"].as_str().unwrap_or_default()));
    assert_eq!(w.item().await.requested_gen, 3, "all demand is counted");

    // The wave's command ends: exactly one follow-up, covering the burst.
    w.end(&sent[0].id, None, "Success").await;
    let done = w.event_for(&sent[0].id, "Success").await;
    assert_eq!(done["settled"]["outcome"], "finished", "{done}");
    assert_eq!(done["settled"]["end"], "success");
    assert_eq!(done["settled"]["follow_up"]["outcome"], "started");
    assert_eq!(done["settled"]["follow_up"]["target"], 3);
    let sent = w.sent().await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].generation, "3");
    assert_eq!(w.item().await.completed_gen, 1);

    // A duplicate of the first event changes nothing.
    let dup = w.event_for(&sent[0].id, "Success").await;
    assert_eq!(dup["settled"], Value::Null, "{dup}");
    assert_eq!(dup["skipped"]["by_reason"]["not_managed"], 1);

    // The follow-up ends: caught up, no more commands.
    w.end(&sent[1].id, None, "Success").await;
    let done = w.event_for(&sent[1].id, "Success").await;
    assert_eq!(done["settled"]["end"], "success");
    assert_eq!(done["settled"]["follow_up"], Value::Null, "caught up: no follow-up");
    assert_eq!(w.sent().await.len(), 2);
    let item = w.item().await;
    assert_eq!((item.requested_gen, item.completed_gen, item.wave), (3, 3, None));
}

#[tokio::test]
async fn eight_concurrent_invocations_start_one_wave() {
    let w = Arc::new(World::new(2).await);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move { w.uploads(5, &format!("c{n}")).await }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task")["wave"]["outcome"].as_str().unwrap_or_default().to_owned());
    }
    outcomes.sort();
    assert_eq!(outcomes.iter().filter(|o| *o == "started").count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "coalesced").count(), 7, "{outcomes:?}");
    assert_eq!(w.sent().await.len(), 1);
    assert_eq!(w.item().await.requested_gen, 8);
}

#[tokio::test]
async fn a_failed_instance_keeps_completed_gen_is_retried_once_then_waits_and_is_quarantined() {
    let w = World::new(2).await;
    let first = w.uploads(1, "f").await;
    let wave_id = started(&first)["wave_id"].as_str().unwrap_or_default().to_owned();
    let members = w.members().await;
    let (bad, good) = (&members[0], &members[1]);

    // Attempt 1 fails on one instance.
    let sent = w.sent().await;
    w.end(&sent[0].id, Some(bad), "Failed").await;
    w.end(&sent[0].id, Some(good), "Success").await;
    let done = w.event_for(&sent[0].id, "Failed").await;
    assert_eq!(done["settled"]["end"], "failure", "{done}");
    assert_eq!(done["settled"]["failed"], json!([bad]));
    assert_eq!(w.item().await.completed_gen, 0, "a failed wave keeps completed_gen");
    let record = w.wave_record(&wave_id).await;
    assert_eq!((record.failed, record.synced), (vec![bad.clone()], 1), "{good} synced");
    // ...and is retried once, automatically.
    assert_eq!(done["settled"]["follow_up"]["reason"], "retry");
    assert_eq!(done["settled"]["follow_up"]["target"], 1);

    // Attempt 2 fails too: no automatic third attempt.
    let sent = w.sent().await;
    assert_eq!(sent.len(), 2);
    w.end(&sent[1].id, Some(bad), "Failed").await;
    w.end(&sent[1].id, Some(good), "Success").await;
    let done = w.event_for(&sent[1].id, "Failed").await;
    assert_eq!(done["settled"]["end"], "failure");
    assert_eq!(done["settled"]["follow_up"], Value::Null, "held until new demand");
    let sweep = w.complete(scheduled()).await;
    assert_eq!(sweep["sweep"]["started"], Value::Null, "the sweep does not retry a held generation: {sweep}");
    assert_eq!(w.sent().await.len(), 2);

    // A manual sync is new demand: a third wave; its failure quarantines the host.
    let manual = w.dispatch(json!({"action": "sync", "reason": "after the fix"})).await;
    assert_eq!(manual["manual"], "after the fix");
    assert_eq!(started(&manual)["reason"], "manual: after the fix");
    let sent = w.sent().await;
    w.end(&sent[2].id, Some(bad), "Failed").await;
    w.end(&sent[2].id, Some(good), "Success").await;
    let done = w.event_for(&sent[2].id, "Failed").await;
    assert_eq!(done["settled"]["quarantined"], json!([bad]), "third consecutive failure: quarantined");
    // Its retry leaves the quarantined host out, lists it, and succeeds.
    let retry = &done["settled"]["follow_up"];
    assert_eq!(retry["instances"], json!([good]));
    assert_eq!(retry["quarantined"], json!([bad]));
    let sent = w.sent().await;
    assert_eq!(sent[3].instances, vec![good.clone()]);
    w.end(&sent[3].id, None, "Success").await;
    let done = w.event_for(&sent[3].id, "Success").await;
    assert_eq!(done["settled"]["end"], "success");
    let item = w.item().await;
    assert_eq!(item.completed_gen, item.requested_gen, "one broken host does not pin the fleet");
}

#[tokio::test]
async fn a_lost_completion_event_is_recovered_by_the_sweep() {
    let w = World::new(2).await;
    started(&w.uploads(3, "l").await);
    let sent = w.sent().await;
    // Running: the sweep renews the lease, even past its expiry.
    w.clock.advance(Duration::from_secs(20 * 60)).await;
    let sweep = w.complete(scheduled()).await;
    assert_eq!(sweep["sweep"]["settled"]["outcome"], "renewed", "{sweep}");
    assert!(w.item().await.wave.expect("wave").lease_expires_at > w.clock_now(), "renewed");
    // It ends, and its event is lost: the sweep finishes it.
    w.end(&sent[0].id, None, "Success").await;
    let sweep = w.complete(scheduled()).await;
    assert_eq!(sweep["sweep"]["settled"]["outcome"], "finished", "{sweep}");
    assert_eq!(sweep["sweep"]["settled"]["end"], "success");
    let item = w.item().await;
    assert_eq!((item.completed_gen, item.requested_gen), (1, 1));
}

impl World {
    fn clock_now(&self) -> u64 {
        self.clock.now_ms()
    }
}

#[tokio::test]
async fn the_sweep_syncs_a_change_whose_upload_event_was_lost() {
    let w = World::new(1).await;
    // The first sweep syncs the existing codebase of a fresh deployment.
    let sweep = w.complete(scheduled()).await;
    assert_eq!(sweep["sweep"]["fingerprint_changed"], true, "{sweep}");
    assert_eq!(sweep["sweep"]["started"]["outcome"], "started");
    let sent = w.sent().await;
    w.end(&sent[0].id, None, "Success").await;
    w.event_for(&sent[0].id, "Success").await;
    assert_eq!(w.complete(scheduled()).await["sweep"]["fingerprint_changed"], false, "in sync: nothing to do");

    // An upload whose event never arrives.
    upload(&w.clients, &w.fleet, &["late/file.php".into()]).await;
    let sweep = w.complete(scheduled()).await;
    assert_eq!(sweep["sweep"]["fingerprint_changed"], true, "{sweep}");
    assert_eq!(sweep["sweep"]["started"]["target"], 2);
    assert_eq!(w.sent().await.len(), 2);

    // Excluded keys do not change the fingerprint.
    let sent = w.sent().await;
    w.end(&sent[1].id, None, "Success").await;
    w.event_for(&sent[1].id, "Success").await;
    upload(&w.clients, &w.fleet, &["media/photo.jpg".into()]).await;
    assert_eq!(w.complete(scheduled()).await["sweep"]["fingerprint_changed"], false);
}

#[tokio::test]
async fn hostile_keys_never_reach_the_command() {
    let w = World::new(1).await;
    let hostile: Vec<String> = [
        "$(reboot); rm -rf /`id`.php",
        "line1\nline2\r.php",
        "../../etc/passwd",
        "{{destination}}",
        "a' \"b\" $SSM_bucket",
    ]
    .iter()
    .map(|k| format!("{}{k}", w.fleet.prefix))
    .collect();
    let summary = w.dispatch(s3_notification(&w.fleet.bucket, &hostile)).await;
    started(&summary);
    let sent = w.sent().await;
    assert_eq!(sent.len(), 1);
    let epoch = w.store().load().await.expect("load").expect("item").epoch;
    assert_eq!(epoch.len(), 32, "a lineage of 32 hex digits");
    let expected: Vec<(String, Vec<String>)> = vec![
        ("bucket".into(), vec![w.fleet.bucket.clone()]),
        ("destination".into(), vec![w.fleet.destination.clone()]),
        ("epoch".into(), vec![epoch]),
        ("excludes".into(), vec!["media/*".into()]),
        ("generation".into(), vec!["1".into()]),
        // Retention: three releases kept (no rollback target yet).
        ("keep".into(), vec![String::new()]),
        ("keep_releases".into(), vec!["3".into()]),
        // (No manifest bucket configured: no exact release.)
        ("manifest".into(), vec![String::new()]),
        ("manifest_bucket".into(), vec![String::new()]),
        ("manifest_region".into(), vec![String::new()]),
        ("manifest_sha256".into(), vec![String::new()]),
        ("max_shrink".into(), vec!["50".into()]),
        ("prefix".into(), vec![w.fleet.prefix.clone()]),
        ("region".into(), vec!["us-east-1".into()]),
        ("release".into(), vec![String::new()]),
        ("rollback".into(), vec![String::new()]),
    ];
    assert_eq!(
        sent[0].parameters, expected,
        "only configured values, the generation, its lineage, the guard, the release (none without a marker) and the \
         manifest (none without a manifest bucket)"
    );
    let all = format!("{:?} {}", sent[0].parameters, sent[0].comment);
    for needle in ["reboot", "passwd", "line2", "{{", "$SSM"] {
        assert!(!all.contains(needle), "{needle} leaked into the command: {all}");
    }
}

#[tokio::test]
async fn excluded_foreign_and_out_of_prefix_keys_never_start_a_wave() {
    let w = World::new(1).await;
    let prefix = &w.fleet.prefix;
    let irrelevant = w
        .dispatch(json!({"Records": [
            s3_notification(&w.fleet.bucket, &[format!("{prefix}media/a.jpg")])["Records"][0],
            s3_notification("someone-elses-bucket", &[format!("{prefix}index.php")])["Records"][0],
            s3_notification(&w.fleet.bucket, &["other/index.php".into()])["Records"][0],
            s3_notification(&w.fleet.bucket, std::slice::from_ref(prefix))["Records"][0],
        ]}))
        .await;
    assert_eq!(irrelevant["relevant"], 0, "{irrelevant}");
    assert_eq!(irrelevant["skipped"]["by_reason"]["not_managed"], 4);
    assert_eq!(irrelevant["wave"], Value::Null);
    let test_event = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "t",
        "body": json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": w.fleet.bucket}).to_string()}]});
    let tested = w.dispatch(test_event).await;
    assert_eq!(tested["skipped"]["by_reason"]["test_notification"], 1);
    assert!(w.sent().await.is_empty());
    assert_eq!(w.store().load().await.expect("load"), None, "no demand was recorded");
}

#[tokio::test]
async fn no_instance_to_sync_completes_the_generation() {
    let w = World::new(0).await;
    let summary = w.uploads(2, "e").await;
    let wave = started(&summary);
    assert_eq!(wave["completed_empty"], true, "{summary}");
    assert!(w.sent().await.is_empty());
    let item = w.item().await;
    assert_eq!((item.requested_gen, item.completed_gen, item.wave), (1, 1, None), "completed, not lost");
}

#[tokio::test]
async fn instances_whose_agent_is_not_online_wait_for_the_next_wave() {
    let w = World::new(2).await;
    let members = w.members().await;
    w.emulator.set_agent(&members[0], Some("ConnectionLost")).await;
    let wave = w.uploads(1, "o").await;
    assert_eq!(started(&wave)["instances"], json!([members[1]]));
    assert_eq!(w.sent().await[0].instances, vec![members[1].clone()]);
}

#[tokio::test]
async fn large_fleets_are_sent_in_chunks_of_fifty_with_divided_rate_controls() {
    let w = World::with(60, |env| set_var(env, fleetkeeper::config::vars::SYNC_MAX_CONCURRENCY, "40")).await;
    let summary = w.uploads(1, "big").await;
    assert_eq!(started(&summary)["instances"].as_array().map(Vec::len), Some(60));
    let sent = w.sent().await;
    let mut sizes: Vec<usize> = sent.iter().map(|s| s.instances.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [10, 50]);
    assert!(sent.iter().all(|s| s.max_concurrency == "20"), "40 divided across 2 chunks");
    assert_eq!(w.item().await.wave.expect("wave").command_ids.len(), 2);
    // Both must end before the wave does (a run takes seconds: by then SSM lists them).
    w.clock.advance(Duration::from_secs(5)).await;
    w.end(&sent[0].id, None, "Success").await;
    let partial = w.event_for(&sent[0].id, "Success").await;
    assert_eq!(partial["settled"]["outcome"], "renewed", "{partial}");
    w.end(&sent[1].id, None, "Success").await;
    assert_eq!(w.event_for(&sent[1].id, "Success").await["settled"]["end"], "success");
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let w = World::with(1, |env| set_var(env, fleetkeeper::config::vars::DRY_RUN, "true")).await;
    let summary = w.uploads(2, "d").await;
    assert_eq!(summary["wave"]["outcome"], "dry_run", "{summary}");
    assert_eq!(summary["wave"]["instances"].as_array().map(Vec::len), Some(1));
    assert!(w.sent().await.is_empty());
    assert_eq!(w.store().load().await.expect("load"), None);
}

#[tokio::test]
async fn both_real_bootstraps_run_a_wave_through_the_runtime_api() {
    let w = World::new(2).await;
    let mut dispatcher = LambdaProcess::start_function(&w.emulator, Component::CodebaseSync, &w.env).await;
    let mut completion = LambdaProcess::start_function(&w.emulator, Component::SyncCompletion, &w.env).await;
    let keys = vec![format!("{}index.php", w.fleet.prefix)];
    let answer = dispatcher.invoke(s3_notification(&w.fleet.bucket, &keys)).await.response();
    assert_eq!(answer["wave"]["outcome"], "started", "{answer}");
    let again = dispatcher.invoke(s3_notification(&w.fleet.bucket, &keys)).await.response();
    assert_eq!(again["wave"]["outcome"], "coalesced", "{again}");
    let sent = w.sent().await;
    assert_eq!(sent.len(), 1);
    w.end(&sent[0].id, None, "Success").await;
    let done = completion.invoke(command_status(&sent[0].id, &w.fleet.document, "Success")).await.response();
    assert_eq!(done["settled"]["end"], "success", "{done}");
    assert_eq!(done["settled"]["follow_up"]["target"], 2, "the coalesced upload gets its follow-up");
    let logs = dispatcher.stop().await.stdout();
    assert!(logs.contains("sync wave sent"), "{logs}");
    completion.stop().await;
}

/// Quarantines `bad` with one failed wave (`FLEET_SYNC_QUARANTINE_AFTER=1`);
/// the retry syncs `good` alone.
#[tokio::test]
async fn the_real_bootstrap_waits_for_quiet_then_starts_from_its_own_delayed_message() {
    // The deployed wiring with short settings: a 2 s quiet period, the
    // delayed start on the sync queue, both bootstraps on the test clock.
    let w = World::new(2).await;
    let mut env = w.env.clone();
    set_var(&mut env, vars::SYNC_QUIET_SECONDS, "2");
    set_var(&mut env, vars::RETRIGGER_QUEUE_URL, &w.fleet.sync_queue_url);
    let start = async |component| {
        let mut env = env.clone();
        env.extend(w.emulator.aws_env_for(component));
        LambdaProcess::start_on_clock(component, &env, &w.clock).await
    };
    let mut dispatcher = start(Component::CodebaseSync).await;
    let mut completion = start(Component::SyncCompletion).await;
    let now = aws_smithy_types::DateTime::from_millis(i64::try_from(w.clock.now_ms()).expect("ms"))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .expect("time");
    let keys = vec![format!("{}index.php", w.fleet.prefix)];
    let answer = dispatcher.invoke(s3_notification_at(&w.fleet.bucket, &keys, &now)).await.response();
    assert_eq!(answer["wave"]["outcome"], "waiting", "{answer}");
    assert_eq!(answer["wave"]["trigger"]["trigger"], "queued", "{answer}");
    assert!(w.sent().await.is_empty(), "nothing sent during the quiet period");
    let receive = || async {
        w.clients
            .sqs
            .receive_message()
            .queue_url(&w.fleet.sync_queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive")
            .messages()
            .to_vec()
    };
    assert!(receive().await.is_empty(), "the delayed start is not due yet");
    w.clock.advance(Duration::from_secs(3)).await;
    let due = receive().await;
    assert_eq!(due.len(), 1, "one delayed start");
    let body = due[0].body().unwrap_or_default();
    assert!(body.contains("\"sync-due\""), "{body}");
    let arn = format!(
        "arn:aws:sqs:us-east-1:{}:{}",
        w.emulator.account(),
        w.fleet.sync_queue_url.rsplit('/').next().unwrap_or_default()
    );
    let answer = dispatcher.invoke(sqs_message("m-1", body, &arn)).await.response();
    assert_eq!(answer["wave"]["outcome"], "started", "{answer}");
    assert_eq!(answer["wave"]["reason"], "quiet period over", "{answer}");
    let sent = w.sent().await;
    assert_eq!(sent.len(), 1);
    w.end(&sent[0].id, None, "Success").await;
    let done = completion.invoke(command_status(&sent[0].id, &w.fleet.document, "Success")).await.response();
    assert_eq!(done["settled"]["end"], "success", "{done}");
    let item = w.item().await;
    assert_eq!((item.completed_gen, item.requested_gen), (1, 1));
    dispatcher.stop().await;
    completion.stop().await;
}

async fn quarantine_one(w: &World) -> (String, String) {
    let members = w.members().await;
    let (bad, good) = (members[0].clone(), members[1].clone());
    started(&w.uploads(1, "q").await);
    let sent = w.sent().await;
    w.end(&sent[0].id, Some(&bad), "Failed").await;
    w.end(&sent[0].id, Some(&good), "Success").await;
    let done = w.event_for(&sent[0].id, "Failed").await;
    assert_eq!(done["settled"]["quarantined"], json!([bad]), "{done}");
    let retry = &done["settled"]["follow_up"];
    assert_eq!(retry["instances"], json!([good]), "left out while quarantined");
    let retry_id = w.sent().await[1].id.clone();
    w.end(&retry_id, None, "Success").await;
    assert_eq!(w.event_for(&retry_id, "Success").await["settled"]["end"], "success");
    (bad, good)
}

#[tokio::test]
async fn a_quarantined_instance_gets_a_recovery_catch_up_and_rejoins_on_success() {
    let w = World::with(2, |env| set_var(env, fleetkeeper::config::vars::SYNC_QUARANTINE_AFTER, "1")).await;
    let (bad, good) = quarantine_one(&w).await;

    let sweep = w.complete(scheduled()).await;
    let recovery = &sweep["sweep"]["catch_ups"][0];
    assert_eq!(recovery["recovery"], true, "{sweep}");
    assert_eq!(
        (recovery["instance_id"].as_str(), recovery["action"].as_str()),
        (Some(bad.as_str()), Some("sent")),
        "{sweep}"
    );
    let command = recovery["command_id"].as_str().unwrap_or_default().to_owned();
    let catch_up = w.clients.ssm.list_commands().command_id(&command).send().await.expect("list");
    assert_eq!(catch_up.commands()[0].instance_ids(), std::slice::from_ref(&bad), "sent to the quarantined host alone");
    assert!(catch_up.commands()[0].comment().unwrap_or_default().starts_with("fleetkeeper catch-up"));

    assert_eq!(w.complete(scheduled()).await["sweep"]["catch_ups"][0]["action"], "running");
    w.end(&command, Some(&bad), "Success").await;
    assert_eq!(w.complete(scheduled()).await["sweep"]["catch_ups"][0]["action"], "synced");

    let wave = w.uploads(1, "back").await;
    let mut instances: Vec<String> = serde_json::from_value(started(&wave)["instances"].clone()).expect("ids");
    instances.sort();
    let mut both = vec![bad, good];
    both.sort();
    assert_eq!(instances, both, "the recovered host rejoins the waves");
    assert_eq!(started(&wave)["quarantined"], json!([]));
}

#[tokio::test]
async fn a_failing_recovery_counts_and_the_next_waits_an_hour() {
    let w = World::with(2, |env| set_var(env, fleetkeeper::config::vars::SYNC_QUARANTINE_AFTER, "1")).await;
    let (bad, _) = quarantine_one(&w).await;
    let sweep = w.complete(scheduled()).await;
    let command = sweep["sweep"]["catch_ups"][0]["command_id"].as_str().unwrap_or_default().to_owned();
    w.end(&command, Some(&bad), "Failed").await;
    assert_eq!(w.complete(scheduled()).await["sweep"]["catch_ups"][0]["action"], "failed");
    assert_eq!(w.complete(scheduled()).await["sweep"]["catch_ups"], json!([]), "not again within the hour");
    let record = w.store().instances(std::slice::from_ref(&bad)).await.expect("record").remove(0);
    assert_eq!((record.sync_failures, record.quarantined()), (2, true));
    w.clock.advance(Duration::from_millis(fleetkeeper::sync::run::RECOVERY_SPACING_MS)).await;
    assert_eq!(w.complete(scheduled()).await["sweep"]["catch_ups"][0]["action"], "sent");
}

#[tokio::test]
async fn a_codebase_in_another_region_is_synced_from_its_region() {
    let w = World::with(1, |env| set_var(env, fleetkeeper::config::vars::CODEBASE_REGION, "eu-west-1")).await;
    let f = w.dispatcher().await;
    assert_eq!(f.settings.region, "eu-west-1");
    assert_eq!(f.deps.clients.s3.config().region().map(|r| r.as_ref()), Some("eu-west-1"), "the fingerprint's client");
    started(&w.uploads(1, "r").await);
    let sent = w.sent().await;
    let region = sent[0].parameters.iter().find(|(k, _)| k == "region").map(|(_, v)| v.clone());
    assert_eq!(region, Some(vec!["eu-west-1".to_owned()]), "the instances' aws s3 sync uses the bucket's region");
}
