//! The configuration contract (DESIGN.md, "Configuration contract").
//!
//! Every function reads one typed [`Config`], parsed once at cold start from
//! the environment. Every function accepts the whole set of variables, so one
//! environment can serve all of them; a variable a function needs but lacks
//! fails its init with a message naming it. A malformed value fails wherever it
//! is seen, even in a function that does not use it: one shared environment
//! must not hide a typo until another function cold-starts.

use std::fmt;

use thiserror::Error;

use crate::params;

/// Name of every variable of the contract, in one place.
pub mod vars {
    /// Fleet id; key of the fleet item.
    pub const FLEET_NAME: &str = "FLEET_NAME";
    /// Comma list of managed Auto Scaling groups.
    pub const ASG_NAMES: &str = "FLEET_ASG_NAMES";
    /// Comma list of fleetkeeper's lifecycle hooks.
    pub const LIFECYCLE_HOOK_NAMES: &str = "FLEET_LIFECYCLE_HOOK_NAMES";
    /// Comma list of target groups the fleet serves.
    pub const TARGET_GROUP_ARNS: &str = "FLEET_TARGET_GROUP_ARNS";
    /// The shared EFS file system.
    pub const EFS_FILE_SYSTEM_ID: &str = "FLEET_EFS_FILE_SYSTEM_ID";
    /// Comma list of security groups for new mount targets.
    pub const MOUNT_TARGET_SECURITY_GROUPS: &str = "FLEET_MOUNT_TARGET_SECURITY_GROUPS";
    /// Bucket holding the codebase.
    pub const CODEBASE_BUCKET: &str = "FLEET_CODEBASE_BUCKET";
    /// Prefix of the codebase in the bucket.
    pub const CODEBASE_PREFIX: &str = "FLEET_CODEBASE_PREFIX";
    /// Comma list of `aws s3 sync --exclude` globs, relative to the prefix.
    pub const SYNC_EXCLUDES: &str = "FLEET_SYNC_EXCLUDES";
    /// Directory on the instances.
    pub const SYNC_DESTINATION: &str = "FLEET_SYNC_DESTINATION";
    /// SSM document name.
    pub const SYNC_DOCUMENT: &str = "FLEET_SYNC_DOCUMENT";
    /// DynamoDB table with a string partition key `pk`.
    pub const LOCK_TABLE: &str = "FLEET_LOCK_TABLE";
    /// Lease length in seconds.
    pub const LEASE_SECONDS: &str = "FLEET_LEASE_SECONDS";
    /// SSM `MaxConcurrency` of a fleet wave.
    pub const SYNC_MAX_CONCURRENCY: &str = "FLEET_SYNC_MAX_CONCURRENCY";
    /// SSM `MaxErrors` of a fleet wave.
    pub const SYNC_MAX_ERRORS: &str = "FLEET_SYNC_MAX_ERRORS";
    /// `true`: plan and log, write nothing.
    pub const DRY_RUN: &str = "FLEET_DRY_RUN";
    /// Consecutive failed syncs after which an instance is quarantined.
    pub const SYNC_QUARANTINE_AFTER: &str = "FLEET_SYNC_QUARANTINE_AFTER";
    /// The codebase bucket's region, when it is not the functions' region.
    pub const CODEBASE_REGION: &str = "FLEET_CODEBASE_REGION";
    /// How long one attempt of an AWS call may take, in seconds.
    pub const AWS_ATTEMPT_TIMEOUT_SECONDS: &str = "FLEET_AWS_ATTEMPT_TIMEOUT_SECONDS";
    /// How often the schedules (lifecycle reconcile, mount targets, sweep) run, in seconds.
    pub const RECONCILE_INTERVAL_SECONDS: &str = "FLEET_RECONCILE_INTERVAL_SECONDS";
    /// The SQS queue a function sends its own delayed re-triggers to (optional).
    pub const RETRIGGER_QUEUE_URL: &str = "FLEET_RETRIGGER_QUEUE_URL";
    /// A wave starts once no relevant change happened for this many seconds.
    pub const SYNC_QUIET_SECONDS: &str = "FLEET_SYNC_QUIET_SECONDS";
    /// ... and never later than this many seconds after the first unsynced change.
    pub const SYNC_MAX_DELAY_SECONDS: &str = "FLEET_SYNC_MAX_DELAY_SECONDS";
    /// A key relative to the prefix: only a change to it requests a wave.
    pub const RELEASE_MARKER: &str = "FLEET_RELEASE_MARKER";
    /// The largest share of `current`'s files a release may lose (0 to 1).
    pub const SYNC_MAX_SHRINK: &str = "FLEET_SYNC_MAX_SHRINK";
    /// The bucket a wave's manifest is written to (exact releases; optional).
    pub const MANIFEST_BUCKET: &str = "FLEET_MANIFEST_BUCKET";
    /// How many releases the instances keep (and a rollback may put back).
    pub const KEEP_RELEASES: &str = "FLEET_KEEP_RELEASES";
}

