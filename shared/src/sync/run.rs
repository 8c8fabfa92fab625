//! The sync's thin executor: start and send a wave, settle a running one,
//! sweep. Shared by `codebase-sync` (start), `sync-completion` (settle, sweep,
//! follow-up) and the dispatcher's own recovery of a dead wave.

use std::collections::BTreeSet;

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::send_command::SendCommandError;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey, InstanceInformationStringFilter};
use serde::Serialize;
use thiserror::Error;
use tracing::{info, warn};

use super::codebase::{Excludes, fingerprint};
use super::command::{ParamError, SyncParameters, chunk_rate, chunks, invocation_status, send_catch_up, wave_comment};
use super::settle::{CommandView, InvocationView, Settlement, WaveResult, settle, transition};
use super::state::{FleetItem, Op, Refusal, Wave, WaveEnd, start_refusal};
use super::store::{Applied, FleetStore, InstanceResult, StoreError, WaveRecord};
use crate::clock::Clock;
use crate::config::{CodebaseConfig, Config, ConfigError, RateControls, vars};
use crate::error::AwsError;
use crate::events::CommandStatus;
use crate::{Clients, Component};

/// Everything the sync needs from the configuration, resolved once.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// `FLEET_NAME`.
    pub fleet: String,
    /// `FLEET_ASG_NAMES`.
    pub asg_names: Vec<String>,
    /// The codebase.
    pub codebase: CodebaseConfig,
    /// Compiled `FLEET_SYNC_EXCLUDES`.
    pub excludes: Excludes,
    /// `FLEET_SYNC_DESTINATION`.
    pub destination: String,
    /// `FLEET_SYNC_DOCUMENT`.
    pub document: String,
    /// `FLEET_LOCK_TABLE`.
    pub lock_table: String,
    /// `FLEET_LEASE_SECONDS`, in ms.
    pub lease_ms: u64,
    /// `FLEET_SYNC_MAX_CONCURRENCY` / `FLEET_SYNC_MAX_ERRORS`.
    pub rate: RateControls,
    /// `FLEET_SYNC_QUARANTINE_AFTER`.
    pub quarantine_after: u32,
    /// `FLEET_DRY_RUN`.
    pub dry_run: bool,
    /// The region (the bucket's, for `aws s3 sync`).
    pub region: String,
}

impl SyncSettings {
    /// The sync settings of a configuration validated for a sync function.
    pub fn from_config(config: &Config, region: &str) -> Result<Self, ConfigError> {
        let missing = |var| ConfigError::Missing { var, component: Component::CodebaseSync, why: "" };
        let codebase = config.codebase.clone().ok_or_else(|| missing(vars::CODEBASE_BUCKET))?;
        let excludes = Excludes::new(&codebase.excludes).map_err(|e| ConfigError::Invalid {
            var: vars::SYNC_EXCLUDES,
            reason: e.to_string(),
            value: codebase.excludes.join(","),
        })?;
        Ok(SyncSettings {
            fleet: config.fleet_name.clone().ok_or_else(|| missing(vars::FLEET_NAME))?,
            asg_names: config.asg_names.clone(),
            destination: codebase.destination.clone().ok_or_else(|| missing(vars::SYNC_DESTINATION))?,
            document: codebase.document.clone().ok_or_else(|| missing(vars::SYNC_DOCUMENT))?,
            codebase,
            excludes,
            lock_table: config.lock_table.clone().ok_or_else(|| missing(vars::LOCK_TABLE))?,
            lease_ms: config.lease_seconds * 1000,
            rate: config.rate.clone(),
            quarantine_after: config.quarantine_after,
            dry_run: config.dry_run,
            region: region.to_owned(),
        })
    }
}

/// A sync function's state (`codebase-sync`, `sync-completion`), built once
/// per cold start.
pub struct SyncFunction {
    /// Config, clients, clock.
    pub deps: crate::Deps,
    /// The sync settings.
    pub settings: SyncSettings,
    /// The lock table.
    pub store: super::store::DynamoStore,
}

