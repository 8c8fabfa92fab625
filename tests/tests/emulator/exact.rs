//! Exact releases (issue 14): the winner of each wave writes the manifest of
//! the codebase to the manifest bucket, and every instance materializes
//! exactly that, by version id on a versioned bucket, by `If-Match` on an
//! unversioned one. The four handlers in process behind the event router,
//! the local agent running the real document on each instance.

use std::time::SystemTime;

use fleetkeeper::config::vars;
use fleetkeeper::ssm_document::history::RunHistory;
use fleetkeeper::sync::state::{FleetItem, WaveEnd};
use fleetkeeper_tests::emulator::unique;
use fleetkeeper_tests::fleet::FleetSpec;
use fleetkeeper_tests::inprocess::set_var;
use sha2::{Digest, Sha256};

use crate::releases::{bucket_tree, live_tree, put, runs_on};
use crate::world::World;

fn plain(instances: i32) -> FleetSpec {
    FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() }
}

/// A world whose functions write each wave's manifest to a bucket of their
/// own; the codebase bucket versioned or not. Waves start at once (quiet 0).
async fn world(instances: i32, versioned: bool) -> (World, String) {
    world_of(plain(instances), versioned, 0).await
}

/// The same for `spec`, waves waiting for `quiet_s` of quiet.
pub(crate) async fn world_of(spec: FleetSpec, versioned: bool, quiet_s: u64) -> (World, String) {
    let manifests = unique("man");
    let bucket = manifests.clone();
    let w = World::with_quiet(spec, quiet_s, move |env| set_var(env, vars::MANIFEST_BUCKET, &bucket)).await;
    w.clients.s3.create_bucket().bucket(&manifests).send().await.expect("manifest bucket");
    if versioned {
        let on = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        w.clients
            .s3
            .put_bucket_versioning()
            .bucket(&w.fleet.bucket)
            .versioning_configuration(on)
            .send()
            .await
            .expect("versioning");
        // The object uploaded before versioning has the `null` version: write it again.
        put(&w, "index.php", "<?php // index").await;
    }
    (w, manifests)
}

/// The manifest object a wave record names: its bytes.
async fn manifest_bytes(w: &World, bucket: &str, key: &str) -> Vec<u8> {
    let object = w.clients.s3.get_object().bucket(bucket).key(key).send().await.expect("the manifest is there");
    object.body.collect().await.expect("body").into_bytes().to_vec()
}

/// Sets the modification time of `key` in every instance's live tree to
/// the object's `LastModified`, as `aws s3 sync` would have left it had the
/// object been written within the same second as the copy it holds: the
/// same size and the same second, which `aws s3 sync` cannot tell apart.
async fn as_if_within_the_same_second(w: &World, ids: &[String], key: &str) {
    let head = w
        .clients
        .s3
        .head_object()
        .bucket(&w.fleet.bucket)
        .key(format!("{}{key}", w.fleet.prefix))
        .send()
        .await
        .expect("head");
    let ms = head.last_modified().expect("LastModified").to_millis().expect("ms");
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).expect("after 1970"));
    for id in ids {
        let path = w.current(id).expect("current").join(key);
        let file = std::fs::File::options().write(true).open(&path).expect("the live copy");
        file.set_modified(at).expect("mtime");
    }
}

#[tokio::test]
async fn a_same_size_change_within_the_second_reaches_every_instance() {
    let (mut w, manifests) = world(2, false).await;
    let ids = w.instances().await;
    put(&w, "config.php", "1111").await;
    w.settle().await;
    for id in &ids {
        assert_eq!(live_tree(&w, id)["config.php"], "1111", "{id}");
    }
    put(&w, "config.php", "2222").await;
    as_if_within_the_same_second(&w, &ids, "config.php").await;
    let s = w.settle().await;
    for id in &ids {
        assert_eq!(runs_on(&s, id), 1, "{id}");
        assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "{id} serves exactly the codebase");
    }
    // The wave's manifest is in the manifest bucket, content-addressed and
    // as the record says.
    let wave = w.waves().await.pop().expect("a wave");
    let key = wave.manifest.clone().expect("the wave has a manifest");
    let sha = wave.manifest_sha256.clone().expect("and its sha256");
    assert_eq!(key, format!("manifests/{}/{sha}.jsonl.gz", w.fleet.name));
    let bytes = manifest_bytes(&w, &manifests, &key).await;
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    let out = s.runs.iter().map(|r| r.run.stdout.as_str()).collect::<Vec<_>>().join("\n");
    assert!(out.contains("1 fetched"), "only the changed key is downloaded: {out}");
}

