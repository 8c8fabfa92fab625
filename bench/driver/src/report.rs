//! The tables on the terminal, BENCHMARKS.md, the plots, and the invariants
//! `make bench-quick` holds the counts to.

use std::fmt::Write;
use std::path::Path;

use crate::Results;
use crate::burst::{self, Outcome as Burst};
use crate::cold::ColdReport;
use crate::fanout::Outcome as Fanout;
use crate::lifecycle::Phase;
use crate::plot::{Series, log_log};

fn mib(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.1} MiB", b as f64 / 1_048_576.0)).unwrap_or_else(|| "–".into())
}

fn rss(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "–".into())
}

/// Prints the cold-start table.
pub fn print_cold(r: &ColdReport) {
    println!("cold start ({} paired runs; ms, median (min–max))", r.runs);
    println!("  bare lambda_runtime   init {}  cold {}", r.bare_init.show(2), r.bare_cold.show(2));
    println!("  sdk floor            init {}  x{:.2} bare", r.floor_init.show(2), r.floor_ratio.median);
    for f in &r.functions {
        println!(
            "  {:<20} init {}  x{:.2} bare (+{:.2} ms)  x{:.2} sdk floor  cold {}  rss {}",
            f.component.name(),
            f.init.show(2),
            f.init_ratio.median,
            f.init_diff.median,
            f.floor_ratio.median,
            f.cold_skip.show(2),
            rss(f.peak_rss_kib)
        );
    }
    println!(
        "  python boto3         init {}  x{:.1} sync-completion; lookup cold {} vs {}",
        r.python_init.show(1),
        r.python_init_ratio.median,
        r.python_lookup_cold.show(1),
        r.lookup_cold.show(2)
    );
}

/// Prints one burst case.
pub fn print_burst(o: &Burst) {
    println!(
        "burst {:>6} uploads, {:<34} waves {:>6}  SendCommand {:>6}  calls/upload {:>6.2}  writes demand<={} queue<={} winner {}  less emulator {:>8.1} µs/upload  failed {}",
        o.case.uploads,
        o.case.label(),
        o.waves,
        o.send_command,
        o.calls_per_upload,
        o.demand_writes_max,
        o.queue_writes_max,
        o.winner_writes_max,
        o.own_per_upload_us,
        o.failed
    );
    println!("      demand-only max: {}\n      winner: {}", o.demand_calls, o.winner_calls);
}

/// Prints one fan-out size.
pub fn print_fanout(o: &Fanout) {
    println!(
        "fan-out {:>5} instances: SendCommand {:>4}  calls {:>5} (dispatch {}, settle {} over {} status events)  dispatch {:.1} ms ({:.1} ms less emulator)  settled {}",
        o.instances,
        o.send_command,
        o.calls,
        o.dispatch_calls,
        o.settle_calls,
        o.status_events,
        o.dispatch_wall_ms,
        o.dispatch_own_ms,
        o.settled
    );
    println!("      settle: {}", o.settle_ops);
}

/// Prints one lifecycle phase.
pub fn print_phase(p: &Phase) {
    let by: Vec<String> = p.calls.iter().map(|(c, n)| format!("{} {n}", c.name())).collect();
    println!(
        "lifecycle: {:<28} calls {:>4} ({})  invocations {}  reached {}",
        p.what,
        p.total(),
        by.join(", "),
        p.invocations,
        p.reached
    );
}

