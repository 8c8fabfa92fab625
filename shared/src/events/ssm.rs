//! SSM Run Command status-change events. Own structs: AWS sends `parameters`
//! as arrays of strings, which `aws_lambda_events` types as strings and so
//! fails on real events. The event carries no `Comment`: callers classify a
//! command by its id.

use std::collections::BTreeMap;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Serialize;
use serde_json::Value;

use super::autoscaling::is_instance_id;
use super::{Event, SkipReason, str_field};

/// A command's (or one invocation's) status, as SSM spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// `Pending`: not yet delivered.
    Pending,
    /// `InProgress`.
    InProgress,
    /// `Delayed`: the agent will retry delivery.
    Delayed,
    /// `Cancelling`.
    Cancelling,
    /// `Success`.
    Success,
    /// `Failed`.
    Failed,
    /// `TimedOut` (delivery or execution).
    TimedOut,
    /// `Cancelled`.
    Cancelled,
    /// `Undeliverable`, `Terminated`, ...: terminal and not a success.
    OtherTerminal(String),
    /// A status this version does not know: treated as still running.
    Unknown(String),
}

impl CommandStatus {
    /// Parses SSM's spelling.
    pub fn parse(s: &str) -> Self {
        match s {
            "Pending" => CommandStatus::Pending,
            "InProgress" => CommandStatus::InProgress,
            "Delayed" => CommandStatus::Delayed,
            "Cancelling" => CommandStatus::Cancelling,
            "Success" => CommandStatus::Success,
            "Failed" => CommandStatus::Failed,
            "TimedOut" | "DeliveryTimedOut" | "ExecutionTimedOut" => CommandStatus::TimedOut,
            "Cancelled" => CommandStatus::Cancelled,
            "Undeliverable" | "Terminated" | "InvalidPlatform" | "AccessDenied" => {
                CommandStatus::OtherTerminal(s.to_owned())
            }
            other => CommandStatus::Unknown(other.chars().take(32).collect()),
        }
    }

    /// SSM's spelling (the one it was parsed from for the statuses kept
    /// as text; `TimedOut` for the timeouts).
    pub fn as_str(&self) -> &str {
        match self {
            CommandStatus::Pending => "Pending",
            CommandStatus::InProgress => "InProgress",
            CommandStatus::Delayed => "Delayed",
            CommandStatus::Cancelling => "Cancelling",
            CommandStatus::Success => "Success",
            CommandStatus::Failed => "Failed",
            CommandStatus::TimedOut => "TimedOut",
            CommandStatus::Cancelled => "Cancelled",
            CommandStatus::OtherTerminal(s) | CommandStatus::Unknown(s) => s,
        }
    }

    /// Whether the command (or invocation) will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            CommandStatus::Success
                | CommandStatus::Failed
                | CommandStatus::TimedOut
                | CommandStatus::Cancelled
                | CommandStatus::OtherTerminal(_)
        )
    }

    /// Whether it ended well.
    pub fn is_success(&self) -> bool {
        *self == CommandStatus::Success
    }
}

/// "EC2 Command Status-change Notification".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandStatusChange {
    /// `command-id`.
    pub command_id: String,
    /// `document-name`.
    pub document_name: Option<String>,
    /// `status`.
    pub status: CommandStatus,
    /// `parameters`: each an array of strings, as AWS sends them.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Instance ids from `resources`.
    pub instance_ids: Vec<String>,
}

/// "EC2 Command Invocation Status-change Notification".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvocationStatusChange {
    /// `command-id`.
    pub command_id: String,
    /// `document-name`.
    pub document_name: Option<String>,
    /// `instance-id`.
    pub instance_id: String,
    /// `status`.
    pub status: CommandStatus,
}

pub(super) fn command_status(envelope: &EventBridgeEvent<Value>) -> Event {
    let detail = &envelope.detail;
    let (Some(command_id), Some(status)) = (str_field(detail, "command-id"), str_field(detail, "status")) else {
        return Event::skipped(SkipReason::Malformed, "command status change without command-id or status");
    };
    let mut parameters = BTreeMap::new();
    if let Some(map) = detail.get("parameters").and_then(Value::as_object) {
        for (name, value) in map {
            // Arrays of strings on the wire; tolerate a bare string too.
            let values = match value {
                Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                Value::String(s) => vec![s.clone()],
                _ => continue,
            };
            parameters.insert(name.clone(), values);
        }
    }
    let instance_ids = envelope
        .resources
        .iter()
        .flatten()
        .filter_map(|arn| arn.rsplit('/').next())
        .filter(|id| is_instance_id(id))
        .map(str::to_owned)
        .collect();
    Event::CommandStatus(CommandStatusChange {
        command_id,
        document_name: str_field(detail, "document-name"),
        status: CommandStatus::parse(&status),
        parameters,
        instance_ids,
    })
}

pub(super) fn invocation_status(detail: &Value) -> Event {
    let (Some(command_id), Some(instance_id), Some(status)) =
        (str_field(detail, "command-id"), str_field(detail, "instance-id"), str_field(detail, "status"))
    else {
        return Event::skipped(SkipReason::Malformed, "invocation status change without command, instance or status");
    };
    Event::InvocationStatus(InvocationStatusChange {
        command_id,
        document_name: str_field(detail, "document-name"),
        instance_id,
        status: CommandStatus::parse(&status),
    })
}
