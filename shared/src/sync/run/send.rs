//! Starting a wave and sending its chunks.

use std::collections::HashMap;

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::send_command::SendCommandError;
use tracing::{info, warn};

use super::{StartOutcome, SyncContext, SyncError, WaveStarted, refused};
use crate::config::RateControls;
use crate::error::AwsError;
use crate::ssm_document::{SyncParameters, chunk_rate, chunks, wave_comment};
use crate::sync::codebase::fingerprint;
use crate::sync::state::{Op, WaveEnd, start_refusal};
use crate::sync::store::{Applied, FleetStore, WaveRecord};

impl<S: FleetStore> SyncContext<'_, S> {
    /// Tries to start a wave for what is requested, then sends it.
    pub async fn start(&self, reason: &str) -> Result<StartOutcome, SyncError> {
        let s = self.settings;
        if s.dry_run {
            let refusal = self.store.load().await?.and_then(|i| start_refusal(&i).err());
            let instances = if refusal.is_none() { self.eligible().await?.instances } else { Vec::new() };
            return Ok(StartOutcome::DryRun { refusal, instances });
        }
        // Up to a few rounds: a wave with nothing to sync completes at once,
        // and demand may have moved on meanwhile.
        let mut last = None;
        for _ in 0..3 {
            let fp = fingerprint(&self.clients.s3, &s.codebase, &s.excludes).await?;
            let wave_id = uuid::Uuid::new_v4().to_string();
            let now = self.clock.now_ms();
            let op = Op::Start { wave_id: wave_id.clone(), now, lease_ms: s.lease_ms, fingerprint: Some(fp) };
            let item = match self.store.apply(&op).await? {
                Applied::Won(item) => item,
                Applied::Lost(refusal) => return Ok(last.unwrap_or_else(|| refused(refusal))),
            };
            let target = item.wave.as_ref().map(|w| w.target).unwrap_or_default();
            info!(wave_id = %wave_id, generation = target, reason, "starting sync wave");
            let started = self.send(&wave_id, target, reason, now).await?;
            let empty = started.completed_empty;
            last = Some(StartOutcome::Started(started));
            if !empty {
                break;
            }
        }
        Ok(last.unwrap_or(StartOutcome::CaughtUp))
    }

    /// Sends a freshly started wave: record, chunks, ids.
    pub(super) async fn send(
        &self,
        wave_id: &str,
        target: u64,
        reason: &str,
        now: u64,
    ) -> Result<WaveStarted, SyncError> {
        let s = self.settings;
        let eligible = self.eligible().await?;
        let mut report = WaveStarted {
            wave_id: wave_id.to_owned(),
            target,
            reason: reason.to_owned(),
            instances: eligible.instances.clone(),
            quarantined: eligible.quarantined.clone(),
            ..WaveStarted::default()
        };
        let mut record = WaveRecord {
            wave_id: wave_id.to_owned(),
            target,
            reason: reason.to_owned(),
            started_at: now,
            instances: eligible.instances.clone(),
            quarantined: eligible.quarantined.clone(),
            ..WaveRecord::default()
        };
        // The intended instances are on record before anything is sent.
        self.store.put_wave(&record).await?;
        if eligible.instances.is_empty() {
            info!(wave_id, generation = target, "no instance to sync: the generation completes with nothing to do");
            let record_op = Op::RecordCommands { wave_id: wave_id.to_owned(), command_ids: vec![], sent: true };
            self.store.apply(&record_op).await?;
            if let Applied::Won(_) =
                self.store.apply(&Op::Finish { wave_id: wave_id.to_owned(), end: WaveEnd::Success }).await?
            {
                record.end = Some(WaveEnd::Success);
                record.finished_at = Some(self.clock.now_ms());
                self.store.put_wave(&record).await?;
                report.completed_empty = true;
            }
            return Ok(report);
        }
        let parameters = SyncParameters::new(&s.codebase, &s.destination, target, &s.region).to_ssm()?;
        let parts = chunks(&eligible.instances);
        let rate = chunk_rate(&s.rate, parts.len());
        let comment = wave_comment(wave_id);
        for (n, chunk) in parts.iter().enumerate() {
            let last = n + 1 == parts.len();
            // Only the lease holder sends: renew first (a stale sender stops).
            let renew = Op::Renew { wave_id: wave_id.to_owned(), now: self.clock.now_ms(), lease_ms: s.lease_ms };
            if let Applied::Lost(r) = self.store.apply(&renew).await? {
                warn!(wave_id, refusal = ?r, "lost the lease while sending");
                report.interrupted = Some("lost the lease".into());
                break;
            }
            let sent = match self.send_chunk(chunk, &parameters, &comment, &rate).await {
                Ok(sent) => sent,
                Err(e) => {
                    // Say the sending is over, so the wave settles as soon as
                    // what was sent ends (as a failure: some instances were
                    // never reached, and the failure is retried).
                    let done = Op::RecordCommands { wave_id: wave_id.to_owned(), command_ids: vec![], sent: true };
                    let _ = self.store.apply(&done).await;
                    return Err(e);
                }
            };
            report.dropped.extend(sent.dropped.iter().cloned());
            report.command_ids.extend(sent.command_id.iter().cloned());
            let op = Op::RecordCommands {
                wave_id: wave_id.to_owned(),
                command_ids: sent.command_id.into_iter().collect(),
                sent: last,
            };
            if let Applied::Lost(r) = self.store.apply(&op).await? {
                warn!(wave_id, refusal = ?r, "lost the lease while recording");
                report.interrupted = Some("lost the lease".into());
                break;
            }
        }
        record.command_ids = report.command_ids.clone();
        record.gone = report.dropped.clone();
        self.store.put_wave(&record).await?;
        info!(
            wave_id,
            generation = target,
            instances = report.instances.len(),
            commands = report.command_ids.len(),
            quarantined = report.quarantined.len(),
            dropped = report.dropped.len(),
            "sync wave sent"
        );
        Ok(report)
    }

    /// One `SendCommand`; on `InvalidInstanceId`, drops the instances that are
    /// not online any more and retries once.
    async fn send_chunk(
        &self,
        chunk: &[String],
        parameters: &HashMap<String, Vec<String>>,
        comment: &str,
        rate: &RateControls,
    ) -> Result<ChunkSent, SyncError> {
        let mut targets = chunk.to_vec();
        let mut dropped = Vec::new();
        for attempt in 0..2 {
            let result = self
                .clients
                .ssm
                .send_command()
                .document_name(&self.settings.document)
                .set_instance_ids(Some(targets.clone()))
                .set_parameters(Some(parameters.clone()))
                .comment(comment)
                .max_concurrency(&rate.max_concurrency)
                .max_errors(&rate.max_errors)
                .send()
                .await;
            match result {
                Ok(out) => {
                    let id = out.command().and_then(|c| c.command_id()).map(str::to_owned);
                    return Ok(ChunkSent { command_id: id, dropped });
                }
                Err(SdkError::ServiceError(ctx))
                    if attempt == 0 && matches!(ctx.err(), SendCommandError::InvalidInstanceId(_)) =>
                {
                    let online = self.online(&targets).await?;
                    let (keep, gone): (Vec<String>, Vec<String>) =
                        targets.iter().cloned().partition(|i| online.contains(i));
                    warn!(dropped = ?gone, "InvalidInstanceId: dropping instances that are not online and retrying once");
                    dropped.extend(gone);
                    if keep.is_empty() {
                        return Ok(ChunkSent { command_id: None, dropped });
                    }
                    targets = keep;
                }
                Err(e) => return Err(AwsError::from_sdk("SendCommand", e).into()),
            }
        }
        Ok(ChunkSent { command_id: None, dropped })
    }
}

/// What one `SendCommand` (with its one retry) did.
struct ChunkSent {
    command_id: Option<String>,
    dropped: Vec<String>,
}
