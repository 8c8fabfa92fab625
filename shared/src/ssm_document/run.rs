//! Sending the document to one instance, and reading one invocation.

use std::collections::HashMap;

use aws_sdk_ssm::error::SdkError;

use super::catch_up_comment;
use crate::error::AwsError;
use crate::events::CommandStatus;

/// Sends the document to one instance (a catch-up to `generation`, with
/// `parameters` from [`SyncParameters::to_ssm`]). `None` when SSM refuses the
/// instance (`InvalidInstanceId`: its agent is not registered).
pub async fn send_catch_up(
    ssm: &aws_sdk_ssm::Client,
    document: &str,
    parameters: HashMap<String, Vec<String>>,
    instance_id: &str,
    generation: u64,
) -> Result<Option<String>, AwsError> {
    let result = ssm
        .send_command()
        .document_name(document)
        .instance_ids(instance_id)
        .set_parameters(Some(parameters))
        .comment(catch_up_comment(instance_id, generation))
        .send()
        .await;
    match result {
        Ok(out) => Ok(out.command().and_then(|c| c.command_id()).map(str::to_owned)),
        Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_instance_id() => Ok(None),
        Err(e) => Err(AwsError::from_sdk("SendCommand", e)),
    }
}

/// One invocation's status; `Pending` while SSM does not know it yet (for a
/// moment after `SendCommand` it answers `InvocationDoesNotExist`).
pub async fn invocation_status(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    instance_id: &str,
) -> Result<CommandStatus, AwsError> {
    match ssm.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await {
        Ok(out) => Ok(CommandStatus::parse(out.status().map(|s| s.as_str()).unwrap_or("Pending"))),
        Err(SdkError::ServiceError(ctx)) if ctx.err().is_invocation_does_not_exist() => Ok(CommandStatus::Pending),
        Err(e) => Err(AwsError::from_sdk("GetCommandInvocation", e)),
    }
}
