//! Typed envelopes for everything fleetkeeper receives.
//!
//! One invocation payload becomes a list of [`Received`] items, each one
//! [`Event`] plus how it was delivered. Shapes, as AWS sends them:
//!
//! | payload | becomes |
//! |---|---|
//! | S3 notification `Records` (keys form-encoded: decoded) | [`Event::S3`] per record |
//! | EventBridge `aws.s3` `Object Created` / `Object Deleted` (raw keys: never decoded) | [`Event::S3`] |
//! | EventBridge `aws.autoscaling` lifecycle action | [`Event::Lifecycle`] |
//! | EventBridge `aws.autoscaling`, anything else (launch successful, ...) | [`Event::AutoScaling`] |
//! | EventBridge `aws.ssm` command / invocation status change | [`Event::CommandStatus`] / [`Event::InvocationStatus`] |
//! | EventBridge `Scheduled Event` | [`Event::Scheduled`] |
//! | `{"action": ...}` | [`Event::Manual`] |
//! | SQS `Records` whose bodies hold any of the above, an ASG hook message, `autoscaling:TEST_NOTIFICATION`, `s3:TestEvent`, or an SNS notification wrapping them | the same, `via` SQS |
//!
//! Anything else, and anything malformed, is an [`Event::Skipped`] with a
//! reason: never a panic, never an error (a retry would only repeat it).

mod autoscaling;
mod manual;
mod s3;
mod ssm;

use serde::Serialize;
use serde_json::Value;

pub use autoscaling::{AutoScalingNotice, LifecycleAction, LifecycleTestNotification, Place, Transition};
pub use manual::{ManualAction, ManualRequest};
pub use s3::{S3Change, S3ChangeKind, S3TestEvent};
pub use ssm::{CommandStatus, CommandStatusChange, InvocationStatusChange};

/// How an event reached the function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Via {
    /// Invoked with the event itself (S3 notification, EventBridge rule, manual).
    Direct,
    /// In the body of an SQS message.
    Sqs {
        /// The SQS message id (for partial batch responses and logs).
        message_id: Option<String>,
    },
}

/// One event of an invocation, with its delivery path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Received {
    /// How it arrived.
    #[serde(flatten)]
    pub via: Via,
    /// What it says.
    pub event: Event,
}

/// Everything fleetkeeper understands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// An Auto Scaling lifecycle action (launch or terminate).
    Lifecycle(LifecycleAction),
    /// `autoscaling:TEST_NOTIFICATION`, sent to SQS hook targets on creation.
    LifecycleTest(LifecycleTestNotification),
    /// Any other `aws.autoscaling` event.
    AutoScaling(AutoScalingNotice),
    /// An object created or removed.
    S3(S3Change),
    /// `s3:TestEvent`, sent when a notification configuration is saved.
    S3Test(S3TestEvent),
    /// "EC2 Command Status-change Notification".
    CommandStatus(CommandStatusChange),
    /// "EC2 Command Invocation Status-change Notification".
    InvocationStatus(InvocationStatusChange),
    /// An EventBridge schedule fired.
    Scheduled(ScheduledEvent),
    /// A manual `{"action": ...}` payload.
    Manual(ManualRequest),
    /// Not understood, malformed, or not a content change: logged and skipped.
    Skipped(Skip),
}

/// An EventBridge scheduled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledEvent {
    /// The rule or schedule ARN, when given.
    pub rule: Option<String>,
    /// The event time as sent.
    pub time: Option<String>,
}

/// Why an event was skipped. The detail never carries a whole event, only a
/// short, escaped description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// A stable reason code.
    pub reason: SkipReason,
    /// A short human description.
    pub detail: String,
}

/// Stable reason codes of a [`Skip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The payload has no shape fleetkeeper knows.
    UnknownShape,
    /// A known shape with missing or mistyped fields.
    Malformed,
    /// An S3 event that is neither a creation nor a removal.
    NotAContentChange,
    /// An event for a group, hook, bucket or document fleetkeeper does not manage.
    NotManaged,
    /// A well-formed event this function does not handle.
    NotForThisFunction,
    /// A test notification.
    TestNotification,
    /// A manual action this function does not know.
    UnknownAction,
    /// A codebase change in release-marker mode that is not the marker: it
    /// waits for the marker (`FLEET_RELEASE_MARKER`).
    AwaitingReleaseMarker,
}

