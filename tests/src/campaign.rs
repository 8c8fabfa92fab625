//! The fault campaign of the codebase sync: one run is a fleet in its own
//! account, `codebase-sync` and `sync-completion` as real bootstraps behind
//! the event router (SQS batches, async retries, the DLQ), the local agent
//! running the real document on every instance, and the fault proxy in front
//! of the emulator for both functions' AWS calls.
//!
//! A run has two phases. The **fault phase** plays `rounds` rounds of a
//! seeded scenario — upload bursts (new keys and overwrites), agents that
//! lose their connection and come back, scale-outs (instances attached with
//! no hook, launched mid-wave), terminations mid-wave, time passing, the
//! schedule firing — while the proxy injects throttling, 5xx, dropped
//! connections, hung calls and SIGKILLs at `rate`, and EventBridge loses
//! half that share of the S3 and command status events. Waves wait for the
//! default quiet period, started by the delayed message on `codebase-sync`'s
//! own queue (delivered by the router when due). The **heal phase** stops
//! the faults, brings every agent back, and lets at most `heal_sweeps` sweep
//! intervals pass (the schedule fires once per interval, then events settle).
//!
//! Checked after every run (see [`Report::invariants`]):
//! 1. no two invocations overlapped on one instance (the agent's timeline);
//! 2. every requested generation completed on every in-service instance
//!    (the fleet item and each instance's record);
//! 3. no lease outlived its expiry by more than one sweep interval: the
//!    schedule fires at every interval boundary of the test clock, and after
//!    every sweep that succeeded no lease is past its expiry (a sweep that
//!    failed all three attempts under injected faults could not act; the
//!    longest overdue seen, those included, is reported too);
//! 4. no demand was lost: every upload's final content is live on every
//!    in-service instance.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleetkeeper::Component;
use fleetkeeper::clock::Clock;
use fleetkeeper::config::vars;
use fleetkeeper::ssm_document::history::RunHistory;
use fleetkeeper::sync::state::FleetItem;
use serde::Serialize;

use crate::Emulator;
use crate::agent::Agent;
use crate::emulator::{Caller, TestClock};
use crate::faults::{FaultProxy, Plan, mix, unit};
use crate::fleet::{Fleet, FleetSpec, create_sync_document};
use crate::inprocess::{deployed_retries, set_var};
use crate::router::{Delivery, Router};
use crate::runtime::LambdaProcess;

/// The schedule of the deployed functions: `rate(5 minutes)`.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// The functions' attempt timeout in the campaign (`FLEET_AWS_ATTEMPT_TIMEOUT_SECONDS`):
/// short, so a hung call costs the campaign one second, not ten.
const ATTEMPT_TIMEOUT_S: u64 = 1;

/// One run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    /// The share of the functions' AWS calls faulted during the fault phase.
    pub rate: f64,
    /// The seed of the scenario and of the faults.
    pub seed: u64,
    /// Instances at the start.
    pub instances: i32,
    /// Rounds of the fault phase.
    pub rounds: u32,
    /// Sweep intervals the heal phase may take (K).
    pub heal_sweeps: u32,
}

impl Spec {
    /// The campaign's standard run at `rate` from `seed`.
    pub fn standard(rate: f64, seed: u64) -> Self {
        Spec { rate, seed, instances: 3, rounds: ROUNDS, heal_sweeps: HEAL_SWEEPS }
    }
}

/// The end of a campaign's report: the runs that broke an invariant (their
/// one-line accounts), or that none did, and how to reproduce a seed of the
/// tests named `filter` (under `reliability::`).
pub fn write_outcome(w: &mut String, broken: &[String], filter: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(w);
    if broken.is_empty() {
        let _ = writeln!(w, "Every invariant held in every run.");
    } else {
        let _ = writeln!(w, "## Runs that broke an invariant\n");
        for summary in broken {
            let _ = writeln!(w, "- {summary}");
        }
    }
    let _ = writeln!(
        w,
        "\nReproduce a seed at every rate: `make build venv && FK_CAMPAIGN_SEEDS=<seed>,1 \
         tests/emulator/with-emulator cargo test --test emulator reliability::{filter} -- --nocapture` \
         (`make test` runs seeds 1 to 3)."
    );
}

