//! `codebase-sync`: bursts of uploads become one fenced sync wave of a
//! settled codebase.
//!
//! One invocation with relevant S3 events (created or removed objects in the
//! codebase bucket, under its prefix, not excluded; in release-marker mode
//! only the marker being written) makes **one** demand write, stamped with
//! the changes' S3 event times, and **one** try at starting a wave. The wave
//! starts once no change happened for the quiet period (or the first
//! unsynced change reached the max delay); until then the invocation queues
//! its own delayed start (`{"action": "sync-due"}`, one at a time) and
//! returns. `{"action": "sync"}` starts at once (`"allow_shrink": true`
//! also lifts the instances' shrink guard for it). The winner sends the sync
//! document to every instance `InService` in a managed group and `Online` in
//! SSM; losers return at once: their demand is counted and the running
//! wave's follow-up covers it. Nothing from an event reaches the command.
//!
//! `{"action": "rollback", "to": "previous" | <release>, "reason": "..."}`
//! puts a kept release back as a new generation and pins the fleet (uploads
//! still count, no wave runs); `{"action": "resume"}` unpins it and syncs
//! the codebase as it is.

use std::time::Duration;

use fleetkeeper::deadline;
use fleetkeeper::events::{self, Event, ManualAction, Skip, SkipReason};
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::sync::codebase::{marker_relevance, relevance};
use fleetkeeper::sync::run::demand::Request;
use fleetkeeper::sync::run::{SettleOutcome, StartOutcome, StartWhen, SyncFunction, SyncSettings};
use fleetkeeper::sync::state::ChangeTimes;
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

/// The function's state, built once per cold start.
pub type Function = SyncFunction;

/// The longest an invocation works (Lambda's own limit is 15 minutes).
const MAX_WORK: Duration = Duration::from_secs(14 * 60);

/// The function's response and its summary log line.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `codebase-sync`.
    pub function: &'static str,
    /// Events (records) in the payload.
    pub events: usize,
    /// Relevant object changes.
    pub relevant: usize,
    /// A manual sync's reason, when one was asked for.
    pub manual: Option<String>,
    /// The manual sync lifted the instances' shrink guard.
    pub allow_shrink: bool,
    /// The delayed start this invocation handled (due at, epoch ms).
    pub due: Option<u64>,
    /// A rollback: the release asked for.
    pub rollback: Option<String>,
    /// A resume of a pinned fleet.
    pub resume: bool,
    /// What the operator should know (a rollback to a release an unversioned
    /// bucket cannot give back to an instance that lacks it).
    pub warnings: Vec<String>,
    /// Events skipped, by reason.
    pub skipped: Skips,
    /// `requested_gen` after this invocation's demand.
    pub requested_gen: Option<u64>,
    /// A dead wave this invocation found and settled first.
    pub recovered: Option<SettleOutcome>,
    /// What became of the demand.
    pub wave: Option<StartOutcome>,
}

/// Whether an event is demand for this fleet, or why not.
pub fn classify(event: &Event, settings: &SyncSettings) -> Result<(), Skip> {
    match event {
        Event::S3(change) => {
            relevance(change, &settings.codebase, &settings.excludes)?;
            match settings.marker_key() {
                Some(marker) => marker_relevance(change, &marker),
                None => Ok(()),
            }
        }
        Event::S3Test(_) => Err(Skip::new(SkipReason::TestNotification, "s3:TestEvent")),
        Event::Manual(m)
            if matches!(
                m.action,
                ManualAction::Sync | ManualAction::SyncDue | ManualAction::Rollback | ManualAction::Resume
            ) =>
        {
            Ok(())
        }
        other => Err(not_for_this_function(other)),
    }
}

