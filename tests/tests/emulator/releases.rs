//! Consistent releases (review `sync-path-2ca1350.md`, H3): a wave never
//! syncs a half-uploaded codebase. The four handlers in process behind the
//! event router, the local agent running the real document on each
//! instance, S3 event times and SQS delays on the test clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper::clock::Clock;
use fleetkeeper::config::vars;
use fleetkeeper::ssm_document::history::RunHistory;
use fleetkeeper::sync::state::WaveEnd;
use fleetkeeper_tests::fleet::FleetSpec;
use fleetkeeper_tests::inprocess::set_var;
use serde_json::{Value, json};

use crate::world::{Settled, World};

/// The quiet period these scenarios deploy with (the documented default).
const QUIET_S: u64 = 60;

fn plain(instances: i32) -> FleetSpec {
    FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() }
}

/// A world whose waves wait for `quiet_s` of quiet, `extra` set on every function.
async fn world(instances: i32, quiet_s: u64, extra: &[(&str, &str)]) -> World {
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    World::with_quiet(plain(instances), quiet_s, move |env| {
        for (k, v) in &extra {
            set_var(env, k, v);
        }
    })
    .await
}

/// The codebase as S3 holds it: relative key to content (excluded `media/*` left out).
pub(crate) async fn bucket_tree(w: &World) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pages =
        w.clients.s3.list_objects_v2().bucket(&w.fleet.bucket).prefix(&w.fleet.prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list").contents() {
            let key = o.key().unwrap_or_default().to_owned();
            let relative = key.trim_start_matches(w.fleet.prefix.as_str()).to_owned();
            if relative.starts_with("media/") {
                continue;
            }
            let body = w.clients.s3.get_object().bucket(&w.fleet.bucket).key(&key).send().await.expect("get");
            let bytes = body.body.collect().await.expect("body").into_bytes();
            out.insert(relative, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// The live tree of `instance`: relative path to content (regular files, the
/// links to `shared/` not followed).
pub(crate) fn live_tree(w: &World, instance: &str) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_file() {
                let relative = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                out.insert(relative, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Some(current) = w.current(instance) {
        let root = std::fs::canonicalize(&current).expect("current resolves");
        walk(&root, &root, &mut out);
    }
    out
}

/// Uploads `key` (relative to the prefix) with `body`.
pub(crate) async fn put(w: &World, key: &str, body: &str) {
    w.fleet.put(&w.clients, key, body).await;
}

pub(crate) async fn delete(w: &World, key: &str) {
    w.fleet.delete(&w.clients, key).await;
}

/// The generations the agent synced on `instance` in `settled` (one per run).
pub(crate) fn runs_on(settled: &Settled, instance: &str) -> usize {
    settled.runs.iter().filter(|r| r.instance_id == instance).count()
}

/// The replies of `component` in `settled`.
fn replies(settled: &Settled, component: Component) -> Vec<Value> {
    settled
        .deliveries
        .iter()
        .filter(|d| d.to == component)
        .map(|d| d.reply.clone().unwrap_or_else(|e| json!({"error": e})))
        .collect()
}

/// Deploys what S3 holds now: past the quiet period, everything settles.
async fn deploy_settled(w: &mut World) -> Settled {
    let mut all = w.settle().await;
    w.clock.advance(Duration::from_secs(QUIET_S + 1)).await;
    let more = w.settle().await;
    all.deliveries.extend(more.deliveries);
    all.runs.extend(more.runs);
    all
}

#[tokio::test]
async fn a_deploy_of_500_files_over_30_s_is_one_wave_of_the_complete_codebase() {
    let mut w = world(2, QUIET_S, &[]).await;
    let ids = w.instances().await;
    // The first release (index.php, uploaded before fleetkeeper ran).
    put(&w, "lib/old.php", "old").await;
    deploy_settled(&mut w).await;
    assert_eq!(live_tree(&w, &ids[0]), bucket_tree(&w).await, "the first release is live");
    let before = w.item().await;

    // `aws s3 sync ./build s3://code/app/`: 500 files over 30 s, the events
    // delivered in SQS batches as they come.
    let mut during = Settled::default();
    for i in 0..500 {
        put(&w, &format!("build/{i:03}.php"), &format!("release 2, file {i}")).await;
        if i == 250 {
            put(&w, "index.php", "release 2 entry point: needs build/499.php").await;
            delete(&w, "lib/old.php").await;
        }
        w.clock.advance(Duration::from_millis(60)).await;
        if i % 25 == 24 {
            let s = w.settle().await;
            during.runs.extend(s.runs);
            during.deliveries.extend(s.deliveries);
        }
    }
    assert!(during.runs.is_empty(), "no instance synced while the upload ran: {:?}", during.runs.len());
    assert!(w.item().await.wave.is_none(), "no wave started while the codebase changed");
    let waiting = replies(&during, Component::CodebaseSync);
    assert!(
        waiting.iter().any(|r| r["wave"]["outcome"] == "waiting"),
        "the dispatches say they wait for the quiet period: {waiting:?}"
    );
    let sqs_sends = w.emulator.calls(fleetkeeper_tests::emulator::Caller::Function(Component::CodebaseSync)).await;
    assert!(
        sqs_sends.of("SendMessage") <= 3,
        "one delayed start on its way at a time, not one per batch: {}",
        sqs_sends.of("SendMessage")
    );

    // Quiet from the last upload on: the delayed start is due. The test clock
    // is wall time plus the advanced offset, so the latency is counted in
    // advanced seconds (the wall time the settles take varies by machine).
    let last_upload = w.clock.now_ms();
    let mut after = Settled::default();
    let mut started_after_s = None;
    for second in 1..=(QUIET_S + 5) {
        w.clock.advance(Duration::from_secs(1)).await;
        let s = w.settle().await;
        if started_after_s.is_none() && !s.runs.is_empty() {
            started_after_s = Some(second);
        }
        after.runs.extend(s.runs);
        after.deliveries.extend(s.deliveries);
    }
    let started_after_s = started_after_s.expect("the wave started once the codebase was quiet");
    let wave = w.waves().await.pop().expect("its record");
    // Measured, not assumed: the quiet period plus the event time's missing
    // second and SQS's whole-second delay.
    println!(
        "added latency: the wave ran {started_after_s} s of test time after the last upload \
         (record: {} ms on the clock, quiet period {QUIET_S} s)",
        wave.started_at.saturating_sub(last_upload)
    );
    // Not before the quiet period, on the one clock both times are read from.
    assert!(wave.started_at + 1000 >= last_upload + QUIET_S * 1000, "started before the quiet period ended: {wave:?}");
    assert!(started_after_s <= QUIET_S + 2, "within 2 s of the quiet period's end: {started_after_s} s");
    let expected = bucket_tree(&w).await;
    assert_eq!(expected.len(), 501, "index.php and the 500 files");
    for id in &ids {
        assert_eq!(runs_on(&after, id), 1, "one wave (the complete codebase), no follow-up: {id}");
        assert_eq!(live_tree(&w, id), expected, "{id} serves exactly the final upload");
    }
    let item = w.item().await;
    assert_eq!(item.completed_gen, item.requested_gen, "every batch's demand is covered by the one wave");
    assert!(item.completed_gen > before.completed_gen);
}

#[tokio::test]
async fn an_upload_in_the_quiet_period_writes_its_demand_and_its_delayed_start_only() {
    // A start the quiet period refuses is a write for nothing (a refused
    // conditional write still costs a write unit): the demand's own item
    // shows the quiet period, so the upload queues its delayed start.
    let mut w = world(1, QUIET_S, &[]).await;
    let caller = fleetkeeper_tests::emulator::Caller::Function(Component::CodebaseSync);
    w.settle().await;
    w.emulator.forget_calls(caller).await;
    put(&w, "v1.php", "1").await;
    let round = w.router.pump().await;
    assert_eq!(round.iter().filter(|d| d.to == Component::CodebaseSync).count(), 1);
    let calls = w.emulator.calls(caller).await;
    assert_eq!(calls.of("UpdateItem") + calls.of("PutItem"), 2, "demand and the delayed start: {:?}", calls.0);
    assert_eq!(calls.of("SendMessage"), 1, "{:?}", calls.0);
    assert!(w.item().await.trigger_at.is_some(), "the delayed start is on record");
    // It still starts once quiet.
    w.clock.advance(Duration::from_secs(QUIET_S + 1)).await;
    w.router.pump().await;
    assert!(w.item().await.wave.is_some(), "the delayed start sent the wave");
}

#[tokio::test]
async fn uploads_during_a_wave_make_one_follow_up_after_they_settle() {
    let mut w = world(2, QUIET_S, &[]).await;
    let ids = w.instances().await;
    put(&w, "v1.php", "1").await;
    w.settle().await;
    w.clock.advance(Duration::from_secs(QUIET_S + 1)).await;
    // The delayed start arrives; the wave is sent; uploads come before any instance ran it.
    w.router.pump().await;
    let wave = w.item().await.wave.expect("a wave runs");
    for i in 0..20 {
        put(&w, &format!("v2-{i}.php"), "2").await;
        w.clock.advance(Duration::from_secs(1)).await;
    }
    let mid = w.settle().await;
    assert_eq!(runs_on(&mid, &ids[0]), 1, "the running wave ran, the follow-up waits for the uploads to settle");
    assert_eq!(w.item().await.completed_gen, wave.target);
    let rest = deploy_settled(&mut w).await;
    assert_eq!(runs_on(&rest, &ids[0]), 1, "exactly one follow-up");
    assert_eq!(live_tree(&w, &ids[1]), bucket_tree(&w).await);
}

#[tokio::test]
async fn a_trickle_of_changes_still_syncs_after_the_max_delay() {
    let mut w = world(1, 30, &[(vars::SYNC_MAX_DELAY_SECONDS, "120")]).await;
    let id = w.instances().await.remove(0);
    let mut runs = 0;
    let mut first_run_at_s = None;
    // A file every 20 s of test time for 4 minutes: never 30 s of quiet.
    // Times are counted in advanced seconds: the test clock also moves with
    // the wall time the settles take.
    for i in 0..12u64 {
        put(&w, &format!("log-{i}.php"), "x").await;
        let s = w.settle().await;
        if runs_on(&s, &id) > 0 && first_run_at_s.is_none() {
            first_run_at_s = Some(i * 20);
        }
        runs += runs_on(&s, &id);
        w.clock.advance(Duration::from_secs(20)).await;
    }
    let first = first_run_at_s.expect("the max delay forced a wave while the trickle went on");
    assert!((100..=120).contains(&first), "forced by the max delay (120 s) of the first change: {first} s");
    assert!(runs <= 3, "a wave per max delay, not per change: {runs}");
    deploy_settled(&mut w).await;
    assert_eq!(live_tree(&w, &id), bucket_tree(&w).await);
}

#[tokio::test]
async fn a_manual_sync_starts_at_once_despite_the_quiet_period() {
    let mut w = world(1, QUIET_S, &[]).await;
    let id = w.instances().await.remove(0);
    put(&w, "hotfix.php", "fixed").await;
    w.settle().await;
    assert!(w.item().await.wave.is_none(), "the upload waits");
    w.router.invoke(Component::CodebaseSync, json!({"action": "sync", "reason": "hotfix"})).await;
    let s = w.settle().await;
    assert_eq!(runs_on(&s, &id), 1, "the manual sync ran at once");
    assert!(w.has(&id, "hotfix.php"));
    // The delayed start queued by the upload arrives later and finds nothing to do.
    let later = deploy_settled(&mut w).await;
    assert_eq!(runs_on(&later, &id), 0);
}

#[tokio::test]
async fn marker_mode_syncs_only_on_the_marker_and_records_its_release() {
    let mut w = world(2, 0, &[(vars::RELEASE_MARKER, ".release")]).await;
    let ids = w.instances().await;
    // Uploads without the marker wait for it, whatever the time.
    for i in 0..30 {
        put(&w, &format!("r1/{i}.php"), "r1").await;
    }
    let s = deploy_settled(&mut w).await;
    assert!(s.runs.is_empty(), "no wave without the marker");
    assert_eq!(w.item().await.requested_gen, 0, "no demand either");
    let skips = replies(&s, Component::CodebaseSync);
    assert!(
        skips.iter().any(|r| r["skipped"].to_string().contains("awaiting_release_marker")),
        "logged as waiting for the marker: {skips:?}"
    );
    // The sweep does not count them as a lost event either.
    w.clock.advance(Duration::from_secs(300)).await;
    let swept = w.tick().await;
    assert!(swept.runs.is_empty(), "the sweep waits for the marker too");

    put(&w, ".release", "v2026.11.27-1\nbuilt by ci\n").await;
    let s = w.settle().await;
    for id in &ids {
        assert_eq!(runs_on(&s, id), 1, "the marker releases at once (no quiet period in marker mode)");
        assert!(w.has(id, "r1/29.php"));
        let release = w.agent.on_instance(id, &w.fleet.destination).join(".fleetkeeper.release");
        assert_eq!(std::fs::read_to_string(&release).expect("release id").trim(), "v2026.11.27-1", "{id}");
    }
    let item = w.item().await;
    let records = w.waves().await;
    assert!(
        records.iter().any(|r| r.release.as_deref() == Some("v2026.11.27-1") && r.target == item.completed_gen),
        "the wave record names the release: {records:?}"
    );
    // A marker without a release id on its first line: its ETag names it.
    put(&w, ".release", "not an id: spaces; and $(things)\n").await;
    w.settle().await;
    let release = w.agent.on_instance(&ids[0], &w.fleet.destination).join(".fleetkeeper.release");
    let etag = std::fs::read_to_string(release).expect("release id");
    assert_eq!(etag.trim().len(), 32, "an MD5 ETag: {etag}");
    // Removing the marker releases nothing.
    delete(&w, ".release").await;
    let s = deploy_settled(&mut w).await;
    assert!(s.runs.is_empty());
}

#[tokio::test]
async fn a_recursive_delete_and_re_upload_never_puts_an_empty_release_live() {
    for quiet in [QUIET_S, 0] {
        let mut w = world(2, quiet, &[]).await;
        let ids = w.instances().await;
        for i in 0..40 {
            put(&w, &format!("app-{i}.php"), "v1").await;
        }
        deploy_settled(&mut w).await;
        let v1 = bucket_tree(&w).await;
        assert_eq!(live_tree(&w, &ids[0]), v1);

        // `aws s3 rm --recursive`, then a re-upload a few seconds later.
        for key in v1.keys() {
            delete(&w, key).await;
        }
        w.clock.advance(Duration::from_millis(200)).await;
        let gap = w.settle().await;
        for id in &ids {
            assert!(!live_tree(&w, id).is_empty(), "quiet {quiet}: {id} never serves an empty release");
        }
        if quiet == 0 {
            // No quiet period: the wave of the empty prefix ran, and every
            // instance's guard refused it.
            let finished = replies(&gap, Component::SyncCompletion);
            assert!(
                finished.iter().any(|r| r["settled"]["blame"]["blame"] == "refused"),
                "the completion says why: {finished:?}"
            );
        }
        for key in v1.keys() {
            put(&w, key, "v2").await;
        }
        put(&w, "new.php", "v2").await;
        deploy_settled(&mut w).await;
        for id in &ids {
            assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "quiet {quiet}: {id} serves the re-upload");
        }
    }
}

#[tokio::test]
async fn the_guard_refuses_a_shrinking_release_says_why_and_yields_to_allow_shrink() {
    let mut w = world(2, 0, &[]).await;
    let ids = w.instances().await;
    for i in 0..10 {
        put(&w, &format!("page-{i}.php"), "v1").await;
    }
    w.settle().await;
    let v1 = live_tree(&w, &ids[0]);
    assert_eq!(v1.len(), 11);

    // A deploy that loses 8 of 11 files (default FLEET_SYNC_MAX_SHRINK 0.5).
    for i in 0..8 {
        delete(&w, &format!("page-{i}.php")).await;
    }
    let s = w.settle().await;
    let completion = replies(&s, Component::SyncCompletion);
    let finished = completion.iter().find(|r| r["settled"]["outcome"] == "finished").expect("the wave ended");
    assert_eq!(finished["settled"]["end"], "refused", "{finished}");
    let blame = finished["settled"]["blame"].clone();
    assert_eq!(blame["refused"], 2);
    let reason = blame["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("loses 8 of the 11 files"), "the response says why: {reason}");
    for id in &ids {
        assert_eq!(live_tree(&w, id), v1, "{id} kept current");
    }
    let item = w.item().await;
    assert!(item.completed_gen < item.requested_gen, "a refused release is not synced");
    let records = w.store().instances(&ids).await.expect("records");
    assert!(records.iter().all(|r| r.sync_failures == 0 && !r.quarantined()), "never the hosts' fault: {records:?}");
    let wave = w.waves().await.into_iter().find(|r| r.end == Some(WaveEnd::Refused));
    assert!(wave.and_then(|r| r.blame).is_some_and(|b| b.contains("allow_shrink")), "the record says how to go on");

    // No automatic retry: the sweep leaves the held release alone, and it
    // catches nobody up to it: an instance attached now (no hook) keeps
    // waiting instead of going live with the refused content.
    w.fleet.scale_to(&w.clients, 3).await;
    w.clock.advance(Duration::from_secs(300)).await;
    let swept = w.tick().await;
    assert!(swept.runs.is_empty(), "a refused release is neither retried nor caught up to: {:?}", swept.runs.len());
    let newcomer = w.instances().await.into_iter().find(|i| !ids.contains(i)).expect("a new instance");
    assert!(live_tree(&w, &newcomer).is_empty(), "the newcomer serves nothing rather than the refused release");

    // The operator means it.
    w.router
        .invoke(Component::CodebaseSync, json!({"action": "sync", "allow_shrink": true, "reason": "cleanup"}))
        .await;
    let s = w.settle().await;
    for id in &ids {
        assert_eq!(runs_on(&s, id), 1);
        assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "{id} switched to the smaller release");
    }
    // Once the lift ended the hold, the sweep catches the newcomer up.
    w.clock.advance(Duration::from_secs(300)).await;
    w.tick().await;
    assert_eq!(live_tree(&w, &newcomer), bucket_tree(&w).await, "caught up to the accepted release");
    let item = w.item().await;
    assert_eq!(item.completed_gen, item.requested_gen);
    // The lift was for that sync only: the next shrink is refused again.
    for i in 8..10 {
        delete(&w, &format!("page-{i}.php")).await;
    }
    let s = w.settle().await;
    let completion = replies(&s, Component::SyncCompletion);
    assert!(completion.iter().any(|r| r["settled"]["end"] == "refused"), "{completion:?}");
}

#[tokio::test]
async fn a_quiet_period_longer_than_sqs_delays_is_a_chain_of_triggers() {
    // 20 minutes of quiet: SQS delays at most 15, so the first trigger is due
    // after 15 minutes, finds the codebase still within its quiet period
    // and queues the next; the wave starts once 20 minutes passed.
    let mut w = world(1, 1_200, &[(vars::SYNC_MAX_DELAY_SECONDS, "3600")]).await;
    let id = w.instances().await.remove(0);
    put(&w, "slow.php", "x").await;
    let first = w.settle().await;
    let waiting = replies(&first, Component::CodebaseSync);
    let due = waiting.iter().find_map(|r| r["wave"]["trigger"]["due"].as_u64()).expect("a trigger queued");
    assert!(due <= w.clock.now_ms() + 900_000, "never due later than SQS can deliver it");
    w.clock.advance(Duration::from_secs(901)).await;
    let early = w.settle().await;
    assert!(early.runs.is_empty(), "15 minutes are not 20");
    let again = replies(&early, Component::CodebaseSync);
    assert!(again.iter().any(|r| r["wave"]["trigger"]["trigger"] == "queued"), "the next link: {again:?}");
    w.clock.advance(Duration::from_secs(300)).await;
    let late = w.settle().await;
    assert_eq!(runs_on(&late, &id), 1, "the wave started once 20 minutes were quiet");
    assert!(w.has(&id, "slow.php"));
}

#[tokio::test]
async fn a_launch_waits_while_the_instances_refuse_the_release() {
    // Gated launches (fleetkeeper's hooks on the group), waves at once.
    let mut w = World::with_quiet(FleetSpec { instances: 1, ..FleetSpec::default() }, 0, |_| {}).await;
    w.settle().await;
    let first = w.instances().await.remove(0);
    for i in 0..10 {
        put(&w, &format!("page-{i}.php"), "v1").await;
    }
    w.settle().await;
    assert_eq!(live_tree(&w, &first).len(), 11, "the first release is live");
    for i in 0..9 {
        delete(&w, &format!("page-{i}.php")).await;
    }
    w.settle().await;
    assert!(w.item().await.refusal_held(), "the shrink was refused");

    // A scale-out meanwhile: the gate holds the launch, loudly, and sends it
    // no catch-up (it would put the refused release live, then in service).
    w.fleet.scale_to(&w.clients, 2).await;
    let held = w.settle().await;
    let newcomer = w.instances().await.into_iter().find(|i| *i != first).expect("a new instance");
    assert!(held.runs.iter().all(|r| r.instance_id != newcomer), "no catch-up was sent to it");
    let replies = replies(&held, Component::LifecycleHook);
    assert!(replies.iter().any(|r| r.to_string().contains("shrink guard")), "the gate says why: {replies:?}");
    assert_eq!(w.fleet.lifecycle_state(&w.clients, &newcomer).await.as_deref(), Some("Pending:Wait"));

    // The operator means it: the fleet takes the smaller release, and the
    // next reconcile lets the launch through with it.
    w.router.invoke(Component::CodebaseSync, json!({"action": "sync", "allow_shrink": true})).await;
    w.settle().await;
    w.clock.advance(Duration::from_secs(300)).await;
    w.tick().await;
    assert_eq!(w.fleet.lifecycle_state(&w.clients, &newcomer).await.as_deref(), Some("InService"));
    assert_eq!(live_tree(&w, &newcomer), bucket_tree(&w).await, "it serves the release the fleet took");
}
