//! `fleetkeeper`: the operator's tool for a fleetkeeper fleet.
//!
//! It calls the same shared library as the functions (no second
//! implementation of any rule) and reads the same configuration contract
//! (`FLEET_*`). See `fleetkeeper --help` and the README.

mod doctor;
mod error;
mod ops;
mod render;
mod settings;
mod status;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetkeeper::clock::SystemClock;
use fleetkeeper::sync::run::SyncFunction;
use fleetkeeper::sync::store::FleetStore;
use fleetkeeper::{Component, Deps};
use serde::Serialize;

use crate::error::{CliError, exit};
use crate::ops::Waited;
use crate::render::Out;
use crate::settings::{Aws, AwsOptions, Sources};

const EXIT_CODES: &str = "\
Exit codes:
  0  all good (doctor: every check passed; sync --wait: the fleet has it)
  1  problems found (doctor), or refused / not done as asked (a live lease
     without --force, a sync that failed or was refused, a pinned fleet)
  2  could not check or could not act (configuration, credentials, an AWS
     call that failed: the message names the call and the permission)

Configuration: the functions' own variables (FLEET_NAME, FLEET_LOCK_TABLE,
...), from the environment, overridden by --env-file / --from-function,
overridden by --set. Colour only on a terminal, never with NO_COLOR.";

/// The operator's tool for a fleetkeeper fleet: see and trigger syncs,
/// roll back, free a stuck lease, reconcile now, and diagnose the fleet.
#[derive(Debug, Parser)]
#[command(name = "fleetkeeper", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// AWS region (default: the standard chain).
    #[arg(long, global = true)]
    region: Option<String>,
    /// AWS profile (default: the standard chain).
    #[arg(long, global = true)]
    profile: Option<String>,
    /// A deployed function's environment: JSON (`aws lambda
    /// get-function-configuration` output, or its Environment.Variables) or
    /// KEY=value lines.
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<std::path::PathBuf>,
    /// Read the configuration from a deployed function's environment.
    #[arg(long, global = true, value_name = "FUNCTION", conflicts_with = "env_file")]
    from_function: Option<String>,
    /// Override one variable of the configuration (repeatable).
    #[arg(long = "set", global = true, value_name = "VAR=VALUE", value_parser = settings::parse_set)]
    sets: Vec<(String, String)>,
    /// The longest one AWS call (every attempt) may take, seconds.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECONDS")]
    call_timeout: u64,
    /// Print JSON (the status's schema: docs/status.schema.json).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One screen: generations, the running wave, the last wave per
    /// instance, quarantine, pin, freshness, target health, mount targets,
    /// hooks and waiting instances.
    #[command(
        after_help = "Examples:\n  fleetkeeper status\n  fleetkeeper status --json | jq .freshness\n  fleetkeeper --from-function web-codebase-sync status --watch 5"
    )]
    Status {
        /// Refresh every N seconds (default 5) until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "5")]
        watch: Option<u64>,
    },
    /// Sync the fleet now: counted demand, the lease, fencing, as the
    /// functions do (refused while a rollback pins the fleet).
    #[command(
        after_help = "Examples:\n  fleetkeeper sync --reason \"hotfix 1.2.1\" --wait\n  fleetkeeper sync --reason retry --via-lambda web-codebase-sync"
    )]
    Sync {
        /// Why (recorded with the wave).
        #[arg(long)]
        reason: String,
        /// Lift the instances' shrink guard for this sync (a deliberate
        /// large deletion).
        #[arg(long)]
        allow_shrink: bool,
        #[command(flatten)]
        wait: WaitArgs,
        /// Invoke the deployed codebase-sync function instead.
        #[arg(long, value_name = "FUNCTION")]
        via_lambda: Option<String>,
    },
    /// Put a kept release back at once and pin the fleet (uploads still
    /// count; no wave runs until `resume`).
    #[command(
        after_help = "Examples:\n  fleetkeeper rollback --reason \"500s after 1.3\" --wait\n  fleetkeeper rollback --to 3f9a2c81d0e4 --reason \"back to Monday\""
    )]
    Rollback {
        /// `previous`, a generation, or a release id (7+ hex digits).
        #[arg(long, default_value = "previous")]
        to: String,
        /// Why (kept with the pin).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Invoke the deployed codebase-sync function instead.
        #[arg(long, value_name = "FUNCTION")]
        via_lambda: Option<String>,
    },
    /// Unpin the fleet and sync the codebase as it is.
    #[command(after_help = "Example:\n  fleetkeeper resume --reason \"fix 1.3.1 uploaded\" --wait")]
    Resume {
        /// Why.
        #[arg(long, default_value = "resumed by an operator")]
        reason: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Invoke the deployed codebase-sync function instead.
        #[arg(long, value_name = "FUNCTION")]
        via_lambda: Option<String>,
    },
    /// Free the sync's lease: an expired one is settled as the sweep would;
    /// a live one only with --force, after cancelling its commands.
    #[command(
        after_help = "Examples:\n  fleetkeeper unlock\n  fleetkeeper unlock --force --reason \"agent hung on i-0abc\" --yes"
    )]
    Unlock {
        /// Also a live lease: cancel the wave's running commands, then free
        /// it (conditional on the same wave still holding it).
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Why (recorded in the wave's record).
        #[arg(long, default_value = "no reason given")]
        reason: String,
    },
    /// Run a reconcile now and print what it did (or, with --dry-run, what
    /// it would do).
    #[command(after_help = "Examples:\n  fleetkeeper reconcile lifecycle --dry-run\n  fleetkeeper reconcile mounts")]
    Reconcile {
        /// Which.
        what: Reconcile,
        /// Plan only: nothing is written (FLEET_DRY_RUN=true).
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the fleet's wiring: security groups between the load balancer,
    /// the instances and the mount targets; mount targets per AZ; hooks;
    /// EventBridge rules; bucket events; the lock table; the document; SSM
    /// agents; the lease. Each failure names the AWS fact and the fix.
    #[command(
        after_help = "Examples:\n  fleetkeeper doctor\n  fleetkeeper doctor --json | jq '.checks[] | select(.result != \"pass\")'"
    )]
    Doctor {
        /// The hooks' DefaultResult the stack deployed (HookDefaultResult).
        #[arg(long, value_enum, default_value_t = DefaultResult::Abandon)]
        hook_default_result: DefaultResult,
        /// Skip the EventBridge rule and bucket checks (a fleet not deployed
        /// by the template).
        #[arg(long)]
        no_events: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Reconcile {
    /// Lifecycle actions, target registrations (lifecycle-hook's reconcile).
    Lifecycle,
    /// EFS mount targets per AZ (mount-targets' reconcile).
    Mounts,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum DefaultResult {
    Abandon,
    Continue,
}

#[derive(Debug, Args)]
struct WaitArgs {
    /// Show progress until the fleet has it (or it fails).
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    wait_timeout: u64,
    /// How often to look, milliseconds.
    #[arg(long, default_value_t = 2000, hide = true)]
    poll_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out::new(cli.global.json);
    match run(cli, &out).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            out.error(&e);
            ExitCode::from(e.code())
        }
    }
}

