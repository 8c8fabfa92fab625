//! The fault campaign of the lifecycle gate: one run is a fleet with
//! fleetkeeper's launch and terminate hooks in its own account,
//! `lifecycle-hook` as a real bootstrap behind the event router (lifecycle
//! events and catch-up status events async with Lambda's retries, the
//! re-trigger queue as SQS batches), the local agent running the catch-ups,
//! AWS's pace from the readiness timelines (EC2 pending, the agent
//! registering, targets `initial` then `healthy`, draining), and the fault
//! proxy in front of the emulator for the function's AWS calls.
//!
//! The **fault phase** plays `rounds` rounds of a seeded scenario —
//! scale-outs, terminations of instances in service (the group replaces
//! them), agents that lose their connection and come back, time passing,
//! the schedule firing — while the proxy injects throttling, 5xx, dropped
//! connections, hung calls and SIGKILLs at `rate`, and EventBridge loses half
//! that share of the lifecycle and command status events. The hooks time out
//! after 900 s (three reconcile intervals, as the template deploys them). The **heal phase** stops the
//! faults, brings every agent back, and lets at most `heal_sweeps` reconcile
//! intervals pass.
//!
//! Checked after every run (see [`Report::invariants`]):
//! 1. every instance that should serve (`InService`) is registered and
//!    healthy in the managed target group;
//! 2. every instance that left is deregistered (no target but those);
//! 3. every lifecycle action was completed exactly once, by fleetkeeper,
//!    with the right result (no instance fails on its own here: every launch
//!    CONTINUEs, every terminate CONTINUEs; a hook timeout is a failure) and
//!    none is left waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleetkeeper::Component;
use fleetkeeper::clock::Clock;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Emulator;
use crate::agent::Agent;
use crate::campaign::SWEEP_INTERVAL;
use crate::emulator::{Caller, TestClock};
use crate::faults::{FaultProxy, Plan, mix, unit};
use crate::fleet::{Fleet, FleetSpec, create_sync_document, upload};
use crate::inprocess::deployed_retries;
use crate::router::Router;
use crate::runtime::LambdaProcess;

/// Rounds of the fault phase of a standard run.
pub const ROUNDS: u32 = 10;

/// K: reconcile intervals the heal phase may take.
pub const HEAL_SWEEPS: u32 = 4;

/// One run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    /// The share of the function's AWS calls faulted during the fault phase.
    pub rate: f64,
    /// The seed of the scenario and of the faults.
    pub seed: u64,
    /// Rounds of the fault phase.
    pub rounds: u32,
    /// Reconcile intervals the heal phase may take (K).
    pub heal_sweeps: u32,
}

impl Spec {
    /// The campaign's standard run at `rate` from `seed`.
    pub fn standard(rate: f64, seed: u64) -> Self {
        Spec { rate, seed, rounds: ROUNDS, heal_sweeps: HEAL_SWEEPS }
    }
}

/// What one run saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The run.
    pub rate: f64,
    /// Its seed.
    pub seed: u64,
    /// In-service instances not registered and healthy, and why.
    pub not_serving: Vec<String>,
    /// Targets whose instance is not in service.
    pub stray_targets: Vec<String>,
    /// Actions not completed exactly once with the right result, or still waiting.
    pub actions: Vec<String>,
    /// Lifecycle actions AWS opened.
    pub opened: usize,
    /// Reconcile intervals the heal phase took to converge (`None`: it did not).
    pub healed_after: Option<u32>,
    /// Faulted calls by kind.
    pub injected: BTreeMap<String, u64>,
    /// The function's calls the proxy saw.
    pub calls: u64,
    /// Cold starts after kills and timeouts (beyond the first).
    pub restarts: u32,
    /// Deliveries that ended in an error (each retried as Lambda would).
    pub failed_deliveries: usize,
    /// Async events that exhausted their retries.
    pub failed_async: usize,
    /// Command status events EventBridge lost (half the fault rate).
    pub lost_events: usize,
    /// Re-trigger batches delivered.
    pub retriggers: usize,
    /// Why fleetkeeper ABANDONed or held a launch, as its responses said.
    pub abandons: Vec<String>,
    /// Wall time of the run, ms.
    pub wall_ms: u64,
}

