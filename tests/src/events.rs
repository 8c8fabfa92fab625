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
