//! The deployed shape: each function's real `bootstrap` binary, driven through
//! the Lambda Runtime API harness, configured only by environment variables
//! and reaching the emulator through the standard `aws-config` chain.

use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper::config::vars;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::fleet::{Fleet, FleetSpec};
use fleetkeeper_tests::runtime::{LambdaProcess, Outcome, run_to_exit};
use serde_json::json;

#[tokio::test]
async fn every_bootstrap_answers_invocations_through_the_runtime_api() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let env = fleet.env();

    for component in Component::ALL {
        let function = component.name();
        let mut process = LambdaProcess::start_function(&emulator, component, &env).await;
        // Two invocations on one process: the runtime loop keeps serving.
        // Events no function acts on, so this holds whatever each one does.
        let answer = process.invoke(json!({"hello": "world"})).await.response();
        assert_eq!(answer["function"], function, "{answer}");
        assert_eq!(answer["events"], 1, "{answer}");
        assert_eq!(answer["skipped"]["by_reason"]["unknown_shape"], 1, "{answer}");

        let garbage = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": "{not json"}]});
        let answer = process.invoke(garbage).await.response();
        assert_eq!(answer["skipped"]["by_reason"]["malformed"], 1, "a malformed event is a logged skip: {answer}");

        let logs = process.stop().await.stdout();
        assert!(logs.contains("skipping event"), "{function} logs each skip:\n{logs}");
        assert!(!logs.contains("{not json"), "{function} never logs whole events:\n{logs}");
    }
}

#[tokio::test]
async fn a_payload_that_is_not_json_object_is_still_answered() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let mut process = LambdaProcess::start_function(&emulator, Component::CodebaseSync, &fleet.env()).await;
    let answer = process.invoke(json!("just a string")).await;
    let Outcome::Response(answer) = answer else { panic!("{answer:?}") };
    assert_eq!(answer["skipped"]["by_reason"]["unknown_shape"], 1, "{answer}");
    process.stop().await;
}

#[tokio::test]
async fn missing_configuration_fails_the_init_naming_the_variable() {
    let emulator = Emulator::from_env();
    for component in Component::ALL {
        let function = component.name();
        let mut env: Vec<(String, String)> = emulator.aws_env_for(component);
        env.push((vars::FLEET_NAME.into(), "web".into()));
        let exit = run_to_exit(function, &env, Duration::from_secs(30)).await;
        assert_eq!(exit.code, Some(1), "{function}: {exit:?}");
        assert!(
            exit.stderr.contains(&format!("FLEET_ASG_NAMES is required by {function}")),
            "{function}: the init error names the variable:\n{}",
            exit.stderr
        );
    }
}

#[tokio::test]
async fn malformed_configuration_fails_the_init_naming_the_variable() {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let fleet = Fleet::provision(&clients, &FleetSpec { instances: 0, ..FleetSpec::default() }).await;
    let mut env = fleet.env();
    env.extend(emulator.aws_env_for(Component::SyncCompletion));
    env.push((vars::SYNC_DESTINATION.into(), "/var/www; reboot".into()));
    let exit = run_to_exit("sync-completion", &env, Duration::from_secs(30)).await;
    assert_eq!(exit.code, Some(1), "{exit:?}");
    assert!(exit.stderr.contains("FLEET_SYNC_DESTINATION is invalid"), "{}", exit.stderr);
}
