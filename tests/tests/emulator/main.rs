//! Emulator-backed integration tests, in one binary: each test module would
//! otherwise link the whole AWS SDK again.

mod cli;
mod codebase_sync;
mod exact;
mod faults;
mod ground;
mod lifecycle_hook;
mod lifecycle_real;
mod mount_targets;
mod releases;
mod reliability;
mod rollback;
mod runtime_harness;
mod sync_real;
mod sync_store;
mod targets;
mod world;
