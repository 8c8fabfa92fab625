//! Exact releases: the manifest of the codebase a wave syncs.
//!
//! `aws s3 sync` compares sizes and second-granular timestamps, so a
//! same-size change within the second is never seen, and an object written
//! while a wave runs can leak into its release. With a manifest bucket
//! (`FLEET_MANIFEST_BUCKET`) the winner of a wave lists the codebase once,
//! writes what it found (key, size, ETag, and the `VersionId` on a versioned
//! bucket) as an immutable manifest, and the instances materialize exactly
//! that: each changed key fetched by version id, or by `If-Match` on its
//! ETag (a key rewritten since fails the run; the next wave takes a fresh
//! manifest).
//!
//! The manifest is gzip of JSON lines: a header, then one line per object
//! sorted by key (the contract the document's materializer reads):
//!
//! ```text
//! {"format":"fleetkeeper-manifest/1","bucket":"code","prefix":"app/","versioned":false,"count":2}
//! {"key":"index.php","size":12,"etag":"9e10...","version":null,"modified":1764000000000}
//! ```
//!
//! Its key is content-addressed (`manifests/<fleet>/<sha256>.jsonl.gz`) and
//! written with `If-None-Match: *`: two waves of the same codebase share it,
//! and nothing ever rewrites one. It lives in a stack-owned bucket, never
//! inside the codebase prefix (where writing it would be demand) nor in the
//! served tree.
//!
//! Keys that cannot be a path safely are refused here, listed in the wave
//! record, and never reach an instance (which checks them again).

use std::collections::BTreeMap;
use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::codebase::Excludes;
use crate::config::CodebaseConfig;
use crate::error::AwsError;

/// The manifest format this code writes (the header's `format`).
pub const FORMAT: &str = "fleetkeeper-manifest/1";

/// S3's and Linux's limits a key's path must fit: a segment is a file name.
const MAX_SEGMENT_BYTES: usize = 255;
/// S3's key limit.
const MAX_KEY_BYTES: usize = 1024;
/// Refused keys named in a wave record (the rest are counted).
pub const MAX_REFUSED_LISTED: usize = 50;

/// One object of the codebase, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The key relative to the prefix.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// The ETag, quotes stripped (not an MD5 for multipart or KMS objects).
    pub etag: String,
    /// The version id on a versioned bucket.
    pub version: Option<String>,
    /// `LastModified`, epoch ms.
    pub modified: u64,
}

/// The manifest's first line.
#[derive(Serialize)]
struct Header<'a> {
    format: &'a str,
    bucket: &'a str,
    prefix: &'a str,
    versioned: bool,
    count: usize,
}

/// Why a key cannot be materialized as a path, if it cannot.
pub fn key_problem(relative: &str) -> Option<&'static str> {
    if relative.is_empty() {
        return Some("empty");
    }
    if relative.len() > MAX_KEY_BYTES {
        return Some("longer than 1024 bytes");
    }
    if relative.chars().any(|c| c.is_control()) {
        return Some("a control character");
    }
    if relative.starts_with('/') {
        return Some("a leading /");
    }
    if relative.ends_with('/') {
        return Some("a folder marker (ends in /)");
    }
    if relative.contains("//") {
        return Some("an empty segment (//)");
    }
    for segment in relative.split('/') {
        if segment == "." || segment == ".." {
            return Some("a . or .. segment");
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Some("a segment longer than 255 bytes");
        }
    }
    None
}

/// A key left out of the manifest, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedKey {
    /// The key relative to the prefix, escaped (`{:?}`): never raw control
    /// characters in a log or a record.
    pub key: String,
    /// Why.
    pub why: &'static str,
}

/// A listing sorted and checked: what the manifest holds, what it refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sifted {
    /// Safe keys, sorted by byte order.
    pub entries: Vec<Entry>,
    /// Refused keys.
    pub refused: Vec<RefusedKey>,
}

/// Sorts `entries` by key and refuses the unsafe ones, and both sides of a
/// file/directory collision (`a` and `a/b` cannot both be a path).
pub fn sift(entries: Vec<Entry>) -> Sifted {
    let mut safe: BTreeMap<String, Entry> = BTreeMap::new();
    let mut refused = Vec::new();
    for e in entries {
        match key_problem(&e.key) {
            Some(why) => refused.push(RefusedKey { key: format!("{:?}", e.key), why }),
            None => {
                safe.insert(e.key.clone(), e);
            }
        }
    }
    // The keys under `k/` are contiguous in sorted order, from `k/` on.
    let keys: Vec<String> = safe.keys().cloned().collect();
    let mut colliding = std::collections::BTreeSet::new();
    for k in &keys {
        let dir = format!("{k}/");
        for other in safe.range(dir.clone()..).map(|(o, _)| o).take_while(|o| o.starts_with(&dir)) {
            colliding.insert(k.clone());
            colliding.insert(other.clone());
        }
    }
    for k in colliding {
        safe.remove(&k);
        refused.push(RefusedKey { key: format!("{k:?}"), why: "a file/directory collision" });
    }
    refused.sort_by(|a, b| a.key.cmp(&b.key));
    Sifted { entries: safe.into_values().collect(), refused }
}