#[tokio::test]
async fn an_upload_during_a_wave_never_enters_its_release_on_a_versioned_bucket() {
    let (mut w, _) = world(2, true).await;
    let ids = w.instances().await;
    w.settle().await;
    put(&w, "app.php", "release 1").await;
    // The upload's event starts the wave; it is sent, not run yet.
    w.router.pump().await;
    let wave = w.item().await.wave.expect("a wave runs");
    // Uploads while it runs.
    put(&w, "app.php", "release 2, uploaded during the wave").await;
    put(&w, "late.php", "late").await;
    let runs = w.agent.run_pending().await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    for id in &ids {
        let tree = live_tree(&w, id);
        assert_eq!(tree["app.php"], "release 1", "{id}: the wave's release is the codebase at its start");
        assert!(!tree.contains_key("late.php"), "{id}: nothing uploaded after it started");
    }
    assert!(runs.iter().all(|r| r.run.code == 0), "{runs:?}");
    // The uploads make the follow-up, which brings them.
    w.settle().await;
    let record = w.wave(&wave.id).await;
    assert_eq!(record.end, Some(WaveEnd::Success));
    for id in &ids {
        assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "{id}");
    }
}

#[tokio::test]
async fn an_upload_during_a_wave_fails_it_cleanly_on_an_unversioned_bucket() {
    let (mut w, _) = world(2, false).await;
    let ids = w.instances().await;
    w.settle().await;
    let before: Vec<_> = ids.iter().map(|id| live_tree(&w, id)).collect();
    put(&w, "app.php", "release 1").await;
    w.router.pump().await;
    let wave = w.item().await.wave.expect("a wave runs");
    put(&w, "app.php", "release 2, uploaded during the wave").await;
    let runs = w.agent.run_pending().await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (id, before) in ids.iter().zip(&before) {
        let run = runs.iter().find(|r| &r.instance_id == id).expect("ran");
        assert_eq!(run.run.code, 75, "{id}: {run:?}");
        assert!(run.run.stdout.contains("fleetkeeper: stale: "), "{id}: {}", run.run.stdout);
        assert_eq!(&live_tree(&w, id), before, "{id}: current is kept");
    }
    // The wave fails as a release failure (nobody quarantined); the upload's
    // demand makes the next wave, with a fresh manifest.
    w.settle().await;
    let record = w.wave(&wave.id).await;
    assert_eq!(record.end, Some(WaveEnd::Failure), "{record:?}");
    let records = w.store().instances(&ids).await.expect("records");
    assert!(records.iter().all(|r| !r.quarantined()), "nobody quarantined: {records:?}");
    for id in &ids {
        assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "{id}");
    }
    let last = w.waves().await.pop().expect("the next wave");
    assert_ne!(last.manifest, record.manifest, "a fresh manifest");
}

#[tokio::test]
async fn keys_that_cannot_be_a_path_are_refused_and_listed_and_the_rest_syncs() {
    let (mut w, _) = world(1, false).await;
    let id = w.instances().await.remove(0);
    put(&w, "lib", "a file where a directory is needed").await;
    put(&w, "lib/a.php", "a").await;
    put(&w, "tab\tkey.php", "x").await;
    put(&w, "docs/", "").await;
    put(&w, "ok.php", "fine").await;
    w.settle().await;
    let wave = w.waves().await.pop().expect("a wave");
    assert_eq!(wave.refused_key_count, 4, "{:?}", wave.refused_keys);
    assert!(
        wave.refused_keys.contains(&"\"tab\\tkey.php\": a control character".to_owned()),
        "{:?}",
        wave.refused_keys
    );
    assert!(
        wave.refused_keys.contains(&"\"docs/\": a folder marker (ends in /)".to_owned()),
        "{:?}",
        wave.refused_keys
    );
    assert!(wave.refused_keys.iter().any(|k| k.contains("file/directory collision")), "{:?}", wave.refused_keys);
    let tree = live_tree(&w, &id);
    assert_eq!(tree["ok.php"], "fine");
    assert!(!tree.contains_key("lib") && !tree.contains_key("lib/a.php"), "{tree:?}");
    assert_eq!(wave.end, Some(WaveEnd::Success));
}

