//! The pure lifecycle planner: from the action, the instance's record and
//! what has been observed so far, the next step.
//!
//! The planner asks for each observation only when it needs it
//! ([`Next::Observe`]); the executor fetches it and asks again. So an
//! instance whose action is no longer active costs one AWS call, and the
//! catch-up's status is read only once the mount and the agent are ready.
//!
//! Launch (into service, into a warm pool, or out of a warm pool):
//!
//! 1. the hook's global timeout is near: ABANDON (deregistering what
//!    fleetkeeper registered);
//! 2. the action is not active any more (the instance is in service, gone,
//!    or waits on another transition): nothing to complete;
//! 3. the instance must exist and be running: gone is a definite failure;
//! 4. the EFS mount target of its AZ (when configured): ready, or wait; a
//!    refusal (wrong VPC, One Zone elsewhere) is a definite failure;
//! 5. the codebase (when configured): the SSM agent `Online` (bounded wait),
//!    then one catch-up sync to the requested generation; a failed catch-up
//!    is retried once, then ABANDON. Leaving a warm pool catches up again;
//! 6. into a warm pool: CONTINUE without registering;
//! 7. register in every managed target group not attached to the group, wait
//!    (bounded) for healthy; `unused` / `Target.NotInUse` proceeds with a
//!    warning; a target that never turns healthy is deregistered, then ABANDON;
//! 8. CONTINUE.
//!
//! Terminate: deregister from managed non-attached groups (an absent target
//! is fine), wait until no longer `draining` (bounded by the deregistration
//! delay), then CONTINUE — also when the global timeout is near, since both
//! results terminate the instance.

use serde::Serialize;

use super::record::{CatchUp, PlanRecord};
use crate::events::{LifecycleAction, Place, Transition};

/// How long an instance's SSM agent may take to come `Online`.
pub const AGENT_WAIT_MS: u64 = 15 * 60 * 1000;

/// How long a catch-up may stay "being sent" without a recorded command id
/// before its command is looked up by comment and, if none exists, sent again.
pub const SEND_GRACE_MS: u64 = 2 * 60 * 1000;

/// What is kept back from the hook's global timeout.
pub const GLOBAL_MARGIN_MS: u64 = 10 * 60 * 1000;

/// Extra time on top of a target group's health-check or drain bound.
pub const TARGET_MARGIN_MS: u64 = 60 * 1000;

/// Observations the planner may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The hook's timeouts.
    Hook,
    /// The group's view of the instance (lifecycle state).
    Lifecycle,
    /// EC2's view of the instance.
    Instance,
    /// The EFS mount target of its AZ (ensured, then observed).
    Mount,
    /// The SSM agent.
    Agent,
    /// The catch-up command.
    CatchUp,
    /// The managed target groups not attached to the group, and the instance's health in them.
    Targets,
}

/// EC2's view of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// `pending`.
    Pending,
    /// `running`, in this AZ.
    Running {
        /// Its AZ.
        zone: String,
    },
    /// `stopping` / `stopped`.
    Stopped,
    /// `shutting-down`, `terminated`, or unknown to EC2.
    Gone,
}

/// The EFS mount target of the instance's AZ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountState {
    /// Available.
    Ready,
    /// Being created.
    InProgress,
    /// Refused or failed, with the reason.
    Refused(String),
}

/// The catch-up command's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUpState {
    /// Not sent, or sent without a command that can be found (send it).
    Missing,
    /// Still running (or not visible yet).
    Running,
    /// It synced.
    Succeeded,
    /// It failed, with SSM's status.
    Failed(String),
}

/// An instance's health in one target group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not registered.
    Absent,
    /// `initial` / `unhealthy` / `unavailable`: not serving yet.
    NotYet(String),
    /// `healthy`.
    Healthy,
    /// `unused` / `Target.NotInUse`: the group serves no listener in this AZ.
    NotInUse,
    /// `draining`.
    Draining,
}

/// One managed target group not attached to the Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetObs {
    /// Its ARN.
    pub arn: String,
    /// The instance's health there.
    pub health: Health,
    /// Health-check interval × healthy threshold, ms (launch bound).
    pub healthy_within_ms: u64,
    /// The deregistration delay, ms (terminate bound).
    pub drain_within_ms: u64,
}

/// What has been observed so far (`None`: not asked for yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The hook's global timeout, ms.
    pub global_timeout_ms: Option<u64>,
    /// The group's lifecycle state for the instance (`Some(None)`: not in a group).
    pub lifecycle_state: Option<Option<String>>,
    /// EC2's view.
    pub instance: Option<InstanceState>,
    /// The mount target.
    pub mount: Option<MountState>,
    /// Whether the agent is `Online`.
    pub agent_online: Option<bool>,
    /// The catch-up.
    pub catch_up: Option<CatchUpState>,
    /// The managed non-attached target groups.
    pub targets: Option<Vec<TargetObs>>,
}

