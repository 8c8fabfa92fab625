//! `sync-completion`: finishes sync waves and starts at most one follow-up.
//!
//! SSM command status events of the sync document (the event carries no
//! comment: a command is classified by its id — the running wave's recorded
//! ids, or its comment while not every id is recorded; anything else is a
//! catch-up or a finished wave, a logged skip). When every command of the
//! running wave is terminal the wave is finished, the lease released while
//! still held, and exactly one follow-up started when more was requested. The
//! scheduled sweep asks SSM directly (events are best-effort), renews a live
//! wave, takes over only a dead one, and compares the codebase's fingerprint
//! with the last synced one so a change whose event was lost still syncs.

use std::time::Duration;

use fleetkeeper::deadline;
use fleetkeeper::events::{self, Event, ManualAction, Skip, SkipReason};
use fleetkeeper::skips::{Skips, not_for_this_function, triage};
use fleetkeeper::sync::run::{CatchUpReport, SettleOutcome, SweepReport, SyncFunction, SyncSettings, Trigger};
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
    /// `sync-completion`.
    pub function: &'static str,
    /// Events in the payload.
    pub events: usize,
    /// Events skipped, by reason.
    pub skipped: Skips,
    /// Status events of commands still running (nothing to do yet).
    pub still_running: usize,
    /// The running wave, settled because one of its commands ended.
    pub settled: Option<SettleOutcome>,
    /// Catch-ups of the sweep whose outcome an event brought.
    pub catch_ups: Vec<CatchUpReport>,
    /// The sweep, when the schedule (or a manual sweep) asked for one.
    pub sweep: Option<SweepReport>,
}

/// Whether this function acts on `event`, or why not.
pub fn classify(event: &Event, settings: &SyncSettings) -> Result<(), Skip> {
    match event {
        Event::CommandStatus(c) => match &c.document_name {
            Some(d) if *d != settings.document => {
                Err(Skip::new(SkipReason::NotManaged, format!("command of document {d:?}")))
            }
            _ => Ok(()),
        },
        Event::Scheduled(_) => Ok(()),
        Event::Manual(m) if m.action == ManualAction::Sweep => Ok(()),
        other => Err(not_for_this_function(other)),
    }
}

/// Handles one invocation.
pub async fn function_handler(event: LambdaEvent<Value>, f: &Function) -> Result<Summary, Error> {
    let received = events::parse(&event.payload);
    let total = received.len();
    let (accepted, mut skipped) = triage(received, |e| classify(e, &f.settings));
    let budget = deadline::budget(event.context.deadline, f.deps.clock.now_ms(), MAX_WORK);
    let cx = f.context(f.deps.clock.deadline_in(budget), event.context.deadline);
    let mut summary = Summary {
        function: "sync-completion",
        events: total,
        skipped: Skips::default(),
        still_running: 0,
        settled: None,
        catch_ups: Vec::new(),
        sweep: None,
    };

    let sweep = accepted.iter().any(|r| matches!(r.event, Event::Scheduled(_) | Event::Manual(_)));
    if sweep {
        // The sweep looks at everything the status events would have.
        let report = cx.sweep().await.map_err(Box::new)?;
        info!(settled = ?report.settled, started = report.started.is_some(), fingerprint_changed = report.fingerprint_changed, "sweep done");
        summary.sweep = Some(report);
        summary.skipped = skipped;
        return Ok(summary);
    }
    let mut trigger = None;
    for r in &accepted {
        let Event::CommandStatus(change) = &r.event else { continue };
        if !change.status.is_terminal() {
            summary.still_running += 1;
            continue;
        }
        match cx.belongs_to_running_wave(&change.command_id).await.map_err(Box::new)? {
            Some(_) => {
                trigger = Some(Trigger::Event { command_id: change.command_id.clone(), status: change.status.clone() })
            }
            None => {
                let ended = cx.catch_up_event(&change.command_id, &change.instance_ids).await.map_err(Box::new)?;
                if ended.is_empty() {
                    skipped.record(
                        &r.via,
                        Skip::new(
                            SkipReason::NotManaged,
                            "not a command of the running wave nor a sweep's catch-up (a launch's catch-up, or a finished wave)",
                        ),
                    );
                }
                summary.catch_ups.extend(ended);
            }
        }
    }
    if let Some(trigger) = trigger {
        // One settle per invocation, however many of the wave's commands ended.
        let settled = cx.settle(trigger).await.map_err(Box::new)?;
        info!(?settled, "settled the running wave");
        summary.settled = Some(settled);
    }
    summary.skipped = skipped;
    Ok(summary)
}
