//! `codebase-sync`: bursts of uploads become one fenced sync wave.
//!
//! One invocation with relevant S3 events (created or removed objects in the
//! codebase bucket, under its prefix, not excluded) makes **one** demand write
//! and **one** try at starting a wave; `{"action": "sync"}` forces one. The
//! winner sends the sync document to every instance `InService` in a managed
//! group and `Online` in SSM; losers return at once: their demand is counted
//! and the running wave's follow-up covers it. Nothing from an event reaches
//! the command.

use std::time::Duration;

use fleetkeeper::deadline;
use fleetkeeper::events::{self, Event, ManualAction, Skip, SkipReason};
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::ssm_document::new_epoch;
use fleetkeeper::sync::codebase::relevance;
use fleetkeeper::sync::run::{SettleOutcome, StartOutcome, SyncFunction, SyncSettings, Trigger};
use fleetkeeper::sync::state::Op;
use fleetkeeper::sync::store::{Applied, FleetStore};
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use serde_json::Value;
use tracing::info;

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
        Event::S3(change) => relevance(change, &settings.codebase, &settings.excludes),
        Event::S3Test(_) => Err(Skip::new(SkipReason::TestNotification, "s3:TestEvent")),
        Event::Manual(m) if m.action == ManualAction::Sync => Ok(()),
        other => Err(not_for_this_function(other)),
    }
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, f: &Function) -> Result<Summary, Error> {
    let received = events::parse(&event.payload);
    let events = received.len();
    let (demand, skipped) = triage(received, |e| classify(e, &f.settings));
    let manual = demand.iter().find_map(|r| match &r.event {
        Event::Manual(m) => Some(m.reason.clone().unwrap_or_else(|| "no reason given".into())),
        _ => None,
    });
    let relevant = demand.iter().filter(|r| matches!(r.event, Event::S3(_))).count();
    let mut summary = Summary {
        function: "codebase-sync",
        events,
        relevant,
        manual: manual.clone(),
        skipped,
        requested_gen: None,
        recovered: None,
        wave: None,
    };
    if demand.is_empty() {
        info!(events, skipped = summary.skipped.total(), "no relevant change");
        return Ok(summary);
    }
    let budget = deadline::budget(event.context.deadline, f.deps.clock.now_ms(), MAX_WORK);
    let cx = f.context(f.deps.clock.deadline_in(budget), event.context.deadline);
    let reason = match &manual {
        Some(r) => format!("manual: {r}"),
        None => "upload".to_owned(),
    };
    if f.settings.dry_run {
        summary.wave = Some(cx.start(&reason).await.map_err(Box::new)?);
        return Ok(summary);
    }
    // One demand write per invocation, however many records it holds.
    let item = match f.store.apply(&Op::Demand { count: 1, epoch: new_epoch() }).await.map_err(Box::new)? {
        Applied::Won(item) => item,
        Applied::Lost(r) => return Err(format!("demand refused: {r:?}").into()),
    };
    summary.requested_gen = Some(item.requested_gen);
    info!(relevant, requested_gen = item.requested_gen, manual = manual.is_some(), "demand recorded");
    if let Some(wave) = &item.wave {
        if wave.lease_expires_at >= f.deps.clock.now_ms() {
            // The running wave's follow-up covers this demand.
            info!(wave_id = %wave.id, generation = wave.target, "coalesced into the running wave");
            summary.wave = Some(StartOutcome::Coalesced { wave_id: wave.id.clone(), target: wave.target });
            return Ok(summary);
        }
        // Its lease expired: settle it from SSM first (its sending may have
        // stopped: then this invocation resumes it; it may be dead).
        let settled = cx.settle(Trigger::Demand).await.map_err(Box::new)?;
        let next = match &settled {
            SettleOutcome::Finished { follow_up, .. } => follow_up.as_deref().cloned(),
            SettleOutcome::Resumed(w) => Some(StartOutcome::Coalesced { wave_id: w.wave_id.clone(), target: w.target }),
            SettleOutcome::Renewed { wave_id, .. } | SettleOutcome::Sending { wave_id } => {
                Some(StartOutcome::Coalesced { wave_id: wave_id.clone(), target: wave.target })
            }
            _ => None,
        };
        summary.recovered = Some(settled);
        if let Some(next) = next {
            summary.wave = Some(next);
            return Ok(summary);
        }
    }
    summary.wave = Some(cx.start(&reason).await.map_err(Box::new)?);
    Ok(summary)
}