/// The function (or tool) whose requirements a [`Config`] is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `lifecycle-hook`: gates instances in and out of service.
    LifecycleHook,
    /// `mount-targets`: one EFS mount target per AZ.
    MountTargets,
    /// `codebase-sync`: the sync dispatcher.
    CodebaseSync,
    /// `sync-completion`: finishes waves, sweeps.
    SyncCompletion,
}

impl Component {
    /// Every component, for tests and documentation.
    pub const ALL: [Component; 4] =
        [Component::LifecycleHook, Component::MountTargets, Component::CodebaseSync, Component::SyncCompletion];

    /// The crate (and Lambda function) name.
    pub fn name(self) -> &'static str {
        match self {
            Component::LifecycleHook => "lifecycle-hook",
            Component::MountTargets => "mount-targets",
            Component::CodebaseSync => "codebase-sync",
            Component::SyncCompletion => "sync-completion",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration that cannot serve: the init fails with this message.
///
/// `Debug` prints the message too: `main` returns this error, and Rust prints
/// a failed `main`'s error with `Debug` on stderr, where the operator reads it.
#[derive(Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable the component needs is unset or empty.
    #[error("{var} is required by {component}{why}")]
    Missing {
        /// The variable's name.
        var: &'static str,
        /// The component that needs it.
        component: Component,
        /// Why it is needed, when the need is conditional (leading space).
        why: &'static str,
    },
    /// A variable is set to a value that cannot be used.
    #[error("{var} is invalid: {reason} (got {value:?})")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
        /// The value as given.
        value: String,
    },
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where the codebase lives and how it is synced (present when
/// `FLEET_CODEBASE_BUCKET` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodebaseConfig {
    /// `FLEET_CODEBASE_BUCKET`.
    pub bucket: String,
    /// `FLEET_CODEBASE_PREFIX`, normalised: empty (whole bucket) or ending in `/`.
    pub prefix: String,
    /// `FLEET_SYNC_EXCLUDES`, in the order given.
    pub excludes: Vec<String>,
    /// `FLEET_SYNC_DESTINATION` (required by the sync functions).
    pub destination: Option<String>,
    /// `FLEET_SYNC_DOCUMENT` (required by the sync functions).
    pub document: Option<String>,
    /// `FLEET_CODEBASE_REGION` (default: the functions' own region).
    pub region: Option<String>,
}

/// The shared file system (present when `FLEET_EFS_FILE_SYSTEM_ID` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfsConfig {
    /// `FLEET_EFS_FILE_SYSTEM_ID`.
    pub file_system_id: String,
    /// `FLEET_MOUNT_TARGET_SECURITY_GROUPS`.
    pub mount_target_security_groups: Vec<String>,
}

/// SSM rate controls of a fleet wave, as SSM spells them (`"50"`, `"10%"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateControls {
    /// `MaxConcurrency`.
    pub max_concurrency: String,
    /// `MaxErrors`.
    pub max_errors: String,
}

/// The whole typed configuration, validated for one [`Component`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The component this configuration was validated for.
    pub component: Component,
    /// `FLEET_NAME` (optional only for `mount-targets`).
    pub fleet_name: Option<String>,
    /// `FLEET_ASG_NAMES`, never empty.
    pub asg_names: Vec<String>,
    /// `FLEET_LIFECYCLE_HOOK_NAMES`.
    pub lifecycle_hook_names: Vec<String>,
    /// `FLEET_TARGET_GROUP_ARNS`.
    pub target_group_arns: Vec<String>,
    /// EFS settings, when a file system is configured.
    pub efs: Option<EfsConfig>,
    /// Codebase settings, when a bucket is configured.
    pub codebase: Option<CodebaseConfig>,
    /// `FLEET_LOCK_TABLE`.
    pub lock_table: Option<String>,
    /// `FLEET_LEASE_SECONDS` (default 900).
    pub lease_seconds: u64,
    /// `FLEET_SYNC_MAX_CONCURRENCY` / `FLEET_SYNC_MAX_ERRORS` (defaults 50 / 0).
    pub rate: RateControls,
    /// `FLEET_SYNC_QUARANTINE_AFTER` (default 3).
    pub quarantine_after: u32,
    /// `FLEET_DRY_RUN`.
    pub dry_run: bool,
    /// `FLEET_AWS_ATTEMPT_TIMEOUT_SECONDS` (default 10).
    pub aws_attempt_timeout_seconds: u64,
    /// `FLEET_RECONCILE_INTERVAL_SECONDS` (default 300): a lifecycle hook's
    /// heartbeat timeout must be above twice it, or an action whose event
    /// was lost can time out before the reconcile sees it.
    pub reconcile_interval_seconds: u64,
    /// `FLEET_RETRIGGER_QUEUE_URL`: where a function queues its own delayed
    /// re-triggers (unset: the schedule is the only continuation).
    pub retrigger_queue_url: Option<String>,
    /// How releases are cut: quiet period, marker, shrink guard.
    pub release: ReleaseConfig,
}