/// The median of `v` (the upper one of an even count; 0 when empty), for
/// the campaigns' tables.
pub fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// Rounds of the fault phase of a standard run.
pub const ROUNDS: u32 = 12;

/// K: sweep intervals the heal phase may take. A SIGKILLed sender's lease
/// ends with its invocation's deadline plus the listing's lag, so the next
/// sweep takes its wave over; the follow-up wave and the catch-ups settle
/// within the next few (150 runs: at most 3).
pub const HEAL_SWEEPS: u32 = 5;

/// What one run saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run.
    pub rate: f64,
    /// Its seed.
    pub seed: u64,
    /// Pairs of runs that overlapped on one instance.
    pub overlaps: Vec<String>,
    /// In-service instances not at the requested generation at the end, and why.
    pub behind: Vec<String>,
    /// Keys whose final content is not live somewhere, and where.
    pub lost: Vec<String>,
    /// The longest a held lease was seen past its expiry, ms (sweeps that
    /// failed every attempt under faults included).
    pub lease_overdue_ms: u64,
    /// Leases found past their expiry right after a successful sweep.
    pub stale_leases: Vec<String>,
    /// Sweep intervals the heal phase took to converge (`None`: it did not).
    pub healed_after: Option<u32>,
    /// Faulted calls by kind.
    pub injected: BTreeMap<String, u64>,
    /// Every fault, in order: `n caller service:Operation Fault`.
    pub injections: Vec<String>,
    /// The functions' calls the proxy saw.
    pub calls: u64,
    /// Cold starts after kills and timeouts (beyond each function's first).
    pub restarts: u32,
    /// Deliveries that ended in an error (each retried as Lambda would).
    pub failed_deliveries: usize,
    /// Messages in the DLQ.
    pub dead_letters: usize,
    /// S3 and command status events EventBridge lost (half the fault rate).
    pub lost_events: usize,
    /// Async events that exhausted their retries.
    pub failed_async: usize,
    /// Agent runs (the document on an instance).
    pub agent_runs: usize,
    /// The fleet item at the end.
    pub requested_gen: u64,
    /// Its completed generation.
    pub completed_gen: u64,
    /// Wall time of the run, ms.
    pub wall_ms: u64,
}

