//! Manual payloads: `{"action": "sync", "reason": "..."}`,
//! `{"action": "reconcile"}`, `{"action": "sweep"}`. The reason is free text
//! for the logs and the wave record; it never reaches a command.

use serde::Serialize;
use serde_json::Value;

use super::{Event, SkipReason, str_field, truncate};

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManualAction {
    /// Force a codebase sync wave (`codebase-sync`).
    Sync,
    /// Run the reconcile now (`lifecycle-hook`, `mount-targets`).
    Reconcile,
    /// Run the sync sweep now (`sync-completion`).
    Sweep,
}

/// A manual invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualRequest {
    /// The action.
    pub action: ManualAction,
    /// Why, as given (at most 256 bytes).
    pub reason: Option<String>,
}

/// Longest reason kept.
const MAX_REASON: usize = 256;

pub(super) fn parse(value: &Value) -> Event {
    let action = match value.get("action").and_then(Value::as_str) {
        Some("sync") => ManualAction::Sync,
        Some("reconcile") => ManualAction::Reconcile,
        Some("sweep") => ManualAction::Sweep,
        Some(other) => {
            let mut other = format!("{other:?}");
            truncate(&mut other, 40);
            return Event::skipped(SkipReason::UnknownAction, format!("unknown action {other}"));
        }
        None => return Event::skipped(SkipReason::Malformed, "action is not a string"),
    };
    let reason = str_field(value, "reason").map(|mut r| {
        r.retain(|c| !c.is_control());
        truncate(&mut r, MAX_REASON);
        r
    });
    Event::Manual(ManualRequest { action, reason })
}
