//! Runs environments through the configuration contract, as each function's
//! cold start would: `config-check < envs.json`.
//!
//! Input: a JSON object `{ "<function>": { "VAR": "value", ... }, ... }`.
//! Output: `{ "<function>": null | "<the error its init would fail with>" }`.
//! `tests/infra` feeds it the template's environment under several
//! parameter sets, so the stack never deploys a configuration a function
//! refuses at cold start.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;

use fleetkeeper::config::{Component, Config};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("config-check: reading stdin: {e}");
        return ExitCode::from(2);
    }
    let envs: BTreeMap<String, BTreeMap<String, String>> = match serde_json::from_str(&input) {
        Ok(envs) => envs,
        Err(e) => {
            eprintln!("config-check: expected {{function: {{VAR: value}}}}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = serde_json::Map::new();
    for (function, env) in &envs {
        let Some(component) = Component::ALL.into_iter().find(|c| c.name() == function) else {
            eprintln!("config-check: unknown function {function}");
            return ExitCode::from(2);
        };
        let verdict = match Config::from_lookup(component, |var| env.get(var).cloned()) {
            Ok(_) => Value::Null,
            Err(e) => json!(e.to_string()),
        };
        out.insert(function.clone(), verdict);
    }
    println!("{}", Value::Object(out));
    ExitCode::SUCCESS
}
