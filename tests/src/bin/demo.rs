//! `make demo`: a whole scenario against the embedded emulator, printed as a
//! timeline. It runs the functions' real `bootstrap` binaries through the
//! Lambda Runtime API harness, plays the instances' part by running the sync
//! document's real script locally, and prints only what the functions, AWS
//! (the emulator) and the script report: it never claims what did not happen.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use fleetkeeper::Clients;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::events::{command_status, s3_notification, scheduled};
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
    // The lifecycle gate is not built yet: this fleet has no launch hook, so
    // its instances enter service at once.
    let spec = FleetSpec { instances: 3, launch_hook: false, terminate_hook: false, ..FleetSpec::default() };
    let fleet = Fleet::provision(&clients, &spec).await;
    t.say(format!("VPC {} with subnets in {}", fleet.vpc_id, zones(&fleet)));
    t.say(format!("Auto Scaling group {} (no lifecycle hook yet: the gate is not built)", fleet.asg_name));
    for m in fleet.members(&clients).await {
        t.say(format!("instance {} in {} is {}", m.id, m.zone, m.lifecycle_state));
    }
    create_sync_document(&clients, &fleet).await;
    upload(&clients, &fleet, &["index.php".into(), "lib/app.php".into(), "media/logo.png".into()]).await;
    t.say(format!("codebase in s3://{}/{} (3 objects); sync document {}", fleet.bucket, fleet.prefix, fleet.document));
    let mut env = fleet.env();
    env.extend(emulator.aws_env());
    let hosts = std::env::temp_dir().join(format!("fleetkeeper-demo-{}", std::process::id()));
    let demo = Demo { t, emulator, clients, fleet, env, hosts };

    demo.mount_targets().await;
    demo.burst().await;

    demo.t.scene("Where this build stands");
    demo.t.say("built: configuration, events, emulator, runtime harness, mount-target reconcile,");
    demo.t.say("       the coalesced, fenced sync (codebase-sync, sync-completion, the SSM document)");
    demo.t.say("not yet built: the lifecycle gate (lifecycle-hook answers \"not yet implemented\")");
    let _ = std::fs::remove_dir_all(&demo.hosts);
}

impl Demo {
    async fn mount_targets(&self) {
        self.t.scene("EFS mount targets appear (mount-targets, on its schedule)");
        self.t.say(format!("EFS {} has {} mount targets", self.fleet.file_system_id, self.count_mount_targets().await));
        let mut mounts = LambdaProcess::start("mount-targets", &self.env).await;
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
            self.count_mount_targets().await
        ));
    }

    async fn burst(&self) {
        self.t.scene("A burst of uploads becomes one sync wave plus one follow-up");
        let mut dispatcher = LambdaProcess::start("codebase-sync", &self.env).await;
        let mut completion = LambdaProcess::start("sync-completion", &self.env).await;
        for batch in 1..=4 {
            let keys: Vec<String> = (0..10).map(|n| format!("releases/b{batch}/file-{n}.php")).collect();
            upload(&self.clients, &self.fleet, &keys).await;
            let full: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.fleet.prefix)).collect();
            let answer = dispatcher.invoke(s3_notification(&self.fleet.bucket, &full)).await.response();
            self.t.say(format!("batch {batch}: 10 uploads -> codebase-sync: {}", describe_start(&answer["wave"])));
        }
        let mut seen = 0;
        loop {
            let commands = self.commands().await;
            if commands.len() == seen {
                break;
            }
            self.t.say(format!("SSM has received {} command(s) for the sync document in all", commands.len()));
            let (command_id, generation, instances, parameters) = commands[seen].clone();
            seen = commands.len();
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
        let item = fleetkeeper::sync::store::FleetStore::load(&fleetkeeper::sync::store::DynamoStore::new(
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

    /// (command id, generation, instances, parameters) of every command sent
    /// with the fleet's document, oldest first.
    async fn commands(&self) -> Vec<(String, String, Vec<String>, HashMap<String, Vec<String>>)> {
        let filter = aws_sdk_ssm::types::CommandFilter::builder()
            .key(aws_sdk_ssm::types::CommandFilterKey::DocumentName)
            .value(&self.fleet.document)
            .build();
        let Ok(filter) = filter else { return Vec::new() };
        let out = self.clients.ssm.list_commands().filters(filter).send().await;
        let mut all: Vec<_> = out
            .map(|o| {
                o.commands()
                    .iter()
                    .map(|c| {
                        let parameters = c.parameters().cloned().unwrap_or_default();
                        let generation = parameters.get("generation").map(|g| g.join(",")).unwrap_or_default();
                        (
                            c.command_id().unwrap_or_default().to_owned(),
                            generation,
                            c.instance_ids().to_vec(),
                            parameters,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        all.sort_by_key(|(_, g, _, _)| g.parse::<u64>().unwrap_or_default());
        all
    }

    async fn count_mount_targets(&self) -> usize {
        self.clients
            .efs
            .describe_mount_targets()
            .file_system_id(&self.fleet.file_system_id)
            .send()
            .await
            .map(|o| o.mount_targets.unwrap_or_default().len())
            .unwrap_or_default()
    }
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