impl SyncFunction {
    /// Resolves the sync settings (a missing or bad one fails the init).
    pub fn new(deps: crate::Deps) -> Result<Self, ConfigError> {
        let settings = SyncSettings::from_config(&deps.config, &deps.clients.region)?;
        let store =
            super::store::DynamoStore::new(deps.clients.dynamodb.clone(), &settings.lock_table, &settings.fleet);
        Ok(SyncFunction { deps, settings, store })
    }

    /// The executor over this state.
    pub fn context(&self) -> SyncContext<'_, super::store::DynamoStore> {
        SyncContext {
            clients: &self.deps.clients,
            store: &self.store,
            settings: &self.settings,
            clock: self.deps.clock.as_ref(),
        }
    }
}

/// What the executor works with.
pub struct SyncContext<'a, S> {
    /// SDK clients.
    pub clients: &'a Clients,
    /// The lock table.
    pub store: &'a S,
    /// Settings.
    pub settings: &'a SyncSettings,
    /// Time.
    pub clock: &'a dyn Clock,
}

/// A sync failure worth surfacing (see [`crate::error`]).
#[derive(Debug, Error)]
pub enum SyncError {
    /// The lock table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A configured value does not fit the document.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// A request could not be built (a bug, not an input).
    #[error("request: {0}")]
    Build(#[from] aws_sdk_ssm::error::BuildError),
}

/// A wave that was started, as reported in summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct WaveStarted {
    /// Its id.
    pub wave_id: String,
    /// Its generation.
    pub target: u64,
    /// Why it started.
    pub reason: String,
    /// Instances it was sent to.
    pub instances: Vec<String>,
    /// Quarantined instances left out.
    pub quarantined: Vec<String>,
    /// Instances SSM refused (`InvalidInstanceId`) and that were dropped.
    pub dropped: Vec<String>,
    /// Its commands.
    pub command_ids: Vec<String>,
    /// It had nothing to sync and completed at once.
    pub completed_empty: bool,
    /// Sending stopped early (lost the lease, or an error): the sweep settles it.
    pub interrupted: Option<String>,
}

/// The outcome of one try at starting a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StartOutcome {
    /// This invocation started (and sent) a wave.
    Started(WaveStarted),
    /// Another wave holds the lease; the demand is counted and its
    /// follow-up will cover it.
    Coalesced {
        /// The running wave.
        wave_id: String,
        /// Its generation.
        target: u64,
    },
    /// Everything requested is synced.
    CaughtUp,
    /// The requested generation failed twice: waiting for new demand.
    Held {
        /// The generation.
        generation: u64,
    },
    /// Dry run: nothing written.
    DryRun {
        /// What a start would have found.
        refusal: Option<Refusal>,
        /// The instances a wave would have been sent to.
        instances: Vec<String>,
    },
}

/// What settling the running wave did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SettleOutcome {
    /// No wave was running.
    NoWave,
    /// Its commands still run: the lease was renewed.
    Renewed {
        /// The wave.
        wave_id: String,
        /// Commands still running.
        pending: usize,
    },
    /// Not every command id is recorded yet and the lease is valid: the
    /// sender may still be sending.
    Sending {
        /// The wave.
        wave_id: String,
    },
    /// The wave ended and released the lease.
    Finished {
        /// The wave.
        wave_id: String,
        /// Its generation.
        target: u64,
        /// How it ended.
        end: WaveEnd,
        /// Instances that synced, failed, were never reached, went away.
        synced: usize,
        /// Failed instances.
        failed: Vec<String>,
        /// Instances it never reached.
        not_attempted: Vec<String>,
        /// Instances quarantined by this wave.
        quarantined: Vec<String>,
        /// Whether it was taken over from a dead sender.
        taken_over: bool,
        /// The follow-up, if one started.
        follow_up: Option<Box<StartOutcome>>,
    },
    /// Someone else settled it first.
    Stale {
        /// The wave this invocation looked at.
        wave_id: String,
    },
    /// Dry run: what would be done.
    DryRun {
        /// The decision.
        settlement: Settlement,
    },
}

