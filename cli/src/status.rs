//! `fleetkeeper status`: one screen of the fleet, from the lock table and
//! what AWS reports. `--json` is the same data, versioned
//! (`docs/status.schema.json`).

use std::collections::{BTreeMap, BTreeSet};

use fleetkeeper::ssm_document::history::RunHistory;
use fleetkeeper::sync::run::SyncFunction;
use fleetkeeper::sync::state::FleetItem;
use fleetkeeper::sync::store::{FleetStore, WaveRecord};
use serde::Serialize;

use crate::error::CliError;
use crate::settings::Aws;

/// The version of the JSON document (`schema` in it).
pub const SCHEMA: &str = "fleetkeeper.status/1";

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The fleet (`FLEET_NAME`).
    pub fleet: String,
    /// The region the clients talk to.
    pub region: String,
    /// When this was read, epoch ms.
    pub at: u64,
    /// The generation counters.
    pub generations: Generations,
    /// The running wave.
    pub wave: Option<RunningWave>,
    /// The last wave that ended.
    pub last_wave: Option<LastWave>,
    /// Instances the sync leaves out until a catch-up succeeds.
    pub quarantined: Vec<Quarantined>,
    /// A rollback's pin.
    pub pin: Option<PinView>,
    /// The releases the fleet served, newest first.
    pub releases: Vec<ReleaseView>,
    /// How fresh the fleet's code is.
    pub freshness: Freshness,
    /// Managed groups, their hooks and instances.
    pub groups: Vec<GroupView>,
    /// Target health per target group.
    pub target_groups: Vec<TargetGroupView>,
    /// EFS mount targets per AZ (absent without a file system).
    pub mount_targets: Option<MountTargetsView>,
    /// What could not be read (each names the failing call).
    pub errors: Vec<String>,
}

/// The counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Generations {
    /// Demand.
    pub requested: u64,
    /// The running wave's target.
    pub running: Option<u64>,
    /// Synced everywhere.
    pub completed: u64,
    /// The last failed generation and its attempts.
    pub failed: Option<Failed>,
    /// The highest generation the instances' shrink guard refused.
    pub refused: Option<u64>,
}

/// A failed generation.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    /// The generation.
    pub generation: u64,
    /// Waves that failed for it.
    pub attempts: u32,
}

/// The wave holding the lease.
#[derive(Debug, Clone, Serialize)]
pub struct RunningWave {
    /// The wave (the lease owner).
    pub id: String,
    /// Its generation.
    pub target: u64,
    /// Why it started (its record).
    pub reason: Option<String>,
    /// When it started, epoch ms.
    pub started_at: u64,
    /// The invocation allowed to send (a resumer's token differs).
    pub sender: String,
    /// The lease's expiry, epoch ms.
    pub lease_expires_at: u64,
    /// The lease expired: the next sweep or request settles it.
    pub lease_expired: bool,
    /// Every chunk was sent.
    pub sent: bool,
    /// A rollback: the release it puts back.
    pub rollback: Option<String>,
    /// Its commands.
    pub commands: Vec<String>,
    /// Per instance, as SSM reports it.
    pub instances: Vec<InstanceProgress>,
    /// Counts by status.
    pub progress: BTreeMap<String, usize>,
}

/// One instance of the running wave.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceProgress {
    /// The instance.
    pub instance_id: String,
    /// `Pending`, `InProgress`, `Success`, `Failed`, ...
    pub status: String,
    /// SSM's `StatusDetails`.
    pub details: String,
}

/// The last wave that ended.
#[derive(Debug, Clone, Serialize)]
pub struct LastWave {
    /// The wave.
    pub id: String,
    /// Its generation.
    pub target: u64,
    /// Why it started.
    pub reason: String,
    /// `success`, `failure`, `refused`, `abandoned`.
    pub end: Option<String>,
    /// Epoch ms.
    pub started_at: u64,
    /// Epoch ms.
    pub finished_at: Option<u64>,
    /// How many instances synced.
    pub synced: u64,
    /// The outcome per instance it concerned (`synced`, `failed`,
    /// `not_attempted`, `gone`, `unreachable`, or left out: `quarantined`,
    /// `not_online`, `too_old`, `busy`).
    pub instances: BTreeMap<String, String>,
    /// Why it failed without blaming its hosts.
    pub blame: Option<String>,
    /// The release it synced (its manifest's id).
    pub rollback_to: Option<String>,
}

/// A quarantined instance.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// The instance.
    pub instance_id: String,
    /// Since, epoch ms.
    pub since: u64,
    /// Consecutive failures.
    pub failures: u32,
}

