//! A fleet in an account of its own, the functions as bootstraps behind the
//! event router, every AWS call through a timing proxy, and an instant agent.
//!
//! Each function's invocation is timed (wall time, as Lambda bills it) and
//! its AWS calls counted from the emulator's recorder before and after, so a
//! figure can be per invocation. The proxy adds up how long the emulator took
//! to answer each function, so "own time" is the invocation's time without
//! the emulator's (which the benchmark does not measure: moto is not AWS).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleetkeeper::{Clients, Component};
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::{Caller, Calls, TestClock};
use fleetkeeper_tests::faults::FaultProxy;
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document};
use fleetkeeper_tests::router::{Reply, Router, Target};
use fleetkeeper_tests::runtime::LambdaProcess;
use serde_json::Value;

/// One invocation as measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Which function.
    pub to: Component,
    /// Wall time of the invocation.
    pub wall: Duration,
    /// AWS calls it made, by operation.
    pub calls: BTreeMap<String, u64>,
    /// Whether it answered an error.
    pub failed: bool,
}

impl Measured {
    /// Calls of `op`.
    pub fn of(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }

    /// DynamoDB writes (conditional or not).
    pub fn writes(&self) -> u64 {
        ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"]
            .iter()
            .map(|op| self.of(op))
            .sum()
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }
}

type Log = Arc<Mutex<Vec<Measured>>>;

/// A target that times each invocation and counts its calls.
struct Timed {
    inner: Box<dyn Target>,
    to: Component,
    emulator: Emulator,
    log: Log,
}

fn by_operation(calls: &Calls) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((_, op), n) in &calls.0 {
        *out.entry(op.clone()).or_default() += n;
    }
    out
}

impl Target for Timed {
    fn invoke(&mut self, payload: Value) -> Pin<Box<dyn Future<Output = Reply> + Send + '_>> {
        Box::pin(async move {
            let caller = Caller::Function(self.to);
            let before = by_operation(&self.emulator.calls(caller).await);
            let started = Instant::now();
            let reply = self.inner.invoke(payload).await;
            let wall = started.elapsed();
            let mut calls = by_operation(&self.emulator.calls(caller).await);
            for (op, n) in before {
                if let Some(after) = calls.get_mut(&op) {
                    *after -= n;
                }
            }
            calls.retain(|_, n| *n > 0);
            if let Ok(mut log) = self.log.lock() {
                log.push(Measured { to: self.to, wall, calls, failed: reply.is_err() });
            }
            reply
        })
    }
}

/// What a stage runs.
pub struct StageSpec {
    /// The fleet.
    pub fleet: FleetSpec,
    /// `FLEET_SYNC_QUIET_SECONDS` (0: off).
    pub quiet_s: u64,
    /// The SQS event source mapping's batch size.
    pub batch: usize,
    /// The functions to run, each as the binary named (in the bin dir).
    pub functions: Vec<(Component, &'static str)>,
}

/// The running stage.
pub struct Stage {
    /// The emulator, as the functions see it (behind the proxy).
    pub emulator: Emulator,
    /// The test's clients.
    pub clients: Clients,
    /// The fleet.
    pub fleet: Fleet,
    /// The clock every process follows.
    pub clock: TestClock,
    /// The router.
    pub router: Router,
    /// Every invocation measured so far.
    log: Log,
    proxy: FaultProxy,
    completed: BTreeSet<String>,
}

impl Stage {
    /// Provisions `spec` in a fresh account. The binaries come from
    /// `FLEETKEEPER_BIN_DIR` (the release build under `make bench`).
    pub async fn new(spec: StageSpec) -> Stage {
        let direct = Emulator::from_env();
        let proxy = FaultProxy::start(direct.url()).await;
        let emulator = direct.behind(proxy.url());
        let clients = direct.clients().await;
        let fleet = Fleet::provision(&clients, &spec.fleet).await;
        create_sync_document(&clients, &fleet).await;
        let clock = TestClock::new(&direct).await;
        let mut router = Router::new(&direct, &fleet).await;
        router.batch_size = spec.batch;
        let log: Log = Arc::default();
        for (component, binary) in spec.functions {
            let mut env = fleet.sync_env(component, spec.quiet_s);
            env.extend(emulator.aws_env_for(component));
            let process = if binary == component.name() {
                LambdaProcess::start_on_clock(component, &env, &clock).await
            } else {
                let mut env = env;
                env.extend(clock.process_env());
                LambdaProcess::start(binary, &env).await
            };
            let timed = Timed { inner: Box::new(process), to: component, emulator: direct.clone(), log: log.clone() };
            router.route(component, timed);
        }
        Stage { emulator: direct, clients, fleet, clock, router, log, proxy, completed: BTreeSet::new() }
    }

    /// Delivers until nothing moves (bounded).
    pub async fn pump(&mut self) {
        for _ in 0..10_000 {
            let d = self.router.pump().await;
            if d.is_empty() && self.router.idle() {
                return;
            }
        }
    }

    /// The instant agent: every command not yet terminal ends `Success`.
    /// Returns how many it ended.
    pub async fn complete_commands(&mut self) -> usize {
        let mut ended = 0;
        let mut pages = self.clients.ssm.list_commands().into_paginator().send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { break };
            for c in page.commands() {
                let running = matches!(
                    c.status(),
                    Some(aws_sdk_ssm::types::CommandStatus::Pending | aws_sdk_ssm::types::CommandStatus::InProgress)
                );
                if let Some(id) = c.command_id()
                    && running
                    && !self.completed.contains(id)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        for id in ids {
            self.emulator.set_invocation(&id, None, "Success").await;
            self.completed.insert(id);
            ended += 1;
        }
        ended
    }

    /// Instance invocations of every command sent in this account (each
    /// command's `TargetCount`): the syncs the instances were asked to run.
    pub async fn instance_invocations(&self) -> u64 {
        let mut total = 0;
        let mut pages = self.clients.ssm.list_commands().into_paginator().send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { break };
            total += page.commands().iter().map(|c| c.target_count().max(0) as u64).sum::<u64>();
        }
        total
    }

    /// Whether the fleet is caught up: every requested generation completed
    /// and no wave running.
    pub async fn caught_up(&self) -> bool {
        let item = self.fleet.item(&self.clients).await;
        item.wave.is_none() && item.completed_gen >= item.requested_gen
    }

    /// Moves every clock forward.
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by).await;
    }

    /// Every invocation measured so far.
    pub fn all_measured(&self) -> Vec<Measured> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Invocations measured so far, of `component`.
    pub fn measured(&self, component: Component) -> Vec<Measured> {
        self.log.lock().map(|l| l.iter().filter(|m| m.to == component).cloned().collect()).unwrap_or_default()
    }

    /// How long the emulator took to answer `component`, in all.
    pub fn emulator_time(&self, component: Component) -> Duration {
        self.proxy.upstream_time(&self.emulator.key(Caller::Function(component)))
    }

    /// The number of wave records of the fleet.
    pub async fn waves(&self) -> usize {
        let prefix = format!("{}#wave#", self.fleet.name);
        let mut n = 0;
        let mut pages = self.clients.dynamodb.scan().table_name(&self.fleet.lock_table).into_paginator().send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { break };
            n += page
                .items()
                .iter()
                .filter(|i| i.get("pk").and_then(|v| v.as_s().ok()).is_some_and(|pk| pk.starts_with(&prefix)))
                .count();
        }
        n
    }
}
