//! The verbs that act: `sync`, `rollback`, `resume`, `unlock`, `reconcile`.
//! Each takes the same path as the functions (the shared library's
//! transitions, conditional writes and fencing), or invokes the deployed
//! function (`--via-lambda`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use fleetkeeper::lifecycle::gate::{Gate, GateSettings};
use fleetkeeper::lifecycle::reconcile::ReconcileReport;
use fleetkeeper::mount_targets::{self, Target};
use fleetkeeper::ssm_document::run::LISTING_LAG_MS;
use fleetkeeper::store::Table;
use fleetkeeper::sync::run::demand::{Outcome, Request};
use fleetkeeper::sync::run::{SettleOutcome, StartOutcome, SyncContext, SyncError, SyncFunction, Trigger};
use fleetkeeper::sync::state::{FleetItem, Op, Refusal, WaveEnd, start_refusal};
use fleetkeeper::sync::store::{Applied, FleetStore};
use fleetkeeper::{Component, Deps};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::CliError;
use crate::settings::Aws;

/// How long a CLI sender may send before it pauses the wave for the
/// functions to resume (its lease runs that long).
const SEND_BUDGET: Duration = Duration::from_secs(240);

/// How long a sender's `SendCommand` may still be retrying after it last
/// held the lease (three attempts of the functions' default 10 s bound).
const SENDER_ATTEMPTS_MS: u64 = 30_000;

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

/// A refusal of the shared library (a rollback that cannot be done as
/// asked, a write the table refused) exits 1; any other failure 2.
fn refused(e: SyncError) -> CliError {
    match e {
        SyncError::Rollback(_) | SyncError::Refused(_) => CliError::Refused(e.to_string()),
        other => CliError::fleet(other),
    }
}

/// Whether a request's outcome is a pinned fleet's (counted, not run).
pub fn pinned(outcome: &Value) -> bool {
    let wave = outcome.get("wave").unwrap_or(outcome);
    wave.get("outcome").and_then(Value::as_str) == Some("pinned")
}

