//! The operator CLI (`fleetkeeper`, issue 15) as a process against the
//! emulator: the same shared library as the functions, the operator's own
//! caller (the permission check holds its calls to the operator policy),
//! on the test clock. The functions run in process behind the event router
//! and the local agent runs the real document, so the fleet moves as it
//! does when deployed.

use fleetkeeper::clock::Clock;
use fleetkeeper_tests::cli::{Cli, Ran};
use fleetkeeper_tests::deployed::{Wiring, bucket_events};
use fleetkeeper_tests::fleet::FleetSpec;
use serde_json::Value;

use crate::releases::put;
use crate::world::World;

fn plain(instances: i32) -> FleetSpec {
    FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() }
}

/// A fleet with exact releases whose waves start at once, and its CLI.
async fn fleet(spec: FleetSpec) -> (World, Cli) {
    let (w, _) = crate::exact::world_of(spec, true, 0).await;
    let cli = Cli::new(&w.emulator, &w.env, Some(&w.clock));
    (w, cli)
}

fn ok(r: &Ran) {
    assert_eq!(r.code, 0, "exit {}\nstdout: {}\nstderr: {}", r.code, r.stdout, r.stderr);
}

/// Validates `doc` against `docs/status.schema.json` with the venv's
/// `jsonschema` (Draft 2020-12).
fn valid_status(doc: &Value) {
    let root = fleetkeeper_tests::agent::repo_root();
    let path = std::env::temp_dir().join(format!("fk-status-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, doc.to_string()).expect("write");
    let check = "import json,sys,jsonschema\n\
        schema=json.load(open(sys.argv[1]))\n\
        v=jsonschema.Draft202012Validator(schema)\n\
        errors=[f'{list(e.absolute_path)}: {e.message}' for e in v.iter_errors(json.load(open(sys.argv[2])))]\n\
        print('\\n'.join(errors)); sys.exit(1 if errors else 0)";
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .args(["-c", check])
        .arg(root.join("docs/status.schema.json"))
        .arg(&path)
        .output()
        .expect("python");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "status --json does not match docs/status.schema.json:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn status_shows_the_fleet_as_the_table_and_aws_have_it_and_its_json_matches_the_schema() {
    let (mut w, cli) = fleet(plain(2)).await;
    w.settle().await;
    put(&w, "app.php", "v2").await;
    w.settle().await;
    let item = w.item().await;
    let ids = w.instances().await;
    assert!(item.completed_gen >= 2 && item.wave.is_none(), "{item:?}");

    let r = cli.run(&["status", "--json"]).await;
    ok(&r);
    let s = r.json();
    valid_status(&s);
    assert_eq!(s["fleet"], w.fleet.name.as_str());
    assert_eq!(s["generations"]["requested"], item.requested_gen);
    assert_eq!(s["generations"]["completed"], item.completed_gen);
    assert_eq!(s["wave"], Value::Null);
    let last = &s["last_wave"];
    assert_eq!(last["id"], item.last_wave.clone().expect("a last wave").as_str());
    assert_eq!(last["end"], "success");
    for id in &ids {
        assert_eq!(last["instances"][id], "synced", "{last}");
    }
    assert_eq!(s["releases"].as_array().map(Vec::len), Some(item.releases.len()));
    assert_eq!(s["releases"][0]["serving"], true, "newest first, and served");
    let f = &s["freshness"];
    assert_eq!(f["up_to_date"], true, "{f}");
    assert_eq!(f["newest_change_at"], item.last_change_at.expect("a change"));
    assert_eq!(f["synced_through"], item.synced_through);
    assert!(f["last_delivery_ms"].as_u64().is_some(), "{f}");
    let members: Vec<&Value> = s["groups"][0]["instances"].as_array().expect("instances").iter().collect();
    assert_eq!(members.len(), 2);
    for m in members {
        assert_eq!(m["lifecycle_state"], "InService");
        assert_eq!(m["last_synced_gen"], item.completed_gen, "{m}");
    }
    assert_eq!(s["target_groups"][0]["arn"], w.fleet.target_group_arn.as_str());
    assert_eq!(s["mount_targets"]["file_system_id"], w.fleet.file_system_id.as_str());
    assert_eq!(s["errors"], serde_json::json!([]));

    // Behind: a change whose wave was sent and is still running (the
    // agents have not run it).
    put(&w, "app.php", "v3").await;
    w.router.pump().await;
    let running = w.item().await.wave.expect("a running wave");
    let s = cli.run(&["status", "--json"]).await.json();
    valid_status(&s);
    assert_eq!(s["freshness"]["up_to_date"], false, "{}", s["freshness"]);
    assert_eq!(s["wave"]["id"], running.id.as_str());
    assert_eq!(s["wave"]["lease_expired"], false);
    let progress: Vec<&str> =
        s["wave"]["instances"].as_array().expect("instances").iter().filter_map(|i| i["status"].as_str()).collect();
    assert_eq!(progress.len(), 2, "{}", s["wave"]);
    assert!(progress.iter().all(|p| matches!(*p, "Pending" | "InProgress")), "{progress:?}");
    let text = cli.run(&["status"]).await;
    ok(&text);
    assert!(text.stdout.contains(&format!("fleet {}", w.fleet.name)), "{}", text.stdout);
    assert!(text.stdout.contains("Last wave"), "{}", text.stdout);
}

#[tokio::test]
async fn sync_takes_the_functions_path_and_wait_ends_when_the_fleet_has_it() {
    let (mut w, cli) = fleet(plain(2)).await;
    w.settle().await;
    let before = w.item().await;
    let mut child = cli.spawn(&["sync", "--reason", "hotfix 1.2.1", "--wait", "--json", "--poll-ms", "100"]);
    // The fleet moves as deployed (status events, the agents) while it waits.
    let mut runs = Vec::new();
    let mut rounds = 0;
    let done = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break Cli::finish(child).await;
        }
        runs.extend(w.settle().await.runs);
        rounds += 1;
        assert!(rounds < 5000, "sync --wait never ended");
        tokio::task::yield_now().await;
    };
    ok(&done);
    let out = done.json();
    let item = w.item().await;
    assert_eq!(out["action"], "sync");
    assert_eq!(out["generation"], before.requested_gen + 1, "{out}");
    assert_eq!(out["waited"]["ended"], "synced", "{out}");
    assert!(item.completed_gen > before.completed_gen);
    let wave = w.wave(item.last_wave.as_deref().expect("a wave")).await;
    assert_eq!(wave.reason, "manual: hotfix 1.2.1");
    assert_eq!(wave.synced, 2);
    for id in w.instances().await {
        assert_eq!(runs.iter().filter(|r| r.instance_id == id).count(), 1, "{id} ran the wave once");
    }
}