/// A rollback's pin.
#[derive(Debug, Clone, Serialize)]
pub struct PinView {
    /// The release put back.
    pub release: String,
    /// Its generation.
    pub generation: u64,
    /// Why.
    pub reason: String,
    /// Since, epoch ms.
    pub since: u64,
    /// Demand waiting for `resume` (generations).
    pub demand_waiting: u64,
}

/// A release the fleet served.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    /// Its id (the manifest's sha256, first 12 digits).
    pub id: String,
    /// The generation that served it.
    pub generation: u64,
    /// The wave that synced it.
    pub wave_id: String,
    /// The fleet serves it now.
    pub serving: bool,
    /// A rollback may put it back (`FLEET_KEEP_RELEASES`).
    pub rollback_target: bool,
}

/// How fresh the code is: from the newest codebase change to every
/// instance of a successful wave having it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Freshness {
    /// The newest relevant change (S3 event time), epoch ms.
    pub newest_change_at: Option<u64>,
    /// The newest change every instance has, epoch ms.
    pub synced_through: Option<u64>,
    /// Every change known is on the fleet.
    pub up_to_date: bool,
    /// Behind: how long the oldest change not yet everywhere waits, ms.
    pub behind_ms: Option<u64>,
    /// The last delivery: from that change to its wave's end, ms.
    pub last_delivery_ms: Option<u64>,
    /// The quiet period holds a wave until then, epoch ms.
    pub quiet_until: Option<u64>,
    /// In-service instances without the fleet's generation (left out of the
    /// last wave: quarantined, unreachable, not online; or just launched):
    /// the sweep catches them up.
    pub behind_instances: Vec<String>,
    /// A rollback pins the fleet to an older release.
    pub pinned: bool,
}

/// A managed group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The group.
    pub name: String,
    /// It exists.
    pub exists: bool,
    /// Its lifecycle hooks.
    pub hooks: Vec<HookView>,
    /// Its instances.
    pub instances: Vec<Member>,
}

/// A lifecycle hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookView {
    /// Name.
    pub name: String,
    /// `autoscaling:EC2_INSTANCE_LAUNCHING` / `..._TERMINATING`.
    pub transition: String,
    /// `CONTINUE` / `ABANDON`.
    pub default_result: String,
    /// Seconds.
    pub heartbeat_timeout: i32,
    /// One of `FLEET_LIFECYCLE_HOOK_NAMES`.
    pub fleetkeeper: bool,
}

/// A group member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The instance.
    pub instance_id: String,
    /// Its AZ.
    pub zone: String,
    /// `InService`, `Pending:Wait`, ...
    pub lifecycle_state: String,
    /// `Healthy` / `Unhealthy`.
    pub health: String,
    /// In a wait state (a hook holds it).
    pub waiting: bool,
    /// The last generation it synced (its run history).
    pub last_synced_gen: Option<u64>,
}

/// A target group.
#[derive(Debug, Clone, Serialize)]
pub struct TargetGroupView {
    /// Its ARN.
    pub arn: String,
    /// Counts by state.
    pub states: BTreeMap<String, usize>,
    /// Its targets.
    pub targets: Vec<TargetView>,
}

/// A target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// Instance id.
    pub id: String,
    /// Port.
    pub port: Option<i32>,
    /// `healthy`, `unhealthy`, `initial`, `draining`, `unused`, ...
    pub state: String,
    /// The reason code (`Target.FailedHealthChecks`, ...).
    pub reason: Option<String>,
}

/// Mount targets.
#[derive(Debug, Clone, Serialize)]
pub struct MountTargetsView {
    /// The file system.
    pub file_system_id: String,
    /// One per AZ (or absent).
    pub zones: Vec<ZoneMount>,
}

/// An AZ's mount target.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneMount {
    /// The AZ.
    pub zone: String,
    /// The mount target, if any.
    pub mount_target_id: Option<String>,
    /// Its state (`available`, `creating`, ...), `missing` without one.
    pub state: String,
    /// A managed instance runs in this AZ.
    pub fleet_uses: bool,
}

