//! Strict, anchored patterns for every value fleetkeeper configures or sends.
//!
//! The sync document declares the same patterns as the `allowedPattern` of its
//! parameters (`infra/sync-document.yaml`); a test proves both sides agree and
//! reject the same hostile values. Values are checked here before anything is
//! sent, so a bad configuration fails the init instead of a wave.
//!
//! The patterns avoid look-around so that Rust's `regex-lite`, Python's `re`
//! and SSM's validator read them the same way. `regex-lite` (not `regex`):
//! every pattern is compiled at init, and `regex`'s compile (its literal
//! optimizations, built for long haystacks) took 17 % of `codebase-sync`'s
//! init instructions for values of a few dozen characters; `regex-lite`
//! takes 4 % (BENCHMARKS.md).

use std::sync::LazyLock;

use regex_lite::Regex;

use crate::config::ConfigError;

/// A named, anchored pattern.
pub struct Pattern {
    /// What the value is, for messages.
    pub what: &'static str,
    /// The regular expression source, anchored with `^...$`.
    pub source: &'static str,
    regex: LazyLock<Regex>,
}

impl Pattern {
    const fn new(what: &'static str, source: &'static str, regex: fn() -> Regex) -> Self {
        Pattern { what, source, regex: LazyLock::new(regex) }
    }

