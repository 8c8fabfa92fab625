//! `lifecycle-hook`: gates instances into and out of service.
//!
//! A launching instance enters service only when it is really ready: running,
//! its AZ's EFS mount target available, its SSM agent `Online`, a catch-up
//! sync to the requested generation done, registered and healthy in the
//! managed target groups not attached to its group. A terminating one leaves
//! only after it drained. Each step is persisted in the instance's record;
//! an invocation that must wait heartbeats the hook and returns "in progress",
//! and the next event (the catch-up's status event, the schedule) continues.

use std::time::Duration;

use fleetkeeper::events::{self, Event, ManualAction, Skip, SkipReason};
use fleetkeeper::lifecycle::exec::{Driven, Gate, GateSettings};
use fleetkeeper::lifecycle::reconcile::ReconcileReport;
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::store::Table;
use fleetkeeper::{Component, ConfigError, Deps, deadline};
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

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
    };
    let mut summary = Summary {
        function: "lifecycle-hook",
        events: total,
        skipped: Skips::default(),
        driven: vec![],
        still_running: 0,
        reconcile: None,
    };
    let mut reconcile = false;
    for r in &accepted {
        match &r.event {
            Event::Lifecycle(action) => {
                let driven = gate.drive(action).await.map_err(Box::new)?;
                info!(instance_id = %driven.instance_id, result = %driven.result, reason = ?driven.reason, "lifecycle action driven");
                summary.driven.push(driven);
            }
            Event::CommandStatus(change) if !change.status.is_terminal() => summary.still_running += 1,
            Event::CommandStatus(change) => match gate.on_command_status(change).await.map_err(Box::new)? {
                Some(driven) => summary.driven.push(driven),
                None => skipped.record(
                    &r.via,
                    Skip::new(
                        SkipReason::NotManaged,
                        "not the catch-up of a pending instance (a fleet wave, or finished)",
                    ),
                ),
            },
            _ => reconcile = true,
        }
    }
    if reconcile {
        let report = gate.reconcile().await.map_err(Box::new)?;
        info!(
            driven = report.driven.len(),
            registered = report.registered.len(),
            deregistered = report.deregistered.len(),
            "reconciled"
        );
        summary.reconcile = Some(report);
    }
    summary.skipped = skipped;
    Ok(summary)
}
