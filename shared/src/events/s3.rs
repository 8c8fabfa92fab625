//! S3 object events. Notification records carry form-encoded keys (`+` for a
//! space, `%2F` may or may not appear for `/`): they are decoded here.
//! EventBridge carries the key raw: it is never decoded.
//!
//! The key is data. It is compared with the configured prefix and excludes
//! and counted; it never reaches a command.

use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value;

use super::{Event, SkipReason, str_field};

/// Whether an object appeared or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum S3ChangeKind {
    /// `ObjectCreated:*` / `Object Created`.
    Created,
    /// `ObjectRemoved:*`, `LifecycleExpiration:Delete*` / `Object Deleted`.
    Removed,
}

/// An object created or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Change {
    /// The bucket.
    pub bucket: String,
    /// The key, decoded.
    pub key: String,
    /// Created or removed.
    pub change: S3ChangeKind,
    /// The sequencer, when sent (orders events of one key).
    pub sequencer: Option<String>,
    /// When S3 made the change, epoch ms, as the event says (a notification
    /// record's `eventTime`, milliseconds; an EventBridge event's `time`,
    /// whole seconds, taken as the end of its second so that a quiet period
    /// measured from it is never short).
    pub time_ms: Option<u64>,
}

/// An ISO 8601 event time as epoch ms.
fn event_time_ms(time: &str) -> Option<u64> {
    use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
    let t = DateTime::from_str(time, DateTimeFormat::DateTime).ok()?;
    u64::try_from(t.to_millis().ok()?).ok()
}

/// `s3:TestEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3TestEvent {
    /// The bucket, when given.
    pub bucket: Option<String>,
}

/// Decodes a notification key: form encoding, so `+` is a space and `%XX` a
/// byte. A key whose bytes are not UTF-8 (only a forged event can send one)
/// is decoded lossily rather than dropped: dropping it could lose a sync.
pub fn decode_notification_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

pub(super) fn from_notification_record(record: &Value) -> Event {
    let Some(name) = str_field(record, "eventName") else {
        return Event::skipped(SkipReason::Malformed, "S3 record without eventName");
    };
    let change = match name.split(':').next() {
        Some("ObjectCreated") => S3ChangeKind::Created,
        Some("ObjectRemoved") => S3ChangeKind::Removed,
        Some("LifecycleExpiration") if name.starts_with("LifecycleExpiration:Delete") => S3ChangeKind::Removed,
        _ => return Event::skipped(SkipReason::NotAContentChange, format!("S3 event {}", short(&name))),
    };
    let s3 = record.get("s3");
    let bucket = s3.and_then(|s| s.get("bucket")).and_then(|b| str_field(b, "name"));
    let object = s3.and_then(|s| s.get("object"));
    let key = object.and_then(|o| o.get("key")).and_then(Value::as_str);
    match (bucket, key) {
        (Some(bucket), Some(key)) if !key.is_empty() => Event::S3(S3Change {
            bucket,
            key: decode_notification_key(key),
            change,
            sequencer: object.and_then(|o| str_field(o, "sequencer")),
            time_ms: str_field(record, "eventTime").and_then(|t| event_time_ms(&t)),
        }),
        _ => Event::skipped(SkipReason::Malformed, "S3 record without bucket or key"),
    }
}

pub(super) fn from_eventbridge(detail_type: &str, detail: &Value, time_ms: Option<u64>) -> Event {
    let change = match detail_type {
        "Object Created" => S3ChangeKind::Created,
        "Object Deleted" => S3ChangeKind::Removed,
        other => return Event::skipped(SkipReason::NotAContentChange, format!("S3 event {}", short(other))),
    };
    let bucket = detail.get("bucket").and_then(|b| str_field(b, "name"));
    let object = detail.get("object");
    let key = object.and_then(|o| o.get("key")).and_then(Value::as_str);
    match (bucket, key) {
        (Some(bucket), Some(key)) if !key.is_empty() => Event::S3(S3Change {
            bucket,
            // EventBridge sends the key as stored: decoding it would turn a
            // literal `+` or `%41` in a key name into something else.
            key: key.to_owned(),
            change,
            sequencer: object.and_then(|o| str_field(o, "sequencer")),
            // EventBridge times are whole seconds: the change happened
            // within that second, so its end bounds it from above.
            time_ms: time_ms.map(|t| t - t % 1000 + 999),
        }),
        _ => Event::skipped(SkipReason::Malformed, "S3 EventBridge detail without bucket or key"),
    }
}

pub(super) fn test_event(body: &Value) -> Event {
    Event::S3Test(S3TestEvent { bucket: str_field(body, "Bucket") })
}

fn short(s: &str) -> String {
    let mut s = format!("{s:?}");
    super::truncate(&mut s, 64);
    s
}
