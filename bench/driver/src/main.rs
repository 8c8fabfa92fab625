//! `fleetkeeper-bench`: what `make bench` and `make bench-quick` run.
//!
//! Against the emulator (`tests/emulator/with-emulator`), with the bootstraps
//! of `FLEETKEEPER_BIN_DIR` (the release build under `make bench`, the debug
//! build under `make bench-quick`): cold start (full only), burst coalescing,
//! fan-out and lifecycle call counts. Prints the tables; `--out` writes them
//! into BENCHMARKS.md with the method, `--plots` the SVG plots. `--quick`
//! runs smaller cases, counts only, and checks the counts' invariants (exit 1
//! when one fails): that is the CI job.

mod burst;
mod cold;
mod fanout;
mod lifecycle;
mod plot;
mod profile;
mod report;
mod runtime_api;
mod stage;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document};

/// fleetkeeper's benchmarks.
#[derive(Parser, Debug)]
struct Args {
    /// Counts only, smaller cases, invariants checked (the CI job).
    #[arg(long)]
    quick: bool,
    /// Paired cold-start runs.
    #[arg(long, default_value_t = 21)]
    runs: usize,
    /// Write the report here (BENCHMARKS.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the SVG plots into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Only these parts (cold, burst, fanout, lifecycle), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Burst sizes (uploads), instead of the defaults.
    #[arg(long, value_delimiter = ',')]
    uploads: Vec<usize>,
    /// Fan-out sizes (instances), instead of the defaults.
    #[arg(long, value_delimiter = ',')]
    instances: Vec<usize>,
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// Cold start (full runs only).
    pub cold: Option<cold::ColdReport>,
    /// Burst cases.
    pub burst: Vec<burst::Outcome>,
    /// Fan-out sizes.
    pub fanout: Vec<fanout::Outcome>,
    /// Lifecycle phases.
    pub lifecycle: Vec<lifecycle::Phase>,
    /// The planners (criterion's results, when `cargo bench` ran first).
    pub planners: Vec<report::Planner>,
    /// Seconds each part took.
    pub durations: Vec<(String, f64)>,
}

fn bin_dir() -> PathBuf {
    match std::env::var_os("FLEETKEEPER_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)).unwrap_or_default(),
    }
}

/// The largest burst the naive baseline runs.
pub const NAIVE_MAX: usize = 1000;

fn burst_cases(quick: bool, uploads: &[usize]) -> Vec<burst::Case> {
    let sizes: &[usize] = match (uploads.is_empty(), quick) {
        (false, _) => uploads,
        (true, true) => &[1, 100],
        (true, false) => &[1, 100, 1000, 10_000],
    };
    let mut cases = Vec::new();
    for &uploads in sizes {
        // The naive baseline stops at 1,000: the emulator's SendCommand
        // slows with every command it holds (10,000 naive commands did not
        // finish in 10 minutes); its counts are one per upload by design.
        if uploads <= NAIVE_MAX {
            cases.push(burst::Case { uploads, batch: 10, quiet: false, naive: true });
        }
        cases.push(burst::Case { uploads, batch: 10, quiet: false, naive: false });
        cases.push(burst::Case { uploads, batch: 10, quiet: true, naive: false });
    }
    if !quick && uploads.is_empty() {
        for batch in [1, 100] {
            cases.push(burst::Case { uploads: 1000, batch, quiet: true, naive: false });
            cases.push(burst::Case { uploads: 1000, batch, quiet: false, naive: false });
        }
    }
    cases
}

async fn run(args: &Args) -> Result<Results, String> {
    let wants = |part: &str| args.only.is_empty() || args.only.iter().any(|o| o == part);
    let mut results = Results::default();
    if args.only.iter().any(|o| o == "profile") {
        // Only when asked: the `profiling` build, under callgrind.
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        let fleet = Fleet::provision(&clients, &FleetSpec { instances: 1, ..FleetSpec::default() }).await;
        let subjects = cold::Subjects::new(&emulator, &fleet, &bin_dir());
        let out = PathBuf::from("target/callgrind");
        let function = subjects.functions.iter().find(|(c, _)| *c == fleetkeeper::Component::CodebaseSync);
        let bare = profile::profile(&subjects.bare, &out)?;
        let floor = profile::profile(&subjects.floor, &out)?;
        let function = profile::profile(&function.ok_or("no codebase-sync")?.1, &out)?;
        println!(
            "init instructions: bare {}, sdk floor {}, codebase-sync {} ({:.2}x bare, {:.2}x sdk floor); annotated in {}",
            bare.instructions,
            floor.instructions,
            function.instructions,
            function.instructions as f64 / bare.instructions as f64,
            function.instructions as f64 / floor.instructions as f64,
            out.display()
        );
    }
    if wants("cold") && !args.quick {
        let started = Instant::now();
        let emulator = Emulator::from_env();
        let clients = emulator.clients().await;
        let fleet = Fleet::provision(&clients, &FleetSpec { instances: 1, ..FleetSpec::default() }).await;
        create_sync_document(&clients, &fleet).await;
        let subjects = cold::Subjects::new(&emulator, &fleet, &bin_dir());
        let report = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(cold::run(&emulator, &fleet, &subjects, args.runs))
        })?;
        report::print_cold(&report);
        results.cold = Some(report);
        results.durations.push(("cold start".into(), started.elapsed().as_secs_f64()));
    }
    if wants("planners") && !args.quick {
        results.planners = report::read_planners(std::path::Path::new("target/criterion/planners"));
    }
    if wants("burst") {
        let started = Instant::now();
        for case in burst_cases(args.quick, &args.uploads) {
            let outcome = burst::run(case).await?;
            report::print_burst(&outcome);
            results.burst.push(outcome);
        }
        results.durations.push(("burst".into(), started.elapsed().as_secs_f64()));
    }
    if wants("fanout") {
        let started = Instant::now();
        let sizes: &[usize] = match (args.instances.is_empty(), args.quick) {
            (false, _) => &args.instances,
            (true, true) => &[10, 100],
            (true, false) => &[10, 100, 1000, 5000],
        };
        for &n in sizes {
            let outcome = fanout::run(n).await?;
            report::print_fanout(&outcome);
            results.fanout.push(outcome);
        }
        results.durations.push(("fan-out".into(), started.elapsed().as_secs_f64()));
    }
    if wants("lifecycle") {
        let started = Instant::now();
        results.lifecycle = lifecycle::run().await?;
        for p in &results.lifecycle {
            report::print_phase(p);
        }
        results.durations.push(("lifecycle".into(), started.elapsed().as_secs_f64()));
    }
    Ok(results)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let results = match run(&args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetkeeper-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.plots
        && let Err(e) = report::plots(&results, dir)
    {
        eprintln!("fleetkeeper-bench: plots: {e}");
        return ExitCode::from(2);
    }
    let mut text = report::markdown(&results, args.runs);
    if let (Some(out), false) = (&args.out, args.only.is_empty()) {
        // A part's run updates its sections of the whole report.
        if let Ok(existing) = std::fs::read_to_string(out) {
            text = report::merge(&existing, &text);
        }
    }
    if let Some(out) = &args.out
        && let Err(e) = std::fs::write(out, text)
    {
        eprintln!("fleetkeeper-bench: {}: {e}", out.display());
        return ExitCode::from(2);
    }
    let failures = report::check(&results);
    for f in &failures {
        println!("CHECK FAILED: {f}");
    }
    for (part, s) in &results.durations {
        println!("{part}: {s:.0} s");
    }
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