/// How a release is cut from the codebase prefix (consistent releases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseConfig {
    /// `FLEET_SYNC_QUIET_SECONDS` (default [`DEFAULT_QUIET_SECONDS`], or 0
    /// with a release marker: the marker already says the upload is done).
    pub quiet_seconds: u64,
    /// `FLEET_SYNC_MAX_DELAY_SECONDS` (default [`DEFAULT_MAX_DELAY_SECONDS`]).
    pub max_delay_seconds: u64,
    /// `FLEET_RELEASE_MARKER`, relative to the prefix.
    pub marker: Option<String>,
    /// `FLEET_SYNC_MAX_SHRINK` as a percentage (default 50).
    pub max_shrink_percent: u8,
    /// `FLEET_MANIFEST_BUCKET`: exact releases, each wave's manifest written
    /// there (in the functions' region); unset, the instances sync the
    /// prefix as it is.
    pub manifest_bucket: Option<String>,
    /// `FLEET_KEEP_RELEASES` (default [`DEFAULT_KEEP_RELEASES`], 2 to 20):
    /// the newest releases each instance keeps (current among them; the
    /// previous one and the rollback targets are kept too), and how many a
    /// rollback may put back.
    pub keep_releases: usize,
}

/// The releases kept when `FLEET_KEEP_RELEASES` is unset: the current one and
/// two to roll back to (hard links make an exact release cost little more
/// than its changed files; a release synced without a manifest is a copy).
pub const DEFAULT_KEEP_RELEASES: u64 = 3;

/// The quiet period when `FLEET_SYNC_QUIET_SECONDS` is unset (and no marker
/// is configured): see docs/consistent-releases.md for how it was chosen.
pub const DEFAULT_QUIET_SECONDS: u64 = 60;

/// The longest a trickle of changes holds a wave back by default.
pub const DEFAULT_MAX_DELAY_SECONDS: u64 = 600;

/// The share of `current`'s files a release may lose by default.
pub const DEFAULT_MAX_SHRINK: &str = "0.5";

/// Default bound on one attempt of an AWS call: a connection that hangs
/// (no answer, no reset) is abandoned and the call retried by the SDK,
/// instead of holding the invocation until Lambda's timeout.
pub const DEFAULT_AWS_ATTEMPT_TIMEOUT_SECONDS: u64 = 10;

/// The schedules' interval when `FLEET_RECONCILE_INTERVAL_SECONDS` is unset.
pub const DEFAULT_RECONCILE_INTERVAL_SECONDS: u64 = 300;

/// Default number of consecutive failed syncs before quarantine.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 3;

/// Default lease length: long enough for any sweep interval, short enough
/// that a crashed dispatcher is noticed within one sweep or two.
pub const DEFAULT_LEASE_SECONDS: u64 = 900;

impl Config {
    /// Reads the process environment. Only `main` should call this.
    pub fn from_env(component: Component) -> Result<Self, ConfigError> {
        Self::from_lookup(component, |name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map) and validates them
    /// for `component`. An empty value counts as unset.
    pub fn from_lookup<F>(component: Component, lookup: F) -> Result<Self, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |var: &str| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        use Component::*;
        let need = |var: &'static str, who: &[Component]| -> Result<Option<String>, ConfigError> {
            match get(var) {
                Some(v) => Ok(Some(v)),
                None if who.contains(&component) => Err(missing(var, component, "")),
                None => Ok(None),
            }
        };

