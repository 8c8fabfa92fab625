//! `make demo`: a whole scenario against the embedded emulator, printed as a
//! timeline. The functions run as their real `bootstrap` binaries behind the
//! Lambda Runtime API harness; the event router delivers what AWS would
//! (lifecycle actions, S3 object events through SQS, Run Command status
//! events, schedules) and the local agent runs the real sync document on each
//! instance. The timeline prints only what the functions answered, what AWS
//! (the emulator) reports and what the document printed: it never claims
//! what did not happen, and the demo exits non-zero when a step did not end
//! as the timeline says.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use fleetkeeper::config::vars;
use fleetkeeper::{Clients, Component};
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::agent::{Agent, AgentRun};
use fleetkeeper_tests::cli::Cli;
use fleetkeeper_tests::deployed::Wiring;
use fleetkeeper_tests::emulator::{Caller, TestClock};
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document, upload};
use fleetkeeper_tests::inprocess::set_var;
use fleetkeeper_tests::router::{Delivery, Router};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::Value;

struct Timeline {
    start: Instant,
    failures: Vec<String>,
}

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        println!("  +{:>6.2}s  {}", self.start.elapsed().as_secs_f64(), what.as_ref());
    }

    fn scene(&self, title: &str) {
        println!("\n== {title}");
    }

    /// States an expectation; a broken one is printed and fails the demo.
    fn expect(&mut self, ok: bool, what: impl AsRef<str>) {
        if !ok {
            println!("  !! not as expected: {}", what.as_ref());
            self.failures.push(what.as_ref().to_owned());
        }
    }
}

struct Demo {
    t: Timeline,
    emulator: Emulator,
    clients: Clients,
    fleet: Fleet,
    router: Router,
    agent: Agent,
    hosts: PathBuf,
    clock: TestClock,
    /// Seconds the emulator's clock was moved forward so far.
    skipped_s: u64,
    /// The operator CLI (`target/debug/fleetkeeper`).
    cli: Cli,
    /// The functions' configuration, as deployed.
    deployed: Vec<(String, String)>,
}

/// Uploads in the deploy.
const DEPLOY_FILES: usize = 500;

/// The quiet period the demo deploys with (the default).
const QUIET_S: u64 = fleetkeeper::config::DEFAULT_QUIET_SECONDS;

#[tokio::main]
async fn main() -> ExitCode {
    let t = Timeline { start: Instant::now(), failures: Vec::new() };
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    println!("fleetkeeper demo against the embedded AWS emulator at {}", emulator.url());
    println!("(real time, emulator-fast timelines: instances, agents and mount targets are ready at once here;");
    println!(" the quiet period's waits pass on the emulator's clock, shown as [clock +N s])");

    t.scene("A web tier launches");
    // Three AZs, the first with two subnets.
    let spec = FleetSpec { instances: 3, second_subnet_in_first_zone: true, ..FleetSpec::default() };
    let fleet = Fleet::provision(&clients, &spec).await;
    create_sync_document(&clients, &fleet).await;
    // As the template deploys it (ExactReleases): a manifest bucket; and a
    // versioned codebase bucket, as docs/deploy.md recommends.
    let manifests = format!("{}-manifests", fleet.bucket);
    clients.s3.create_bucket().bucket(&manifests).send().await.expect("the manifest bucket");
    let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    clients
        .s3
        .put_bucket_versioning()
        .bucket(&fleet.bucket)
        .versioning_configuration(versioning)
        .send()
        .await
        .expect("versioning");
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
    t.say(format!(
        "codebase in s3://{}/{} (3 objects, versioned); sync document {}",
        fleet.bucket, fleet.prefix, fleet.document
    ));
    t.say(format!("exact releases: each wave's manifest goes to s3://{manifests}/manifests/{}/", fleet.name));
    for m in fleet.members(&clients).await {
        t.say(format!("instance {} in {} is {}", m.id, m.zone, m.lifecycle_state));
    }

    let hosts = std::env::temp_dir().join(format!("fleetkeeper-demo-{}", std::process::id()));
    let clock = TestClock::new(&emulator).await;
    let mut router = Router::new(&emulator, &fleet).await;
    let mut deployed = Vec::new();
    for component in Component::ALL {
        // As deployed: the sync functions with the default quiet period and
        // codebase-sync's own delayed-start queue.
        let mut env = fleet.sync_env(component, QUIET_S);
        set_var(&mut env, vars::MANIFEST_BUCKET, &manifests);
        if component == Component::CodebaseSync {
            deployed = env.clone();
        }
        env.extend(emulator.aws_env_for(component));
        router.route(component, LambdaProcess::start_on_clock(component, &env, &clock).await);
    }
    // The operator's CLI, with the deployed configuration.
    let cli = Cli::new(&emulator, &deployed, Some(&clock));
    t.say("the four functions run as real bootstraps; the router delivers AWS's events, the local agent runs the document");
    let agent = Agent::new(&emulator, &fleet.document, &hosts).await;
    let mut demo = Demo { t, emulator, clients, fleet, router, agent, hosts, clock, skipped_s: 0, cli, deployed };

    demo.gate_in().await;
    demo.mount_targets().await;
    demo.burst().await;
    demo.drain_out().await;
    demo.doctor().await;
    demo.rollback().await;
    demo.status().await;
    demo.calls().await;

    let _ = std::fs::remove_dir_all(&demo.hosts);
    if demo.t.failures.is_empty() {
        println!(
            "\ndemo finished in {:.1}s: every step happened as the timeline says",
            demo.t.start.elapsed().as_secs_f64()
        );
        ExitCode::SUCCESS
    } else {
        println!("\ndemo FAILED: {} step(s) did not happen as expected", demo.t.failures.len());
        ExitCode::FAILURE
    }
}