/// A manifest, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The gzip bytes.
    pub bytes: Vec<u8>,
    /// Their sha256, hex.
    pub sha256: String,
    /// How many objects it lists.
    pub count: usize,
}

impl Manifest {
    /// Encodes `entries` (sorted and safe: [`sift`]) of `bucket`/`prefix`.
    pub fn encode(bucket: &str, prefix: &str, versioned: bool, entries: &[Entry]) -> Self {
        let header = Header { format: FORMAT, bucket, prefix, versioned, count: entries.len() };
        // (Strings and numbers only: serializing cannot fail.)
        let mut text = serde_json::to_string(&header).unwrap_or_default();
        text.push('\n');
        for e in entries {
            text.push_str(&serde_json::to_string(e).unwrap_or_default());
            text.push('\n');
        }
        // No name or time in the gzip header: equal codebases, equal bytes.
        let mut gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
        // (Writing to a Vec cannot fail.)
        let bytes = gz.write_all(text.as_bytes()).and_then(|()| gz.finish()).unwrap_or_default();
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Manifest { bytes, sha256, count: entries.len() }
    }

    /// Its key in the manifest bucket: `manifests/<fleet>/<sha256>.jsonl.gz`.
    pub fn key(&self, fleet: &str) -> String {
        format!("manifests/{fleet}/{}.jsonl.gz", self.sha256)
    }
}

/// The codebase's digest for the sweep's fingerprint: every (key, ETag,
/// version) listed, so a same-size change within the second is seen (first
/// 8 bytes of a sha256; never 0, which means "no digest").
pub fn digest<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>) -> u64 {
    let mut h = Sha256::new();
    for (key, etag, version) in entries {
        h.update(key.as_bytes());
        h.update([0]);
        h.update(etag.as_bytes());
        h.update([0]);
        h.update(version.unwrap_or_default().as_bytes());
        h.update([b'\n']);
    }
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first).max(1)
}

/// Whether the codebase bucket keeps versions (`Enabled`; `Suspended`
/// writes `null` versions, which only `If-Match` can pin).
pub async fn versioned(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<bool, AwsError> {
    let out = s3
        .get_bucket_versioning()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("GetBucketVersioning", e))?;
    Ok(out.status() == Some(&aws_sdk_s3::types::BucketVersioningStatus::Enabled))
}

fn millis(t: Option<&aws_smithy_types::DateTime>) -> u64 {
    t.and_then(|t| t.to_millis().ok()).and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0)
}

