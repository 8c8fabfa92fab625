//! `sync-completion`: finishes sync waves and starts at most one follow-up.
//!
//! This version parses its envelopes and answers an honest summary: every
//! event it will act on is reported as not yet implemented.

use fleetkeeper::Deps;
use fleetkeeper::events::{Event, ManualAction};
use fleetkeeper::skips::{NothingDone, nothing_done, only};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

/// Whether this function acts on `event`.
pub fn accepts(event: &Event) -> bool {
    matches!(event, Event::CommandStatus(_) | Event::Scheduled(_))
        || matches!(event, Event::Manual(m) if m.action == ManualAction::Sweep)
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, _deps: &Deps) -> Result<NothingDone, Error> {
    let summary = nothing_done("sync-completion", &event.payload, only(accepts));
    tracing::info!(events = summary.events, skipped = summary.skipped.total(), "done");
    Ok(summary)
}
