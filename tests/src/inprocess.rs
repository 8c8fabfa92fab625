//! Running a handler in-process against the emulator: its `Deps` built from
//! a fleet's environment (validated exactly as at cold start) and an
//! invocation with a real deadline.

use std::sync::Arc;
use std::time::Duration;

use fleetkeeper::clock::{Clock, SharedClock, SystemClock};
use fleetkeeper::{Component, Config, Deps};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;

use crate::Emulator;

/// The dependencies of `component` for `env`, with clients aimed at the emulator.
pub async fn deps(emulator: &Emulator, component: Component, env: &[(String, String)]) -> Deps {
    deps_with_clock(emulator, component, env, Arc::new(SystemClock)).await
}

/// The same, with an injected clock.
pub async fn deps_with_clock(
    emulator: &Emulator,
    component: Component,
    env: &[(String, String)],
    clock: SharedClock,
) -> Deps {
    let config = Config::from_lookup(component, |k| env.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone()))
        .unwrap_or_else(|e| panic!("{component}: {e}"));
    Deps { config, clients: emulator.clients_for(component).await, clock }
}

/// An invocation of `payload` whose deadline is `timeout` after `clock`'s now.
pub fn invocation(payload: Value, clock: &dyn Clock, timeout: Duration) -> LambdaEvent<Value> {
    let mut context = Context::default();
    context.request_id = uuid::Uuid::new_v4().to_string();
    context.deadline = clock.now_ms() + timeout.as_millis() as u64;
    LambdaEvent::new(payload, context)
}

/// Sets (or adds) one variable of an environment.
pub fn set_var(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_owned(), value.to_owned()));
}

/// Puts an environment on the SDK's own retry policy, as deployed (the test
/// default is one attempt), with `attempt_timeout_s` per attempt.
pub fn deployed_retries(env: &mut Vec<(String, String)>, attempt_timeout_s: u64) {
    env.retain(|(k, _)| k != "AWS_MAX_ATTEMPTS");
    set_var(env, fleetkeeper::config::vars::AWS_ATTEMPT_TIMEOUT_SECONDS, &attempt_timeout_s.to_string());
}
