//! The one delayed-trigger mechanism: a function asks to be invoked again
//! later by sending a message to its own SQS queue with `DelaySeconds`.
//!
//! Why SQS and not an EventBridge Scheduler one-time schedule: a delayed
//! message needs no resource per trigger (a schedule must be created, named
//! uniquely and deleted, and needs `iam:PassRole` for its role), costs one
//! call, and arrives through an event source mapping that already gives
//! batching, partial batch failures and a dead-letter queue. Its limit,
//! 15 minutes (`SendMessage`: "DelaySeconds ... Valid values: 0 to 900"),
//! covers every wait the gate re-triggers; longer ones are the schedule's.
//!
//! A lost trigger costs latency, never correctness: the scheduled
//! reconcile (and the sweep) stays the backstop.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::AwsError;
use crate::events::LifecycleAction;

/// SQS's longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Marks a re-trigger message (`Service` of a hook message).
pub const SERVICE: &str = "fleetkeeper re-trigger";

/// A function's own delay queue.
#[derive(Debug, Clone, Copy)]
pub struct Retrigger<'a> {
    /// SQS.
    pub sqs: &'a aws_sdk_sqs::Client,
    /// `FLEET_RETRIGGER_QUEUE_URL`.
    pub queue_url: &'a str,
}

impl Retrigger<'_> {
    /// Queues `body` to arrive after `delay` (cut to [`MAX_DELAY`]).
    pub async fn send(&self, body: &Value, delay: Duration) -> Result<(), AwsError> {
        let seconds = i32::try_from(delay.min(MAX_DELAY).as_secs()).unwrap_or(900);
        self.sqs
            .send_message()
            .queue_url(self.queue_url)
            .message_body(body.to_string())
            .delay_seconds(seconds)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("SendMessage", e))?;
        Ok(())
    }

    /// Queues `action` to be driven again after `delay`, as the body of an
    /// Auto Scaling hook message (the shape an SQS hook target receives, so
    /// it parses as the same event).
    pub async fn lifecycle(&self, action: &LifecycleAction, delay: Duration) -> Result<(), AwsError> {
        self.send(&hook_message(action), delay).await
    }
}

/// `action` as an Auto Scaling hook message body.
pub fn hook_message(action: &LifecycleAction) -> Value {
    let mut body = json!({
        "Service": SERVICE,
        "AutoScalingGroupName": action.auto_scaling_group_name,
        "LifecycleHookName": action.lifecycle_hook_name,
        "EC2InstanceId": action.instance_id,
        "LifecycleTransition": action.transition.as_aws(),
    });
    let optional = [
        ("LifecycleActionToken", action.token.clone()),
        ("Origin", action.origin.map(|p| p.as_aws().to_owned())),
        ("Destination", action.destination.map(|p| p.as_aws().to_owned())),
        ("NotificationMetadata", action.notification_metadata.clone()),
        ("Time", action.time_ms.and_then(iso)),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            body[key] = Value::String(v);
        }
    }
    body
}

fn iso(ms: u64) -> Option<String> {
    let t = aws_smithy_types::DateTime::from_millis(i64::try_from(ms).ok()?);
    t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Place, Transition, parse};

    #[test]
    fn a_lifecycle_re_trigger_parses_back_as_the_same_action() {
        let action = LifecycleAction {
            auto_scaling_group_name: "web".into(),
            lifecycle_hook_name: "fk-launch".into(),
            instance_id: "i-0123456789abcdef0".into(),
            transition: Transition::Launching,
            token: Some("87654321-4321-4321-4321-210987654321".into()),
            origin: Some(Place::WarmPool),
            destination: Some(Place::AutoScalingGroup),
            notification_metadata: Some("{\"a\":1}".into()),
            time_ms: Some(1_793_491_201_123),
        };
        let record = json!({"Records": [{
            "messageId": "m-1", "receiptHandle": "r", "body": hook_message(&action).to_string(),
            "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "awsRegion": "us-east-1"
        }]});
        let received = parse(&record);
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].event, Event::Lifecycle(action.clone()));
        let mut bare = action;
        (bare.token, bare.origin, bare.destination, bare.notification_metadata, bare.time_ms) =
            (None, None, None, None, None);
        let body = hook_message(&bare);
        assert!(body.get("LifecycleActionToken").is_none() && body.get("Time").is_none(), "{body}");
    }
}
