//! The catch-up sync of a launching instance: sending it (at most once),
//! finding a command whose id was never recorded, and continuing the
//! instance when the command's status event arrives.

use tracing::warn;

use super::gate::{CatchUpSettings, Driven, Gate, GateError};
use super::record::CatchUp;
use super::store::RecordStore;
use crate::events::CommandStatusChange;
use crate::ssm_document::run::Sent;
use crate::ssm_document::{self, SyncParameters, catch_up_comment};

/// The prefix of every catch-up's comment.
const PREFIX: &str = "fleetkeeper catch-up ";

/// A catch-up's comment: the instance, the generation, and the attempt
/// after the first (so a lookup never mistakes attempt 1's failed command
/// for attempt 2).
pub fn comment(instance_id: &str, c: &CatchUp) -> String {
    match c.attempt {
        0 | 1 => catch_up_comment(instance_id, c.generation),
        n => format!("{} try {n}", catch_up_comment(instance_id, c.generation)),
    }
}

impl<S: RecordStore> Gate<'_, S> {
    /// Sends the catch-up (at most once: [`ssm_document::run::send_once`]).
    pub(super) async fn send_catch_up_command(
        &self,
        id: &str,
        c: &CatchUp,
        settings: &CatchUpSettings,
        document: &ssm_document::PinnedDocument,
    ) -> Result<Sent, GateError> {
        let mut parameters = SyncParameters::new(
            &settings.codebase,
            &settings.destination,
            &c.epoch,
            c.generation,
            &settings.region,
            ssm_document::CATCH_UP_MAX_SHRINK,
        );
        parameters.manifest = settings.manifest.as_ref().zip(c.manifest.as_ref()).map(|(m, r)| m.reference(r));
        parameters.rollback = c.rollback && parameters.manifest.is_some();
        parameters.keep_releases = Some(settings.keep_releases);
        parameters.keep.clone_from(&c.keep);
        let parameters = parameters.to_ssm(Some(document))?;
        let sent =
            ssm_document::run::send_catch_up(&self.clients.ssm, document, parameters, id, comment(id, c), self.clock)
                .await?;
        if sent == Sent::Refused {
            warn!(instance_id = %id, "SSM refused the instance (InvalidInstanceId): waiting for its agent");
        }
        Ok(sent)
    }

    /// A catch-up whose id was never recorded, found by its comment (`None`
    /// within the listing lag of sending may mean "not listed yet").
    pub(super) async fn find_catch_up(&self, id: &str, c: &CatchUp) -> Result<Option<String>, GateError> {
        let Some(settings) = &self.settings.catch_up else { return Ok(None) };
        Ok(ssm_document::run::find_command(&self.clients.ssm, &settings.document, &comment(id, c), None, c.sent_at)
            .await?)
    }

    /// A catch-up's status event: continues the instance it belongs to.
    pub async fn on_command_status(&self, change: &CommandStatusChange) -> Result<Option<Driven>, GateError> {
        let mut instances = change.instance_ids.clone();
        if instances.is_empty() {
            // Events may omit resources: the comment names the instance.
            let out = self.clients.ssm.list_commands().command_id(&change.command_id).send().await;
            if let Ok(out) = out
                && let Some(comment) = out.commands().first().and_then(|c| c.comment())
                && let Some(rest) = comment.strip_prefix(PREFIX)
                && let Some(instance) = rest.split(' ').next()
            {
                instances.push(instance.to_owned());
            }
        }
        for id in instances {
            let (record, version) = self.store.lifecycle(&id).await?;
            let Some(state) = &record.action else { continue };
            // Its command, or a catch-up being sent whose id is not on record
            // yet (the event can come first): the drive finds it by comment.
            let ours = state
                .catch_up
                .as_ref()
                .is_some_and(|c| c.command_id.as_deref().is_none_or(|id| id == change.command_id.as_str()));
            if ours && state.done.is_none() {
                let action = state.action(&id);
                return Ok(Some(self.drive_loaded(&action, record, version).await?));
            }
        }
        Ok(None)
    }
}