    /// Whether `value` matches the whole pattern.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

macro_rules! pattern {
    ($name:ident, $what:literal, $src:literal) => {
        #[doc = concat!("Pattern for ", $what, ": `", $src, "`.")]
        pub static $name: Pattern = Pattern::new($what, $src, || {
            #[allow(clippy::expect_used)]
            Regex::new($src).expect("static pattern compiles")
        });
    };
}

pattern!(FLEET_NAME, "a fleet name", r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$");
pattern!(FILE_SYSTEM_ID, "an EFS file system id", r"^fs-[0-9a-f]{8,40}$");
pattern!(SECURITY_GROUP_ID, "a security group id", r"^sg-[0-9a-f]{8,17}$");
pattern!(TABLE_NAME, "a DynamoDB table name", r"^[A-Za-z0-9_.-]{3,255}$");
pattern!(BUCKET, "an S3 bucket name", r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$");
// Segments start with a letter or digit: no `.`/`..` segments, no option-like
// words; the prefix is empty or ends with `/`.
pattern!(PREFIX, "an S3 key prefix", r"^([A-Za-z0-9][A-Za-z0-9_.-]*/)*$");
// Absolute, no trailing slash, no `.`/`..` segment, nothing a shell reads.
pattern!(DESTINATION, "an absolute directory", r"^(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+$");
// One `aws s3 sync --exclude` glob: a segment may start with one dot
// (`.env`) but `.` and `..` segments are refused.
pattern!(
    EXCLUDE,
    "an exclude glob",
    r"^\.?[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]*(/\.?[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]*)*$"
);
// The `excludes` document parameter: zero or more EXCLUDE globs, comma-separated.
pattern!(
    EXCLUDES,
    "comma-separated exclude globs",
    r"^(\.?[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]*(/\.?[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]*)*(,\.?[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]*(/\.?[A-Za-z0-9_*?\[\]!-][A-Za-z0-9_.*?\[\]!-]*)*)*)?$"
);
pattern!(REGION, "an AWS region", r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$");
pattern!(DOCUMENT_NAME, "an SSM document name", r"^[A-Za-z0-9_.-]{3,128}$");
// SSM's own patterns (SendCommand API reference), so a value that passes
// here is never refused there.
pattern!(MAX_CONCURRENCY, "an SSM MaxConcurrency", r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$");
pattern!(MAX_ERRORS, "an SSM MaxErrors", r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$");
pattern!(GENERATION, "a generation number", r"^[0-9]{1,18}$");
// The generation counter's lineage: 32 hex digits, or empty (unknown).
pattern!(EPOCH, "a lineage", r"^([0-9a-f]{32})?$");
// A release id: the marker's first line, or its ETag; empty when unknown.
pattern!(RELEASE, "a release id", r"^([A-Za-z0-9][A-Za-z0-9._:+-]{0,127})?$");
// The shrink guard: a percentage, `any` (lifted by request), or empty (none).
pattern!(MAX_SHRINK, "a shrink guard", r"^(any|100|[0-9]{1,2})?$");
// Exact releases: where the wave's manifest is, and its sha256 (each empty
// when the wave has none).
pattern!(MANIFEST_BUCKET, "an S3 bucket name or nothing", r"^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])?$");
pattern!(MANIFEST_REGION, "an AWS region or nothing", r"^([a-z]{2}(-[a-z]+)+-[0-9]{1,2})?$");
pattern!(MANIFEST, "a manifest key", r"^(manifests/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\.jsonl\.gz)?$");
pattern!(SHA256, "a sha256 in hex or nothing", r"^([0-9a-f]{64})?$");
// Rollback and retention: `true` or nothing; how many releases an instance
// keeps; the releases (ids: their manifest's sha256, first 12 digits) it
// keeps whatever their number (each empty: the older behaviour).
pattern!(ROLLBACK, "true or nothing", r"^(true)?$");
pattern!(KEEP_RELEASES, "a number of releases (1 to 99) or nothing", r"^([1-9][0-9]?)?$");
pattern!(KEEP, "up to 20 release ids (12 hex digits), comma-separated", r"^([0-9a-f]{12}(,[0-9a-f]{12}){0,19})?$");
// The release marker, a key relative to the prefix (segments checked apart).
pattern!(MARKER, "a release marker key", r"^[A-Za-z0-9._-][A-Za-z0-9._/-]{0,255}$");

/// Checks a configured value, naming the variable on failure.
pub fn check(var: &'static str, pattern: &Pattern, value: &str) -> Result<(), ConfigError> {
    if pattern.is_match(value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            var,
            reason: format!("expected {} matching {}", pattern.what, pattern.source),
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_refuse_traversal_and_shell_words() {
        for ok in ["/var/www", "/srv/app_1/code", "/a"] {
            assert!(DESTINATION.is_match(ok), "{ok}");
        }
        for bad in
            ["/", "var/www", "/var/www/", "/var/../etc", "/var/./www", "/a b", "/a;b", "/$(id)", "/a\nb", "/a`b`"]
        {
            assert!(!DESTINATION.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn excludes_accept_globs_and_refuse_dot_segments() {
        for ok in ["media/*", "*.log", ".env", "cache/**", "a[0-9]/b?", "uploads/!tmp"] {
            assert!(EXCLUDE.is_match(ok), "{ok}");
        }
        for bad in ["../etc/*", "a/../b", "./x", "a b", "a;b", "a,b", "$HOME", "a\nb", ""] {
            assert!(!EXCLUDE.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_are_empty_or_slash_terminated_segments() {
        for ok in ["", "app/", "releases/web-1.2/"] {
            assert!(PREFIX.is_match(ok), "{ok}");
        }
        for bad in ["app", "/app/", "../app/", "a b/", "a/./"] {
            assert!(!PREFIX.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn excludes_list_is_a_comma_list_of_excludes() {
        for ok in ["", "media/*", "media/*,*.log,.env"] {
            assert!(EXCLUDES.is_match(ok), "{ok}");
        }
        for bad in [",", "media/*,", ",media/*", "media/*,../x", "a b", "a;b"] {
            assert!(!EXCLUDES.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn rate_controls_follow_ssm_spelling() {
        for ok in ["1", "50", "10%", "100%"] {
            assert!(MAX_CONCURRENCY.is_match(ok), "{ok}");
        }
        for bad in ["0", "0%", "101%", "abc", "-1", "5 "] {
            assert!(!MAX_CONCURRENCY.is_match(bad), "{bad:?}");
        }
        for ok in ["0", "3", "0%", "25%", "100%"] {
            assert!(MAX_ERRORS.is_match(ok), "{ok}");
        }
        // Values SSM refuses are refused at init (review L3).
        for bad in ["00", "007", "05%", "101%", "1000%"] {
            assert!(!MAX_ERRORS.is_match(bad), "{bad:?}");
        }
        for bad in ["01", "05%", "007"] {
            assert!(!MAX_CONCURRENCY.is_match(bad), "{bad:?}");
        }
    }
}
