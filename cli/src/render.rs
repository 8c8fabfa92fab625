//! Output: JSON with `--json`, else text and tables; colour only on a
//! terminal and never with `NO_COLOR`; progress bars only on a terminal.

use std::io::IsTerminal;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use console::Style;
use fleetkeeper::lifecycle::reconcile::ReconcileReport;
use fleetkeeper::mount_targets;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::doctor::{Doctor, Verdict};
use crate::error::CliError;
use crate::ops::{Requested, Waited};
use crate::status::Status;

/// Where output goes, and how.
pub struct Out {
    /// `--json`.
    pub json: bool,
    colour: bool,
    colour_stderr: bool,
    terminal: bool,
}

impl Out {
    /// Decides colour once: a terminal on stdout, and `NO_COLOR` unset or empty.
    pub fn new(json: bool) -> Self {
        let terminal = std::io::stdout().is_terminal();
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let colour = terminal && !no_colour && !json;
        let colour_stderr = std::io::stderr().is_terminal() && !no_colour;
        console::set_colors_enabled(colour);
        console::set_colors_enabled_stderr(colour_stderr);
        Out { json, colour, colour_stderr, terminal }
    }

    /// Prints `v` as JSON, or with `text`.
    pub fn value<T: Serialize>(&self, v: &T, text: impl Fn(&T, &Out)) {
        if self.json {
            match serde_json::to_string_pretty(v) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("fleetkeeper: cannot print JSON: {e}"),
            }
        } else {
            text(v, self);
        }
    }

    /// An error, on stderr (as JSON with `--json`).
    pub fn error(&self, e: &CliError) {
        if self.json {
            let v = serde_json::json!({"error": e.to_string(), "exit_code": e.code()});
            eprintln!("{v}");
        } else {
            let label = "fleetkeeper: error:";
            let stderr_colour = self.colour_stderr;
            let label =
                if stderr_colour { Style::new().red().bold().apply_to(label).to_string() } else { label.to_owned() };
            eprintln!("{label} {e}");
        }
    }

    /// Clears the screen (`--watch` on a terminal).
    pub fn clear(&self) {
        if self.terminal {
            let _ = console::Term::stdout().clear_screen();
        }
    }

    /// A progress bar on stderr; hidden unless stderr is a terminal and the
    /// output is text.
    pub fn progress(&self, generation: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(
            Some(1),
            if !self.json && std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} instances  {msg} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("waiting for generation {generation}"));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }

    fn paint(&self, s: &str, style: Style) -> String {
        if self.colour { style.apply_to(s).to_string() } else { s.to_owned() }
    }

    fn good(&self, s: &str) -> String {
        self.paint(s, Style::new().green())
    }

    fn bad(&self, s: &str) -> String {
        self.paint(s, Style::new().red().bold())
    }

    fn warn(&self, s: &str) -> String {
        self.paint(s, Style::new().yellow())
    }

    fn heading(&self, s: &str) {
        println!("\n{}", self.paint(s, Style::new().bold()));
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header.iter().copied());
    t
}

/// `3m12s` from milliseconds.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn ago(now: u64, t: u64) -> String {
    if t > now { format!("in {}", span(t - now)) } else { format!("{} ago", span(now - t)) }
}

