//! Instant rollback and pinning (issue 14): `{"action": "rollback"}` to
//! `codebase-sync` is a new generation whose wave puts a kept release back;
//! every instance that holds it switches `current` with no S3 request; the
//! fleet is then pinned (uploads count, no wave runs) until
//! `{"action": "resume"}`. The four handlers in process behind the event
//! router, the local agent running the real document on each instance.

use fleetkeeper::Component;
use fleetkeeper::sync::state::FleetItem;
use fleetkeeper_tests::emulator::Caller;
use fleetkeeper_tests::fleet::FleetSpec;
use serde_json::{Value, json};

use crate::releases::{bucket_tree, live_tree, put};
use crate::world::World;

/// A fleet writing manifests to a bucket of its own, its codebase bucket
/// versioned or not; waves start at once.
async fn world(spec: FleetSpec, versioned: bool) -> World {
    crate::exact::world_of(spec, versioned, 0).await.0
}

fn plain(instances: i32) -> FleetSpec {
    FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() }
}

/// Asks `codebase-sync` for `payload` as an operator does: its answer.
async fn operator(w: &mut World, payload: Value) -> Value {
    let delivery = w.router.invoke(Component::CodebaseSync, payload).await.expect("delivered");
    delivery.reply.unwrap_or_else(|e| panic!("codebase-sync refused: {e}"))
}

/// The `fleetkeeper-kept` tag of a manifest.
async fn kept_tag(w: &World, bucket: &str, key: &str) -> String {
    let tags = w.clients.s3.get_object_tagging().bucket(bucket).key(key).send().await.expect("tags");
    let tag = tags.tag_set().iter().find(|t| t.key() == fleetkeeper::sync::manifest::KEPT_TAG);
    tag.map(|t| t.value().to_owned()).unwrap_or_default()
}

/// The fleet item's `schema` attribute, as stored.
async fn raw_schema(w: &World) -> u64 {
    let key = aws_sdk_dynamodb::types::AttributeValue::S(w.fleet.name.clone());
    let got = w.clients.dynamodb.get_item().table_name(&w.fleet.lock_table).key("pk", key).send().await.expect("get");
    let item = got.item.expect("the fleet item");
    item["schema"].as_n().expect("a number").parse().expect("a schema")
}

/// Two releases, each synced everywhere: `app.php` good, then broken.
async fn good_then_broken(w: &mut World) -> FleetItem {
    put(w, "app.php", "good").await;
    w.settle().await;
    let good = w.item().await;
    put(w, "app.php", "broken!").await;
    w.settle().await;
    assert_eq!(w.item().await.releases.len(), good.releases.len() + 1);
    good
}

#[tokio::test]
async fn a_rollback_switches_every_instance_with_no_download_and_pins_the_fleet() {
    let (mut w, manifests) = crate::exact::world_of(plain(2), true, 0).await;
    let ids = w.instances().await;
    w.settle().await;
    let good = good_then_broken(&mut w).await;
    let good_tree = {
        let mut t = bucket_tree(&w).await;
        t.insert("app.php".into(), "good".into());
        t
    };
    let before: Vec<_> =
        ids.iter().map(|id| std::fs::read_link(w.current(id).expect("current")).expect("link")).collect();
    w.emulator.forget_calls(Caller::Agent).await;

    let answer = operator(&mut w, json!({"action": "rollback", "reason": "500s after deploy"})).await;
    assert_eq!(answer["wave"]["outcome"], "started", "{answer}");
    let s = w.settle().await;
    let item = w.item().await;
    let pin = item.pin.clone().expect("pinned");
    assert_eq!(pin.release, good.releases.last().expect("kept").id, "previous: the release before the broken one");
    assert_eq!((pin.reason.as_str(), item.completed_gen), ("500s after deploy", item.requested_gen));
    // (The local agent itself asks SSM for its version: not the document.)
    let calls = w.emulator.calls(Caller::Agent).await.operations();
    assert!(
        calls.iter().all(|op| !op.starts_with("s3:")),
        "no instance made an S3 request, not even for the manifest: {calls:?}"
    );
    for (id, was) in ids.iter().zip(before) {
        assert_eq!(live_tree(&w, id), good_tree, "{id} serves the good release again");
        let now = std::fs::read_link(w.current(id).expect("current")).expect("link");
        assert_ne!(now, was, "{id}: current switched");
        let out: String = s.runs.iter().filter(|r| r.instance_id == *id).map(|r| r.run.stdout.clone()).collect();
        assert!(out.contains("nothing downloaded"), "{id}: {out}");
    }
    assert_eq!(raw_schema(&w).await, 2, "pinned: a version of the functions from before rollback refuses the item");
    // The manifests a rollback may put back are tagged kept (the bucket's
    // lifecycle expires only those tagged false); the pinned one among them.
    for kept in item.rollback_targets(3) {
        assert_eq!(kept_tag(&w, &manifests, &kept.manifest.key).await, "true", "{}", kept.id);
    }
    assert_eq!(kept_tag(&w, &manifests, &pin.manifest.key).await, "true");
    let record = w.waves().await.pop().expect("the rollback's record");
    assert_eq!(record.rollback_to.as_deref(), Some(pin.release.as_str()));
    assert!(record.reason.contains("500s after deploy"), "{}", record.reason);

    // Pinned: an upload counts as demand, and no wave runs.
    put(&w, "app.php", "fixed").await;
    w.settle().await;
    w.tick().await;
    let pinned = w.item().await;
    assert!(pinned.requested_gen > item.requested_gen, "the upload was counted");
    assert_eq!(pinned.completed_gen, item.completed_gen, "no wave ran");
    for id in &ids {
        assert_eq!(live_tree(&w, id)["app.php"], "good", "{id}");
    }

    // Resume: the codebase as it is now.
    let answer = operator(&mut w, json!({"action": "resume", "reason": "fixed"})).await;
    assert_eq!(answer["resume"], true, "{answer}");
    w.settle().await;
    let resumed = w.item().await;
    assert!(resumed.pin.is_none());
    assert_eq!(raw_schema(&w).await, 1);
    // Four releases now: the first left the three a rollback may put back,
    // and is tagged to expire like any manifest no fleet keeps.
    assert_eq!(resumed.releases.len(), 4, "{:?}", resumed.releases);
    assert_eq!(kept_tag(&w, &manifests, &resumed.releases[0].manifest.key).await, "false");
    assert_eq!(kept_tag(&w, &manifests, &resumed.releases[3].manifest.key).await, "true");
    assert_eq!(resumed.completed_gen, resumed.requested_gen);
    for id in &ids {
        assert_eq!(live_tree(&w, id), bucket_tree(&w).await, "{id}");
    }
}