impl Report {
    /// The three invariants, in order, with their names.
    pub fn invariants(&self) -> [(&'static str, bool); 3] {
        [
            ("every instance in service is registered and healthy", self.not_serving.is_empty()),
            ("every instance that left is deregistered", self.stray_targets.is_empty()),
            ("every action completed exactly once with the right result", self.actions.is_empty()),
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
            "lifecycle rate {} seed {}: {} | healed after {:?} | opened {} | not serving {:?} | stray {:?} | actions {:?} | abandons {:?} | injected {:?} | restarts {} | failed async {} | events lost {} | re-triggers {}",
            self.rate,
            self.seed,
            if broken.is_empty() { "all invariants held".to_owned() } else { format!("BROKEN: {}", broken.join("; ")) },
            self.healed_after,
            self.opened,
            self.not_serving,
            self.stray_targets,
            self.actions,
            self.abandons,
            self.injected,
            self.restarts,
            self.failed_async,
            self.lost_events,
            self.retriggers,
        )
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
    offline: BTreeSet<String>,
    next_tick_ms: u64,
    healing: bool,
    cold_starts: Arc<AtomicU32>,
    step: u64,
    report: Report,
    hosts: std::path::PathBuf,
}

/// Runs one campaign run (needs the emulator: `FLEETKEEPER_EMULATOR_URL`).
pub async fn run(spec: Spec) -> Report {
    let started = Instant::now();
    let mut run = Run::provision(spec).await;
    run.fault_phase().await;
    run.heal_phase().await;
    run.check().await;
    run.report.wall_ms = started.elapsed().as_millis() as u64;
    run.report.restarts = run.cold_starts.load(Ordering::SeqCst).saturating_sub(1);
    let _ = std::fs::remove_dir_all(&run.hosts);
    run.report
}

impl Run {
    async fn provision(spec: Spec) -> Run {
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        // AWS's pace, shortened: every wait of the gate happens.
        emulator.set_readiness(json!({"pending_s": 20, "agent_s": 30, "healthy_s": 20})).await;
        // The deployed heartbeat timeout (three reconcile intervals): a gate
        // that stops keeping its actions alive lets them time out in a run.
        let fleet_spec = FleetSpec {
            instances: 0,
            zones: 2,
            deregistration_delay_s: 30,
            heartbeat_timeout: 900,
            ..FleetSpec::default()
        };
        let fleet = Fleet::provision(&clients, &fleet_spec).await;
        create_sync_document(&clients, &fleet).await;
        upload(&clients, &fleet, &["index.php".into()]).await;
        let clock = TestClock::new(&emulator).await;
        let proxy = FaultProxy::start(emulator.url()).await;
        let behind = emulator.behind(proxy.url());
        let mut router = Router::new(&emulator, &fleet).await;
        let mut env = fleet.env();
        env.extend(behind.aws_env_for(Component::LifecycleHook));
        deployed_retries(&mut env, 1);
        let process = LambdaProcess::start_on_clock(Component::LifecycleHook, &env, &clock).await;
        proxy.fault(&emulator.key(Caller::Function(Component::LifecycleHook)), Some(process.killer()));
        let cold_starts = process.cold_start_counter();
        router.route(Component::LifecycleHook, process);
        let hosts = std::env::temp_dir().join(format!("fk-lifecycle-campaign-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&hosts).unwrap_or_else(|e| panic!("{}: {e}", hosts.display()));
        let agent = Agent::new(&emulator, &fleet.document, &hosts).await;
        let report = Report { rate: spec.rate, seed: spec.seed, ..Report::default() };
        let run = Run {
            spec,
            emulator,
            clients,
            fleet,
            clock,
            proxy,
            router,
            agent,
            offline: BTreeSet::new(),
            next_tick_ms: 0,
            healing: false,
            cold_starts,
            step: 0,
            report,
            hosts,
        };
        run.scale_to(2).await;
        run
    }

    fn draw(&mut self) -> f64 {
        self.step += 1;
        unit(mix(self.spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mix(self.step)))
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let d = self.draw();
        if items.is_empty() { None } else { items.get((d * items.len() as f64) as usize % items.len()) }
    }

    async fn scale_to(&self, n: i32) {
        self.fleet.scale_to(&self.clients, n).await;
    }

    async fn in_service(&self) -> Vec<String> {
        let members = self.fleet.members(&self.clients).await;
        members.into_iter().filter(|m| m.lifecycle_state == "InService").map(|m| m.id).collect()
    }

    async fn fault_phase(&mut self) {
        self.proxy.set_plan(Plan::at(self.spec.rate, self.spec.seed));
        self.router.loss = self.spec.rate / 2.0;
        self.router.loss_seed = mix(self.spec.seed ^ 0x11fe);
        self.next_tick_ms = self.clock.now_ms() + SWEEP_INTERVAL.as_millis() as u64;
        for _ in 0..self.spec.rounds {
            self.scenario_step().await;
            self.settle().await;
            let by = Duration::from_secs(10 + (self.draw() * 110.0) as u64);
            self.pass(by).await;
        }
    }

    async fn scenario_step(&mut self) {
        let d = self.draw();
        let members = self.fleet.members(&self.clients).await;
        let serving = self.in_service().await;
        if d < 0.3 {
            let desired = (members.len() as i32 + 1 + (self.draw() * 2.0) as i32).min(6);
            self.scale_to(desired).await;
        } else if d < 0.45 && members.len() > 1 && members.iter().all(|m| m.lifecycle_state == "InService") {
            // A scale-in (once no launch is pending: which instance a group
            // picks then is not documented).
            self.scale_to(members.len() as i32 - 1).await;
        } else if d < 0.6 {
            if let Some(id) = self.pick(&serving).cloned() {
                // An instance taken out of service: the group replaces it.
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
        } else if d < 0.75 {
            let ids: Vec<String> = members.iter().map(|m| m.id.clone()).filter(|i| !self.offline.contains(i)).collect();
            if let Some(id) = self.pick(&ids).cloned() {
                self.emulator.set_agent(&id, Some("ConnectionLost")).await;
                self.offline.insert(id);
            }
        } else if d < 0.85 {
            let offline: Vec<String> = self.offline.iter().cloned().collect();
            if let Some(id) = self.pick(&offline).cloned() {
                self.emulator.set_agent(&id, Some("Online")).await;
                self.offline.remove(&id);
            }
        }
    }

    /// Lets `by` pass; the schedule fires at every interval boundary crossed.
    async fn pass(&mut self, by: Duration) {
        let until = self.clock.now_ms() + by.as_millis() as u64;
        // Small steps, so the re-triggers come due on the way.
        while self.clock.now_ms() < until {
            let step = (until - self.clock.now_ms()).min(10_000);
            self.clock.advance(Duration::from_millis(step)).await;
            if self.next_tick_ms <= self.clock.now_ms() {
                self.next_tick_ms += SWEEP_INTERVAL.as_millis() as u64;
                let deliveries = self.router.tick().await;
                self.report.failed_deliveries += deliveries.iter().filter(|d| d.reply.is_err()).count();
            }
            self.settle().await;
        }
    }

    async fn settle(&mut self) {
        for _ in 0..30 {
            let deliveries = self.router.pump().await;
            self.report.failed_deliveries += deliveries.iter().filter(|d| d.reply.is_err()).count();
            self.report.retriggers += deliveries.iter().filter(|d| d.what.starts_with("re-trigger")).count();
            for d in deliveries.iter().filter_map(|d| d.reply.as_ref().ok()) {
                let reconciled = d["reconcile"]["driven"].as_array().cloned().unwrap_or_default();
                for x in d["driven"].as_array().cloned().unwrap_or_default().iter().chain(&reconciled) {
                    if x["result"] == "abandon" || x["refused"] == true {
                        self.report.abandons.push(format!("{} {}: {}", x["instance_id"], x["result"], x["reason"]));
                    }
                }
            }
            let runs = if !self.healing && self.draw() < 0.2 { Vec::new() } else { self.agent.run_pending().await };
            if deliveries.is_empty() && runs.is_empty() && self.router.idle() {
                break;
            }
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
            if self.converged().await.held() {
                self.report.healed_after = Some(k);
                return;
            }
        }
    }

    /// The invariants as they stand now.
    async fn converged(&self) -> Report {
        let mut now = Report::default();
        let members = self.fleet.members(&self.clients).await;
        let serving: BTreeSet<String> =
            members.iter().filter(|m| m.lifecycle_state == "InService").map(|m| m.id.clone()).collect();
        let targets: BTreeMap<String, String> = self.fleet.targets(&self.clients).await.into_iter().collect();
        for id in &serving {
            match targets.get(id).map(String::as_str) {
                Some("healthy") => {}
                other => now.not_serving.push(format!("{id}: {other:?}")),
            }
        }
        for (id, state) in &targets {
            if !serving.contains(id) && state != "draining" {
                now.stray_targets.push(format!("{id}: {state}"));
            }
        }
        for m in &members {
            if m.lifecycle_state.ends_with(":Wait") {
                now.actions.push(format!("{} still in {}", m.id, m.lifecycle_state));
            }
        }
        let events = self.emulator.lifecycle_events(&self.fleet.asg_name).await;
        now.opened = events.len();
        let history = self.emulator.lifecycle_actions(&self.fleet.asg_name).await;
        let history: Vec<Value> = history["history"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let (id, transition) = (&e["detail"]["EC2InstanceId"], &e["detail"]["LifecycleTransition"]);
            let ended: Vec<&Value> = history
                .iter()
                .filter(|h| h["Kind"] != "heartbeat" && h["InstanceId"] == *id && h["Transition"] == *transition)
                .collect();
            let waiting = members.iter().any(|m| m.id == *id && m.lifecycle_state.ends_with(":Wait"));
            match ended.as_slice() {
                [] if waiting => {}
                [h] if h["Kind"] == "complete" && h["Result"] == "CONTINUE" => {}
                other => {
                    let table = self.fleet.store(&self.clients);
                    let record =
                        fleetkeeper::lifecycle::store::RecordStore::lifecycle(&table, id.as_str().unwrap_or_default())
                            .await
                            .map(|(r, _)| r.action.map(|a| a.step).unwrap_or_default())
                            .unwrap_or_else(|e| e.to_string());
                    let beats: Vec<String> = history
                        .iter()
                        .filter(|h| h["Kind"] == "heartbeat" && h["InstanceId"] == *id)
                        .map(|h| h["Time"].as_str().unwrap_or_default().get(11..19).unwrap_or_default().to_owned())
                        .collect();
                    let opened_at = e["time"].as_str().unwrap_or_default().get(11..19).unwrap_or_default().to_owned();
                    let ended_at: Vec<String> = other
                        .iter()
                        .map(|h| h["Time"].as_str().unwrap_or_default().get(11..19).unwrap_or_default().to_owned())
                        .collect();
                    now.actions.push(format!(
                        "{id} {transition} opened {opened_at}, heartbeats {beats:?}, ended {ended_at:?}: {} (record: {record})",
                        other.iter().map(|h| format!("{} {}", h["Kind"], h["Result"])).collect::<Vec<_>>().join(", ")
                    ))
                }
            }
        }
        now
    }

    async fn check(&mut self) {
        let now = self.converged().await;
        self.report.not_serving = now.not_serving;
        self.report.stray_targets = now.stray_targets;
        self.report.actions = now.actions;
        self.report.opened = now.opened;
        self.report.injected = self.proxy.counts().into_iter().map(|(f, n)| (format!("{f:?}"), n)).collect();
        self.report.calls = self.proxy.requests();
        self.report.lost_events = self.router.lost;
        self.report.failed_async = self.router.failed_async.len();
    }
}
