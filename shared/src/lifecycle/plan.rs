//! The pure lifecycle planner: from the action, the instance's record and
//! what has been observed so far, the next step.
//!
//! The planner asks for each observation only when it needs it
//! ([`Next::Observe`]); the executor fetches it and asks again. So an
//! action that is no longer active costs one AWS call, and the catch-up's
//! status is read only once the mount and the agent are ready.
//!
//! Every action:
//!
//! 1. fleetkeeper's hook must still hold it (a heartbeat by token, or by
//!    instance id for an action found by the reconcile): "No active
//!    Lifecycle Action" means it is over (completed by a duplicate, or
//!    decided by the hook's timeout), and a token names exactly one action;
//! 2. an action found without its token must also be the one its lifecycle
//!    state stands for ([`super::action::waiting_states`]);
//! 3. near the hook's global timeout its `DefaultResult` is applied
//!    (deregistering first when it is ABANDON), and the log says so.
//!
//! Launch (into service, into a warm pool, or out of a warm pool):
//!
//! 1. the instance must exist and be running; EC2 may not list a new
//!    instance yet (eventual consistency): waited for, then gone;
//! 2. the EFS mount target of its AZ (when configured): ready, or wait; a
//!    configuration refusal (wrong VPC, One Zone elsewhere) holds the
//!    instance, loudly, and never ABANDONs it into a replacement loop;
//! 3. the codebase (when configured): the SSM agent `Online` (an agent that
//!    never comes Online is a configuration refusal too), then one catch-up
//!    sync to the requested generation; a failed catch-up is retried once,
//!    then ABANDON. Leaving a warm pool catches up again (another action);
//! 4. into a warm pool: CONTINUE without registering;
//! 5. register in every managed target group not attached to the group (a
//!    `draining` target is registered again), wait (bounded) for healthy;
//!    `unused` / `Target.NotInUse` proceeds with a warning; a target that
//!    never turns healthy is deregistered, then ABANDON;
//! 6. CONTINUE.
//!
//! Terminate (out of the group, out of the pool, or back into the pool with
//! `ReuseOnScaleIn`): deregister from managed non-attached groups (an absent
//! target is fine; also near the global timeout), wait until no longer
//! `draining` (bounded by the deregistration delay), then CONTINUE.

use serde::Serialize;

use super::action::{destination, waiting_states};
use super::record::{CatchUp, PlanRecord};
use crate::events::{LifecycleAction, Place, Transition};
use crate::ssm_document::run::LISTING_LAG_MS;

/// How long an instance's SSM agent may take to come `Online`.
pub const AGENT_WAIT_MS: u64 = 15 * 60 * 1000;

/// How long a catch-up may stay "being sent" without a recorded command id
/// before its command is looked up by comment and, if none exists, sent again.
pub const SEND_GRACE_MS: u64 = 2 * 60 * 1000;

/// What is kept back from the hook's global timeout.
pub const GLOBAL_MARGIN_MS: u64 = 10 * 60 * 1000;

/// Extra time on top of a target group's health-check or drain bound.
pub const TARGET_MARGIN_MS: u64 = 60 * 1000;

/// How long EC2 may not list an instance after its action began before it
/// counts as gone (EC2 API reference, "Eventual consistency in the Amazon
/// EC2 API": a describe right after launch may answer
/// `InvalidInstanceID.NotFound`; AWS documents no bound).
pub const NOT_FOUND_GRACE_MS: u64 = 5 * 60 * 1000;

/// A launch failure class: the catch-up failed twice.
pub const CATCH_UP_FAILED: &str = "catch-up failed";

/// A launch failure class: a target group never reported the instance healthy.
pub const NEVER_HEALTHY: &str = "never healthy";

/// Observations the planner may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Whether fleetkeeper's hook still holds the action (a heartbeat).
    Active,
    /// The hook's timeouts and default result.
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
    /// EC2 does not know it (`InvalidInstanceID.NotFound`): not yet, or gone.
    NotFound,
    /// `shutting-down` or `terminated`.
    Gone,
}

/// A lifecycle action's result (`CONTINUE` / `ABANDON`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Completion {
    /// `CONTINUE`.
    Continue,
    /// `ABANDON`.
    Abandon,
}

