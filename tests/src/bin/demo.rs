//! `make demo`: a whole scenario against the embedded emulator, printed as a
//! timeline. It runs the functions' real `bootstrap` binaries through the
//! Lambda Runtime API harness, plays the instances' part by running the sync
//! document's real script locally, and prints only what the functions, AWS
//! (the emulator) and the script report: it never claims what did not happen.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use fleetkeeper::{Clients, Component};
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::events::{command_status, command_status_on, s3_notification, scheduled};
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document, upload};
use fleetkeeper_tests::instance::run_document;
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::Value;

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

/// A fleet wave's command, as SSM lists it.
#[derive(Clone)]
struct Sent {
    id: String,
    generation: String,
    instances: Vec<String>,
    parameters: HashMap<String, Vec<String>>,
}

struct Demo {
    t: Timeline,
    emulator: Emulator,
    clients: Clients,
    fleet: Fleet,
    env: Vec<(String, String)>,
    hosts: PathBuf,
}

#[tokio::main]
async fn main() {
    let t = Timeline { start: Instant::now() };
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    println!("fleetkeeper demo against the embedded AWS emulator at {}", emulator.url());

    t.scene("A web tier launches");
    // The codebase and the document exist before the fleet, as in a real
    // deployment (the fleet's names come from provisioning, so the objects
    // are uploaded right after it).
    let spec = FleetSpec { instances: 3, ..FleetSpec::default() };
    let fleet = Fleet::provision(&clients, &spec).await;
    create_sync_document(&clients, &fleet).await;
    upload(&clients, &fleet, &["index.php".into(), "lib/app.php".into(), "media/logo.png".into()]).await;
    t.say(format!("VPC {} with subnets in {}", fleet.vpc_id, zones(&fleet)));
    t.say(format!(
        "Auto Scaling group {} with hooks {} and {}",
        fleet.asg_name, fleet.launch_hook, fleet.terminate_hook
    ));
    t.say(format!(
        "target group {} (not attached to the group: fleetkeeper registers)",
        short_arn(&fleet.target_group_arn)
    ));
    t.say(format!("codebase in s3://{}/{} (3 objects); sync document {}", fleet.bucket, fleet.prefix, fleet.document));
    for m in fleet.members(&clients).await {
        t.say(format!("instance {} in {} is {}", m.id, m.zone, m.lifecycle_state));
    }
    let env = fleet.env();
    let hosts = std::env::temp_dir().join(format!("fleetkeeper-demo-{}", std::process::id()));
    let demo = Demo { t, emulator, clients, fleet, env, hosts };

    demo.gate_in().await;
    demo.mount_targets().await;
    demo.burst().await;
    demo.drain_out().await;
    let _ = std::fs::remove_dir_all(&demo.hosts);
}

impl Demo {
    async fn gate_in(&self) {
        self.t.scene("Instances are gated into service (lifecycle-hook)");
        let mut gate = LambdaProcess::start_function(&self.emulator, Component::LifecycleHook, &self.env).await;
        let events = self.emulator.lifecycle_events(&self.fleet.asg_name).await;
        let mut catch_ups = Vec::new();
        for event in &events {
            let id = event["detail"]["EC2InstanceId"].as_str().unwrap_or_default().to_owned();
            let answer = gate.invoke(event.clone()).await.response();
            let d = &answer["driven"][0];
            self.t.say(format!(
                "{id}: launch action -> {} ({}); did: {}",
                d["result"].as_str().unwrap_or_default(),
                d["reason"].as_str().unwrap_or_default(),
                actions(d)
            ));
            catch_ups.push(id);
        }
        self.t.say(format!(
            "EFS {} has mount targets in {} (each instance's AZ, ensured by the gate)",
            self.fleet.file_system_id,
            self.fleet.mount_target_zones(&self.clients).await.join(", ")
        ));
        self.t.say(format!(
            "target group has {} target(s): no traffic before the code is there",
            self.fleet.targets(&self.clients).await.len()
        ));
        for id in &catch_ups {
            let Some((command_id, parameters)) = self.catch_up_of(id).await else { continue };
            self.run_on_instances(&command_id, std::slice::from_ref(id), &parameters).await;
            let event = command_status_on(&command_id, &self.fleet.document, "Success", std::slice::from_ref(id));
            let answer = gate.invoke(event).await.response();
            let d = &answer["driven"][0];
            self.t.say(format!(
                "{id}: catch-up done -> {}; did: {}",
                d["result"].as_str().unwrap_or_default(),
                actions(d)
            ));
        }
        for m in self.fleet.members(&self.clients).await {
            self.t.say(format!("instance {} is {}", m.id, m.lifecycle_state));
        }
        self.t.say(format!("target group has {} healthy target(s)", self.healthy_targets().await));
        gate.stop().await;
    }

