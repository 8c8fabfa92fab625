//! `fleetkeeper-planner-bench`: the criterion benchmarks of fleetkeeper's
//! pure planners, over plain data built once (no AWS call, no I/O).
//!
//! The crate holds no code of its own: the benchmarks are in
//! `benches/planners.rs`, run with `cargo bench -p fleetkeeper-planner-bench`
//! (`make bench` runs them before the emulator benchmarks). They time, in the
//! group `planners`:
//!
//! | benchmark | what |
//! |---|---|
//! | `s3 batch of 100 records` | `codebase-sync`'s work on an SQS batch of 100 EventBridge S3 `Object Created` events before its demand write: parse, relevance against the codebase settings, the changes' event times |
//! | `lifecycle event` | `lifecycle-hook`'s on one EventBridge launch lifecycle action: parse, triage, the planner's steps to its decision |
//! | `settle of a 1000-instance wave` | the settle of a wave of 1,000 instances (20 commands of 50): its outcome, the next fleet item, the instances' run histories |
