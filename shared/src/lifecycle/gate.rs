//! The lifecycle gate: drives one action as far as it can within the
//! invocation, persisting each step, and returns "in progress" (after a
//! heartbeat) when it must wait. Continued by the next event (the
//! catch-up's status event, the delayed re-trigger, the schedule), never by
//! polling past the deadline.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use serde::Serialize;
use thiserror::Error;
use tracing::{error, info, warn};

use super::action::{self, DriveResult, Outcome};
use super::breaker;
use super::plan::{CatchUpState, Duties, HookObs, InstanceState, MountState, Next, Observed, next};
use super::record::{ActionState, CatchUp, LifecycleRecord, PlanRecord};
use super::store::RecordStore;
use crate::Clients;
use crate::clock::Clock;
use crate::config::{CodebaseConfig, Config};
use crate::error::AwsError;
use crate::events::{LifecycleAction, Place, Transition};
use crate::mount_targets;
use crate::ssm_document::history::{InstanceResult, Synced};
use crate::ssm_document::run::Sent;
use crate::store::{CatchUpPlan, StoreError};
use crate::trigger::Retrigger;

/// How long a finished instance item is kept after the instance is gone.
pub(super) const GONE_RETENTION_SECS: u64 = 7 * 86_400;

/// Why an invocation stops when another one moved the instance's record.
const RACED: &str = "another invocation advanced this instance first: it continues";

/// At most this many planner steps per action and invocation.
const MAX_STEPS: usize = 24;

/// How many lost writes a drive re-plans after before leaving the instance
/// to the other writer.
const MAX_RACES: u32 = 2;

/// A heartbeat this recent (in this invocation) is not sent again.
const HEARTBEAT_FRESH_MS: u64 = 60_000;

/// The gate's settings, resolved from the configuration once.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// `FLEET_ASG_NAMES`.
    pub asg_names: Vec<String>,
    /// `FLEET_LIFECYCLE_HOOK_NAMES`.
    pub hook_names: Vec<String>,
    /// `FLEET_TARGET_GROUP_ARNS`.
    pub target_group_arns: Vec<String>,
    /// The mount-target reconcile, when a file system is configured.
    pub mount: Option<mount_targets::Target>,
    /// The catch-up, when a codebase is configured.
    pub catch_up: Option<CatchUpSettings>,
    /// `FLEET_DRY_RUN`.
    pub dry_run: bool,
    /// `FLEET_RECONCILE_INTERVAL_SECONDS`.
    pub reconcile_interval_s: u64,
    /// The delayed re-trigger (`FLEET_RETRIGGER_QUEUE_URL`), when deployed.
    pub retrigger: Option<String>,
}

/// What a catch-up sends.
#[derive(Debug, Clone)]
pub struct CatchUpSettings {
    /// The codebase.
    pub codebase: CodebaseConfig,
    /// `FLEET_SYNC_DESTINATION`.
    pub destination: String,
    /// `FLEET_SYNC_DOCUMENT`.
    pub document: String,
    /// The bucket's region.
    pub region: String,
    /// `FLEET_SYNC_QUARANTINE_AFTER`.
    pub quarantine_after: u32,
    /// Exact releases: the manifest bucket (`FLEET_MANIFEST_BUCKET`).
    pub manifest: Option<crate::ssm_document::ManifestStore>,
    /// `FLEET_KEEP_RELEASES`.
    pub keep_releases: usize,
}

impl GateSettings {
    /// The gate's settings of a configuration validated for `lifecycle-hook`.
    pub fn from_config(config: &Config, region: &str) -> Self {
        let catch_up = config.codebase.as_ref().and_then(|c| {
            Some(CatchUpSettings {
                destination: c.destination.clone()?,
                document: c.document.clone()?,
                codebase: c.clone(),
                region: c.region.clone().unwrap_or_else(|| region.to_owned()),
                quarantine_after: config.quarantine_after,
                manifest: crate::ssm_document::ManifestStore::from_config(config, region),
                keep_releases: config.release.keep_releases,
            })
        });
        GateSettings {
            asg_names: config.asg_names.clone(),
            hook_names: config.lifecycle_hook_names.clone(),
            target_group_arns: config.target_group_arns.clone(),
            // The NFS check is a warning the mount-target function reports;
            // the gate never waits on it (nor fails for want of its permissions).
            mount: mount_targets::Target::from_config(config).map(|t| mount_targets::Target { check_nfs: false, ..t }),
            catch_up,
            dry_run: config.dry_run,
            reconcile_interval_s: config.reconcile_interval_seconds,
            retrigger: config.retrigger_queue_url.clone(),
        }
    }

