//! Which S3 changes count, and the codebase's cheap fingerprint.
//!
//! A key counts when it is in `FLEET_CODEBASE_BUCKET`, under
//! `FLEET_CODEBASE_PREFIX`, and matches none of `FLEET_SYNC_EXCLUDES`
//! (`aws s3 sync --exclude` semantics, relative to the prefix: `*` crosses
//! `/`). The fingerprint (object count, newest `LastModified`, excluded keys
//! left out) lets the sweep notice a change whose event was lost.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::state::Fingerprint;
use crate::config::CodebaseConfig;
use crate::error::AwsError;
use crate::events::{S3Change, Skip, SkipReason};

/// The exclude globs, compiled.
#[derive(Debug, Clone)]
pub struct Excludes {
    set: GlobSet,
}

impl Excludes {
    /// Compiles `FLEET_SYNC_EXCLUDES` (already checked against its pattern).
    pub fn new(globs: &[String]) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for g in globs {
            // `aws s3 sync` globs: `*` crosses `/`, `?` one character,
            // `[...]` a class. (`{a,b}` cannot occur: the pattern refuses braces.)
            builder.add(GlobBuilder::new(g).literal_separator(false).backslash_escape(false).build()?);
        }
        Ok(Excludes { set: builder.build()? })
    }

    /// Whether `relative` (a key relative to the prefix) is excluded.
    pub fn excludes(&self, relative: &str) -> bool {
        self.set.is_match(relative)
    }
}

/// Whether an S3 change counts as demand, or why not.
pub fn relevance(change: &S3Change, codebase: &CodebaseConfig, excludes: &Excludes) -> Result<(), Skip> {
    if change.bucket != codebase.bucket {
        return Err(Skip::new(
            SkipReason::NotManaged,
            format!("bucket {:?} is not the codebase bucket", change.bucket),
        ));
    }
    let Some(relative) = change.key.strip_prefix(codebase.prefix.as_str()) else {
        return Err(Skip::new(SkipReason::NotManaged, "key outside the codebase prefix"));
    };
    if relative.is_empty() {
        // The "folder" object of the prefix itself.
        return Err(Skip::new(SkipReason::NotManaged, "the prefix itself"));
    }
    if excludes.excludes(relative) {
        return Err(Skip::new(SkipReason::NotManaged, "excluded key"));
    }
    Ok(())
}

/// Lists the prefix and fingerprints it (excluded keys left out).
pub async fn fingerprint(
    s3: &aws_sdk_s3::Client,
    codebase: &CodebaseConfig,
    excludes: &Excludes,
) -> Result<Fingerprint, AwsError> {
    let mut pages =
        s3.list_objects_v2().bucket(&codebase.bucket).prefix(&codebase.prefix).into_paginator().page_size(1000).send();
    let mut fp = Fingerprint { count: 0, newest_ms: 0 };
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ListObjectsV2", e))?;
        for object in page.contents() {
            let key = object.key().unwrap_or_default();
            let relative = key.strip_prefix(codebase.prefix.as_str()).unwrap_or(key);
            if relative.is_empty() || excludes.excludes(relative) {
                continue;
            }
            fp.count += 1;
            let modified = object.last_modified().map(|t| t.to_millis().unwrap_or(0)).unwrap_or(0);
            fp.newest_ms = fp.newest_ms.max(u64::try_from(modified).unwrap_or(0));
        }
    }
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::S3ChangeKind;

    fn codebase(prefix: &str, excludes: &[&str]) -> CodebaseConfig {
        CodebaseConfig {
            bucket: "code".into(),
            prefix: prefix.into(),
            excludes: excludes.iter().map(|s| (*s).to_owned()).collect(),
            destination: Some("/var/www".into()),
            document: Some("doc".into()),
            region: None,
        }
    }

    fn change(bucket: &str, key: &str) -> S3Change {
        S3Change { bucket: bucket.into(), key: key.into(), change: S3ChangeKind::Created, sequencer: None }
    }

    fn verdict(c: &CodebaseConfig, bucket: &str, key: &str) -> bool {
        relevance(&change(bucket, key), c, &Excludes::new(&c.excludes).expect("globs")).is_ok()
    }

    #[test]
    fn keys_count_in_the_bucket_under_the_prefix_unless_excluded() {
        let c = codebase("app/", &["media/*", "*.log", ".env"]);
        let table = [
            ("code", "app/index.php", true),
            ("code", "app/lib/deep/x.php", true),
            ("other", "app/index.php", false),
            ("code", "application/index.php", false),
            ("code", "index.php", false),
            ("code", "app/", false),
            ("code", "app/media/a/b.jpg", false),
            ("code", "app/media.php", true),
            ("code", "app/logs/deep/x.log", false),
            ("code", "app/.env", false),
            ("code", "app/config/.env", true),
        ];
        for (bucket, key, counts) in table {
            assert_eq!(verdict(&c, bucket, key), counts, "{bucket}/{key}");
        }
    }

    #[test]
    fn whole_bucket_codebase() {
        let c = codebase("", &["tmp/*"]);
        assert!(verdict(&c, "code", "index.php"));
        assert!(!verdict(&c, "code", "tmp/x"));
    }

    #[test]
    fn hostile_keys_are_only_compared() {
        let c = codebase("app/", &[]);
        assert!(verdict(&c, "code", "app/$(reboot); rm -rf /`id`.php"));
        assert!(!verdict(&c, "code", "../app/x"));
    }
}
