//! Which S3 changes count, and the codebase's cheap fingerprint.
//!
//! A key counts when it is in `FLEET_CODEBASE_BUCKET`, under
//! `FLEET_CODEBASE_PREFIX`, and matches none of `FLEET_SYNC_EXCLUDES`
//! (`aws s3 sync --exclude` semantics, relative to the prefix: `*` crosses
//! `/`). The fingerprint (object count, newest `LastModified`, excluded keys
//! left out) lets the sweep notice a change whose event was lost.
//!
//! In release-marker mode (`FLEET_RELEASE_MARKER`) only a new or rewritten
//! marker counts; everything else waits for it. The fingerprint is then the
//! marker's own (present, `LastModified`), and the marker's content names
//! the release.

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

/// In release-marker mode, whether a relevant change is the marker being
/// written, or why it waits.
pub fn marker_relevance(change: &S3Change, marker_key: &str) -> Result<(), Skip> {
    if change.key != marker_key {
        return Err(Skip::new(SkipReason::AwaitingReleaseMarker, "a codebase change: waiting for the release marker"));
    }
    if change.change == crate::events::S3ChangeKind::Removed {
        return Err(Skip::new(SkipReason::AwaitingReleaseMarker, "the release marker was removed: nothing to release"));
    }
    Ok(())
}

/// Whether an S3 answer about the marker means it is absent. S3 answers a
/// missing key with 404 only to a caller allowed `s3:ListBucket` on it; the
/// functions' `ListBucket` grant is conditioned on `s3:prefix`, which a
/// `HeadObject` or `GetObject` request does not carry, so on AWS a missing
/// marker is a 403 (S3 API reference, HeadObject: "If you don't have the
/// s3:ListBucket permission, Amazon S3 returns an HTTP status code 403").
/// A 403 is taken as absent, and logged: a role that truly may not read the
/// marker looks the same, and the warning says so.
fn marker_absent<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    key: &str,
) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    let aws_sdk_s3::error::SdkError::ServiceError(ctx) = e else { return false };
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = ctx.err().code().unwrap_or_default();
    let missing = matches!(code, "NoSuchKey" | "NotFound") || status == Some(404);
    if !missing && status == Some(403) {
        tracing::warn!(
            key,
            "the release marker answered 403: it does not exist yet (S3 says 403 for a missing key to a role \
             without s3:ListBucket on it), or the role may not read it (s3:GetObject on the marker)"
        );
        return true;
    }
    missing
}

/// The release marker's fingerprint: 1 and its `LastModified` when present,
/// `0, 0` when absent.
pub async fn marker_fingerprint(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Fingerprint, AwsError> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => {
            let modified = head.last_modified().map(|t| t.to_millis().unwrap_or(0)).unwrap_or(0);
            Ok(Fingerprint { count: 1, newest_ms: u64::try_from(modified).unwrap_or(0) })
        }
        Err(e) if marker_absent(&e, key) => Ok(Fingerprint { count: 0, newest_ms: 0 }),
        Err(e) => Err(AwsError::from_sdk("HeadObject", e)),
    }
}

/// How much of the marker is read: its first line names the release.
const MARKER_READ_BYTES: u64 = 1024;

/// The release the marker names: its first line when it is a release id
/// (`params::RELEASE`: letters, digits, `._:+-`, at most 128), else its
/// ETag; `None` when there is no marker.
pub async fn release_id(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<String>, AwsError> {
    let object = match s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes=0-{}", MARKER_READ_BYTES - 1))
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if marker_absent(&e, key) => return Ok(None),
        Err(e) => return Err(AwsError::from_sdk("GetObject", e)),
    };
    let etag = object.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    let body = object.body.collect().await.map(|b| b.into_bytes()).unwrap_or_default();
    Ok(Some(release_from(&body, &etag)))
}

