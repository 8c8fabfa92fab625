//! What a lifecycle action is: its identity, how it ended, and THE table
//! between (transition, destination) and the group's lifecycle states, the
//! one source the planner, the reconcile and the tests read.
//!
//! AWS facts (Auto Scaling user guide, "Warm pool event types and
//! patterns", "Lifecycle state transitions for instances in a warm pool"):
//!
//! | transition | destination | the instance waits in |
//! |---|---|---|
//! | launch | `AutoScalingGroup` (from EC2 or from the pool) | `Pending:Wait` |
//! | launch | `WarmPool` (a new pool instance) | `Warmed:Pending:Wait` |
//! | terminate | `EC2` (from the group or from the pool) | `Terminating:Wait` / `Warmed:Terminating:Wait` |
//! | terminate | `WarmPool` (scale-in with `ReuseOnScaleIn`) | `Warmed:Pending:Wait` |
//!
//! `Warmed:Pending:Wait` alone is ambiguous (a launch into the pool, or a
//! scale-in back to it): the hook's transition decides, and only a hook
//! that still holds the instance is driven (see `exec`'s activity probe).
//! The origin (`EC2` or `WarmPool` for `Pending:Wait`) cannot be observed:
//! it is informational, never part of the identity.

use serde::{Deserialize, Serialize};

use crate::events::{LifecycleAction, Place, Transition};

/// Where an action takes the instance when the event does not say (groups
/// without a warm pool send no `Origin` / `Destination`).
pub fn destination(action: &LifecycleAction) -> Place {
    action.destination.unwrap_or(match action.transition {
        Transition::Launching => Place::AutoScalingGroup,
        Transition::Terminating => Place::Ec2,
    })
}

/// The lifecycle states an instance waits in while an action of
/// `(transition, destination)` is pending.
pub fn waiting_states(transition: Transition, destination: Place) -> &'static [&'static str] {
    match (transition, destination) {
        (Transition::Launching, Place::AutoScalingGroup) => &["Pending:Wait"],
        (Transition::Launching, Place::WarmPool) => &["Warmed:Pending:Wait"],
        (Transition::Terminating, Place::Ec2) => &["Terminating:Wait", "Warmed:Terminating:Wait"],
        (Transition::Terminating, Place::WarmPool) => &["Warmed:Pending:Wait"],
        // No such action: a launch never goes to EC2, a terminate never into service.
        (Transition::Launching, Place::Ec2) | (Transition::Terminating, Place::AutoScalingGroup) => &[],
    }
}

/// The actions a hook of `transition` may hold on an instance waiting in
/// `state`: its destination, or `None` when no action of that transition
/// waits in that state.
pub fn destination_in(state: &str, transition: Transition) -> Option<Place> {
    [Place::AutoScalingGroup, Place::WarmPool, Place::Ec2]
        .into_iter()
        .find(|d| waiting_states(transition, *d).contains(&state))
}

/// The origin a waiting state implies, when it implies one.
pub fn origin_in(state: &str) -> Option<Place> {
    match state {
        "Warmed:Terminating:Wait" => Some(Place::WarmPool),
        "Terminating:Wait" => Some(Place::AutoScalingGroup),
        _ => None,
    }
}

/// States in which an instance serves no traffic of its group and never
/// will without a new launch action: fleetkeeper's registrations of it are
/// removed (AWS removes an attached group's; user guide, "Temporarily remove
/// instances from your Auto Scaling group": Standby instances are
/// deregistered from the load balancer).
pub fn out_of_service(state: &str) -> bool {
    state == "Standby"
        || state.starts_with("Terminating")
        || state.starts_with("Detach")
        || state.starts_with("EnteringStandby")
        || state.starts_with("Warmed:")
}

/// How an action ended (stored as the record's `done`, with the strings of
/// earlier records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// fleetkeeper completed it with CONTINUE.
    Continue,
    /// fleetkeeper completed it with ABANDON.
    Abandon,
    /// It was over when looked at (completed by a duplicate, or decided by
    /// the hook's timeout and `DefaultResult`).
    NotActive,
}