/// What the counts must hold to (`make bench-quick` fails otherwise).
pub fn check(r: &Results) -> Vec<String> {
    let mut failures = Vec::new();
    for o in &r.burst {
        let label = format!("burst {} uploads, {}", o.case.uploads, o.case.label());
        if o.failed > 0 {
            failures.push(format!("{label}: {} invocation(s) failed", o.failed));
        }
        let n = o.case.uploads as u64;
        if o.case.naive {
            if o.send_command != n || o.instance_syncs != n * burst::INSTANCES as u64 {
                failures.push(format!(
                    "{label}: {} SendCommand and {} instance syncs for {n} uploads",
                    o.send_command, o.instance_syncs
                ));
            }
            continue;
        }
        // One wave, and one follow-up when uploads came while it ran.
        let expected = if o.case.uploads > 1 { 2 } else { 1 };
        if o.waves != expected || o.send_command != expected {
            failures.push(format!("{label}: {} waves, {} SendCommand (expected {expected})", o.waves, o.send_command));
        }
        if !o.caught_up {
            failures.push(format!("{label}: the fleet is not caught up (a sync request was lost)"));
        }
        if o.case.uploads > 10 && o.demand_only == 0 {
            failures.push(format!("{label}: no invocation only added demand"));
        }
        // The demand (a second write when a late event must not move the
        // newest change back), and the delayed start's claim.
        if o.demand_writes_max > 2 || o.queue_writes_max > 3 {
            failures.push(format!(
                "{label}: {} writes by an invocation that only added demand (at most 2), {} by one that queued the \
                 delayed start (at most 3)",
                o.demand_writes_max, o.queue_writes_max
            ));
        }
    }
    for o in &r.fanout {
        if !o.settled || o.failed > 0 {
            failures.push(format!("fan-out {}: settled {}, {} failed invocation(s)", o.instances, o.settled, o.failed));
        }
        if o.send_command != o.instances.div_ceil(50) as u64 {
            failures.push(format!("fan-out {}: {} SendCommand (chunks of 50)", o.instances, o.send_command));
        }
    }
    for p in &r.lifecycle {
        if !p.reached || p.failed > 0 {
            failures.push(format!("lifecycle {}: reached {}, {} failed invocation(s)", p.what, p.reached, p.failed));
        }
    }
    failures
}

/// The machine, as BENCHMARKS.md describes it.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} ({cores} cores available), Linux {}, {rustc}",
        model.unwrap_or_else(|| "unknown CPU".into()),
        kernel.trim()
    )
}

/// A table's header row `columns` (`| a | b |`) and its separator, with as
/// many cells as the header has.
fn head(s: &mut String, columns: &str) {
    let cells = columns.trim().trim_matches('|').split('|').count();
    let _ = writeln!(s, "{columns}");
    let _ = writeln!(s, "|{}", "---|".repeat(cells));
}

/// `fresh` (a run of some parts) merged into `existing` (a whole report):
/// each `## ` section of `fresh` replaces the one of the same title, the
/// others stay; the preamble is `fresh`'s.
pub fn merge(existing: &str, fresh: &str) -> String {
    fn sections(doc: &str) -> (String, Vec<(String, String)>) {
        let mut preamble = String::new();
        let mut out: Vec<(String, String)> = Vec::new();
        for line in doc.split_inclusive('\n') {
            match (line.starts_with("## "), out.last_mut()) {
                (true, _) => out.push((line.trim_end().to_owned(), line.to_owned())),
                (false, Some((_, body))) => body.push_str(line),
                (false, None) => preamble.push_str(line),
            }
        }
        (preamble, out)
    }
    let (_, old) = sections(existing);
    let (preamble, new) = sections(fresh);
    let mut merged = preamble;
    for (title, body) in &old {
        let replaced = new.iter().find(|(t, _)| t == title).map(|(_, b)| b);
        merged.push_str(replaced.unwrap_or(body));
    }
    for (title, body) in &new {
        if !old.iter().any(|(t, _)| t == title) {
            merged.push_str(body);
        }
    }
    merged
}

/// BENCHMARKS.md.
pub fn markdown(r: &Results, runs: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# fleetkeeper benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `make bench` (the tables below are its output; do not edit by hand). \
         Machine: {}. Shared 2-core machines are noisy: every headline figure is a count, or a ratio \
         against a baseline measured in the same run, paired run by run.\n",
        machine()
    );
    if let Some(c) = &r.cold {
        cold_section(&mut s, c, runs);
    }
    if !r.planners.is_empty() {
        planners_section(&mut s, &r.planners);
    }
    if !r.burst.is_empty() {
        burst_section(&mut s, &r.burst);
    }
    if !r.fanout.is_empty() {
        fanout_section(&mut s, &r.fanout);
    }
    if !r.lifecycle.is_empty() {
        lifecycle_section(&mut s, &r.lifecycle);
    }
    let _ = writeln!(s, "## How long each part took\n");
    for (part, secs) in &r.durations {
        let _ = writeln!(s, "- {part}: {secs:.0} s");
    }
    s
}

