//! The pure planners under criterion (`cargo bench -p fleetkeeper-planner-bench`).
//!
//! Each benchmark's input is built once, outside the timed loop, in the
//! shapes AWS sends (the tests' builders and fixtures, copied: this crate
//! does not depend on the tests crate nor on the functions). What is timed
//! is what a function does with it before (or, for the settle, between) its
//! AWS calls, through the shared library's public API:
//!
//! * `s3 batch of 100 records`: `codebase-sync` on an SQS batch of 100
//!   EventBridge S3 `Object Created` events (5 of them excluded keys):
//!   [`events::parse`], [`triage`] with the function's `classify`
//!   ([`relevance`], [`marker_relevance`]), the changes' event times
//!   ([`ChangeTimes`]) and the demand [`Request`] it would write;
//! * `lifecycle event`: `lifecycle-hook` on one EventBridge launch lifecycle
//!   action whose drive is under way (catch-up sent, registered in both
//!   target groups): parse, triage, [`LifecycleRecord::for_action`], then
//!   [`next`] asked again with each observation it wants until it decides;
//! * `settle of a 1000-instance wave`: the settle of a wave of 1,000
//!   instances in 20 commands of 50 (983 synced, 15 failed or timed out, 2
//!   undeliverable): [`settle`] on the commands' statuses, then on their
//!   invocations, [`transition`], [`apply`] (the next fleet item), the run
//!   histories ([`next_record`]), the wave record's lists and whether a
//!   follow-up may start ([`start_refusal`]).
//!
//! Every input is checked once before it is timed: each benchmark measures
//! the path it says it does.

// Benchmarks are like tests: a broken input is a panic at set-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetkeeper::config::{Component, Config, vars};
use fleetkeeper::events::{self, CommandStatus, Event, LifecycleAction, ManualAction, Skip, SkipReason};
use fleetkeeper::lifecycle::gate::GateSettings;
use fleetkeeper::lifecycle::plan::{
    CatchUpState, Completion, Duties, Health, HookObs, InstanceState, MountState, Next, Observed, Stage, TargetObs,
    next,
};
use fleetkeeper::lifecycle::record::{ActionState, CatchUp, LifecycleRecord, PlanRecord, Ready};
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::ssm_document::MAX_INSTANCE_IDS;
use fleetkeeper::ssm_document::history::{InstanceRecord, InstanceResult, Synced, counts, next_record};
use fleetkeeper::sync::decide::{CommandView, InvocationView, Settlement, settle, transition};
use fleetkeeper::sync::run::demand::Request;
use fleetkeeper::sync::run::{StartWhen, SyncSettings};
use fleetkeeper::sync::state::{ChangeTimes, Fingerprint, FleetItem, Wave, WaveEnd, apply, start_refusal};
use serde_json::{Value, json};

/// 2026-11-01T00:00:00Z, epoch ms: the events' base time.
const T0: u64 = 1_793_491_200_000;

/// The functions' region.
const REGION: &str = "us-east-1";

/// One environment for every function (the configuration contract's own
/// example values).
const ENV: &[(&str, &str)] = &[
    (vars::FLEET_NAME, "web"),
    (vars::ASG_NAMES, "web-a,web-b"),
    (vars::LIFECYCLE_HOOK_NAMES, "fk-launch,fk-terminate"),
    (
        vars::TARGET_GROUP_ARNS,
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef,\
         arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api/fedcba9876543210",
    ),
    (vars::EFS_FILE_SYSTEM_ID, "fs-0123456789abcdef0"),
    (vars::MOUNT_TARGET_SECURITY_GROUPS, "sg-0123456789abcdef0"),
    (vars::CODEBASE_BUCKET, "code-bucket"),
    (vars::CODEBASE_PREFIX, "app"),
    (vars::SYNC_EXCLUDES, "media/*,*.log,.env"),
    (vars::SYNC_DESTINATION, "/var/www"),
    (vars::SYNC_DOCUMENT, "fleetkeeper-sync"),
    (vars::LOCK_TABLE, "fleetkeeper-locks"),
    (vars::RETRIGGER_QUEUE_URL, "https://sqs.us-east-1.amazonaws.com/123456789012/fleetkeeper-codebase-sync"),
];

