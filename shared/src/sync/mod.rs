//! The coalesced, fenced codebase sync (DESIGN.md, "the heart").
//!
//! | module | what |
//! |---|---|
//! | [`state`] | the fleet item and its transitions, as pure functions |
//! | [`store`] | the lock table as the sync needs it: DynamoDB, and the in-memory specification |
//! | [`decide`] | deciding about a running wave from SSM's answers (pure) |
//! | [`codebase`] | which S3 changes count; the codebase fingerprint |
//! | [`manifest`] | exact releases: the manifest of what a wave syncs |
//! | [`run`] | the executor: start and send a wave, settle, sweep |
//!
//! The document's contract (parameters, comments, chunks, run history) is
//! [`crate::ssm_document`]'s, shared with the lifecycle gate's catch-ups.

pub mod codebase;
pub mod decide;
pub mod manifest;
pub mod run;
pub mod state;
pub mod store;

#[cfg(test)]
mod model;
#[cfg(test)]
mod rollback_model;
