//! `fleetkeeper`: the shared library of the fleetkeeper Lambda functions.
//!
//! Module map:
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the typed configuration contract, per-function requirements |
//! | [`params`] | strict patterns for every configured or sent value (shared with the SSM document) |
//! | [`clients`] | SDK clients built once from the standard `aws-config` chain |
//! | [`error`] | the error policy: transient / configuration / rejected |
//! | [`events`] | typed envelopes for every event shape fleetkeeper receives |
//! | [`groups`] | the managed Auto Scaling groups |
//! | [`lifecycle`] | gating instances in and out of service: planner, record, executor |
//! | [`mount_targets`] | one EFS mount target per AZ: planner, executor |
//! | [`sync`] | the coalesced, fenced codebase sync: state machine, store, decisions, executor |
//! | [`ssm_document`] | the sync document's contract: parameters, comments, sending, run history |
//! | [`store`] | the lock table's mechanics: keys, conditional updates, versioned documents, in-memory table |
//! | [`deadline`] | time budgets from the invocation deadline |
//! | [`skips`] | tallying and logging skipped events for a handler's summary |
//! | [`deps`] | config + clients + clock, built once per cold start |
//! | [`clock`] | injected time |
//! | [`telemetry`] | tracing set-up |
//!
//! Layering: `functions/*` → domains (`lifecycle`, `sync`, `mount_targets`) →
//! `store` and `ssm_document` → foundation (config, params, events, errors,
//! clients, clock). A domain never imports another domain (`lifecycle` uses
//! `mount_targets`' planner for its AZ, nothing else).
//!
//! Each job follows the same shape: a pure planner over plain data returns a
//! plan, a thin executor performs it with the SDK, and the function's handler
//! routes events to them.

pub mod clients;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod deps;
pub mod error;
pub mod events;
pub mod groups;
pub mod lifecycle;
pub mod mount_targets;
pub mod params;
pub mod permissions;
pub mod skips;
pub mod ssm_document;
pub mod stack;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod trigger;

pub use clients::Clients;
pub use config::{Component, Config, ConfigError};
pub use deps::Deps;