#[tokio::test]
async fn a_rollback_is_refused_plainly_when_it_cannot_be_done() {
    let mut w = world(plain(1), true).await;
    w.settle().await;
    let item = w.item().await;
    // Nothing to roll back to yet (one release at most).
    let delivery = w.router.invoke(Component::CodebaseSync, json!({"action": "rollback"})).await.expect("delivered");
    let error = delivery.reply.expect_err("refused");
    assert!(error.contains("no release before the current one") || error.contains("none yet"), "{error}");
    let delivery = w.router.invoke(Component::CodebaseSync, json!({"action": "resume"})).await.expect("delivered");
    assert!(delivery.reply.expect_err("refused").contains("not pinned"));
    let delivery = w
        .router
        .invoke(Component::CodebaseSync, json!({"action": "rollback", "to": "$(reboot)"}))
        .await
        .expect("delivered");
    let error = delivery.reply.expect_err("a malformed rollback is refused, never answered with success");
    assert!(error.contains("rollback refused: to is not previous"), "{error}");
    // In an SQS batch (redelivered with a new request id) a rollback is never run.
    let body = json!({"action": "rollback", "to": "previous"}).to_string();
    let batch = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "body": body}]});
    let delivery = w.router.invoke(Component::CodebaseSync, batch).await.expect("delivered");
    let summary = delivery.reply.expect("a skip");
    assert_eq!(summary["skipped"]["by_reason"]["malformed"], 1, "{summary}");
    assert_eq!(w.item().await, item, "nothing was written");
}

#[tokio::test]
async fn a_new_instance_while_pinned_gets_the_pinned_release() {
    let mut w = world(FleetSpec { instances: 1, ..FleetSpec::default() }, true).await;
    w.settle().await;
    good_then_broken(&mut w).await;
    operator(&mut w, json!({"action": "rollback", "to": "previous"})).await;
    w.settle().await;
    let first = w.instances().await.remove(0);
    assert_eq!(live_tree(&w, &first)["app.php"], "good");
    w.fleet.scale_to(&w.clients, 2).await;
    w.settle().await;
    let newcomer = w.instances().await.into_iter().find(|i| *i != first).expect("a new instance");
    assert_eq!(w.fleet.lifecycle_state(&w.clients, &newcomer).await.as_deref(), Some("InService"));
    assert_eq!(live_tree(&w, &newcomer), live_tree(&w, &first), "the pinned release, not the prefix");
}

#[tokio::test]
async fn on_an_unversioned_bucket_a_launch_while_pinned_waits_and_says_why() {
    let mut w = world(FleetSpec { instances: 1, ..FleetSpec::default() }, false).await;
    w.settle().await;
    good_then_broken(&mut w).await;
    operator(&mut w, json!({"action": "rollback"})).await;
    w.settle().await;
    let first = w.instances().await.remove(0);
    assert_eq!(live_tree(&w, &first)["app.php"], "good", "an instance holding it switches, versioned or not");
    w.fleet.scale_to(&w.clients, 2).await;
    let s = w.settle().await;
    let newcomer = w.instances().await.into_iter().find(|i| *i != first).expect("a new instance");
    assert_eq!(
        w.fleet.lifecycle_state(&w.clients, &newcomer).await.as_deref(),
        Some("Pending:Wait"),
        "held: never in service with the codebase as it is now"
    );
    assert!(w.current(&newcomer).is_none(), "nothing was synced onto it");
    let said: String = s.deliveries.iter().map(|d| format!("{:?}", d.reply)).collect();
    assert!(said.contains("pinned") && said.contains("not versioned"), "{said}");
    // Resume: the launch goes on with the codebase as it is.
    operator(&mut w, json!({"action": "resume"})).await;
    w.settle().await;
    w.clock.advance(std::time::Duration::from_secs(60)).await;
    w.tick().await;
    assert_eq!(w.fleet.lifecycle_state(&w.clients, &newcomer).await.as_deref(), Some("InService"));
    assert_eq!(live_tree(&w, &newcomer), bucket_tree(&w).await);
}