        let fleet_name = need(vars::FLEET_NAME, &[LifecycleHook, CodebaseSync, SyncCompletion])?;
        if let Some(name) = &fleet_name {
            params::check(vars::FLEET_NAME, &params::FLEET_NAME, name)?;
        }
        let asg_names = list(need(vars::ASG_NAMES, &Component::ALL)?);
        if asg_names.is_empty() {
            return Err(missing(vars::ASG_NAMES, component, ""));
        }
        let lifecycle_hook_names = list(need(vars::LIFECYCLE_HOOK_NAMES, &[LifecycleHook])?);
        let target_group_arns = list(get(vars::TARGET_GROUP_ARNS));
        for arn in &target_group_arns {
            if !arn.starts_with("arn:") || !arn.contains(":targetgroup/") {
                return Err(invalid(vars::TARGET_GROUP_ARNS, "expected target group ARNs", arn));
            }
        }

        let efs = match need(vars::EFS_FILE_SYSTEM_ID, &[MountTargets])? {
            Some(file_system_id) => {
                params::check(vars::EFS_FILE_SYSTEM_ID, &params::FILE_SYSTEM_ID, &file_system_id)?;
                let groups = get(vars::MOUNT_TARGET_SECURITY_GROUPS);
                let groups = match groups {
                    Some(g) => list(Some(g)),
                    None if matches!(component, LifecycleHook | MountTargets) => {
                        return Err(missing(
                            vars::MOUNT_TARGET_SECURITY_GROUPS,
                            component,
                            " when FLEET_EFS_FILE_SYSTEM_ID is set",
                        ));
                    }
                    None => Vec::new(),
                };
                for g in &groups {
                    params::check(vars::MOUNT_TARGET_SECURITY_GROUPS, &params::SECURITY_GROUP_ID, g)?;
                }
                if groups.len() > 5 {
                    return Err(invalid(
                        vars::MOUNT_TARGET_SECURITY_GROUPS,
                        "a mount target takes at most 5 security groups",
                        &groups.join(","),
                    ));
                }
                Some(EfsConfig { file_system_id, mount_target_security_groups: groups })
            }
            None => None,
        };

        let codebase = match need(vars::CODEBASE_BUCKET, &[CodebaseSync, SyncCompletion])? {
            Some(bucket) => Some(codebase_config(component, bucket, &get, &lookup)?),
            None => None,
        };

        let lock_table = need(vars::LOCK_TABLE, &[LifecycleHook, CodebaseSync, SyncCompletion])?;
        if let Some(t) = &lock_table {
            params::check(vars::LOCK_TABLE, &params::TABLE_NAME, t)?;
        }

        let lease_seconds = whole(&get, vars::LEASE_SECONDS, 60..=86_400, DEFAULT_LEASE_SECONDS, "whole seconds")?;
        let max_concurrency = get(vars::SYNC_MAX_CONCURRENCY).unwrap_or_else(|| "50".to_owned());
        params::check(vars::SYNC_MAX_CONCURRENCY, &params::MAX_CONCURRENCY, &max_concurrency)?;
        let max_errors = get(vars::SYNC_MAX_ERRORS).unwrap_or_else(|| "0".to_owned());
        params::check(vars::SYNC_MAX_ERRORS, &params::MAX_ERRORS, &max_errors)?;

        let quarantine_after =
            whole(&get, vars::SYNC_QUARANTINE_AFTER, 1..=100, DEFAULT_QUARANTINE_AFTER, "a whole number")?;

