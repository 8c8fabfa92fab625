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

use std::collections::HashMap;

use thiserror::Error;

use crate::config::{CodebaseConfig, RateControls};
use crate::params::{self, Pattern};

/// SSM's limit of `InstanceIds` per `SendCommand`.
pub const MAX_INSTANCE_IDS: usize = 50;

/// The document's parameters, with the pattern each must match. The SSM
/// document (`infra/sync-document.yaml`) declares the same `allowedPattern`s;
/// a test holds the two to each other.
pub const PARAMETERS: [(&str, &Pattern); 6] = [
    ("bucket", &params::BUCKET),
    ("prefix", &params::PREFIX),
    ("destination", &params::DESTINATION),
    ("excludes", &params::EXCLUDES),
    ("generation", &params::GENERATION),
    ("region", &params::REGION),
];

/// A parameter that does not match its pattern: nothing is sent.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("parameter {name} does not match {pattern}")]
pub struct ParamError {
    /// The parameter.
    pub name: &'static str,
    /// The pattern it must match.
    pub pattern: &'static str,
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
}

impl SyncParameters {
    /// The parameters of `codebase` for `generation`.
    pub fn new(codebase: &CodebaseConfig, destination: &str, generation: u64, region: &str) -> Self {
        SyncParameters {
            bucket: codebase.bucket.clone(),
            prefix: codebase.prefix.clone(),
            destination: destination.to_owned(),
            excludes: codebase.excludes.clone(),
            generation,
            region: region.to_owned(),
        }
    }

    /// The `SendCommand` parameters, each checked against its pattern.
    pub fn to_ssm(&self) -> Result<HashMap<String, Vec<String>>, ParamError> {
        let values = [
            self.bucket.clone(),
            self.prefix.clone(),
            self.destination.clone(),
            self.excludes.join(","),
            self.generation.to_string(),
            self.region.clone(),
        ];
        let mut out = HashMap::new();
        for ((name, pattern), value) in PARAMETERS.iter().zip(values) {
            if !pattern.is_match(&value) {
                return Err(ParamError { name, pattern: pattern.source });
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

/// The rate controls of one of `chunks` commands: absolute values are
/// divided across the chunks (concurrency at least 1), percentages apply to
/// each chunk as they are.
pub fn chunk_rate(total: &RateControls, chunks: usize) -> RateControls {
    let divide = |value: &str, min: u64| -> String {
        match value.parse::<u64>() {
            Ok(n) if chunks > 1 => (n / chunks as u64).max(min).to_string(),
            _ => value.to_owned(),
        }
    };
    RateControls { max_concurrency: divide(&total.max_concurrency, 1), max_errors: divide(&total.max_errors, 0) }
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
        }
    }

    #[test]
    fn parameters_are_configured_values_and_the_generation() {
        let p = SyncParameters::new(&codebase(), "/var/www", 42, "us-east-1").to_ssm().expect("valid");
        assert_eq!(p["bucket"], ["code-bucket"]);
        assert_eq!(p["prefix"], ["app/"]);
        assert_eq!(p["destination"], ["/var/www"]);
        assert_eq!(p["excludes"], ["media/*,*.log"]);
        assert_eq!(p["generation"], ["42"]);
        assert_eq!(p["region"], ["us-east-1"]);
        assert_eq!(p.len(), PARAMETERS.len());
    }

    #[test]
    fn a_bad_value_stops_the_send_naming_the_parameter() {
        let mut p = SyncParameters::new(&codebase(), "/var/www", 1, "us-east-1");
        p.destination = "/var/www; reboot".into();
        assert_eq!(p.to_ssm().map_err(|e| e.name), Err("destination"));
        let mut p = SyncParameters::new(&codebase(), "/var/www", 1, "us-east-1");
        p.region = "$(id)".into();
        assert_eq!(p.to_ssm().map_err(|e| e.name), Err("region"));
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
    fn absolute_rate_controls_are_divided_across_chunks() {
        let total = RateControls { max_concurrency: "50".into(), max_errors: "3".into() };
        assert_eq!(chunk_rate(&total, 1), total);
        assert_eq!(chunk_rate(&total, 3), RateControls { max_concurrency: "16".into(), max_errors: "1".into() });
        assert_eq!(chunk_rate(&total, 100), RateControls { max_concurrency: "1".into(), max_errors: "0".into() });
        let pct = RateControls { max_concurrency: "10%".into(), max_errors: "0".into() };
        assert_eq!(chunk_rate(&pct, 3), RateControls { max_concurrency: "10%".into(), max_errors: "0".into() });
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
            let declared = doc["parameters"][name]["allowedPattern"].as_str();
            assert_eq!(declared, Some(pattern.source), "{name}: the document and the Rust check must agree");
            assert_eq!(doc["parameters"][name]["interpolationType"].as_str(), Some("ENV_VAR"), "{name}");
        }
        let script = doc["mainSteps"][0]["inputs"]["runCommand"][0].as_str().expect("script");
        assert!(!script.contains("{{"), "the script never references a parameter in braces");
        for (name, _) in PARAMETERS {
            assert!(script.contains(&format!("\"${{SSM_{name}+set}}\" = set")), "{name} fails closed when unset");
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
    fn comments_name_the_wave() {
        assert_eq!(wave_comment("abc"), "fleetkeeper wave abc");
        assert!(wave_comment(&"x".repeat(36)).len() <= 100, "SSM comments hold 100 characters");
        assert!(catch_up_comment("i-0123456789abcdef0", 123_456_789).len() <= 100);
    }
}