/// How far back `ListCommands` looks for a wave's commands by comment,
/// before its `sending_since` (clock skew between Lambda and SSM).
const COMMENT_LOOKBACK_MS: u64 = 5 * 60 * 1000;

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
    async fn send(&self, wave_id: &str, target: u64, reason: &str, now: u64) -> Result<WaveStarted, SyncError> {
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
        parameters: &std::collections::HashMap<String, Vec<String>>,
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

    /// Instances to sync: `InService` and healthy in a managed group, `Online`
    /// in SSM, not quarantined.
    pub async fn eligible(&self) -> Result<Eligible, SyncError> {
        let groups = crate::groups::managed_groups(self.clients, &self.settings.asg_names).await?.found;
        let in_service: Vec<String> = groups
            .iter()
            .flat_map(|g| g.instances())
            .filter(|i| {
                i.lifecycle_state().map(|s| s.as_str()) == Some("InService")
                    && i.health_status().is_none_or(|h| h.eq_ignore_ascii_case("healthy"))
            })
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let online = self.online(&in_service).await?;
        let records = self.store.instances(&in_service).await?;
        let mut out = Eligible::default();
        for (id, record) in in_service.iter().zip(records) {
            if !online.contains(id) {
                out.not_online.push(id.clone());
            } else if record.quarantined() {
                out.quarantined.push(id.clone());
            } else {
                out.instances.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Which of `ids` SSM reports `Online`.
    pub async fn online(&self, ids: &[String]) -> Result<BTreeSet<String>, SyncError> {
        let mut online = BTreeSet::new();
        for part in ids.chunks(50) {
            let filter =
                |k: &str, v: Vec<String>| InstanceInformationStringFilter::builder().key(k).set_values(Some(v)).build();
            let mut pages = self
                .clients
                .ssm
                .describe_instance_information()
                .filters(filter("InstanceIds", part.to_vec())?)
                .filters(filter("PingStatus", vec!["Online".to_owned()])?)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("DescribeInstanceInformation", e))?;
                for info in page.instance_information_list() {
                    if let Some(id) = info.instance_id() {
                        online.insert(id.to_owned());
                    }
                }
            }
        }
        Ok(online)
    }

    /// Settles the running wave from what SSM reports, and starts the
    /// follow-up when it finished and more is requested (or a retry is due).
    pub async fn settle(&self) -> Result<SettleOutcome, SyncError> {
        let Some(wave) = self.store.load().await?.and_then(|i| i.wave) else { return Ok(SettleOutcome::NoWave) };
        let record = self.store.wave(&wave.id).await?;
        let intended: Option<Vec<String>> =
            record.as_ref().map(|r| r.instances.iter().filter(|i| !r.gone.contains(i)).cloned().collect());
        let commands = self.observe(&wave).await?;
        let now = self.clock.now_ms();
        let settlement = settle(&wave, &commands, intended.as_deref(), now);
        if self.settings.dry_run {
            return Ok(SettleOutcome::DryRun { settlement });
        }
        let Some(op) = transition(&wave, &settlement, now, self.settings.lease_ms) else {
            return Ok(SettleOutcome::Sending { wave_id: wave.id });
        };
        let applied = self.store.apply(&op).await?;
        let item = match applied {
            Applied::Won(item) => item,
            Applied::Lost(Refusal::LeaseLive { .. }) => return Ok(SettleOutcome::Sending { wave_id: wave.id }),
            Applied::Lost(_) => return Ok(SettleOutcome::Stale { wave_id: wave.id }),
        };
        let (end, result) = match (&op, settlement) {
            (Op::Renew { .. }, Settlement::Running { pending }) => {
                info!(wave_id = %wave.id, pending, "wave still running: lease renewed");
                return Ok(SettleOutcome::Renewed { wave_id: wave.id, pending });
            }
            (_, Settlement::Done(result)) => (result.end, result),
            (_, _) => (WaveEnd::Abandoned, WaveResult { end: WaveEnd::Abandoned, results: Vec::new() }),
        };
        let quarantined = self.record_results(&wave, &result, record, now).await?;
        info!(wave_id = %wave.id, generation = wave.target, end = ?end, failed = ?result.with(InstanceResult::Failed), "wave finished");
        let follow_up = self.follow_up(&wave, end, &item).await?;
        Ok(SettleOutcome::Finished {
            wave_id: wave.id.clone(),
            target: wave.target,
            end,
            synced: result.with(InstanceResult::Synced).len(),
            failed: result.with(InstanceResult::Failed),
            not_attempted: result.with(InstanceResult::NotAttempted),
            quarantined,
            taken_over: matches!(op, Op::TakeOver { .. }),
            follow_up: follow_up.map(Box::new),
        })
    }

    async fn follow_up(&self, wave: &Wave, end: WaveEnd, item: &FleetItem) -> Result<Option<StartOutcome>, SyncError> {
        if start_refusal(item).is_err() {
            return Ok(None);
        }
        let reason = match end {
            WaveEnd::Failure if item.requested_gen == wave.target => "retry",
            WaveEnd::Abandoned if item.requested_gen == wave.target => "restart after a dead sender",
            _ => "follow-up",
        };
        Ok(Some(self.start(reason).await?))
    }

    /// Writes the instances' results and the finished wave record; returns
    /// the instances this wave quarantined.
    async fn record_results(
        &self,
        wave: &Wave,
        result: &WaveResult,
        record: Option<WaveRecord>,
        now: u64,
    ) -> Result<Vec<String>, SyncError> {
        let before: BTreeSet<String> = self
            .store
            .instances(&result.with(InstanceResult::Failed))
            .await?
            .into_iter()
            .filter(|r| r.quarantined())
            .map(|r| r.instance_id)
            .collect();
        let records =
            self.store.record_results(wave.target, &result.results, now, self.settings.quarantine_after).await?;
        let quarantined: Vec<String> = records
            .into_iter()
            .filter(|r| r.quarantined() && !before.contains(&r.instance_id))
            .map(|r| r.instance_id)
            .collect();
        for id in &quarantined {
            warn!(instance_id = %id, failures = self.settings.quarantine_after, "instance quarantined: left out of waves until a successful catch-up");
        }
        let mut record = record.unwrap_or_else(|| WaveRecord {
            wave_id: wave.id.clone(),
            target: wave.target,
            reason: "unknown (record missing)".into(),
            started_at: wave.sending_since,
            ..WaveRecord::default()
        });
        record.command_ids = wave.command_ids.clone();
        record.end = Some(result.end);
        record.finished_at = Some(now);
        record.succeeded = result.with(InstanceResult::Synced);
        record.failed = result.with(InstanceResult::Failed);
        record.not_attempted = result.with(InstanceResult::NotAttempted);
        let mut gone = record.gone.clone();
        gone.extend(result.with(InstanceResult::Gone));
        record.gone = gone;
        self.store.put_wave(&record).await?;
        Ok(quarantined)
    }

    /// The wave's commands as SSM reports them: its recorded ids, plus those
    /// found by comment while not every id is recorded.
    async fn observe(&self, wave: &Wave) -> Result<Vec<CommandView>, SyncError> {
        let mut ids: Vec<String> = wave.command_ids.clone();
        if !wave.sent {
            for id in self.commands_by_comment(wave).await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let mut views = Vec::new();
        for id in ids {
            views.push(self.command_view(&id).await?);
        }
        Ok(views)
    }

    async fn commands_by_comment(&self, wave: &Wave) -> Result<Vec<String>, SyncError> {
        let comment = wave_comment(&wave.id);
        let after = aws_smithy_types::DateTime::from_millis(
            i64::try_from(wave.sending_since.saturating_sub(COMMENT_LOOKBACK_MS)).unwrap_or(0),
        );
        let after = after.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default();
        let filter = |key: CommandFilterKey, value: &str| CommandFilter::builder().key(key).value(value).build();
        let mut pages = self
            .clients
            .ssm
            .list_commands()
            .filters(filter(CommandFilterKey::DocumentName, &self.settings.document)?)
            .filters(filter(CommandFilterKey::InvokedAfter, &after)?)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListCommands", e))?;
            for c in page.commands() {
                if c.comment() == Some(comment.as_str())
                    && let Some(id) = c.command_id()
                {
                    found.push(id.to_owned());
                }
            }
        }
        Ok(found)
    }

    async fn command_view(&self, id: &str) -> Result<CommandView, SyncError> {
        // Just after SendCommand a command may not be listed yet: pending.
        let pending = || CommandView { command_id: id.to_owned(), status: CommandStatus::Pending, invocations: vec![] };
        let status = match self.clients.ssm.list_commands().command_id(id).send().await {
            Ok(out) => match out.commands().first().and_then(|c| c.status()) {
                Some(s) => CommandStatus::parse(s.as_str()),
                None => return Ok(pending()),
            },
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_command_id() => return Ok(pending()),
            Err(e) => return Err(AwsError::from_sdk("ListCommands", e).into()),
        };
        let mut invocations = Vec::new();
        let mut pages = self.clients.ssm.list_command_invocations().command_id(id).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListCommandInvocations", e))?;
            for inv in page.command_invocations() {
                invocations.push(InvocationView {
                    instance_id: inv.instance_id().unwrap_or_default().to_owned(),
                    status: CommandStatus::parse(inv.status().map(|s| s.as_str()).unwrap_or("Pending")),
                });
            }
        }
        Ok(CommandView { command_id: id.to_owned(), status, invocations })
    }

    /// Whether `command_id` belongs to the running wave: a recorded id, or
    /// (while not every id is recorded) a command carrying its comment.
    pub async fn belongs_to_running_wave(&self, command_id: &str) -> Result<Option<String>, SyncError> {
        let Some(wave) = self.store.load().await?.and_then(|i| i.wave) else { return Ok(None) };
        if wave.command_ids.iter().any(|c| c == command_id) {
            return Ok(Some(wave.id));
        }
        if wave.sent {
            return Ok(None);
        }
        let comment = match self.clients.ssm.list_commands().command_id(command_id).send().await {
            Ok(out) => out.commands().first().and_then(|c| c.comment()).map(str::to_owned),
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_command_id() => None,
            Err(e) => return Err(AwsError::from_sdk("ListCommands", e).into()),
        };
        Ok((comment.as_deref() == Some(wave_comment(&wave.id).as_str())).then_some(wave.id))
    }

    /// The sweep: settle a running wave; start one for demand no wave
    /// covers; compare the codebase's fingerprint with the last synced one so
    /// a change whose event was lost still syncs.
    pub async fn sweep(&self) -> Result<SweepReport, SyncError> {
        let settled = self.settle().await?;
        let report = SweepReport { settled, started: None, fingerprint_changed: false, recoveries: Vec::new() };
        let item = self.store.load().await?;
        let mut report = match &item {
            // Never any demand: the first sweep syncs an existing codebase.
            None => self.sweep_fingerprint(report, None).await?,
            Some(item) => match start_refusal(item) {
                Ok(()) => SweepReport { started: Some(self.start("sweep: demand without a wave").await?), ..report },
                Err(Refusal::CaughtUp) => self.sweep_fingerprint(report, item.fingerprint_synced).await?,
                Err(_) => report,
            },
        };
        report.recoveries = self.recover().await?;
        Ok(report)
    }

    /// Offers each quarantined instance (in service, online) a catch-up, at
    /// most once per [`RECOVERY_SPACING_MS`]: a success lifts the quarantine
    /// and the instance rejoins the waves; a failure counts and waits.
    async fn recover(&self) -> Result<Vec<Recovery>, SyncError> {
        if self.settings.dry_run {
            return Ok(Vec::new());
        }
        let quarantined = self.eligible().await?.quarantined;
        if quarantined.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.settings;
        let now = self.clock.now_ms();
        let requested = self.store.load().await?.map(|i| i.requested_gen).unwrap_or(0);
        let mut out = Vec::new();
        for r in self.store.instances(&quarantined).await? {
            let id = r.instance_id.clone();
            let recovery = |action: &str, generation, command_id: Option<String>| Recovery {
                instance_id: id.clone(),
                action: action.to_owned(),
                generation,
                command_id,
            };
            if let Some(command) = &r.recovery_command {
                let status = invocation_status(&self.clients.ssm, command, &id).await?;
                if !status.is_terminal() {
                    out.push(recovery("running", r.recovery_gen, Some(command.clone())));
                    continue;
                }
                let result = if status.is_success() { InstanceResult::Synced } else { InstanceResult::Failed };
                self.store.record_results(r.recovery_gen, &[(id.clone(), result)], now, s.quarantine_after).await?;
                self.store.set_recovery(&id, None, r.recovery_gen, r.recovery_sent_at.unwrap_or(now)).await?;
                let action = if status.is_success() { "recovered" } else { "still failing" };
                info!(instance_id = %id, action, "quarantine recovery catch-up ended");
                out.push(recovery(action, r.recovery_gen, Some(command.clone())));
            } else if r.recovery_sent_at.is_none_or(|t| now >= t + RECOVERY_SPACING_MS) {
                let parameters = SyncParameters::new(&s.codebase, &s.destination, requested, &s.region).to_ssm()?;
                match send_catch_up(&self.clients.ssm, &s.document, parameters, &id, requested).await? {
                    Some(command) => {
                        self.store.set_recovery(&id, Some(command.clone()), requested, now).await?;
                        info!(instance_id = %id, generation = requested, "quarantine recovery catch-up sent");
                        out.push(recovery("sent", requested, Some(command)));
                    }
                    None => out.push(recovery("not online", requested, None)),
                }
            }
        }
        Ok(out)
    }

    async fn sweep_fingerprint(
        &self,
        mut report: SweepReport,
        synced: Option<super::state::Fingerprint>,
    ) -> Result<SweepReport, SyncError> {
        let s = self.settings;
        let now = fingerprint(&self.clients.s3, &s.codebase, &s.excludes).await?;
        let changed = match synced {
            Some(fp) => fp != now,
            None => now.count > 0,
        };
        if !changed {
            return Ok(report);
        }
        info!(?synced, current = ?now, "codebase changed without a sync (a lost event): recording demand");
        report.fingerprint_changed = true;
        if s.dry_run {
            report.started = Some(StartOutcome::DryRun { refusal: None, instances: self.eligible().await?.instances });
            return Ok(report);
        }
        self.store.apply(&Op::Demand { count: 1 }).await?;
        report.started = Some(self.start("sweep: codebase changed").await?);
        Ok(report)
    }
}

