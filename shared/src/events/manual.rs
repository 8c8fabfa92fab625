//! Manual payloads: `{"action": "sync", "reason": "...", "allow_shrink":
//! true}`, `{"action": "rollback", "to": "previous" | <release>, "reason":
//! "..."}`, `{"action": "resume"}`, `{"action": "reconcile"}`,
//! `{"action": "sweep"}`; and the sync's
//! own delayed start, `{"action": "sync-due", "due": <epoch ms>}`, which
//! `codebase-sync` queues for itself when a quiet period holds a wave back.
//! The reason is free text for the logs and the wave record; it never
//! reaches a command. `allow_shrink` lifts the instances' shrink guard for
//! the generation this sync requests: only a JSON `true` does, and only on a
//! sync (anything else is refused as malformed, never guessed).

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
    /// Start the wave a quiet period held back, if it is quiet now
    /// (`codebase-sync`'s own delayed trigger).
    SyncDue,
    /// Put a kept release back and pin the fleet to it (`codebase-sync`).
    Rollback,
    /// Unpin the fleet and sync the codebase as it is (`codebase-sync`).
    Resume,
}

/// A manual invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualRequest {
    /// The action.
    pub action: ManualAction,
    /// Why, as given (at most 256 bytes).
    pub reason: Option<String>,
    /// Lift the shrink guard for this sync (`"allow_shrink": true`).
    pub allow_shrink: bool,
    /// When a delayed start was due, epoch ms (`sync-due`).
    pub due: Option<u64>,
    /// The release a rollback puts back: `previous`, a generation, a
    /// release id (at most 128 bytes; `previous` when not given).
    pub to: Option<String>,
}

/// Longest reason kept.
const MAX_REASON: usize = 256;

pub(super) fn parse(value: &Value) -> Event {
    let action = match value.get("action").and_then(Value::as_str) {
        Some("sync") => ManualAction::Sync,
        Some("reconcile") => ManualAction::Reconcile,
        Some("sweep") => ManualAction::Sweep,
        Some("sync-due") => ManualAction::SyncDue,
        Some("rollback") => ManualAction::Rollback,
        Some("resume") => ManualAction::Resume,
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
    let allow_shrink = match value.get("allow_shrink") {
        None => false,
        Some(Value::Bool(b)) if action == ManualAction::Sync => *b,
        Some(_) if action != ManualAction::Sync => {
            return Event::skipped(SkipReason::Malformed, "allow_shrink is only for a sync");
        }
        Some(_) => return Event::skipped(SkipReason::Malformed, "allow_shrink is not true or false"),
    };
    let due = value.get("due").and_then(Value::as_u64);
    let to = match (value.get("to"), action) {
        (None, ManualAction::Rollback) => Some("previous".to_owned()),
        (None, _) => None,
        (Some(Value::String(to)), ManualAction::Rollback) if release_name(to) => Some(to.clone()),
        // A generation typed as a number.
        (Some(Value::Number(n)), ManualAction::Rollback) if n.is_u64() => Some(n.to_string()),
        (Some(_), ManualAction::Rollback) => {
            return Event::skipped(
                SkipReason::Malformed,
                "to is not previous, a generation or a release id (letters, digits and ._:+-, at most 128)",
            );
        }
        (Some(_), _) => return Event::skipped(SkipReason::Malformed, "to is only for a rollback"),
    };
    Event::Manual(ManualRequest { action, reason, allow_shrink, due, to })
}

/// A release as an operator names it: the release id pattern of the document.
fn release_name(to: &str) -> bool {
    crate::params::RELEASE.is_match(to) && !to.is_empty()
}
