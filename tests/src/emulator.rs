//! The patched moto server started by `make test` / `make demo`.
//!
//! Each [`Emulator`] handle is one AWS account of its own (the patch layer
//! reads the account from test access keys, `FK<account><caller>`): tests
//! run side by side with no reset, and each has its own clock. Every caller
//! (each function, the test itself, the router, the local agent) signs with
//! its own key, so the emulator's call recorder attributes every AWS call.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_dynamodb::config::Credentials;
use fleetkeeper::clock::{Clock, Sleep, SystemClock};
use fleetkeeper::{Clients, Component};
use hyper::Method;
use serde_json::{Value, json};

use crate::http;

/// The environment variable holding the emulator's URL.
pub const URL_VAR: &str = "FLEETKEEPER_EMULATOR_URL";

/// The region every test and the demo use.
pub const REGION: &str = "us-east-1";

/// Who signs a request: each function, the test itself, the event router
/// and the local agent have their own access key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Caller {
    /// The test (provisioning, assertions).
    Test,
    /// One of the four functions (in-process handler or real bootstrap).
    Function(Component),
    /// The event router (delivering events: SQS reads and deletes).
    Router,
    /// The local agent (the instances' `aws s3 sync`).
    Agent,
    /// The operator CLI (`fleetkeeper`), its verbs that act.
    Operator,
    /// The operator CLI's read-only verbs (`status`, `doctor`).
    OperatorReadOnly,
}

impl Caller {
    /// Six characters of the access key (`[A-Z0-9]`).
    pub fn tag(self) -> &'static str {
        match self {
            Caller::Test => "TESTER",
            Caller::Function(Component::LifecycleHook) => "LCHOOK",
            Caller::Function(Component::MountTargets) => "MOUNTS",
            Caller::Function(Component::CodebaseSync) => "CBSYNC",
            Caller::Function(Component::SyncCompletion) => "SYNCCP",
            Caller::Router => "ROUTER",
            Caller::Agent => "AGENTS",
            Caller::Operator => "OPERAT",
            Caller::OperatorReadOnly => "OPREAD",
        }
    }
}

/// A handle on the running emulator, in an account of its own.
#[derive(Debug, Clone)]
pub struct Emulator {
    url: String,
    /// Where AWS calls go: the emulator, or a proxy in front of it.
    endpoint: String,
    account: String,
}