impl Skip {
    /// A skip with a reason and a short description.
    pub fn new(reason: SkipReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        truncate(&mut detail, 200);
        Skip { reason, detail }
    }
}

impl Event {
    /// A short name of the event's kind, for logs and summaries.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::Lifecycle(_) => "lifecycle action",
            Event::LifecycleTest(_) => "lifecycle test notification",
            Event::AutoScaling(_) => "auto scaling event",
            Event::S3(_) => "s3 object change",
            Event::S3Test(_) => "s3 test event",
            Event::CommandStatus(_) => "command status change",
            Event::InvocationStatus(_) => "command invocation status change",
            Event::Scheduled(_) => "scheduled event",
            Event::Manual(_) => "manual request",
            Event::Skipped(_) => "skipped",
        }
    }

    fn skipped(reason: SkipReason, detail: impl Into<String>) -> Self {
        Event::Skipped(Skip::new(reason, detail))
    }
}

/// Parses one invocation payload into its events.
pub fn parse(payload: &Value) -> Vec<Received> {
    let mut out = Vec::new();
    match payload {
        Value::Object(map) if map.get("Records").is_some() => parse_records(payload, &mut out),
        _ => out.push(Received { via: Via::Direct, event: parse_single(payload) }),
    }
    out
}

/// A `Records` payload: SQS messages, or S3 notification records.
fn parse_records(payload: &Value, out: &mut Vec<Received>) {
    let Some(records) = payload.get("Records").and_then(Value::as_array) else {
        out.push(Received {
            via: Via::Direct,
            event: Event::skipped(SkipReason::Malformed, "Records is not an array"),
        });
        return;
    };
    for record in records {
        // SNS spells it `EventSource`, SQS and S3 `eventSource`.
        if record.get("EventSource").and_then(Value::as_str) == Some("aws:sns") {
            parse_sns_record(record, out);
            continue;
        }
        match record.get("eventSource").and_then(Value::as_str) {
            Some("aws:sqs") => parse_sqs_message(record, out),
            Some("aws:s3") => out.push(Received { via: Via::Direct, event: s3::from_notification_record(record) }),
            Some(other) => out.push(Received {
                via: Via::Direct,
                event: Event::skipped(SkipReason::UnknownShape, format!("record source {other:?}")),
            }),
            None => out.push(Received {
                via: Via::Direct,
                event: Event::skipped(SkipReason::Malformed, "record without eventSource"),
            }),
        }
    }
}

fn parse_sqs_message(record: &Value, out: &mut Vec<Received>) {
    let message: aws_lambda_events::sqs::SqsMessage = match serde_json::from_value(record.clone()) {
        Ok(m) => m,
        Err(e) => {
            let via = Via::Sqs { message_id: None };
            out.push(Received { via, event: Event::skipped(SkipReason::Malformed, format!("SQS record: {e}")) });
            return;
        }
    };
    let via = Via::Sqs { message_id: message.message_id.clone() };
    let body = match message.body.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(body)) => body,
        Some(Err(_)) => {
            out.push(Received { via, event: Event::skipped(SkipReason::Malformed, "SQS body is not JSON") });
            return;
        }
        None => {
            out.push(Received { via, event: Event::skipped(SkipReason::Malformed, "SQS message without body") });
            return;
        }
    };
    parse_body(body, via, out);
}

/// An SNS notification delivered to the function itself (S3 -> SNS ->
/// Lambda, a common fan-out): its `Sns.Message` holds the event.
fn parse_sns_record(record: &Value, out: &mut Vec<Received>) {
    let via = Via::Direct;
    match record.get("Sns").and_then(|s| s.get("Message")).and_then(Value::as_str) {
        Some(message) => match serde_json::from_str::<Value>(message) {
            Ok(body) => parse_body(body, via, out),
            Err(_) => {
                out.push(Received { via, event: Event::skipped(SkipReason::Malformed, "SNS message is not JSON") })
            }
        },
        None => {
            out.push(Received { via, event: Event::skipped(SkipReason::Malformed, "SNS record without a message") })
        }
    }
}

