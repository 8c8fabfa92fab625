//! The sync document's contract (`infra/sync-document.yaml`), shared by the
//! fleet waves (`sync`) and the catch-ups of launching instances
//! (`lifecycle`): its parameters, checked against the same patterns the
//! document declares, the comments that name a wave or a catch-up,
//! `InstanceIds` chunks of at most 50 and their rate controls, sending and
//! reading invocations, and each instance's history of runs.
//!
//! Nothing from an event reaches a command: the parameters are configured
//! values and the generation, an integer.
//!
//! | module | what |
//! |---|---|
//! | [`run`] | sending the document to one instance; an invocation's status |
//! | [`history`] | what a run did on an instance, and each instance's run history (quarantine) |

pub mod history;
pub mod run;

use std::collections::{BTreeSet, HashMap};

use thiserror::Error;

use crate::config::{CodebaseConfig, RateControls};
use crate::params::{self, Pattern};

/// SSM's limit of `InstanceIds` per `SendCommand`.
pub const MAX_INSTANCE_IDS: usize = 50;

/// The document's parameters, with the pattern each must match. The SSM
/// document (`infra/sync-document.yaml`) declares the same `allowedPattern`s;
/// a test holds the two to each other.
pub const PARAMETERS: [(&str, &Pattern); 16] = [
    ("bucket", &params::BUCKET),
    ("prefix", &params::PREFIX),
    ("destination", &params::DESTINATION),
    ("excludes", &params::EXCLUDES),
    ("generation", &params::GENERATION),
    ("region", &params::REGION),
    ("epoch", &params::EPOCH),
    ("release", &params::RELEASE),
    ("max_shrink", &params::MAX_SHRINK),
    ("manifest_bucket", &params::MANIFEST_BUCKET),
    ("manifest_region", &params::MANIFEST_REGION),
    ("manifest", &params::MANIFEST),
    ("manifest_sha256", &params::SHA256),
    ("rollback", &params::ROLLBACK),
    ("keep_releases", &params::KEEP_RELEASES),
    ("keep", &params::KEEP),
];

/// Parameters added after the first document: each has a default in the
/// document that keeps the old behaviour, and is left out when a document
/// version that does not declare it is pinned (an upgrade in progress).
pub const OPTIONAL: [&str; 10] = [
    "epoch",
    "release",
    "max_shrink",
    "manifest_bucket",
    "manifest_region",
    "manifest",
    "manifest_sha256",
    "rollback",
    "keep_releases",
    "keep",
];

/// A parameter that does not match its pattern, or that the pinned
/// document lacks: nothing is sent.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    /// The value does not match the parameter's pattern.
    #[error("parameter {name} does not match {pattern}")]
    Pattern {
        /// The parameter.
        name: &'static str,
        /// The pattern it must match.
        pattern: &'static str,
    },
    /// The pinned document version does not declare a required parameter.
    #[error("document {document} version {version} does not declare parameter {name}: update the document")]
    Undeclared {
        /// The parameter.
        name: &'static str,
        /// The document.
        document: String,
        /// Its version.
        version: String,
    },
}

/// The oldest SSM Agent that exports `interpolationType: ENV_VAR`
/// parameters as `SSM_<name>` variables (AWS, "Run Command now supports
/// interpolating parameters into environment variables"): older agents run
/// the document without them, and its script fails closed.
pub const MIN_AGENT_VERSION: [u32; 4] = [3, 3, 2746, 0];

/// Whether an agent of `version` (`3.3.2746.0`) can run the document.
pub fn agent_supported(version: &str) -> bool {
    let parts: Vec<u32> = version.split('.').map(|p| p.trim().parse().unwrap_or(0)).collect();
    parts.as_slice() >= MIN_AGENT_VERSION.as_slice()
}

/// A fresh lineage for a generation counter (32 hex digits).
pub fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The document version a wave or a catch-up runs: resolved once per wave
/// (its default version when the wave starts) and sent as `DocumentVersion`
/// with every chunk, so a wave never mixes versions even when the document
/// is updated while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedDocument {
    /// The document's name.
    pub name: String,
    /// The version (`"3"`).
    pub version: String,
    /// The parameters it declares.
    pub declared: BTreeSet<String>,
    /// Its `executionTimeout` default, seconds.
    pub execution_timeout_s: u64,
}

