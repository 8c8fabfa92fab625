//! `make reliability-lifecycle`: the lifecycle gate's fault campaign over
//! many seeds, written as a table into `docs/reliability-lifecycle.md` (see
//! `fleetkeeper_tests::lifecycle_campaign`).
//!
//! ```text
//! lifecycle-reliability [--seeds 20] [--concurrency 3] [--out docs/reliability-lifecycle.md]
//! ```
//!
//! Exits 1 when any run broke an invariant (the table is written anyway).

use std::fmt::Write as _;
use std::time::Instant;

use fleetkeeper_tests::campaign::{SWEEP_INTERVAL, median, write_outcome};
use fleetkeeper_tests::lifecycle_campaign::{HEAL_SWEEPS, ROUNDS, Report, Spec, run};
use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut seeds = 20u64;
    let mut concurrency = 3usize;
    let mut out: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--seeds" => seeds = value.parse().unwrap_or(0),
            "--concurrency" => concurrency = value.parse().unwrap_or(0),
            "--out" => out = Some(value),
            other => {
                eprintln!("lifecycle-reliability: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if seeds == 0 || concurrency == 0 {
        eprintln!("lifecycle-reliability: --seeds and --concurrency must be positive");
        std::process::exit(2);
    }
    let started = Instant::now();
    let specs: Vec<Spec> =
        [0.05, 0.2, 0.5].iter().flat_map(|rate| (1..=seeds).map(move |seed| Spec::standard(*rate, seed))).collect();
    let total = specs.len();
    let mut reports: Vec<Report> = Vec::new();
    let mut runs = futures::stream::iter(specs.into_iter().map(run)).buffer_unordered(concurrency);
    while let Some(report) = runs.next().await {
        eprintln!("[{}/{total}] {}", reports.len() + 1, report.summary());
        reports.push(report);
    }
    let table = render(seeds, concurrency, &reports, started.elapsed().as_secs());
    match &out {
        Some(path) => std::fs::write(path, &table).unwrap_or_else(|e| panic!("{path}: {e}")),
        None => print!("{table}"),
    }
    if reports.iter().any(|r| !r.held()) {
        std::process::exit(1);
    }
}

fn render(seeds: u64, concurrency: usize, reports: &[Report], wall_s: u64) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Reliability: the lifecycle gate under injected faults\n");
    let _ = writeln!(
        w,
        "Written by `make reliability-lifecycle` ({seeds} seeds per rate, {concurrency} runs side by side, {wall_s} s \
         in all on {} cores). Each run is a fleet with fleetkeeper's launch and terminate hooks in its own emulator \
         account: `lifecycle-hook` as a real bootstrap behind the event router (lifecycle and command status events \
         async with Lambda's retries, its re-trigger queue as SQS batches), the local agent running the catch-ups, \
         AWS's pace from the readiness timelines (EC2 pending 20 s, the agent 30 s after boot, targets healthy 20 s \
         after registration, a 30 s deregistration delay), and the fault proxy in front of the emulator for the \
         function's AWS calls (the SDK's own retry policy, a 1 s attempt timeout). See \
         `tests/src/lifecycle_campaign.rs`.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    let _ = writeln!(
        w,
        "**Fault phase**: {ROUNDS} rounds of a seeded scenario (scale-outs, scale-ins, instances in service \
         terminated and replaced, agents losing their connection and coming back, 10 to 120 s passing per round, \
         the {} s schedule firing) while the proxy faults that share of the function's calls: throttling, 500/503, \
         connections dropped before or after the call was served, calls hung past the attempt timeout, and SIGKILLs \
         of the bootstrap; EventBridge loses half that share of the lifecycle and command status events. **Heal phase**: no \
         faults, every agent back, at most K = {HEAL_SWEEPS} reconcile intervals. The hooks time out after 900 s, as deployed; \
         a timeout counts as a broken action.\n",
        SWEEP_INTERVAL.as_secs()
    );
    let names: Vec<&str> = Report::default().invariants().iter().map(|(n, _)| *n).collect();
    let _ = write!(w, "| faulted calls | runs |");
    for n in &names {
        let _ = write!(w, " {n} |");
    }
    let _ = writeln!(
        w,
        " healed within K | intervals to heal (median / max) | actions opened | faults injected | kills | re-trigger batches | wall s per run (median) |"
    );
    let _ = writeln!(w, "|---|---|{}---|---|---|---|---|---|---|", "---|".repeat(names.len()));
    for rate in [0.05, 0.2, 0.5] {
        let rs: Vec<&Report> = reports.iter().filter(|r| r.rate == rate).collect();
        let _ = write!(w, "| {:.0} % | {} |", rate * 100.0, rs.len());
        for i in 0..names.len() {
            let _ = write!(w, " {}/{} |", rs.iter().filter(|r| r.invariants()[i].1).count(), rs.len());
        }
        let healed: Vec<u64> = rs.iter().filter_map(|r| r.healed_after.map(u64::from)).collect();
        let _ = writeln!(
            w,
            " {}/{} | {} / {} | {} | {} | {} | {} | {:.1} |",
            healed.len(),
            rs.len(),
            median(healed.clone()),
            healed.iter().max().copied().unwrap_or(0),
            rs.iter().map(|r| r.opened).sum::<usize>(),
            rs.iter().map(|r| r.injected.values().sum::<u64>()).sum::<u64>(),
            rs.iter().map(|r| r.injected.get("Kill").copied().unwrap_or(0)).sum::<u64>(),
            rs.iter().map(|r| r.retriggers).sum::<usize>(),
            median(rs.iter().map(|r| r.wall_ms).collect()) as f64 / 1000.0,
        );
    }
    let broken: Vec<String> = reports.iter().filter(|r| !r.held()).map(Report::summary).collect();
    write_outcome(w, &broken, "the_lifecycle");
    out
}