/// `fleetkeeper status`, as text.
pub fn status(s: &Status, o: &Out) {
    let now = s.at;
    println!("fleet {} in {}", o.paint(&s.fleet, Style::new().bold()), s.region);
    let g = &s.generations;
    let running = g.running.map_or("-".to_owned(), |r| r.to_string());
    println!("generations: requested {}  running {}  completed {}", g.requested, running, g.completed);
    if let Some(f) = &g.failed {
        println!("  {} generation {} failed {} time(s)", o.bad("failed:"), f.generation, f.attempts);
    }
    if let Some(r) = g.refused {
        println!("  {} the instances' shrink guard refused generation {r}", o.bad("refused:"));
    }
    let f = &s.freshness;
    let fresh = match (f.up_to_date, f.newest_change_at) {
        _ if f.pinned => format!("{} a rollback serves an older release", o.warn("pinned:")),
        (_, None) => "no change recorded yet".to_owned(),
        (true, Some(t)) => format!(
            "{} newest change {}{}",
            o.good("up to date:"),
            ago(now, t),
            f.last_delivery_ms.map(|d| format!(", on every instance {} after it", span(d))).unwrap_or_default()
        ),
        (false, Some(t)) => format!(
            "{} newest change {}, not everywhere for {}{}",
            o.warn("behind:"),
            ago(now, t),
            span(f.behind_ms.unwrap_or_default()),
            f.quiet_until.map(|q| format!(" (quiet period until {})", ago(now, q))).unwrap_or_default()
        ),
    };
    println!("freshness: {fresh}");
    if !f.behind_instances.is_empty() {
        println!(
            "  {} in service without generation {}: {}",
            o.warn("behind:"),
            g.completed,
            f.behind_instances.join(", ")
        );
    }
    if let Some(p) = &s.pin {
        println!(
            "{} release {} (generation {}) since {}: {:?}; {} generation(s) of demand wait for `fleetkeeper resume`",
            o.warn("pinned:"),
            p.release,
            p.generation,
            ago(now, p.since),
            p.reason,
            p.demand_waiting
        );
    }
    match &s.wave {
        Some(w) => {
            o.heading(&format!("Running wave {} (generation {})", w.id, w.target));
            let lease = if w.lease_expired {
                o.bad(&format!("expired {}", ago(now, w.lease_expires_at)))
            } else {
                format!("until {}", ago(now, w.lease_expires_at))
            };
            println!(
                "reason {}; started {}; lease owner {} {}; {} command(s){}{}",
                w.reason.as_deref().unwrap_or("?"),
                ago(now, w.started_at),
                w.sender,
                lease,
                w.commands.len(),
                if w.sent { "" } else { ", still sending" },
                w.rollback.as_ref().map(|r| format!(", rollback to {r}")).unwrap_or_default()
            );
            let counts: Vec<String> = w.progress.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("progress: {}", counts.join(", "));
            let mut t = table(&["instance", "status", "details"]);
            for i in &w.instances {
                t.add_row([i.instance_id.as_str(), i.status.as_str(), i.details.as_str()]);
            }
            println!("{t}");
        }
        None => println!("no wave running"),
    }
    if let Some(l) = &s.last_wave {
        o.heading(&format!("Last wave {} (generation {}): {}", l.id, l.target, l.end.as_deref().unwrap_or("running")));
        println!(
            "reason {}; started {}{}; {} synced{}",
            l.reason,
            ago(now, l.started_at),
            l.finished_at.map(|t| format!(", ended {}", ago(now, t))).unwrap_or_default(),
            l.synced,
            l.blame.as_ref().map(|b| format!("; {b}")).unwrap_or_default()
        );
        let mut t = table(&["instance", "outcome"]);
        for (id, what) in &l.instances {
            let painted = match what.as_str() {
                "synced" => o.good(what),
                "failed" | "refused" => o.bad(what),
                _ => o.warn(what),
            };
            t.add_row([id.clone(), painted]);
        }
        println!("{t}");
    }
    if !s.quarantined.is_empty() {
        o.heading("Quarantined (left out of waves until a catch-up succeeds)");
        for q in &s.quarantined {
            println!("  {} since {} after {} failures", q.instance_id, ago(now, q.since), q.failures);
        }
    }
    if !s.releases.is_empty() {
        o.heading("Releases (newest first)");
        let mut t = table(&["release", "generation", "serving", "rollback target"]);
        for r in &s.releases {
            t.add_row([r.id.clone(), r.generation.to_string(), yes(r.serving), yes(r.rollback_target)]);
        }
        println!("{t}");
    }
    for gv in &s.groups {
        o.heading(&format!("Group {}", gv.name));
        if !gv.exists {
            println!("  {} the group does not exist", o.bad("missing:"));
            continue;
        }
        for h in &gv.hooks {
            println!(
                "  hook {} ({}) default {} heartbeat {}s{}",
                h.name,
                h.transition.trim_start_matches("autoscaling:"),
                h.default_result,
                h.heartbeat_timeout,
                if h.fleetkeeper { "" } else { " (not fleetkeeper's)" }
            );
        }
        let mut t = table(&["instance", "AZ", "lifecycle", "health", "synced gen"]);
        for m in &gv.instances {
            let state = if m.waiting { o.warn(&m.lifecycle_state) } else { m.lifecycle_state.clone() };
            t.add_row([
                m.instance_id.clone(),
                m.zone.clone(),
                state,
                m.health.clone(),
                m.last_synced_gen.map_or("-".into(), |g| g.to_string()),
            ]);
        }
        println!("{t}");
    }
    for tg in &s.target_groups {
        o.heading(&format!("Target group {}", short_arn(&tg.arn)));
        let counts: Vec<String> = tg.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {}", if counts.is_empty() { "no targets".to_owned() } else { counts.join(", ") });
        for t in tg.targets.iter().filter(|t| t.state != "healthy") {
            println!("  {} {} {}", t.id, o.warn(&t.state), t.reason.as_deref().unwrap_or(""));
        }
    }
    if let Some(m) = &s.mount_targets {
        o.heading(&format!("Mount targets of {}", m.file_system_id));
        let mut t = table(&["AZ", "mount target", "state", "fleet uses"]);
        for z in &m.zones {
            let state = if z.state == "available" { o.good(&z.state) } else { o.warn(&z.state) };
            t.add_row([z.zone.clone(), z.mount_target_id.clone().unwrap_or("-".into()), state, yes(z.fleet_uses)]);
        }
        println!("{t}");
    }
    for e in &s.errors {
        eprintln!("could not read: {e}");
    }
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { "".into() }
}

