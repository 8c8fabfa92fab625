//! An instance's lifecycle record: the persisted step machine of the action
//! in progress, and the target groups fleetkeeper registered the instance
//! in (kept after the action, so the reconcile only ever deregisters what
//! fleetkeeper itself registered).
//!
//! Stored as JSON in the instance item (`<fleet>#instance#<id>`), next to
//! its sync counters, and advanced by conditional writes on a version number:
//! an event and the reconcile may race on the same instance.

use serde::{Deserialize, Serialize};

use super::action::{self, Outcome};
use crate::events::{LifecycleAction, Place, Transition};

/// The catch-up sync of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUp {
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
    /// Exact releases: the manifest it materializes (the fleet's release,
    /// of `generation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<crate::store::ReleaseRef>,
    /// The fleet is pinned to that release: an instance holding it switches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// The releases the instance keeps whatever their number (the fleet's
    /// rollback targets, by id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
}

/// What an action already found ready: monotone within one action, so a
/// later invocation does not ask AWS again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The instance was `running`, in this AZ.
    pub zone: Option<String>,
    /// The AZ's mount target was available.
    pub mount: bool,
    /// The SSM agent was `Online`.
    pub agent: bool,
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
    /// Where the action takes the instance (part of its identity; `None`
    /// only in records written before destinations, which match nothing).
    #[serde(default)]
    pub destination: Option<Place>,
    /// Where it comes from, when the event said (informational).
    #[serde(default)]
    pub origin: Option<Place>,
    /// The action's token, when an event carried it (part of its identity).
    pub token: Option<String>,
    /// When the action began (the event's time; else when fleetkeeper
    /// first saw it), epoch ms.
    pub started_at: u64,
    /// When the hook's global timeout ends it, epoch ms, once known.
    #[serde(default)]
    pub global_deadline: Option<u64>,
    /// The hook's `DefaultResult`, once known (with the global deadline,
    /// a later invocation need not describe the hook again).
    #[serde(default)]
    pub default_result: Option<super::plan::Completion>,
    /// The last decision, for the operator.
    pub step: String,
    /// The catch-up of this action.
    pub catch_up: Option<CatchUp>,
    /// What was found ready.
    #[serde(default)]
    pub ready: Ready,
    /// When the instance was registered, epoch ms (the health wait's start).
    pub registered_at: Option<u64>,
    /// When draining began, epoch ms (the drain wait's start).
    pub drain_started_at: Option<u64>,
    /// When the re-trigger on its way is due, epoch ms (one at a time).
    #[serde(default)]
    pub retrigger_at: Option<u64>,
    /// How it ended, once it did.
    pub done: Option<Outcome>,
}

impl ActionState {
    /// A fresh state for `action`, first seen at `now`.
    pub fn new(action: &LifecycleAction, now: u64) -> Self {
        ActionState {
            transition: action.transition,
            group: action.auto_scaling_group_name.clone(),
            hook: action.lifecycle_hook_name.clone(),
            destination: Some(action::destination(action)),
            origin: action.origin,
            token: action.token.clone(),
            started_at: action.time_ms.map_or(now, |t| t.min(now)),
            global_deadline: None,
            default_result: None,
            step: "new".into(),
            catch_up: None,
            ready: Ready::default(),
            registered_at: None,
            drain_started_at: None,
            retrigger_at: None,
            done: None,
        }
    }

    /// Whether this state is `action`'s: same group, hook, transition and
    /// destination; the same token when both know one; and not past the
    /// hook's global timeout (AWS ended that action: a later one of the
    /// same kind, a warm-pool re-cycle, is another action).
    pub fn is(&self, action: &LifecycleAction, now: u64) -> bool {
        self.hook == action.lifecycle_hook_name
            && self.group == action.auto_scaling_group_name
            && self.transition == action.transition
            && self.destination == Some(action::destination(action))
            && match (&self.token, &action.token) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
            && self.global_deadline.is_none_or(|d| now < d)
    }