/// What the configuration asks the gate to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Duties {
    /// Ensure the AZ's mount target (`FLEET_EFS_FILE_SYSTEM_ID` set).
    pub mount: bool,
    /// Catch up on the codebase (`FLEET_CODEBASE_BUCKET` set).
    pub catch_up: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "next", rename_all = "snake_case")]
pub enum Next {
    /// Fetch this observation, then ask again.
    Observe {
        /// Which.
        stage: Stage,
    },
    /// The action is not active: nothing to complete.
    NotActive {
        /// The lifecycle state found.
        state: Option<String>,
    },
    /// Work is under way: heartbeat and return "in progress".
    Wait {
        /// What is being waited for.
        reason: String,
    },
    /// Send the catch-up sync (attempt 1 or 2).
    SendCatchUp {
        /// The attempt.
        attempt: u32,
    },
    /// Register in these target groups.
    Register {
        /// Their ARNs.
        target_groups: Vec<String>,
    },
    /// Deregister from these target groups.
    Deregister {
        /// Their ARNs.
        target_groups: Vec<String>,
    },
    /// Complete with CONTINUE.
    Continue {
        /// Things to know (a group not in use, a drain cut short).
        warnings: Vec<String>,
    },
    /// Deregister what fleetkeeper registered, then complete with ABANDON.
    Abandon {
        /// Why (a definite failure, or the global timeout near).
        reason: String,
        /// Groups to deregister first.
        deregister: Vec<String>,
    },
}

/// The launch phase an action belongs to (a warm-pool instance launches twice).
pub fn phase(action: &LifecycleAction) -> String {
    let place = |p: Option<Place>| match p {
        Some(Place::Ec2) => "EC2",
        Some(Place::AutoScalingGroup) | None => "AutoScalingGroup",
        Some(Place::WarmPool) => "WarmPool",
    };
    let origin = action.origin.map_or("EC2", |p| place(Some(p)));
    format!("{origin}->{}", place(action.destination))
}

fn waiting_states(action: &LifecycleAction) -> &'static [&'static str] {
    match action.transition {
        Transition::Launching => &["Pending:Wait", "Warmed:Pending:Wait"],
        Transition::Terminating => &["Terminating:Wait", "Warmed:Terminating:Wait"],
    }
}

/// Decides the next step.
pub fn next(action: &LifecycleAction, record: &PlanRecord, seen: &Observed, duties: Duties, now: u64) -> Next {
    let observe = |stage| Next::Observe { stage };
    let Some(global) = seen.global_timeout_ms else { return observe(Stage::Hook) };
    let near_global = now + GLOBAL_MARGIN_MS >= record.started_at + global;

    let Some(state) = &seen.lifecycle_state else { return observe(Stage::Lifecycle) };
    if !state.as_deref().is_some_and(|s| waiting_states(action).contains(&s)) {
        return Next::NotActive { state: state.clone() };
    }
    match action.transition {
        Transition::Launching => launch(action, record, seen, duties, now, near_global),
        Transition::Terminating => terminate(record, seen, now, near_global),
    }
}

