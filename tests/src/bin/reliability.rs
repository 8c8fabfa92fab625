//! `make reliability`: the sync's fault campaign over many seeds, written as
//! a table into `docs/reliability.md` (see `fleetkeeper_tests::campaign`).
//!
//! ```text
//! reliability [--seeds 50] [--first 1] [--rates 0.05,0.2,0.5] [--concurrency 4] [--out docs/reliability.md]
//! ```
//!
//! Exits 1 when any run broke an invariant (the table is written anyway).

use std::fmt::Write as _;
use std::time::Instant;

use fleetkeeper_tests::campaign::{HEAL_SWEEPS, ROUNDS, Report, SWEEP_INTERVAL, Spec, median, run, write_outcome};
use futures::StreamExt;

struct Args {
    seeds: u64,
    first: u64,
    rates: Vec<f64>,
    concurrency: usize,
    out: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args { seeds: 50, first: 1, rates: vec![0.05, 0.2, 0.5], concurrency: 4, out: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => a.seeds = value()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--first" => a.first = value()?.parse().map_err(|e| format!("--first: {e}"))?,
            "--concurrency" => a.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--rates" => {
                a.rates = value()?
                    .split(',')
                    .map(|r| r.trim().parse::<f64>().map_err(|e| format!("--rates: {r}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--out" => a.out = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.concurrency == 0 || a.seeds == 0 || a.rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
        return Err("--seeds and --concurrency must be positive, --rates within 0..1".into());
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("reliability: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let specs: Vec<Spec> = args
        .rates
        .iter()
        .flat_map(|rate| (args.first..args.first + args.seeds).map(move |seed| Spec::standard(*rate, seed)))
        .collect();
    let total = specs.len();
    let mut done = 0;
    let mut reports: Vec<Report> = Vec::new();
    let mut runs = futures::stream::iter(specs.into_iter().map(run)).buffer_unordered(args.concurrency);
    while let Some(report) = runs.next().await {
        done += 1;
        eprintln!("[{done}/{total}] {}", report.summary());
        reports.push(report);
    }
    let table = render(&args, &reports, started.elapsed().as_secs());
    match &args.out {
        Some(path) => {
            std::fs::write(path, &table).unwrap_or_else(|e| panic!("{path}: {e}"));
            eprintln!("wrote {path}");
        }
        None => print!("{table}"),
    }
    if reports.iter().any(|r| !r.held()) {
        std::process::exit(1);
    }
}

fn render(args: &Args, reports: &[Report], wall_s: u64) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Reliability: the codebase sync under injected faults\n");
    let _ =
        writeln!(w, "(The lifecycle gate's campaign is in [reliability-lifecycle.md](reliability-lifecycle.md).)\n");
    let _ = writeln!(
        w,
        "Written by `make reliability` ({} seeds per rate from seed {}, {} runs side by side, {} s in all on {} cores). \
         Each run is a fleet in its own emulator account: `codebase-sync` and `sync-completion` as real bootstraps \
         behind the event router (SQS batches of 10 with a DLQ after 5 receives, async retries twice), the local \
         agent running the real document on every instance, and the fault proxy in front of the emulator for both \
         functions' AWS calls (the SDK's own retry policy, a 1 s attempt timeout). Waves wait for the default \
         quiet period ({} s), started by `codebase-sync`'s own delayed SQS message (its `SendMessage` faulted like \
         any call). See `tests/src/campaign.rs` for the scenario and `tests/src/faults.rs` for the faults.\n",
        args.seeds,
        args.first,
        args.concurrency,
        wall_s,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        fleetkeeper::config::DEFAULT_QUIET_SECONDS,
    );
    let _ = writeln!(
        w,
        "**Fault phase**: {ROUNDS} rounds of a seeded scenario (upload bursts of new keys and overwrites, agents \
         losing their connection and coming back, scale-outs with no lifecycle hook, terminations mid-wave, \
         instances slow to run what they got, 30 to 180 s passing per round, the {} s schedule firing, sometimes \
         mid-wave) while the proxy faults that share of the functions' calls: throttling (each service's own \
         error, 400/429/503), 500/503, connections dropped before or after the call was served, calls hung past \
         the attempt timeout, and SIGKILLs of the calling bootstrap (Lambda retries the event; the next \
         invocation cold-starts); EventBridge loses half that share of the S3 and command status events. \
         **Heal phase**: no faults, every agent back, at most K = {HEAL_SWEEPS} sweep intervals.\n",
        SWEEP_INTERVAL.as_secs()
    );
    let names: Vec<&str> = Report::default().invariants().iter().map(|(n, _)| *n).collect();
    let _ = write!(w, "| faulted calls | runs |");
    for n in &names {
        let _ = write!(w, " {n} |");
    }
    let _ = writeln!(
        w,
        " healed within K | sweeps to heal (median / max) | faults injected (all runs) | kills | events lost | calls per run (median) | DLQ messages | wall s per run (median) |"
    );
    let _ = writeln!(w, "|---|---|{}---|---|---|---|---|---|---|---|", "---|".repeat(names.len()));
    let mut rates: Vec<f64> = reports.iter().map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    for rate in rates {
        let rs: Vec<&Report> = reports.iter().filter(|r| r.rate == rate).collect();
        let _ = write!(w, "| {:.0} % | {} |", rate * 100.0, rs.len());
        for i in 0..names.len() {
            let held = rs.iter().filter(|r| r.invariants()[i].1).count();
            let _ = write!(w, " {held}/{} |", rs.len());
        }
        let healed: Vec<u64> = rs.iter().filter_map(|r| r.healed_after.map(u64::from)).collect();
        let injected: u64 = rs.iter().map(|r| r.injected.values().sum::<u64>()).sum();
        let kills: u64 = rs.iter().map(|r| r.injected.get("Kill").copied().unwrap_or(0)).sum();
        let _ = writeln!(
            w,
            " {}/{} | {} / {} | {injected} | {kills} | {} | {} | {} | {:.1} |",
            healed.len(),
            rs.len(),
            median(healed.clone()),
            healed.iter().max().copied().unwrap_or(0),
            rs.iter().map(|r| r.lost_events).sum::<usize>(),
            median(rs.iter().map(|r| r.calls).collect()),
            rs.iter().map(|r| r.dead_letters).sum::<usize>(),
            median(rs.iter().map(|r| r.wall_ms).collect()) as f64 / 1000.0,
        );
    }
    let broken: Vec<String> = reports.iter().filter(|r| !r.held()).map(Report::summary).collect();
    write_outcome(w, &broken, "");
    out
}
