//! Each function's permission manifest (`fleetkeeper::permissions`), as the
//! template and its tests use it.
//!
//! ```text
//! permissions json              the manifests as JSON (tests/infra reads them)
//! permissions check-recorded    every operation the emulator saw a function
//!                               make (since it started) is in its manifest
//! ```
//!
//! `make test` runs `check-recorded` after the Rust suite, on the same
//! emulator: an operation added to the code without its permission fails
//! the build instead of a deployment.

use std::collections::BTreeSet;
use std::process::ExitCode;

use fleetkeeper::config::Component;
use fleetkeeper::permissions::{
    Grant, Operator, Scope, action_of, actions, manifest, operator_actions, operator_manifest,
};
use fleetkeeper_tests::emulator::{Caller, Emulator};
use serde_json::{Value, json};

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Any => "any",
        Scope::Document => "document",
        Scope::FleetInstances => "fleet-instances",
        Scope::LockTable => "lock-table",
        Scope::CodebaseBucket => "codebase-bucket",
        Scope::FleetGroups => "fleet-groups",
        Scope::TargetGroups => "target-groups",
        Scope::FileSystem => "file-system",
        Scope::NetworkInterfaces => "network-interfaces",
        Scope::RetriggerQueue => "retrigger-queue",
        Scope::SyncTriggerQueue => "sync-trigger-queue",
        Scope::ReleaseMarker => "release-marker",
        Scope::CodebaseBucketSettings => "codebase-bucket-settings",
        Scope::Manifests => "manifests",
        Scope::StackRules => "stack-rules",
        Scope::StackFunctions => "stack-functions",
        Scope::SyncFunction => "sync-function",
    }
}

fn grants(grants: &[Grant]) -> Value {
    json!(
        grants
            .iter()
            .map(|g| json!({"actions": g.actions, "scope": scope_name(g.scope), "why": g.why}))
            .collect::<Vec<_>>()
    )
}

fn manifests() -> Value {
    let functions: serde_json::Map<String, Value> =
        Component::ALL.iter().map(|&c| (c.name().to_owned(), grants(manifest(c)))).collect();
    let operators: serde_json::Map<String, Value> = Operator::ALL
        .iter()
        .map(|&o| {
            let statements: Vec<Value> = operator_manifest(o)
                .iter()
                .map(|g| json!({"actions": g.actions, "scope": scope_name(g.scope), "why": g.why.join("; ")}))
                .collect();
            (o.name().to_owned(), json!(statements))
        })
        .collect();
    json!({ "functions": functions, "operators": operators })
}

async fn check_recorded() -> Result<String, String> {
    let emulator = Emulator::from_env();
    let seen = emulator.seen_calls().await;
    let mut missing = Vec::new();
    let mut made = 0;
    for c in Component::ALL {
        let tag = Caller::Function(c).tag();
        let granted: BTreeSet<&str> = actions(c).into_iter().collect();
        let used: BTreeSet<String> =
            seen.iter().filter(|(t, ..)| t == tag).map(|(_, service, op)| action_of(service, op)).collect();
        if used.is_empty() {
            missing.push(format!("{c}: no call recorded at all (did the suite run on this emulator?)"));
        }
        made += used.len();
        missing.extend(used.iter().filter(|a| !granted.contains(a.as_str())).map(|a| format!("{c}: {a}")));
    }
    // The operator CLI: its read-only verbs as OPREAD, the rest as OPERAT.
    for (caller, operator) in [(Caller::OperatorReadOnly, Operator::ReadOnly), (Caller::Operator, Operator::Operate)] {
        let granted: BTreeSet<&str> = operator_actions(operator).into_iter().collect();
        let used: BTreeSet<String> =
            seen.iter().filter(|(t, ..)| t == caller.tag()).map(|(_, service, op)| action_of(service, op)).collect();
        if used.is_empty() {
            missing.push(format!("{}: no call recorded at all", operator.name()));
        }
        made += used.len();
        missing
            .extend(used.iter().filter(|a| !granted.contains(a.as_str())).map(|a| format!("{}: {a}", operator.name())));
    }
    if missing.is_empty() {
        Ok(format!(
            "permissions: the {made} operations the functions and the CLI made in the suite are all in their manifests"
        ))
    } else {
        Err(format!(
            "operations made but not in the function's manifest (fleetkeeper::permissions):\n  {}",
            missing.join("\n  ")
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("json") => {
            println!("{}", serde_json::to_string_pretty(&manifests()).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Some("check-recorded") => match check_recorded().await {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: permissions json | check-recorded");
            ExitCode::from(2)
        }
    }
}