#[tokio::test]
async fn rollback_pins_sync_is_refused_with_a_hint_and_resume_unpins() {
    let (mut w, cli) = fleet(plain(2)).await;
    w.settle().await;
    put(&w, "app.php", "good").await;
    w.settle().await;
    put(&w, "app.php", "broken").await;
    w.settle().await;
    let good = w.item().await.releases.iter().rev().nth(1).expect("the previous release").id.clone();

    let r = cli.run(&["rollback", "--reason", "500s", "--json"]).await;
    ok(&r);
    // While the rollback's own wave runs, a sync is counted and refused too:
    // no follow-up runs while the fleet is pinned.
    let during = cli.run(&["sync", "--reason", "during the rollback"]).await;
    assert_eq!(during.code, 1, "{during:?}");
    assert!(during.stdout.contains("pinned"), "{}", during.stdout);
    w.settle().await;
    let item = w.item().await;
    assert_eq!(item.pin.as_ref().map(|p| p.release.clone()), Some(good.clone()));
    let s = cli.run(&["status", "--json"]).await.json();
    assert_eq!(s["pin"]["release"], good.as_str());
    assert_eq!(s["pin"]["reason"], "500s");

    let refused = cli.run(&["sync", "--reason", "try anyway"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stdout.contains("fleetkeeper resume"), "the hint: {}", refused.stdout);
    let pinned = w.item().await;
    assert_eq!(pinned.requested_gen, item.requested_gen + 1, "the demand is counted");
    let s = cli.run(&["status", "--json"]).await.json();
    valid_status(&s);
    assert_eq!((s["freshness"]["pinned"].as_bool(), s["freshness"]["up_to_date"].as_bool()), (Some(true), Some(false)));
    assert!(pinned.wave.is_none(), "no wave runs while pinned");

    ok(&cli.run(&["resume", "--reason", "fixed"]).await);
    w.settle().await;
    let item = w.item().await;
    assert!(item.pin.is_none() && item.completed_gen == item.requested_gen, "{item:?}");
    let again = cli.run(&["resume"]).await;
    assert_eq!(again.code, 1, "refused, nothing to resume: {again:?}");
    assert!(again.stderr.contains("not pinned"), "{}", again.stderr);
}

#[tokio::test]
async fn unlock_settles_an_expired_lease_and_force_cancels_a_live_wave_keeping_its_demand() {
    let (mut w, cli) = fleet(plain(2)).await;
    w.settle().await;
    let r = cli.run(&["unlock", "--json"]).await;
    ok(&r);
    assert_eq!(r.json()["unlocked"], false);

    // A wave sent and left running (the agents do not run it).
    ok(&cli.run(&["sync", "--reason", "stuck"]).await);
    let running = w.item().await.wave.expect("a running wave");
    assert!(!running.command_ids.is_empty());
    let live = cli.run(&["unlock"]).await;
    assert_eq!(live.code, 1, "{live:?}");
    assert!(live.stderr.contains("--force"), "{}", live.stderr);
    let unconfirmed = cli.run(&["unlock", "--force"]).await;
    assert_eq!(unconfirmed.code, 2, "no terminal to confirm on: {unconfirmed:?}");
    assert_eq!(w.item().await.wave.map(|x| x.id), Some(running.id.clone()), "nothing done");

    let forced = cli.run(&["unlock", "--force", "--yes", "--reason", "agent hung", "--json"]).await;
    ok(&forced);
    let v = forced.json();
    let cancelled: Vec<String> = v["cancelled_commands"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    assert_eq!(cancelled, running.command_ids, "{v}");
    for id in &cancelled {
        let listed = w.clients.ssm.list_commands().command_id(id).send().await.expect("list");
        let status = listed.commands()[0].status().map(|s| s.as_str().to_owned());
        assert!(matches!(status.as_deref(), Some("Cancelled" | "Cancelling")), "{id}: {status:?}");
    }
    let item = w.item().await;
    assert!(item.wave.is_none());
    assert!(item.requested_gen > item.completed_gen, "the demand stays");
    let record = w.wave(&running.id).await;
    assert_eq!(record.end, Some(fleetkeeper::sync::state::WaveEnd::Abandoned));
    assert!(record.blame.as_deref().is_some_and(|b| b.contains("agent hung")), "{record:?}");

    // The sweep starts a wave for the kept demand. The agents run it but
    // its status events are lost (the router is not pumped), and its lease
    // expires: unlock settles it from SSM, as the sweep would.
    w.router.tick().await;
    let dead = w.item().await.wave.expect("a new wave for the demand");
    assert_eq!(w.agent.run_pending().await.len(), 2);
    w.clock.advance(std::time::Duration::from_millis(dead.lease_expires_at - w.clock.now_ms() + 1_000)).await;
    let expired = cli.run(&["unlock", "--json"]).await;
    ok(&expired);
    let v = expired.json();
    assert_eq!((v["lease"].as_str(), v["wave_id"].as_str()), (Some("expired"), Some(dead.id.as_str())), "{v}");
    assert_eq!((v["settled"]["outcome"].as_str(), v["unlocked"].as_bool()), (Some("finished"), Some(true)), "{v}");
    assert!(w.item().await.wave.is_none(), "the lease is free");
    w.settle().await;
    let item = w.item().await;
    assert_eq!(item.completed_gen, item.requested_gen, "nothing lost: {item:?}");
}

#[tokio::test]
async fn reconcile_dry_run_prints_the_plan_and_writes_nothing_then_runs() {
    let spec = FleetSpec { instances: 2, zones: 2, ..FleetSpec::default() };
    let (mut w, cli) = fleet(spec).await;
    let members = w.fleet.members(&w.clients).await;
    assert!(members.iter().all(|m| m.lifecycle_state == "Pending:Wait"), "{members:?}");

    let r = cli.run(&["reconcile", "mounts", "--dry-run", "--json"]).await;
    ok(&r);
    let plan = r.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["zones"].as_array().map(Vec::len), Some(2), "{plan}");
    let none =
        w.clients.efs.describe_mount_targets().file_system_id(&w.fleet.file_system_id).send().await.expect("mts");
    assert!(none.mount_targets().is_empty(), "a dry run creates nothing");

    let r = cli.run(&["reconcile", "lifecycle", "--dry-run", "--json"]).await;
    ok(&r);
    let report = r.json();
    let driven = report["driven"].as_array().expect("driven");
    assert_eq!(driven.len(), 2, "{report}");
    assert!(driven.iter().all(|d| d["result"] == "dry_run"), "{report}");
    let members = w.fleet.members(&w.clients).await;
    assert!(members.iter().all(|m| m.lifecycle_state == "Pending:Wait"), "a dry run drives nothing");

    let r = cli.run(&["reconcile", "lifecycle", "--json"]).await;
    ok(&r);
    assert_eq!(r.json()["driven"].as_array().map(Vec::len), Some(2), "{}", r.stdout);
    w.settle().await;
    let members = w.fleet.members(&w.clients).await;
    assert!(members.iter().all(|m| m.lifecycle_state == "InService"), "gated in: {members:?}");
}

/// The doctor's verdict on `check` (a prefix of its name).
fn verdict(doctor: &Value, check: &str) -> Vec<String> {
    doctor["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["check"].as_str().is_some_and(|n| n.starts_with(check)))
        .map(|c| c["result"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn doctor_finds_each_broken_fact_and_passes_once_each_is_fixed() {
    let spec = FleetSpec { instances: 2, zones: 2, launch_hook: true, terminate_hook: true, ..FleetSpec::default() };
    let (mut w, cli) = fleet(spec).await;
    // Gated in, mount targets made (by the functions, as deployed).
    w.tick().await;
    w.tick().await;
    let (_, lb_group) = w.fleet.load_balancer(&w.clients).await;
    // Broken on purpose: the instances do not admit the load balancer (no
    // rule yet); NFS from the instances is revoked; the rules and functions
    // are missing; the bucket's EventBridge events are turned off; the lock
    // table's TTL is off; a wave's lease is left to expire.
    let nfs = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(2049)
        .to_port(2049)
        .user_id_group_pairs(
            aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(&w.fleet.web_security_group).build(),
        )
        .build();
    w.clients
        .ec2
        .revoke_security_group_ingress()
        .group_id(&w.fleet.efs_security_group)
        .ip_permissions(nfs.clone())
        .send()
        .await
        .expect("revoke");
    let off = aws_sdk_s3::types::NotificationConfiguration::builder().build();
    w.clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&w.fleet.bucket)
        .notification_configuration(off)
        .send()
        .await
        .expect("events off");
    // A mount target deleted; an agent lost; the document's default version
    // an older one, lacking parameters.
    let mts = w.clients.efs.describe_mount_targets().file_system_id(&w.fleet.file_system_id).send().await.expect("mts");
    let gone = mts.mount_targets()[0].mount_target_id().to_owned();
    w.clients.efs.delete_mount_target().mount_target_id(&gone).send().await.expect("delete a mount target");
    let ids = w.instances().await;
    w.emulator.set_agent(&ids[0], Some("ConnectionLost")).await;
    let older =
        std::fs::read_to_string(fleetkeeper_tests::agent::repo_root().join(crate::sync_real::PREVIOUS_DOCUMENT))
            .expect("the previous document");
    let v2 = w.clients.ssm.update_document().name(&w.fleet.document).content(older).document_version("$LATEST");
    let v2 = v2.document_format(aws_sdk_ssm::types::DocumentFormat::Yaml);
    let v2 = v2.send().await.expect("update_document");
    let v2 = v2.document_description().and_then(|d| d.document_version()).expect("a version").to_owned();
    let default = w.clients.ssm.update_document_default_version().name(&w.fleet.document).document_version(&v2);
    default.send().await.expect("default version");
    ok(&cli.run(&["sync", "--reason", "left running"]).await);
    let wave = w.item().await.wave.expect("a wave");
    // Expired for longer than a sweep interval (a paused wave's short
    // lease is not stale): its sender is gone.
    let interval_ms = 1000 * fleetkeeper::config::DEFAULT_RECONCILE_INTERVAL_SECONDS;
    let stale = wave.lease_expires_at + interval_ms + 61_000 - w.clock.now_ms();
    w.clock.advance(std::time::Duration::from_millis(stale)).await;

    let sick = cli.run(&["doctor", "--json"]).await;
    assert_eq!(sick.code, 1, "{sick:?}");
    let d = sick.json();
    let broken = [
        "lb-to-instances",
        "instances-to-mount-target",
        "mount-targets-per-az",
        "rule ",
        "bucket-events",
        "lock-table",
        "document",
        "ssm-agents",
        "lease",
    ];
    for check in broken {
        let v = verdict(&d, check);
        assert!(!v.is_empty() && v.iter().all(|r| r == "fail"), "{check}: {v:?} in {d}");
    }
    assert_eq!(verdict(&d, "hooks"), ["pass"], "{d}");
    let failing = d["checks"].as_array().expect("checks").iter().filter(|c| c["result"] == "fail");
    for c in failing {
        assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "every failure says how to fix it: {c}");
    }
    // A hook with the wrong DefaultResult (the stack's default is ABANDON).
    let wrong = cli.run(&["doctor", "--json", "--hook-default-result", "continue"]).await;
    assert_eq!(verdict(&wrong.json(), "hooks"), ["fail"]);

    // The fixes.
    w.fleet.admit_load_balancer(&w.clients, &lb_group).await;
    w.clients
        .ec2
        .authorize_security_group_ingress()
        .group_id(&w.fleet.efs_security_group)
        .ip_permissions(nfs)
        .send()
        .await
        .expect("authorize");
    let wiring = Wiring::new(&w.emulator).await;
    wiring.functions(&w.emulator, &w.fleet, &w.env).await;
    wiring.rules(&w.fleet).await;
    bucket_events(&w.clients, &w.fleet).await;
    let ttl = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(fleetkeeper::store::EXPIRES_AT)
        .build()
        .expect("ttl");
    w.clients
        .dynamodb
        .update_time_to_live()
        .table_name(&w.fleet.lock_table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .expect("ttl");
    ok(&cli.run(&["unlock"]).await);
    ok(&cli.run(&["reconcile", "mounts"]).await);
    w.emulator.set_agent(&ids[0], Some("Online")).await;
    let back = w.clients.ssm.update_document_default_version().name(&w.fleet.document).document_version("1");
    back.send().await.expect("default version 1");
    w.settle().await;

    let well = cli.run(&["doctor", "--json"]).await;
    let d = well.json();
    assert_eq!(well.code, 0, "{d}");
    assert!(d["checks"].as_array().expect("checks").iter().all(|c| c["result"] == "pass"), "{d}");
    let text = cli.run(&["doctor"]).await;
    ok(&text);
    assert!(text.stdout.contains("0 failed, 0 could not be checked"), "{}", text.stdout);
}

#[tokio::test]
async fn bad_configuration_and_unknown_resources_give_clear_errors_and_exit_2() {
    let (w, mut cli) = fleet(plain(1)).await;
    let mut bare = cli.clone();
    bare.set("FLEET_LOCK_TABLE", "");
    let r = bare.run(&["status"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("FLEET_LOCK_TABLE"), "names the variable: {}", r.stderr);
    cli.set("FLEET_LOCK_TABLE", "no-such-table");
    let r = cli.run(&["status", "--json"]).await;
    assert_eq!(r.code, 2, "{r:?}");
    let errors = r.json()["errors"].clone();
    assert!(errors.to_string().contains("GetItem"), "names the failing call: {errors}");
    let env_file = std::env::temp_dir().join(format!("fk-env-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&env_file, "FLEET_NAME=x\nnot a line\n").expect("write");
    let r = cli.run(&["--env-file", env_file.to_str().expect("utf-8"), "status"]).await;
    let _ = std::fs::remove_file(&env_file);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);
    let r = cli.run(&["--from-function", "nope", "status"]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("lambda:GetFunctionConfiguration"), "{}", r.stderr);
    drop(w);
}