        let dry_run = match get(vars::DRY_RUN).map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => return Err(invalid(vars::DRY_RUN, "expected true or false", &v)),
        };

        let aws_attempt_timeout_seconds = whole(
            &get,
            vars::AWS_ATTEMPT_TIMEOUT_SECONDS,
            1..=60,
            DEFAULT_AWS_ATTEMPT_TIMEOUT_SECONDS,
            "whole seconds",
        )?;
        let reconcile_interval_seconds = whole(
            &get,
            vars::RECONCILE_INTERVAL_SECONDS,
            60..=3600,
            DEFAULT_RECONCILE_INTERVAL_SECONDS,
            "whole seconds",
        )?;

        let retrigger_queue_url = get(vars::RETRIGGER_QUEUE_URL);
        if let Some(url) = &retrigger_queue_url {
            // `https://sqs.<region>.amazonaws.com/<account>/<name>` (any
            // endpoint: AWS_ENDPOINT_URL may point the SDK elsewhere).
            let path: Vec<&str> = url.split("://").nth(1).unwrap_or_default().split('/').collect();
            let well_formed = (url.starts_with("https://") || url.starts_with("http://"))
                && path.len() == 3
                && path[1].len() == 12
                && path[1].bytes().all(|b| b.is_ascii_digit())
                && !path[2].is_empty()
                && path[2].len() <= 80
                && path[2].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !well_formed {
                return Err(invalid(
                    vars::RETRIGGER_QUEUE_URL,
                    "expected an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)",
                    url,
                ));
            }
        }

        let release = release_config(&get)?;

        Ok(Config {
            component,
            fleet_name,
            asg_names,
            lifecycle_hook_names,
            target_group_arns,
            efs,
            codebase,
            lock_table,
            lease_seconds,
            rate: RateControls { max_concurrency, max_errors },
            quarantine_after,
            dry_run,
            aws_attempt_timeout_seconds,
            reconcile_interval_seconds,
            retrigger_queue_url,
            release,
        })
    }

    /// Whether `name` is one of the managed Auto Scaling groups.
    pub fn manages_asg(&self, name: &str) -> bool {
        self.asg_names.iter().any(|n| n == name)
    }

    /// Whether `name` is one of fleetkeeper's lifecycle hooks.
    pub fn owns_hook(&self, name: &str) -> bool {
        self.lifecycle_hook_names.iter().any(|n| n == name)
    }
}

fn codebase_config<G, R>(component: Component, bucket: String, get: &G, raw: &R) -> Result<CodebaseConfig, ConfigError>
where
    G: Fn(&str) -> Option<String>,
    R: Fn(&str) -> Option<String>,
{
    use Component::*;
    params::check(vars::CODEBASE_BUCKET, &params::BUCKET, &bucket)?;
    // The prefix is required by the sync functions, yet the whole bucket is a
    // legitimate codebase: `/` (or a variable set to the empty string) says so.
    let prefix = match (raw(vars::CODEBASE_PREFIX), component) {
        (Some(p), _) => p.trim().trim_start_matches('/').to_owned(),
        (None, CodebaseSync | SyncCompletion) => {
            return Err(missing(vars::CODEBASE_PREFIX, component, " (use / for the whole bucket)"));
        }
        (None, _) => String::new(),
    };
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix } else { format!("{prefix}/") };
    if !prefix.is_empty() {
        params::check(vars::CODEBASE_PREFIX, &params::PREFIX, &prefix)?;
    }
    let excludes = list(get(vars::SYNC_EXCLUDES));
    for e in &excludes {
        params::check(vars::SYNC_EXCLUDES, &params::EXCLUDE, e)?;
    }
    let conditional = " when FLEET_CODEBASE_BUCKET is set";
    let sync_needs = [LifecycleHook, CodebaseSync, SyncCompletion];
    let destination = get(vars::SYNC_DESTINATION);
    match &destination {
        Some(d) => params::check(vars::SYNC_DESTINATION, &params::DESTINATION, d)?,
        None if sync_needs.contains(&component) => {
            return Err(missing(vars::SYNC_DESTINATION, component, conditional));
        }
        None => {}
    }
    let document = get(vars::SYNC_DOCUMENT);
    match &document {
        Some(d) => params::check(vars::SYNC_DOCUMENT, &params::DOCUMENT_NAME, d)?,
        None if sync_needs.contains(&component) => {
            return Err(missing(vars::SYNC_DOCUMENT, component, conditional));
        }
        None => {}
    }
    let region = get(vars::CODEBASE_REGION);
    if let Some(r) = &region {
        params::check(vars::CODEBASE_REGION, &params::REGION, r)?;
    }
    Ok(CodebaseConfig { bucket, prefix, excludes, destination, document, region })
}

