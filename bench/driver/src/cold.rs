//! Cold start: each function's bootstrap against a bare `lambda_runtime`
//! binary and a Python boto3 process, paired run by run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetkeeper::Component;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::Caller;
use fleetkeeper_tests::fleet::Fleet;
use serde_json::{Value, json};

use crate::runtime_api::{ColdRun, cold_run};
use crate::stats::Sample;

/// How long one cold process may take before the run is called failed.
const LIMIT: Duration = Duration::from_secs(60);

/// An event no function acts on: parsed, logged as skipped, no AWS call.
pub fn skipped_event() -> Value {
    json!({"version": "0", "id": "bench", "source": "fleetkeeper.bench", "detail-type": "Nothing to do",
        "account": "123456789012", "time": "2026-11-01T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}})
}

/// An event that makes `sync-completion` read the lock table: a terminal
/// status of a command of the sync document that no wave knows.
pub fn lookup_event(document: &str) -> Value {
    fleetkeeper_tests::events::command_status("11111111-2222-3333-4444-555555555555", document, "Success")
}

/// A process to cold-start: a bootstrap, or the Python baseline.
#[derive(Debug, Clone)]
pub struct Subject {
    /// What the tables call it.
    pub label: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Subject {
    /// A workspace binary in `bin_dir` with `env`.
    pub fn binary(label: &str, bin_dir: &Path, name: &str, env: Vec<(String, String)>) -> Self {
        Subject { label: label.to_owned(), program: bin_dir.join(name), args: Vec::new(), env }
    }

    /// The Python baseline (`python/baseline.py`) with `env`.
    pub fn python(env: Vec<(String, String)>) -> Self {
        let root = fleetkeeper_tests::agent::repo_root();
        Subject {
            label: "python boto3".to_owned(),
            program: root.join(".venv/bin/python"),
            args: vec![root.join("bench/driver/python/baseline.py").display().to_string()],
            env,
        }
    }

    /// The binary's size on disk, bytes (`None` for the interpreter).
    pub fn size(&self) -> Option<u64> {
        if !self.args.is_empty() {
            return None;
        }
        std::fs::metadata(&self.program).ok().map(|m| m.len())
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        // What Lambda sets, what the function is given, nothing inherited.
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_FUNCTION_NAME", &self.label)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", self.label))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // Lambda sets both (boto3 reads only the second).
        if let Some((_, region)) = self.env.iter().find(|(k, _)| k == "AWS_REGION") {
            cmd.env("AWS_DEFAULT_REGION", region);
        }
        cmd
    }

    /// The same process run under `wrapper` (a profiler) with `args`.
    pub fn under(&self, wrapper: &str, args: &[String]) -> Subject {
        let mut all = args.to_vec();
        all.push(self.program.display().to_string());
        all.extend(self.args.iter().cloned());
        Subject { label: self.label.clone(), program: PathBuf::from(wrapper), args: all, env: self.env.clone() }
    }

    /// A cold process that exits after its init (its first `/next` ends the
    /// connection).
    pub fn run_until_init(&self, limit: Duration) -> Result<ColdRun, String> {
        cold_run(self.command(), Vec::new(), limit).map_err(|e| format!("{}: {e}", self.label))
    }

    /// One cold process answering `events`.
    pub fn run(&self, events: Vec<Value>) -> Result<ColdRun, String> {
        let run = cold_run(self.command(), events, LIMIT).map_err(|e| format!("{}: {e}", self.label))?;
        if let Some((_, body)) = run.answers.iter().find(|(error, _)| *error) {
            return Err(format!("{} answered an error: {body}", self.label));
        }
        Ok(run)
    }
}

/// The four functions and the two baselines, aimed at one fleet.
pub struct Subjects {
    /// `bare-runtime`.
    pub bare: Subject,
    /// `sdk-floor`: the runtime, the `aws-config` chain and one client.
    pub floor: Subject,
    /// The Python baseline, as `sync-completion`'s caller.
    pub python: Subject,
    /// Each function's bootstrap with the fleet's environment.
    pub functions: Vec<(Component, Subject)>,
}

impl Subjects {
    /// The subjects of `fleet` in `emulator`, binaries from `bin_dir`.
    pub fn new(emulator: &Emulator, fleet: &Fleet, bin_dir: &Path) -> Self {
        let functions = Component::ALL
            .iter()
            .map(|&c| {
                let mut env = fleet.env();
                env.extend(emulator.aws_env_for(c));
                (c, Subject::binary(c.name(), bin_dir, c.name(), env))
            })
            .collect();
        Subjects {
            bare: Subject::binary("bare lambda_runtime", bin_dir, "bare-runtime", Vec::new()),
            floor: Subject::binary(
                "sdk floor",
                bin_dir,
                "sdk-floor",
                emulator.aws_env_as(Caller::Function(Component::SyncCompletion)),
            ),
            python: Subject::python(emulator.aws_env_as(Caller::Function(Component::SyncCompletion))),
            functions,
        }
    }
}

/// The figures of one function.
#[derive(Debug, Clone)]
pub struct FunctionCold {
    /// Which.
    pub component: Component,
    /// exec -> first `/next`.
    pub init: Sample,
    /// Paired `init / bare init`.
    pub init_ratio: Sample,
    /// exec -> the skipped event's response.
    pub cold_skip: Sample,
    /// Paired `cold_skip / bare cold_skip`.
    pub cold_skip_ratio: Sample,
    /// Paired `init / sdk-floor init`.
    pub floor_ratio: Sample,
    /// Paired `init - bare init`, ms (the fixed cost of starting a process
    /// and of the measurement is in both terms of a ratio, not of this).
    pub init_diff: Sample,
    /// Peak RSS after 100 skipped events, KiB.
    pub peak_rss_kib: Option<u64>,
    /// The binary's size, bytes.
    pub size: Option<u64>,
}

/// The cold-start results.
#[derive(Debug, Clone)]
pub struct ColdReport {
    /// Paired runs.
    pub runs: usize,
    /// The bare runtime.
    pub bare_init: Sample,
    /// The bare runtime's skipped-event cold invocation.
    pub bare_cold: Sample,
    /// The bare runtime's peak RSS after 100 events, KiB.
    pub bare_rss_kib: Option<u64>,
    /// The bare runtime's size.
    pub bare_size: Option<u64>,
    /// `sdk-floor`'s init.
    pub floor_init: Sample,
    /// `sdk-floor`'s init over the bare runtime's, paired.
    pub floor_ratio: Sample,
    /// `sdk-floor`'s size.
    pub floor_size: Option<u64>,
    /// Per function.
    pub functions: Vec<FunctionCold>,
    /// `sync-completion` cold with the lookup event (AWS calls it made).
    pub lookup_calls: u64,
    /// exec -> the lookup event's response, `sync-completion`.
    pub lookup_cold: Sample,
    /// Python: exec -> first `/next` (import boto3, eight clients).
    pub python_init: Sample,
    /// Python: exec -> the same lookup answered.
    pub python_lookup_cold: Sample,
    /// Paired `python init / sync-completion init`.
    pub python_init_ratio: Sample,
    /// Paired `python lookup cold / sync-completion lookup cold`.
    pub python_lookup_ratio: Sample,
    /// Python's peak RSS after 100 skipped events, KiB.
    pub python_rss_kib: Option<u64>,
}

/// One function's values over the rounds.
#[derive(Debug, Clone, Default)]
struct Paired {
    init: Vec<f64>,
    init_ratio: Vec<f64>,
    cold: Vec<f64>,
    cold_ratio: Vec<f64>,
    floor_ratio: Vec<f64>,
    init_diff: Vec<f64>,
}

/// Runs the cold-start benchmark: `runs` rounds, each a cold process of the
/// bare runtime, of every function (skipped event), of `sync-completion`
/// (lookup event) and of the Python baseline (the same lookup), in turn.
pub async fn run(emulator: &Emulator, fleet: &Fleet, subjects: &Subjects, runs: usize) -> Result<ColdReport, String> {
    let skip = skipped_event();
    let lookup = lookup_event(&fleet.document);
    // The lookup's calls, counted once on a run of its own.
    let completion =
        &subjects.functions.iter().find(|(c, _)| *c == Component::SyncCompletion).ok_or("no sync-completion")?.1;
    let caller = Caller::Function(Component::SyncCompletion);
    emulator.forget_calls(caller).await;
    completion.run(vec![lookup.clone()])?;
    let lookup_calls = emulator.calls(caller).await;
    let python_lookup = python_lookup(&lookup_calls, fleet)?;

    let (mut bare_init, mut bare_cold) = (Vec::new(), Vec::new());
    let (mut floor_init, mut floor_ratio) = (Vec::new(), Vec::new());
    let mut per_function = vec![Paired::default(); subjects.functions.len()];
    let (mut lookup_cold, mut lookup_init) = (Vec::new(), Vec::new());
    let (mut py_init, mut py_cold, mut py_init_ratio, mut py_ratio) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let bare = subjects.bare.run(vec![skip.clone()])?;
        let (bi, bc) = (ms(bare.init), ms(bare.responses[0]));
        bare_init.push(bi);
        bare_cold.push(bc);
        let fl = ms(subjects.floor.run(vec![skip.clone()])?.init);
        floor_init.push(fl);
        floor_ratio.push(fl / bi);
        for (i, (_, subject)) in subjects.functions.iter().enumerate() {
            let r = subject.run(vec![skip.clone()])?;
            let (fi, fc) = (ms(r.init), ms(r.responses[0]));
            let slot = &mut per_function[i];
            slot.init.push(fi);
            slot.init_ratio.push(fi / bi);
            slot.cold.push(fc);
            slot.cold_ratio.push(fc / bc);
            slot.floor_ratio.push(fi / fl);
            slot.init_diff.push(fi - bi);
        }
        let r = completion.run(vec![lookup.clone()])?;
        let (li, lc) = (ms(r.init), ms(r.responses[0]));
        lookup_init.push(li);
        lookup_cold.push(lc);
        let p = subjects.python.run(vec![python_lookup.clone()])?;
        let (pi, pc) = (ms(p.init), ms(p.responses[0]));
        py_init.push(pi);
        py_cold.push(pc);
        py_init_ratio.push(pi / li);
        py_ratio.push(pc / lc);
    }

    let hundred = vec![skip.clone(); 100];
    let mut functions = Vec::new();
    for ((component, subject), Paired { init, init_ratio, cold, cold_ratio, floor_ratio, init_diff }) in
        subjects.functions.iter().zip(per_function)
    {
        let rss = subject.run(hundred.clone())?.peak_rss_kib;
        functions.push(FunctionCold {
            component: *component,
            init: Sample::of(&init),
            init_ratio: Sample::of(&init_ratio),
            cold_skip: Sample::of(&cold),
            cold_skip_ratio: Sample::of(&cold_ratio),
            floor_ratio: Sample::of(&floor_ratio),
            init_diff: Sample::of(&init_diff),
            peak_rss_kib: rss,
            size: subject.size(),
        });
    }
    Ok(ColdReport {
        runs,
        bare_init: Sample::of(&bare_init),
        bare_cold: Sample::of(&bare_cold),
        bare_rss_kib: subjects.bare.run(hundred.clone())?.peak_rss_kib,
        bare_size: subjects.bare.size(),
        floor_init: Sample::of(&floor_init),
        floor_ratio: Sample::of(&floor_ratio),
        floor_size: subjects.floor.size(),
        functions,
        lookup_calls: lookup_calls.total(),
        lookup_cold: Sample::of(&lookup_cold),
        python_init: Sample::of(&py_init),
        python_lookup_cold: Sample::of(&py_cold),
        python_init_ratio: Sample::of(&py_init_ratio),
        python_lookup_ratio: Sample::of(&py_ratio),
        python_rss_kib: subjects.python.run(hundred)?.peak_rss_kib,
    })
}

/// The Python baseline's event: the same reads `sync-completion` made.
fn python_lookup(calls: &fleetkeeper_tests::emulator::Calls, fleet: &Fleet) -> Result<Value, String> {
    let ops = calls.operations();
    if ops.is_empty() || ops.iter().any(|op| op != "dynamodb:GetItem") {
        return Err(format!("sync-completion's lookup made {ops:?}: the Python baseline only repeats GetItem"));
    }
    Ok(json!({"bench": {
        "call": "GetItem", "count": calls.of("GetItem"), "table": fleet.lock_table,
        "key": {"pk": {"S": fleet.name}}
    }}))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