/// Reads the whole status. Sections that cannot be read are named in
/// `errors`; the rest is shown.
pub async fn read(aws: &Aws, f: &SyncFunction, now: u64) -> Status {
    let mut errors = Vec::new();
    let item = match f.store.load().await {
        Ok(item) => item.unwrap_or_default(),
        Err(e) => {
            errors.push(format!("the fleet item: {e}"));
            FleetItem::default()
        }
    };
    let keep = f.deps.config.release.keep_releases;
    let mut status = Status {
        schema: SCHEMA,
        fleet: f.settings.fleet.clone(),
        region: aws.clients.region.clone(),
        at: now,
        generations: Generations {
            requested: item.requested_gen,
            running: item.wave.as_ref().map(|w| w.target),
            completed: item.completed_gen,
            failed: (item.failed_gen > 0)
                .then_some(Failed { generation: item.failed_gen, attempts: item.failed_attempts }),
            refused: (item.refused_gen > 0).then_some(item.refused_gen),
        },
        wave: None,
        last_wave: None,
        quarantined: Vec::new(),
        pin: item.pin.as_ref().map(|p| PinView {
            release: p.release.clone(),
            generation: p.manifest.generation,
            reason: p.reason.clone(),
            since: p.since,
            demand_waiting: item.requested_gen.saturating_sub(p.manifest.generation),
        }),
        releases: releases(&item, keep),
        freshness: freshness(&item, None, f, now),
        groups: Vec::new(),
        target_groups: Vec::new(),
        mount_targets: None,
        errors: Vec::new(),
    };
    if let Some(w) = &item.wave {
        let record = f.store.wave(&w.id).await.unwrap_or_else(|e| {
            errors.push(format!("the running wave's record: {e}"));
            None
        });
        let cx = f.context(now, now);
        let mut instances = Vec::new();
        for id in &w.command_ids {
            match cx.invocations(id).await {
                Ok(list) => instances.extend(list.into_iter().map(|v| InstanceProgress {
                    instance_id: v.instance_id,
                    status: v.status.as_str().to_owned(),
                    details: v.details,
                })),
                Err(e) => errors.push(format!("the running wave's command {id}: {e}")),
            }
        }
        // Instances it will reach, not sent to yet.
        let reached: BTreeSet<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
        for id in record.iter().flat_map(|r| &r.instances).filter(|i| !reached.contains(*i)) {
            instances.push(InstanceProgress {
                instance_id: id.clone(),
                status: "NotSent".into(),
                details: String::new(),
            });
        }
        let mut progress = BTreeMap::new();
        for i in &instances {
            *progress.entry(i.status.clone()).or_insert(0) += 1;
        }
        status.wave = Some(RunningWave {
            id: w.id.clone(),
            target: w.target,
            reason: record.as_ref().map(|r| r.reason.clone()),
            started_at: w.sending_since,
            sender: w.sender.clone(),
            lease_expires_at: w.lease_expires_at,
            lease_expired: w.lease_expires_at < now,
            sent: w.sent,
            rollback: w.rollback.clone(),
            commands: w.command_ids.clone(),
            instances,
            progress,
        });
    }
    let last = match &item.last_wave {
        Some(id) => f.store.wave(id).await.unwrap_or_else(|e| {
            errors.push(format!("the last wave's record: {e}"));
            None
        }),
        None => None,
    };
    // Records are kept 30 days: a quiet fleet's last one expires (no error).
    status.last_wave = last.as_ref().map(last_wave);
    if let Some(id) = &item.last_synced_wave {
        // Usually the last wave itself: read once.
        let synced = match last.filter(|r| &r.wave_id == id) {
            Some(r) => Ok(Some(r)),
            None => f.store.wave(id).await,
        };
        match synced {
            Ok(record) => status.freshness = freshness(&item, record.as_ref(), f, now),
            Err(e) => errors.push(format!("the last successful wave's record: {e}")),
        }
    }
    status.groups = groups(aws, &f.deps.config, &mut errors).await;
    let members: Vec<String> =
        status.groups.iter().flat_map(|g| g.instances.iter().map(|m| m.instance_id.clone())).collect();
    match f.store.instances(&members).await {
        Ok(records) => {
            for r in records {
                if let Some(since) = r.quarantined_since {
                    status.quarantined.push(Quarantined {
                        instance_id: r.instance_id.clone(),
                        since,
                        failures: r.sync_failures,
                    });
                }
                for m in status.groups.iter_mut().flat_map(|g| g.instances.iter_mut()) {
                    if m.instance_id == r.instance_id && r.last_synced_epoch == item.epoch && r.last_synced_gen > 0 {
                        m.last_synced_gen = Some(r.last_synced_gen);
                    }
                }
            }
        }
        Err(e) => errors.push(format!("the instances' run histories: {e}")),
    }
    // In service, without the fleet's generation.
    let behind: Vec<String> = status
        .groups
        .iter()
        .flat_map(|g| &g.instances)
        .filter(|m| m.lifecycle_state == "InService" && m.last_synced_gen.unwrap_or_default() < item.fleet_gen())
        .map(|m| m.instance_id.clone())
        .collect();
    if !behind.is_empty() && status.freshness.up_to_date {
        // Every change is on the fleet but these instances: behind since
        // the last successful wave ended.
        status.freshness.up_to_date = false;
        let since = status.freshness.synced_through.or(item.last_change_at);
        status.freshness.behind_ms = since.map(|t| now.saturating_sub(t));
    }
    status.freshness.behind_instances = behind;
    status.target_groups = target_groups(aws, &f.deps.config.target_group_arns, &mut errors).await;
    if let Some(efs) = &f.deps.config.efs {
        let zones: BTreeSet<String> =
            status.groups.iter().flat_map(|g| g.instances.iter().map(|m| m.zone.clone())).collect();
        status.mount_targets = Some(mount_targets(aws, &efs.file_system_id, &zones, &mut errors).await);
    }
    status.errors = errors;
    status
}