impl Completion {
    /// AWS's spelling.
    pub fn as_aws(self) -> &'static str {
        match self {
            Completion::Continue => "CONTINUE",
            Completion::Abandon => "ABANDON",
        }
    }
}

/// The hook's settings that bound an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HookObs {
    /// `GlobalTimeout`, ms.
    pub global_timeout_ms: u64,
    /// `DefaultResult`: what AWS applies at a timeout.
    pub default_result: Completion,
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
    /// Whether fleetkeeper's hook still holds the action.
    pub active: Option<bool>,
    /// The hook's settings.
    pub hook: Option<HookObs>,
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
        /// Why: the hook holds no action, or the lifecycle state found.
        reason: String,
    },
    /// Work is under way: heartbeat and return "in progress".
    Wait {
        /// What is being waited for.
        reason: String,
        /// When to look again, seconds (the delayed re-trigger); `None`: an
        /// event continues (the catch-up's status event).
        recheck_s: Option<u64>,
    },
    /// A configuration refusal: hold the instance (heartbeat, "in
    /// progress"), loudly, until it is fixed or the hook's global timeout
    /// applies its `DefaultResult`. Never ABANDON: every replacement would
    /// fail the same way.
    Refused {
        /// What is wrong and how to fix it.
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
        /// The failure's class when the instance failed (the launch
        /// breaker counts them; see `super::breaker`).
        class: Option<&'static str>,
    },
}

/// Decides the next step.
pub fn next(action: &LifecycleAction, record: &PlanRecord, seen: &Observed, duties: Duties, now: u64) -> Next {
    let observe = |stage| Next::Observe { stage };
    let Some(active) = seen.active else { return observe(Stage::Active) };
    if !active {
        return Next::NotActive { reason: "the hook holds no action on the instance any more".into() };
    }
    let Some(hook) = seen.hook else { return observe(Stage::Hook) };
    let near_global = now + GLOBAL_MARGIN_MS >= record.started_at + hook.global_timeout_ms;
    if action.token.is_none() {
        // Found without its event: the state must be the one it waits in.
        let Some(state) = &seen.lifecycle_state else { return observe(Stage::Lifecycle) };
        if !state.as_deref().is_some_and(|s| waiting_states(action.transition, destination(action)).contains(&s)) {
            return Next::NotActive {
                reason: format!("lifecycle state {}", state.as_deref().unwrap_or("none (not in the group)")),
            };
        }
    }
    match action.transition {
        Transition::Launching => launch(action, record, seen, duties, now, near_global.then_some(hook.default_result)),
        Transition::Terminating => terminate(record, seen, now, near_global),
    }
}

