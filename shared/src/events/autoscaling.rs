//! Auto Scaling events: lifecycle actions (EventBridge `detail`, or the body of
//! an SQS hook-target message), the SQS test notification, and the other
//! `aws.autoscaling` events `mount-targets` reconciles on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Event, SkipReason, str_field, truncate};

/// Which way an instance is moving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`.
    Launching,
    /// `autoscaling:EC2_INSTANCE_TERMINATING`.
    Terminating,
}

impl Transition {
    /// Parses AWS's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "autoscaling:EC2_INSTANCE_LAUNCHING" => Some(Transition::Launching),
            "autoscaling:EC2_INSTANCE_TERMINATING" => Some(Transition::Terminating),
            _ => None,
        }
    }

    /// AWS's spelling.
    pub fn as_aws(self) -> &'static str {
        match self {
            Transition::Launching => "autoscaling:EC2_INSTANCE_LAUNCHING",
            Transition::Terminating => "autoscaling:EC2_INSTANCE_TERMINATING",
        }
    }
}

/// `Origin` / `Destination` of a lifecycle action (warm pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// `EC2`: outside the group.
    Ec2,
    /// `AutoScalingGroup`: in service.
    AutoScalingGroup,
    /// `WarmPool`: stopped or running in the warm pool.
    WarmPool,
}

impl Place {
    /// AWS's spelling.
    pub fn as_aws(self) -> &'static str {
        match self {
            Place::Ec2 => "EC2",
            Place::AutoScalingGroup => "AutoScalingGroup",
            Place::WarmPool => "WarmPool",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "EC2" => Some(Place::Ec2),
            "AutoScalingGroup" => Some(Place::AutoScalingGroup),
            "WarmPool" => Some(Place::WarmPool),
            _ => None,
        }
    }
}

/// A lifecycle action waiting to be completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleAction {
    /// `AutoScalingGroupName`.
    pub auto_scaling_group_name: String,
    /// `LifecycleHookName`.
    pub lifecycle_hook_name: String,
    /// `EC2InstanceId`.
    pub instance_id: String,
    /// `LifecycleTransition`.
    pub transition: Transition,
    /// `LifecycleActionToken` (absent when driven by reconcile).
    pub token: Option<String>,
    /// `Origin` (warm pools), when sent.
    pub origin: Option<Place>,
    /// `Destination` (warm pools), when sent.
    pub destination: Option<Place>,
    /// `NotificationMetadata`: a free string (often JSON), kept as sent.
    pub notification_metadata: Option<String>,
    /// When AWS began the action, epoch ms: the EventBridge envelope's
    /// `time`, or the hook message's `Time` (absent when driven by the
    /// reconcile). The hook's timeouts run from here, not from when
    /// fleetkeeper first saw the action.
    pub time_ms: Option<u64>,
}

/// `autoscaling:TEST_NOTIFICATION`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LifecycleTestNotification {
    /// `AutoScalingGroupName`, when given.
    pub auto_scaling_group_name: Option<String>,
}

/// Any other `aws.autoscaling` event (launch/terminate successful or not,
/// instance refresh, API calls via CloudTrail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoScalingNotice {
    /// The EventBridge `detail-type`.
    pub detail_type: String,
    /// The group it concerns, when the event says.
    pub auto_scaling_group_name: Option<String>,
    /// The instance it concerns, when the event says.
    pub instance_id: Option<String>,
}

/// From an EventBridge lifecycle action's `detail` and the envelope's `time`.
pub(super) fn lifecycle_from_eventbridge(detail: &Value, time_ms: Option<u64>) -> Event {
    let mut event = lifecycle(detail);
    if let Event::Lifecycle(a) = &mut event {
        a.time_ms = time_ms;
    }
    event
}

/// From the body of an SQS hook-target message (same field names as the
/// EventBridge detail, plus `Service`, `Time`, `RequestId`).
pub(super) fn lifecycle_from_hook_message(body: &Value) -> Event {
    lifecycle(body)
}

fn lifecycle(detail: &Value) -> Event {
    let field = |k: &str| str_field(detail, k);
    let (Some(asg), Some(hook), Some(instance_id), Some(transition)) = (
        field("AutoScalingGroupName"),
        field("LifecycleHookName"),
        field("EC2InstanceId"),
        field("LifecycleTransition"),
    ) else {
        return Event::skipped(SkipReason::Malformed, "lifecycle action without group, hook, instance or transition");
    };
    let Some(transition) = Transition::parse(&transition) else {
        let mut t = transition;
        truncate(&mut t, 64);
        return Event::skipped(SkipReason::Malformed, format!("unknown lifecycle transition {t:?}"));
    };
    if !is_instance_id(&instance_id) {
        return Event::skipped(SkipReason::Malformed, "EC2InstanceId is not an instance id");
    }
    let place = |k: &str| field(k).and_then(|p| Place::parse(&p));
    // NotificationMetadata is a free string; some producers send it as JSON
    // rather than a string: keep its text either way.
    let notification_metadata = match detail.get("NotificationMetadata") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    Event::Lifecycle(LifecycleAction {
        auto_scaling_group_name: asg,
        lifecycle_hook_name: hook,
        instance_id,
        transition,
        token: field("LifecycleActionToken"),
        origin: place("Origin"),
        destination: place("Destination"),
        notification_metadata,
        // The hook message's `Time` (`2016-08-18T18:12:27.471Z`).
        time_ms: field("Time").and_then(|t| epoch_ms(&t)),
    })
}

/// An RFC 3339 time as epoch ms (`None`: not one).
pub(crate) fn epoch_ms(t: &str) -> Option<u64> {
    let t = aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime).ok()?;
    u64::try_from(t.to_millis().ok()?).ok()
}

pub(super) fn test_notification(body: &Value) -> Event {
    Event::LifecycleTest(LifecycleTestNotification { auto_scaling_group_name: str_field(body, "AutoScalingGroupName") })
}

pub(super) fn notice(detail_type: &str, detail: &Value) -> Event {
    let asg = str_field(detail, "AutoScalingGroupName")
        .or_else(|| detail.get("requestParameters").and_then(|p| str_field(p, "autoScalingGroupName")));
    Event::AutoScaling(AutoScalingNotice {
        detail_type: detail_type.to_owned(),
        auto_scaling_group_name: asg,
        instance_id: str_field(detail, "EC2InstanceId").filter(|i| is_instance_id(i)),
    })
}

/// Whether `s` looks like an EC2 instance id (`i-` and 8 or 17 hex digits).
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}