fn releases(item: &FleetItem, keep: usize) -> Vec<ReleaseView> {
    let targets: BTreeSet<&str> = item.rollback_targets(keep).iter().map(|r| r.id.as_str()).collect();
    let serving = item.serving();
    item.releases
        .iter()
        .rev()
        .map(|r| ReleaseView {
            id: r.id.clone(),
            generation: r.manifest.generation,
            wave_id: r.wave_id.clone(),
            serving: serving == Some(r.manifest.sha256.as_str()),
            rollback_target: targets.contains(r.id.as_str()),
        })
        .collect()
}

/// The fleet's freshness from its item and the record of the last
/// successful wave.
pub fn freshness(item: &FleetItem, synced: Option<&WaveRecord>, f: &SyncFunction, now: u64) -> Freshness {
    let through = (item.synced_through > 0).then_some(item.synced_through);
    let pinned = item.pin.is_some();
    let up_to_date = !pinned
        && match (item.last_change_at, through) {
            (None, _) => true,
            (Some(newest), Some(t)) => newest <= t,
            (Some(_), None) => false,
        };
    // A rollback's wave delivered no change: its end says nothing of one.
    let synced = synced.filter(|r| r.rollback_to.is_none());
    let behind_since = if up_to_date { None } else { item.unsynced_since.or(item.last_change_at) };
    Freshness {
        newest_change_at: item.last_change_at,
        synced_through: through,
        up_to_date,
        behind_ms: behind_since.map(|t| now.saturating_sub(t)),
        last_delivery_ms: match (synced.and_then(|r| r.finished_at), through) {
            (Some(done), Some(t)) => Some(done.saturating_sub(t)),
            _ => None,
        },
        quiet_until: if up_to_date { None } else { f.settings.quiet().until(item).filter(|u| *u > now) },
        behind_instances: Vec::new(),
        pinned,
    }
}

fn last_wave(r: &WaveRecord) -> LastWave {
    let mut instances = BTreeMap::new();
    // Listed instances not named below: synced by a success or a failure,
    // never run by an abandoned wave (its commands were cancelled or never
    // sent).
    let default = match r.end {
        None => "running",
        Some(fleetkeeper::sync::state::WaveEnd::Abandoned) => "not_attempted",
        Some(_) => "synced",
    };
    for id in &r.instances {
        instances.insert(id.clone(), default.to_owned());
    }
    let lists: [(&str, &Vec<String>); 8] = [
        ("failed", &r.failed),
        ("not_attempted", &r.not_attempted),
        ("gone", &r.gone),
        ("unreachable", &r.unreachable),
        ("quarantined", &r.quarantined),
        ("not_online", &r.not_online),
        ("too_old", &r.too_old),
        ("busy", &r.busy),
    ];
    for (what, ids) in lists {
        for id in ids {
            instances.insert(id.clone(), what.to_owned());
        }
    }
    if r.end == Some(fleetkeeper::sync::state::WaveEnd::Refused) {
        for (_, v) in instances.iter_mut().filter(|(_, v)| *v == "synced") {
            *v = "refused".into();
        }
    }
    LastWave {
        id: r.wave_id.clone(),
        target: r.target,
        reason: r.reason.clone(),
        end: r
            .end
            .map(|e| serde_json::to_value(e).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()),
        started_at: r.started_at,
        finished_at: r.finished_at,
        synced: r.synced,
        instances,
        blame: r.blame.clone(),
        rollback_to: r.rollback_to.clone(),
    }
}

