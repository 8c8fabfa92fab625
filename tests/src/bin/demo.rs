//! `make demo`: a whole scenario against the embedded emulator, printed as a
//! timeline. It runs the functions' real `bootstrap` binaries through the
//! Lambda Runtime API harness and prints only what they and AWS (the
//! emulator) report: it never claims what did not happen.

use std::time::Instant;

use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::events::scheduled;
use fleetkeeper_tests::fleet::{Fleet, FleetSpec};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::{Value, json};

struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        println!("  +{:>6.2}s  {}", self.start.elapsed().as_secs_f64(), what.as_ref());
    }

    fn scene(&self, title: &str) {
        println!("\n== {title}");
    }
}

#[tokio::main]
async fn main() {
    let t = Timeline { start: Instant::now() };
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    println!("fleetkeeper demo against the embedded AWS emulator at {}", emulator.url());

    t.scene("A web tier launches");
    let fleet = Fleet::provision(&clients, &FleetSpec::default()).await;
    t.say(format!("VPC {} with subnets in {}", fleet.vpc_id, zones(&fleet)));
    t.say(format!(
        "Auto Scaling group {} with hooks {} and {}",
        fleet.asg_name, fleet.launch_hook, fleet.terminate_hook
    ));
    for m in fleet.members(&clients).await {
        t.say(format!("instance {} in {} is {}", m.id, m.zone, m.lifecycle_state));
    }
    t.say(format!("EFS {} has {} mount targets", fleet.file_system_id, count_mount_targets(&clients, &fleet).await));
    let mut env = fleet.env();
    env.extend(emulator.aws_env());

    t.scene("EFS mount targets appear (mount-targets, on its schedule)");
    let mut mounts = LambdaProcess::start("mount-targets", &env).await;
    for run in ["first run", "second run"] {
        let answer = mounts.invoke(scheduled()).await.response();
        for z in answer["reconcile"]["zones"].as_array().cloned().unwrap_or_default() {
            t.say(format!(
                "{run}: {} {} {} (NFS admitted: {})",
                z["zone"].as_str().unwrap_or_default(),
                z["outcome"].as_str().unwrap_or_default(),
                z["mount_target_id"].as_str().unwrap_or("-"),
                z["nfs_admitted"]
            ));
        }
    }
    mounts.stop().await;
    t.say(format!(
        "EFS {} now has {} mount targets",
        fleet.file_system_id,
        count_mount_targets(&clients, &fleet).await
    ));

    t.scene("The events AWS sends, and what each function answers");
    let events = emulator.lifecycle_events(&fleet.asg_name).await;
    t.say(format!("Auto Scaling emitted {} lifecycle events", events.len()));
    let upload = json!({"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": fleet.bucket}, "object": {"key": "app%2Findex.php"}}
    }]});
    let first_launch = events.first().cloned().unwrap_or(Value::Null);
    for (function, event, what) in [
        ("lifecycle-hook", first_launch, "the first launch lifecycle action"),
        ("codebase-sync", upload, "an upload to the codebase"),
        ("sync-completion", scheduled(), "its schedule"),
    ] {
        let mut process = LambdaProcess::start(function, &env).await;
        let answer = process.invoke(event).await.response();
        process.stop().await;
        t.say(format!("{function} got {what}: {}", describe(&answer)));
    }

    t.scene("Where this build stands");
    t.say("built: configuration contract, event envelopes, emulator with lifecycle simulation, runtime harness,");
    t.say("       mount-target reconcile");
    t.say("not yet built: the sync wave, the lifecycle gate (each function says so above)");
}

async fn count_mount_targets(clients: &fleetkeeper::Clients, fleet: &Fleet) -> usize {
    clients
        .efs
        .describe_mount_targets()
        .file_system_id(&fleet.file_system_id)
        .send()
        .await
        .map(|o| o.mount_targets.unwrap_or_default().len())
        .unwrap_or_default()
}

fn zones(fleet: &Fleet) -> String {
    fleet.subnets.iter().map(|s| s.zone.as_str()).collect::<Vec<_>>().join(", ")
}

fn describe(answer: &Value) -> String {
    let by_reason = answer["skipped"]["by_reason"].as_object().cloned().unwrap_or_default();
    let reasons: Vec<String> = by_reason.iter().map(|(k, v)| format!("{v} {}", k.replace('_', " "))).collect();
    format!("{} event(s), nothing done ({})", answer["events"], reasons.join(", "))
}
