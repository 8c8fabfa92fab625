//! Gating instances into and out of service (`lifecycle-hook`).
//!
//! | module | what |
//! |---|---|
//! | [`plan`] | the pure planner: the next step from the action, the record and observations |
//! | [`record`] | the persisted step machine of an instance |
//! | [`exec`] | the executor: observe, act, persist, heartbeat, complete |
//! | [`reconcile`] | the scheduled backstop |
//! | [`store`] | the lock table as the gate needs it |

pub mod exec;
pub mod plan;
pub mod reconcile;
pub mod record;
pub mod store;

#[cfg(test)]
mod plan_tests;

#[cfg(test)]
mod exec_tests;