    async fn drain_out(&self) {
        self.t.scene("An instance is drained out (scale-in)");
        let before: Vec<String> = self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect();
        let _ = self
            .clients
            .autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(&self.fleet.asg_name)
            .desired_capacity(2)
            .send()
            .await;
        let leaving: Vec<String> = self
            .fleet
            .members(&self.clients)
            .await
            .into_iter()
            .filter(|m| m.lifecycle_state == "Terminating:Wait")
            .map(|m| m.id)
            .collect();
        for id in &leaving {
            self.t.say(format!("desired capacity 3 -> 2: {id} is Terminating:Wait"));
        }
        let mut gate = LambdaProcess::start_function(&self.emulator, Component::LifecycleHook, &self.env).await;
        for event in self.emulator.lifecycle_events(&self.fleet.asg_name).await {
            let id = event["detail"]["EC2InstanceId"].as_str().unwrap_or_default();
            let terminating =
                event["detail"]["LifecycleTransition"].as_str().unwrap_or_default().ends_with("TERMINATING");
            if !terminating || !leaving.iter().any(|l| l == id) {
                continue;
            }
            let answer = gate.invoke(event.clone()).await.response();
            let d = &answer["driven"][0];
            self.t.say(format!(
                "{id}: terminate action -> {}; did: {}",
                d["result"].as_str().unwrap_or_default(),
                actions(d)
            ));
        }
        gate.stop().await;
        let after: Vec<String> = self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect();
        let gone: Vec<&String> = before.iter().filter(|i| !after.contains(i)).collect();
        self.t.say(format!(
            "the group now has {} instance(s); gone: {:?}; target group has {} healthy target(s)",
            after.len(),
            gone,
            self.healthy_targets().await
        ));
    }

    async fn catch_up_of(&self, id: &str) -> Option<(String, HashMap<String, Vec<String>>)> {
        let out = self.clients.ssm.list_commands().instance_id(id).send().await.ok()?;
        out.commands()
            .iter()
            .find(|c| c.comment().is_some_and(|c| c.starts_with("fleetkeeper catch-up")))
            .map(|c| (c.command_id().unwrap_or_default().to_owned(), c.parameters().cloned().unwrap_or_default()))
    }

    async fn healthy_targets(&self) -> usize {
        self.fleet.targets(&self.clients).await.iter().filter(|(_, state)| state == "healthy").count()
    }

    async fn mount_targets(&self) {
        self.t.scene("Every AZ of the group gets its mount target (mount-targets, on its schedule)");
        self.t.say(format!(
            "EFS {} has {} mount targets",
            self.fleet.file_system_id,
            self.fleet.mount_target_zones(&self.clients).await.len()
        ));
        let mut mounts = LambdaProcess::start_function(&self.emulator, Component::MountTargets, &self.env).await;
        for run in ["first run", "second run"] {
            let answer = mounts.invoke(scheduled()).await.response();
            for z in answer["reconcile"]["zones"].as_array().cloned().unwrap_or_default() {
                self.t.say(format!(
                    "{run}: {} {} {} (NFS admitted: {})",
                    z["zone"].as_str().unwrap_or_default(),
                    z["outcome"].as_str().unwrap_or_default(),
                    z["mount_target_id"].as_str().unwrap_or("-"),
                    z["nfs_admitted"]
                ));
            }
        }
        mounts.stop().await;
        self.t.say(format!(
            "EFS {} now has {} mount targets",
            self.fleet.file_system_id,
            self.fleet.mount_target_zones(&self.clients).await.len()
        ));
    }

