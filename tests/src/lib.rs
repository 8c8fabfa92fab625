//! `fleetkeeper-tests`: what the emulator-backed tests and `make demo` share.
//!
//! | module | what |
//! |---|---|
//! | [`emulator`] | the patched moto server: URL, SDK clients, control endpoints |
//! | [`runtime`] | a Lambda Runtime API that runs a function's real `bootstrap` binary |
//! | [`fleet`] | provisioning a web tier (VPC, subnets, ALB target group, ASG, hooks, EFS, lock table, bucket) |
//! | [`http`] | a minimal JSON-over-HTTP/1.1 client for the control endpoints |
//!
//! The emulator itself (Python, `tests/emulator/`) is started by `make test`
//! and `make demo`, which export `FLEETKEEPER_EMULATOR_URL`.

pub mod emulator;
pub mod fleet;
pub mod http;
pub mod runtime;

pub use emulator::Emulator;
