//! `fleetkeeper-tests`: what the emulator-backed tests and `make demo` share.
//!
//! | module | what |
//! |---|---|
//! | [`emulator`] | the patched moto server: URL, SDK clients, control endpoints |
//! | [`runtime`] | a Lambda Runtime API that runs a function's real `bootstrap` binary |
//! | [`fleet`] | provisioning a web tier (VPC, subnets, ALB target group, ASG, hooks, EFS, lock table, bucket) |
//! | [`events`] | events in the shapes AWS sends them |
//! | [`inprocess`] | a handler's `Deps` and invocation, for in-process handler tests |
//! | [`instance`] | a stand-in instance: runs the sync document's real script locally |
//! | [`http`] | a minimal JSON-over-HTTP/1.1 client for the control endpoints |
//!
//! The emulator itself (Python, `tests/emulator/`) is started by `make test`
//! and `make demo`, which export `FLEETKEEPER_EMULATOR_URL`.

pub mod emulator;
pub mod events;
pub mod fleet;
pub mod http;
pub mod inprocess;
pub mod instance;
pub mod runtime;

pub use emulator::Emulator;
