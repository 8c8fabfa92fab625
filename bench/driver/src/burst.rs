//! Burst coalescing: N uploads delivered as S3 would (EventBridge -> SQS ->
//! batches): the first half (with the quiet period off, the first batch
//! already starts a wave), then the second half while the first wave runs;
//! fleetkeeper against the naive per-upload sync, in the same run.

use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper_tests::fleet::{FleetSpec, upload};

use crate::stage::{Measured, Stage, StageSpec};

/// The quiet period when on: the template's default.
pub const QUIET_S: u64 = 30;

/// The fleet every burst case syncs.
pub const INSTANCES: i32 = 3;

/// One case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Uploads.
    pub uploads: usize,
    /// The SQS batch size.
    pub batch: usize,
    /// Quiet period on.
    pub quiet: bool,
    /// The naive baseline instead of fleetkeeper.
    pub naive: bool,
}

impl Case {
    /// The row label.
    pub fn label(&self) -> String {
        match self.naive {
            true => format!("naive, batch {}", self.batch),
            false => format!("fleetkeeper, batch {}, quiet {}", self.batch, if self.quiet { "on" } else { "off" }),
        }
    }
}

/// What a case measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// Sync waves (fleetkeeper: wave records; naive: one per upload).
    pub waves: u64,
    /// `SendCommand` calls.
    pub send_command: u64,
    /// Syncs the instances were asked to run (every command's `TargetCount`).
    pub instance_syncs: u64,
    /// Invocations that only added demand.
    pub demand_only: usize,
    /// fleetkeeper: every requested generation completed, no wave left.
    pub caught_up: bool,
    /// Invocations of the sync functions.
    pub invocations: usize,
    /// The most DynamoDB writes of an invocation that only added demand (no
    /// wave sent, no delayed start queued).
    pub demand_writes_max: u64,
    /// The most DynamoDB writes of an invocation that queued the delayed
    /// start (quiet period on).
    pub queue_writes_max: u64,
    /// The most DynamoDB writes of an invocation that sent a wave.
    pub winner_writes_max: u64,
    /// The calls of that demand-only invocation, and of that winner.
    pub demand_calls: String,
    /// The winner's calls.
    pub winner_calls: String,
    /// Every AWS call of the sync functions, per upload.
    pub calls_per_upload: f64,
    /// Invocation time per upload, µs (emulator time included).
    pub wall_per_upload_us: f64,
    /// The same without the emulator's time, µs.
    pub own_per_upload_us: f64,
    /// Failed invocations (should be 0).
    pub failed: usize,
}

/// Runs one case on a fresh fleet.
pub async fn run(case: Case) -> Result<Outcome, String> {
    let functions = match case.naive {
        true => vec![(Component::CodebaseSync, "naive-sync")],
        false => vec![(Component::CodebaseSync, "codebase-sync"), (Component::SyncCompletion, "sync-completion")],
    };
    let spec = StageSpec {
        fleet: FleetSpec { instances: INSTANCES, launch_hook: false, terminate_hook: false, ..FleetSpec::default() },
        quiet_s: if case.quiet { QUIET_S } else { 0 },
        batch: case.batch,
        functions,
    };
    let mut stage = Stage::new(spec).await;
    let keys: Vec<String> = (0..case.uploads).map(|i| format!("app/file-{i:05}.php")).collect();
    let (first, second) = keys.split_at(case.uploads.div_ceil(2));
    let quiet = Duration::from_secs(QUIET_S + 1);

    // The first half arrives; a wave starts (at once, or once quiet).
    for chunk in first.chunks(250) {
        upload(&stage.clients, &stage.fleet, chunk).await;
        stage.pump().await;
    }
    if case.quiet {
        stage.advance(quiet).await;
        stage.pump().await;
    }
    // The second half arrives while that wave runs.
    for chunk in second.chunks(250) {
        upload(&stage.clients, &stage.fleet, chunk).await;
        stage.pump().await;
    }
    // The instances finish; the follow-up (if any) runs and finishes.
    for _ in 0..10 {
        // The instances take a minute (past SSM's listing lag).
        stage.advance(Duration::from_secs(60)).await;
        let ended = stage.complete_commands().await;
        stage.pump().await;
        if case.quiet {
            stage.advance(quiet).await;
            stage.pump().await;
        }
        if ended == 0 && stage.complete_commands().await == 0 {
            break;
        }
        stage.pump().await;
    }

    let mut measured: Vec<Measured> = stage.measured(Component::CodebaseSync);
    let mut emulator_time = stage.emulator_time(Component::CodebaseSync);
    if !case.naive {
        measured.extend(stage.measured(Component::SyncCompletion));
        emulator_time += stage.emulator_time(Component::SyncCompletion);
    }
    let send_command: u64 = measured.iter().map(|m| m.of("SendCommand")).sum();
    let waves = match case.naive {
        true => send_command,
        false => stage.waves().await as u64,
    };
    // Only demand: no wave sent, no delayed start queued.
    let only_demand =
        |m: &&Measured| m.to == Component::CodebaseSync && m.of("SendCommand") == 0 && m.of("SendMessage") == 0;
    let demand = measured.iter().filter(only_demand).max_by_key(|m| m.writes());
    let queued =
        measured.iter().filter(|m| m.of("SendCommand") == 0 && m.of("SendMessage") > 0).max_by_key(|m| m.writes());
    let winner = measured.iter().filter(|m| m.of("SendCommand") > 0).max_by_key(|m| m.writes());
    let describe = |m: Option<&Measured>| {
        m.map(|m| m.calls.iter().map(|(op, n)| format!("{op} {n}")).collect::<Vec<_>>().join(", ")).unwrap_or_default()
    };
    let calls: u64 = measured.iter().map(Measured::total).sum();
    let wall: Duration = measured.iter().map(|m| m.wall).sum();
    let n = case.uploads.max(1) as f64;
    Ok(Outcome {
        case,
        waves,
        send_command,
        instance_syncs: stage.instance_invocations().await,
        demand_only: measured.iter().filter(only_demand).count(),
        queue_writes_max: queued.map(Measured::writes).unwrap_or(0),
        caught_up: case.naive || stage.caught_up().await,
        invocations: measured.len(),
        demand_writes_max: demand.map(Measured::writes).unwrap_or(0),
        winner_writes_max: winner.map(Measured::writes).unwrap_or(0),
        demand_calls: describe(demand),
        winner_calls: describe(winner),
        calls_per_upload: calls as f64 / n,
        wall_per_upload_us: wall.as_secs_f64() * 1e6 / n,
        own_per_upload_us: wall.saturating_sub(emulator_time).as_secs_f64() * 1e6 / n,
        failed: measured.iter().filter(|m| m.failed).count(),
    })
}