fn launch(
    action: &LifecycleAction,
    record: &PlanRecord,
    seen: &Observed,
    duties: Duties,
    now: u64,
    near_global: Option<Completion>,
) -> Next {
    let failed = |reason: String, class| Next::Abandon { reason, deregister: record.registered.clone(), class };
    let abandon = |reason: String| failed(reason, None);
    match near_global {
        Some(Completion::Abandon) => {
            return abandon("the lifecycle hook's global timeout is near: its DefaultResult ABANDON applies".into());
        }
        Some(Completion::Continue) => {
            return Next::Continue {
                warnings: vec![
                    "the lifecycle hook's global timeout is near: its DefaultResult CONTINUE applies".into(),
                ],
            };
        }
        None => {}
    }
    let Some(instance) = &seen.instance else { return Next::Observe { stage: Stage::Instance } };
    match instance {
        InstanceState::Gone => return abandon("the instance is gone (shutting down or terminated)".into()),
        InstanceState::NotFound if now < record.started_at + NOT_FOUND_GRACE_MS => {
            return Next::Wait {
                reason: "EC2 does not list the instance yet (eventual consistency)".into(),
                recheck_s: Some(15),
            };
        }
        InstanceState::NotFound => {
            return abandon(format!(
                "EC2 has not known the instance for {} minutes: it is gone",
                NOT_FOUND_GRACE_MS / 60_000
            ));
        }
        InstanceState::Pending => {
            return Next::Wait { reason: "the instance is still pending".into(), recheck_s: Some(15) };
        }
        InstanceState::Stopped => return Next::Wait { reason: "the instance is stopped".into(), recheck_s: Some(60) },
        InstanceState::Running { .. } => {}
    }
    if duties.mount {
        match &seen.mount {
            None => return Next::Observe { stage: Stage::Mount },
            Some(MountState::InProgress) => {
                return Next::Wait { reason: "the AZ's EFS mount target is being created".into(), recheck_s: Some(30) };
            }
            Some(MountState::Refused(why)) => {
                return Next::Refused { reason: format!("no EFS mount target can serve this AZ: {why}") };
            }
            Some(MountState::Ready) => {}
        }
    }
    if duties.catch_up {
        let Some(online) = seen.agent_online else { return Next::Observe { stage: Stage::Agent } };
        let current = record.catch_up.as_ref();
        if !online && current.is_none_or(|c| c.command_id.is_none()) {
            if now >= record.started_at + AGENT_WAIT_MS {
                return Next::Refused {
                    reason: format!(
                        "the SSM agent has not come Online in {} minutes: check the instance profile \
                         (AmazonSSMManagedInstanceCore), the agent, and the instance's network path to SSM",
                        AGENT_WAIT_MS / 60_000
                    ),
                };
            }
            return Next::Wait { reason: "waiting for the SSM agent to come Online".into(), recheck_s: Some(30) };
        }
        match current {
            None => return Next::SendCatchUp { attempt: 1 },
            Some(c) => match catch_up_step(c, seen, now) {
                Step::Done => {}
                Step::Next(n) => return n,
                Step::Fail(reason) => return failed(reason, Some(CATCH_UP_FAILED)),
            },
        }
    }
    if action.destination == Some(Place::WarmPool) {
        return Next::Continue { warnings: vec![] };
    }
    let Some(targets) = &seen.targets else { return Next::Observe { stage: Stage::Targets } };
    // A draining target (an instance back from the pool within the
    // deregistration delay) is registered again: registering re-registers it.
    let missing: Vec<String> = targets
        .iter()
        .filter(|t| matches!(t.health, Health::Absent | Health::Draining))
        .map(|t| t.arn.clone())
        .collect();
    if !missing.is_empty() {
        return Next::Register { target_groups: missing };
    }
    let mut warnings = Vec::new();
    let mut waiting = Vec::new();
    for t in targets {
        match &t.health {
            Health::Healthy | Health::Absent | Health::Draining => {}
            Health::NotInUse => {
                warnings.push(format!("{} does not use the instance (Target.NotInUse): proceeding", t.arn))
            }
            Health::NotYet(state) => waiting.push((t, state.clone())),
        }
    }
    if let Some((t, state)) = waiting.first() {
        let since = record.registered_at.unwrap_or(now);
        if now >= since + t.healthy_within_ms + TARGET_MARGIN_MS {
            let reason = format!("{} did not report the instance healthy in time (still {state})", t.arn);
            return failed(reason, Some(NEVER_HEALTHY));
        }
        return Next::Wait {
            reason: format!("waiting for {} to report the instance healthy ({state})", t.arn),
            recheck_s: Some((t.healthy_within_ms / 5_000).clamp(5, 60)),
        };
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
        return Step::Next(Next::Wait {
            reason: "the catch-up is being sent".into(),
            recheck_s: Some((c.sent_at + SEND_GRACE_MS).saturating_sub(now) / 1000 + 1),
        });
    }
    let Some(state) = &seen.catch_up else { return Step::Next(Next::Observe { stage: Stage::CatchUp }) };
    match state {
        CatchUpState::Succeeded => Step::Done,
        CatchUpState::Running => {
            Step::Next(Next::Wait {
                reason: format!("catch-up sync to generation {} running", c.generation),
                // Its status event continues it (also one that arrives before
                // the command id is on record); a command not listed yet is
                // looked up again after the listing lag.
                recheck_s: c.command_id.is_none().then_some(LISTING_LAG_MS / 1000),
            })
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
    // Also near the global timeout: one call, and the instance must not
    // take traffic while it stops (only the drain wait is cut short).
    if !registered.is_empty() {
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
        return Next::Wait {
            reason: format!("draining from {}", t.arn),
            recheck_s: Some(((since + t.drain_within_ms).saturating_sub(now) / 1000).clamp(5, 900)),
        };
    }
    Next::Continue { warnings: vec![] }
}