/// A rollback through the shared path.
pub async fn rollback(f: &SyncFunction, to: &str, reason: &str) -> Result<Requested, CliError> {
    let request = format!("cli-{}", fleetkeeper::ssm_document::new_epoch());
    let (outcome, warnings) = context(f).rollback(to, reason, &request).await.map_err(refused)?;
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
    let outcome = context(f).resume_pinned(reason).await.map_err(refused)?;
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

/// One look at whether `generation` is on the fleet: `None` while it may
/// still get there. Whether a wave will start is the state machine's own
/// rule ([`start_refusal`]).
pub fn look(item: &FleetItem, generation: u64, rollback: bool) -> Option<Waited> {
    if item.completed_gen >= generation {
        return Some(Waited::Synced { completed: item.completed_gen });
    }
    if item.wave.is_some() {
        return None;
    }
    if rollback {
        // A rollback's wave ended without success: the pin refuses every
        // start, so nothing retries it.
        if item.refused_gen >= generation {
            return Some(Waited::Refused { generation: item.refused_gen });
        }
        return Some(Waited::Failed { generation: item.failed_gen.max(generation), attempts: item.failed_attempts });
    }
    match start_refusal(item) {
        Err(Refusal::Pinned { release, .. }) => Some(Waited::Pinned { release }),
        Err(Refusal::Held { generation, .. }) if item.refused_gen >= generation => Some(Waited::Refused { generation }),
        Err(Refusal::Held { generation, attempts }) => Some(Waited::Failed { generation, attempts }),
        _ => None,
    }
}

/// Frees the lease of the running wave; the value to print and the exit
/// code.
///
/// An expired lease is settled the way the sweep settles it: finished from
/// its commands' results, or resumed when its sending had stopped. A live one
/// only with `force`: the lease is freed first, by one write conditional on
/// the same wave (owner and generation) still holding it, so that the
/// wave's sender stops at its next write and the status events of the
/// commands cancelled next settle nothing (no failure is counted). Then the
/// wave's commands still running are cancelled; when the sender may have
/// been mid-chunk, again once SSM's listing shows what it sent last. Demand
/// stays: the next wave covers the generation.
pub async fn unlock(f: &SyncFunction, force: bool, confirm: bool, reason: &str) -> Result<(Value, u8), CliError> {
    let item = f.store.load().await.map_err(CliError::fleet)?.unwrap_or_default();
    let Some(wave) = item.wave.clone() else {
        return Ok((json!({"unlocked": false, "why": "no wave holds the lease"}), crate::error::exit::OK));
    };
    let now = f.deps.clock.now_ms();
    let cx = context(f);
    if wave.lease_expires_at < now {
        let settled = cx.settle(Trigger::Sweep).await.map_err(CliError::fleet)?;
        let (unlocked, what, code) = match &settled {
            SettleOutcome::Finished { .. } | SettleOutcome::NoWave => (true, "settled: the wave ended", 0),
            SettleOutcome::Resumed(_) => {
                (true, "its sending had stopped: resumed and sent the rest (it holds a new lease)", 0)
            }
            SettleOutcome::Stale { .. } => (true, "settled meanwhile by another invocation", 0),
            // Not stale any more; freeing it would let a wave overlap them.
            SettleOutcome::Renewed { .. } => (false, "its commands still run: the lease was renewed, not freed", 0),
            _ => (false, "its sender is still sending: nothing freed", 1),
        };
        let v = json!({"unlocked": unlocked, "wave_id": wave.id, "generation": wave.target, "lease": "expired", "what": what, "settled": settled});
        return Ok((v, code));
    }
    if !force {
        return Err(CliError::Refused(format!(
            "wave {} (generation {}) holds a live lease for {} s more; `--force` frees it and cancels its commands",
            wave.id,
            wave.target,
            (wave.lease_expires_at - now).div_ceil(1000)
        )));
    }
    if !confirm {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage("unlock --force: confirm with --yes (no terminal to ask on)".into()));
        }
        eprint!(
            "Free the lease of wave {} (generation {}) and cancel its running commands? [y/N] ",
            wave.id, wave.target
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::Refused("not confirmed: nothing was done".into()));
        }
    }
    match f.store.apply(&Op::Finish { wave_id: wave.id.clone(), end: WaveEnd::Abandoned }).await {
        Ok(Applied::Won(_)) => {}
        Ok(Applied::Lost(r)) => {
            return Err(CliError::Refused(format!(
                "wave {} no longer holds the lease ({r:?}): nothing was freed or cancelled",
                wave.id
            )));
        }
        Err(e) => return Err(CliError::fleet(e)),
    }
    // The lease is free now: what follows is best effort, every failure
    // reported (a rerun would find no wave to act on).
    let freed_at = f.deps.clock.now_ms();
    let mut problems = Vec::new();
    match f.store.wave(&wave.id).await {
        Ok(Some(mut record)) => {
            record.end = Some(WaveEnd::Abandoned);
            record.finished_at = Some(freed_at);
            record.blame = Some(format!("unlocked by an operator (--force): {reason}"));
            if let Err(e) = f.store.put_wave(&record).await {
                problems.push(format!("the wave's record: {e}"));
            }
        }
        Ok(None) => {}
        Err(e) => problems.push(format!("the wave's record: {e}")),
    }
    let mut cancelled = cancel_running(f, &cx, &wave, &mut problems).await;
    if !wave.sent {
        // Its sender may have sent one more chunk before it saw the lease
        // gone (its SendCommand may still be retrying): cancel what SSM
        // lists by the wave's comment once that shows, counted from the
        // free plus one sender's attempts.
        let wait = (freed_at + LISTING_LAG_MS + SENDER_ATTEMPTS_MS).saturating_sub(f.deps.clock.now_ms());
        eprintln!("fleetkeeper: waiting {} s for SSM's listing to show a command sent at the last moment", wait / 1000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        cancelled.extend(cancel_running(f, &cx, &wave, &mut problems).await);
        cancelled.sort();
        cancelled.dedup();
    }
    let demand = match &wave.rollback {
        Some(release) => format!(
            "the fleet stays pinned to {release}, whose rollback wave was abandoned: run `fleetkeeper rollback --to \
             {release}` again, or `fleetkeeper resume`"
        ),
        None => "kept: the next wave covers the generation".to_owned(),
    };
    let v = json!({
        "unlocked": true,
        "wave_id": wave.id,
        "generation": wave.target,
        "lease": "live",
        "cancelled_commands": cancelled,
        "demand": demand,
        "problems": problems,
    });
    let code = if problems.is_empty() { crate::error::exit::OK } else { crate::error::exit::COULD_NOT };
    Ok((v, code))
}

/// Cancels the wave's commands still running; failures go to `problems`.
async fn cancel_running(
    f: &SyncFunction,
    cx: &SyncContext<'_, Table>,
    wave: &fleetkeeper::sync::state::Wave,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut cancelled = Vec::new();
    // (A wave not fully sent is also found by its comment.)
    let listed = match cx.wave_commands(wave).await {
        Ok(l) => l,
        Err(e) => {
            problems.push(format!("listing wave {}'s commands: {e}", wave.id));
            return cancelled;
        }
    };
    for c in listed.into_iter().filter(|c| !c.status.is_terminal()) {
        match f.deps.clients.ssm.cancel_command().command_id(&c.command_id).send().await {
            Ok(_) => cancelled.push(c.command_id),
            Err(e) => problems.push(format!("{} ({})", CliError::aws("ssm:CancelCommand", e), c.command_id)),
        }
    }
    cancelled
}

/// `reconcile lifecycle`: the lifecycle-hook function's reconcile, now
/// (the caller runs it without a re-trigger queue: the configuration read
/// may be another function's, whose queue is not lifecycle-hook's; the
/// schedule continues what is left).
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

