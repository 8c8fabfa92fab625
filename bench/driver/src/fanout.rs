//! Fan-out: one wave to a fleet of n in-service instances, from the upload
//! to the settled wave.

use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper_tests::fleet::{FleetSpec, upload};

use crate::stage::{Measured, Stage, StageSpec};

/// What one fleet size measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// In-service instances.
    pub instances: usize,
    /// The wave's commands (at most 50 instances each).
    pub commands: usize,
    /// `SendCommand` calls.
    pub send_command: u64,
    /// Every AWS call of the wave: dispatch (codebase-sync) and settling
    /// (sync-completion's status events).
    pub calls: u64,
    /// The dispatch's calls alone.
    pub dispatch_calls: u64,
    /// The settling's calls alone.
    pub settle_calls: u64,
    /// Status events delivered to sync-completion.
    pub status_events: usize,
    /// Time to dispatch: the dispatching invocation's wall time, ms.
    pub dispatch_wall_ms: f64,
    /// The same without the emulator's time, ms.
    pub dispatch_own_ms: f64,
    /// The settling's calls by operation.
    pub settle_ops: String,
    /// Failed invocations (should be 0).
    pub failed: usize,
    /// Whether the wave settled (completed_gen reached its target).
    pub settled: bool,
}

/// Runs the wave on a fresh fleet of `instances`.
pub async fn run(instances: usize) -> Result<Outcome, String> {
    let spec = StageSpec {
        fleet: FleetSpec {
            instances: instances as i32,
            launch_hook: false,
            terminate_hook: false,
            ..FleetSpec::default()
        },
        quiet_s: 0,
        batch: 10,
        functions: vec![(Component::CodebaseSync, "codebase-sync"), (Component::SyncCompletion, "sync-completion")],
    };
    let mut stage = Stage::new(spec).await;
    upload(&stage.clients, &stage.fleet, &["index.php".to_owned()]).await;
    let before = stage.emulator_time(Component::CodebaseSync);
    stage.pump().await;
    let dispatch: Vec<Measured> = stage.measured(Component::CodebaseSync);
    let dispatch_emulator = stage.emulator_time(Component::CodebaseSync) - before;
    let item = stage.fleet.item(&stage.clients).await;
    let Some(wave) = item.wave.clone() else {
        return Err(format!("{instances} instances: no wave started ({dispatch:?})"));
    };
    for _ in 0..5 {
        // The instances take a minute (SSM lists a new command only after
        // its listing lag: a settle confirms every command by listing).
        stage.advance(Duration::from_secs(60)).await;
        if stage.complete_commands().await == 0 {
            break;
        }
        stage.pump().await;
    }
    let settled = stage.fleet.item(&stage.clients).await.completed_gen >= wave.target;
    let settle: Vec<Measured> = stage.measured(Component::SyncCompletion);
    let sum = |ms: &[Measured]| ms.iter().map(Measured::total).sum::<u64>();
    let wall: Duration = dispatch.iter().map(|m| m.wall).sum();
    Ok(Outcome {
        instances,
        commands: wave.command_ids.len(),
        send_command: dispatch.iter().chain(&settle).map(|m| m.of("SendCommand")).sum(),
        calls: sum(&dispatch) + sum(&settle),
        dispatch_calls: sum(&dispatch),
        settle_calls: sum(&settle),
        status_events: settle.len(),
        dispatch_wall_ms: wall.as_secs_f64() * 1e3,
        dispatch_own_ms: wall.saturating_sub(dispatch_emulator).as_secs_f64() * 1e3,
        settle_ops: by_op(&settle),
        failed: dispatch.iter().chain(&settle).filter(|m| m.failed).count(),
        settled,
    })
}

/// `Op n, ...` over `measured`.
fn by_op(measured: &[Measured]) -> String {
    let mut ops = std::collections::BTreeMap::<&str, u64>::new();
    for m in measured {
        for (op, n) in &m.calls {
            *ops.entry(op.as_str()).or_default() += n;
        }
    }
    ops.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ")
}