/// The configuration `component` reads from [`ENV`].
fn config(component: Component) -> Config {
    let env: HashMap<&str, &str> = ENV.iter().copied().collect();
    Config::from_lookup(component, |var| env.get(var).map(|v| (*v).to_owned()))
        .expect("the benchmarks' environment is a valid configuration")
}

// ---------------------------------------------------------------------------
// s3 batch of 100 records

/// Records in the SQS batch.
const RECORDS: u64 = 100;

/// The batch's keys that `FLEET_SYNC_EXCLUDES` leaves out.
const EXCLUDED: usize = 5;

/// Key `i` of the batch: distinct, all under the prefix; five excluded
/// (`media/*`, `*.log`).
fn upload_key(i: u64) -> String {
    match i {
        17 | 51 | 88 => format!("app/media/uploads/photo-{i:03}.jpg"),
        34 | 72 => format!("app/storage/logs/worker-{i:03}.log"),
        _ => format!("app/src/Module{}/Handler{i:03}.php", i / 10),
    }
}

/// An EventBridge S3 `Object Created` event (shared/fixtures/events/
/// s3-eventbridge-created.json), `i` seconds after [`T0`].
fn object_created(i: u64, key: &str) -> Value {
    json!({
        "version": "0", "id": format!("17793124-05d4-b198-2fde-{i:012x}"), "detail-type": "Object Created",
        "source": "aws.s3", "account": "123456789012", "time": format!("2026-11-01T00:{:02}:{:02}Z", i / 60, i % 60),
        "region": "us-east-1", "resources": ["arn:aws:s3:::code-bucket"],
        "detail": {
            "version": "0", "bucket": {"name": "code-bucket"},
            "object": {"key": key, "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184",
                       "sequencer": format!("00617F0829932{i:05X}")},
            "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012", "source-ip-address": "1.2.3.4",
            "reason": "PutObject"
        }
    })
}

/// One SQS record of an event source mapping's batch with `body` (the tests'
/// `sqs_message`, shared/fixtures/events/s3-eventbridge-deleted-sqs.json).
fn sqs_record(i: u64, body: &str) -> Value {
    let message_id = format!("6a5b4c3d-2e1f-4a0b-9c8d-{i:012x}");
    json!({
        "messageId": message_id, "receiptHandle": format!("{message_id}-1"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1793491200000",
            "SenderId": "AIDAJHIPRHEMV73VRJEBU", "ApproximateFirstReceiveTimestamp": "1793491200010"},
        "messageAttributes": {}, "md5OfBody": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fleetkeeper-uploads", "awsRegion": "us-east-1"
    })
}

/// `codebase-sync`'s input: the batch, its settings, the invocation's now.
struct UploadBatch {
    payload: Value,
    settings: SyncSettings,
    now: u64,
}

impl UploadBatch {
    fn new() -> Self {
        let records: Vec<Value> =
            (0..RECORDS).map(|i| sqs_record(i, &object_created(i, &upload_key(i)).to_string())).collect();
        let settings = SyncSettings::from_config(&config(Component::CodebaseSync), REGION)
            .expect("the benchmarks' environment serves codebase-sync");
        UploadBatch { payload: json!({ "Records": records }), settings, now: T0 + 300_000 }
    }
}

/// What `codebase-sync`'s handler does with an upload batch up to its
/// demand write: the relevant changes, the request it writes (`None`:
/// nothing relevant, it returns), the skips of its summary.
fn plan_upload_batch(payload: &Value, settings: &SyncSettings, now: u64) -> (usize, Option<Request>, Skips) {
    let received = events::parse(payload);
    let (demand, skipped) = triage(received, |e| codebase_sync::classify(e, settings));
    let relevant = demand.iter().filter(|r| matches!(r.event, Event::S3(_))).count();
    let request = (relevant > 0).then(|| Request {
        reason: "upload".to_owned(),
        when: StartWhen::Quiet { due: None },
        counts: true,
        changes: codebase_sync::change_times(&demand, now),
        allow_shrink: false,
    });
    (relevant, request, skipped)
}

// ---------------------------------------------------------------------------
// lifecycle event

/// The hook's global timeout: 48 hours (AWS's maximum).
const GLOBAL_TIMEOUT_MS: u64 = 172_800_000;

/// The instance's AZ.
const ZONE: &str = "us-east-1a";

/// The gate's bound on planner steps in one drive.
const MAX_STEPS: usize = 16;