/// Lists the codebase (excluded keys and the prefix's own folder object left
/// out). On a versioned bucket each key's version is the newest one not
/// newer than `not_after` (the release marker's time, in marker mode) or
/// the latest; a key whose chosen version is a delete marker is absent.
pub async fn list(
    s3: &aws_sdk_s3::Client,
    codebase: &CodebaseConfig,
    excludes: &Excludes,
    versioned: bool,
    not_after: Option<u64>,
) -> Result<Vec<Entry>, AwsError> {
    let relative = |key: &str| -> Option<String> {
        let r = key.strip_prefix(codebase.prefix.as_str())?;
        (!r.is_empty() && !excludes.excludes(r)).then(|| r.to_owned())
    };
    let mut out = Vec::new();
    if !versioned {
        let mut pages = s3
            .list_objects_v2()
            .bucket(&codebase.bucket)
            .prefix(&codebase.prefix)
            .into_paginator()
            .page_size(1000)
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListObjectsV2", e))?;
            for o in page.contents() {
                let Some(key) = o.key().and_then(relative) else { continue };
                out.push(Entry {
                    key,
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    etag: o.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    version: None,
                    modified: millis(o.last_modified()),
                });
            }
        }
        return Ok(out);
    }
    // Per key, every version and delete marker listed: (time, latest, the
    // entry or None for a delete marker), in listing order (S3 lists a key's
    // versions newest first; delete markers apart).
    type Candidate = (u64, bool, Option<Entry>);
    let mut listed: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    let mut key_marker: Option<String> = None;
    let mut version_marker: Option<String> = None;
    loop {
        let page = s3
            .list_object_versions()
            .bucket(&codebase.bucket)
            .prefix(&codebase.prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListObjectVersions", e))?;
        for v in page.versions() {
            let Some(key) = v.key().and_then(relative) else { continue };
            let latest = v.is_latest() == Some(true);
            if not_after.is_none() && !latest {
                continue;
            }
            let entry = Entry {
                key: key.clone(),
                size: v.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                etag: v.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                version: v.version_id().map(str::to_owned),
                modified: millis(v.last_modified()),
            };
            listed.entry(key).or_default().push((entry.modified, latest, Some(entry)));
        }
        for m in page.delete_markers() {
            let Some(key) = m.key().and_then(relative) else { continue };
            let latest = m.is_latest() == Some(true);
            if not_after.is_none() && !latest {
                continue;
            }
            listed.entry(key).or_default().push((millis(m.last_modified()), latest, None));
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
        if key_marker.is_none() {
            // A truncated page without a marker cannot be continued: a
            // manifest of part of the codebase would delete the rest.
            return Err(AwsError::timed_out("ListObjectVersions", "a truncated listing without a next key marker"));
        }
    }
    let chosen = listed.into_values().filter_map(|candidates| {
        // The latest, when it is not newer than the marker (exact, whatever
        // the second-granular times say); else the newest one not newer
        // (on a tie in one second, the first listed: a version over a
        // delete marker, whose order S3's two lists do not tell).
        let latest = candidates.iter().find(|(t, latest, _)| *latest && not_after.is_none_or(|n| *t <= n));
        let pick = latest.or_else(|| {
            candidates.iter().filter(|(t, ..)| not_after.is_some_and(|n| *t <= n)).fold(
                None::<&Candidate>,
                |best, c| match best {
                    Some(b) if b.0 >= c.0 => Some(b),
                    _ => Some(c),
                },
            )
        });
        pick.and_then(|(_, _, e)| e.clone())
    });
    out.extend(chosen);
    Ok(out)
}

/// The tag that decides a manifest's expiry: the manifest bucket's lifecycle
/// rule expires objects tagged `false` (written so), never those a fleet
/// keeps as a rollback target (`true`, see [`mark_kept`]).
pub const KEPT_TAG: &str = "fleetkeeper-kept";

/// Tags the manifest `key` as kept (a rollback target: never expired) or
/// not (expired by the bucket's lifecycle rule).
pub async fn mark_kept(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, kept: bool) -> Result<(), AwsError> {
    let tag = aws_sdk_s3::types::Tag::builder()
        .key(KEPT_TAG)
        .value(if kept { "true" } else { "false" })
        .build()
        .map_err(|e| AwsError::construction("PutObjectTagging", e))?;
    let tagging = aws_sdk_s3::types::Tagging::builder()
        .tag_set(tag)
        .build()
        .map_err(|e| AwsError::construction("PutObjectTagging", e))?;
    s3.put_object_tagging()
        .bucket(bucket)
        .key(key)
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("PutObjectTagging", e))?;
    Ok(())
}

