//! Lifecycle: AWS calls per gated launch and per terminate, and for a
//! scale-out of 20, the four functions deployed together.

use std::collections::BTreeMap;

use fleetkeeper::Component;
use fleetkeeper_tests::fleet::FleetSpec;

use crate::stage::{Measured, Stage, StageSpec};

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// What happened.
    pub what: String,
    /// Instances it concerned.
    pub instances: usize,
    /// Invocations, all functions.
    pub invocations: usize,
    /// AWS calls by function.
    pub calls: BTreeMap<Component, u64>,
    /// Whether the fleet reached the expected state.
    pub reached: bool,
    /// Failed invocations (should be 0).
    pub failed: usize,
}

impl Phase {
    /// All calls.
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }
}

async fn settle(stage: &mut Stage) {
    for _ in 0..20 {
        stage.pump().await;
        if stage.complete_commands().await == 0 {
            stage.pump().await;
            if stage.complete_commands().await == 0 {
                break;
            }
        }
    }
}

fn phase(what: &str, instances: usize, measured: &[Measured], reached: bool) -> Phase {
    let mut calls = BTreeMap::new();
    for m in measured {
        *calls.entry(m.to).or_default() += m.total();
    }
    let failed = measured.iter().filter(|m| m.failed).count();
    Phase { what: what.to_owned(), instances, invocations: measured.len(), calls, reached, failed }
}

/// Runs the three phases on a fresh fleet.
pub async fn run() -> Result<Vec<Phase>, String> {
    let spec = StageSpec {
        fleet: FleetSpec { instances: 1, ..FleetSpec::default() },
        quiet_s: 0,
        batch: 10,
        functions: Component::ALL.iter().map(|&c| (c, c.name())).collect(),
    };
    let mut stage = Stage::new(spec).await;
    let in_service = |members: &[fleetkeeper_tests::fleet::Member], n: usize| {
        members.len() == n && members.iter().all(|m| m.lifecycle_state == "InService")
    };
    let mut phases = Vec::new();

    settle(&mut stage).await;
    let members = stage.fleet.members(&stage.clients).await;
    let seen = stage.all_measured();
    phases.push(phase("gated launch of 1 instance", 1, &seen, in_service(&members, 1)));

    let mark = seen.len();
    let raised = stage
        .clients
        .autoscaling
        .update_auto_scaling_group()
        .auto_scaling_group_name(&stage.fleet.asg_name)
        .max_size(40);
    raised.send().await.map_err(|e| format!("raise the group's max size: {e:?}"))?;
    stage.fleet.scale_to(&stage.clients, 21).await;
    settle(&mut stage).await;
    let members = stage.fleet.members(&stage.clients).await;
    let seen = stage.all_measured();
    phases.push(phase("scale-out of 20", 20, &seen[mark..], in_service(&members, 21)));

    let mark = seen.len();
    stage.fleet.scale_to(&stage.clients, 20).await;
    settle(&mut stage).await;
    let members = stage.fleet.members(&stage.clients).await;
    let seen = stage.all_measured();
    phases.push(phase("terminate of 1 instance", 1, &seen[mark..], in_service(&members, 20)));
    Ok(phases)
}