/// An EventBridge "EC2 Instance-launch Lifecycle Action" at [`T0`]
/// (shared/fixtures/events/lifecycle-launch-eventbridge.json).
fn lifecycle_launch_event() -> Value {
    json!({
        "version": "0", "id": "12345678-1234-1234-1234-123456789012",
        "detail-type": "EC2 Instance-launch Lifecycle Action", "source": "aws.autoscaling",
        "account": "123456789012", "time": "2026-11-01T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:042cba90-ad2f-431c-9b4d-6d9055bcc9fb:autoScalingGroupName/web-a"],
        "detail": {
            "LifecycleActionToken": "87654321-4321-4321-4321-210987654321",
            "AutoScalingGroupName": "web-a",
            "LifecycleHookName": "fk-launch",
            "EC2InstanceId": "i-1234567890abcdef0",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "NotificationMetadata": "{\"purpose\": \"gate\"}",
            "Origin": "EC2",
            "Destination": "AutoScalingGroup"
        }
    })
}

/// `lifecycle-hook`'s input: the event, the configuration and the gate's
/// settings, the instance's record, what AWS would answer, the drive's now.
struct LifecycleCase {
    payload: Value,
    config: Config,
    settings: GateSettings,
    record: LifecycleRecord,
    world: Observed,
    now: u64,
}

impl LifecycleCase {
    /// The event's action three minutes in: the instance running, its
    /// mount target and agent ready (on record), the catch-up sent, the
    /// instance registered in both target groups 30 s ago; AWS answers the
    /// hook still holds it, the catch-up succeeded, both groups report it
    /// healthy.
    fn new() -> Self {
        let payload = lifecycle_launch_event();
        let config = config(Component::LifecycleHook);
        let settings = GateSettings::from_config(&config, REGION);
        let Some(Event::Lifecycle(action)) = events::parse(&payload).into_iter().next().map(|r| r.event) else {
            panic!("the launch event parses as a lifecycle action");
        };
        let mut state = ActionState::new(&action, T0);
        state.global_deadline = Some(T0 + GLOBAL_TIMEOUT_MS);
        state.default_result = Some(Completion::Abandon);
        state.step = "waiting for the target groups to report the instance healthy (initial)".into();
        state.catch_up = Some(CatchUp {
            attempt: 1,
            generation: 42,
            epoch: EPOCH.into(),
            command_id: Some("9d3a1c2e-7b4f-4e6a-8c1d-2f3e4a5b6c7d".into()),
            sent_at: T0 + 40_000,
            manifest: None,
            rollback: false,
            keep: Vec::new(),
        });
        state.ready = Ready { zone: Some(ZONE.into()), mount: true, agent: true };
        state.registered_at = Some(T0 + 150_000);
        let registered = config.target_group_arns.clone();
        let world = Observed {
            active: Some(true),
            hook: Some(HookObs { global_timeout_ms: GLOBAL_TIMEOUT_MS, default_result: Completion::Abandon }),
            lifecycle_state: Some(Some("Pending:Wait".into())),
            instance: Some(InstanceState::Running { zone: ZONE.into() }),
            mount: Some(MountState::Ready),
            agent_online: Some(true),
            catch_up: Some(CatchUpState::Succeeded),
            targets: Some(
                registered
                    .iter()
                    .map(|arn| TargetObs {
                        arn: arn.clone(),
                        health: Health::Healthy,
                        healthy_within_ms: 30_000,
                        drain_within_ms: 300_000,
                    })
                    .collect(),
            ),
        };
        let record = LifecycleRecord { action: Some(state), registered };
        LifecycleCase { payload, config, settings, record, world, now: T0 + 180_000 }
    }
}

