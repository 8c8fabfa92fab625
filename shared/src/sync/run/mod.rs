//! The sync's thin executor: start and send a wave, resume one whose sending
//! stopped, settle a running one, sweep. Shared by `codebase-sync` (start),
//! `sync-completion` (settle, sweep, follow-up) and the dispatcher's own
//! recovery of a stopped wave.
//!
//! | module | what |
//! |---|---|
//! | [`demand`] | a request for a sync: its demand, then a try at starting |
//! | [`targets`] | the instances a wave goes to, and which ones left |
//! | [`send`] | starting a wave, sending its chunks, resuming it |
//! | [`observe`] | what SSM reports about a wave's commands |
//! | [`finish`] | settling a wave: results, records, the follow-up |
//! | [`sweep`] | the scheduled backstop: settle, demand without a wave, lost events, catch-ups |
//!
//! Every invocation works within its deadline ([`SyncContext::until`]): a
//! sender that runs out of time pauses the wave (its lease ends at once) and
//! the next invocation resumes it from the wave's record.

pub mod demand;
mod finish;
mod observe;
mod send;
mod sweep;
mod targets;

#[cfg(test)]
mod tests;

use serde::Serialize;
use thiserror::Error;

use super::codebase::Excludes;
use super::decide::{Blame, Settlement};
use super::state::{Quiet, Refusal, WaveEnd};
use crate::Clients;
use crate::clock::Clock;
use crate::config::{CodebaseConfig, Config, ConfigError, RateControls, ReleaseConfig, vars};
use crate::error::AwsError;
use crate::ssm_document::ParamError;
use crate::ssm_document::history::InstanceRecord;
use crate::ssm_document::run::LISTING_LAG_MS;
use crate::store::{StoreError, Table};

pub use observe::Listed;
pub use targets::Eligible;

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
    /// The codebase bucket's region (`FLEET_CODEBASE_REGION`, else the
    /// functions' own): the document's `region` and the fingerprint's client.
    pub region: String,
    /// Quiet period, release marker, shrink guard.
    pub release: ReleaseConfig,
    /// Where the delayed start of a quiet wave is queued (`codebase-sync`'s
    /// own queue): required while the quiet period is above 0.
    pub trigger_queue_url: Option<String>,
    /// Where each wave's manifest is written (exact releases), if anywhere.
    pub manifest: Option<crate::ssm_document::ManifestStore>,
}

impl SyncSettings {
    /// The quiet period a start from S3 changes waits for.
    pub fn quiet(&self) -> Quiet {
        Quiet { quiet_ms: self.release.quiet_seconds * 1000, max_delay_ms: self.release.max_delay_seconds * 1000 }
    }

    /// The release marker's full key, in marker mode.
    pub fn marker_key(&self) -> Option<String> {
        self.release.marker.as_ref().map(|m| format!("{}{m}", self.codebase.prefix))
    }
}