/// What one `SendCommand` (with its one retry) did.
struct ChunkSent {
    command_id: Option<String>,
    dropped: Vec<String>,
}

/// The instances a wave goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Eligible {
    /// `InService`, `Online`, not quarantined.
    pub instances: Vec<String>,
    /// `InService` and `Online` but quarantined.
    pub quarantined: Vec<String>,
    /// `InService` but not `Online` in SSM (left for the next wave).
    pub not_online: Vec<String>,
}

/// How often a quarantined instance is offered a recovery catch-up.
pub const RECOVERY_SPACING_MS: u64 = 60 * 60 * 1000;

/// A quarantined instance's recovery catch-up, as the sweep saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// The instance.
    pub instance_id: String,
    /// `sent`, `running`, `recovered`, `still failing`, `not online`.
    pub action: String,
    /// The generation it syncs to.
    pub generation: u64,
    /// Its command.
    pub command_id: Option<String>,
}

/// What the sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// The running wave, settled.
    pub settled: SettleOutcome,
    /// A wave the sweep started.
    pub started: Option<StartOutcome>,
    /// The codebase changed since the last successful wave with no demand
    /// recorded (a lost event).
    pub fingerprint_changed: bool,
    /// Recovery catch-ups of quarantined instances.
    pub recoveries: Vec<Recovery>,
}