/// Writes `manifest` to `bucket` under `key`, never over anything:
/// `If-None-Match: *`. The key is its content's hash, so one already there
/// (a 412) is this manifest.
pub async fn publish(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, manifest: &Manifest) -> Result<(), AwsError> {
    const ATTEMPTS: u32 = 3;
    for attempt in 1..=ATTEMPTS {
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .if_none_match("*")
            .content_type("application/x-ndjson")
            .content_encoding("gzip")
            // Expired by the bucket's lifecycle unless a fleet keeps it.
            .tagging(format!("{KEPT_TAG}=false"))
            .body(ByteStream::from(manifest.bytes.clone()))
            .send()
            .await;
        let Err(e) = put else { return Ok(()) };
        match e.raw_response().map(|r| r.status().as_u16()) {
            Some(412) => return Ok(()),
            // A conditional write racing another one to the same key (S3:
            // 409 ConditionalRequestConflict, "retry the request"): the
            // same bytes, by their hash.
            Some(409) if attempt < ATTEMPTS => {}
            _ => return Err(AwsError::from_sdk("PutObject", e)),
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entry(key: &str) -> Entry {
        Entry { key: key.into(), size: 1, etag: "e".into(), version: None, modified: 0 }
    }

    #[test]
    fn safe_keys_pass() {
        for key in ["index.php", "lib/a.php", ".env.example", "a b/c d.php", "ünïcode/ファイル.txt", "-rf", "$(reboot)"]
        {
            assert_eq!(key_problem(key), None, "{key}");
        }
    }

    #[test]
    fn unsafe_keys_are_refused_with_a_reason() {
        let long = "x".repeat(256);
        let cases = [
            ("", "empty"),
            ("../etc/passwd", "a . or .. segment"),
            ("a/../b", "a . or .. segment"),
            ("a/./b", "a . or .. segment"),
            (".", "a . or .. segment"),
            ("/abs", "a leading /"),
            ("a//b", "an empty segment (//)"),
            ("dir/", "a folder marker (ends in /)"),
            ("line1\nline2", "a control character"),
            ("cr\r", "a control character"),
            ("nul\0", "a control character"),
            ("del\u{7f}", "a control character"),
            (long.as_str(), "a segment longer than 255 bytes"),
        ];
        for (key, why) in cases {
            assert_eq!(key_problem(key), Some(why), "{key:?}");
        }
        assert_eq!(key_problem(&"a/".repeat(600)), Some("longer than 1024 bytes"));
        assert_eq!(key_problem(&format!("{}/x", "é".repeat(128))), Some("a segment longer than 255 bytes"));
    }

    #[test]
    fn the_hostile_key_corpus_is_refused_or_harmless() {
        // The fixture's keys (events/hostile-s3-keys.json), decoded.
        let corpus = ["$(reboot); rm -rf /`id`.php", "line1\nline2\r\0.php", "../../etc/passwd", "%{{destination}}%ZZ"];
        let sifted = sift(corpus.iter().map(|k| entry(k)).collect());
        let kept: Vec<&str> = sifted.entries.iter().map(|e| e.key.as_str()).collect();
        // Shell metacharacters are harmless as a path: the key is never a shell word.
        assert_eq!(kept, ["$(reboot); rm -rf /`id`.php", "%{{destination}}%ZZ"]);
        assert_eq!(sifted.refused.len(), 2);
        assert!(sifted.refused.iter().all(|r| !r.key.contains('\n') && !r.key.contains('\0')), "{:?}", sifted.refused);
    }

    #[test]
    fn a_file_directory_collision_refuses_both_sides() {
        let sifted = sift(vec![entry("a/b/c"), entry("a"), entry("a.txt"), entry("a/b"), entry("z")]);
        let kept: Vec<&str> = sifted.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(kept, ["a.txt", "z"]);
        let refused: Vec<&str> = sifted.refused.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(refused, ["\"a\"", "\"a/b\"", "\"a/b/c\""]);
    }

    #[test]
    fn entries_are_sorted_by_byte_order() {
        let sifted = sift(vec![entry("b"), entry("B"), entry("a-1"), entry("a/1"), entry("a")]);
        let kept: Vec<&str> = sifted.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(kept, ["B", "a-1", "b"], "a and a/1 collide");
    }

    fn decode(m: &Manifest) -> Vec<serde_json::Value> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(m.bytes.as_slice()).read_to_string(&mut text).expect("gzip");
        text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    }

    #[test]
    fn the_manifest_is_a_header_then_one_line_per_object() {
        let entries = vec![
            Entry { key: "index.php".into(), size: 12, etag: "abc".into(), version: None, modified: 5 },
            Entry { key: "lib/a.php".into(), size: 3, etag: "def-2".into(), version: Some("v1".into()), modified: 6 },
        ];
        let m = Manifest::encode("code", "app/", true, &entries);
        let lines = decode(&m);
        assert_eq!(
            lines[0],
            serde_json::json!({"format": FORMAT, "bucket": "code", "prefix": "app/", "versioned": true, "count": 2})
        );
        assert_eq!(
            lines[1],
            serde_json::json!({"key": "index.php", "size": 12, "etag": "abc", "version": null, "modified": 5})
        );
        assert_eq!(lines[2]["version"], "v1");
        assert_eq!(m.count, 2);
        assert_eq!(m.sha256, hex::encode(Sha256::digest(&m.bytes)));
        assert_eq!(m.key("web"), format!("manifests/web/{}.jsonl.gz", m.sha256));
    }

    #[test]
    fn equal_codebases_make_equal_manifests_and_any_change_another() {
        let a = vec![entry("a"), entry("b")];
        assert_eq!(Manifest::encode("c", "", false, &a), Manifest::encode("c", "", false, &a));
        let mut b = a.clone();
        b[1].etag = "f".into();
        assert_ne!(Manifest::encode("c", "", false, &a).sha256, Manifest::encode("c", "", false, &b).sha256);
    }

    fn codebase() -> CodebaseConfig {
        CodebaseConfig {
            bucket: "code".into(),
            prefix: "app/".into(),
            excludes: vec![],
            destination: Some("/var/www".into()),
            document: Some("doc".into()),
            region: None,
        }
    }

    fn at(ms: i64) -> aws_smithy_types::DateTime {
        aws_smithy_types::DateTime::from_millis(ms)
    }

    fn version(key: &str, id: &str, ms: i64, latest: bool) -> aws_sdk_s3::types::ObjectVersion {
        aws_sdk_s3::types::ObjectVersion::builder()
            .key(format!("app/{key}"))
            .version_id(id)
            .e_tag(format!("\"{id}\""))
            .size(1)
            .last_modified(at(ms))
            .is_latest(latest)
            .build()
    }

    fn marker(key: &str, ms: i64, latest: bool) -> aws_sdk_s3::types::DeleteMarkerEntry {
        aws_sdk_s3::types::DeleteMarkerEntry::builder()
            .key(format!("app/{key}"))
            .version_id("dm")
            .last_modified(at(ms))
            .is_latest(latest)
            .build()
    }

    /// An S3 client answering ListObjectVersions with `page`, truncated or not.
    fn listing(
        versions: Vec<aws_sdk_s3::types::ObjectVersion>,
        markers: Vec<aws_sdk_s3::types::DeleteMarkerEntry>,
        truncated: bool,
    ) -> aws_sdk_s3::Client {
        let rule = aws_smithy_mocks::mock!(aws_sdk_s3::Client::list_object_versions).then_output(move || {
            aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder()
                .set_versions(Some(versions.clone()))
                .set_delete_markers(Some(markers.clone()))
                .is_truncated(truncated)
                .build()
        });
        aws_smithy_mocks::mock_client!(aws_sdk_s3, aws_smithy_mocks::RuleMode::MatchAny, &[rule])
    }

    fn chosen(entries: &[Entry]) -> Vec<(String, String)> {
        entries.iter().map(|e| (e.key.clone(), e.version.clone().unwrap_or_default())).collect()
    }

    #[tokio::test]
    async fn a_versioned_listing_takes_the_latest_versions() {
        let s3 = listing(
            vec![
                version("a.php", "a2", 5_000, true),
                version("a.php", "a1", 1_000, false),
                version("b.php", "b1", 1_000, false),
            ],
            vec![marker("b.php", 4_000, true)],
            false,
        );
        let none = Excludes::new(&[]).expect("globs");
        let got = list(&s3, &codebase(), &none, true, None).await.expect("listed");
        assert_eq!(chosen(&got), [("a.php".to_owned(), "a2".to_owned())], "b.php is deleted");
    }

    #[tokio::test]
    async fn with_a_marker_each_key_is_its_newest_version_not_newer_than_the_marker() {
        let s3 = listing(
            vec![
                // Rewritten after the marker: its version at the marker's time.
                version("a.php", "a2", 9_000, true),
                version("a.php", "a1", 2_000, false),
                // Latest, in the marker's second: taken, whatever the ms say.
                version("b.php", "b1", 5_000, true),
                // Created after the marker: absent.
                version("c.php", "c1", 9_000, true),
                // Deleted before the marker: absent; deleted after: present.
                version("d.php", "d1", 1_000, false),
                version("e.php", "e1", 1_000, false),
            ],
            vec![marker("d.php", 3_000, true), marker("e.php", 9_000, true)],
            false,
        );
        let none = Excludes::new(&[]).expect("globs");
        let got = list(&s3, &codebase(), &none, true, Some(5_000)).await.expect("listed");
        let want = [("a.php", "a1"), ("b.php", "b1"), ("e.php", "e1")];
        assert_eq!(chosen(&got), want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }

    #[tokio::test]
    async fn a_truncated_listing_without_a_marker_is_an_error_never_a_partial_manifest() {
        let s3 = listing(vec![version("a.php", "a1", 1_000, true)], vec![], true);
        let none = Excludes::new(&[]).expect("globs");
        assert!(list(&s3, &codebase(), &none, true, None).await.is_err());
    }

    #[test]
    fn the_digest_sees_a_same_size_same_second_change() {
        let d = |etag: &str| digest([("a.php", etag, None), ("b.php", "x", None)]);
        assert_ne!(d("111"), d("222"));
        assert_eq!(d("111"), d("111"));
        assert_ne!(digest([("a", "e", Some("v1"))]), digest([("a", "e", Some("v2"))]), "a version counts");
        assert_ne!(digest([("ab", "", None)]), digest([("a", "b", None)]), "fields are separated");
        assert_ne!(digest(std::iter::empty()), 0, "0 means no digest");
    }
}