impl Demo {
    /// Delivers events and runs the agent until nothing moves (bounded).
    async fn settle(&mut self) -> (Vec<Delivery>, Vec<AgentRun>) {
        let (mut deliveries, mut runs) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let d = self.router.pump().await;
            for x in &d {
                self.say_delivery(x);
            }
            let r = self.agent.run_pending().await;
            for x in &r {
                self.say_run(x);
            }
            let quiet = d.is_empty() && r.is_empty() && self.router.idle();
            deliveries.extend(d);
            runs.extend(r);
            if quiet {
                break;
            }
        }
        (deliveries, runs)
    }

    fn say_delivery(&self, d: &Delivery) {
        let reply = match &d.reply {
            Ok(v) => summary(d.to, v),
            Err(e) => format!("ERROR {e}"),
        };
        if reply.is_empty() {
            return;
        }
        self.t.say(format!("{} <- {}: {reply}", d.to, d.what));
    }

    fn say_run(&self, r: &AgentRun) {
        let line = match r.ok() {
            true => {
                // The manifest it materialized (exact releases), then the switch.
                let exact = r.run.stdout.lines().find(|l| l.starts_with("fleetkeeper: manifest "));
                let last = r.run.stdout.lines().last().unwrap_or_default();
                match exact {
                    Some(m) => format!("{}; {last}", m.trim_start_matches("fleetkeeper: ")),
                    None => last.to_owned(),
                }
            }
            false => format!("exit {}: {}", r.run.code, r.run.stderr.trim()),
        };
        self.t.say(format!("  {} ran the document (generation {}): {line}", r.instance_id, r.generation));
    }

    async fn gate_in(&mut self) {
        self.t.scene("Instances are gated into service (lifecycle-hook)");
        let (_, runs) = self.settle().await;
        let members = self.fleet.members(&self.clients).await;
        for m in &members {
            self.t.say(format!("instance {} is {}", m.id, m.lifecycle_state));
        }
        self.t.say(format!(
            "EFS {} has mount targets in {} (each instance's AZ, ensured by the gate)",
            self.fleet.file_system_id,
            self.fleet.mount_target_zones(&self.clients).await.join(", ")
        ));
        let healthy = self.healthy_targets().await;
        self.t.say(format!("target group has {healthy} healthy target(s)"));
        self.t.expect(runs.len() == 3 && runs.iter().all(AgentRun::ok), "three catch-ups ran and succeeded");
        self.t.expect(members.iter().all(|m| m.lifecycle_state == "InService"), "every instance is InService");
        self.t.expect(healthy == 3, "three healthy targets");
    }

    async fn mount_targets(&mut self) {
        self.t.scene("The schedules fire: mount targets in every AZ, sweep, reconcile");
        for d in self.router.tick().await {
            self.say_delivery(&d);
        }
        self.settle().await;
        let zones = self.fleet.mount_target_zones(&self.clients).await;
        self.t.say(format!("EFS {} now has mount targets in {}", self.fleet.file_system_id, zones.join(", ")));
        self.t.expect(zones.len() == 3, "a mount target in each of the three AZs");
    }

    /// Moves the emulator's clock forward (the functions, S3 event times and
    /// SQS delays all follow it).
    async fn skip(&mut self, seconds: u64, why: &str) {
        self.clock.advance(std::time::Duration::from_secs(seconds)).await;
        self.skipped_s += seconds;
        self.t.say(format!("[clock +{} s] {seconds} s pass: {why}", self.skipped_s));
    }

    async fn burst(&mut self) {
        self.t.scene(&format!(
            "A deploy of {DEPLOY_FILES} uploads becomes one sync wave once the codebase is quiet for {QUIET_S} s, \
             plus one follow-up; a fourth instance launches mid-wave"
        ));
        let original: Vec<String> = self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect();
        let mut waves: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut early = 0;
        let per_batch = DEPLOY_FILES / 4;
        for batch in 1..=4 {
            let keys: Vec<String> = (0..per_batch).map(|n| format!("releases/b{batch}/file-{n}.php")).collect();
            upload(&self.clients, &self.fleet, &keys).await;
            self.t.say(format!(
                "{per_batch} objects uploaded (batch {batch} of 4): S3 events go to EventBridge, the rule queues them in SQS"
            ));
            let (_, runs) = self.settle().await;
            early += runs.len();
            if batch < 4 {
                self.skip(5, "the deploy is still uploading").await;
            }
        }
        self.t.expect(early == 0, "no instance synced while the deploy was uploading");
        self.skip(QUIET_S + 1, "no change since the last upload").await;
        // The delayed start arrives and sends the wave; 10 more uploads land
        // and the group scales out before any instance ran it.
        for d in self.router.pump().await {
            self.say_delivery(&d);
        }
        let running = self.fleet.item(&self.clients).await.wave.map(|w| w.target);
        let keys: Vec<String> = (0..10).map(|n| format!("releases/b5/file-{n}.php")).collect();
        upload(&self.clients, &self.fleet, &keys).await;
        self.t.say("10 more objects uploaded while the wave runs");
        self.fleet.scale_to(&self.clients, 4).await;
        let fourth = self
            .fleet
            .members(&self.clients)
            .await
            .into_iter()
            .find(|m| !original.contains(&m.id))
            .map(|m| m.id)
            .unwrap_or_default();
        self.t.say(format!("desired capacity 3 -> 4 while the wave runs: {fourth} launches (Pending:Wait)"));
        let (_, runs) = self.settle().await;
        let caught_up = runs.iter().any(|r| r.instance_id == fourth && r.ok());
        let ran_wave = |runs: &[AgentRun]| -> Vec<String> {
            runs.iter()
                .filter(|r| original.contains(&r.instance_id) && r.run.stdout.contains("synced"))
                .map(|r| r.generation.clone())
                .collect()
        };
        waves.extend(ran_wave(&runs));
        let late = self.live_count("releases/b5").await;
        self.t
            .say(format!("after the wave: {late} of the 10 late uploads are live (its manifest pinned the versions)"));
        self.t.expect(late == 0, "nothing uploaded after the wave started is in its release");
        let state = self.fleet.lifecycle_state(&self.clients, &fourth).await.unwrap_or_default();
        self.t.say(format!("{fourth} was caught up by the gate and is {state}"));
        self.t.expect(caught_up && state == "InService", "the fourth instance ran its catch-up and was gated in");
        self.skip(QUIET_S + 1, "the follow-up waits for quiet too").await;
        let (_, runs) = self.settle().await;
        waves.extend(ran_wave(&runs));
        let late = self.live_count("releases/b5").await;
        self.t.say(format!("after the follow-up: {late} of the 10 late uploads are live"));
        self.t.expect(late == 10, "the follow-up brings the late uploads");
        let item = self.fleet.item(&self.clients).await;
        self.t.say(format!(
            "waves of generation(s) {waves:?}; lock table: requested_gen {}, completed_gen {}, wave running: {}",
            item.requested_gen,
            item.completed_gen,
            item.wave.is_some()
        ));
        let mut served = std::collections::BTreeSet::new();
        for m in self.fleet.members(&self.clients).await {
            let current = self.agent.on_instance(&m.id, &self.fleet.destination).join("current");
            let target = std::fs::read_link(&current).map(|t| t.display().to_string()).unwrap_or_default();
            let files = count_files(&current);
            if m.id == fourth || m.id == original[0] {
                let media = match std::fs::read_link(current.join("media")) {
                    Ok(shared) => format!("media/ -> {}", shared.display()),
                    Err(_) => "media/ is not linked".to_owned(),
                };
                self.t.say(format!("{}: current -> {target} ({files} files; {media})", m.id));
            }
            served.insert((target, files));
        }
        let every_one_serves = self.fleet.members(&self.clients).await.iter().all(|m| {
            let current = self.agent.on_instance(&m.id, &self.fleet.destination).join("current");
            std::fs::read_link(&current).is_ok() && count_files(&current) > 0
        });
        self.t.expect(running.is_some(), "the wave started once the codebase was quiet");
        self.t.expect(waves.len() == 2, "exactly one wave and one follow-up");
        let members = self.fleet.members(&self.clients).await.len();
        self.t.expect(
            members == 4 && every_one_serves && served.len() == 1,
            "all four instances serve the same release (a current link, files), the fourth included",
        );
        self.t
            .expect(item.completed_gen == item.requested_gen && item.wave.is_none(), "everything requested is synced");
    }

    /// What every instance serves as `index.php`.
    async fn served_index(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.fleet.members(&self.clients).await {
            let path = self.agent.on_instance(&m.id, &self.fleet.destination).join("current/index.php");
            out.push(std::fs::read_to_string(path).unwrap_or_default());
        }
        out
    }

    async fn put_index(&self, body: &str) {
        let key = format!("{}index.php", self.fleet.prefix);
        let put = self.clients.s3.put_object().bucket(&self.fleet.bucket).key(key);
        put.body(body.as_bytes().to_vec().into()).send().await.expect("upload index.php");
    }

    async fn operator(&mut self, payload: Value) -> Value {
        let d = self.router.invoke(Component::CodebaseSync, payload).await;
        let Some(d) = d else { return Value::Null };
        self.say_delivery(&d);
        d.reply.unwrap_or_default()
    }

    async fn rollback(&mut self) {
        self.t.scene("A bad release is rolled back at once, the fleet pinned, then resumed");
        let good = self.served_index().await;
        self.put_index("<?php http_response_code(500); // broken").await;
        self.t.say("a broken index.php is uploaded");
        self.settle().await;
        self.skip(QUIET_S + 1, "quiet: the broken release goes out").await;
        self.settle().await;
        let broken = self.served_index().await;
        self.t.expect(broken.iter().all(|b| b.contains("broken")), "every instance serves the broken release");
        self.emulator.forget_calls(Caller::Agent).await;
        let args = ["rollback", "--reason", "500s after the deploy"];
        let ran = self.cli.run(&args).await;
        self.say_cli(&args, &ran);
        let (_, runs) = self.settle().await;
        let s3 = self.emulator.calls(Caller::Agent).await.operations().iter().filter(|o| o.starts_with("s3:")).count();
        let item = self.fleet.item(&self.clients).await;
        let pinned = item.pin.as_ref().map(|p| p.release.clone()).unwrap_or_default();
        self.t.say(format!(
            "rollback to release {pinned} (generation {}): {} instance(s) switched current, {s3} S3 request(s) by the instances",
            item.completed_gen,
            runs.iter().filter(|r| r.run.stdout.contains("nothing downloaded")).count()
        ));
        self.t.expect(ran.code == 0 && ran.stdout.contains("started"), "the CLI started the rollback wave");
        self.t
            .expect(self.served_index().await == good, "every instance serves the release before the broken one again");
        self.t.expect(
            s3 == 0 && runs.iter().all(|r| r.run.stdout.contains("nothing downloaded")),
            "no download: a switch",
        );
        self.put_index("<?php // fixed").await;
        self.t.say("a fix is uploaded while the fleet is pinned");
        self.settle().await;
        self.skip(QUIET_S + 1, "a wave would have started by now").await;
        let (_, runs) = self.settle().await;
        let after = self.fleet.item(&self.clients).await;
        self.t.say(format!(
            "pinned: requested_gen {} (the upload counted), completed_gen {}, {} run(s)",
            after.requested_gen,
            after.completed_gen,
            runs.len()
        ));
        self.t.expect(runs.is_empty() && self.served_index().await == good, "a pinned fleet runs no wave");
        let resumed = self.operator(serde_json::json!({"action": "resume", "reason": "fix uploaded"})).await;
        self.t.say(format!(
            "resume, invoked on codebase-sync as `fleetkeeper resume --via-lambda` does: {}",
            describe_start(&resumed["wave"])
        ));
        self.settle().await;
        let fixed = self.served_index().await;
        self.t.expect(fixed.iter().all(|b| b.contains("fixed")), "resume syncs the codebase as it is: the fix");
    }

    /// How many files under `dir` (relative to the codebase) the first
    /// instance serves.
    async fn live_count(&self, dir: &str) -> usize {
        let Some(first) = self.fleet.members(&self.clients).await.into_iter().next() else { return 0 };
        count_files(&self.agent.on_instance(&first.id, &self.fleet.destination).join("current").join(dir))
    }

    async fn drain_out(&mut self) {
        self.t.scene("An instance is drained out (scale-in)");
        let before: Vec<String> = self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect();
        let _ = self
            .clients
            .autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(&self.fleet.asg_name)
            .desired_capacity(3)
            .send()
            .await;
        for m in self.fleet.members(&self.clients).await.iter().filter(|m| m.lifecycle_state == "Terminating:Wait") {
            self.t.say(format!("desired capacity 4 -> 3: {} is Terminating:Wait", m.id));
        }
        self.settle().await;
        let after: Vec<String> = self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect();
        let gone: Vec<&String> = before.iter().filter(|i| !after.contains(i)).collect();
        let healthy = self.healthy_targets().await;
        self.t
            .say(format!("the group now has {} instance(s); gone: {gone:?}; {healthy} healthy target(s)", after.len()));
        self.t.expect(after.len() == 3 && gone.len() == 1 && healthy == 3, "one instance left, deregistered first");
    }

    /// Prints a CLI run's output, indented.
    fn say_cli(&self, args: &[&str], ran: &fleetkeeper_tests::cli::Ran) {
        self.t.say(format!("$ fleetkeeper {} (exit {})", args.join(" "), ran.code));
        for line in ran.stdout.lines().chain(ran.stderr.lines()) {
            println!("            {line}");
        }
    }

    async fn doctor(&mut self) {
        self.t.scene("A load balancer is put in front, with a security-group mistake; fleetkeeper doctor finds it");
        // As the template deploys the rest: the functions (moto stores
        // them), their EventBridge rules, the lock table's TTL.
        let wiring = Wiring::new(&self.emulator).await;
        wiring.functions(&self.emulator, &self.fleet, &self.deployed).await;
        wiring.rules(&self.fleet).await;
        let ttl = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(fleetkeeper::store::EXPIRES_AT)
            .build()
            .expect("ttl");
        let table = &self.fleet.lock_table;
        let on = self.clients.dynamodb.update_time_to_live().table_name(table).time_to_live_specification(ttl);
        on.send().await.expect("ttl");
        let (lb, lb_group) = self.fleet.load_balancer(&self.clients).await;
        self.t.say(format!(
            "ALB {} (security group {lb_group}) forwards to the target group; the instances' group {} does not admit it",
            short_arn(&lb),
            self.fleet.web_security_group
        ));
        let args = ["doctor"];
        let sick = self.cli.run(&args).await;
        self.say_cli(&args, &sick);
        let failed: Vec<&str> = sick.stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
        self.t.expect(sick.code == 1, "doctor exits 1: a problem found");
        self.t.expect(
            failed.len() == 1 && failed[0].contains("lb-to-instances"),
            "the one problem is the load balancer's port to the instances",
        );
        self.fleet.admit_load_balancer(&self.clients, &lb_group).await;
        self.t.say(format!("fixed as doctor says: {} admits TCP 80 from {lb_group}", self.fleet.web_security_group));
        let well = self.cli.run(&args).await;
        self.say_cli(&args, &well);
        self.t.expect(well.code == 0, "doctor passes after the fix");
    }

    async fn status(&mut self) {
        self.t.scene("The operator's view: fleetkeeper status");
        let args = ["status"];
        let ran = self.cli.run(&args).await;
        self.say_cli(&args, &ran);
        self.t.expect(ran.code == 0, "status reads everything");
        let json = self.cli.run(&["status", "--json"]).await;
        let s: Value = serde_json::from_str(&json.stdout).unwrap_or_default();
        self.t.expect(s["freshness"]["up_to_date"] == true, "status: the fleet is up to date");
        self.t.expect(s["pin"].is_null() && s["wave"].is_null(), "status: not pinned, no wave running");
    }

    async fn calls(&mut self) {
        self.t.scene("AWS calls per function (the emulator's call recorder)");
        for component in Component::ALL {
            let calls = self.emulator.calls(Caller::Function(component)).await;
            let failed: Vec<String> = calls.1.iter().map(|((_, op), n)| format!("{op} x{n}")).collect();
            let which = if failed.is_empty() { String::new() } else { format!(" ({})", failed.join(", ")) };
            self.t.say(format!("{component}: {} calls, {} errors{which}", calls.total(), calls.errors()));
        }
        for (who, caller) in [
            ("fleetkeeper CLI, read-only (status, doctor)", Caller::OperatorReadOnly),
            ("fleetkeeper CLI (rollback)", Caller::Operator),
        ] {
            let calls = self.emulator.calls(caller).await;
            self.t.say(format!("{who}: {} calls, {} errors", calls.total(), calls.errors()));
        }
        let agent = self.emulator.calls(Caller::Agent).await;
        self.t.say(format!(
            "the instances' agents (the document's AWS CLI, since the last rollback): {} calls",
            agent.total()
        ));
    }

    async fn healthy_targets(&self) -> usize {
        self.fleet.targets(&self.clients).await.iter().filter(|(_, state)| state == "healthy").count()
    }
}

