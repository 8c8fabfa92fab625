//! `mount-targets`: one EFS mount target in every AZ the fleet uses.
//!
//! Any trigger — a schedule, an `aws.autoscaling` event of a managed group,
//! `{"action": "reconcile"}` — runs one full reconcile, however many triggers
//! the invocation holds. Stateless: each run re-plans from what AWS reports.

use std::time::Duration;

use fleetkeeper::Deps;
use fleetkeeper::events::{Event, ManualAction, Skip, SkipReason};
use fleetkeeper::mount_targets::{self, Report, Target};
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::{deadline, events};
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

/// The longest a run waits for new mount targets to become available before
/// reporting them in progress for the next run.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The function's response and its summary log line.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `mount-targets`.
    pub function: &'static str,
    /// Events in the payload.
    pub events: usize,
    /// Events that asked for a reconcile.
    pub triggers: usize,
    /// Events skipped, by reason.
    pub skipped: Skips,
    /// The reconcile, when one ran.
    pub reconcile: Option<Report>,
}

/// Whether `event` asks for a reconcile.
pub fn classify(event: &Event, deps: &Deps) -> Result<(), Skip> {
    let managed = |group: Option<&str>| match group {
        Some(g) if deps.config.manages_asg(g) => Ok(()),
        Some(g) => Err(Skip::new(SkipReason::NotManaged, format!("group {g:?} is not managed"))),
        None => Err(Skip::new(SkipReason::NotManaged, "auto scaling event without a group")),
    };
    match event {
        Event::Scheduled(_) => Ok(()),
        Event::Manual(m) if m.action == ManualAction::Reconcile => Ok(()),
        Event::AutoScaling(n) => managed(n.auto_scaling_group_name.as_deref()),
        Event::Lifecycle(a) => managed(Some(&a.auto_scaling_group_name)),
        other => Err(not_for_this_function(other)),
    }
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, deps: &Deps) -> Result<Summary, Error> {
    let received = events::parse(&event.payload);
    let total = received.len();
    let (triggers, skipped) = triage(received, |e| classify(e, deps));
    let mut summary =
        Summary { function: "mount-targets", events: total, triggers: triggers.len(), skipped, reconcile: None };
    if triggers.is_empty() {
        info!(events = total, skipped = summary.skipped.total(), "nothing to reconcile");
        return Ok(summary);
    }
    let Some(target) = Target::from_config(&deps.config) else {
        // Config validation makes FLEET_EFS_FILE_SYSTEM_ID required here.
        return Err("FLEET_EFS_FILE_SYSTEM_ID is not set".into());
    };
    let budget = deadline::budget(event.context.deadline, deps.clock.now_ms(), MAX_WAIT);
    let report =
        mount_targets::reconcile(&deps.clients, deps.clock.as_ref(), &target, None, budget).await.map_err(Box::new)?;
    info!(
        file_system = %report.file_system_id,
        zones = report.zones.len(),
        in_progress = report.in_progress(),
        dry_run = report.dry_run,
        "reconciled mount targets"
    );
    summary.reconcile = Some(report);
    Ok(summary)
}