#[cfg(test)]
mod tests {
    //! `--via-lambda` needs Lambda to run the function, which moto does only
    //! in Docker (absent on the test machines): its paths are tested on the
    //! SDK with `aws-smithy-mocks`. The emulator tests cover the rest.

    use aws_sdk_lambda::operation::invoke::InvokeOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use fleetkeeper::store::{Pin, ReleaseRef};
    use fleetkeeper::sync::state::Wave;

    use super::*;

    fn aws(lambda: aws_sdk_lambda::Client) -> Aws {
        let sdk = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        Aws { clients: fleetkeeper::Clients::new(&sdk), lambda, events: aws_sdk_eventbridge::Client::new(&sdk) }
    }

    #[tokio::test]
    async fn via_lambda_reads_the_functions_answer() {
        let answer = json!({"function": "codebase-sync", "requested_gen": 7, "warnings": ["unversioned"],
            "wave": {"outcome": "started", "wave_id": "w", "target": 7, "instances": ["i-1"]}});
        let invoke = mock!(aws_sdk_lambda::Client::invoke)
            .match_requests(|r| r.function_name() == Some("web-sync") && r.payload().is_some())
            .then_output(move || {
                InvokeOutput::builder()
                    .payload(aws_smithy_types::Blob::new(answer.to_string()))
                    .status_code(200)
                    .build()
            });
        let client = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, &[&invoke]);
        let got = via_lambda(&aws(client), "web-sync", "sync", payload("sync", "hotfix", None, false))
            .await
            .expect("answered");
        assert_eq!((got.generation, got.warnings.as_slice()), (Some(7), ["unversioned".to_owned()].as_slice()));
        assert_eq!(got.outcome["wave"]["outcome"], "started");
        assert_eq!(invoke.num_calls(), 1, "invoked once");
    }

    #[tokio::test]
    async fn a_function_error_is_a_refusal_with_its_message() {
        let invoke = mock!(aws_sdk_lambda::Client::invoke).then_output(|| {
            let body = json!({"errorType": "&str", "errorMessage": "resume refused: the fleet is not pinned"});
            InvokeOutput::builder()
                .function_error("Unhandled")
                .payload(aws_smithy_types::Blob::new(body.to_string()))
                .status_code(200)
                .build()
        });
        let client = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, &[&invoke]);
        let err = via_lambda(&aws(client), "web-sync", "resume", payload("resume", "x", None, false))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), crate::error::exit::PROBLEMS);
        assert!(err.to_string().contains("the fleet is not pinned"), "{err}");
    }

    #[test]
    fn payloads_are_the_functions_operator_requests() {
        assert_eq!(
            payload("rollback", "500s", Some("3f9a2c81d0e4"), false),
            json!({"action": "rollback", "reason": "500s", "to": "3f9a2c81d0e4"})
        );
        assert_eq!(
            payload("sync", "big delete", None, true),
            json!({"action": "sync", "reason": "big delete", "allow_shrink": true})
        );
    }

    fn item(requested: u64, completed: u64) -> FleetItem {
        FleetItem { requested_gen: requested, completed_gen: completed, ..FleetItem::default() }
    }

    #[test]
    fn a_wait_ends_as_the_state_machine_says() {
        assert_eq!(look(&item(5, 5), 5, false), Some(Waited::Synced { completed: 5 }));
        let running = FleetItem { wave: Some(Wave { id: "w".into(), target: 5, ..Wave::default() }), ..item(5, 4) };
        assert_eq!(look(&running, 5, false), None, "a wave runs");
        assert_eq!(look(&item(5, 4), 5, false), None, "a wave will start");
        let held = FleetItem { failed_gen: 5, failed_attempts: 2, ..item(5, 4) };
        assert_eq!(look(&held, 5, false), Some(Waited::Failed { generation: 5, attempts: 2 }));
        let once = FleetItem { failed_gen: 5, failed_attempts: 1, ..item(5, 4) };
        assert_eq!(look(&once, 5, false), None, "retried once");
        let refused = FleetItem { refused_gen: 5, ..held.clone() };
        assert_eq!(look(&refused, 5, false), Some(Waited::Refused { generation: 5 }));
        let pin = Pin { release: "abc1234".into(), manifest: ReleaseRef::default(), ..Pin::default() };
        let pinned = FleetItem { pin: Some(pin), ..item(6, 4) };
        assert_eq!(look(&pinned, 6, false), Some(Waited::Pinned { release: "abc1234".into() }));
        // A rollback's wave that failed is never retried: the wait ends.
        let failed_rollback = FleetItem { failed_gen: 6, failed_attempts: 1, ..pinned.clone() };
        assert_eq!(look(&failed_rollback, 6, true), Some(Waited::Failed { generation: 6, attempts: 1 }));
    }
}
