//! Where the CLI's configuration comes from: the configuration contract the
//! functions read (`FLEET_*`), from the environment, from a deployed
//! function's environment (`--env-file`, `--from-function`), and `--set`
//! flags, in rising precedence. The same `Config` validation as the
//! functions, for the component a verb acts as.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use fleetkeeper::{Clients, Component, Config, ConfigError};
use serde_json::Value;

use crate::error::CliError;

/// How the AWS clients are built.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// `--region`.
    pub region: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--call-timeout`: the longest one AWS call (all its attempts) takes.
    pub call_timeout: Duration,
}

/// The configuration's sources, merged.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// From `--env-file` or `--from-function`.
    pub file: BTreeMap<String, String>,
    /// `--set VAR=value`, in order (the last one wins).
    pub sets: Vec<(String, String)>,
}

impl Sources {
    /// A variable's value: `--set`, then the deployed environment, then
    /// the process's environment.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.sets
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| self.file.get(name).cloned())
            .or_else(|| std::env::var(name).ok())
    }

    /// The configuration, validated as `component` would validate it.
    pub fn config(&self, component: Component) -> Result<Config, ConfigError> {
        Config::from_lookup(component, |name| self.lookup(name))
    }
}

/// Parses `--set VAR=value`.
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if valid_name(k.trim()) => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected VAR=value with VAR a variable name, got {s:?}")),
    }
}

fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// Reads an environment file: JSON (a function's `Environment.Variables`,
/// its `Environment`, or `get-function-configuration`'s whole answer) or
/// `KEY=value` lines (`#` comments, optional `export ` and quotes).
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let v: Value = serde_json::from_str(trimmed).map_err(|e| format!("not valid JSON: {e}"))?;
        let vars = v
            .pointer("/Environment/Variables")
            .or_else(|| v.pointer("/Variables"))
            .unwrap_or(&v)
            .as_object()
            .ok_or("the JSON is not an object of variables")?;
        return vars
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(n) => Ok((k.clone(), n.to_string())),
                Value::Bool(b) => Ok((k.clone(), b.to_string())),
                other => Err(format!("{k}: expected a string, got {other}")),
            })
            .collect();
    }
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=value", n + 1));
        };
        let k = k.trim();
        if !valid_name(k) {
            return Err(format!("line {}: {k:?} is not a variable name", n + 1));
        }
        let v = v.trim();
        let v = match (v.chars().next(), v.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(e)) if v.len() >= 2 && q == e => &v[1..v.len() - 1],
            _ => v,
        };
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// The SDK configuration: the standard chain (`AWS_ENDPOINT_URL` included),
/// with `--region` and `--profile`, every call bounded so a hung connection
/// never freezes `--watch` or `--wait`.
pub async fn sdk_config(o: &AwsOptions) -> SdkConfig {
    let attempt = (o.call_timeout / 3).max(Duration::from_secs(1));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3_100).min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(o.call_timeout)
        .build();
    // One HTTPS client for every SDK client, as the functions build theirs.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .http_client(fleetkeeper::clients::https_client());
    if let Some(p) = &o.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &o.region {
        loader = loader.region(Region::new(r.clone()));
    }
    loader.load().await
}

/// Every client the CLI uses.
#[derive(Debug, Clone)]
pub struct Aws {
    /// The functions' clients.
    pub clients: Clients,
    /// Lambda: `--via-lambda`, `--from-function`, doctor.
    pub lambda: aws_sdk_lambda::Client,
    /// EventBridge: doctor's rule checks.
    pub events: aws_sdk_eventbridge::Client,
}

impl Aws {
    /// Builds them from one SDK configuration. Lambda's client makes one
    /// attempt per call and waits as long as a function may run: a
    /// synchronous `Invoke` retried after a client-side timeout would run
    /// the function (and add demand) again.
    pub fn new(sdk: &SdkConfig) -> Self {
        // (Every value set: the builder's own timeouts would otherwise keep
        // the shared per-attempt bound.)
        let invoke_bound = Duration::from_secs(16 * 60);
        let once = aws_sdk_lambda::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(3_100))
                    .read_timeout(invoke_bound)
                    .operation_attempt_timeout(invoke_bound)
                    .operation_timeout(invoke_bound)
                    .build(),
            )
            .build();
        Aws {
            clients: Clients::new(sdk),
            lambda: aws_sdk_lambda::Client::from_conf(once),
            events: aws_sdk_eventbridge::Client::new(sdk),
        }
    }
}

