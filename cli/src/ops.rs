//! The verbs that act: `sync`, `rollback`, `resume`, `unlock`, `reconcile`.
//! Each takes the same path as the functions (the shared library's
//! transitions, conditional writes and fencing), or invokes the deployed
//! function (`--via-lambda`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use fleetkeeper::lifecycle::gate::{Gate, GateSettings};
use fleetkeeper::lifecycle::reconcile::ReconcileReport;
use fleetkeeper::mount_targets::{self, Target};
use fleetkeeper::store::Table;
use fleetkeeper::sync::run::demand::{Outcome, Request};
use fleetkeeper::sync::run::{StartOutcome, SyncContext, SyncFunction, Trigger};
use fleetkeeper::sync::state::{MAX_ATTEMPTS, Op, WaveEnd};
use fleetkeeper::sync::store::{Applied, FleetStore};
use fleetkeeper::{Component, Deps};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::settings::Aws;

/// How long a CLI sender may send before it pauses the wave for the
/// functions to resume (its lease runs that long).
const SEND_BUDGET: Duration = Duration::from_secs(240);

/// The context a CLI request runs in: a sender whose "deadline" is
/// [`SEND_BUDGET`] from now (a CLI stopped mid-send leaves a wave the next
/// sweep resumes once that lease ends).
pub fn context(f: &SyncFunction) -> SyncContext<'_, Table> {
    let now = f.deps.clock.now_ms();
    let deadline = now + SEND_BUDGET.as_millis() as u64;
    f.context(deadline.saturating_sub(15_000), deadline)
}

/// What `sync`, `rollback` and `resume` report.
#[derive(Debug, Serialize)]
pub struct Requested {
    /// `sync`, `rollback`, `resume`.
    pub action: &'static str,
    /// The generation this request is about (its demand, or the
    /// rollback's), when known.
    pub generation: Option<u64>,
    /// What became of it.
    pub outcome: Value,
    /// What the operator should know.
    pub warnings: Vec<String>,
    /// `--wait`: how it ended.
    pub waited: Option<Waited>,
}

/// A manual sync through the shared path.
pub async fn sync(f: &SyncFunction, reason: &str, allow_shrink: bool) -> Result<Requested, CliError> {
    let out: Outcome = context(f).request(&Request::manual(reason, allow_shrink)).await.map_err(CliError::fleet)?;
    let pinned = matches!(out.wave, StartOutcome::Pinned { .. });
    let mut warnings = Vec::new();
    if pinned {
        warnings.push(
            "the fleet is pinned by a rollback: the demand is counted, no wave runs until `fleetkeeper resume`".into(),
        );
    }
    Ok(Requested {
        action: "sync",
        generation: out.requested_gen,
        outcome: serde_json::to_value(&out).unwrap_or_default(),
        warnings,
        waited: None,
    })
}

/// Whether a request's outcome is a pinned fleet's (counted, not run).
pub fn pinned(outcome: &Value) -> bool {
    let wave = outcome.get("wave").unwrap_or(outcome);
    wave.get("outcome").and_then(Value::as_str) == Some("pinned")
}

/// A rollback through the shared path.
pub async fn rollback(f: &SyncFunction, to: &str, reason: &str) -> Result<Requested, CliError> {
    let request = format!("cli-{}", fleetkeeper::ssm_document::new_epoch());
    let (outcome, warnings) = context(f).rollback(to, reason, &request).await.map_err(CliError::fleet)?;
    let generation = f.store.load().await.map_err(CliError::fleet)?.and_then(|i| i.pin).map(|p| p.manifest.generation);
    Ok(Requested {
        action: "rollback",
        generation,
        outcome: serde_json::to_value(&outcome).unwrap_or_default(),
        warnings,
        waited: None,
    })
}

/// A resume through the shared path.
pub async fn resume(f: &SyncFunction, reason: &str) -> Result<Requested, CliError> {
    let outcome = context(f).resume_pinned(reason).await.map_err(CliError::fleet)?;
    let generation = f.store.load().await.map_err(CliError::fleet)?.map(|i| i.requested_gen);
    Ok(Requested {
        action: "resume",
        generation,
        outcome: serde_json::to_value(&outcome).unwrap_or_default(),
        warnings: Vec::new(),
        waited: None,
    })
}