fn cold_section(s: &mut String, c: &ColdReport, runs: usize) {
    let _ = writeln!(s, "## Cold start\n");
    let _ = writeln!(
        s,
        "Each function's release `bootstrap` (the binary `cargo lambda` zips), started as Lambda starts a custom \
         runtime: a clean environment with the function's configuration, `AWS_LAMBDA_RUNTIME_API` pointing at a \
         stopwatch Runtime API on loopback (`bench/driver/src/runtime_api.rs`, blocking `std`, no async scheduling \
         in the measured path). **init** is exec to the first `GET /invocation/next`; **cold** is exec to the \
         response of the first event. {runs} rounds, each a cold process of the bare runtime, then of every \
         function, then of `sync-completion` with a lookup event, then of the Python baseline; ratios are taken \
         within a round and their median reported. The skipped event is an EventBridge event no function acts on \
         (parsed, logged, no AWS call). The lookup event is a command status of an unknown command: \
         `sync-completion` makes {} AWS call(s) (DynamoDB reads of the emulator on loopback). The baseline \
         `bare-runtime` is `lambda_runtime` answering with the event, with the same tokio runtime, tracing \
         subscriber and release profile; `sdk-floor` adds what any Rust Lambda that calls AWS builds at init: the \
         `aws-config` chain and one SDK client (DynamoDB), on the same shared HTTPS client. The Python baseline (`bench/driver/python/baseline.py`) imports boto3, \
         builds the same eight clients, runs the same Runtime API loop and makes the same reads. Peak RSS is \
         `VmHWM` after 100 skipped events in one process.\n",
        c.lookup_calls
    );
    head(
        s,
        "| process | init, ms | init vs bare | init − bare, ms | init vs SDK floor | cold (skipped event), ms | cold \
         vs bare | peak RSS | binary |",
    );
    let _ = writeln!(
        s,
        "| bare `lambda_runtime` | {} | 1 | 0 | – | {} | 1 | {} | {} |",
        c.bare_init.show(2),
        c.bare_cold.show(2),
        rss(c.bare_rss_kib),
        mib(c.bare_size)
    );
    let _ = writeln!(
        s,
        "| SDK floor (`aws-config` + 1 client) | {} | {:.2}x ({:.2}–{:.2}) | – | 1 | – | – | – | {} |",
        c.floor_init.show(2),
        c.floor_ratio.median,
        c.floor_ratio.min,
        c.floor_ratio.max,
        mib(c.floor_size)
    );
    for f in &c.functions {
        let _ = writeln!(
            s,
            "| `{}` | {} | **{:.2}x** ({:.2}–{:.2}) | {} | {:.2}x ({:.2}–{:.2}) | {} | {:.2}x | {} | {} |",
            f.component.name(),
            f.init.show(2),
            f.init_ratio.median,
            f.init_ratio.min,
            f.init_ratio.max,
            f.init_diff.show(2),
            f.floor_ratio.median,
            f.floor_ratio.min,
            f.floor_ratio.max,
            f.cold_skip.show(2),
            f.cold_skip_ratio.median,
            rss(f.peak_rss_kib),
            mib(f.size)
        );
    }
    let _ = writeln!(
        s,
        "| Python 3 + boto3 | {} | – | – | – | – | – | {} | – |\n",
        c.python_init.show(1),
        rss(c.python_rss_kib)
    );
    let _ = writeln!(
        s,
        "With the lookup event: `sync-completion` cold {} ms; Python {} ms. Python over fleetkeeper, paired: \
         **{:.1}x the init ({:.1}–{:.1}) and {:.1}x the time to the first answer ({:.1}–{:.1})**. The interpreter \
         runs from the emulator's venv (boto3 with moto installed beside it, not imported).\n",
        c.lookup_cold.show(2),
        c.python_lookup_cold.show(1),
        c.python_init_ratio.median,
        c.python_init_ratio.min,
        c.python_init_ratio.max,
        c.python_lookup_ratio.median,
        c.python_lookup_ratio.min,
        c.python_lookup_ratio.max
    );
    let _ = writeln!(s, "Reproduce: `make bench BENCH_ONLY=cold` (or `make bench`).\n");
    if let Ok(breakdown) = std::fs::read_to_string("bench/init-breakdown.md") {
        let _ = writeln!(s, "{}", breakdown.trim_end());
        let _ = writeln!(s);
    }
}