/// A deployed function's environment (`GetFunctionConfiguration`).
pub async fn function_environment(
    lambda: &aws_sdk_lambda::Client,
    name: &str,
) -> Result<BTreeMap<String, String>, CliError> {
    let out = lambda
        .get_function_configuration()
        .function_name(name)
        .send()
        .await
        .map_err(|e| CliError::aws("lambda:GetFunctionConfiguration", e))?;
    let vars = out.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
    Ok(vars.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lambda_waits_as_long_as_a_function_runs_and_never_retries() {
        let o = AwsOptions { call_timeout: Duration::from_secs(30), ..AwsOptions::default() };
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(o.call_timeout / 3)
                    .operation_timeout(o.call_timeout)
                    .build(),
            )
            .build();
        let aws = Aws::new(&sdk);
        let conf = aws.lambda.config();
        let timeouts = conf.timeout_config().expect("timeouts");
        assert_eq!(timeouts.operation_attempt_timeout(), Some(Duration::from_secs(16 * 60)));
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(16 * 60)));
        assert_eq!(conf.retry_config().map(|r| r.max_attempts()), Some(1));
        // The other clients keep the CLI's bound.
        let ssm = aws.clients.ssm.config().timeout_config().and_then(|t| t.operation_attempt_timeout());
        assert_eq!(ssm, Some(Duration::from_secs(10)));
    }

    #[test]
    fn env_files_are_read_as_json_in_three_shapes_or_as_lines() {
        let vars = r#"{"FLEET_NAME": "web", "FLEET_LEASE_SECONDS": 900}"#;
        let whole = r#"{"FunctionName": "f", "Environment": {"Variables": {"FLEET_NAME": "web"}}}"#;
        let env = r#"{"Variables": {"FLEET_NAME": "web"}}"#;
        for text in [vars, whole, env] {
            assert_eq!(parse_env_file(text).expect("parses").get("FLEET_NAME").map(String::as_str), Some("web"));
        }
        assert_eq!(parse_env_file(vars).expect("parses")["FLEET_LEASE_SECONDS"], "900");
        let lines = "# fleet\nexport FLEET_NAME=\"web\"\n\nFLEET_ASG_NAMES=a,b\nFLEET_SYNC_EXCLUDES='*.log'\n";
        let got = parse_env_file(lines).expect("parses");
        assert_eq!((got["FLEET_NAME"].as_str(), got["FLEET_ASG_NAMES"].as_str()), ("web", "a,b"));
        assert_eq!(got["FLEET_SYNC_EXCLUDES"], "*.log");
    }

    #[test]
    fn bad_env_files_and_sets_say_where() {
        assert_eq!(parse_env_file("FLEET_NAME=web\nnonsense\n"), Err("line 2: expected KEY=value".into()));
        assert!(parse_env_file("1X=3").is_err_and(|e| e.contains("not a variable name")));
        assert!(parse_env_file(r#"{"FLEET_NAME": ["a"]}"#).is_err_and(|e| e.contains("FLEET_NAME")));
        assert!(parse_env_file("[1]").is_err());
        assert_eq!(parse_set("FLEET_NAME=a=b"), Ok(("FLEET_NAME".into(), "a=b".into())));
        assert!(parse_set("=x").is_err());
        assert!(parse_set("no-equals").is_err());
    }

    #[test]
    fn sets_override_the_deployed_environment_which_overrides_the_process() {
        let var = "FLEETKEEPER_CLI_TEST_PRECEDENCE";
        let mut s = Sources::default();
        assert_eq!(s.lookup(var), None);
        s.file.insert(var.into(), "file".into());
        assert_eq!(s.lookup(var).as_deref(), Some("file"));
        s.sets.push((var.into(), "one".into()));
        s.sets.push((var.into(), "two".into()));
        assert_eq!(s.lookup(var).as_deref(), Some("two"));
    }
}