impl Report {
    /// The four invariants, in order, with their names.
    pub fn invariants(&self) -> [(&'static str, bool); 4] {
        [
            ("no overlapping runs on an instance", self.overlaps.is_empty()),
            ("every requested generation completed on every in-service instance", self.behind.is_empty()),
            ("no lease outlived its expiry by more than one sweep interval", self.stale_leases.is_empty()),
            ("no demand lost", self.lost.is_empty()),
        ]
    }

    /// Whether every invariant held.
    pub fn held(&self) -> bool {
        self.invariants().iter().all(|(_, ok)| *ok)
    }

    /// A one-line account, for failures.
    pub fn summary(&self) -> String {
        let broken: Vec<&str> = self.invariants().iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
        format!(
            "rate {} seed {}: {} | healed after {:?} sweeps | overlaps {:?} | behind {:?} | lost {:?} | stale leases {:?} | lease overdue {} ms | injected {:?} | restarts {} | DLQ {} | failed async {} | events lost {}",
            self.rate,
            self.seed,
            if broken.is_empty() { "all invariants held".to_owned() } else { format!("BROKEN: {}", broken.join("; ")) },
            self.healed_after,
            self.overlaps,
            self.behind,
            self.lost,
            self.stale_leases,
            self.lease_overdue_ms,
            self.injected,
            self.restarts,
            self.dead_letters,
            self.failed_async,
            self.lost_events,
        )
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    spec: Spec,
    emulator: Emulator,
    clients: fleetkeeper::Clients,
    fleet: Fleet,
    clock: TestClock,
    proxy: FaultProxy,
    router: Router,
    agent: Agent,
    /// key (relative to the prefix) -> its last uploaded content.
    expected: BTreeMap<String, String>,
    offline: BTreeSet<String>,
    next_tick_ms: u64,
    uploads: usize,
    healing: bool,
    cold_starts: Vec<Arc<AtomicU32>>,
    step: u64,
    report: Report,
    _hosts: Scratch,
}

/// Runs one campaign run (needs the emulator: `FLEETKEEPER_EMULATOR_URL`).
pub async fn run(spec: Spec) -> Report {
    let started = Instant::now();
    let mut run = Run::provision(spec).await;
    run.fault_phase().await;
    run.heal_phase().await;
    run.check().await;
    run.report.wall_ms = started.elapsed().as_millis() as u64;
    run.shutdown().await
}

impl Run {
    async fn provision(spec: Spec) -> Run {
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        let fleet_spec = FleetSpec {
            instances: spec.instances,
            zones: 2,
            launch_hook: false,
            terminate_hook: false,
            ..FleetSpec::default()
        };
        let fleet = Fleet::provision(&clients, &fleet_spec).await;
        create_sync_document(&clients, &fleet).await;
        let clock = TestClock::new(&emulator).await;
        let proxy = FaultProxy::start(emulator.url()).await;
        let behind = emulator.behind(proxy.url());
        let mut router = Router::new(&emulator, &fleet).await;
        let mut cold_starts = Vec::new();
        for component in [Component::CodebaseSync, Component::SyncCompletion] {
            // As deployed: the default quiet period, the delayed start on
            // codebase-sync's own queue (its SendMessage faulted too).
            let mut env = fleet.sync_env(component, fleetkeeper::config::DEFAULT_QUIET_SECONDS);
            set_var(&mut env, vars::SYNC_MAX_CONCURRENCY, "2");
            env.extend(behind.aws_env_for(component));
            deployed_retries(&mut env, ATTEMPT_TIMEOUT_S);
            let process = LambdaProcess::start_on_clock(component, &env, &clock).await;
            proxy.fault(&emulator.key(Caller::Function(component)), Some(process.killer()));
            cold_starts.push(process.cold_start_counter());
            router.route(component, process);
        }
        let hosts = Scratch(std::env::temp_dir().join(format!("fk-campaign-{}", uuid::Uuid::new_v4().simple())));
        std::fs::create_dir_all(&hosts.0).unwrap_or_else(|e| panic!("{}: {e}", hosts.0.display()));
        let agent = Agent::new(&emulator, &fleet.document, &hosts.0).await;
        let report = Report { rate: spec.rate, seed: spec.seed, ..Report::default() };
        let mut run = Run {
            spec,
            emulator,
            clients,
            fleet,
            clock,
            proxy,
            router,
            agent,
            expected: BTreeMap::new(),
            offline: BTreeSet::new(),
            next_tick_ms: 0,
            uploads: 0,
            healing: false,
            cold_starts,
            step: 0,
            report,
            _hosts: hosts,
        };
        // The codebase as it is before fleetkeeper runs: the first sweep syncs it.
        run.put("index.php", "v0").await;
        run
    }

    /// The next scenario draw in `[0, 1)`.
    fn draw(&mut self) -> f64 {
        self.step += 1;
        unit(mix(self.spec.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ mix(self.step)))
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let d = self.draw();
        if items.is_empty() { None } else { items.get((d * items.len() as f64) as usize % items.len()) }
    }

    /// Uploads `key` with `content` made one byte longer than any upload
    /// before: `aws s3 sync` cannot see a same-size overwrite within the
    /// same second (a documented limit, not what this campaign measures).
    async fn put(&mut self, key: &str, content: &str) {
        self.uploads += 1;
        let content = format!("{content} {}", "+".repeat(self.uploads));
        self.fleet.put(&self.clients, key, &content).await;
        self.expected.insert(key.to_owned(), content);
    }

    async fn in_service(&self) -> Vec<String> {
        let members = self.fleet.members(&self.clients).await;
        members.into_iter().filter(|m| m.lifecycle_state == "InService").map(|m| m.id).collect()
    }

    async fn fault_phase(&mut self) {
        self.proxy.set_plan(Plan::at(self.spec.rate, self.spec.seed));
        self.router.loss = self.spec.rate / 2.0;
        self.router.loss_seed = mix(self.spec.seed ^ 0x1055);
        self.next_tick_ms = self.clock.now_ms() + SWEEP_INTERVAL.as_millis() as u64;
        for round in 0..self.spec.rounds {
            self.scenario_step(round).await;
            self.settle().await;
            let by = Duration::from_secs(30 + (self.draw() * 150.0) as u64);
            self.pass(by).await;
        }
    }

    /// Lets `by` pass on the test clock; the schedule fires at every sweep
    /// interval boundary crossed, and events settle after it.
    async fn pass(&mut self, by: Duration) {
        let until = self.clock.now_ms() + by.as_millis() as u64;
        while self.next_tick_ms <= until {
            let step = self.next_tick_ms.saturating_sub(self.clock.now_ms());
            self.clock.advance(Duration::from_millis(step)).await;
            self.next_tick_ms += SWEEP_INTERVAL.as_millis() as u64;
            let before = self.clock.now_ms();
            let deliveries = self.router.tick().await;
            self.check_sweeps(&deliveries, before).await;
            self.settle().await;
        }
        let rest = until.saturating_sub(self.clock.now_ms());
        self.clock.advance(Duration::from_millis(rest)).await;
    }

    /// After a sweep that succeeded no lease may be left that had expired
    /// when it began (`before`): the sweep renews a live wave's lease and
    /// takes a dead one over. (A sweep that failed every attempt under
    /// injected faults could do neither.)
    async fn check_sweeps(&mut self, deliveries: &[Delivery], before: u64) {
        let swept =
            deliveries.iter().any(|d| d.to == Component::SyncCompletion && d.what == "schedule" && d.reply.is_ok());
        if !swept {
            return;
        }
        if let Some(wave) = self.item().await.wave
            && before > wave.lease_expires_at
        {
            self.report.stale_leases.push(format!(
                "wave {} (gen {}) expired {} ms before a sweep that succeeded and left it",
                wave.id,
                wave.target,
                before - wave.lease_expires_at
            ));
        }
    }

    async fn scenario_step(&mut self, round: u32) {
        let d = self.draw();
        let members = self.in_service().await;
        if d < 0.45 {
            let n = 1 + (self.draw() * 4.0) as usize;
            for i in 0..n {
                let existing: Vec<String> = self.expected.keys().cloned().collect();
                let key = if self.draw() < 0.4 {
                    self.pick(&existing).cloned().unwrap_or_else(|| "index.php".into())
                } else {
                    format!("r{round}/f{i}.php")
                };
                self.put(&key, &format!("round {round} upload {i} seed {}", self.spec.seed)).await;
            }
        } else if d < 0.6 {
            let online: Vec<String> = members.iter().filter(|m| !self.offline.contains(*m)).cloned().collect();
            if let Some(id) = self.pick(&online).cloned() {
                self.emulator.set_agent(&id, Some("ConnectionLost")).await;
                self.offline.insert(id);
            }
        } else if d < 0.7 {
            let offline: Vec<String> = self.offline.iter().cloned().collect();
            if let Some(id) = self.pick(&offline).cloned() {
                self.emulator.set_agent(&id, Some("Online")).await;
                self.offline.remove(&id);
            }
        } else if d < 0.8 {
            let desired = members.len() as i32 + 1;
            if desired <= 6 {
                self.fleet.scale_to(&self.clients, desired).await;
            }
        } else if d < 0.9
            && let Some(id) = self.pick(&members).cloned()
        {
            self.clients
                .autoscaling
                .terminate_instance_in_auto_scaling_group()
                .instance_id(&id)
                .should_decrement_desired_capacity(false)
                .send()
                .await
                .unwrap_or_else(|e| panic!("terminate {id}: {e:?}"));
            self.offline.remove(&id);
        }
    }

    /// Delivers events and runs the agents until nothing moves (bounded);
    /// the lease is observed after every step.
    async fn settle(&mut self) {
        for _ in 0..30 {
            let before = self.clock.now_ms();
            let deliveries = self.router.pump().await;
            self.check_sweeps(&deliveries, before).await;
            self.report.failed_deliveries += deliveries.iter().filter(|d| d.reply.is_err()).count();
            // Under faults the instances are sometimes slow to run what they got.
            let runs = if !self.healing && self.draw() < 0.2 { Vec::new() } else { self.agent.run_pending().await };
            self.observe_lease().await;
            if deliveries.is_empty() && runs.is_empty() && self.router.idle() {
                break;
            }
        }
    }

    async fn item(&self) -> FleetItem {
        self.fleet.item(&self.clients).await
    }

    async fn observe_lease(&mut self) {
        if let Some(wave) = self.item().await.wave {
            let overdue = self.clock.now_ms().saturating_sub(wave.lease_expires_at);
            self.report.lease_overdue_ms = self.report.lease_overdue_ms.max(overdue);
        }
    }

    async fn heal_phase(&mut self) {
        self.proxy.heal();
        self.router.loss = 0.0;
        self.healing = true;
        for id in std::mem::take(&mut self.offline) {
            self.emulator.set_agent(&id, Some("Online")).await;
        }
        self.settle().await;
        for k in 1..=self.spec.heal_sweeps {
            self.pass(SWEEP_INTERVAL).await;
            if self.converged().await.is_ok() {
                self.report.healed_after = Some(k);
                return;
            }
        }
    }

    /// Invariants 2 and 4 as they stand now: `Err` names what is behind or lost.
    async fn converged(&self) -> Result<(), (Vec<String>, Vec<String>)> {
        let item = self.item().await;
        let ids = self.in_service().await;
        let mut behind = Vec::new();
        if item.completed_gen < item.requested_gen || item.requested_gen == 0 {
            behind.push(format!("fleet: completed {} of {} requested", item.completed_gen, item.requested_gen));
        }
        let table = self.fleet.store(&self.clients);
        let records = table.instances(&ids).await.unwrap_or_else(|e| panic!("instances: {e}"));
        for id in &ids {
            match records.iter().find(|r| &r.instance_id == id) {
                Some(r) if !r.behind(&item.epoch, item.requested_gen) => {}
                Some(r) => behind.push(format!("{id}: synced {} of {}", r.last_synced_gen, item.requested_gen)),
                None => behind.push(format!("{id}: no record")),
            }
        }
        let mut lost = Vec::new();
        for (key, content) in &self.expected {
            for id in &ids {
                let live = self.agent.on_instance(id, &self.fleet.destination).join("current").join(key);
                if std::fs::read_to_string(&live).ok().as_deref() != Some(content.as_str()) {
                    lost.push(format!("{key} on {id}"));
                }
            }
        }
        if behind.is_empty() && lost.is_empty() { Ok(()) } else { Err((behind, lost)) }
    }

    async fn check(&mut self) {
        if let Err((behind, lost)) = self.converged().await {
            self.report.behind = behind;
            self.report.lost = lost;
        }
        let mut overlaps = Vec::new();
        for (a, b) in self.agent.overlaps() {
            overlaps.push(format!(
                "{} and {} on {}",
                self.describe(&a.command_id).await,
                self.describe(&b.command_id).await,
                a.instance_id
            ));
        }
        self.report.overlaps = overlaps;
        let item = self.item().await;
        self.report.requested_gen = item.requested_gen;
        self.report.completed_gen = item.completed_gen;
        self.report.injected = self.proxy.counts().into_iter().map(|(f, n)| (format!("{f:?}"), n)).collect();
        self.report.calls = self.proxy.requests();
        self.report.injections = self
            .proxy
            .injections()
            .iter()
            .map(|i| {
                format!(
                    "{} {} {}:{} {:?}",
                    i.n,
                    &i.key[i.key.len().saturating_sub(6)..],
                    i.service,
                    i.operation,
                    i.fault
                )
            })
            .collect();
        self.report.dead_letters = self.router.dead_letters.len();
        self.report.lost_events = self.router.lost;
        self.report.failed_async = self.router.failed_async.len();
        self.report.agent_runs = self.agent.runs.len();
    }

    /// A command as `id ("comment", gen N)`.
    async fn describe(&self, command_id: &str) -> String {
        let listed = self.clients.ssm.list_commands().command_id(command_id).send().await;
        let command = listed.ok().and_then(|o| o.commands().first().cloned());
        let comment = command.as_ref().and_then(|c| c.comment()).unwrap_or_default().to_owned();
        let generation = command
            .as_ref()
            .and_then(|c| c.parameters())
            .and_then(|p| p.get("generation"))
            .map(|g| g.join(","))
            .unwrap_or_default();
        format!("{command_id} (\"{comment}\", gen {generation})")
    }

    async fn shutdown(mut self) -> Report {
        self.report.restarts = self.cold_starts.iter().map(|c| c.load(Ordering::SeqCst).saturating_sub(1)).sum();
        // Dropping the router stops the function processes.
        self.report
    }
}
