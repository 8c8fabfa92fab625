//! `mount-targets`: one EFS mount target in every AZ the fleet uses.
//!
//! This version parses its envelopes and answers an honest summary: every
//! event it will act on is reported as not yet implemented.

use fleetkeeper::Deps;
use fleetkeeper::events::{Event, ManualAction};
use fleetkeeper::skips::{NothingDone, nothing_done};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

/// Whether this function acts on `event`.
pub fn accepts(event: &Event) -> bool {
    matches!(event, Event::Scheduled(_) | Event::AutoScaling(_) | Event::Lifecycle(_))
        || matches!(event, Event::Manual(m) if m.action == ManualAction::Reconcile)
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, _deps: &Deps) -> Result<NothingDone, Error> {
    let summary = nothing_done("mount-targets", &event.payload, accepts);
    tracing::info!(events = summary.events, skipped = summary.skipped.total(), "done");
    Ok(summary)
}