    pub(super) fn duties(&self) -> Duties {
        Duties { mount: self.mount.is_some(), catch_up: self.catch_up.is_some() }
    }
}

/// A gate failure worth surfacing: AWS or the lock table failed.
#[derive(Debug, Error)]
pub enum GateError {
    /// The lock table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The mount-target reconcile failed.
    #[error(transparent)]
    Mount(#[from] mount_targets::MountError),
    /// The catch-up's parameters do not fit the deployed sync document.
    #[error("the catch-up does not fit the sync document: {0}")]
    Parameters(#[from] crate::ssm_document::ParamError),
}

impl GateError {
    /// Whether a retry may succeed (everything but a request AWS refused as such).
    pub fn is_retryable(&self) -> bool {
        match self {
            GateError::Aws(e) | GateError::Mount(mount_targets::MountError::Aws(e)) => e.worth_redelivering(),
            GateError::Mount(_) | GateError::Parameters(_) => false,
            GateError::Store(crate::store::StoreError::Aws(e)) => e.worth_redelivering(),
            // An unreadable record stays unreadable.
            GateError::Store(_) => false,
        }
    }
}

/// What driving one action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Driven {
    /// The instance.
    pub instance_id: String,
    /// Its group.
    pub group: String,
    /// The hook.
    pub hook: String,
    /// `launching` / `terminating`.
    pub transition: Transition,
    /// Where the action takes the instance.
    pub destination: Place,
    /// The result.
    pub result: DriveResult,
    /// Why (what is waited for, why it was abandoned or refused).
    pub reason: Option<String>,
    /// A configuration refusal holds the instance (loud; never ABANDON).
    pub refused: bool,
    /// Warnings (a group not in use, a drain cut short).
    pub warnings: Vec<String>,
    /// What this invocation did, in order.
    pub actions: Vec<String>,
}

/// A target group's bounds, ms, once read: (healthy within, drain within).
pub(super) type Bounds = (Option<u64>, Option<u64>);

/// Per-invocation answers that do not change within it.
#[derive(Debug, Default)]
pub struct Cache {
    pub(super) hooks: Mutex<HashMap<(String, String), HookObs>>,
    pub(super) attached: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Target group ARN -> its bounds, once read.
    pub(super) target_groups: Mutex<HashMap<String, Bounds>>,
    /// AZ -> why no mount target can serve it (a refusal holds every launch
    /// of the AZ: the reconcile that found it is not run again per instance).
    pub(super) mount_refusals: Mutex<HashMap<String, String>>,
}

/// The gate.
pub struct Gate<'a, S> {
    /// SDK clients.
    pub clients: &'a Clients,
    /// The lock table.
    pub store: &'a S,
    /// Settings.
    pub settings: &'a GateSettings,
    /// Time.
    pub clock: &'a dyn Clock,
    /// Stop starting new work after this moment, epoch ms on `clock` (the
    /// invocation's deadline minus a margin).
    pub until: u64,
    /// Answers cached for this invocation.
    pub cache: Cache,
}

/// One drive's working state.
pub(super) struct Drive {
    pub(super) record: LifecycleRecord,
    pub(super) version: u64,
    pub(super) state: ActionState,
    pub(super) seen: Observed,
    pub(super) out: Driven,
    pub(super) heartbeat_at: Option<u64>,
    /// Whether `state` is the record's own (else a fresh one, never saved
    /// just to say it was not active).
    pub(super) from_record: bool,
    /// Whether the last write lost to another writer (the record is read
    /// again and the step planned anew).
    pub(super) raced: bool,
}