impl SyncSettings {
    /// The sync settings of a configuration validated for a sync function;
    /// `region` is the functions' own.
    pub fn from_config(config: &Config, region: &str) -> Result<Self, ConfigError> {
        let missing = |var| ConfigError::Missing { var, component: config.component, why: "" };
        let codebase = config.codebase.clone().ok_or_else(|| missing(vars::CODEBASE_BUCKET))?;
        let excludes = Excludes::new(&codebase.excludes).map_err(|e| ConfigError::Invalid {
            var: vars::SYNC_EXCLUDES,
            reason: e.to_string(),
            value: codebase.excludes.join(","),
        })?;
        if let Some(marker) = &config.release.marker
            && excludes.excludes(marker)
        {
            return Err(ConfigError::Invalid {
                var: vars::RELEASE_MARKER,
                reason: "FLEET_SYNC_EXCLUDES excludes it: no release would ever be requested".into(),
                value: marker.clone(),
            });
        }
        if config.release.quiet_seconds > 0 && config.retrigger_queue_url.is_none() {
            return Err(ConfigError::Missing {
                var: vars::RETRIGGER_QUEUE_URL,
                component: config.component,
                why: " while FLEET_SYNC_QUIET_SECONDS is above 0 (the delayed start of a quiet wave; or set it to 0)",
            });
        }
        Ok(SyncSettings {
            fleet: config.fleet_name.clone().ok_or_else(|| missing(vars::FLEET_NAME))?,
            asg_names: config.asg_names.clone(),
            destination: codebase.destination.clone().ok_or_else(|| missing(vars::SYNC_DESTINATION))?,
            document: codebase.document.clone().ok_or_else(|| missing(vars::SYNC_DOCUMENT))?,
            region: codebase.region.clone().unwrap_or_else(|| region.to_owned()),
            codebase,
            excludes,
            lock_table: config.lock_table.clone().ok_or_else(|| missing(vars::LOCK_TABLE))?,
            lease_ms: config.lease_seconds * 1000,
            rate: config.rate.clone(),
            quarantine_after: config.quarantine_after,
            dry_run: config.dry_run,
            release: config.release.clone(),
            trigger_queue_url: config.retrigger_queue_url.clone(),
            manifest: crate::ssm_document::ManifestStore::from_config(config, region),
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
    pub store: Table,
}

impl SyncFunction {
    /// Resolves the sync settings (a missing or bad one fails the init). A
    /// codebase in another region gets an S3 client of its own (the Rust S3
    /// client does not follow cross-region redirects).
    pub fn new(mut deps: crate::Deps) -> Result<Self, ConfigError> {
        let settings = SyncSettings::from_config(&deps.config, &deps.clients.region)?;
        if settings.region != deps.clients.region {
            let regional =
                deps.clients.s3.config().to_builder().region(aws_config::Region::new(settings.region.clone()));
            deps.clients.s3 = aws_sdk_s3::Client::from_conf(regional.build());
        }
        let store = Table::new(deps.clients.dynamodb.clone(), &settings.lock_table, &settings.fleet);
        Ok(SyncFunction { deps, settings, store })
    }

    /// The executor over this state, for an invocation that must stop
    /// starting new work at `until` and that Lambda stops at `deadline`
    /// (epoch ms on the function's clock).
    pub fn context(&self, until: u64, deadline: u64) -> SyncContext<'_, Table> {
        SyncContext {
            clients: &self.deps.clients,
            store: &self.store,
            settings: &self.settings,
            clock: self.deps.clock.as_ref(),
            until,
            deadline,
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
    /// Start no new work after this moment, epoch ms (the invocation's
    /// deadline minus a margin).
    pub until: u64,
    /// The invocation's deadline, epoch ms: Lambda stops the process then, so
    /// a sender is surely gone by this moment.
    pub deadline: u64,
}

impl<S> SyncContext<'_, S> {
    /// The lease a sender takes or renews at `now`: until its own deadline
    /// plus [`LISTING_LAG_MS`]. Lambda stops the sender at its deadline, so
    /// nobody resumes the wave while it may still send, and a resumer's
    /// listing then shows everything it sent; a sender SIGKILLed or timed out
    /// mid-send leaves a wave the next sweep resumes soon after, not a whole
    /// `FLEET_LEASE_SECONDS` later. (The sweep renews a sent wave's lease by
    /// `FLEET_LEASE_SECONDS` while its commands run.)
    pub fn sender_lease_ms(&self, now: u64) -> u64 {
        self.deadline.saturating_add(LISTING_LAG_MS).saturating_sub(now).max(1)
    }

    /// When a pausing sender's lease ends: once what it sent is surely listed.
    pub fn pause_until(&self) -> u64 {
        self.clock.now_ms() + LISTING_LAG_MS
    }
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
    /// A configured value does not fit the document, or the document is too old.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// A request could not be built (a bug, not an input).
    #[error("request: {0}")]
    Build(#[from] aws_sdk_ssm::error::BuildError),
    /// A rollback that cannot be done as asked.
    #[error("rollback: {0}")]
    Rollback(String),
    /// The lock table refused a write no state refuses (a newer schema).
    #[error("{0}")]
    Refused(String),
}

/// A wave that was started (or resumed), as reported in summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct WaveStarted {
    /// Its id.
    pub wave_id: String,
    /// Its generation.
    pub target: u64,
    /// Why it started.
    pub reason: String,
    /// Instances it is sent to.
    pub instances: Vec<String>,
    /// Quarantined instances left out.
    pub quarantined: Vec<String>,
    /// In service but not `Online` in SSM: the sweep catches them up.
    pub not_online: Vec<String>,
    /// Agents too old for the document: left out.
    pub too_old: Vec<String>,
    /// Instances with a catch-up in flight: left out.
    pub busy: Vec<String>,
    /// Instances SSM refused that are no longer running.
    pub gone: Vec<String>,
    /// Instances SSM refused although running: caught up later.
    pub unreachable: Vec<String>,
    /// Its commands (sent by this invocation).
    pub command_ids: Vec<String>,
    /// It had nothing to send and ended at once.
    pub completed_empty: bool,
    /// Sending stopped early (out of time, an AWS error, or the lease was
    /// lost): the next invocation resumes it.
    pub paused: Option<String>,
    /// Why it could not succeed at all, when it ended at once.
    pub blame: Option<Blame>,
}

/// The outcome of one try at starting a wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StartOutcome {
    /// This invocation started (and sent) a wave.
    Started(Box<WaveStarted>),
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
    /// The requested generation failed twice, or its release was refused:
    /// waiting for new demand.
    Held {
        /// The generation.
        generation: u64,
    },
    /// A rollback pinned the fleet: the demand is counted, no wave runs
    /// until `{"action": "resume"}`.
    Pinned {
        /// The pinned release.
        release: String,
        /// Since when, epoch ms.
        since: u64,
    },
    /// The quiet period holds the wave back: the codebase is still changing.
    Waiting {
        /// When it may start (no change for the quiet period, or the first
        /// unsynced change reached the max delay), epoch ms.
        until: u64,
        /// The delayed start.
        trigger: TriggerState,
    },
    /// Dry run: nothing written.
    DryRun {
        /// What a start would have found.
        refusal: Option<Refusal>,
        /// The instances a wave would have been sent to.
        instances: Vec<String>,
    },
}

/// When a start may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartWhen {
    /// At once (a manual sync).
    Now,
    /// Once the codebase is quiet (`FLEET_SYNC_QUIET_SECONDS`); `due`: the
    /// delayed start this invocation handles, if any.
    Quiet {
        /// When the delayed start being handled was due, epoch ms.
        due: Option<u64>,
    },
}

/// The delayed start of a wave the quiet period holds back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum TriggerState {
    /// Queued by this invocation.
    Queued {
        /// When it is due, epoch ms.
        due: u64,
    },
    /// One is already on its way (it looks again when due).
    OnItsWay {
        /// When it is due, epoch ms.
        due: u64,
    },
    /// None could be queued: the sweep starts the wave once it is quiet.
    NotQueued {
        /// Why.
        why: String,
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
        /// Instances the wave stopped waiting for (they left, or their agent
        /// lost its connection): their invocations were cancelled.
        released: Vec<String>,
    },
    /// Not every command id is recorded yet and the lease is valid: the
    /// sender may still be sending.
    Sending {
        /// The wave.
        wave_id: String,
    },
    /// Its sending had stopped: this invocation resumed it.
    Resumed(WaveStarted),
    /// The wave ended and released the lease.
    Finished {
        /// The wave.
        wave_id: String,
        /// Its generation.
        target: u64,
        /// How it ended.
        end: WaveEnd,
        /// Instances that synced.
        synced: usize,
        /// Failed instances.
        failed: Vec<String>,
        /// Instances it never reached.
        not_attempted: Vec<String>,
        /// Instances that went away.
        gone: Vec<String>,
        /// In service, but never reached: the sweep catches them up.
        unreachable: Vec<String>,
        /// Instances whose shrink guard refused the release.
        refused: Vec<String>,
        /// Instances quarantined by this wave.
        quarantined: Vec<String>,
        /// Why it failed without blaming its hosts.
        blame: Option<Blame>,
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

/// What asked for a settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A command's status event: trusted for that command (the listing may
    /// lag it).
    Event {
        /// The command.
        command_id: String,
        /// Its status, as the event says.
        status: crate::events::CommandStatus,
    },
    /// The schedule: also looks for instances that left while their
    /// invocations were pending.
    Sweep,
    /// New demand found a wave whose lease expired.
    Demand,
}

/// How far back `ListCommands` looks for a wave's commands, before its
/// `sending_since` (clock skew between Lambda and SSM).
pub(super) const COMMENT_LOOKBACK_MS: u64 = 5 * 60 * 1000;

/// How long sending one chunk may take at most: a sender with less time
/// left pauses the wave instead.
pub(super) const CHUNK_BUDGET_MS: u64 = 10_000;

/// What is added to a wave's commands' expiry before it is finished without
/// them.
pub(super) const EXPIRY_MARGIN_MS: u64 = 5 * 60 * 1000;

/// How often a quarantined instance is offered a recovery catch-up.
pub const RECOVERY_SPACING_MS: u64 = 60 * 60 * 1000;

/// How many catch-ups one sweep sends at most (the next sweep sends more).
pub const MAX_CATCH_UPS_PER_SWEEP: usize = 50;

/// A catch-up the sweep sent or saw end: an instance that missed a wave
/// (offline, attached without a hook, launched during a wave) or a
/// quarantined one's recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatchUpReport {
    /// The instance.
    pub instance_id: String,
    /// `sent`, `running`, `synced`, `failed`, `unreachable`, `not online`.
    pub action: String,
    /// The generation it syncs to.
    pub generation: u64,
    /// Its command.
    pub command_id: Option<String>,
    /// Whether the instance was quarantined (a recovery).
    pub recovery: bool,
}

