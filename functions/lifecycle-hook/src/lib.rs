//! `lifecycle-hook`: gates instances into and out of service.
//!
//! A launching instance enters service only when it is really ready: running,
//! its AZ's EFS mount target available, its SSM agent `Online`, a catch-up
//! sync to the requested generation done, registered and healthy in the
//! managed target groups not attached to its group. A terminating one leaves
//! only after it drained. Each step is persisted in the instance's record;
//! an invocation that must wait heartbeats the hook and returns "in progress",
//! and the next event (the catch-up's status event, its own delayed
//! re-trigger, the schedule) continues.
//!
//! One failing event never blocks the others: each is handled on its own.
//! Messages from SQS (a hook's SQS target, the re-trigger queue) that failed
//! for a reason a retry can fix are named in `batchItemFailures`, so SQS
//! redelivers only them; a failure no retry can fix is logged and reported,
//! never retried as if it were transient. A directly invoked event
//! (EventBridge) that failed transiently fails the invocation, so Lambda's
//! asynchronous retries run it again.

use std::time::Duration;

use fleetkeeper::events::{self, Event, ManualAction, Skip, SkipReason, Via};
use fleetkeeper::lifecycle::gate::{Driven, Gate, GateError, GateSettings};
use fleetkeeper::lifecycle::reconcile::ReconcileReport;
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::store::Table;
use fleetkeeper::{Component, ConfigError, Deps, deadline};
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::{error, info};

/// The longest an invocation works before leaving the rest to the next one
/// (Lambda's own limit is 15 minutes).
const MAX_WORK: Duration = Duration::from_secs(14 * 60);

/// The function's state, built once per cold start.
pub struct Function {
    /// Config, clients, clock.
    pub deps: Deps,
    /// The gate's settings.
    pub settings: GateSettings,
    /// The lock table.
    pub store: Table,
}

impl Function {
    /// Resolves the gate's settings.
    pub fn new(deps: Deps) -> Result<Self, ConfigError> {
        let missing = |var| ConfigError::Missing { var, component: Component::LifecycleHook, why: "" };
        let fleet = deps.config.fleet_name.clone().ok_or_else(|| missing(fleetkeeper::config::vars::FLEET_NAME))?;
        let table = deps.config.lock_table.clone().ok_or_else(|| missing(fleetkeeper::config::vars::LOCK_TABLE))?;
        let settings = GateSettings::from_config(&deps.config, &deps.clients.region);
        let store = Table::new(deps.clients.dynamodb.clone(), table, fleet);
        Ok(Function { deps, settings, store })
    }
}

/// The function's response and its summary log line.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `lifecycle-hook`.
    pub function: &'static str,
    /// Events in the payload.
    pub events: usize,
    /// Events skipped, by reason.
    pub skipped: Skips,
    /// Lifecycle actions driven by events.
    pub driven: Vec<Driven>,
    /// Status events of catch-ups still running.
    pub still_running: usize,
    /// The reconcile, when the schedule (or a manual call) asked for one.
    pub reconcile: Option<ReconcileReport>,
    /// Events that failed (the others were handled).
    pub failed: Vec<Failure>,
    /// SQS messages to redeliver (a partial batch response; the event
    /// source mapping must report batch item failures).
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One event that failed.
#[derive(Debug, Serialize)]
pub struct Failure {
    /// The instance, when the event names one.
    pub instance_id: Option<String>,
    /// The error.
    pub error: String,
    /// Whether a retry may fix it.
    pub retryable: bool,
}

/// An SQS message to redeliver.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct BatchItemFailure {
    /// The message id.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Whether this function acts on `event`, or why not.