/// The release id of a marker with `body` (its first bytes) and `etag`.
pub fn release_from(body: &[u8], etag: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let first = text.lines().next().unwrap_or_default().trim();
    if !first.is_empty() && crate::params::RELEASE.is_match(first) {
        return first.to_owned();
    }
    if !etag.is_empty() && crate::params::RELEASE.is_match(etag) {
        return etag.to_owned();
    }
    // (An ETag is hex, `-N` for a multipart upload: always a release id.)
    "unnamed".to_owned()
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
        S3Change {
            bucket: bucket.into(),
            key: key.into(),
            change: S3ChangeKind::Created,
            sequencer: None,
            time_ms: None,
        }
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

    #[test]
    fn in_marker_mode_only_the_marker_being_written_counts() {
        let mut c = change("code", "app/.release");
        assert_eq!(marker_relevance(&c, "app/.release"), Ok(()));
        c.change = S3ChangeKind::Removed;
        assert_eq!(marker_relevance(&c, "app/.release").map_err(|s| s.reason), Err(SkipReason::AwaitingReleaseMarker));
        let other = change("code", "app/index.php");
        assert_eq!(
            marker_relevance(&other, "app/.release").map_err(|s| s.reason),
            Err(SkipReason::AwaitingReleaseMarker)
        );
    }

    #[test]
    fn the_release_is_the_markers_first_line_when_it_is_an_id_else_its_etag() {
        assert_eq!(release_from(b"v2026.11.27-1\nbuilt by ci\n", "abc"), "v2026.11.27-1");
        assert_eq!(release_from(b"  1.2.3+build:7 \r\n", "abc"), "1.2.3+build:7");
        for hostile in [&b"x; reboot"[..], b"$(id)", b"", b"\n", b"../etc", &[b'a'; 200][..], b"\xff\xfe"] {
            assert_eq!(release_from(hostile, "9b2cf535f27731c974343645a3985328"), "9b2cf535f27731c974343645a3985328");
        }
        assert_eq!(release_from(b"", "d41d8cd98f00b204e9800998ecf8427e-3"), "d41d8cd98f00b204e9800998ecf8427e-3");
        assert_eq!(release_from(b"", ""), "unnamed");
    }

    /// A client of S3 whose answers are `rules` (mocks: moto answers a
    /// missing key with 404 whatever the caller may list; AWS does not).
    fn s3_answering(rules: &[aws_smithy_mocks::Rule]) -> aws_sdk_s3::Client {
        aws_smithy_mocks::mock_client!(aws_sdk_s3, aws_smithy_mocks::RuleMode::MatchAny, rules)
    }

    fn status(code: u16) -> aws_smithy_runtime_api::client::orchestrator::HttpResponse {
        aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(code).expect("status"),
            aws_smithy_types::body::SdkBody::from(""),
        )
    }

    #[tokio::test]
    async fn a_missing_marker_is_absent_though_aws_answers_403_without_list_permission() {
        let head = aws_smithy_mocks::mock!(aws_sdk_s3::Client::head_object).then_http_response(|| status(403));
        let get = aws_smithy_mocks::mock!(aws_sdk_s3::Client::get_object).then_http_response(|| status(403));
        let s3 = s3_answering(&[head, get]);
        let fp = marker_fingerprint(&s3, "code", "app/.release").await.expect("absent, not an error");
        assert_eq!(fp, Fingerprint { count: 0, newest_ms: 0 });
        assert_eq!(release_id(&s3, "code", "app/.release").await.expect("absent"), None);
        let head = aws_smithy_mocks::mock!(aws_sdk_s3::Client::head_object).then_http_response(|| status(404));
        let s3 = s3_answering(&[head]);
        assert_eq!(marker_fingerprint(&s3, "code", "app/.release").await.expect("absent").count, 0);
    }

    #[tokio::test]
    async fn another_error_on_the_marker_is_an_error() {
        let head = aws_smithy_mocks::mock!(aws_sdk_s3::Client::head_object).then_http_response(|| status(500));
        let s3 = s3_answering(&[head]);
        assert!(marker_fingerprint(&s3, "code", "app/.release").await.is_err());
    }
}
