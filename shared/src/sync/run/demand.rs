//! Demand, then a try at starting: the one path every request for a sync
//! takes (uploads, delayed starts, an operator's sync from the function or
//! from the CLI).

use serde::Serialize;
use tracing::{info, warn};

use super::{SettleOutcome, StartOutcome, StartWhen, SyncContext, SyncError, Trigger, TriggerState};
use crate::ssm_document::new_epoch;
use crate::sync::state::{ChangeTimes, Op, start_refusal};
use crate::sync::store::{Applied, FleetStore};

/// A request for a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Why (`upload`, `manual: <reason>`, `quiet period over`): the wave's
    /// reason when this request starts it.
    pub reason: String,
    /// When a wave may start.
    pub when: StartWhen,
    /// Whether this request adds demand (one generation); a delayed start
    /// only looks at the demand on record.
    pub counts: bool,
    /// The S3 event times of the changes it carries.
    pub changes: Option<ChangeTimes>,
    /// Lifts the instances' shrink guard for this generation.
    pub allow_shrink: bool,
}

impl Request {
    /// An operator's sync: counted, at once.
    pub fn manual(reason: &str, allow_shrink: bool) -> Self {
        Request { reason: format!("manual: {reason}"), when: StartWhen::Now, counts: true, changes: None, allow_shrink }
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `requested_gen` after its demand (absent when it added none).
    pub requested_gen: Option<u64>,
    /// A dead wave it found and settled first.
    pub recovered: Option<SettleOutcome>,
    /// What became of the demand.
    pub wave: StartOutcome,
}

impl<S: FleetStore> SyncContext<'_, S> {
    /// Records the request's demand (one write, however many changes it
    /// carries), then tries once to start a wave: a running wave's
    /// follow-up covers it, a wave whose lease expired is settled (or
    /// resumed) first. In a dry run nothing is written: the start reports
    /// what it would have done.
    pub async fn request(&self, request: &Request) -> Result<Outcome, SyncError> {
        let mut out = Outcome { requested_gen: None, recovered: None, wave: StartOutcome::CaughtUp };
        if self.settings.dry_run {
            out.wave = self.start(&request.reason, request.when).await?;
            return Ok(out);
        }
        let item = if request.counts {
            let op = Op::Demand {
                count: 1,
                epoch: new_epoch(),
                changes: request.changes,
                allow_shrink: request.allow_shrink,
            };
            let item = match self.store.apply(&op).await? {
                Applied::Won(item) => *item,
                Applied::Lost(r) => return Err(SyncError::Refused(format!("demand refused: {r:?}"))),
            };
            out.requested_gen = Some(item.requested_gen);
            if request.allow_shrink {
                warn!(
                    generation = item.requested_gen,
                    "allow_shrink: the instances' shrink guard is lifted for this sync"
                );
            }
            info!(requested_gen = item.requested_gen, reason = %request.reason, "demand recorded");
            item
        } else {
            self.store.load().await?.unwrap_or_default()
        };
        if let Some(wave) = &item.wave {
            if wave.lease_expires_at >= self.clock.now_ms() {
                // A rollback's wave: no follow-up runs while it pins the fleet.
                if let Some(pin) = &item.pin {
                    info!(release = %pin.release, "pinned by a rollback: the demand is counted, no wave");
                    out.wave = StartOutcome::Pinned { release: pin.release.clone(), since: pin.since };
                    return Ok(out);
                }
                info!(wave_id = %wave.id, generation = wave.target, "coalesced into the running wave");
                out.wave = StartOutcome::Coalesced { wave_id: wave.id.clone(), target: wave.target };
                return Ok(out);
            }
            // Its lease expired: settle it from SSM first (its sending may
            // have stopped: then this request resumes it; it may be dead).
            let settled = self.settle(Trigger::Demand).await?;
            let next = match &settled {
                SettleOutcome::Finished { follow_up, .. } => follow_up.as_deref().cloned(),
                SettleOutcome::Resumed(w) => {
                    Some(StartOutcome::Coalesced { wave_id: w.wave_id.clone(), target: w.target })
                }
                SettleOutcome::Renewed { wave_id, .. } | SettleOutcome::Sending { wave_id } => {
                    Some(StartOutcome::Coalesced { wave_id: wave_id.clone(), target: wave.target })
                }
                _ => None,
            };
            out.recovered = Some(settled);
            // A pin's wave resumed or still running: nothing follows it.
            let next = match (&item.pin, next) {
                (Some(pin), Some(StartOutcome::Coalesced { .. })) => {
                    Some(StartOutcome::Pinned { release: pin.release.clone(), since: pin.since })
                }
                (_, next) => next,
            };
            if let Some(next) = next {
                out.wave = next;
                return Ok(out);
            }
        }
        // Still changing, and a delayed start is on its way: the demand is
        // on record and that start looks again (no write that would only be
        // refused).
        let now = self.clock.now_ms();
        if request.when == (StartWhen::Quiet { due: None })
            && let Some(until) = self.settings.quiet().until(&item).filter(|u| now < *u)
            && let Some(pending) = item.trigger_at.filter(|t| *t >= now)
        {
            info!(until, pending, "quiet period: a delayed start is already on its way");
            out.wave = StartOutcome::Waiting { until, trigger: TriggerState::OnItsWay { due: pending } };
            return Ok(out);
        }
        // Still changing and nothing on its way: a start would only be
        // refused (Op::Start's own checks, on the item this demand just
        // wrote), a write for nothing. Queue the delayed start.
        if request.counts
            && request.when == (StartWhen::Quiet { due: None })
            && start_refusal(&item).is_ok()
            && let Some(until) = self.settings.quiet().until(&item).filter(|u| now < *u)
        {
            out.wave = self.hold_until(until, None).await?;
            return Ok(out);
        }
        out.wave = self.start(&request.reason, request.when).await?;
        Ok(out)
    }
}