fn short_arn(arn: &str) -> &str {
    arn.split_once(':').map_or(arn, |_| arn.rsplit(':').next().unwrap_or(arn))
}

/// A sync, rollback or resume request.
pub fn requested(r: &Requested, o: &Out) {
    let outcome = r.outcome.get("wave").unwrap_or(&r.outcome);
    let what = describe_outcome(outcome);
    println!("{}{}: {what}", r.action, r.generation.map(|g| format!(" (generation {g})")).unwrap_or_default());
    for w in &r.warnings {
        println!("{} {w}", o.warn("warning:"));
    }
}

/// One line for a start outcome (`StartOutcome` as JSON).
pub fn describe_outcome(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or_default();
    match v.get("outcome").and_then(Value::as_str) {
        Some("started") => {
            let count = v.get("instances").and_then(Value::as_array).map_or(0, Vec::len);
            format!("wave {} started for generation {} on {count} instance(s)", s("wave_id"), n("target"))
        }
        Some("coalesced") => {
            format!("wave {} is running (generation {}): its follow-up covers this", s("wave_id"), n("target"))
        }
        Some("caught_up") => "everything requested is synced".into(),
        Some("held") => format!("generation {} failed twice or was refused: held until new demand", n("generation")),
        Some("pinned") => format!("the fleet is pinned to release {}: run `fleetkeeper resume`", s("release")),
        Some("waiting") => "the quiet period holds the wave back".into(),
        Some("dry_run") => "dry run: nothing written".into(),
        _ => v.to_string(),
    }
}

/// How a `--wait` ended.
pub fn waited(w: Option<&Waited>, o: &Out) {
    match w {
        Some(Waited::Synced { completed }) => println!("{} the fleet has generation {completed}", o.good("synced:")),
        Some(Waited::Failed { generation, attempts }) => println!(
            "{} generation {generation} failed {attempts} time(s): see `fleetkeeper status` for the instances",
            o.bad("failed:")
        ),
        Some(Waited::Refused { generation }) => println!(
            "{} the instances' shrink guard refused generation {generation}; `sync --allow-shrink` if deliberate",
            o.bad("refused:")
        ),
        Some(Waited::Pinned { release }) => {
            println!("{} a rollback pinned the fleet to {release}: `fleetkeeper resume`", o.warn("pinned:"))
        }
        Some(Waited::TimedOut { completed }) => {
            println!("{} still running (completed generation {completed})", o.warn("timed out:"))
        }
        None => {}
    }
}