impl<S: RecordStore> Gate<'_, S> {
    /// Drives one action as far as it can go now.
    pub async fn drive(&self, event: &LifecycleAction) -> Result<Driven, GateError> {
        let (record, version) = self.store.lifecycle(&event.instance_id).await?;
        self.drive_loaded(event, record, version).await
    }

    /// The same, with the instance's record already read.
    pub(super) async fn drive_loaded(
        &self,
        event: &LifecycleAction,
        record: LifecycleRecord,
        version: u64,
    ) -> Result<Driven, GateError> {
        let id = event.instance_id.clone();
        let state = record.for_action(event, self.clock.now_ms());
        let action = state.action(&id);
        let mut d = Drive {
            out: Driven {
                instance_id: id.clone(),
                group: action.auto_scaling_group_name.clone(),
                hook: action.lifecycle_hook_name.clone(),
                transition: action.transition,
                destination: action::destination(&action),
                result: DriveResult::InProgress,
                reason: None,
                refused: false,
                warnings: Vec::new(),
                actions: Vec::new(),
            },
            seen: seeded(&state, self.settings.dry_run),
            from_record: record.action.as_ref() == Some(&state),
            record,
            version,
            state,
            heartbeat_at: None,
            raced: false,
        };
        if let Some(done) = d.state.done {
            // A duplicate of an action already finished: nothing to ask AWS.
            d.out.result = DriveResult::NotActive;
            d.out.reason = Some(format!("already finished ({})", done.as_str()));
            return Ok(d.out);
        }
        let mut races = 0;
        for _ in 0..MAX_STEPS {
            let now = self.clock.now_ms();
            if d.raced && races < MAX_RACES {
                // Another writer moved the record: read it again and plan
                // from what it says (it may be sending, or have finished).
                races += 1;
                let (record, version) = self.store.lifecycle(&id).await?;
                d.state = record.for_action(event, now);
                d.from_record = record.action.as_ref() == Some(&d.state);
                (d.record, d.version, d.raced) = (record, version, false);
                if !d.from_record {
                    // The record holds another action now: never overwrite it.
                    d.out.reason = Some(RACED.into());
                    return Ok(d.out);
                }
                (d.seen.catch_up, d.seen.targets) = (None, None);
                (d.seen.active, d.seen.lifecycle_state) = (d.seen.active.filter(|_| self.settings.dry_run), None);
                if let Some(done) = d.state.done {
                    d.out.result = DriveResult::NotActive;
                    d.out.reason = Some(format!("finished meanwhile ({})", done.as_str()));
                    return Ok(d.out);
                }
            }
            let plan = PlanRecord::new(&d.state, &d.record.registered);
            let decision = next(&action, &plan, &d.seen, self.settings.duties(), now);
            if let Next::Observe { stage } = decision {
                self.observe(stage, &action, &mut d).await?;
                continue;
            }
            info!(instance_id = %id, hook = %action.lifecycle_hook_name, next = ?decision, "lifecycle step");
            if self.settings.dry_run {
                d.out.result = DriveResult::DryRun;
                d.out.reason = Some(format!("{decision:?}"));
                return Ok(d.out);
            }
            let waiting = matches!(decision, Next::Wait { .. } | Next::NotActive { .. } | Next::Refused { .. });
            if now >= self.until && !waiting {
                // Out of time: keep the hook alive, the next event continues.
                return self.pause(&action, d, "the invocation's time is up: continued by the next event").await;
            }
            if let Some(done) = self.apply(decision, &action, &mut d, now).await? {
                if d.raced && races < MAX_RACES {
                    continue;
                }
                return Ok(done);
            }
        }
        self.pause(&action, d, "step limit reached: continued by the next event").await
    }

    /// Performs one decision; `Some` when the drive ends here.
    async fn apply(
        &self,
        decision: Next,
        action: &LifecycleAction,
        d: &mut Drive,
        now: u64,
    ) -> Result<Option<Driven>, GateError> {
        let id = &action.instance_id;
        match decision {
            Next::Observe { .. } => {}
            Next::NotActive { reason } => {
                d.out.result = DriveResult::NotActive;
                d.out.reason = Some(reason.clone());
                if !d.from_record {
                    // Nothing of this action was on record: nothing to close,
                    // and a stale event never overwrites the record of the
                    // action in progress.
                    info!(instance_id = %id, %reason, "lifecycle action not active: the record is left as it is");
                    return Ok(Some(d.out.clone()));
                }
                d.state.done = Some(Outcome::NotActive);
                d.state.step = format!("not active: {reason}");
                d.record.action = Some(d.state.clone());
                let gone = action.transition == Transition::Terminating && d.out.destination == Place::Ec2;
                let expires = gone.then(|| now / 1000 + GONE_RETENTION_SECS);
                self.save(id, &d.record, d.version, expires).await?;
                return Ok(Some(d.out.clone()));
            }
            Next::Wait { reason, recheck_s } => {
                let recheck = recheck_s.map(std::time::Duration::from_secs);
                return self.hold(action, d, reason, recheck, false).await.map(Some);
            }
            Next::Refused { reason } => return self.hold(action, d, reason, None, true).await.map(Some),
            Next::SendCatchUp { attempt } => return self.send_catch_up(action, d, attempt, now).await,
            Next::Register { target_groups } => {
                for tg in &target_groups {
                    if !d.record.registered.contains(tg) {
                        d.record.registered.push(tg.clone());
                    }
                }
                // The health wait starts now: a registration meant earlier
                // may never have happened (a failed call, a killed process).
                d.state.registered_at = Some(now);
                d.record.action = Some(d.state.clone());
                // Recorded before registering: a rollback or the reconcile
                // can always tell what fleetkeeper registered.
                if !self.save_step(id, d).await? {
                    return Ok(Some(d.out.clone()));
                }
                for tg in &target_groups {
                    self.register(tg, id).await?;
                    d.out.actions.push(format!("registered in {tg}"));
                }
                d.seen.targets = None;
            }
            Next::Deregister { target_groups } => {
                for tg in &target_groups {
                    self.deregister(tg, id).await?;
                    d.out.actions.push(format!("deregistered from {tg}"));
                }
                d.record.registered.retain(|t| !target_groups.contains(t));
                d.state.drain_started_at.get_or_insert(now);
                d.record.action = Some(d.state.clone());
                if !self.save_step(id, d).await? {
                    return Ok(Some(d.out.clone()));
                }
                d.seen.targets = None;
            }
            Next::Continue { warnings } => {
                for w in &warnings {
                    warn!(instance_id = %id, warning = %w, "lifecycle warning");
                }
                d.out.warnings = warnings;
                return self.finish(action, d, super::plan::Completion::Continue, None, now).await.map(Some);
            }
            Next::Abandon { reason, deregister, class } => {
                if let Some(class) = class.filter(|_| action.transition == Transition::Launching)
                    && let Some(count) = self.breaker_holds(id, class, now).await?
                {
                    let held = format!(
                        "{reason}; {count} launches failed the same way ({class}) in the last {} minutes: the circuit \
                         breaker holds this instance instead of replacing it in a loop. Fix the cause; at the hook's \
                         global timeout its DefaultResult applies",
                        breaker::WINDOW_MS / 60_000
                    );
                    return self.hold(action, d, held, None, true).await.map(Some);
                }
                warn!(instance_id = %id, %reason, "abandoning the lifecycle action");
                for tg in &deregister {
                    self.deregister(tg, id).await?;
                    d.out.actions.push(format!("deregistered from {tg}"));
                }
                d.record.registered.retain(|t| !deregister.contains(t));
                return self.finish(action, d, super::plan::Completion::Abandon, Some(reason), now).await.map(Some);
            }
        }
        Ok(None)
    }

    /// Completes the action; a token that is no longer active means the
    /// action is over (never completed by instance id instead: that would
    /// finish whatever other action the hook now holds).
    async fn finish(
        &self,
        action: &LifecycleAction,
        d: &mut Drive,
        result: super::plan::Completion,
        reason: Option<String>,
        now: u64,
    ) -> Result<Driven, GateError> {
        let id = &action.instance_id;
        // The instance synced if this drive saw its catch-up succeed,
        // whatever becomes of the completion (a CONTINUE by the hook's
        // DefaultResult near its global timeout proves nothing).
        if result == super::plan::Completion::Continue
            && d.seen.catch_up == Some(CatchUpState::Succeeded)
            && let (Some(c), Some(settings)) = (&d.state.catch_up, &self.settings.catch_up)
        {
            let results = [(id.clone(), InstanceResult::Synced)];
            let at = Synced { epoch: &c.epoch, generation: c.generation };
            self.store.record_results(at, &results, now, settings.quarantine_after).await?;
        }
        let completed = self.complete(action, result).await?;
        let (outcome, out) = match (completed, result) {
            (false, _) => (Outcome::NotActive, DriveResult::NotActive),
            (true, super::plan::Completion::Continue) => (Outcome::Continue, DriveResult::Continue),
            (true, super::plan::Completion::Abandon) => (Outcome::Abandon, DriveResult::Abandon),
        };
        if completed {
            d.out.actions.push(result.as_aws().to_owned());
        }

        d.state.done = Some(outcome);
        d.state.step = match (&reason, completed) {
            (_, false) => format!("not active when completing {}", result.as_aws()),
            (Some(r), true) => format!("completed: {} ({r})", result.as_aws()),
            (None, true) => format!("completed: {}", result.as_aws()),
        };
        // The instance leaves for good: its item expires (registrations were
        // removed; an ABANDONed launch is terminated by the group).
        let leaves = match (action.transition, result) {
            (Transition::Terminating, _) => d.out.destination == Place::Ec2,
            (Transition::Launching, super::plan::Completion::Abandon) => true,
            (Transition::Launching, super::plan::Completion::Continue) => false,
        };
        let leaves = leaves && (completed || action.transition == Transition::Terminating);
        let expires = leaves.then(|| now / 1000 + GONE_RETENTION_SECS);
        if expires.is_some() && action.transition == Transition::Terminating {
            d.record.registered.clear();
        }
        d.record.action = Some(d.state.clone());
        self.save(id, &d.record, d.version, expires).await?;
        d.out.result = out;
        d.out.reason = reason;
        Ok(d.out.clone())
    }

    /// Waits: saves the step, keeps the hook alive, asks for a re-trigger.
    async fn hold(
        &self,
        action: &LifecycleAction,
        d: &mut Drive,
        reason: String,
        recheck: Option<std::time::Duration>,
        refused: bool,
    ) -> Result<Driven, GateError> {
        let id = &action.instance_id;
        if refused {
            error!(instance_id = %id, group = %action.auto_scaling_group_name, %reason,
                "launch refused by the configuration: the instance waits (heartbeating) until it is fixed; \
                 at the hook's global timeout its DefaultResult applies");
        }
        // A held instance is looked at again well within its heartbeat
        // timeout (at least a hundredth of the global timeout: AWS's global
        // timeout is min(48 h, 100 x HeartbeatTimeout)), whatever the
        // schedule manages.
        let recheck = recheck.map(|r| r.min(crate::trigger::MAX_DELAY)).or_else(|| {
            let hook = d.seen.hook.filter(|_| refused)?;
            Some(std::time::Duration::from_secs((hook.global_timeout_ms / 100 / 3 / 1000).clamp(5, 900)))
        });
        let now = self.clock.now_ms();
        let send = recheck.filter(|delay| {
            // One re-trigger on its way at a time: a drive from another
            // source (the schedule, a duplicate event) does not start a
            // second chain unless it needs an earlier look.
            let due = now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            d.state.retrigger_at.is_none_or(|pending| pending <= now + 1_000 || pending > due)
        });
        if let Some(delay) = send {
            d.state.retrigger_at = Some(now + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        d.state.step = if refused { format!("refused: {reason}") } else { reason.clone() };
        d.record.action = Some(d.state.clone());
        let Some(v) = self.save(id, &d.record, d.version, None).await? else {
            if let Some(sent) = d.state.catch_up.as_ref().filter(|c| c.command_id.is_some()) {
                self.merge_command_id(id, sent).await?;
            }
            d.out.reason = Some(RACED.into());
            d.raced = true;
            return Ok(d.out.clone());
        };
        d.version = v;
        if !self.keep_alive(action, d).await? {
            return self.ended_meanwhile(action, d, &reason).await;
        }
        d.out.refused = refused;
        d.out.reason = Some(reason);
        if let Some(delay) = send
            && !self.retrigger(action, delay, &mut d.out).await
        {
            // Not on its way after all: the next drive may queue one (best
            // effort; the schedule continues the instance meanwhile).
            d.state.retrigger_at = None;
            d.record.action = Some(d.state.clone());
            if let Some(v) = self.save(&action.instance_id, &d.record, d.version, None).await? {
                d.version = v;
            }
        }
        Ok(d.out.clone())
    }

    /// The hook holds the action no more (found while keeping it alive):
    /// the record says so, as when the probe finds it over.
    async fn ended_meanwhile(
        &self,
        action: &LifecycleAction,
        d: &mut Drive,
        reason: &str,
    ) -> Result<Driven, GateError> {
        let now = self.clock.now_ms();
        d.state.done = Some(Outcome::NotActive);
        d.state.step = format!("not active: the hook holds no action any more ({reason})");
        d.record.action = Some(d.state.clone());
        let gone = action.transition == Transition::Terminating && d.out.destination == Place::Ec2;
        self.save(&action.instance_id, &d.record, d.version, gone.then(|| now / 1000 + GONE_RETENTION_SECS)).await?;
        d.out.result = DriveResult::NotActive;
        d.out.reason = Some(format!("{reason}; the hook holds no action any more"));
        Ok(d.out.clone())
    }

    /// Stops early (time or steps): saves, keeps the hook alive.
    async fn pause(&self, action: &LifecycleAction, mut d: Drive, reason: &str) -> Result<Driven, GateError> {
        d.record.action = Some(d.state.clone());
        if let Some(v) = self.save(&action.instance_id, &d.record, d.version, None).await? {
            d.version = v;
            if !self.keep_alive(action, &mut d).await? {
                return self.ended_meanwhile(action, &mut d, reason).await;
            }
            self.retrigger(action, std::time::Duration::from_secs(1), &mut d.out).await;
        }
        d.out.reason = Some(reason.to_owned());
        Ok(d.out)
    }

    /// Heartbeats unless this invocation just did; `false` when the hook
    /// holds no such action any more.
    async fn keep_alive(&self, action: &LifecycleAction, d: &mut Drive) -> Result<bool, GateError> {
        let now = self.clock.now_ms();
        if d.heartbeat_at.is_some_and(|t| now < t + HEARTBEAT_FRESH_MS) {
            return Ok(true);
        }
        if !self.heartbeat(action).await? {
            return Ok(false);
        }
        d.heartbeat_at = Some(now);
        d.out.actions.push("heartbeat".into());
        Ok(true)
    }

    /// Counts a launch failure of `class`; `Some(count)` when the breaker
    /// is open for it (the launch is held instead of abandoned).
    async fn breaker_holds(&self, id: &str, class: &str, now: u64) -> Result<Option<usize>, GateError> {
        for _ in 0..2 {
            let (mut b, version) = self.store.breaker().await?;
            b.record(class, id, now);
            let saved = self.store.save_breaker(&b, version).await?;
            if saved.is_some() || b.open(class, now) {
                return Ok(b.open(class, now).then(|| b.count(class, now)));
            }
        }
        // Lost two races: the others counted their failures; this one stands.
        let (b, _) = self.store.breaker().await?;
        Ok(b.open(class, now).then(|| b.count(class, now)))
    }

    /// Asks for `action` to be driven again after `delay`; whether it was
    /// queued (for an event the invocation could not reach in time).
    pub async fn requeue(&self, action: &LifecycleAction, delay: std::time::Duration) -> bool {
        self.settings.retrigger.is_some() && self.send_retrigger(action, delay).await.is_ok()
    }

    /// Queues `action` to the re-trigger queue (none configured: nothing sent, `Ok`).
    async fn send_retrigger(&self, action: &LifecycleAction, delay: std::time::Duration) -> Result<(), AwsError> {
        let Some(queue) = &self.settings.retrigger else { return Ok(()) };
        Retrigger { sqs: &self.clients.sqs, queue_url: queue }.lifecycle(action, delay).await
    }

    /// Asks for this action to be driven again after `delay` (best effort:
    /// the schedule is the backstop).
    /// Whether it was queued (`true` without a queue: nothing to wait for).
    async fn retrigger(&self, action: &LifecycleAction, delay: std::time::Duration, out: &mut Driven) -> bool {
        if self.settings.retrigger.is_none() {
            return true;
        }
        match self.send_retrigger(action, delay).await {
            Ok(()) => {
                out.actions.push(format!("re-trigger in {} s", delay.as_secs()));
                true
            }
            Err(e) => {
                warn!(instance_id = %action.instance_id, error = %e,
                    "the delayed re-trigger could not be queued: the schedule continues this instance");
                false
            }
        }
    }

    async fn send_catch_up(
        &self,
        action: &LifecycleAction,
        d: &mut Drive,
        attempt: u32,
        now: u64,
    ) -> Result<Option<Driven>, GateError> {
        let id = &action.instance_id;
        let Some(settings) = &self.settings.catch_up else { return Ok(Some(d.out.clone())) };
        let lineage = self.store.requested().await?;
        if let CatchUpPlan::Hold(reason) = lineage.catch_up_plan() {
            // A catch-up would put the prefix live on this instance, then in
            // service: the instances refused it, or a rollback pinned the
            // fleet to a release that cannot be materialized.
            return self.hold(action, d, format!("the launch waits: {reason}"), None, true).await.map(Some);
        }
        // Exact releases: the release the fleet serves (the pinned one while
        // pinned), as its generation, when it can be materialized (a
        // versioned bucket) and the document takes a manifest, and the
        // instance never synced a later generation of the lineage (a
        // warm-pool instance back with a wave's newer release would find it
        // superseded and go into service with it). Otherwise the prefix as
        // it is, as the generation requested.
        let document = crate::ssm_document::run::resolve(&self.clients.ssm, &settings.document, None).await?;
        let exact_possible = settings.manifest.is_some() && document.declared.contains("manifest");
        let (mut manifest, pinned) = match lineage.catch_up_plan().usable(exact_possible) {
            CatchUpPlan::Exact { release, pinned } => (Some(release), pinned),
            CatchUpPlan::Prefix => (None, false),
            CatchUpPlan::Hold(reason) => {
                return self.hold(action, d, format!("the launch waits: {reason}"), None, true).await.map(Some);
            }
        };
        if let Some(release) = &manifest {
            let ahead = self
                .store
                .instances(std::slice::from_ref(id))
                .await?
                .into_iter()
                .any(|r| r.last_synced_epoch == lineage.epoch && r.last_synced_gen > release.generation);
            if ahead && pinned {
                let reason = "the launch waits: the instance synced a generation newer than the release the fleet is \
                              pinned to (a warm-pool instance): it would keep that one. Resume the fleet, or replace \
                              the instance"
                    .to_owned();
                return self.hold(action, d, reason, None, true).await.map(Some);
            }
            if ahead {
                manifest = None;
            }
        }
        let generation = manifest.as_ref().map_or(lineage.requested_gen, |r| r.generation);
        let rollback = pinned && manifest.is_some();
        let keep = lineage.keep_ids(settings.keep_releases);
        let epoch = lineage.epoch;
        let intent = CatchUp {
            attempt,
            generation,
            epoch: epoch.clone(),
            command_id: None,
            sent_at: now,
            manifest,
            rollback,
            keep,
        };
        d.state.catch_up = Some(intent.clone());
        d.state.step = format!("sending catch-up to generation {generation} (attempt {attempt})");
        d.record.action = Some(d.state.clone());
        // The intent is on record before the command exists: a racing
        // invocation loses here instead of sending twice.
        let Some(v) = self.save(id, &d.record, d.version, None).await? else {
            d.out.reason = Some("another invocation is sending the catch-up".into());
            d.raced = true;
            return Ok(Some(d.out.clone()));
        };
        d.version = v;
        match self.send_catch_up_command(id, &intent, settings, &document).await? {
            Sent::Command(command_id) => {
                d.out.actions.push(format!("catch-up {command_id} to generation {generation} (attempt {attempt})"));
                if let Some(c) = d.state.catch_up.as_mut() {
                    c.command_id = Some(command_id);
                }
                d.seen.catch_up = Some(CatchUpState::Running);
            }
            Sent::InDoubt => {
                // Perhaps sent, not listed yet: the intent stays and a later
                // observation finds it by comment.
                d.out.actions.push(format!("catch-up to generation {generation} in doubt (attempt {attempt})"));
                d.seen.catch_up = Some(CatchUpState::Running);
            }
            Sent::Refused => {
                // SSM refused the instance (agent not registered yet).
                d.state.catch_up = None;
                d.state.ready.agent = false;
                d.seen.agent_online = Some(false);
            }
        }
        // Saved with the next step (the wait for the command), which merges
        // the command id into the record if another writer moved it.
        d.record.action = Some(d.state.clone());
        Ok(None)
    }

    /// The record moved while the catch-up was being sent: its command id
    /// is written into the record's intent, if the intent is still ours.
    async fn merge_command_id(&self, id: &str, sent: &CatchUp) -> Result<Option<u64>, GateError> {
        let (Some(command_id), intent) = (sent.command_id.clone(), sent) else { return Ok(None) };
        let (mut record, version) = self.store.lifecycle(id).await?;
        let Some(c) = record.action.as_mut().and_then(|a| a.catch_up.as_mut()) else { return Ok(None) };
        if c.command_id.is_some() || c.sent_at != intent.sent_at || c.attempt != intent.attempt {
            return Ok(None);
        }
        c.command_id = Some(command_id);
        self.save(id, &record, version, None).await
    }

    /// Saves the drive's record; `false` when another writer moved it first
    /// (the drive is marked raced: it reads the record again and re-plans).
    async fn save_step(&self, id: &str, d: &mut Drive) -> Result<bool, GateError> {
        match self.save(id, &d.record, d.version, None).await? {
            Some(v) => {
                d.version = v;
                Ok(true)
            }
            None => {
                d.out.reason = Some(RACED.into());
                d.raced = true;
                Ok(false)
            }
        }
    }

    pub(super) async fn save(
        &self,
        id: &str,
        record: &LifecycleRecord,
        version: u64,
        expires: Option<u64>,
    ) -> Result<Option<u64>, GateError> {
        let saved = self.store.save_lifecycle(id, record, version, expires).await?;
        if saved.is_none() {
            info!(instance_id = %id, "instance record moved meanwhile: another invocation drives it");
        }
        Ok(saved)
    }
}

/// What an action's record already found ready (skipping those calls).
fn seeded(state: &ActionState, dry_run: bool) -> Observed {
    let hook = match (state.global_deadline, state.default_result) {
        (Some(deadline), Some(default_result)) => {
            Some(HookObs { global_timeout_ms: deadline.saturating_sub(state.started_at), default_result })
        }
        _ => None,
    };
    Observed {
        // A dry run never heartbeats: it assumes the action is active.
        active: dry_run.then_some(true),
        hook,
        instance: state.ready.zone.clone().map(|zone| InstanceState::Running { zone }),
        mount: state.ready.mount.then_some(MountState::Ready),
        agent_online: state.ready.agent.then_some(true),
        ..Observed::default()
    }
}