/// Invokes the deployed `codebase-sync` with `payload` and waits for its
/// answer. A function error is returned as refused.
pub async fn via_lambda(
    aws: &Aws,
    function: &str,
    action: &'static str,
    payload: Value,
) -> Result<Requested, CliError> {
    let out = aws
        .lambda
        .invoke()
        .function_name(function)
        .payload(aws_smithy_types::Blob::new(payload.to_string()))
        .send()
        .await
        .map_err(|e| CliError::aws("lambda:InvokeFunction", e))?;
    let body: Value = out.payload().and_then(|b| serde_json::from_slice(b.as_ref()).ok()).unwrap_or(Value::Null);
    if let Some(kind) = out.function_error() {
        let message = body.get("errorMessage").and_then(Value::as_str).unwrap_or("no message");
        return Err(CliError::Refused(format!("{function} answered a function error ({kind}): {message}")));
    }
    let generation = body
        .get("requested_gen")
        .and_then(Value::as_u64)
        .or_else(|| body.pointer("/wave/target").and_then(Value::as_u64));
    let warnings = body
        .get("warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok(Requested { action, generation, outcome: body, warnings, waited: None })
}

/// The payload `codebase-sync` takes for each action.
pub fn payload(action: &str, reason: &str, to: Option<&str>, allow_shrink: bool) -> Value {
    let mut p = json!({"action": action, "reason": reason});
    if let Some(to) = to {
        p["to"] = json!(to);
    }
    if allow_shrink {
        p["allow_shrink"] = json!(true);
    }
    p
}

/// How a `--wait` ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "ended", rename_all = "snake_case")]
pub enum Waited {
    /// Every instance of a successful wave has the generation.
    Synced {
        /// `completed_gen`.
        completed: u64,
    },
    /// It failed as many times as the sync retries: held for new demand.
    Failed {
        /// The generation.
        generation: u64,
        /// Its failed waves.
        attempts: u32,
    },
    /// The instances' shrink guard refused the release.
    Refused {
        /// The generation.
        generation: u64,
    },
    /// A rollback pinned the fleet first.
    Pinned {
        /// The release.
        release: String,
    },
    /// `--wait-timeout` passed first.
    TimedOut {
        /// `completed_gen` then.
        completed: u64,
    },
}

impl Waited {
    /// Whether the fleet got what was asked.
    pub fn ok(&self) -> bool {
        matches!(self, Waited::Synced { .. })
    }
}

/// One look at whether `generation` is on the fleet: `None` while it runs.
/// `pinned_ok`: a rollback waits for its own pin, which holds.
pub fn look(item: &fleetkeeper::sync::state::FleetItem, generation: u64, pinned_ok: bool) -> Option<Waited> {
    if item.completed_gen >= generation {
        return Some(Waited::Synced { completed: item.completed_gen });
    }
    if item.wave.is_some() {
        return None;
    }
    if item.refused_gen >= generation {
        return Some(Waited::Refused { generation: item.refused_gen });
    }
    if item.failed_gen >= generation && item.failed_attempts >= MAX_ATTEMPTS {
        return Some(Waited::Failed { generation: item.failed_gen, attempts: item.failed_attempts });
    }
    match &item.pin {
        Some(p) if !pinned_ok => Some(Waited::Pinned { release: p.release.clone() }),
        _ => None,
    }
}

/// Frees the lease of the running wave. An expired lease is settled the
/// way the sweep settles it (finished from its commands' results, or
/// resumed when its sending stopped). A live one only with `force`: its
/// running commands are cancelled, then the lease is freed on condition
/// that the same wave (owner and generation) still holds it, and any
/// command found after that is cancelled too. Demand stays: the next wave
/// covers the generation.
pub async fn unlock(f: &SyncFunction, force: bool, confirm: bool, reason: &str) -> Result<Value, CliError> {
    let item = f.store.load().await.map_err(CliError::fleet)?.unwrap_or_default();
    let Some(wave) = item.wave.clone() else {
        return Ok(json!({"unlocked": false, "why": "no wave holds the lease"}));
    };
    let now = f.deps.clock.now_ms();
    let cx = context(f);
    if wave.lease_expires_at < now {
        let settled = cx.settle(Trigger::Sweep).await.map_err(CliError::fleet)?;
        return Ok(
            json!({"unlocked": true, "wave_id": wave.id, "generation": wave.target, "lease": "expired", "settled": settled}),
        );
    }
    if !force {
        return Err(CliError::Refused(format!(
            "wave {} (generation {}) holds a live lease until {} ms from now; `--force` cancels its commands and frees it",
            wave.id,
            wave.target,
            wave.lease_expires_at - now
        )));
    }
    if !confirm {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage("unlock --force: confirm with --yes (no terminal to ask on)".into()));
        }
        eprint!(
            "Cancel the running commands of wave {} (generation {}) and free its lease? [y/N] ",
            wave.id, wave.target
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::Refused("not confirmed: nothing was done".into()));
        }
    }
    let mut cancelled = cancel_running(f, &cx, &wave).await?;
    match f.store.apply(&Op::Finish { wave_id: wave.id.clone(), end: WaveEnd::Abandoned }).await {
        Ok(Applied::Won(_)) => {}
        Ok(Applied::Lost(r)) => {
            return Err(CliError::Refused(format!(
                "the lease moved on ({r:?}): wave {} no longer holds it; cancelled {cancelled:?}",
                wave.id
            )));
        }
        Err(e) => return Err(CliError::fleet(e)),
    }
    // A sender that was mid-chunk may have sent one more: cancel it too.
    let mut freed = wave.clone();
    freed.sent = false;
    cancelled.extend(cancel_running(f, &cx, &freed).await?);
    cancelled.sort();
    cancelled.dedup();
    if let Ok(Some(mut record)) = f.store.wave(&wave.id).await {
        record.end = Some(WaveEnd::Abandoned);
        record.finished_at = Some(f.deps.clock.now_ms());
        record.blame = Some(format!("unlocked by an operator (--force): {reason}"));
        f.store.put_wave(&record).await.map_err(CliError::fleet)?;
    }
    Ok(json!({
        "unlocked": true,
        "wave_id": wave.id,
        "generation": wave.target,
        "lease": "live",
        "cancelled_commands": cancelled,
        "demand": "kept: the next wave covers the generation",
    }))
}

