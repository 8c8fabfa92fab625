//! Gating instances into and out of service (`lifecycle-hook`).
//!
//! | module | what |
//! |---|---|
//! | [`action`] | the action's identity and outcome; THE lifecycle-state table |
//! | [`breaker`] | the launch-side circuit breaker |
//! | [`plan`] | the pure planner: the next step from the action, the record and observations |
//! | [`record`] | the persisted step machine of an instance |
//! | [`gate`] | the executor's step loop: act, persist, heartbeat, complete, re-trigger |
//! | [`observe`] | one observation per planner stage |
//! | [`hook_api`] | the Auto Scaling lifecycle API: settings, heartbeat probe, completion |
//! | [`targets`] | registration, deregistration and health in managed target groups |
//! | [`catch_up`] | the catch-up command: send, find, status events |
//! | [`reconcile`] | the scheduled backstop |
//! | [`store`] | the lock table as the gate needs it |

pub mod action;
pub mod breaker;
pub mod catch_up;
pub mod gate;
pub mod hook_api;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod record;
pub mod store;
pub mod targets;

#[cfg(test)]
mod plan_tests;

#[cfg(test)]
mod gate_tests;