/// One line about what a function answered (empty: nothing worth saying).
fn summary(to: Component, v: &Value) -> String {
    match to {
        Component::LifecycleHook => {
            let mut parts: Vec<String> = v["driven"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} {} -> {}{}",
                        d["instance_id"].as_str().unwrap_or_default(),
                        d["transition"].as_str().unwrap_or_default(),
                        d["result"].as_str().unwrap_or_default(),
                        match actions(d) {
                            a if a.is_empty() => String::new(),
                            a => format!(" (did: {a})"),
                        }
                    )
                })
                .collect();
            if let Some(r) = v["reconcile"].as_object() {
                parts.push(format!(
                    "reconcile: {} driven, {} registered, {} deregistered",
                    r["driven"].as_array().map(Vec::len).unwrap_or_default(),
                    r["registered"].as_array().map(Vec::len).unwrap_or_default(),
                    r["deregistered"].as_array().map(Vec::len).unwrap_or_default()
                ));
            }
            parts.join("; ")
        }
        Component::MountTargets => v["reconcile"]["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|z| {
                format!("{} {}", z["zone"].as_str().unwrap_or_default(), z["outcome"].as_str().unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join(", "),
        Component::CodebaseSync if v["rollback"].is_string() => {
            format!("rollback to {}: {}", v["rollback"], describe_start(&v["wave"]))
        }
        Component::CodebaseSync if v["resume"] == true => format!("resume: {}", describe_start(&v["wave"])),
        Component::CodebaseSync => format!("{} relevant change(s): {}", v["relevant"], describe_start(&v["wave"])),
        Component::SyncCompletion => {
            if let Some(sweep) = v["sweep"].as_object() {
                let started = match sweep["started"].is_null() {
                    true => String::new(),
                    false => format!("; {}", describe_start(&sweep["started"])),
                };
                let lost =
                    if sweep["fingerprint_changed"] == true { "; the codebase changed without an event" } else { "" };
                return format!("sweep: {}{lost}{started}", sweep["settled"]["outcome"].as_str().unwrap_or_default());
            }
            let settled = &v["settled"];
            if settled.is_null() {
                return String::new();
            }
            format!(
                "wave of generation {} {} on {} instance(s); follow-up: {}",
                settled["target"],
                settled["end"].as_str().unwrap_or("?"),
                settled["synced"],
                match settled["follow_up"].is_null() {
                    true => "none (caught up)".to_owned(),
                    false => describe_start(&settled["follow_up"]),
                }
            )
        }
    }
}

fn actions(driven: &Value) -> String {
    driven["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(|a| match a.split_once("targetgroup/") {
            Some((head, tg)) => format!(
                "{}{}",
                head.replace("arn:aws:elasticloadbalancing:", "").trim_end_matches(|c: char| c != ' '),
                tg.split('/').next().unwrap_or(tg)
            ),
            None => a.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
        "pinned" => format!("the fleet is pinned to release {} by a rollback: counted, no wave", wave["release"]),
        "waiting" => {
            let trigger = match wave["trigger"]["trigger"].as_str().unwrap_or_default() {
                "queued" => "delayed start queued",
                "on_its_way" => "a delayed start is on its way",
                _ => "the sweep starts it",
            };
            format!("quiet period: the wave waits for the codebase to settle ({trigger})")
        }
        "" => "nothing".to_owned(),
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