/// The sync document's parameters for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncParameters {
    /// Bucket.
    pub bucket: String,
    /// Prefix (empty or ending in `/`).
    pub prefix: String,
    /// Directory on the instance.
    pub destination: String,
    /// Exclude globs.
    pub excludes: Vec<String>,
    /// The generation: the fencing token.
    pub generation: u64,
    /// The bucket's region.
    pub region: String,
    /// The generation's lineage.
    pub epoch: String,
    /// The release id (empty: unknown).
    pub release: String,
    /// The shrink guard: [`Guard`].
    pub guard: Guard,
    /// The manifest to materialize (exact releases), if any.
    pub manifest: Option<ManifestRef>,
    /// A rollback: an instance holding the manifest's release switches to
    /// it with no download.
    pub rollback: bool,
    /// How many releases the instance keeps (`None`: the document's default).
    pub keep_releases: Option<usize>,
    /// The releases the instance keeps whatever their number (the fleet's
    /// rollback targets), by id.
    pub keep: Vec<String>,
}

/// The manifest bucket (`FLEET_MANIFEST_BUCKET`), in the functions' own
/// region (the stack's bucket), which may not be the codebase's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestStore {
    /// The bucket.
    pub bucket: String,
    /// Its region.
    pub region: String,
}

impl ManifestStore {
    /// The manifest bucket a configuration names (`FLEET_MANIFEST_BUCKET`),
    /// in the functions' own `region`.
    pub fn from_config(config: &crate::config::Config, region: &str) -> Option<Self> {
        let bucket = config.release.manifest_bucket.clone()?;
        Some(ManifestStore { bucket, region: region.to_owned() })
    }

    /// An S3 client for the bucket, from the codebase's one (no I/O).
    pub fn client(&self, codebase_s3: &aws_sdk_s3::Client) -> aws_sdk_s3::Client {
        if codebase_s3.config().region().is_some_and(|r| r.as_ref() == self.region) {
            return codebase_s3.clone();
        }
        let regional = codebase_s3.config().to_builder().region(aws_config::Region::new(self.region.clone()));
        aws_sdk_s3::Client::from_conf(regional.build())
    }

    /// The document's manifest parameters for `release`, in this bucket.
    pub fn reference(&self, release: &crate::store::ReleaseRef) -> ManifestRef {
        ManifestRef {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            key: release.key.clone(),
            sha256: release.sha256.clone(),
        }
    }
}

/// Where a run's manifest is, and its sha256 (the instance verifies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    /// The manifest bucket.
    pub bucket: String,
    /// Its region.
    pub region: String,
    /// The manifest's key.
    pub key: String,
    /// The sha256 of its bytes, hex.
    pub sha256: String,
}

/// The guard of a catch-up (an instance behind the fleet, or a launch):
/// only an empty release is refused. The fleet already took the releases in
/// between, each within the guard; measured against an instance's older
/// `current` their shrinkage adds up and would refuse a legitimate catch-up.
pub const CATCH_UP_MAX_SHRINK: u8 = 100;

/// What the instances' shrink guard allows (the `max_shrink` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// No release may lose more than this percentage of `current`'s files,
    /// nor be empty while `current` is not.
    MaxShrink(u8),
    /// Lifted by the operator's request (`allow_shrink`).
    Lifted,
}

impl Guard {
    fn parameter(self) -> String {
        match self {
            Guard::MaxShrink(p) => p.min(100).to_string(),
            Guard::Lifted => "any".to_owned(),
        }
    }
}

