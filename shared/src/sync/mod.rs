//! The coalesced, fenced codebase sync (DESIGN.md, "the heart").
//!
//! | module | what |
//! |---|---|
//! | [`state`] | the fleet item and its transitions, as pure functions |
//! | [`store`] | the lock table: DynamoDB, and the in-memory specification |
//! | [`settle`] | deciding about a running wave from SSM's answers (pure) |
//! | [`command`] | the document's parameters, comments, chunks, rate controls |
//! | [`codebase`] | which S3 changes count; the codebase fingerprint |
//! | [`run`] | the executor: start and send a wave, settle, sweep |

pub mod codebase;
pub mod command;
pub mod run;
pub mod settle;
pub mod state;
pub mod store;

#[cfg(test)]
mod model;
