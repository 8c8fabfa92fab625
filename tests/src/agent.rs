//! A local SSM agent: plays each instance's agent for the emulator. For every
//! invocation SSM (the emulator) delivered (`InProgress`) with the fleet's
//! document, it takes it, runs the document's real script with `sh` the way
//! the agent does (parameters as `SSM_<name>` variables, the document version
//! the command names, fetched from SSM), in that instance's own directory
//! against the emulator's S3 with the AWS CLI from the venv, and ends the
//! invocation with the script's exit status and output. It keeps a timeline
//! of every run per instance, so tests can check that runs never overlapped
//! on one host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hyper::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::Emulator;
use crate::emulator::Caller;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The script of a sync document's content (YAML, as SSM stores it).
pub fn script_of(content: &str) -> String {
    let doc = match yaml_rust2::YamlLoader::load_from_str(content) {
        Ok(mut docs) if !docs.is_empty() => docs.remove(0),
        _ => return String::new(),
    };
    doc["mainSteps"][0]["inputs"]["runCommand"]
        .as_vec()
        .map(|lines| lines.iter().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The script of `infra/sync-document.yaml`.
pub fn document_script() -> String {
    let path = repo_root().join("infra/sync-document.yaml");
    script_of(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// What one run printed.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// The first agent version that exports `interpolationType: ENV_VAR`
/// parameters as `SSM_<name>` variables.
pub const ENV_VAR_AGENT: [u32; 4] = [3, 3, 2746, 0];

/// Whether an agent of version `version` (`3.3.2746.0`) exports ENV_VAR parameters.
pub fn exports_env_vars(version: &str) -> bool {
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    parts.as_slice() >= ENV_VAR_AGENT.as_slice()
}

/// Runs `script` with `parameters` (as SSM passes them) for an instance whose
/// file system is `root`, as the agent (the AWS CLI's access key). An agent
/// older than [`ENV_VAR_AGENT`] does not export the parameters.
pub async fn run_script(
    emulator: &Emulator,
    script: &str,
    root: &Path,
    parameters: &HashMap<String, Vec<String>>,
) -> Run {
    run_script_as(emulator, script, root, parameters, true).await
}

async fn run_script_as(
    emulator: &Emulator,
    script: &str,
    root: &Path,
    parameters: &HashMap<String, Vec<String>>,
    env_vars: bool,
) -> Run {
    let venv_bin = repo_root().join(".venv/bin");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).env_clear();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", venv_bin.display()))
        .env("HOME", root)
        .env("AWS_ENDPOINT_URL", emulator.url())
        .env("AWS_ACCESS_KEY_ID", emulator.key(Caller::Agent))
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    for (name, values) in parameters.iter().filter(|_| env_vars) {
        let mut value = values.join(",");
        if name == "destination" {
            value = format!("{}{value}", root.display());
        }
        cmd.env(format!("SSM_{name}"), value);
    }
    let out = cmd.output().await.unwrap_or_else(|e| panic!("sh: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One invocation the agent ran.
#[derive(Debug, Clone)]
pub struct AgentRun {
    /// The instance.
    pub instance_id: String,
    /// The command.
    pub command_id: String,
    /// The `generation` parameter it was sent.
    pub generation: String,
    /// When it started and ended, ms since the agent was created (wall time).
    pub started_ms: u64,
    /// When it ended.
    pub ended_ms: u64,
    /// What it printed and how it exited.
    pub run: Run,
}

impl AgentRun {
    /// Whether the document succeeded.
    pub fn ok(&self) -> bool {
        self.run.code == 0
    }
}

/// The local agent of every instance of one account.
pub struct Agent {
    emulator: Emulator,
    root: PathBuf,
    document: String,
    ssm: aws_sdk_ssm::Client,
    scripts: HashMap<(String, Option<String>), String>,
    epoch: Instant,
    /// Every run, in the order they ended.
    pub runs: Vec<AgentRun>,
}

impl Agent {
    /// The agent of `emulator`'s instances for document `document`; each
    /// instance's file system is a directory under `root`.
    pub async fn new(emulator: &Emulator, document: &str, root: &Path) -> Self {
        let ssm = aws_sdk_ssm::Client::new(&emulator.sdk_config_as(Caller::Agent).await);
        Agent {
            emulator: emulator.clone(),
            root: root.to_owned(),
            document: document.to_owned(),
            ssm,
            scripts: HashMap::new(),
            epoch: Instant::now(),
            runs: Vec::new(),
        }
    }

    /// The directory that plays `instance_id`'s root file system.
    pub fn instance_root(&self, instance_id: &str) -> PathBuf {
        self.root.join(instance_id)
    }

    /// `destination` as it lies on `instance_id` (under its root).
    pub fn on_instance(&self, instance_id: &str, destination: &str) -> PathBuf {
        self.instance_root(instance_id).join(destination.trim_start_matches('/'))
    }

    /// Runs every invocation delivered and not yet taken, the instances side
    /// by side; returns the runs, and ends each invocation in the emulator.
    pub async fn run_pending(&mut self) -> Vec<AgentRun> {
        let listed =
            self.emulator.control(Method::GET, &format!("ssm/deliveries?document={}", self.document), None).await;
        let mut work = Vec::new();
        for d in listed["deliveries"].as_array().cloned().unwrap_or_default() {
            let (command, instance) = (str_of(&d["command_id"]), str_of(&d["instance_id"]));
            let claim = json!({"command_id": command, "instance_id": instance});
            if self.emulator.control(Method::POST, "ssm/claim", Some(claim)).await["claimed"] != true {
                continue;
            }
            let version = d["document_version"].as_str().map(str::to_owned);
            let script = self.script(&str_of(&d["document_name"]), version).await;
            let parameters: HashMap<String, Vec<String>> =
                serde_json::from_value(d["parameters"].clone()).unwrap_or_default();
            work.push((command, instance, script, parameters));
        }
        let versions = self.agent_versions(work.iter().map(|w| w.1.clone()).collect()).await;
        let epoch = self.epoch;
        let runs = futures::future::join_all(work.into_iter().map(|(command, instance, script, parameters)| {
            let emulator = self.emulator.clone();
            let root = self.instance_root(&instance);
            let env_vars = versions.get(&instance).is_none_or(|v| exports_env_vars(v));
            async move {
                std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
                let started_ms = epoch.elapsed().as_millis() as u64;
                let run = run_script_as(&emulator, &script, &root, &parameters, env_vars).await;
                let ended_ms = epoch.elapsed().as_millis() as u64;
                let status = if run.code == 0 { "Success" } else { "Failed" };
                let body = json!({
                    "command_id": command, "instance_id": instance, "status": status, "source": "agent",
                    "response_code": run.code, "stdout": tail(&run.stdout), "stderr": tail(&run.stderr),
                });
                emulator.control(Method::POST, "ssm/invocation-status", Some(body)).await;
                let generation = parameters.get("generation").map(|g| g.join(",")).unwrap_or_default();
                AgentRun { instance_id: instance, command_id: command, generation, started_ms, ended_ms, run }
            }
        }))
        .await;
        self.runs.extend(runs.iter().cloned());
        runs
    }

    /// Pairs of runs that overlapped in time on one instance.
    pub fn overlaps(&self) -> Vec<(AgentRun, AgentRun)> {
        let mut out = Vec::new();
        for (i, a) in self.runs.iter().enumerate() {
            for b in &self.runs[i + 1..] {
                if a.instance_id == b.instance_id && a.started_ms < b.ended_ms && b.started_ms < a.ended_ms {
                    out.push((a.clone(), b.clone()));
                }
            }
        }
        out
    }

    /// Each instance's agent version, as SSM lists it.
    async fn agent_versions(&self, ids: Vec<String>) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for part in ids.chunks(50) {
            let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(part.to_vec()))
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            let listed = self.ssm.describe_instance_information().filters(filter).send().await;
            for info in listed.map(|o| o.instance_information_list().to_vec()).unwrap_or_default() {
                if let (Some(id), Some(v)) = (info.instance_id(), info.agent_version()) {
                    out.insert(id.to_owned(), v.to_owned());
                }
            }
        }
        out
    }

    async fn script(&mut self, name: &str, version: Option<String>) -> String {
        let key = (name.to_owned(), version.clone());
        if let Some(s) = self.scripts.get(&key) {
            return s.clone();
        }
        let out = self
            .ssm
            .get_document()
            .name(name)
            .set_document_version(version)
            .send()
            .await
            .unwrap_or_else(|e| panic!("the agent cannot read document {name}: {e:?}"));
        let script = script_of(out.content().unwrap_or_default());
        self.scripts.insert(key, script.clone());
        script
    }
}

/// SSM keeps the first 24,000 characters of an invocation's output.
fn tail(s: &str) -> String {
    s.chars().take(24_000).collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}