impl SyncParameters {
    /// The parameters of `codebase` for `generation` of lineage `epoch`.
    /// (No release id; the guard at `max_shrink` percent.)
    pub fn new(
        codebase: &CodebaseConfig,
        destination: &str,
        epoch: &str,
        generation: u64,
        region: &str,
        max_shrink: u8,
    ) -> Self {
        SyncParameters {
            bucket: codebase.bucket.clone(),
            prefix: codebase.prefix.clone(),
            destination: destination.to_owned(),
            excludes: codebase.excludes.clone(),
            generation,
            region: region.to_owned(),
            epoch: epoch.to_owned(),
            release: String::new(),
            guard: Guard::MaxShrink(max_shrink),
            manifest: None,
            rollback: false,
            keep_releases: None,
            keep: Vec::new(),
        }
    }

    /// The `SendCommand` parameters, each checked against its pattern, for
    /// `document` (`None`: every parameter): an [`OPTIONAL`] one the pinned
    /// version does not declare is left out; a required one is an error.
    pub fn to_ssm(&self, document: Option<&PinnedDocument>) -> Result<HashMap<String, Vec<String>>, ParamError> {
        let values = [
            self.bucket.clone(),
            self.prefix.clone(),
            self.destination.clone(),
            self.excludes.join(","),
            self.generation.to_string(),
            self.region.clone(),
            self.epoch.clone(),
            self.release.clone(),
            self.guard.parameter(),
            self.manifest.as_ref().map(|m| m.bucket.clone()).unwrap_or_default(),
            self.manifest.as_ref().map(|m| m.region.clone()).unwrap_or_default(),
            self.manifest.as_ref().map(|m| m.key.clone()).unwrap_or_default(),
            self.manifest.as_ref().map(|m| m.sha256.clone()).unwrap_or_default(),
            if self.rollback { "true".to_owned() } else { String::new() },
            self.keep_releases.map(|k| k.to_string()).unwrap_or_default(),
            self.keep.join(","),
        ];
        let mut out = HashMap::new();
        for ((name, pattern), value) in PARAMETERS.iter().zip(values) {
            if !pattern.is_match(&value) {
                return Err(ParamError::Pattern { name, pattern: pattern.source });
            }
            if let Some(doc) = document
                && !doc.declared.contains(*name)
            {
                if OPTIONAL.contains(name) {
                    // (An older document has no guard and keeps no release id.)
                    continue;
                }
                return Err(ParamError::Undeclared { name, document: doc.name.clone(), version: doc.version.clone() });
            }
            out.insert((*name).to_owned(), vec![value]);
        }
        Ok(out)
    }
}

/// The `Comment` of a fleet wave's commands (how a wave is found again when
/// its ids were never recorded).
pub fn wave_comment(wave_id: &str) -> String {
    format!("fleetkeeper wave {wave_id}")
}

/// The `Comment` of one instance's catch-up command.
pub fn catch_up_comment(instance_id: &str, generation: u64) -> String {
    format!("fleetkeeper catch-up {instance_id} gen {generation}")
}

/// Splits instances into `SendCommand` chunks.
pub fn chunks(instances: &[String]) -> Vec<Vec<String>> {
    instances.chunks(MAX_INSTANCE_IDS).map(<[String]>::to_vec).collect()
}

