//! A fleet in its own account, with the four handlers in process behind the
//! event router, the local agent on its instances, and the test clock.

use std::path::PathBuf;

use fleetkeeper::Component;
use fleetkeeper::store::Table;
use fleetkeeper::sync::state::FleetItem;
use fleetkeeper::sync::store::{FleetStore, WaveRecord};
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::agent::{Agent, AgentRun};
use fleetkeeper_tests::emulator::TestClock;
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document_from, upload};
use fleetkeeper_tests::router::{Delivery, Router};

use crate::targets::in_process;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("fk-hosts-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one settle round saw.
#[derive(Default)]
pub struct Settled {
    /// The router's deliveries.
    pub deliveries: Vec<Delivery>,
    /// The agent's runs.
    pub runs: Vec<AgentRun>,
}

/// A change to a function's environment.
type Tweak<'a> = dyn Fn(&mut Vec<(String, String)>) + 'a;

pub struct World {
    pub emulator: Emulator,
    pub clients: fleetkeeper::Clients,
    pub fleet: Fleet,
    pub env: Vec<(String, String)>,
    pub clock: TestClock,
    pub router: Router,
    pub agent: Agent,
    _hosts: TempDir,
}

impl World {
    /// A fleet of `spec` with one object uploaded before fleetkeeper runs.
    pub async fn new(spec: FleetSpec) -> World {
        World::with(spec, |_| {}).await
    }

    /// The same, with the environment changed by `tweak`.
    pub async fn with(spec: FleetSpec, tweak: impl FnOnce(&mut Vec<(String, String)>)) -> World {
        World::with_document(spec, "infra/sync-document.yaml", tweak).await
    }

    /// The same, with the sync document read from `document` (relative to the
    /// repository root).
    pub async fn with_document(
        spec: FleetSpec,
        document: &str,
        tweak: impl FnOnce(&mut Vec<(String, String)>),
    ) -> World {
        let tweak = std::sync::Mutex::new(Some(tweak));
        World::build(spec, document, None, &|env| {
            // The same environment for every function: tweaked once.
            if let Some(t) = tweak.lock().ok().and_then(|mut t| t.take()) {
                t(env);
            }
        })
        .await
    }

    /// A fleet of `spec` whose waves wait for a quiet period of `quiet_s`
    /// seconds (the sync functions' own delayed-start queue, as deployed),
    /// each function's environment changed by `tweak`.
    pub async fn with_quiet(spec: FleetSpec, quiet_s: u64, tweak: impl Fn(&mut Vec<(String, String)>)) -> World {
        World::build(spec, "infra/sync-document.yaml", Some(quiet_s), &tweak).await
    }

    async fn build(spec: FleetSpec, document: &str, quiet_s: Option<u64>, tweak: &Tweak<'_>) -> World {
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        let fleet = Fleet::provision(&clients, &spec).await;
        create_sync_document_from(&clients, &fleet, document).await;
        upload(&clients, &fleet, &["index.php".into()]).await;
        let env_of = |component| {
            let mut env = match quiet_s {
                Some(q) => fleet.sync_env(component, q),
                None => fleet.env(),
            };
            tweak(&mut env);
            env
        };
        let clock = TestClock::new(&emulator).await;
        let mut router = Router::new(&emulator, &fleet).await;
        let mut env = Vec::new();
        for component in Component::ALL {
            let component_env = env_of(component);
            router.route(component, in_process(&emulator, component, &component_env, &clock).await);
            if component == Component::CodebaseSync || env.is_empty() {
                env = component_env;
            }
        }
        let hosts = TempDir::new();
        let agent = Agent::new(&emulator, &fleet.document, &hosts.0).await;
        World { emulator, clients, fleet, env, clock, router, agent, _hosts: hosts }
    }

    /// Routes `component` to a fresh in-process handler with `env`.
    pub async fn reroute(&mut self, component: Component, env: &[(String, String)]) {
        let target = in_process(&self.emulator, component, env, &self.clock).await;
        self.router.route(component, target);
    }

    /// Delivers events and runs the agent until nothing moves (bounded).
    pub async fn settle(&mut self) -> Settled {
        let mut out = Settled::default();
        for _ in 0..30 {
            let d = self.router.pump().await;
            let r = self.agent.run_pending().await;
            let quiet = d.is_empty() && r.is_empty() && self.router.idle();
            out.deliveries.extend(d);
            out.runs.extend(r);
            if quiet {
                break;
            }
        }
        out
    }

    /// The schedules fire once, then everything settles.
    pub async fn tick(&mut self) -> Settled {
        let mut first = Settled { deliveries: self.router.tick().await, runs: Vec::new() };
        let rest = self.settle().await;
        first.deliveries.extend(rest.deliveries);
        first.runs.extend(rest.runs);
        first
    }

    /// Uploads `keys` (relative to the prefix).
    pub async fn upload(&self, keys: &[&str]) {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        upload(&self.clients, &self.fleet, &keys).await;
    }

    /// The lock table of this fleet.
    pub fn store(&self) -> Table {
        self.fleet.store(&self.clients)
    }

    /// The fleet item.
    pub async fn item(&self) -> FleetItem {
        self.store().load().await.expect("load").unwrap_or_default()
    }

    /// A wave record.
    pub async fn wave(&self, id: &str) -> WaveRecord {
        self.store().wave(id).await.expect("wave").unwrap_or_else(|| panic!("no record of wave {id}"))
    }

    /// Every wave record of this fleet, oldest first.
    pub async fn waves(&self) -> Vec<WaveRecord> {
        let prefix = format!("{}#wave#", self.fleet.name);
        let mut ids = Vec::new();
        let mut pages = self.clients.dynamodb.scan().table_name(&self.fleet.lock_table).into_paginator().send();
        while let Some(page) = pages.next().await {
            for item in page.expect("scan").items() {
                if let Some(pk) = item.get("pk").and_then(|v| v.as_s().ok())
                    && let Some(id) = pk.strip_prefix(&prefix)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        let mut records = Vec::new();
        for id in ids {
            records.push(self.wave(&id).await);
        }
        records.sort_by_key(|r| r.started_at);
        records
    }

    /// The instance's live tree: where `current` points, if anywhere.
    pub fn current(&self, instance: &str) -> Option<PathBuf> {
        let link = self.agent.on_instance(instance, &self.fleet.destination).join("current");
        std::fs::read_link(&link).ok().map(|_| link)
    }

    /// Whether `key` (relative to the prefix) is live on `instance`.
    pub fn has(&self, instance: &str, key: &str) -> bool {
        self.current(instance).is_some_and(|c| c.join(key).exists())
    }

    /// The group's members' ids.
    pub async fn instances(&self) -> Vec<String> {
        self.fleet.members(&self.clients).await.into_iter().map(|m| m.id).collect()
    }
}