fn burst_section(s: &mut String, rows: &[Burst]) {
    let _ = writeln!(s, "## Burst coalescing\n");
    let _ = writeln!(
        s,
        "N objects uploaded to the codebase prefix of a {} -instance fleet (real `PutObject`s into the emulator), \
         their S3 events delivered as deployed: EventBridge, the rule's SQS queue, batches of the event source \
         mapping's size to `codebase-sync`; the first half, then the second half while the first wave runs (with \
         the quiet period off the first batch already starts it). The instances finish each command a minute \
         later (the instant agent, on the emulator's clock); status events go to `sync-completion`. Quiet period: \
         off (`FLEET_SYNC_QUIET_SECONDS=0`) or on ({} s, passed on the emulator's clock). The functions are the \
         release bootstraps. The baseline, in the same run, is `naive-sync` (`bench/baselines`): the bastion \
         script automated per event, one `SendCommand` of `aws s3 sync` to the group per uploaded object, no lock. \
         Calls are counted by the emulator's recorder per invocation; syncs on instances are the commands' \
         `TargetCount`s. *Time per upload* is each invocation's wall time less the time the emulator took to \
         answer its calls (timed at a proxy in front of it), summed and divided by the uploads: it still holds \
         the test harness's share (its Runtime API and the proxy are debug builds; the clock shim makes every \
         clock read a system call), so it compares the two sides, it is not Lambda's billed duration.\n",
        burst::INSTANCES,
        burst::QUIET_S
    );
    head(
        s,
        "| uploads | who | waves | `SendCommand` | syncs on instances | invocations | DynamoDB writes (most of one invocation): demand only / queuing the delayed start / sending a wave | AWS calls per upload | time per upload, µs |",
    );
    for o in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {:.2} | {:.0} |",
            o.case.uploads,
            o.case.label(),
            o.waves,
            o.send_command,
            o.instance_syncs,
            o.invocations,
            o.demand_writes_max,
            o.queue_writes_max,
            o.winner_writes_max,
            o.calls_per_upload,
            o.own_per_upload_us
        );
    }
    let _ = writeln!(
        s,
        "\nThe naive baseline runs up to {} uploads: the emulator's `SendCommand` slows with every command it \
         holds, and 10,000 naive commands did not finish in 10 minutes. Its counts are one `SendCommand` per upload \
         by construction (checked at every size it runs).",
        crate::NAIVE_MAX
    );
    let largest = rows.iter().filter(|o| o.case.batch == 10 && o.case.naive).map(|o| o.case.uploads).max().unwrap_or(0);
    let naive = rows.iter().find(|o| o.case.naive && o.case.uploads == largest);
    let fk = rows.iter().find(|o| !o.case.naive && o.case.quiet && o.case.batch == 10 && o.case.uploads == largest);
    if let (Some(n), Some(f)) = (naive, fk) {
        let _ = writeln!(
            s,
            "\nAt {largest} uploads the naive baseline sends **{:.0}x** the `SendCommand`s ({} vs {}) and runs \
             {:.0}x the instance syncs.\n",
            n.send_command as f64 / f.send_command.max(1) as f64,
            n.send_command,
            f.send_command,
            n.instance_syncs as f64 / f.instance_syncs.max(1) as f64
        );
    }
    let _ = writeln!(s, "![waves and SendCommand calls vs uploads](docs/bench-burst.svg)\n");
    let _ = writeln!(s, "Reproduce: `make bench BENCH_ONLY=burst`; the counts alone: `make bench-quick`.\n");
}