impl Outcome {
    /// As the response writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Continue => "continue",
            Outcome::Abandon => "abandon",
            Outcome::NotActive => "not_active",
        }
    }
}

/// The result of one drive, as the response and the log write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriveResult {
    /// Completed with CONTINUE.
    Continue,
    /// Completed with ABANDON.
    Abandon,
    /// Waiting (heartbeated); the next event or the re-trigger continues.
    InProgress,
    /// The action was over.
    NotActive,
    /// `FLEET_DRY_RUN`: the decision, nothing done.
    DryRun,
}

impl DriveResult {
    /// As the response writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DriveResult::Continue => "continue",
            DriveResult::Abandon => "abandon",
            DriveResult::InProgress => "in_progress",
            DriveResult::NotActive => "not_active",
            DriveResult::DryRun => "dry_run",
        }
    }
}

impl std::fmt::Display for DriveResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [&str; 4] = ["Pending:Wait", "Warmed:Pending:Wait", "Terminating:Wait", "Warmed:Terminating:Wait"];
    const PLACES: [Place; 3] = [Place::Ec2, Place::AutoScalingGroup, Place::WarmPool];
    const TRANSITIONS: [Transition; 2] = [Transition::Launching, Transition::Terminating];

    #[test]
    fn the_table_is_aws_s() {
        use Place::*;
        use Transition::*;
        assert_eq!(waiting_states(Launching, AutoScalingGroup), ["Pending:Wait"]);
        assert_eq!(waiting_states(Launching, WarmPool), ["Warmed:Pending:Wait"]);
        assert_eq!(waiting_states(Terminating, Ec2), ["Terminating:Wait", "Warmed:Terminating:Wait"]);
        assert_eq!(waiting_states(Terminating, WarmPool), ["Warmed:Pending:Wait"], "a scale-in back to the pool");
    }

    #[test]
    fn every_waiting_state_maps_back_to_the_destinations_that_wait_in_it() {
        for state in STATES {
            for t in TRANSITIONS {
                let expected: Vec<Place> =
                    PLACES.into_iter().filter(|d| waiting_states(t, *d).contains(&state)).collect();
                // At most one destination per (state, transition): a hook's
                // transition plus the state identify the action.
                assert!(expected.len() <= 1, "{state} {t:?}: {expected:?}");
                assert_eq!(destination_in(state, t), expected.first().copied(), "{state} {t:?}");
            }
            assert!(TRANSITIONS.iter().any(|t| destination_in(state, *t).is_some()), "{state} is a waiting state");
        }
        assert_eq!(destination_in("Warmed:Pending:Wait", Transition::Terminating), Some(Place::WarmPool));
        assert_eq!(destination_in("InService", Transition::Launching), None);
    }

    #[test]
    fn a_missing_destination_is_the_group_s_own() {
        let mut a = LifecycleAction {
            auto_scaling_group_name: "g".into(),
            lifecycle_hook_name: "h".into(),
            instance_id: "i-0".into(),
            transition: Transition::Launching,
            token: None,
            origin: None,
            destination: None,
            notification_metadata: None,
            time_ms: None,
        };
        assert_eq!(destination(&a), Place::AutoScalingGroup);
        a.transition = Transition::Terminating;
        assert_eq!(destination(&a), Place::Ec2);
    }

    #[test]
    fn out_of_service_states() {
        for s in ["Standby", "Terminating", "Terminating:Wait", "Terminating:Retained", "Detaching", "Warmed:Stopped"] {
            assert!(out_of_service(s), "{s}");
        }
        for s in ["InService", "Pending", "Pending:Wait", "Pending:Proceed"] {
            assert!(!out_of_service(s), "{s}");
        }
    }

    #[test]
    fn outcomes_keep_the_strings_of_earlier_records() {
        assert_eq!(serde_json::to_string(&Outcome::NotActive).unwrap(), "\"not_active\"");
        let o: Outcome = serde_json::from_str("\"continue\"").unwrap();
        assert_eq!(o, Outcome::Continue);
    }
}
