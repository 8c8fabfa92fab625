//! Events in the shapes AWS sends them, for tests and the demo.

use serde_json::{Value, json};

/// An EventBridge scheduled event.
pub fn scheduled() -> Value {
    json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-01T00:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/fleetkeeper"], "detail": {}
    })
}

/// An `aws.autoscaling` event other than a lifecycle action.
pub fn autoscaling_notice(detail_type: &str, group: &str, instance_id: &str) -> Value {
    json!({
        "version": "0", "id": "3e3c153a-8339-4e30-8c35-687ebef853fe", "detail-type": detail_type,
        "source": "aws.autoscaling", "account": "123456789012", "time": "2026-11-01T00:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {"AutoScalingGroupName": group, "EC2InstanceId": instance_id}
    })
}

/// Form-encodes a key the way S3 notifications do (`+` for a space, `%XX`
/// for everything but unreserved characters).
pub fn form_encode(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An S3 notification (direct Lambda invocation) with one `ObjectCreated:Put`
/// record per key, keys form-encoded as S3 sends them (long ago: no quiet
/// period holds it back).
pub fn s3_notification(bucket: &str, keys: &[String]) -> Value {
    s3_notification_at(bucket, keys, "2026-11-01T00:00:00.000Z")
}

/// The same, with `eventTime` `event_time` (ISO 8601, milliseconds).
pub fn s3_notification_at(bucket: &str, keys: &[String], event_time: &str) -> Value {
    let records: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": event_time, "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:EXAMPLE"}, "requestParameters": {"sourceIPAddress": "203.0.113.1"},
                "responseElements": {},
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                       "object": {"key": form_encode(k), "size": 1, "sequencer": "0055AED6DCD90281E5"}}
            })
        })
        .collect();
    json!({ "Records": records })
}

/// An SQS event source mapping's invocation with one message of `body`.
pub fn sqs_message(message_id: &str, body: &str, queue_arn: &str) -> Value {
    json!({"Records": [{
        "messageId": message_id, "receiptHandle": format!("{message_id}-1"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000",
            "SenderId": "AROAFUNCTION", "ApproximateFirstReceiveTimestamp": "1700000000000"},
        "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": "us-east-1"
    }]})
}

/// An EventBridge "EC2 Command Status-change Notification".
pub fn command_status(command_id: &str, document: &str, status: &str) -> Value {
    command_status_on(command_id, document, status, &[])
}

/// The same, listing the command's instances in `resources` as AWS does.
pub fn command_status_on(command_id: &str, document: &str, status: &str, instances: &[String]) -> Value {
    let resources: Vec<String> =
        instances.iter().map(|i| format!("arn:aws:ec2:us-east-1:123456789012:instance/{i}")).collect();
    json!({
        "version": "0", "id": "51c0891d-0e34-45b1-83d6-95db273d1602",
        "detail-type": "EC2 Command Status-change Notification", "source": "aws.ssm",
        "account": "123456789012", "time": "2026-11-01T00:05:32Z", "region": "us-east-1", "resources": resources,
        "detail": {
            "command-id": command_id, "document-name": document, "expire-after": "2026-11-01T02:05:30.049Z",
            "parameters": {"generation": ["1"]}, "requested-date-time": "2026-11-01T00:05:30.049Z", "status": status
        }
    })
}
