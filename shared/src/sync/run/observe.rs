//! What SSM reports about a wave's commands, at O(1) calls per status event
//! and O(commands) per wave: one paged `ListCommands` of the document since
//! the wave started gives every command's status (and instances); a
//! command's invocations are listed only once it (or the whole wave) ended,
//! or by the sweep when it looks for instances that left.

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};

use super::{COMMENT_LOOKBACK_MS, SyncContext, SyncError};
use crate::error::AwsError;
use crate::events::CommandStatus;
use crate::ssm_document::history::{refusal, stale};
use crate::ssm_document::run::invoked_after;
use crate::ssm_document::wave_comment;
use crate::sync::decide::InvocationView;
use crate::sync::state::Wave;
use crate::sync::store::FleetStore;

/// One of the wave's commands, as `ListCommands` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The command.
    pub command_id: String,
    /// Its status.
    pub status: CommandStatus,
    /// Its instances.
    pub instance_ids: Vec<String>,
}

impl<S: FleetStore> SyncContext<'_, S> {
    /// The wave's commands: its recorded ids, plus (while not every id is
    /// recorded) those carrying its comment. A recorded id the listing does
    /// not show yet (SSM is eventually consistent) is pending.
    pub async fn wave_commands(&self, wave: &Wave) -> Result<Vec<Listed>, SyncError> {
        let comment = wave_comment(&wave.id);
        let after = invoked_after(wave.sending_since.saturating_sub(COMMENT_LOOKBACK_MS));
        let filter = |key: CommandFilterKey, value: &str| CommandFilter::builder().key(key).value(value).build();
        let mut pages = self
            .clients
            .ssm
            .list_commands()
            .filters(filter(CommandFilterKey::DocumentName, &self.settings.document)?)
            .filters(filter(CommandFilterKey::InvokedAfter, &after)?)
            .into_paginator()
            .send();
        let mut found: Vec<Listed> = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ListCommands", e))?;
            for c in page.commands() {
                let Some(id) = c.command_id() else { continue };
                let ours =
                    wave.command_ids.iter().any(|r| r == id) || (!wave.sent && c.comment() == Some(comment.as_str()));
                if ours {
                    found.push(Listed {
                        command_id: id.to_owned(),
                        status: CommandStatus::parse(c.status().map(|s| s.as_str()).unwrap_or("Pending")),
                        instance_ids: c.instance_ids().to_vec(),
                    });
                }
            }
        }
        for id in &wave.command_ids {
            if !found.iter().any(|f| &f.command_id == id) {
                found.push(Listed { command_id: id.clone(), status: CommandStatus::Pending, instance_ids: Vec::new() });
            }
        }
        Ok(found)
    }

    /// A command's invocations (every page), with their plugins' exit
    /// status and output (`Details`): how a shrink guard's refusal is told
    /// apart from a failure.
    pub async fn invocations(&self, command_id: &str) -> Result<Vec<InvocationView>, SyncError> {
        let mut out = Vec::new();
        let mut pages =
            self.clients.ssm.list_command_invocations().command_id(command_id).details(true).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                // Just after SendCommand a command may not be known yet: pending.
                Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_command_id() => return Ok(out),
                Err(e) => return Err(AwsError::from_sdk("ListCommandInvocations", e).into()),
            };
            for inv in page.command_invocations() {
                let mut view = InvocationView::new(
                    inv.instance_id().unwrap_or_default(),
                    inv.status().map(|s| s.as_str()).unwrap_or("Pending"),
                    inv.status_details().unwrap_or_default(),
                );
                let plugins = inv.command_plugins();
                view.refused = plugins.iter().find_map(|p| refusal(p.response_code(), p.output().unwrap_or_default()));
                view.stale = plugins.iter().any(|p| stale(p.response_code(), p.output().unwrap_or_default()));
                out.push(view);
            }
        }
        Ok(out)
    }

    /// The running wave, if `command_id` belongs to it: a recorded id, or
    /// (while not every id is recorded) a command carrying its comment.
    pub async fn belongs_to_running_wave(&self, command_id: &str) -> Result<Option<Wave>, SyncError> {
        let Some(wave) = self.store.load().await?.and_then(|i| i.wave) else { return Ok(None) };
        if wave.command_ids.iter().any(|c| c == command_id) {
            return Ok(Some(wave));
        }
        if wave.sent {
            return Ok(None);
        }
        let comment = match self.clients.ssm.list_commands().command_id(command_id).send().await {
            Ok(out) => out.commands().first().and_then(|c| c.comment()).map(str::to_owned),
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_command_id() => None,
            Err(e) => return Err(AwsError::from_sdk("ListCommands", e).into()),
        };
        Ok((comment.as_deref() == Some(wave_comment(&wave.id).as_str())).then_some(wave))
    }

    /// Cancels the invocations of instances that left (best effort: AWS
    /// gives "no guarantee"; the wave no longer waits for them either way).
    pub(super) async fn cancel(&self, command_id: &str, instances: &[String]) {
        for part in instances.chunks(50) {
            let result = self
                .clients
                .ssm
                .cancel_command()
                .command_id(command_id)
                .set_instance_ids(Some(part.to_vec()))
                .send()
                .await;
            if let Err(e) = result {
                tracing::warn!(command_id, error = %AwsError::from_sdk("CancelCommand", e), "could not cancel the invocations of instances that left");
            }
        }
    }
}
