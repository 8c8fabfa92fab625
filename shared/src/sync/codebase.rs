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

/// The release marker as a listing of its own key shows it: `LastModified`
/// and ETag, `None` when absent. A listing, not `HeadObject`: S3 answers a
/// missing key with 404 only to a caller allowed `s3:ListBucket` there, and
/// the functions' grant is conditioned on `s3:prefix`, which `HeadObject` does
/// not carry (S3 API reference, HeadObject: "If you don't have the
/// s3:ListBucket permission, Amazon S3 returns an HTTP status code 403"), so
/// a 403 could not tell "absent" from "not allowed". A listing with the
/// marker as prefix is within the grant and says which.
async fn marker_listed(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<(u64, String)>, AwsError> {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(key)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ListObjectsV2", e))?;
    Ok(listed.contents().iter().find(|o| o.key() == Some(key)).map(|o| {
        let modified = o.last_modified().map(|t| t.to_millis().unwrap_or(0)).unwrap_or(0);
        (u64::try_from(modified).unwrap_or(0), o.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }))
}

/// The release marker's fingerprint: 1 and its `LastModified` when present,
/// `0, 0` when absent.
pub async fn marker_fingerprint(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Fingerprint, AwsError> {
    Ok(match marker_listed(s3, bucket, key).await? {
        Some((newest_ms, etag)) => {
            // Its time is in the digest: rewriting the marker with the same
            // content is a release too.
            let at = newest_ms.to_string();
            Fingerprint {
                count: 1,
                newest_ms,
                digest: super::manifest::digest([(key, etag.as_str(), Some(at.as_str()))]),
            }
        }
        None => Fingerprint { count: 0, newest_ms: 0, digest: 0 },
    })
}

/// How much of the marker is read: its first line names the release.
const MARKER_READ_BYTES: u64 = 1024;

/// The release marker, as read by a wave's winner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The release it names.
    pub release: String,
    /// Its `LastModified` as listed, epoch ms: on a versioned bucket the
    /// release is the versions not newer than it.
    pub modified_ms: u64,
}

/// The release the marker names: its first line when it is a release id
/// (`params::RELEASE`: letters, digits, `._:+-`, at most 128), else its
/// ETag; `None` when there is no marker.
pub async fn release_id(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<Marker>, AwsError> {
    let Some((modified_ms, _)) = marker_listed(s3, bucket, key).await? else {
        return Ok(None);
    };
    let range = format!("bytes=0-{}", MARKER_READ_BYTES - 1);
    let object = match s3.get_object().bucket(bucket).key(key).range(range).send().await {
        Ok(o) => o,
        // Removed since it was listed (a 403 on AWS, see above: a second
        // listing tells).
        Err(e) if marker_listed(s3, bucket, key).await?.is_none() => {
            tracing::info!(key, error = %AwsError::from_sdk("GetObject", e), "the release marker went away while read");
            return Ok(None);
        }
        Err(e) => return Err(AwsError::from_sdk("GetObject", e)),
    };
    let etag = object.e_tag().unwrap_or_default().trim_matches('"').to_owned();
    let body = object.body.collect().await.map(|b| b.into_bytes()).unwrap_or_default();
    Ok(Some(Marker { release: release_from(&body, &etag), modified_ms }))
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
    Ok(fingerprint_of(&super::manifest::list(s3, codebase, excludes, false, None).await?))
}

/// The fingerprint of a listing: versions left out, so a manifest's listing
/// of a versioned bucket and the sweep's plain one agree.
pub fn fingerprint_of(entries: &[super::manifest::Entry]) -> Fingerprint {
    let mut sorted: Vec<&super::manifest::Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    Fingerprint {
        count: sorted.len() as u64,
        newest_ms: sorted.iter().map(|e| e.modified).max().unwrap_or(0),
        digest: if sorted.is_empty() {
            0
        } else {
            super::manifest::digest(sorted.iter().map(|e| (e.key.as_str(), e.etag.as_str(), None)))
        },
    }
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

    fn listing(keys: &[&str]) -> aws_smithy_mocks::Rule {
        let objects: Vec<aws_sdk_s3::types::Object> =
            keys.iter().map(|k| aws_sdk_s3::types::Object::builder().key(*k).e_tag("\"abc\"").build()).collect();
        aws_smithy_mocks::mock!(aws_sdk_s3::Client::list_objects_v2).then_output(move || {
            aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder()
                .set_contents(Some(objects.clone()))
                .build()
        })
    }

    #[tokio::test]
    async fn a_marker_rewritten_with_the_same_content_is_a_new_fingerprint() {
        let at = |ms: i64| {
            let marker = aws_sdk_s3::types::Object::builder()
                .key("app/.release")
                .e_tag("\"same\"")
                .last_modified(aws_smithy_types::DateTime::from_millis(ms))
                .build();
            let rule = aws_smithy_mocks::mock!(aws_sdk_s3::Client::list_objects_v2).then_output(move || {
                aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder().contents(marker.clone()).build()
            });
            s3_answering(&[rule])
        };
        let first = marker_fingerprint(&at(1_000), "code", "app/.release").await.expect("listed");
        let again = marker_fingerprint(&at(9_000), "code", "app/.release").await.expect("listed");
        assert!(!first.same_codebase(&again), "touching the marker is a release: {first:?} {again:?}");
        assert!(first.same_codebase(&first));
    }

    #[tokio::test]
    async fn a_missing_marker_is_told_by_a_listing_never_by_a_403() {
        // `app/.release-old` shares the prefix: only the exact key counts.
        let get = aws_smithy_mocks::mock!(aws_sdk_s3::Client::get_object).then_http_response(|| status(403));
        let s3 = s3_answering(&[listing(&["app/.release-old"]), get]);
        let fp = marker_fingerprint(&s3, "code", "app/.release").await.expect("absent, not an error");
        assert_eq!(fp, Fingerprint { count: 0, newest_ms: 0, digest: 0 });
        assert_eq!(release_id(&s3, "code", "app/.release").await.expect("absent"), None, "not even read");
    }

    #[tokio::test]
    async fn a_marker_that_is_listed_but_not_readable_is_an_error() {
        let get = aws_smithy_mocks::mock!(aws_sdk_s3::Client::get_object).then_http_response(|| status(403));
        let s3 = s3_answering(&[listing(&["app/.release"]), get]);
        assert_eq!(marker_fingerprint(&s3, "code", "app/.release").await.expect("listed").count, 1);
        assert!(release_id(&s3, "code", "app/.release").await.is_err(), "a real AccessDenied is loud");
    }
}