/// The rate controls of each of `chunks` commands: absolute values are
/// split across the chunks so that they add up to the configured total
/// (the remainder to the first chunks); percentages apply to each chunk as
/// they are. SSM runs at least one invocation at a time per command, so an
/// absolute `MaxConcurrency` below the number of chunks (fleets over 50 ×
/// that value) still runs one per chunk; an absolute `MaxErrors` below it
/// tolerates no error in the chunks that get 0 (documented in the README).
pub fn chunk_rates(total: &RateControls, chunks: usize) -> Vec<RateControls> {
    let split = |value: &str, min: u64, i: usize| -> String {
        match value.parse::<u64>() {
            Ok(n) if chunks > 1 => {
                let k = chunks as u64;
                let share = n / k + u64::from((i as u64) < n % k);
                share.max(min).to_string()
            }
            _ => value.to_owned(),
        }
    };
    (0..chunks)
        .map(|i| RateControls {
            max_concurrency: split(&total.max_concurrency, 1, i),
            max_errors: split(&total.max_errors, 0, i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codebase() -> CodebaseConfig {
        CodebaseConfig {
            bucket: "code-bucket".into(),
            prefix: "app/".into(),
            excludes: vec!["media/*".into(), "*.log".into()],
            destination: Some("/var/www".into()),
            document: Some("fleetkeeper-sync".into()),
            region: None,
        }
    }

    const EPOCH: &str = "0123456789abcdef0123456789abcdef";

    fn pinned(declared: &[&str]) -> PinnedDocument {
        PinnedDocument {
            name: "fleetkeeper-sync".into(),
            version: "2".into(),
            declared: declared.iter().map(|s| (*s).to_owned()).collect(),
            execution_timeout_s: 3600,
        }
    }

    #[test]
    fn parameters_are_configured_values_and_the_generation() {
        let p = SyncParameters::new(&codebase(), "/var/www", EPOCH, 42, "us-east-1", 50).to_ssm(None).expect("valid");
        assert_eq!(p["bucket"], ["code-bucket"]);
        assert_eq!(p["prefix"], ["app/"]);
        assert_eq!(p["destination"], ["/var/www"]);
        assert_eq!(p["excludes"], ["media/*,*.log"]);
        assert_eq!(p["generation"], ["42"]);
        assert_eq!(p["region"], ["us-east-1"]);
        assert_eq!(p["epoch"], [EPOCH]);
        assert_eq!(p["release"], [""]);
        assert_eq!(p["max_shrink"], ["50"]);
        assert_eq!(p.len(), PARAMETERS.len());
        let mut lifted = SyncParameters::new(&codebase(), "/var/www", EPOCH, 42, "us-east-1", 50);
        lifted.guard = Guard::Lifted;
        lifted.release = "v2026.11.27-1".into();
        let p = lifted.to_ssm(None).expect("valid");
        assert_eq!((p["max_shrink"][0].as_str(), p["release"][0].as_str()), ("any", "v2026.11.27-1"));
    }

    #[test]
    fn a_pinned_document_without_a_new_parameter_gets_the_old_set() {
        let all: Vec<&str> = PARAMETERS.iter().map(|(n, _)| *n).collect();
        let old: Vec<&str> = all.iter().copied().filter(|n| !OPTIONAL.contains(n)).collect();
        let p = SyncParameters::new(&codebase(), "/var/www", EPOCH, 1, "us-east-1", 50);
        assert_eq!(p.to_ssm(Some(&pinned(&all))).expect("new").len(), all.len());
        let sent = p.to_ssm(Some(&pinned(&old))).expect("old document");
        assert!(OPTIONAL.iter().all(|o| !sent.contains_key(*o)) && sent.len() == old.len(), "{sent:?}");
        let broken: Vec<&str> = old.iter().copied().filter(|n| *n != "bucket").collect();
        assert!(matches!(p.to_ssm(Some(&pinned(&broken))), Err(ParamError::Undeclared { name: "bucket", .. })));
    }

    #[test]
    fn a_bad_value_stops_the_send_naming_the_parameter() {
        let name = |r: Result<_, ParamError>| match r {
            Err(ParamError::Pattern { name, .. }) => Some(name),
            _ => None,
        };
        let mut p = SyncParameters::new(&codebase(), "/var/www", EPOCH, 1, "us-east-1", 50);
        p.destination = "/var/www; reboot".into();
        assert_eq!(name(p.to_ssm(None)), Some("destination"));
        let mut p = SyncParameters::new(&codebase(), "/var/www", EPOCH, 1, "us-east-1", 50);
        p.region = "$(id)".into();
        assert_eq!(name(p.to_ssm(None)), Some("region"));
        let mut p = SyncParameters::new(&codebase(), "/var/www", EPOCH, 1, "us-east-1", 50);
        p.epoch = "x; reboot".into();
        assert_eq!(name(p.to_ssm(None)), Some("epoch"));
    }

    #[test]
    fn chunks_hold_at_most_fifty() {
        let ids: Vec<String> = (0..120).map(|i| format!("i-{i:017x}")).collect();
        let c = chunks(&ids);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
        assert_eq!(c.concat(), ids);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn absolute_rate_controls_are_split_across_chunks_keeping_the_total() {
        let rate = |c: &str, e: &str| RateControls { max_concurrency: c.into(), max_errors: e.into() };
        let total = rate("50", "3");
        assert_eq!(chunk_rates(&total, 1), std::slice::from_ref(&total));
        assert_eq!(chunk_rates(&total, 3), [rate("17", "1"), rate("17", "1"), rate("16", "1")]);
        let sum = |v: &[RateControls]| -> u64 { v.iter().map(|r| r.max_concurrency.parse::<u64>().unwrap_or(0)).sum() };
        for k in 1..=50 {
            assert_eq!(sum(&chunk_rates(&total, k)), 50, "{k} chunks");
        }
        let many = chunk_rates(&rate("5", "2"), 8);
        assert!(many.iter().all(|r| r.max_concurrency == "1"), "SSM's minimum is one per command");
        assert_eq!(many.iter().filter(|r| r.max_errors == "1").count(), 2, "the errors still add up");
        let pct = rate("10%", "0");
        assert_eq!(chunk_rates(&pct, 3), vec![pct.clone(); 3]);
    }

    fn document() -> yaml_rust2::Yaml {
        let path = format!("{}/../infra/sync-document.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("the sync document");
        yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML").remove(0)
    }

    #[test]
    fn the_document_declares_exactly_our_patterns() {
        let doc = document();
        for (name, pattern) in PARAMETERS {
            if OPTIONAL.contains(&name) {
                assert!(
                    doc["parameters"][name]["default"].as_str().is_some(),
                    "{name}: a new parameter keeps the old behaviour by default"
                );
            }
            let declared = doc["parameters"][name]["allowedPattern"].as_str();
            assert_eq!(declared, Some(pattern.source), "{name}: the document and the Rust check must agree");
            assert_eq!(doc["parameters"][name]["interpolationType"].as_str(), Some("ENV_VAR"), "{name}");
        }
        let script = doc["mainSteps"][0]["inputs"]["runCommand"][0].as_str().expect("script");
        assert!(!script.contains("{{"), "the script never references a parameter in braces");
        for (name, _) in PARAMETERS {
            let optional = doc["parameters"][name]["default"].as_str().is_some();
            if optional {
                // An agent may or may not export an empty value: read it either way.
                assert!(script.contains(&format!("${{SSM_{name}-}}")), "{name} is read whether or not it is set");
                assert!(!script.contains(&format!("${{SSM_{name}+set}}")), "{name} must not fail closed");
            } else {
                assert!(script.contains(&format!("\"${{SSM_{name}+set}}\" = set")), "{name} fails closed when unset");
            }
        }
    }

    #[test]
    fn hostile_values_are_refused_before_sending() {
        let path = format!("{}/fixtures/parameters.json", env!("CARGO_MANIFEST_DIR"));
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        for (name, pattern) in PARAMETERS {
            for v in fixture[name]["valid"].as_array().expect("valid") {
                assert!(pattern.is_match(v.as_str().expect("str")), "{name}: {v} should pass");
            }
            let hostile = fixture[name]["hostile"].as_array().expect("hostile");
            assert!(hostile.len() >= 5, "{name}: enough hostile samples");
            for v in hostile {
                assert!(!pattern.is_match(v.as_str().expect("str")), "{name}: {v} must be refused");
            }
        }
    }

    #[test]
    fn agents_older_than_env_var_support_are_told_apart() {
        for ok in ["3.3.2746.0", "3.3.2746.1", "3.3.3572.0", "3.4.0.0", "4.0", "10.0.0.0"] {
            assert!(agent_supported(ok), "{ok}");
        }
        for old in ["3.3.2745.9", "3.2.2746.0", "3.1.0.0", "2.3", "", "garbage"] {
            assert!(!agent_supported(old), "{old}");
        }
    }

    #[test]
    fn comments_name_the_wave() {
        assert_eq!(wave_comment("abc"), "fleetkeeper wave abc");
        assert!(wave_comment(&"x".repeat(36)).len() <= 100, "SSM comments hold 100 characters");
        assert!(catch_up_comment("i-0123456789abcdef0", 123_456_789).len() <= 100);
    }
}
