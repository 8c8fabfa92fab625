//! The patched moto server started by `make test` / `make demo`.

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_dynamodb::config::Credentials;
use fleetkeeper::Clients;
use hyper::Method;
use serde_json::{Value, json};

use crate::http;

/// The environment variable holding the emulator's URL.
pub const URL_VAR: &str = "FLEETKEEPER_EMULATOR_URL";

/// The region every test and the demo use.
pub const REGION: &str = "us-east-1";

/// A handle on the running emulator.
#[derive(Debug, Clone)]
pub struct Emulator {
    url: String,
}

impl Emulator {
    /// The emulator named by `FLEETKEEPER_EMULATOR_URL`. Panics with a clear
    /// message when it is missing: emulator tests fail loudly, never skip.
    pub fn from_env() -> Self {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Emulator { url: url.trim_end_matches('/').to_owned() },
            _ => panic!("{URL_VAR} is not set: run the emulator tests through `make test`, which starts the emulator"),
        }
    }

    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An SDK configuration aimed at the emulator: dummy credentials (moto
    /// routes requests by their SigV4 scope) and one attempt per call (moto
    /// answers unimplemented operations with retryable 500s).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "emulator"))
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .load()
            .await
    }

    /// Every fleetkeeper client, aimed at the emulator.
    pub async fn clients(&self) -> Clients {
        Clients::new(&self.sdk_config().await)
    }

    /// The environment a function process needs to reach the emulator through
    /// the standard `aws-config` chain (no code branch in the function).
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    async fn control(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/moto-api/fleetkeeper/{path}", self.url);
        let (status, value) =
            http::request(method, &url, body.as_ref()).await.unwrap_or_else(|e| panic!("control {path}: {e}"));
        assert_eq!(status, 200, "control {path}: {value}");
        value
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

/// A unique, short resource name (`fk-<prefix>-<10 hex>`), so tests never
/// need a global reset.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("fk-{prefix}-{}", &id[..10])
}
