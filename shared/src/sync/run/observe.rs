//! What SSM reports about a wave's commands.

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};

use super::{COMMENT_LOOKBACK_MS, SyncContext, SyncError};
use crate::error::AwsError;
use crate::events::CommandStatus;
use crate::ssm_document::wave_comment;
use crate::sync::decide::{CommandView, InvocationView};
use crate::sync::state::Wave;
use crate::sync::store::FleetStore;

impl<S: FleetStore> SyncContext<'_, S> {
    /// The wave's commands as SSM reports them: its recorded ids, plus those
    /// found by comment while not every id is recorded.
    pub(super) async fn observe(&self, wave: &Wave) -> Result<Vec<CommandView>, SyncError> {
        let mut ids: Vec<String> = wave.command_ids.clone();
        if !wave.sent {
            for id in self.commands_by_comment(wave).await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let mut views = Vec::new();
        for id in ids {
            views.push(self.command_view(&id).await?);
        }
        Ok(views)
    }

    pub(super) async fn commands_by_comment(&self, wave: &Wave) -> Result<Vec<String>, SyncError> {
        let comment = wave_comment(&wave.id);
        let after = aws_smithy_types::DateTime::from_millis(
            i64::try_from(wave.sending_since.saturating_sub(COMMENT_LOOKBACK_MS)).unwrap_or(0),
        );
        let after = after.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap_or_default();
        let filter = |key: CommandFilterKey, value: &str| CommandFilter::builder().key(key).value(value).build();
        let mut pages = self
            .clients
            .ssm
            .list_commands()
            .filters(filter(CommandFilterKey::DocumentName, &self.settings.document)?)
            .filters(filter(CommandFilterKey::InvokedAfter, &after)?)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListCommands", e))?;
            for c in page.commands() {
                if c.comment() == Some(comment.as_str())
                    && let Some(id) = c.command_id()
                {
                    found.push(id.to_owned());
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn command_view(&self, id: &str) -> Result<CommandView, SyncError> {
        // Just after SendCommand a command may not be listed yet: pending.
        let pending = || CommandView { command_id: id.to_owned(), status: CommandStatus::Pending, invocations: vec![] };
        let status = match self.clients.ssm.list_commands().command_id(id).send().await {
            Ok(out) => match out.commands().first().and_then(|c| c.status()) {
                Some(s) => CommandStatus::parse(s.as_str()),
                None => return Ok(pending()),
            },
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_command_id() => return Ok(pending()),
            Err(e) => return Err(AwsError::from_sdk("ListCommands", e).into()),
        };
        let mut invocations = Vec::new();
        let mut pages = self.clients.ssm.list_command_invocations().command_id(id).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListCommandInvocations", e))?;
            for inv in page.command_invocations() {
                invocations.push(InvocationView {
                    instance_id: inv.instance_id().unwrap_or_default().to_owned(),
                    status: CommandStatus::parse(inv.status().map(|s| s.as_str()).unwrap_or("Pending")),
                });
            }
        }
        Ok(CommandView { command_id: id.to_owned(), status, invocations })
    }

    /// Whether `command_id` belongs to the running wave: a recorded id, or
    /// (while not every id is recorded) a command carrying its comment.
    pub async fn belongs_to_running_wave(&self, command_id: &str) -> Result<Option<String>, SyncError> {
        let Some(wave) = self.store.load().await?.and_then(|i| i.wave) else { return Ok(None) };
        if wave.command_ids.iter().any(|c| c == command_id) {
            return Ok(Some(wave.id));
        }
        if wave.sent {
            return Ok(None);
        }
        let comment = match self.clients.ssm.list_commands().command_id(command_id).send().await {
            Ok(out) => out.commands().first().and_then(|c| c.comment()).map(str::to_owned),
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_command_id() => None,
            Err(e) => return Err(AwsError::from_sdk("ListCommands", e).into()),
        };
        Ok((comment.as_deref() == Some(wave_comment(&wave.id).as_str())).then_some(wave.id))
    }
}