impl Emulator {
    /// The emulator named by `FLEETKEEPER_EMULATOR_URL`, in a fresh account.
    /// Panics with a clear message when it is missing: emulator tests fail
    /// loudly, never skip.
    pub fn from_env() -> Self {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => {
                let digits = uuid::Uuid::new_v4().as_u128() % 900_000_000_000 + 100_000_000_000;
                let url = url.trim_end_matches('/').to_owned();
                Emulator { endpoint: url.clone(), url, account: digits.to_string() }
            }
            _ => panic!("{URL_VAR} is not set: run the emulator tests through `make test`, which starts the emulator"),
        }
    }

    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same account, with AWS calls (SDK configurations and the functions'
    /// `AWS_ENDPOINT_URL`) sent to `endpoint`, e.g. a fault proxy in front of
    /// the emulator; the emulator's own control calls still go straight to it.
    pub fn behind(&self, endpoint: &str) -> Emulator {
        Emulator { endpoint: endpoint.trim_end_matches('/').to_owned(), ..self.clone() }
    }

    /// This handle's AWS account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The access key of `caller` in this account.
    pub fn key(&self, caller: Caller) -> String {
        format!("FK{}{}", self.account, caller.tag())
    }

    /// An SDK configuration aimed at the emulator as `caller`: dummy
    /// credentials (moto routes requests by their SigV4 scope) and one
    /// attempt per call (moto answers unimplemented operations with
    /// retryable 500s).
    pub async fn sdk_config_as(&self, caller: Caller) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(self.key(caller), "testing", None, None, "emulator"))
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }

    /// The test's SDK configuration.
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_as(Caller::Test).await
    }

    /// Every fleetkeeper client, aimed at the emulator, as the test.
    pub async fn clients(&self) -> Clients {
        Clients::new(&self.sdk_config().await)
    }

    /// Every fleetkeeper client, as function `component`.
    pub async fn clients_for(&self, component: Component) -> Clients {
        Clients::new(&self.sdk_config_as(Caller::Function(component)).await)
    }

    /// The environment a function process needs to reach the emulator through
    /// the standard `aws-config` chain (no code branch in the function), with
    /// the function's own access key.
    pub fn aws_env_for(&self, component: Component) -> Vec<(String, String)> {
        self.aws_env_as(Caller::Function(component))
    }

    /// The same for any caller (the operator CLI's process).
    pub fn aws_env_as(&self, caller: Caller) -> Vec<(String, String)> {
        let key = self.key(caller);
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Every (caller tag, signing name, operation) the emulator served since
    /// it started, across accounts (the permission check's input).
    pub async fn seen_calls(&self) -> Vec<(String, String, String)> {
        let seen = self.control(Method::GET, "calls/seen", None).await;
        let rows = seen["seen"].as_array().cloned().unwrap_or_default();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        rows.iter().map(|r| (text(&r["tag"]), text(&r["service"]), text(&r["operation"]))).collect()
    }

    pub(crate) async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}/moto-api/fleetkeeper/{path}{sep}account={}", self.url, self.account);
        let body = body.map(|mut b| {
            if let Some(map) = b.as_object_mut() {
                map.insert("account".into(), json!(self.account));
            }
            b
        });
        let (status, value) =
            http::request(method, &url, body.as_ref()).await.unwrap_or_else(|e| panic!("control {path}: {e}"));
        assert_eq!(status, 200, "control {path}: {value}");
        value
    }

    /// The AWS calls `caller` made in this account, by `(service, operation)`
    /// (errors included).
    pub async fn calls(&self, caller: Caller) -> Calls {
        let v = self.control(Method::GET, &format!("calls?key={}", self.key(caller)), None).await;
        let mut calls = Calls::default();
        for row in v["calls"].as_array().into_iter().flatten() {
            let op = (row["service"].as_str().unwrap_or_default(), row["operation"].as_str().unwrap_or_default());
            let n = row["count"].as_u64().unwrap_or_default();
            *calls.0.entry((op.0.to_owned(), op.1.to_owned())).or_default() += n;
            if !row["status"].as_str().unwrap_or_default().starts_with('2') {
                *calls.1.entry((op.0.to_owned(), op.1.to_owned())).or_default() += n;
            }
        }
        calls
    }

    /// Forgets what `caller` called so far (counting starts again).
    pub async fn forget_calls(&self, caller: Caller) {
        self.control(Method::POST, "calls/forget", Some(json!({"key": self.key(caller)}))).await;
    }

    /// The account's clock offset on the emulator, ms.
    pub async fn clock_offset_ms(&self) -> u64 {
        self.control(Method::GET, "clock", None).await["offset_ms"].as_u64().unwrap_or_default()
    }

    /// Moves the account's emulator clock forward; returns the new offset, ms.
    pub async fn advance_clock(&self, by: Duration) -> u64 {
        let v = self.control(Method::POST, "clock", Some(json!({"advance_ms": by.as_millis() as u64}))).await;
        v["offset_ms"].as_u64().unwrap_or_default()
    }

    /// The lifecycle events AWS would have sent for `group`, oldest first.
    pub async fn lifecycle_events(&self, group: &str) -> Vec<Value> {
        let v = self.control(Method::GET, &format!("autoscaling/lifecycle-events?group={group}"), None).await;
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Pending lifecycle actions and the completion/heartbeat history of `group`.
    pub async fn lifecycle_actions(&self, group: &str) -> Value {
        self.control(Method::GET, &format!("autoscaling/lifecycle-actions?group={group}"), None).await
    }

    /// Sets the account's readiness timelines, seconds on its clock
    /// (`pending_s`, `agent_s`, `mount_target_s`, `healthy_s`, `not_found_s`;
    /// see `fleetkeeper_moto/readiness.py`).
    pub async fn set_readiness(&self, settings: Value) {
        self.control(Method::POST, "readiness", Some(settings)).await;
    }

    /// A warm-pool instance is terminated (the pool shrinks).
    pub async fn warm_pool_terminate(&self, instance_id: &str) -> String {
        let v = self
            .control(Method::POST, "autoscaling/warm-pool/terminate", Some(json!({"instance_id": instance_id})))
            .await;
        v["lifecycle_state"].as_str().unwrap_or_default().to_owned()
    }

    /// Launches `count` instances into `group`'s warm pool.
    pub async fn warm_pool_launch(&self, group: &str, count: u32) -> Vec<String> {
        let v = self
            .control(Method::POST, "autoscaling/warm-pool/launch", Some(json!({"group": group, "count": count})))
            .await;
        v["instance_ids"].as_array().into_iter().flatten().filter_map(|i| i.as_str().map(str::to_owned)).collect()
    }

    /// The group scales out by one, taking `instance_id` from its warm pool.
    pub async fn warm_pool_promote(&self, instance_id: &str) -> String {
        let v = self
            .control(Method::POST, "autoscaling/warm-pool/promote", Some(json!({"instance_id": instance_id})))
            .await;
        v["lifecycle_state"].as_str().unwrap_or_default().to_owned()
    }

    /// Sets an instance's SSM agent: `Some("Online")`, `Some("ConnectionLost")`,
    /// or `None` for "not registered".
    pub async fn set_agent(&self, instance_id: &str, ping_status: Option<&str>) {
        self.control(
            Method::POST,
            "ssm/managed-instance",
            Some(json!({"instance_id": instance_id, "ping_status": ping_status})),
        )
        .await;
    }

    /// Sets an instance's SSM agent with its version (`3.1.0.0`: too old to
    /// export `ENV_VAR` parameters).
    pub async fn set_agent_version(&self, instance_id: &str, ping_status: &str, version: &str) {
        self.control(
            Method::POST,
            "ssm/managed-instance",
            Some(json!({"instance_id": instance_id, "ping_status": ping_status, "agent_version": version})),
        )
        .await;
    }

    /// Decides how an invocation ends (`instance_id: None`: every invocation).
    pub async fn set_invocation(&self, command_id: &str, instance_id: Option<&str>, status: &str) {
        self.set_invocation_output(command_id, instance_id, status, "").await;
    }

    /// The same, with the output the instance printed.
    pub async fn set_invocation_output(&self, command_id: &str, instance_id: Option<&str>, status: &str, stdout: &str) {
        self.control(
            Method::POST,
            "ssm/invocation-status",
            Some(json!({"command_id": command_id, "instance_id": instance_id, "status": status, "stdout": stdout})),
        )
        .await;
    }
}

