//! The four handlers, in process, as router targets: each with its
//! function's own access key and the test clock.

use std::sync::Arc;
use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper::clock::SharedClock;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::TestClock;
use fleetkeeper_tests::inprocess::{deps_with_clock, invocation};
use fleetkeeper_tests::router::{InProcess, Reply};
use serde_json::Value;

/// How long an in-process invocation may run (its deadline).
const TIMEOUT: Duration = Duration::from_secs(60);

fn answer<T: serde::Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Reply {
    r.map(|s| serde_json::to_value(s).unwrap_or(Value::Null)).map_err(|e| e.to_string())
}

/// `component`'s handler with `env`, on `clock`.
pub async fn in_process(
    emulator: &Emulator,
    component: Component,
    env: &[(String, String)],
    clock: &TestClock,
) -> InProcess {
    let shared: SharedClock = Arc::new(clock.clone());
    let deps = deps_with_clock(emulator, component, env, shared).await;
    target(deps, component, clock)
}

/// The same, but its SSM client reaches nothing (a port nobody listens on):
/// every SSM call fails as a dispatch failure, as in an SSM outage.
pub async fn in_process_broken_ssm(
    emulator: &Emulator,
    component: Component,
    env: &[(String, String)],
    clock: &TestClock,
) -> InProcess {
    let shared: SharedClock = Arc::new(clock.clone());
    let mut deps = deps_with_clock(emulator, component, env, shared).await;
    let config = emulator.sdk_config_as(fleetkeeper_tests::emulator::Caller::Function(component)).await;
    let broken = aws_sdk_ssm::config::Builder::from(&config).endpoint_url("http://127.0.0.1:9").build();
    deps.clients.ssm = aws_sdk_ssm::Client::from_conf(broken);
    target(deps, component, clock)
}

fn target(deps: fleetkeeper::Deps, component: Component, clock: &TestClock) -> InProcess {
    let clock = clock.clone();
    match component {
        Component::CodebaseSync => {
            let f = Arc::new(codebase_sync::Function::new(deps).expect("config"));
            InProcess(Box::new(move |payload| {
                let (f, clock) = (f.clone(), clock.clone());
                Box::pin(async move {
                    answer(codebase_sync::function_handler(invocation(payload, &clock, TIMEOUT), &f).await)
                })
            }))
        }
        Component::SyncCompletion => {
            let f = Arc::new(sync_completion::Function::new(deps).expect("config"));
            InProcess(Box::new(move |payload| {
                let (f, clock) = (f.clone(), clock.clone());
                Box::pin(async move {
                    answer(sync_completion::function_handler(invocation(payload, &clock, TIMEOUT), &f).await)
                })
            }))
        }
        Component::LifecycleHook => {
            let f = Arc::new(lifecycle_hook::Function::new(deps).expect("config"));
            InProcess(Box::new(move |payload| {
                let (f, clock) = (f.clone(), clock.clone());
                Box::pin(async move {
                    answer(lifecycle_hook::function_handler(invocation(payload, &clock, TIMEOUT), &f).await)
                })
            }))
        }
        Component::MountTargets => {
            let deps = Arc::new(deps);
            InProcess(Box::new(move |payload| {
                let (deps, clock) = (deps.clone(), clock.clone());
                Box::pin(async move {
                    answer(mount_targets::function_handler(invocation(payload, &clock, TIMEOUT), &deps).await)
                })
            }))
        }
    }
}