/// The event times of the S3 changes in `demand`, each at most `now` (a
/// change without a time, or stamped by a clock ahead of ours, counts as
/// happening now: never earlier than it did).
pub fn change_times(demand: &[events::Received], now: u64) -> Option<ChangeTimes> {
    let times: Vec<u64> = demand
        .iter()
        .filter_map(|r| match &r.event {
            Event::S3(c) => Some(c.time_ms.map_or(now, |t| t.min(now))),
            _ => None,
        })
        .collect();
    Some(ChangeTimes { oldest: *times.iter().min()?, newest: *times.iter().max()?, seen: now })
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, f: &Function) -> Result<Summary, Error> {
    let received = events::parse(&event.payload);
    let events = received.len();
    let (demand, mut skipped) = triage(received, |e| classify(e, &f.settings));
    // A rollback or a resume is an operator's request, invoked directly and
    // on its own. In an SQS batch (redelivered with a new request id, it
    // could roll back one release further) or mixed with other records
    // (which must not be lost, or replayed with it) it is skipped.
    let is_pin = |r: &events::Received| matches!(&r.event, Event::Manual(m) if matches!(m.action, ManualAction::Rollback | ManualAction::Resume));
    let (pins, demand): (Vec<_>, Vec<_>) = demand.into_iter().partition(is_pin);
    let pin = match pins.as_slice() {
        [only] if demand.is_empty() && only.via == events::Via::Direct => match &only.event {
            Event::Manual(m) => Some(m.clone()),
            _ => None,
        },
        _ => {
            for r in &pins {
                warn!(via = ?r.via, "a rollback or a resume must be invoked directly, on its own: skipped");
                let why = "a rollback or a resume must be invoked directly, on its own";
                skipped.record(&r.via, Skip::new(SkipReason::Malformed, why));
            }
            None
        }
    };
    let manual = demand.iter().find_map(|r| match &r.event {
        Event::Manual(m) if m.action == ManualAction::Sync => Some(m.clone()),
        _ => None,
    });
    let due = demand.iter().find_map(|r| match &r.event {
        Event::Manual(m) if m.action == ManualAction::SyncDue => Some(m.due.unwrap_or_default()),
        _ => None,
    });
    let relevant = demand.iter().filter(|r| matches!(r.event, Event::S3(_))).count();
    let mut summary = Summary {
        function: "codebase-sync",
        events,
        relevant,
        manual: manual.as_ref().map(|m| m.reason.clone().unwrap_or_else(|| "no reason given".into())),
        allow_shrink: manual.as_ref().is_some_and(|m| m.allow_shrink),
        due,
        rollback: pin.as_ref().and_then(|m| m.to.clone()),
        resume: pin.as_ref().is_some_and(|m| m.action == ManualAction::Resume),
        warnings: Vec::new(),
        skipped,
        requested_gen: None,
        recovered: None,
        wave: None,
    };
    if let Some(m) = &pin {
        if f.settings.dry_run {
            return Err("dry run: a rollback or a resume writes; nothing was done".into());
        }
        let now = f.deps.clock.now_ms();
        let budget = deadline::budget(event.context.deadline, now, MAX_WORK);
        let cx = f.context(f.deps.clock.deadline_in(budget), event.context.deadline);
        let why = m.reason.clone().unwrap_or_else(|| "no reason given".into());
        summary.wave = Some(match &summary.rollback {
            Some(to) => {
                let (outcome, warnings) = cx.rollback(to, &why, &event.context.request_id).await.map_err(Box::new)?;
                summary.warnings = warnings;
                outcome
            }
            None => cx.resume_pinned(&why).await.map_err(Box::new)?,
        });
        return Ok(summary);
    }
    if demand.is_empty() {
        // An operator's rollback or resume that could not be read is refused
        // loudly: a skip would answer success to someone waiting on it.
        if let Some(action @ ("rollback" | "resume")) = event.payload.get("action").and_then(Value::as_str) {
            let why = summary.skipped.examples.first().map(|s| s.detail.clone()).unwrap_or_default();
            return Err(format!("{action} refused: {why}").into());
        }
        info!(events, skipped = summary.skipped.total(), "no relevant change");
        return Ok(summary);
    }
    let now = f.deps.clock.now_ms();
    let budget = deadline::budget(event.context.deadline, now, MAX_WORK);
    let cx = f.context(f.deps.clock.deadline_in(budget), event.context.deadline);
    let request = match &summary.manual {
        // With the batch's S3 changes, if it carries any.
        Some(r) => Request { changes: change_times(&demand, now), ..Request::manual(r, summary.allow_shrink) },
        // One demand write per invocation, however many records it holds.
        None if relevant > 0 => Request {
            reason: "upload".to_owned(),
            when: StartWhen::Quiet { due: None },
            counts: true,
            changes: change_times(&demand, now),
            allow_shrink: false,
        },
        // A delayed start: the demand is on record already.
        None => Request {
            reason: "quiet period over".to_owned(),
            when: StartWhen::Quiet { due },
            counts: false,
            changes: None,
            allow_shrink: false,
        },
    };
    let out = cx.request(&request).await.map_err(Box::new)?;
    info!(relevant, manual = manual.is_some(), requested_gen = ?out.requested_gen, "handled");
    summary.requested_gen = out.requested_gen;
    summary.recovered = out.recovered;
    summary.wave = Some(out.wave);
    Ok(summary)
}