/// AWS calls by `(service, operation)`, as the emulator recorded them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls(pub BTreeMap<(String, String), u64>, pub BTreeMap<(String, String), u64>);

impl Calls {
    /// How many calls of `operation` (any service).
    pub fn of(&self, operation: &str) -> u64 {
        self.0.iter().filter(|((_, op), _)| op == operation).map(|(_, n)| n).sum()
    }

    /// How many calls in all.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// How many answered with an error.
    pub fn errors(&self) -> u64 {
        self.1.values().sum()
    }

    /// The operations called, as `service:Operation`.
    pub fn operations(&self) -> Vec<String> {
        self.0.keys().map(|(s, o)| format!("{s}:{o}")).collect()
    }
}

/// The test clock: the account's emulator clock and the handlers' clock
/// move together, so timeouts, readiness delays and lease expiry pass in a
/// test without waiting. `sleep` moves both forward at once. Real bootstraps
/// follow it too: the clock file holds the offset, which the clock shim
/// (`LD_PRELOAD`, see `tests/clock-shim`) adds to their wall clock.
#[derive(Debug, Clone)]
pub struct TestClock {
    emulator: Emulator,
    offset_ms: Arc<AtomicU64>,
    file: Arc<ClockFile>,
}

/// The file a shimmed process reads its clock offset from.
#[derive(Debug)]
struct ClockFile(PathBuf);

impl ClockFile {
    fn write(&self, offset_ms: u64) {
        // One 8-byte write in place: a reader sees the old or the new offset.
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&self.0);
        let written = file.and_then(|f| f.write_all_at(&(offset_ms as i64).to_le_bytes(), 0));
        written.unwrap_or_else(|e| panic!("clock file {}: {e}", self.0.display()));
    }
}

impl Drop for ClockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl TestClock {
    /// The clock of `emulator`'s account (starts at wall time).
    pub async fn new(emulator: &Emulator) -> Self {
        let offset = emulator.clock_offset_ms().await;
        let path = std::env::temp_dir().join(format!("fk-clock-{}", uuid::Uuid::new_v4().simple()));
        let file = ClockFile(path);
        file.write(offset);
        TestClock { emulator: emulator.clone(), offset_ms: Arc::new(AtomicU64::new(offset)), file: Arc::new(file) }
    }

    /// Moves both clocks forward by `by`.
    pub async fn advance(&self, by: Duration) {
        let offset = self.emulator.advance_clock(by).await;
        self.offset_ms.store(offset, Ordering::SeqCst);
        self.file.write(offset);
    }

    /// The environment that puts a process on this clock: the shim preloaded,
    /// reading this clock's file.
    pub fn process_env(&self) -> Vec<(String, String)> {
        let shim = crate::runtime::binary_path("libfk_clock_shim.so");
        vec![
            ("LD_PRELOAD".to_owned(), shim.display().to_string()),
            ("FK_CLOCK_FILE".to_owned(), self.file.0.display().to_string()),
        ]
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(self.advance(duration))
    }
}

/// A unique, short resource name (`fk-<prefix>-<10 hex>`), so tests never
/// need a global reset.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("fk-{prefix}-{}", &id[..10])
}