async fn groups(aws: &Aws, config: &fleetkeeper::Config, errors: &mut Vec<String>) -> Vec<GroupView> {
    let c = &aws.clients.autoscaling;
    let found = match c
        .describe_auto_scaling_groups()
        .set_auto_scaling_group_names(Some(config.asg_names.clone()))
        .send()
        .await
    {
        Ok(out) => out.auto_scaling_groups().to_vec(),
        Err(e) => {
            errors.push(CliError::aws("autoscaling:DescribeAutoScalingGroups", e).to_string());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in &config.asg_names {
        let Some(g) = found.iter().find(|g| g.auto_scaling_group_name() == Some(name.as_str())) else {
            out.push(GroupView { name: name.clone(), exists: false, hooks: Vec::new(), instances: Vec::new() });
            continue;
        };
        let hooks = match c.describe_lifecycle_hooks().auto_scaling_group_name(name).send().await {
            Ok(h) => h
                .lifecycle_hooks()
                .iter()
                .map(|h| HookView {
                    name: h.lifecycle_hook_name().unwrap_or_default().to_owned(),
                    transition: h.lifecycle_transition().unwrap_or_default().to_owned(),
                    default_result: h.default_result().unwrap_or_default().to_owned(),
                    heartbeat_timeout: h.heartbeat_timeout().unwrap_or_default(),
                    fleetkeeper: config.owns_hook(h.lifecycle_hook_name().unwrap_or_default()),
                })
                .collect(),
            Err(e) => {
                errors.push(CliError::aws("autoscaling:DescribeLifecycleHooks", e).to_string());
                Vec::new()
            }
        };
        let instances = g
            .instances()
            .iter()
            .map(|i| {
                let state = i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default();
                Member {
                    instance_id: i.instance_id().unwrap_or_default().to_owned(),
                    zone: i.availability_zone().unwrap_or_default().to_owned(),
                    waiting: state.contains("Wait"),
                    lifecycle_state: state,
                    health: i.health_status().unwrap_or_default().to_owned(),
                    last_synced_gen: None,
                }
            })
            .collect();
        out.push(GroupView { name: name.clone(), exists: true, hooks, instances });
    }
    out
}

async fn target_groups(aws: &Aws, arns: &[String], errors: &mut Vec<String>) -> Vec<TargetGroupView> {
    let mut out = Vec::new();
    for arn in arns {
        match aws.clients.elbv2.describe_target_health().target_group_arn(arn).send().await {
            Ok(h) => {
                let targets: Vec<TargetView> = h
                    .target_health_descriptions()
                    .iter()
                    .map(|d| TargetView {
                        id: d.target().and_then(|t| t.id()).unwrap_or_default().to_owned(),
                        port: d.target().and_then(|t| t.port()),
                        state: d
                            .target_health()
                            .and_then(|t| t.state())
                            .map(|s| s.as_str().to_owned())
                            .unwrap_or_default(),
                        reason: d.target_health().and_then(|t| t.reason()).map(|r| r.as_str().to_owned()),
                    })
                    .collect();
                let mut states = BTreeMap::new();
                for t in &targets {
                    *states.entry(t.state.clone()).or_insert(0) += 1;
                }
                out.push(TargetGroupView { arn: arn.clone(), states, targets });
            }
            Err(e) => errors.push(CliError::aws("elasticloadbalancing:DescribeTargetHealth", e).to_string()),
        }
    }
    out
}

async fn mount_targets(aws: &Aws, fs: &str, used: &BTreeSet<String>, errors: &mut Vec<String>) -> MountTargetsView {
    let mut zones: BTreeMap<String, ZoneMount> = used
        .iter()
        .map(|z| {
            let missing =
                ZoneMount { zone: z.clone(), mount_target_id: None, state: "missing".into(), fleet_uses: true };
            (z.clone(), missing)
        })
        .collect();
    match aws.clients.efs.describe_mount_targets().file_system_id(fs).send().await {
        Ok(out) => {
            for m in out.mount_targets() {
                let zone = m.availability_zone_name().unwrap_or_default().to_owned();
                let entry = zones.entry(zone.clone()).or_insert(ZoneMount {
                    zone,
                    mount_target_id: None,
                    state: String::new(),
                    fleet_uses: false,
                });
                entry.mount_target_id = Some(m.mount_target_id().to_owned());
                entry.state = m.life_cycle_state().as_str().to_owned();
            }
        }
        Err(e) => errors.push(CliError::aws("elasticfilesystem:DescribeMountTargets", e).to_string()),
    }
    MountTargetsView { file_system_id: fs.to_owned(), zones: zones.into_values().collect() }
}