async fn run(cli: Cli, out: &Out) -> Result<u8, CliError> {
    let g = &cli.global;
    let options = AwsOptions {
        region: g.region.clone(),
        profile: g.profile.clone(),
        call_timeout: Duration::from_secs(g.call_timeout.max(1)),
    };
    let aws = Aws::new(&settings::sdk_config(&options).await);
    let mut sources = Sources { sets: g.sets.clone(), ..Sources::default() };
    if let Some(path) = &g.env_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--env-file {}: {e}", path.display())))?;
        sources.file = settings::parse_env_file(&text)
            .map_err(|e| CliError::Usage(format!("--env-file {}: {e}", path.display())))?;
    }
    if let Some(name) = &g.from_function {
        sources.file = settings::function_environment(&aws.lambda, name).await?;
    }
    let app = App { aws, sources };
    match cli.command {
        Command::Status { watch } => app.status(out, watch).await,
        Command::Sync { reason, allow_shrink, wait, via_lambda } => {
            let requested = match via_lambda {
                Some(function) => {
                    let payload = ops::payload("sync", &reason, None, allow_shrink);
                    ops::via_lambda(&app.aws, &function, "sync", payload).await?
                }
                None => ops::sync(&app.sync_function()?, &reason, allow_shrink).await?,
            };
            app.finish_request(out, requested, &wait).await
        }
        Command::Rollback { to, reason, wait, via_lambda } => {
            let requested = match via_lambda {
                Some(function) => {
                    let payload = ops::payload("rollback", &reason, Some(&to), false);
                    ops::via_lambda(&app.aws, &function, "rollback", payload).await?
                }
                None => ops::rollback(&app.sync_function()?, &to, &reason).await?,
            };
            app.finish_request(out, requested, &wait).await
        }
        Command::Resume { reason, wait, via_lambda } => {
            let requested = match via_lambda {
                Some(function) => {
                    let payload = ops::payload("resume", &reason, None, false);
                    ops::via_lambda(&app.aws, &function, "resume", payload).await?
                }
                None => ops::resume(&app.sync_function()?, &reason).await?,
            };
            app.finish_request(out, requested, &wait).await
        }
        Command::Unlock { force, yes, reason } => {
            let (result, code) = ops::unlock(&app.sync_function()?, force, yes, &reason).await?;
            out.value(&result, render::unlock);
            Ok(code)
        }
        Command::Reconcile { what, dry_run } => {
            let mut app = app;
            if dry_run {
                app.sources.sets.push((fleetkeeper::config::vars::DRY_RUN.into(), "true".into()));
            }
            // Each function has its own re-trigger queue, and the
            // configuration read may be another function's.
            app.sources.sets.push((fleetkeeper::config::vars::RETRIGGER_QUEUE_URL.into(), String::new()));
            match what {
                Reconcile::Lifecycle => {
                    let report = ops::reconcile_lifecycle(&app.deps(Component::LifecycleHook)?).await?;
                    out.value(&report, render::lifecycle_report);
                    Ok(if report.errors.is_empty() { exit::OK } else { exit::PROBLEMS })
                }
                Reconcile::Mounts => {
                    let report = ops::reconcile_mounts(&app.deps(Component::MountTargets)?).await?;
                    out.value(&report, render::mounts_report);
                    let failed = report.zones.iter().any(|z| {
                        matches!(
                            z.outcome,
                            fleetkeeper::mount_targets::Outcome::Failed | fleetkeeper::mount_targets::Outcome::Refused
                        )
                    });
                    Ok(if failed { exit::PROBLEMS } else { exit::OK })
                }
            }
        }
        Command::Doctor { hook_default_result, no_events } => {
            let expect = doctor::Expect {
                hook_default_result: match hook_default_result {
                    DefaultResult::Abandon => "ABANDON",
                    DefaultResult::Continue => "CONTINUE",
                },
                events: !no_events,
            };
            let report = doctor::run(&app.aws, &app.sources, &expect).await;
            out.value(&report, render::doctor);
            Ok(report.exit_code())
        }
    }
}

