//! An instance's lifecycle record: the persisted step machine of the action
//! in progress, and the target groups fleetkeeper registered the instance
//! in (kept after the action, so the reconcile only ever deregisters what
//! fleetkeeper itself registered).
//!
//! Stored as JSON in the instance item (`<fleet>#instance#<id>`), next to
//! its sync counters, and advanced by conditional writes on a version number:
//! an event and the reconcile may race on the same instance.

use serde::{Deserialize, Serialize};

use crate::events::{LifecycleAction, Transition};

/// The catch-up sync of one launch phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUp {
    /// The launch phase (`EC2->AutoScalingGroup`, `WarmPool->AutoScalingGroup`, ...).
    pub phase: String,
    /// 1 or 2.
    pub attempt: u32,
    /// The generation it syncs to (`requested_gen` when sent).
    pub generation: u64,
    /// That generation's lineage (empty in records written before lineages).
    #[serde(default)]
    pub epoch: String,
    /// Its command, once `SendCommand` answered.
    pub command_id: Option<String>,
    /// When sending began, epoch ms.
    pub sent_at: u64,
}

/// The lifecycle action in progress (or last handled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionState {
    /// `launching` / `terminating`.
    pub transition: Transition,
    /// The group.
    pub group: String,
    /// The hook.
    pub hook: String,
    /// The launch phase or `terminate`.
    pub phase: String,
    /// The last token seen (completion prefers it; reconcile uses the instance id).
    pub token: Option<String>,
    /// When fleetkeeper first saw the action, epoch ms.
    pub started_at: u64,
    /// The last decision, for the operator.
    pub step: String,
    /// The catch-up of this phase.
    pub catch_up: Option<CatchUp>,
    /// When the instance was registered, epoch ms (the health wait's start).
    pub registered_at: Option<u64>,
    /// When draining began, epoch ms (the drain wait's start).
    pub drain_started_at: Option<u64>,
    /// How it ended (`continue`, `abandon`, `not_active`), once it did.
    pub done: Option<String>,
}

/// The lifecycle part of an instance record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRecord {
    /// The action in progress or last handled.
    pub action: Option<ActionState>,
    /// Target groups fleetkeeper registered the instance in.
    pub registered: Vec<String>,
}

impl LifecycleRecord {
    /// The state of `action`: the one on record if it is the same action
    /// (hook, transition, phase) and not finished, else a fresh one.
    pub fn for_action(&self, action: &LifecycleAction, phase: &str, now: u64) -> ActionState {
        match &self.action {
            Some(a)
                if a.hook == action.lifecycle_hook_name
                    && a.group == action.auto_scaling_group_name
                    && a.transition == action.transition
                    && a.phase == phase
                    && a.done.is_none() =>
            {
                let mut a = a.clone();
                if action.token.is_some() {
                    a.token.clone_from(&action.token);
                }
                a
            }
            _ => ActionState {
                transition: action.transition,
                group: action.auto_scaling_group_name.clone(),
                hook: action.lifecycle_hook_name.clone(),
                phase: phase.to_owned(),
                token: action.token.clone(),
                started_at: now,
                step: "new".into(),
                catch_up: None,
                registered_at: None,
                drain_started_at: None,
                done: None,
            },
        }
    }
}

/// The planner's view: the action's state plus what was registered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanRecord {
    /// When the action began.
    pub started_at: u64,
    /// Its catch-up.
    pub catch_up: Option<CatchUp>,
    /// Target groups fleetkeeper registered the instance in.
    pub registered: Vec<String>,
    /// When it was registered.
    pub registered_at: Option<u64>,
    /// When draining began.
    pub drain_started_at: Option<u64>,
}

impl PlanRecord {
    /// The planner's view of `state` and `registered`.
    pub fn new(state: &ActionState, registered: &[String]) -> Self {
        PlanRecord {
            started_at: state.started_at,
            catch_up: state.catch_up.clone(),
            registered: registered.to_vec(),
            registered_at: state.registered_at,
            drain_started_at: state.drain_started_at,
        }
    }
}