    /// The lifecycle action this state stands for (continuing it without its event).
    pub fn action(&self, instance_id: &str) -> LifecycleAction {
        LifecycleAction {
            auto_scaling_group_name: self.group.clone(),
            lifecycle_hook_name: self.hook.clone(),
            instance_id: instance_id.to_owned(),
            transition: self.transition,
            token: self.token.clone(),
            origin: self.origin,
            destination: self.destination,
            notification_metadata: None,
            time_ms: Some(self.started_at),
        }
    }
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
    /// and not finished (learning its token), else a fresh one. A finished
    /// record of the same token is returned as it is (a duplicate event).
    pub fn for_action(&self, action: &LifecycleAction, now: u64) -> ActionState {
        match &self.action {
            Some(a) if a.is(action, now) && (a.done.is_none() || (a.token.is_some() && a.token == action.token)) => {
                let mut a = a.clone();
                if a.token.is_none() {
                    a.token.clone_from(&action.token);
                }
                if a.origin.is_none() {
                    a.origin = action.origin;
                }
                a
            }
            _ => ActionState::new(action, now),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(token: Option<&str>, destination: Option<Place>) -> LifecycleAction {
        LifecycleAction {
            auto_scaling_group_name: "web".into(),
            lifecycle_hook_name: "fk".into(),
            instance_id: "i-0123456789abcdef0".into(),
            transition: Transition::Launching,
            token: token.map(str::to_owned),
            origin: None,
            destination,
            notification_metadata: None,
            time_ms: None,
        }
    }

    fn record_of(state: ActionState) -> LifecycleRecord {
        LifecycleRecord { action: Some(state), registered: vec![] }
    }

    #[test]
    fn another_token_is_another_action() {
        let mut s = ActionState::new(&event(Some("t1"), Some(Place::AutoScalingGroup)), 1_000);
        s.step = "catch-up running".into();
        let r = record_of(s.clone());
        assert_eq!(r.for_action(&event(Some("t1"), None), 2_000), s, "same token, same action");
        let fresh = r.for_action(&event(Some("t2"), None), 2_000);
        assert_eq!((fresh.token.as_deref(), fresh.step.as_str(), fresh.started_at), (Some("t2"), "new", 2_000));
    }

    #[test]
    fn the_destination_is_part_of_the_identity() {
        let s = ActionState::new(&event(None, Some(Place::WarmPool)), 1_000);
        let r = record_of(s);
        assert_eq!(r.for_action(&event(None, Some(Place::AutoScalingGroup)), 2_000).step, "new");
        assert_eq!(r.for_action(&event(None, Some(Place::WarmPool)), 2_000).started_at, 1_000);
    }

    #[test]
    fn a_token_less_drive_continues_the_record_and_an_event_teaches_it_the_token() {
        let r = record_of(ActionState::new(&event(None, None), 1_000));
        let s = r.for_action(&event(Some("t"), None), 2_000);
        assert_eq!((s.token.as_deref(), s.started_at), (Some("t"), 1_000));
    }

    #[test]
    fn past_its_global_timeout_an_action_is_over() {
        let mut s = ActionState::new(&event(None, None), 1_000);
        s.global_deadline = Some(5_000);
        let r = record_of(s);
        assert_eq!(r.for_action(&event(None, None), 4_999).started_at, 1_000);
        assert_eq!(r.for_action(&event(None, None), 5_000).started_at, 5_000, "a re-cycle starts afresh");
    }

    #[test]
    fn a_finished_action_is_reused_only_for_a_duplicate_of_its_token() {
        let mut s = ActionState::new(&event(Some("t"), None), 1_000);
        s.done = Some(Outcome::Continue);
        let r = record_of(s);
        assert_eq!(r.for_action(&event(Some("t"), None), 2_000).done, Some(Outcome::Continue));
        assert_eq!(r.for_action(&event(None, None), 2_000).done, None, "the reconcile probes afresh");
    }

    #[test]
    fn the_event_time_starts_the_action_and_never_the_future() {
        let mut e = event(Some("t"), None);
        e.time_ms = Some(900);
        assert_eq!(ActionState::new(&e, 1_000).started_at, 900);
        e.time_ms = Some(9_000);
        assert_eq!(ActionState::new(&e, 1_000).started_at, 1_000);
    }

    #[test]
    fn records_of_earlier_versions_still_read() {
        let old = r#"{"action":{"transition":"launching","group":"web","hook":"fk","phase":"EC2->AutoScalingGroup",
            "token":"t","started_at":1,"step":"x","catch_up":{"phase":"EC2->AutoScalingGroup","attempt":1,
            "generation":3,"command_id":"c","sent_at":2},"registered_at":null,"drain_started_at":null,"done":"continue"},
            "registered":["tg"]}"#;
        let r: LifecycleRecord = serde_json::from_str(old).expect("reads");
        let a = r.action.expect("action");
        assert_eq!((a.destination, a.done, a.catch_up.map(|c| c.generation)), (None, Some(Outcome::Continue), Some(3)));
        assert_eq!(r.registered, ["tg"]);
    }
}