async fn cancel_running(
    f: &SyncFunction,
    cx: &SyncContext<'_, Table>,
    wave: &fleetkeeper::sync::state::Wave,
) -> Result<Vec<String>, CliError> {
    let mut cancelled = Vec::new();
    for c in cx.wave_commands(wave).await.map_err(CliError::fleet)? {
        if c.status.is_terminal() {
            continue;
        }
        f.deps
            .clients
            .ssm
            .cancel_command()
            .command_id(&c.command_id)
            .send()
            .await
            .map_err(|e| CliError::aws("ssm:CancelCommand", e))?;
        cancelled.push(c.command_id);
    }
    Ok(cancelled)
}

/// `reconcile lifecycle`: the lifecycle-hook function's reconcile, now.
pub async fn reconcile_lifecycle(deps: &Deps) -> Result<ReconcileReport, CliError> {
    let missing = |var| fleetkeeper::ConfigError::Missing { var, component: Component::LifecycleHook, why: "" };
    let fleet = deps.config.fleet_name.clone().ok_or_else(|| missing(fleetkeeper::config::vars::FLEET_NAME))?;
    let table = deps.config.lock_table.clone().ok_or_else(|| missing(fleetkeeper::config::vars::LOCK_TABLE))?;
    let settings = GateSettings::from_config(&deps.config, &deps.clients.region);
    let store = Table::new(deps.clients.dynamodb.clone(), table, fleet);
    let gate = Gate {
        clients: &deps.clients,
        store: &store,
        settings: &settings,
        clock: deps.clock.as_ref(),
        until: deps.clock.deadline_in(Duration::from_secs(240)),
        cache: Default::default(),
    };
    gate.reconcile().await.map_err(CliError::fleet)
}

/// `reconcile mounts`: the mount-targets function's reconcile, now.
pub async fn reconcile_mounts(deps: &Deps) -> Result<mount_targets::Report, CliError> {
    let Some(target) = Target::from_config(&deps.config) else {
        return Err(CliError::Usage(format!(
            "{} is not set: this fleet has no file system to reconcile",
            fleetkeeper::config::vars::EFS_FILE_SYSTEM_ID
        )));
    };
    mount_targets::reconcile(&deps.clients, deps.clock.as_ref(), &target, None, Duration::from_secs(60))
        .await
        .map_err(CliError::fleet)
}