    async fn burst(&self) {
        self.t.scene("A burst of uploads becomes one sync wave plus one follow-up");
        let mut dispatcher = LambdaProcess::start_function(&self.emulator, Component::CodebaseSync, &self.env).await;
        let mut completion = LambdaProcess::start_function(&self.emulator, Component::SyncCompletion, &self.env).await;
        for batch in 1..=4 {
            let keys: Vec<String> = (0..10).map(|n| format!("releases/b{batch}/file-{n}.php")).collect();
            upload(&self.clients, &self.fleet, &keys).await;
            let full: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.fleet.prefix)).collect();
            let answer = dispatcher.invoke(s3_notification(&self.fleet.bucket, &full)).await.response();
            self.t.say(format!("batch {batch}: 10 uploads -> codebase-sync: {}", describe_start(&answer["wave"])));
        }
        let mut seen = 0;
        loop {
            let waves = self.waves().await;
            if waves.len() == seen {
                break;
            }
            self.t.say(format!("SSM has received {} fleet wave command(s) in all", waves.len()));
            let Sent { id: command_id, generation, instances, parameters } = waves[seen].clone();
            seen = waves.len();
            self.run_on_instances(&command_id, &instances, &parameters).await;
            let answer =
                completion.invoke(command_status(&command_id, &self.fleet.document, "Success")).await.response();
            let settled = &answer["settled"];
            self.t.say(format!(
                "sync-completion: wave of generation {generation} {} on {} instance(s); follow-up: {}",
                settled["end"].as_str().unwrap_or("?"),
                settled["synced"],
                match settled["follow_up"].is_null() {
                    true => "none (caught up)".to_owned(),
                    false => describe_start(&settled["follow_up"]),
                }
            ));
        }
        let item = fleetkeeper::sync::store::FleetStore::load(&fleetkeeper::store::Table::new(
            self.clients.dynamodb.clone(),
            &self.fleet.lock_table,
            &self.fleet.name,
        ))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
        self.t.say(format!(
            "lock table: requested_gen {}, completed_gen {}, wave running: {}",
            item.requested_gen,
            item.completed_gen,
            item.wave.is_some()
        ));
        dispatcher.stop().await;
        completion.stop().await;
    }

    /// Plays the instances: runs the document's script for each, then tells
    /// SSM (the emulator) how each invocation ended.
    async fn run_on_instances(
        &self,
        command_id: &str,
        instances: &[String],
        parameters: &HashMap<String, Vec<String>>,
    ) {
        for instance in instances {
            let root = self.hosts.join(instance);
            let run = run_document(&self.emulator, &root, parameters).await;
            let status = if run.code == 0 { "Success" } else { "Failed" };
            let line = run.stdout.lines().last().unwrap_or_default().to_owned();
            self.emulator.set_invocation_output(command_id, Some(instance), status, &run.stdout).await;
            let detail = if run.code == 0 { line } else { format!("exit {}: {}", run.code, run.stderr.trim()) };
            self.t.say(format!("  {instance} ran the document: {detail}"));
        }
        if let Some(first) = instances.first() {
            let current = self.hosts.join(first).join(self.fleet.destination.trim_start_matches('/')).join("current");
            if let Ok(target) = std::fs::read_link(&current) {
                let files = count_files(&current);
                let media = match std::fs::read_link(current.join("media")) {
                    Ok(shared) => format!("media/ -> {}", shared.display()),
                    Err(_) => "media/ is not linked".to_owned(),
                };
                self.t.say(format!("  {first}: current -> {} ({files} files; {media})", target.display()));
            }
        }
    }

    /// The fleet waves' commands sent with the fleet's document, oldest first.
    async fn waves(&self) -> Vec<Sent> {
        let filter = aws_sdk_ssm::types::CommandFilter::builder()
            .key(aws_sdk_ssm::types::CommandFilterKey::DocumentName)
            .value(&self.fleet.document)
            .build();
        let Ok(filter) = filter else { return Vec::new() };
        let out = self.clients.ssm.list_commands().filters(filter).send().await;
        let mut all: Vec<Sent> = out
            .map(|o| {
                o.commands()
                    .iter()
                    .filter(|c| c.comment().is_some_and(|c| c.starts_with("fleetkeeper wave")))
                    .map(|c| {
                        let parameters = c.parameters().cloned().unwrap_or_default();
                        let generation = parameters.get("generation").map(|g| g.join(",")).unwrap_or_default();
                        Sent {
                            id: c.command_id().unwrap_or_default().to_owned(),
                            generation,
                            instances: c.instance_ids().to_vec(),
                            parameters,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by_key(|c| c.generation.parse::<u64>().unwrap_or_default());
        all
    }
}

fn actions(driven: &Value) -> String {
    let list: Vec<String> = driven["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(|a| a.replace("arn:aws:elasticloadbalancing:us-east-1:123456789012:", ""))
        .collect();
    if list.is_empty() { "nothing yet".into() } else { list.join(", ") }
}

fn short_arn(arn: &str) -> &str {
    arn.rsplit(':').next().unwrap_or(arn)
}

fn describe_start(wave: &Value) -> String {
    let id = wave["wave_id"].as_str().unwrap_or_default();
    let short = &id[..id.len().min(8)];
    match wave["outcome"].as_str().unwrap_or_default() {
        "started" => format!(
            "started wave {short} (generation {}) to {} instance(s), {} command(s)",
            wave["target"],
            wave["instances"].as_array().map(Vec::len).unwrap_or_default(),
            wave["command_ids"].as_array().map(Vec::len).unwrap_or_default()
        ),
        "coalesced" => format!("coalesced into running wave {short} (generation {})", wave["target"]),
        other => other.to_owned(),
    }
}

fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_symlink() {
                continue;
            }
            if p.is_dir() { n += count_files(&p) } else { n += 1 }
        }
    }
    n
}

fn zones(fleet: &Fleet) -> String {
    fleet.subnets.iter().map(|s| s.zone.as_str()).collect::<Vec<_>>().join(", ")
}
