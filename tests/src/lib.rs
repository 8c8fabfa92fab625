//! `fleetkeeper-tests`: what the emulator-backed tests and `make demo` share.
//!
//! | module | what |
//! |---|---|
//! | [`emulator`] | the patched moto server: URL, SDK clients, control endpoints |
//! | [`runtime`] | a Lambda Runtime API that runs a function's real `bootstrap` binary |
//! | [`fleet`] | provisioning a web tier (VPC, subnets, ALB target group, ASG, hooks, EFS, lock table, bucket) |
//! | [`campaign`] | the sync's fault campaign: a seeded scenario under injected faults, then healing, four invariants checked |
//! | [`events`] | events in the shapes AWS sends them |
//! | [`inprocess`] | a handler's `Deps` and invocation, for in-process handler tests |
//! | [`agent`] | a local SSM agent: runs the real document for each instance, ends its invocation |
//! | [`router`] | the event router: delivers what AWS would, to in-process handlers or real bootstraps |
//! | [`faults`] | a fault-injecting HTTP proxy in front of the emulator (throttling, 5xx, drops, timeouts, kills) |
//! | [`http`] | a minimal JSON-over-HTTP/1.1 client for the control endpoints |
//!
//! The emulator itself (Python, `tests/emulator/`) is started by `make test`
//! and `make demo`, which export `FLEETKEEPER_EMULATOR_URL`.

pub mod agent;
pub mod campaign;
pub mod cli;
pub mod deployed;
pub mod emulator;
pub mod events;
pub mod faults;
pub mod fleet;
pub mod http;
pub mod inprocess;
pub mod lifecycle_campaign;
pub mod router;
pub mod runtime;

pub use emulator::Emulator;