/// `lifecycle-hook`'s `classify`, through the same shared functions.
fn classify_lifecycle(event: &Event, config: &Config, settings: &GateSettings) -> Result<(), Skip> {
    match event {
        Event::Lifecycle(a) if !config.manages_asg(&a.auto_scaling_group_name) => {
            Err(Skip::new(SkipReason::NotManaged, format!("group {:?} is not managed", a.auto_scaling_group_name)))
        }
        Event::Lifecycle(a) if !config.owns_hook(&a.lifecycle_hook_name) => {
            Err(Skip::new(SkipReason::NotManaged, format!("hook {:?} is not fleetkeeper's", a.lifecycle_hook_name)))
        }
        Event::Lifecycle(_) | Event::Scheduled(_) => Ok(()),
        Event::Manual(m) if m.action == ManualAction::Reconcile => Ok(()),
        Event::LifecycleTest(_) => Err(Skip::new(SkipReason::TestNotification, "autoscaling:TEST_NOTIFICATION")),
        Event::CommandStatus(c) => match (&settings.catch_up, &c.document_name) {
            (None, _) => Err(Skip::new(SkipReason::NotManaged, "no codebase configured: no catch-ups")),
            (Some(s), Some(d)) if *d != s.document => {
                Err(Skip::new(SkipReason::NotManaged, format!("command of document {d:?}")))
            }
            _ => Ok(()),
        },
        other => Err(not_for_this_function(other)),
    }
}

/// What the record already found ready (the gate's `seeded`, not in a dry run).
fn seeded(state: &ActionState) -> Observed {
    let hook = match (state.global_deadline, state.default_result) {
        (Some(deadline), Some(default_result)) => {
            Some(HookObs { global_timeout_ms: deadline.saturating_sub(state.started_at), default_result })
        }
        _ => None,
    };
    Observed {
        hook,
        instance: state.ready.zone.clone().map(|zone| InstanceState::Running { zone }),
        mount: state.ready.mount.then_some(MountState::Ready),
        agent_online: state.ready.agent.then_some(true),
        ..Observed::default()
    }
}

