//! Runs the operator CLI (`target/debug/fleetkeeper`) as a process against
//! the emulator, as the operator's caller (`OPERAT`: the permission check
//! holds its calls to the operator policy), on the test clock when given
//! one, with the fleet's configuration in its environment.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::emulator::{Caller, Emulator, TestClock};
use crate::runtime::binary_path;

/// How one run ended.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Ran {
    /// stdout as JSON (`--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// The CLI for one fleet.
#[derive(Clone)]
pub struct Cli {
    env: Vec<(String, String)>,
    /// The read-only operator's key (`status`, `doctor` run as it).
    read_only_key: String,
}

impl Cli {
    /// The CLI with `fleet_env` (the functions' configuration), as the
    /// operator, on `clock` when given.
    pub fn new(emulator: &Emulator, fleet_env: &[(String, String)], clock: Option<&TestClock>) -> Self {
        let mut env: Vec<(String, String)> =
            fleet_env.iter().filter(|(k, _)| k.starts_with("FLEET_")).cloned().collect();
        env.extend(emulator.aws_env_as(Caller::Operator));
        env.extend(clock.iter().flat_map(|c| c.process_env()));
        env.push(("NO_COLOR".into(), "1".into()));
        env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
        Cli { env, read_only_key: emulator.key(Caller::OperatorReadOnly) }
    }

    /// Sets (or replaces) one variable of its environment.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// `status` and `doctor` run as the read-only operator: the permission
    /// check holds them to the read-only policy.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary_path("fleetkeeper"));
        c.args(args).env_clear().envs(self.env.iter().cloned()).stdin(Stdio::null()).kill_on_drop(true);
        if args.iter().any(|a| matches!(*a, "status" | "doctor")) {
            c.env("AWS_ACCESS_KEY_ID", &self.read_only_key);
        }
        c
    }

    /// Runs it to the end.
    pub async fn run(&self, args: &[&str]) -> Ran {
        let out = self.command(args).output().await.unwrap_or_else(|e| panic!("fleetkeeper {args:?}: {e}"));
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts it (a `--wait` the test drives the fleet under).
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap_or_else(|e| panic!("fleetkeeper {args:?}: {e}"))
    }

    /// Waits for a started run.
    pub async fn finish(child: Child) -> Ran {
        let out = child.wait_with_output().await.unwrap_or_else(|e| panic!("fleetkeeper: {e}"));
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