/// What every verb works with.
struct App {
    aws: Aws,
    sources: Sources,
}

impl App {
    fn deps(&self, component: Component) -> Result<Deps, CliError> {
        let config = self.sources.config(component)?;
        Ok(Deps { config, clients: self.aws.clients.clone(), clock: Arc::new(SystemClock) })
    }

    fn sync_function(&self) -> Result<SyncFunction, CliError> {
        Ok(SyncFunction::new(self.deps(Component::CodebaseSync)?)?)
    }

    async fn status(&self, out: &Out, watch: Option<u64>) -> Result<u8, CliError> {
        let f = self.sync_function()?;
        loop {
            let status = status::read(&self.aws, &f, f.deps.clock.now_ms()).await;
            match watch {
                Some(_) if !out.json => out.clear(),
                _ => {}
            }
            out.value(&status, render::status);
            match watch {
                Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds.max(1))).await,
                None => return Ok(if status.errors.is_empty() { exit::OK } else { exit::COULD_NOT }),
            }
        }
    }

    /// Prints a request's outcome, then waits for it when asked.
    async fn finish_request(&self, out: &Out, mut requested: ops::Requested, wait: &WaitArgs) -> Result<u8, CliError> {
        // A sync a rollback's pin holds is counted, not run: not done as asked.
        let pinned = requested.action == "sync" && ops::pinned(&requested.outcome);
        if !wait.wait || pinned {
            out.value(&requested, render::requested);
            return Ok(if pinned { exit::PROBLEMS } else { exit::OK });
        }
        if !out.json {
            render::requested(&requested, out);
        }
        let f = self.sync_function()?;
        let generation = match requested.generation {
            Some(g) => g,
            None => f.store.load().await.map_err(CliError::fleet)?.map(|i| i.requested_gen).unwrap_or_default(),
        };
        let waited = wait_for(&f, out, generation, requested.action == "rollback", wait).await?;
        let ok = waited.ok();
        requested.waited = Some(waited);
        if out.json {
            out.value(&requested, |_, _| {});
        } else {
            render::waited(requested.waited.as_ref(), out);
        }
        Ok(if ok { exit::OK } else { exit::PROBLEMS })
    }
}

/// Polls the fleet item until `generation` is on the fleet (or cannot get
/// there without new demand), with a progress bar of the running wave.
async fn wait_for(
    f: &SyncFunction,
    out: &Out,
    generation: u64,
    rollback: bool,
    wait: &WaitArgs,
) -> Result<Waited, CliError> {
    let clock = f.deps.clock.as_ref();
    let give_up = clock.now_ms() + wait.wait_timeout * 1000;
    let bar = out.progress(generation);
    // The invocations are listed at most every 10 s: SSM's quota is shared
    // with the functions settling the wave.
    let mut listed_at = 0;
    loop {
        let item = f.store.load().await.map_err(CliError::fleet)?.unwrap_or_default();
        if let Some(done) = ops::look(&item, generation, rollback) {
            bar.finish_and_clear();
            return Ok(done);
        }
        if let Some(w) = item.wave.as_ref().filter(|_| clock.now_ms() >= listed_at + 10_000) {
            listed_at = clock.now_ms();
            let mut done = 0;
            let mut total = 0;
            let cx = ops::context(f);
            for id in &w.command_ids {
                if let Ok(list) = cx.invocations(id).await {
                    total += list.len() as u64;
                    done += list.iter().filter(|v| v.status.is_terminal()).count() as u64;
                }
            }
            bar.set_length(total.max(1));
            bar.set_position(done);
            bar.set_message(format!("wave {} (generation {})", &w.id[..8.min(w.id.len())], w.target));
        } else if item.wave.is_none() {
            bar.set_message("waiting for a wave to start");
        }
        if clock.now_ms() >= give_up {
            bar.finish_and_clear();
            return Ok(Waited::TimedOut { completed: item.completed_gen });
        }
        tokio::time::sleep(Duration::from_millis(wait.poll_ms.max(50))).await;
    }
}

/// Anything printed as JSON or as text.
pub trait Printable: Serialize {}
impl<T: Serialize> Printable for T {}