/// Answers the planner's question about `stage` as AWS would (`world`).
fn observe(seen: &mut Observed, stage: Stage, world: &Observed) {
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

/// The gate's planning loop for one action: its state from the record, then
/// the planner asked again with each observation it wants. The decision and
/// how many observations it took (`None`: a finished action, or the step
/// bound reached).
fn plan_action(
    event: &LifecycleAction,
    record: &LifecycleRecord,
    world: &Observed,
    duties: Duties,
    now: u64,
) -> Option<(Next, usize)> {
    let state = record.for_action(event, now);
    if state.done.is_some() {
        return None;
    }
    let action = state.action(&event.instance_id);
    let mut seen = seeded(&state);
    for asked in 0..MAX_STEPS {
        let plan = PlanRecord::new(&state, &record.registered);
        match next(&action, &plan, &seen, duties, now) {
            Next::Observe { stage } => observe(&mut seen, stage, world),
            decision => return Some((decision, asked)),
        }
    }
    None
}

/// What `lifecycle-hook`'s handler decides for an invocation, AWS's
/// answers given: each lifecycle action's decision, the skips.
fn drive_lifecycle(case: &LifecycleCase) -> (Vec<(Next, usize)>, Skips) {
    let received = events::parse(&case.payload);
    let (accepted, skipped) = triage(received, |e| classify_lifecycle(e, &case.config, &case.settings));
    let duties = Duties { mount: case.settings.mount.is_some(), catch_up: case.settings.catch_up.is_some() };
    let decisions = accepted
        .iter()
        .filter_map(|r| match &r.event {
            Event::Lifecycle(action) => plan_action(action, &case.record, &case.world, duties, case.now),
            _ => None,
        })
        .collect();
    (decisions, skipped)
}

// ---------------------------------------------------------------------------
// settle of a 1000-instance wave

/// Instances in the wave.
const INSTANCES: u64 = 1_000;

/// The wave's generation.
const GENERATION: u64 = 42;

/// The fleet's lineage.
const EPOCH: &str = "0f3c9a7b5d1e4c2a8b6f0e9d7c5a3b1f";

/// The wave's id.
const WAVE_ID: &str = "5f0c8f7e-3b7a-4d2e-9a41-6c1d2b3e4f50";

/// When the wave started, epoch ms.
const SENT_AT: u64 = T0 + 120_000;

fn instance_id(n: u64) -> String {
    format!("i-{n:017x}")
}

/// Instance `n`'s invocation, as `ListCommandInvocations` reports it
/// (`Status`, `StatusDetails`): 10 failed, 5 timed out running, 2 never
/// delivered, the rest succeeded.
fn invocation_status(n: u64) -> (&'static str, &'static str) {
    match n {
        500 | 900 => ("TimedOut", "DeliveryTimedOut"),
        _ if n % 200 == 42 => ("TimedOut", "ExecutionTimedOut"),
        _ if n % 100 == 7 => ("Failed", "Failed"),
        _ => ("Success", "Success"),
    }
}

/// The settle's input: the running wave and the fleet item holding it,
/// SSM's answers, the wave record's instances, the instances' run
/// histories, and the settings it uses.
struct WaveCase {
    wave: Wave,
    item: FleetItem,
    /// The commands as `ListCommands` gives them (no invocations).
    statuses: Vec<CommandView>,
    /// The same with their invocations.
    commands: Vec<CommandView>,
    intended: Vec<String>,
    history: HashMap<String, InstanceRecord>,
    now: u64,
    expires_at: u64,
    lease_ms: u64,
    quarantine_after: u32,
}

impl WaveCase {
    fn new(settings: &SyncSettings) -> Self {
        let intended: Vec<String> = (0..INSTANCES).map(instance_id).collect();
        let invocations: Vec<InvocationView> = (0..INSTANCES)
            .map(|n| {
                let (status, details) = invocation_status(n);
                InvocationView::new(instance_id(n), status, details)
            })
            .collect();
        // As the sender chunks them (`ssm_document::chunks`): 20 commands of 50.
        let commands: Vec<CommandView> = invocations
            .chunks(MAX_INSTANCE_IDS)
            .enumerate()
            .map(|(k, chunk)| {
                let all_synced = chunk.iter().all(|i| i.status == CommandStatus::Success);
                CommandView {
                    command_id: format!("{k:08x}-7c1a-4e2b-9d3f-{k:012x}"),
                    status: CommandStatus::parse(if all_synced { "Success" } else { "Failed" }),
                    invocations: chunk.to_vec(),
                }
            })
            .collect();
        let statuses = commands
            .iter()
            .map(|c| CommandView {
                command_id: c.command_id.clone(),
                status: c.status.clone(),
                invocations: Vec::new(),
            })
            .collect();
        let wave = Wave {
            id: WAVE_ID.into(),
            target: GENERATION,
            lease_expires_at: SENT_AT + settings.lease_ms,
            sending_since: SENT_AT,
            command_ids: commands.iter().map(|c| c.command_id.clone()).collect(),
            sent: true,
            fingerprint: Some(Fingerprint { count: 12_480, newest_ms: T0 + 99_999, digest: 0x5eed_cafe_f00d_beef }),
            sender: WAVE_ID.into(),
            changes_through: T0 + 99_999,
            ..Wave::default()
        };
        let item = FleetItem {
            requested_gen: GENERATION,
            completed_gen: GENERATION - 1,
            wave: Some(wave.clone()),
            epoch: EPOCH.into(),
            last_change_at: Some(T0 + 99_999),
            last_start_at: Some(SENT_AT),
            synced_through: T0 - 3_600_000,
            ..FleetItem::default()
        };
        // Every instance synced the previous generation; two of the failing
        // ones had failed twice already (the third quarantines them).
        let history = intended
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let record = InstanceRecord {
                    instance_id: id.clone(),
                    sync_failures: if n == 7 || n == 107 { 2 } else { 0 },
                    last_synced_gen: GENERATION - 1,
                    last_synced_epoch: EPOCH.into(),
                    ..InstanceRecord::default()
                };
                (id.clone(), record)
            })
            .collect();
        WaveCase {
            wave,
            item,
            statuses,
            commands,
            intended,
            history,
            now: SENT_AT + 300_000,
            expires_at: SENT_AT + 2 * 3_600_000,
            lease_ms: settings.lease_ms,
            quarantine_after: settings.quarantine_after,
        }
    }
}

/// What a settle decides and writes.
struct Settled {
    end: WaveEnd,
    /// The next fleet item.
    item: FleetItem,
    /// The instances' next run histories.
    records: Vec<InstanceRecord>,
    /// How many of them are written (the others never create an item).
    writes: usize,
    quarantined: Vec<String>,
    synced: usize,
    failed: Vec<String>,
    not_attempted: Vec<String>,
    gone: Vec<String>,
    unreachable: Vec<String>,
    /// Whether a follow-up wave may start.
    follow_up: bool,
}