fn fanout_section(s: &mut String, rows: &[Fanout]) {
    let _ = writeln!(s, "## Fan-out\n");
    let _ = writeln!(
        s,
        "One upload to a fleet of n in-service instances (quiet period off): `codebase-sync` dispatches the wave, \
         the instant agent ends every command, `sync-completion` settles it from the status events. *Dispatch* \
         is the dispatching invocation's wall time; *less emulator* takes the emulator's answering time out (the \
         harness's share stays in, as above).\n"
    );
    head(
        s,
        "| instances | commands | `SendCommand` | AWS calls per wave (dispatch + settle) | calls per instance | status events | dispatch, ms | dispatch less emulator, ms | settled |",
    );
    for o in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ({} + {}) | {:.2} | {} | {:.1} | {:.1} | {} |",
            o.instances,
            o.commands,
            o.send_command,
            o.calls,
            o.dispatch_calls,
            o.settle_calls,
            o.calls as f64 / o.instances as f64,
            o.status_events,
            o.dispatch_wall_ms,
            o.dispatch_own_ms,
            o.settled
        );
    }
    let _ = writeln!(s, "\n![AWS calls vs fleet size](docs/bench-fanout.svg)\n");
    let _ = writeln!(s, "Reproduce: `make bench BENCH_ONLY=fanout`.\n");
}

fn lifecycle_section(s: &mut String, rows: &[Phase]) {
    let _ = writeln!(s, "## Lifecycle\n");
    let _ = writeln!(
        s,
        "A fleet with fleetkeeper's launch and terminate hooks, the four functions deployed together (release \
         bootstraps), lifecycle actions delivered as EventBridge would, catch-up commands ended at once. Calls of \
         every function during the phase.\n"
    );
    head(s, "| phase | instances | invocations | AWS calls | per instance | by function | reached |");
    for p in rows {
        let by: Vec<String> = p.calls.iter().map(|(c, n)| format!("{} {n}", c.name())).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {} | {} |",
            p.what,
            p.instances,
            p.invocations,
            p.total(),
            p.total() as f64 / p.instances.max(1) as f64,
            by.join(", "),
            p.reached
        );
    }
    let _ = writeln!(s, "\nReproduce: `make bench BENCH_ONLY=lifecycle`.\n");
}

/// One criterion benchmark's result, read from `target/criterion`.
#[derive(Debug, Clone)]
pub struct Planner {
    /// The benchmark's name.
    pub name: String,
    /// Elements per iteration (records, events, instances).
    pub elements: u64,
    /// The median time per iteration, ns, and its 95 % interval.
    pub median_ns: (f64, f64, f64),
}

/// The planner benchmarks `cargo bench` left in `dir` (`target/criterion/planners`).
pub fn read_planners(dir: &Path) -> Vec<Planner> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let new = entry.path().join("new");
        let read = |f: &str| {
            std::fs::read_to_string(new.join(f)).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        };
        let (Some(meta), Some(est)) = (read("benchmark.json"), read("estimates.json")) else { continue };
        let m = &est["median"];
        out.push(Planner {
            name: meta["function_id"].as_str().unwrap_or_default().to_owned(),
            elements: meta["throughput"]["Elements"].as_u64().unwrap_or(1),
            median_ns: (
                m["point_estimate"].as_f64().unwrap_or(0.0),
                m["confidence_interval"]["lower_bound"].as_f64().unwrap_or(0.0),
                m["confidence_interval"]["upper_bound"].as_f64().unwrap_or(0.0),
            ),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn planners_section(s: &mut String, rows: &[Planner]) {
    let _ = writeln!(
        s,
        "## Planner throughput
"
    );
    let _ = writeln!(
        s,
        "The pure decisions, without AWS (`bench/planners/benches/planners.rs`, criterion, `cargo bench`'s \
         profile, which has the release profile's settings the functions ship with): an SQS batch of 100 S3 records parsed, classified and turned into one \
         demand; one lifecycle action parsed and planned to its end; the settle of a 1,000-instance wave (20 \
         commands of 50) from its results to the next fleet item and every instance's history. Median of \
         criterion's samples, its 95 % interval.\n"
    );
    head(s, "| benchmark | per iteration | per element | elements per second |");
    for p in rows {
        let (median, lo, hi) = p.median_ns;
        let per = median / p.elements.max(1) as f64;
        let _ = writeln!(
            s,
            "| {} | {} ({}–{}) | {} | {:.0} |",
            p.name,
            ns(median),
            ns(lo),
            ns(hi),
            ns(per),
            1e9 / per.max(f64::MIN_POSITIVE)
        );
    }
    let _ = writeln!(s, "\nReproduce: `cargo bench -p fleetkeeper-planner-bench`.\n");
}

fn ns(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2} ms", v / 1e6),
        v if v >= 1e3 => format!("{:.1} µs", v / 1e3),
        v => format!("{v:.0} ns"),
    }
}