/// `unlock`'s result.
pub fn unlock(v: &Value, _o: &Out) {
    match v.get("unlocked").and_then(Value::as_bool) {
        Some(true) => {
            let cancelled = v.get("cancelled_commands").and_then(Value::as_array).map_or(0, Vec::len);
            println!(
                "unlocked wave {} (generation {}), lease {}; {} command(s) cancelled",
                v["wave_id"].as_str().unwrap_or("?"),
                v["generation"],
                v["lease"].as_str().unwrap_or("?"),
                cancelled
            );
            if let Some(what) = v.get("what").and_then(Value::as_str) {
                println!("{what}");
            }
            if let Some(demand) = v.get("demand").and_then(Value::as_str) {
                println!("demand: {demand}");
            }
            for p in v.get("problems").and_then(Value::as_array).into_iter().flatten() {
                eprintln!("not done: {}", p.as_str().unwrap_or_default());
            }
        }
        _ => println!("nothing unlocked: {}", v["why"].as_str().or_else(|| v["what"].as_str()).unwrap_or("")),
    }
}

/// `reconcile lifecycle`'s report.
pub fn lifecycle_report(r: &ReconcileReport, o: &Out) {
    println!(
        "lifecycle reconcile: {} action(s) driven, {} registration(s) repaired, {} deregistration(s)",
        r.driven.len(),
        r.registered.len(),
        r.deregistered.len()
    );
    for d in &r.driven {
        println!("  {} {}", d.instance_id, serde_json::to_string(d).unwrap_or_default());
    }
    for (i, tg) in r.registered.iter().chain(&r.deregistered) {
        println!("  {i} {}", short_arn(tg));
    }
    for (what, list) in [
        ("missing group", &r.missing_groups),
        ("short heartbeat", &r.short_heartbeats),
        ("duplicate hooks", &r.duplicate_hooks),
    ] {
        for x in list {
            println!("  {} {x}", o.warn(&format!("{what}:")));
        }
    }
    if let Some(h) = &r.held_back {
        println!("  {} {h}", o.warn("held back:"));
    }
    for e in &r.errors {
        println!("  {} {} {}: {}", o.bad("error:"), e.instance_id, e.step, e.error);
    }
}

/// `reconcile mounts`' report.
pub fn mounts_report(r: &mount_targets::Report, _o: &Out) {
    println!("mount targets of {}{}", r.file_system_id, if r.dry_run { " (dry run)" } else { "" });
    let mut t = table(&["AZ", "action", "outcome", "mount target", "NFS admitted", "why"]);
    for z in &r.zones {
        t.add_row([
            z.zone.clone(),
            z.action.text(),
            z.outcome.text(),
            z.mount_target_id.clone().unwrap_or("-".into()),
            z.nfs_admitted.map_or("?".into(), |b| b.to_string()),
            z.reason.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
    for g in &r.missing_groups {
        println!("  missing group: {g}");
    }
}

/// Serializable values shown as their JSON text (enums as their names).
trait Text {
    fn text(&self) -> String;
}

impl<T: Serialize> Text for T {
    fn text(&self) -> String {
        match serde_json::to_value(self) {
            Ok(Value::String(s)) => s,
            Ok(v) => v.to_string(),
            Err(_) => String::new(),
        }
    }
}

/// `doctor`'s report.
pub fn doctor(d: &Doctor, o: &Out) {
    for c in &d.checks {
        let mark = match c.result {
            Verdict::Pass => o.good("pass"),
            Verdict::Fail => o.bad("FAIL"),
            Verdict::CouldNotCheck => o.warn("????"),
        };
        println!("{mark}  {}: {}", c.check, c.fact);
        if let Some(fix) = &c.fix {
            println!("      fix: {fix}");
        }
    }
    let (fail, unknown) = d.counts();
    println!(
        "\n{} checks: {} passed, {fail} failed, {unknown} could not be checked",
        d.checks.len(),
        d.checks.len() - fail - unknown
    );
}