/// The settle's decisions between its AWS calls (`SyncContext::settle`,
/// `record_results`): `None` when the wave would not finish.
fn settle_wave(case: &WaveCase) -> Option<Settled> {
    let intended = Some(case.intended.as_slice());
    // First on the commands' statuses alone (one listing) ...
    let first = settle(&case.wave, &case.statuses, intended, case.now, case.expires_at);
    if !matches!(first, Settlement::Done(_)) {
        return None;
    }
    // ... then, every command ended, on their invocations.
    let settlement = settle(&case.wave, &case.commands, intended, case.now, case.expires_at);
    let op = transition(&case.wave, &settlement, case.now, case.lease_ms)?;
    let item = apply(Some(&case.item), &op).ok()?;
    let Settlement::Done(result) = settlement else {
        return None;
    };
    let at = Synced { epoch: &case.item.epoch, generation: case.wave.target };
    let countable = result.countable();
    let records: Vec<InstanceRecord> = countable
        .iter()
        .map(|(id, r)| {
            let current = case.history.get(id).cloned().unwrap_or_else(|| InstanceRecord::fresh(id));
            next_record(current, at, *r, case.now, case.quarantine_after)
        })
        .collect();
    let writes = countable.iter().filter(|(_, r)| counts(*r)).count();
    let quarantined = records
        .iter()
        .filter(|r| r.quarantined() && !case.history.get(&r.instance_id).is_some_and(InstanceRecord::quarantined))
        .map(|r| r.instance_id.clone())
        .collect();
    Some(Settled {
        end: result.end,
        follow_up: start_refusal(&item).is_ok(),
        item,
        records,
        writes,
        quarantined,
        synced: result.with(InstanceResult::Synced).len(),
        failed: result.with(InstanceResult::Failed),
        not_attempted: result.with(InstanceResult::NotAttempted),
        gone: result.with(InstanceResult::Gone),
        unreachable: result.with(InstanceResult::Unreachable),
    })
}

// ---------------------------------------------------------------------------
// checks and the group

/// Each benchmark's path, checked once before timing it.
fn check(batch: &UploadBatch, lifecycle: &LifecycleCase, wave: &WaveCase) {
    let (relevant, request, skipped) = plan_upload_batch(&batch.payload, &batch.settings, batch.now);
    assert_eq!(relevant, RECORDS as usize - EXCLUDED);
    assert_eq!(skipped.by_reason.get("not_managed"), Some(&EXCLUDED), "{skipped:?}");
    let request = request.expect("an upload request");
    assert_eq!(
        request.changes,
        Some(ChangeTimes { oldest: T0 + 999, newest: T0 + (RECORDS - 1) * 1000 + 999, seen: batch.now })
    );

    let (decisions, skipped) = drive_lifecycle(lifecycle);
    assert_eq!(skipped.total(), 0, "{skipped:?}");
    // Asked: active, catch-up, targets (the rest is on record).
    assert_eq!(decisions, [(Next::Continue { warnings: Vec::new() }, 3)]);

    let settled = settle_wave(wave).expect("the wave finishes");
    assert_eq!(settled.end, WaveEnd::Failure);
    assert_eq!((settled.synced, settled.failed.len(), settled.unreachable.len()), (983, 15, 2));
    assert!(settled.not_attempted.is_empty() && settled.gone.is_empty());
    assert_eq!(settled.quarantined, [instance_id(7), instance_id(107)]);
    assert_eq!((settled.records.len(), settled.writes), (INSTANCES as usize, 998));
    assert_eq!((settled.item.wave, settled.item.failed_gen, settled.item.failed_attempts), (None, GENERATION, 1));
    assert!(settled.follow_up, "the failed generation is retried once");
}

fn planners(c: &mut Criterion) {
    let batch = UploadBatch::new();
    let lifecycle = LifecycleCase::new();
    let wave = WaveCase::new(&batch.settings);
    check(&batch, &lifecycle, &wave);

    let mut g = c.benchmark_group("planners");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("s3 batch of 100 records", |b| {
        b.iter(|| plan_upload_batch(black_box(&batch.payload), &batch.settings, batch.now))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("lifecycle event", |b| b.iter(|| drive_lifecycle(black_box(&lifecycle))));
    g.throughput(Throughput::Elements(INSTANCES));
    g.bench_function("settle of a 1000-instance wave", |b| b.iter(|| settle_wave(black_box(&wave))));
    g.finish();
}

criterion_group!(benches, planners);
criterion_main!(benches);