/// The SVG plots into `dir`.
pub fn plots(r: &Results, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !r.burst.is_empty() {
        let line = |label: &str, pick: &dyn Fn(&Burst) -> bool, value: &dyn Fn(&Burst) -> u64, baseline: bool| Series {
            label: label.to_owned(),
            points: r
                .burst
                .iter()
                .filter(|o| o.case.batch == 10 && pick(o))
                .map(|o| (o.case.uploads as f64, value(o).max(1) as f64))
                .collect(),
            baseline,
        };
        let naive = |o: &Burst| o.case.naive;
        let off = |o: &Burst| !o.case.naive && !o.case.quiet;
        let on = |o: &Burst| !o.case.naive && o.case.quiet;
        let sends = |o: &Burst| o.send_command;
        let waves = |o: &Burst| o.waves;
        log_log(
            &dir.join("bench-burst.svg"),
            "Uploads in a burst: waves and SendCommand calls",
            "uploads",
            "count",
            &[
                line("naive: SendCommand (one per upload)", &naive, &sends, true),
                line("fleetkeeper, quiet off: SendCommand", &off, &sends, false),
                line("fleetkeeper, quiet on: SendCommand", &on, &sends, false),
                line("fleetkeeper, quiet off: waves", &off, &waves, false),
                line("fleetkeeper, quiet on: waves", &on, &waves, false),
            ],
        )?;
    }
    if !r.fanout.is_empty() {
        let line = |label: &str, value: &dyn Fn(&Fanout) -> u64| Series {
            label: label.to_owned(),
            points: r.fanout.iter().map(|o| (o.instances as f64, value(o).max(1) as f64)).collect(),
            baseline: false,
        };
        log_log(
            &dir.join("bench-fanout.svg"),
            "One wave: AWS calls vs fleet size",
            "in-service instances",
            "calls",
            &[
                line("all calls (dispatch + settle)", &|o| o.calls),
                line("dispatch (codebase-sync)", &|o| o.dispatch_calls),
                line("settle (sync-completion)", &|o| o.settle_calls),
                line("SendCommand", &|o| o.send_command),
                Series {
                    label: "instances (reference)".into(),
                    points: r.fanout.iter().map(|o| (o.instances as f64, o.instances as f64)).collect(),
                    baseline: true,
                },
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{head, merge};

    #[test]
    fn a_header_gets_a_separator_of_as_many_cells() {
        let mut s = String::new();
        head(&mut s, "| a | b `x` | c |");
        assert_eq!(s, "| a | b `x` | c |\n|---|---|---|\n");
    }

    #[test]
    fn a_part_replaces_its_sections_and_keeps_the_others() {
        let existing = "# t\nold machine\n## A\na1\n## B\nb1\n## C\nc1\n";
        let fresh = "# t\nnew machine\n## B\nb2\n## D\nd2\n";
        assert_eq!(merge(existing, fresh), "# t\nnew machine\n## A\na1\n## B\nb2\n## C\nc1\n## D\nd2\n");
    }
}
