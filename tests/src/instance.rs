//! A stand-in for an instance's SSM agent: runs the sync document's real
//! script with `sh`, the way the agent does (parameters as `SSM_<name>`
//! variables), against the emulator's S3 with the AWS CLI from the venv.
//! The destination is moved under a local directory, since this machine is
//! not the instance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::Emulator;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The script of `infra/sync-document.yaml`.
pub fn document_script() -> String {
    let path = repo_root().join("infra/sync-document.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{e}")).remove(0);
    doc["mainSteps"][0]["inputs"]["runCommand"]
        .as_vec()
        .map(|lines| lines.iter().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
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

/// Runs the document with `parameters` (as SSM would pass them) for an
/// instance whose file system is `root`.
pub async fn run_document(emulator: &Emulator, root: &Path, parameters: &HashMap<String, Vec<String>>) -> Run {
    let venv_bin = repo_root().join(".venv/bin");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(document_script()).env_clear();
    cmd.env("PATH", format!("{}:/usr/bin:/bin", venv_bin.display()))
        .env("HOME", root)
        .env("AWS_ENDPOINT_URL", emulator.url())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    for (name, values) in parameters {
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