fn launch(
    action: &LifecycleAction,
    record: &PlanRecord,
    seen: &Observed,
    duties: Duties,
    now: u64,
    near_global: bool,
) -> Next {
    let abandon = |reason: String| Next::Abandon { reason, deregister: record.registered.clone() };
    if near_global {
        return abandon("the lifecycle hook's global timeout is near".into());
    }
    let Some(instance) = &seen.instance else { return Next::Observe { stage: Stage::Instance } };
    match instance {
        InstanceState::Gone => return abandon("the instance is gone (terminated or unknown to EC2)".into()),
        InstanceState::Pending => return Next::Wait { reason: "the instance is still pending".into() },
        InstanceState::Stopped => return Next::Wait { reason: "the instance is stopped".into() },
        InstanceState::Running { .. } => {}
    }
    if duties.mount {
        match &seen.mount {
            None => return Next::Observe { stage: Stage::Mount },
            Some(MountState::InProgress) => {
                return Next::Wait { reason: "the AZ's EFS mount target is being created".into() };
            }
            Some(MountState::Refused(why)) => return abandon(format!("no EFS mount target can serve this AZ: {why}")),
            Some(MountState::Ready) => {}
        }
    }
    if duties.catch_up {
        let Some(online) = seen.agent_online else { return Next::Observe { stage: Stage::Agent } };
        let current = record.catch_up.as_ref().filter(|c| c.phase == phase(action));
        if !online && current.is_none_or(|c| c.command_id.is_none()) {
            if now >= record.started_at + AGENT_WAIT_MS {
                return abandon(format!("the SSM agent did not come Online within {} minutes", AGENT_WAIT_MS / 60_000));
            }
            return Next::Wait { reason: "waiting for the SSM agent to come Online".into() };
        }
        match current {
            None => return Next::SendCatchUp { attempt: 1 },
            Some(c) => match catch_up_step(c, seen, now) {
                Step::Done => {}
                Step::Next(n) => return n,
                Step::Fail(reason) => return abandon(reason),
            },
        }
    }
    if action.destination == Some(Place::WarmPool) {
        return Next::Continue { warnings: vec![] };
    }
    let Some(targets) = &seen.targets else { return Next::Observe { stage: Stage::Targets } };
    let missing: Vec<String> = targets.iter().filter(|t| t.health == Health::Absent).map(|t| t.arn.clone()).collect();
    if !missing.is_empty() {
        return Next::Register { target_groups: missing };
    }
    let mut warnings = Vec::new();
    let mut waiting = Vec::new();
    for t in targets {
        match &t.health {
            Health::Healthy | Health::Absent => {}
            Health::NotInUse => {
                warnings.push(format!("{} does not use the instance (Target.NotInUse): proceeding", t.arn))
            }
            Health::NotYet(state) => waiting.push((t, state.clone())),
            Health::Draining => waiting.push((t, "draining".to_owned())),
        }
    }
    if let Some((t, state)) = waiting.first() {
        let since = record.registered_at.unwrap_or(now);
        if now >= since + t.healthy_within_ms + TARGET_MARGIN_MS {
            return abandon(format!("{} did not report the instance healthy in time (still {state})", t.arn));
        }
        return Next::Wait { reason: format!("waiting for {} to report the instance healthy ({state})", t.arn) };
    }
    Next::Continue { warnings }
}

enum Step {
    Done,
    Next(Next),
    Fail(String),
}

fn catch_up_step(c: &CatchUp, seen: &Observed, now: u64) -> Step {
    if c.command_id.is_none() && now < c.sent_at + SEND_GRACE_MS {
        return Step::Next(Next::Wait { reason: "the catch-up is being sent".into() });
    }
    let Some(state) = &seen.catch_up else { return Step::Next(Next::Observe { stage: Stage::CatchUp }) };
    match state {
        CatchUpState::Succeeded => Step::Done,
        CatchUpState::Running => {
            Step::Next(Next::Wait { reason: format!("catch-up sync to generation {} running", c.generation) })
        }
        // Sent, but no command exists: the sender died before SendCommand.
        CatchUpState::Missing => Step::Next(Next::SendCatchUp { attempt: c.attempt }),
        CatchUpState::Failed(_) if c.attempt < 2 => Step::Next(Next::SendCatchUp { attempt: c.attempt + 1 }),
        CatchUpState::Failed(status) => Step::Fail(format!(
            "the catch-up sync failed twice ({status}); repeated ABANDONs make the group replace instances in a loop: fix the codebase or the instance image"
        )),
    }
}

fn terminate(record: &PlanRecord, seen: &Observed, now: u64, near_global: bool) -> Next {
    let Some(targets) = &seen.targets else { return Next::Observe { stage: Stage::Targets } };
    let registered: Vec<String> = targets
        .iter()
        .filter(|t| matches!(t.health, Health::Healthy | Health::NotYet(_) | Health::NotInUse))
        .map(|t| t.arn.clone())
        .collect();
    if !registered.is_empty() && !near_global {
        return Next::Deregister { target_groups: registered };
    }
    let draining: Vec<&TargetObs> = targets.iter().filter(|t| t.health == Health::Draining).collect();
    if let Some(t) = draining.iter().max_by_key(|t| t.drain_within_ms) {
        let since = record.drain_started_at.unwrap_or(now);
        if near_global {
            return Next::Continue {
                warnings: vec!["the global timeout is near: terminating while still draining".into()],
            };
        }
        if now >= since + t.drain_within_ms + TARGET_MARGIN_MS {
            return Next::Continue {
                warnings: vec![format!("{} still draining past its deregistration delay: terminating", t.arn)],
            };
        }
        return Next::Wait { reason: format!("draining from {}", t.arn) };
    }
    Next::Continue { warnings: vec![] }
}