fn refused(refusal: Refusal) -> StartOutcome {
    match refusal {
        Refusal::Busy { wave_id, target, .. } => StartOutcome::Coalesced { wave_id, target },
        Refusal::Held { generation, .. } => StartOutcome::Held { generation },
        _ => StartOutcome::CaughtUp,
    }
}

#[cfg(test)]
mod tests {
    //! Paths the emulator cannot stage: an agent that deregisters between
    //! the eligibility check and `SendCommand` (`aws-smithy-mocks`).

    use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
    use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState};
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
    use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
    use aws_sdk_ssm::operation::send_command::SendCommandOutput;
    use aws_sdk_ssm::types::error::InvalidInstanceId;
    use aws_sdk_ssm::types::{Command, InstanceInformation, PingStatus};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;
    use crate::clock::ManualClock;
    use crate::sync::store::MemoryStore;

    fn settings() -> SyncSettings {
        let codebase = CodebaseConfig {
            bucket: "code-bucket".into(),
            prefix: "app/".into(),
            excludes: vec![],
            destination: Some("/var/www".into()),
            document: Some("fk-sync".into()),
        };
        SyncSettings {
            fleet: "web".into(),
            asg_names: vec!["web".into()],
            excludes: Excludes::new(&[]).expect("globs"),
            codebase,
            destination: "/var/www".into(),
            document: "fk-sync".into(),
            lock_table: "locks".into(),
            lease_ms: 60_000,
            rate: RateControls { max_concurrency: "50".into(), max_errors: "0".into() },
            quarantine_after: 3,
            dry_run: false,
            region: "us-east-1".into(),
        }
    }

    fn info(ids: &'static [&'static str]) -> DescribeInstanceInformationOutput {
        DescribeInstanceInformationOutput::builder()
            .set_instance_information_list(Some(
                ids.iter()
                    .map(|i| InstanceInformation::builder().instance_id(*i).ping_status(PingStatus::Online).build())
                    .collect(),
            ))
            .build()
    }

    #[tokio::test]
    async fn invalid_instance_id_drops_the_offenders_and_retries_the_chunk_once() {
        let group = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
            let member = |id: &str| {
                Instance::builder()
                    .instance_id(id)
                    .lifecycle_state(LifecycleState::InService)
                    .health_status("Healthy")
                    .availability_zone("az-a")
                    .protected_from_scale_in(false)
                    .build()
            };
            DescribeAutoScalingGroupsOutput::builder()
                .auto_scaling_groups(
                    AutoScalingGroup::builder()
                        .auto_scaling_group_name("web")
                        .instances(member("i-a"))
                        .instances(member("i-b"))
                        .build(),
                )
                .build()
        });
        let listing = mock!(aws_sdk_s3::Client::list_objects_v2).then_output(|| ListObjectsV2Output::builder().build());
        // Online when the wave is planned; i-b's agent is gone when it is sent.
        let online = mock!(aws_sdk_ssm::Client::describe_instance_information)
            .sequence()
            .output(|| info(&["i-a", "i-b"]))
            .output(|| info(&["i-a"]))
            .build();
        let refused =
            mock!(aws_sdk_ssm::Client::send_command).match_requests(|r| r.instance_ids().len() == 2).then_error(|| {
                SendCommandError::InvalidInstanceId(
                    InvalidInstanceId::builder().message("Instances [[i-b]] not in a valid state").build(),
                )
            });
        let accepted =
            mock!(aws_sdk_ssm::Client::send_command).match_requests(|r| r.instance_ids() == ["i-a"]).then_output(
                || SendCommandOutput::builder().command(Command::builder().command_id("cmd-1").build()).build(),
            );
        let clients = Clients {
            autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, &[&group]),
            ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&online, &refused, &accepted]),
            s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&listing]),
            ec2: mock_client!(aws_sdk_ec2, &[]),
            efs: mock_client!(aws_sdk_efs, &[]),
            elbv2: mock_client!(aws_sdk_elasticloadbalancingv2, &[]),
            dynamodb: mock_client!(aws_sdk_dynamodb, &[]),
            region: "us-east-1".into(),
        };
        let store = MemoryStore::new();
        store.apply(&Op::Demand { count: 1 }).await.expect("demand");
        let settings = settings();
        let clock = ManualClock::at(1_000);
        let cx = SyncContext { clients: &clients, store: &store, settings: &settings, clock: &clock };

        let StartOutcome::Started(wave) = cx.start("upload").await.expect("start") else { panic!("not started") };
        assert_eq!(wave.instances, ["i-a", "i-b"]);
        assert_eq!(wave.dropped, ["i-b"]);
        assert_eq!(wave.command_ids, ["cmd-1"]);
        assert_eq!((refused.num_calls(), accepted.num_calls()), (1, 1), "one retry, without the offender");
        let item = store.load().await.expect("load").expect("item");
        let w = item.wave.expect("wave");
        assert_eq!((w.command_ids, w.sent), (vec!["cmd-1".to_owned()], true));
        let record = store.wave(&wave.wave_id).await.expect("wave").expect("record");
        assert_eq!(record.gone, ["i-b"], "the dropped instance does not fail the wave");
    }
}