pub fn classify(event: &Event, f: &Function) -> Result<(), Skip> {
    let config = &f.deps.config;
    match event {
        Event::Lifecycle(a) if !config.manages_asg(&a.auto_scaling_group_name) => {
            Err(Skip::new(SkipReason::NotManaged, format!("group {:?} is not managed", a.auto_scaling_group_name)))
        }
        Event::Lifecycle(a) if !config.owns_hook(&a.lifecycle_hook_name) => {
            Err(Skip::new(SkipReason::NotManaged, format!("hook {:?} is not fleetkeeper's", a.lifecycle_hook_name)))
        }
        Event::Lifecycle(_) | Event::Scheduled(_) => Ok(()),
        Event::Manual(m) if m.action == ManualAction::Reconcile => Ok(()),
        Event::LifecycleTest(_) => Err(Skip::new(SkipReason::TestNotification, "autoscaling:TEST_NOTIFICATION")),
        Event::CommandStatus(c) => match (&f.settings.catch_up, &c.document_name) {
            (None, _) => Err(Skip::new(SkipReason::NotManaged, "no codebase configured: no catch-ups")),
            (Some(s), Some(d)) if *d != s.document => {
                Err(Skip::new(SkipReason::NotManaged, format!("command of document {d:?}")))
            }
            _ => Ok(()),
        },
        other => Err(not_for_this_function(other)),
    }
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, f: &Function) -> Result<Summary, Error> {
    let received = events::parse(&event.payload);
    let total = received.len();
    let (accepted, mut skipped) = triage(received, |e| classify(e, f));
    let budget = deadline::budget(event.context.deadline, f.deps.clock.now_ms(), MAX_WORK);
    let gate = Gate {
        clients: &f.deps.clients,
        store: &f.store,
        settings: &f.settings,
        clock: f.deps.clock.as_ref(),
        until: f.deps.clock.deadline_in(budget),
        cache: Default::default(),
    };
    let mut summary = Summary {
        function: "lifecycle-hook",
        events: total,
        skipped: Skips::default(),
        driven: vec![],
        still_running: 0,
        reconcile: None,
        failed: vec![],
        batch_item_failures: vec![],
    };
    let mut reconcile = false;
    let mut retry_invocation = false;
    for r in &accepted {
        if f.deps.clock.now_ms() >= gate.until {
            // Out of time: a lifecycle action is queued again at once (its
            // re-trigger); anything else comes back (SQS redelivers what the
            // response names, a direct event fails the invocation).
            let requeued = match &r.event {
                Event::Lifecycle(action) => gate.requeue(action, Duration::from_secs(1)).await,
                _ => false,
            };
            match &r.via {
                _ if requeued => {}
                Via::Sqs { message_id: Some(id) } => {
                    summary.batch_item_failures.push(BatchItemFailure { item_identifier: id.clone() })
                }
                Via::Sqs { message_id: None } => error!("an SQS record without a message id was not reached in time"),
                Via::Direct => retry_invocation = true,
            }
            continue;
        }
        let (instance_id, result) = match &r.event {
            Event::Lifecycle(action) => (Some(action.instance_id.clone()), gate.drive(action).await.map(Some)),
            Event::CommandStatus(change) if !change.status.is_terminal() => {
                summary.still_running += 1;
                continue;
            }
            Event::CommandStatus(change) => {
                (change.instance_ids.first().cloned(), gate.on_command_status(change).await)
            }
            _ => {
                reconcile = true;
                continue;
            }
        };
        match result {
            Ok(Some(driven)) => {
                info!(instance_id = %driven.instance_id, result = %driven.result, reason = ?driven.reason, "lifecycle action driven");
                summary.driven.push(driven);
            }
            Ok(None) => skipped.record(
                &r.via,
                Skip::new(SkipReason::NotManaged, "not the catch-up of a pending instance (a fleet wave, or finished)"),
            ),
            Err(e) => retry_invocation |= fail(&mut summary, &r.via, instance_id, &e),
        }
    }
    if reconcile {
        let report = gate.reconcile().await.map_err(Box::new)?;
        info!(
            driven = report.driven.len(),
            registered = report.registered.len(),
            deregistered = report.deregistered.len(),
            errors = report.errors.len(),
            "reconciled"
        );
        // An instance that failed for a reason a retry can fix: the schedule's
        // invocation fails so Lambda runs the (idempotent) reconcile again
        // now, not an interval later (a lost event's action may be near its
        // heartbeat timeout).
        if report.errors.iter().any(|e| e.retryable) {
            for e in report.errors.iter().filter(|e| e.retryable) {
                summary.failed.push(Failure {
                    instance_id: Some(e.instance_id.clone()),
                    error: format!("reconcile {}: {}", e.step, e.error),
                    retryable: true,
                });
            }
            retry_invocation = true;
        }
        summary.reconcile = Some(report);
    }
    summary.skipped = skipped;
    if retry_invocation {
        // A direct (EventBridge) event failed transiently or was not reached
        // in time: Lambda retries it.
        let errors: Vec<&str> = summary.failed.iter().map(|f| f.error.as_str()).collect();
        return Err(format!("lifecycle events failed or were not reached, retried: {}", errors.join("; ")).into());
    }
    Ok(summary)
}

/// Records a failed event; `true` when the invocation must fail for a retry.
fn fail(summary: &mut Summary, via: &Via, instance_id: Option<String>, e: &GateError) -> bool {
    let retryable = e.is_retryable();
    error!(instance_id = ?instance_id, error = %e, retryable, "lifecycle event failed; the others go on");
    summary.failed.push(Failure { instance_id, error: e.to_string(), retryable });
    match via {
        Via::Sqs { message_id: Some(id) } if retryable => {
            summary.batch_item_failures.push(BatchItemFailure { item_identifier: id.clone() });
            false
        }
        Via::Sqs { .. } => false,
        Via::Direct => retryable,
    }
}