/// A message body (SQS, SNS): an event, an S3 notification document, a hook
/// message, a test notification, or an SNS notification wrapping them.
fn parse_body(body: Value, via: Via, out: &mut Vec<Received>) {
    // S3 -> SNS -> SQS: the SNS envelope carries the real event as a string.
    let body = match (body.get("Type").and_then(Value::as_str), body.get("Message").and_then(Value::as_str)) {
        (Some("Notification"), Some(inner)) => match serde_json::from_str::<Value>(inner) {
            Ok(inner) => inner,
            Err(_) => {
                out.push(Received { via, event: Event::skipped(SkipReason::Malformed, "SNS message is not JSON") });
                return;
            }
        },
        _ => body,
    };
    if let Some(records) = body.get("Records") {
        // An S3 notification document: one SQS message may hold several records.
        match records.as_array() {
            Some(records) => {
                for r in records {
                    let event = match r.get("eventSource").and_then(Value::as_str) {
                        Some("aws:s3") => s3::from_notification_record(r),
                        _ => Event::skipped(SkipReason::UnknownShape, "record in SQS body is not from S3"),
                    };
                    out.push(Received { via: via.clone(), event });
                }
            }
            None => out.push(Received { via, event: Event::skipped(SkipReason::Malformed, "Records is not an array") }),
        }
        return;
    }
    let event = match body.get("Event").and_then(Value::as_str) {
        Some("s3:TestEvent") => s3::test_event(&body),
        Some("autoscaling:TEST_NOTIFICATION") => autoscaling::test_notification(&body),
        _ if body.get("LifecycleTransition").is_some() => autoscaling::lifecycle_from_hook_message(&body),
        _ => parse_single(&body),
    };
    out.push(Received { via, event });
}

/// A single event object: EventBridge, manual, or unknown.
fn parse_single(value: &Value) -> Event {
    let Some(map) = value.as_object() else {
        return Event::skipped(SkipReason::UnknownShape, "payload is not a JSON object");
    };
    if map.contains_key("detail-type") && map.contains_key("source") {
        return parse_eventbridge(value);
    }
    if map.contains_key("action") {
        return manual::parse(value);
    }
    if map.contains_key("LifecycleTransition") {
        return autoscaling::lifecycle_from_hook_message(value);
    }
    Event::skipped(SkipReason::UnknownShape, "no known event shape")
}

fn parse_eventbridge(value: &Value) -> Event {
    type Envelope = aws_lambda_events::eventbridge::EventBridgeEvent<Value>;
    let envelope: Envelope = match serde_json::from_value(value.clone()) {
        Ok(e) => e,
        Err(e) => return Event::skipped(SkipReason::Malformed, format!("EventBridge envelope: {e}")),
    };
    match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        ("aws.s3", _) => {
            let time_ms = envelope.time.and_then(|t| u64::try_from(t.timestamp_millis()).ok());
            s3::from_eventbridge(&envelope.detail_type, &envelope.detail, time_ms)
        }
        ("aws.autoscaling", "EC2 Instance-launch Lifecycle Action" | "EC2 Instance-terminate Lifecycle Action") => {
            let time_ms = envelope.time.and_then(|t| u64::try_from(t.timestamp_millis()).ok());
            autoscaling::lifecycle_from_eventbridge(&envelope.detail, time_ms)
        }
        ("aws.autoscaling", detail_type) => autoscaling::notice(detail_type, &envelope.detail),
        ("aws.ssm", "EC2 Command Status-change Notification") => ssm::command_status(&envelope),
        ("aws.ssm", "EC2 Command Invocation Status-change Notification") => ssm::invocation_status(&envelope.detail),
        (_, "Scheduled Event") => Event::Scheduled(ScheduledEvent {
            rule: envelope.resources.as_ref().and_then(|r| r.first().cloned()),
            time: envelope.time.map(|t| t.to_rfc3339()),
        }),
        (source, detail_type) => {
            Event::skipped(SkipReason::UnknownShape, format!("EventBridge event {source:?} / {detail_type:?}"))
        }
    }
}

/// Reads a string field, treating empty strings as absent.
pub(crate) fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

#[cfg(test)]
mod tests;
