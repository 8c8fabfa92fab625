//! The sync's thin executor: start and send a wave, settle a running one,
//! sweep. Shared by `codebase-sync` (start), `sync-completion` (settle, sweep,
//! follow-up) and the dispatcher's own recovery of a dead wave.
//!
//! | module | what |
//! |---|---|
//! | [`targets`] | the instances a wave goes to |
//! | [`send`] | starting a wave and sending its chunks |
//! | [`observe`] | what SSM reports about a wave's commands |
//! | [`finish`] | settling a wave: results, records, the follow-up |
//! | [`sweep`] | the scheduled backstop: settle, demand without a wave, lost events, recoveries |

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
use super::decide::Settlement;
use super::state::{Refusal, WaveEnd};
use crate::clock::Clock;
use crate::config::{CodebaseConfig, Config, ConfigError, RateControls, vars};
use crate::error::AwsError;
use crate::ssm_document::ParamError;
use crate::store::{StoreError, Table};
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
    pub store: Table,
}

impl SyncFunction {
    /// Resolves the sync settings (a missing or bad one fails the init).
    pub fn new(deps: crate::Deps) -> Result<Self, ConfigError> {
        let settings = SyncSettings::from_config(&deps.config, &deps.clients.region)?;
        let store = Table::new(deps.clients.dynamodb.clone(), &settings.lock_table, &settings.fleet);
        Ok(SyncFunction { deps, settings, store })
    }

    /// The executor over this state.
    pub fn context(&self) -> SyncContext<'_, Table> {
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
pub(super) const COMMENT_LOOKBACK_MS: u64 = 5 * 60 * 1000;

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