fn release_config(get: &impl Fn(&str) -> Option<String>) -> Result<ReleaseConfig, ConfigError> {
    let marker = get(vars::RELEASE_MARKER).map(|m| m.trim_start_matches('/').to_owned());
    if let Some(m) = &marker {
        let segments_ok = m.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
        if !params::MARKER.is_match(m) || !segments_ok {
            return Err(invalid(
                vars::RELEASE_MARKER,
                "expected a key relative to the prefix (letters, digits, . _ - and /, no empty, . or .. segment)",
                m,
            ));
        }
    }
    let default_quiet = if marker.is_some() { 0 } else { DEFAULT_QUIET_SECONDS };
    let quiet_seconds = whole(get, vars::SYNC_QUIET_SECONDS, 0..=3_600, default_quiet, "whole seconds")?;
    let max_delay_seconds =
        whole(get, vars::SYNC_MAX_DELAY_SECONDS, 0..=86_400, DEFAULT_MAX_DELAY_SECONDS, "whole seconds")?;
    if max_delay_seconds < quiet_seconds {
        return Err(invalid(
            vars::SYNC_MAX_DELAY_SECONDS,
            &format!("must be at least FLEET_SYNC_QUIET_SECONDS ({quiet_seconds})"),
            &max_delay_seconds.to_string(),
        ));
    }
    let shrink = get(vars::SYNC_MAX_SHRINK).unwrap_or_else(|| DEFAULT_MAX_SHRINK.to_owned());
    let max_shrink_percent = share_percent(&shrink).ok_or_else(|| {
        invalid(vars::SYNC_MAX_SHRINK, "expected a share from 0 to 1 (0.5 = half), at most 2 decimals", &shrink)
    })?;
    let manifest_bucket = get(vars::MANIFEST_BUCKET);
    if let Some(b) = &manifest_bucket {
        params::check(vars::MANIFEST_BUCKET, &params::BUCKET, b)?;
    }
    let keep = whole(get, vars::KEEP_RELEASES, 2..=20, DEFAULT_KEEP_RELEASES, "a number of releases")?;
    let keep_releases = usize::try_from(keep).unwrap_or(20);
    Ok(ReleaseConfig { quiet_seconds, max_delay_seconds, marker, max_shrink_percent, manifest_bucket, keep_releases })
}

/// `0.25` as 25: a share from 0 to 1 with at most two decimals.
fn share_percent(v: &str) -> Option<u8> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 2
        || !(whole.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u32 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u32 = format!("{frac:0<2}").parse().ok()?;
    let percent = whole.checked_mul(100)?.checked_add(frac)?;
    u8::try_from(percent).ok().filter(|p| *p <= 100)
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn missing(var: &'static str, component: Component, why: &'static str) -> ConfigError {
    ConfigError::Missing { var, component, why }
}

/// The whole number `var` holds, within `range` (`default` when unset); `what` names it in
/// the error ("expected whole seconds from 60 to 3600").
fn whole<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    range: std::ops::RangeInclusive<T>,
    default: T,
    what: &str,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display,
{
    let Some(v) = get(var) else { return Ok(default) };
    match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(var, &format!("expected {what} from {} to {}", range.start(), range.end()), &v)),
    }
}