/// The `manifest` parameter of the catch-ups sent to `instance`.
async fn catch_up_manifests(w: &World, instance: &str) -> Vec<String> {
    let listed = w.clients.ssm.list_commands().instance_id(instance).send().await.expect("list_commands");
    listed
        .commands()
        .iter()
        .filter(|c| c.comment().unwrap_or_default().starts_with("fleetkeeper catch-up"))
        .map(|c| c.parameters().and_then(|p| p.get("manifest")).and_then(|v| v.first()).cloned().unwrap_or_default())
        .collect()
}

/// A fleet of two whose second instance missed the wave of `v1.php` (its
/// agent was offline), then the sweep that catches it up: the world, the
/// instances, and the fleet item after the wave.
async fn straggler(versioned: bool) -> (World, Vec<String>, FleetItem) {
    let (mut w, _) = world(2, versioned).await;
    let ids = w.instances().await;
    w.emulator.set_agent(&ids[1], Some("ConnectionLost")).await;
    put(&w, "v1.php", "1").await;
    w.settle().await;
    assert!(w.has(&ids[0], "v1.php") && !w.has(&ids[1], "v1.php"), "its agent was offline at the wave's start");
    let item = w.item().await;
    w.emulator.set_agent(&ids[1], Some("Online")).await;
    w.clock.advance(std::time::Duration::from_secs(300)).await;
    w.tick().await;
    (w, ids, item)
}

#[tokio::test]
async fn a_straggler_catches_up_to_the_release_the_fleet_serves() {
    let (w, ids, item) = straggler(true).await;
    let release = item.release.clone().expect("the fleet's release has a manifest");
    let first_wave = w.waves().await.into_iter().find(|r| r.target == item.completed_gen).expect("its record");
    assert_eq!(first_wave.manifest.as_ref(), Some(&release.key));
    assert_eq!(catch_up_manifests(&w, &ids[1]).await, [release.key], "the fleet's manifest");
    assert_eq!(live_tree(&w, &ids[1]), live_tree(&w, &ids[0]), "it serves what the fleet serves");
    let records = w.store().instances(&ids).await.expect("records");
    assert!(records.iter().all(|r| r.last_synced_gen == item.completed_gen), "{records:?}");
}

#[tokio::test]
async fn a_launch_during_a_deploy_gets_the_fleets_release_not_the_half_uploaded_one() {
    // Gated launches; waves wait for 60 s of quiet; a versioned bucket (the
    // release's versions stay fetchable while the deploy rewrites keys).
    let (mut w, _) = world_of(FleetSpec { instances: 1, ..FleetSpec::default() }, true, 60).await;
    w.settle().await;
    put(&w, "v1.php", "release 1").await;
    w.settle().await;
    w.clock.advance(std::time::Duration::from_secs(61)).await;
    w.settle().await;
    let first = w.instances().await.remove(0);
    let fleet_release = live_tree(&w, &first);
    assert!(!fleet_release.is_empty(), "the first release is live");
    let release = w.item().await.release.expect("with a manifest");

    // A deploy has begun (its wave waits for quiet) when the group scales out.
    put(&w, "new/half.php", "half of release 2").await;
    put(&w, "v1.php", "release 2").await;
    w.settle().await;
    w.fleet.scale_to(&w.clients, 2).await;
    w.settle().await;
    let newcomer = w.instances().await.into_iter().find(|i| *i != first).expect("a new instance");
    assert_eq!(w.fleet.lifecycle_state(&w.clients, &newcomer).await.as_deref(), Some("InService"));
    assert_eq!(catch_up_manifests(&w, &newcomer).await, [release.key]);
    assert_eq!(live_tree(&w, &newcomer), fleet_release, "it serves the fleet's release, nothing of the deploy");
    // The deploy's wave then brings both.
    w.clock.advance(std::time::Duration::from_secs(61)).await;
    w.settle().await;
    for id in [&first, &newcomer] {
        assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "{id}");
    }
}

#[tokio::test]
async fn on_an_unversioned_bucket_a_straggler_syncs_the_prefix_as_it_is() {
    // An unversioned manifest names ETags the next upload replaces: it cannot
    // be materialized later, so a catch-up syncs the prefix as before.
    let (w, ids, item) = straggler(false).await;
    assert!(item.release.as_ref().is_some_and(|r| !r.versioned), "{item:?}");
    assert_eq!(catch_up_manifests(&w, &ids[1]).await, [String::new()], "no manifest");
    assert_eq!(live_tree(&w, &ids[1]), bucket_tree(&w).await);
}