/// What the sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// The running wave, settled.
    pub settled: SettleOutcome,
    /// A wave the sweep started.
    pub started: Option<StartOutcome>,
    /// The codebase changed since the last successful (or held) wave with no
    /// demand recorded (a lost event).
    pub fingerprint_changed: bool,
    /// Catch-ups of instances behind the fleet, and recoveries.
    pub catch_ups: Vec<CatchUpReport>,
}

impl<S> SyncContext<'_, S> {
    /// The codebase's fingerprint: the prefix's, or in marker mode the marker's.
    pub(super) async fn fingerprint(&self) -> Result<super::state::Fingerprint, AwsError> {
        let s = self.settings;
        match s.marker_key() {
            Some(key) => super::codebase::marker_fingerprint(&self.clients.s3, &s.codebase.bucket, &key).await,
            None => super::codebase::fingerprint(&self.clients.s3, &s.codebase, &s.excludes).await,
        }
    }
}

impl<S> SyncContext<'_, S> {
    /// `parameters` with the fleet's retention: how many releases each
    /// instance keeps, and the lowest generation a rollback may put back
    /// (kept whatever their number).
    pub(super) fn retention(
        &self,
        parameters: crate::ssm_document::SyncParameters,
        item: &super::state::FleetItem,
    ) -> crate::ssm_document::SyncParameters {
        let keep = self.settings.release.keep_releases;
        crate::ssm_document::SyncParameters { keep_releases: Some(keep), keep: item.keep_ids(keep), ..parameters }
    }
}

fn refused(refusal: Refusal) -> StartOutcome {
    match refusal {
        Refusal::Busy { wave_id, target, .. } => StartOutcome::Coalesced { wave_id, target },
        Refusal::Held { generation, .. } => StartOutcome::Held { generation },
        Refusal::Pinned { release, since } => {
            tracing::warn!(
                release,
                since,
                "the fleet is pinned by a rollback: the demand is counted, no wave runs until resume"
            );
            StartOutcome::Pinned { release, since }
        }
        _ => StartOutcome::CaughtUp,
    }
}

/// Whether a record says a catch-up is in flight on the instance.
fn busy(record: &InstanceRecord) -> bool {
    record.recovery_command.is_some()
}