fn invalid(var: &'static str, reason: &str, value: &str) -> ConfigError {
    ConfigError::Invalid { var, reason: reason.to_owned(), value: value.to_owned() }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::Component::*;
    use super::*;

    /// A complete environment: every variable of the contract set.
    fn full() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            (vars::FLEET_NAME, "web"),
            (vars::ASG_NAMES, "web-a, web-b"),
            (vars::LIFECYCLE_HOOK_NAMES, "fk-launch,fk-terminate"),
            (
                vars::TARGET_GROUP_ARNS,
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef",
            ),
            (vars::EFS_FILE_SYSTEM_ID, "fs-0123456789abcdef0"),
            (vars::MOUNT_TARGET_SECURITY_GROUPS, "sg-0123456789abcdef0"),
            (vars::CODEBASE_BUCKET, "code-bucket"),
            (vars::CODEBASE_PREFIX, "app"),
            (vars::SYNC_EXCLUDES, "media/*,*.log"),
            (vars::SYNC_DESTINATION, "/var/www"),
            (vars::SYNC_DOCUMENT, "fleetkeeper-sync"),
            (vars::LOCK_TABLE, "fleetkeeper-locks"),
        ])
    }

    fn parse(component: Component, env: &HashMap<&'static str, &'static str>) -> Result<Config, ConfigError> {
        Config::from_lookup(component, |k| env.get(k).map(|v| (*v).to_owned()))
    }

    fn without(var: &str) -> HashMap<&'static str, &'static str> {
        let mut env = full();
        env.remove(var);
        env
    }

    #[test]
    fn kept_releases_default_to_three_and_are_bounded() {
        let cfg = parse(CodebaseSync, &full()).expect("defaults");
        assert_eq!(cfg.release.keep_releases, 3);
        for (value, kept) in [("2", 2), ("20", 20), (" 5 ", 5)] {
            let mut env = full();
            env.insert(vars::KEEP_RELEASES, value);
            assert_eq!(parse(CodebaseSync, &env).map(|c| c.release.keep_releases), Ok(kept), "{value}");
        }
        for bad in ["1", "0", "21", "-3", "three", "3.5"] {
            let mut env = full();
            env.insert(vars::KEEP_RELEASES, bad);
            let err = parse(CodebaseSync, &env).expect_err(bad).to_string();
            assert!(err.contains("FLEET_KEEP_RELEASES"), "{bad}: {err}");
        }
    }

    #[test]
    fn full_environment_serves_every_component() {
        for c in Component::ALL {
            let cfg = parse(c, &full()).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert_eq!(cfg.asg_names, ["web-a", "web-b"]);
            assert_eq!(cfg.lease_seconds, DEFAULT_LEASE_SECONDS);
            assert_eq!(cfg.aws_attempt_timeout_seconds, DEFAULT_AWS_ATTEMPT_TIMEOUT_SECONDS);
            assert_eq!(cfg.reconcile_interval_seconds, DEFAULT_RECONCILE_INTERVAL_SECONDS);
            assert_eq!(cfg.rate, RateControls { max_concurrency: "50".into(), max_errors: "0".into() });
            assert!(!cfg.dry_run);
            let codebase = cfg.codebase.expect("codebase");
            assert_eq!(codebase.prefix, "app/", "prefix is normalised to end in /");
            assert_eq!(codebase.excludes, ["media/*", "*.log"]);
        }
    }

    /// The R column of the contract: removing the variable fails the init of
    /// exactly these components, naming the variable.
    #[test]
    fn required_matrix() {
        let table: &[(&str, &[Component])] = &[
            (vars::FLEET_NAME, &[LifecycleHook, CodebaseSync, SyncCompletion]),
            (vars::ASG_NAMES, &[LifecycleHook, MountTargets, CodebaseSync, SyncCompletion]),
            (vars::LIFECYCLE_HOOK_NAMES, &[LifecycleHook]),
            (vars::TARGET_GROUP_ARNS, &[]),
            (vars::EFS_FILE_SYSTEM_ID, &[MountTargets]),
            (vars::MOUNT_TARGET_SECURITY_GROUPS, &[LifecycleHook, MountTargets]),
            (vars::CODEBASE_BUCKET, &[CodebaseSync, SyncCompletion]),
            (vars::CODEBASE_PREFIX, &[CodebaseSync, SyncCompletion]),
            (vars::SYNC_EXCLUDES, &[]),
            (vars::SYNC_DESTINATION, &[LifecycleHook, CodebaseSync, SyncCompletion]),
            (vars::SYNC_DOCUMENT, &[LifecycleHook, CodebaseSync, SyncCompletion]),
            (vars::LOCK_TABLE, &[LifecycleHook, CodebaseSync, SyncCompletion]),
        ];
        for (var, required_by) in table {
            for c in Component::ALL {
                let result = parse(c, &without(var));
                if required_by.contains(&c) {
                    let err = result.expect_err(&format!("{c} must need {var}"));
                    assert!(matches!(err, ConfigError::Missing { var: v, .. } if v == *var), "{c}/{var}: {err}");
                    assert!(err.to_string().contains(var), "message names the variable: {err}");
                } else {
                    assert!(result.is_ok(), "{c} must not need {var}: {:?}", result.err());
                }
            }
        }
    }

    /// The S and E columns: a variable needed only because another is set.
    #[test]
    fn conditional_requirements_follow_their_trigger() {
        let mut env = without(vars::CODEBASE_BUCKET);
        env.remove(vars::SYNC_DESTINATION);
        env.remove(vars::SYNC_DOCUMENT);
        let cfg = parse(LifecycleHook, &env).expect("no bucket: no destination needed");
        assert_eq!(cfg.codebase, None);

        let mut env = without(vars::EFS_FILE_SYSTEM_ID);
        env.remove(vars::MOUNT_TARGET_SECURITY_GROUPS);
        let cfg = parse(LifecycleHook, &env).expect("no file system: no security groups needed");
        assert_eq!(cfg.efs, None);

        let err = parse(LifecycleHook, &without(vars::SYNC_DOCUMENT)).unwrap_err();
        assert!(err.to_string().contains("when FLEET_CODEBASE_BUCKET is set"), "{err}");
    }

    #[test]
    fn blank_values_count_as_unset() {
        let mut env = full();
        env.insert(vars::LOCK_TABLE, "   ");
        assert!(matches!(parse(CodebaseSync, &env), Err(ConfigError::Missing { var: vars::LOCK_TABLE, .. })));
        env.insert(vars::ASG_NAMES, " , ,");
        assert!(matches!(parse(MountTargets, &env), Err(ConfigError::Missing { var: vars::ASG_NAMES, .. })));
    }

    #[test]
    fn slash_or_empty_prefix_means_the_whole_bucket() {
        for value in ["/", ""] {
            let mut env = full();
            env.insert(vars::CODEBASE_PREFIX, value);
            let cfg = parse(CodebaseSync, &env).expect("whole bucket");
            assert_eq!(cfg.codebase.expect("codebase").prefix, "");
        }
    }

    #[test]
    fn malformed_values_fail_naming_the_variable_in_every_component() {
        let table = [
            (vars::FLEET_NAME, "web fleet"),
            (vars::TARGET_GROUP_ARNS, "my-target-group"),
            (vars::EFS_FILE_SYSTEM_ID, "fs-XYZ"),
            (vars::MOUNT_TARGET_SECURITY_GROUPS, "sg-1;reboot"),
            (vars::CODEBASE_BUCKET, "Bad_Bucket"),
            (vars::CODEBASE_PREFIX, "app/../etc"),
            (vars::SYNC_EXCLUDES, "../secrets/*"),
            (vars::SYNC_DESTINATION, "/var/www; rm -rf /"),
            (vars::SYNC_DOCUMENT, "doc$(id)"),
            (vars::LOCK_TABLE, "t"),
            (vars::LEASE_SECONDS, "ten"),
            (vars::LEASE_SECONDS, "5"),
            (vars::SYNC_MAX_CONCURRENCY, "0"),
            (vars::SYNC_MAX_ERRORS, "many"),
            (vars::SYNC_QUARANTINE_AFTER, "0"),
            (vars::SYNC_MAX_ERRORS, "05%"),
            (vars::CODEBASE_REGION, "eu-west-1; id"),
            (vars::DRY_RUN, "yes"),
            (vars::AWS_ATTEMPT_TIMEOUT_SECONDS, "0"),
            (vars::AWS_ATTEMPT_TIMEOUT_SECONDS, "1.5"),
            (vars::RECONCILE_INTERVAL_SECONDS, "30"),
            (vars::RECONCILE_INTERVAL_SECONDS, "5m"),
            (vars::RETRIGGER_QUEUE_URL, "sqs.us-east-1.amazonaws.com/123456789012/q"),
            (vars::RETRIGGER_QUEUE_URL, "https://sqs.us-east-1.amazonaws.com/1234/q"),
            (vars::RETRIGGER_QUEUE_URL, "https://sqs.us-east-1.amazonaws.com/123456789012/q;rm"),
            (vars::RETRIGGER_QUEUE_URL, "arn:aws:sqs:us-east-1:123456789012:q"),
        ];
        for (var, value) in table {
            let mut env = full();
            env.insert(var, value);
            for c in Component::ALL {
                let err = parse(c, &env).expect_err(&format!("{c}: {var}={value:?} must fail"));
                assert!(matches!(&err, ConfigError::Invalid { var: v, .. } if *v == var), "{c}: {err}");
                assert!(err.to_string().starts_with(var), "{err}");
            }
        }
    }

    #[test]
    fn optional_settings_are_parsed() {
        let mut env = full();
        env.insert(vars::LEASE_SECONDS, "120");
        env.insert(vars::SYNC_MAX_CONCURRENCY, "25%");
        env.insert(vars::SYNC_MAX_ERRORS, "2");
        env.insert(vars::DRY_RUN, "TRUE");
        env.insert(vars::AWS_ATTEMPT_TIMEOUT_SECONDS, "3");
        env.insert(vars::RETRIGGER_QUEUE_URL, "https://sqs.us-east-1.amazonaws.com/123456789012/fk-web-retrigger");
        let cfg = parse(SyncCompletion, &env).expect("valid");
        assert_eq!(
            cfg.retrigger_queue_url.as_deref(),
            Some("https://sqs.us-east-1.amazonaws.com/123456789012/fk-web-retrigger")
        );
        assert_eq!(cfg.lease_seconds, 120);
        assert_eq!(cfg.aws_attempt_timeout_seconds, 3);
        assert_eq!(cfg.rate, RateControls { max_concurrency: "25%".into(), max_errors: "2".into() });
        assert!(cfg.dry_run);
        assert!(cfg.manages_asg("web-b") && !cfg.manages_asg("web"));
    }

    #[test]
    fn too_many_mount_target_security_groups_are_refused() {
        let mut env = full();
        env.insert(
            vars::MOUNT_TARGET_SECURITY_GROUPS,
            "sg-00000001,sg-00000002,sg-00000003,sg-00000004,sg-00000005,sg-00000006",
        );
        assert!(parse(MountTargets, &env).is_err());
    }
}
