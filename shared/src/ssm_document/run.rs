//! Sending the document, and reading one invocation.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::send_command::SendCommandError;
use aws_sdk_ssm::operation::send_command::builders::SendCommandFluentBuilder;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};
use tracing::warn;

use super::PinnedDocument;
use crate::clock::Clock;
use crate::error::AwsError;
use crate::events::CommandStatus;

/// `TimeoutSeconds` of every `SendCommand`: how long an invocation may wait
/// for its agent (and for its turn under `MaxConcurrency`) before it is not
/// run any more. Set explicitly: the API documents no default (the user
/// guide says 3600 in one place and 600 in another). An hour keeps queued
/// invocations of a large, rate-limited wave from expiring; an instance that
/// went away does not hold a wave that long, because the sweep notices it
/// and cancels its invocation.
pub const DELIVERY_TIMEOUT_S: i32 = 3600;

/// The `executionTimeout` of a document that declares no default.
pub const DEFAULT_EXECUTION_TIMEOUT_S: u64 = 3600;

/// A version of the document (`None`: its current default version), with
/// the parameters it declares (`DescribeDocument`): what a wave or a
/// catch-up pins.
pub async fn resolve(ssm: &aws_sdk_ssm::Client, name: &str, version: Option<&str>) -> Result<PinnedDocument, AwsError> {
    let out = ssm
        .describe_document()
        .name(name)
        .set_document_version(version.filter(|v| !v.is_empty()).map(str::to_owned))
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("DescribeDocument", e))?;
    let doc = out.document();
    let parameters = doc.map(|d| d.parameters()).unwrap_or_default();
    let declared: BTreeSet<String> = parameters.iter().filter_map(|p| p.name().map(str::to_owned)).collect();
    let execution_timeout_s = parameters
        .iter()
        .find(|p| p.name() == Some("executionTimeout"))
        .and_then(|p| p.default_value())
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EXECUTION_TIMEOUT_S);
    let version = doc
        .and_then(|d| d.document_version().or(d.default_version()))
        .map(str::to_owned)
        .unwrap_or_else(|| "$DEFAULT".to_owned());
    Ok(PinnedDocument { name: name.to_owned(), version, declared, execution_timeout_s })
}

/// A `SendCommand` of `document` (its pinned version) with `parameters` and
/// `comment`, and the delivery timeout; the caller adds the instances.
pub fn command(
    ssm: &aws_sdk_ssm::Client,
    document: &PinnedDocument,
    parameters: HashMap<String, Vec<String>>,
    comment: String,
) -> SendCommandFluentBuilder {
    ssm.send_command()
        .document_name(&document.name)
        .document_version(&document.version)
        .set_parameters(Some(parameters))
        .comment(comment)
        .timeout_seconds(DELIVERY_TIMEOUT_S)
}

/// What a [`send_once`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The command (sent now, or found sent by an attempt whose answer was lost).
    Command(String),
    /// SSM refused an instance (`InvalidInstanceId`: its agent is not
    /// registered, or it is shutting down); nothing was sent.
    Refused,
    /// The answer was lost (a timeout, a 5xx, a dropped connection) and the
    /// command is not listed: it may exist and not be listed yet. Nothing
    /// may be sent to these instances again before a listing taken
    /// [`LISTING_LAG_MS`] later says it does not exist.
    InDoubt,
}

/// Attempts of one [`send_once`] that SSM refused (throttling).
pub const SEND_ATTEMPTS: u32 = 3;

/// How long after `SendCommand` a command may take to appear in
/// `ListCommands`: Run Command's API is eventually consistent ("the result
/// of an API command you run that affects your resources might not be
/// immediately visible to all subsequent commands you run", GetCommandInvocation
/// API reference). Whoever looks for a command by its comment trusts a
/// miss only this long after it may have been sent.
pub const LISTING_LAG_MS: u64 = 30_000;

/// Clock difference tolerated between us and SSM when comparing a
/// command's `RequestedDateTime` with our clock.
const CLOCK_SKEW_MS: u64 = 5_000;

/// Sends `request` so that at most one command results.
///
/// `SendCommand` has no idempotency token, and the SDK retries a call whose
/// answer it did not get (a timeout, a dropped connection, a 5xx): when the
/// first attempt was served, the retry is a second command, and the
/// instances run the document twice at once. So the SDK does not retry this
/// call. A refusal (any 4xx: throttling included) means nothing was sent
/// and is retried, up to [`SEND_ATTEMPTS`] attempts, with the SDK's backoff
/// (exponential, jittered, from 1 s). After an answer that leaves the
/// outcome unknown, the command is looked for by its comment, document and
/// instances; found, it is ours; not found, the outcome is
/// [`Sent::InDoubt`] and this never sends again (it may just not be listed
/// yet).
pub async fn send_once(
    ssm: &aws_sdk_ssm::Client,
    request: SendCommandFluentBuilder,
    clock: &dyn Clock,
) -> Result<Sent, AwsError> {
    let started = clock.now_ms();
    let no_retries = aws_sdk_ssm::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match request.clone().customize().config_override(no_retries.clone()).send().await {
            Ok(out) => {
                let id = out.command().and_then(|c| c.command_id()).unwrap_or_default();
                return Ok(Sent::Command(id.to_owned()));
            }
            Err(SdkError::ServiceError(ctx)) if ctx.err().is_invalid_instance_id() => return Ok(Sent::Refused),
            Err(e) => e,
        };
        if !surely_refused(&error) {
            let error = AwsError::from_sdk("SendCommand", error);
            let document = request.get_document_name().clone().unwrap_or_default();
            let comment = request.get_comment().clone().unwrap_or_default();
            let instances = request.get_instance_ids().clone().unwrap_or_default();
            return match find_command(ssm, &document, &comment, Some(&instances), started).await {
                Ok(Some(id)) => {
                    warn!(command_id = %id, error = %error, "the answer to SendCommand was lost, the command was not: adopted");
                    Ok(Sent::Command(id))
                }
                Ok(None) => {
                    warn!(error = %error, "the answer to SendCommand was lost and the command is not listed (yet): in doubt");
                    Ok(Sent::InDoubt)
                }
                Err(lookup) => {
                    warn!(error = %error, lookup = %lookup, "the answer to SendCommand was lost and the lookup failed: in doubt");
                    Ok(Sent::InDoubt)
                }
            };
        }
        let error = AwsError::from_sdk("SendCommand", error);
        if attempt >= SEND_ATTEMPTS || !error.is_retryable() {
            return Err(error);
        }
        warn!(attempt, error = %error, "SendCommand refused, nothing was sent: trying again");
        clock.sleep(backoff(attempt, started)).await;
    }
}

/// The SDK's standard backoff: up to 1 s x 2^(attempt-1), jittered (the
/// jitter from `seed`, so it needs no random source).
fn backoff(attempt: u32, seed: u64) -> Duration {
    let cap = 1_000u64 << (attempt - 1).min(5);
    let jitter = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(attempt) % cap;
    Duration::from_millis(cap / 2 + jitter / 2)
}

/// Whether SSM answered with a refusal (4xx): the command was not created.
fn surely_refused(error: &SdkError<SendCommandError, aws_sdk_ssm::config::http::HttpResponse>) -> bool {
    matches!(error, SdkError::ServiceError(ctx) if ctx.raw().status().as_u16() < 500)
}

/// The command of `document` with `comment` — and, when given, exactly
/// these `instances` — requested no earlier than `not_before_ms` (our clock,
/// give or take a few seconds of skew), by paging `ListCommands` (document
/// and time filters; never `InstanceId`, which a command still `Pending`
/// may not match yet). `None` may mean "not listed yet" within
/// [`LISTING_LAG_MS`] of the send.
pub async fn find_command(
    ssm: &aws_sdk_ssm::Client,
    document: &str,
    comment: &str,
    instances: Option<&[String]>,
    not_before_ms: u64,
) -> Result<Option<String>, AwsError> {
    let filter = |key: CommandFilterKey, value: &str| {
        CommandFilter::builder().key(key).value(value).build().map_err(|e| AwsError::construction("ListCommands", e))
    };
    let not_before = not_before_ms.saturating_sub(CLOCK_SKEW_MS);
    let mut wanted: Option<Vec<String>> = instances.map(<[String]>::to_vec);
    if let Some(w) = wanted.as_mut() {
        w.sort();
    }
    let mut pages = ssm
        .list_commands()
        .filters(filter(CommandFilterKey::DocumentName, document)?)
        .filters(filter(CommandFilterKey::InvokedAfter, &invoked_after(not_before))?)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsError::from_sdk("ListCommands", e))?;
        for c in page.commands() {
            let requested = c.requested_date_time().and_then(|t| t.to_millis().ok()).unwrap_or(0);
            if c.comment() != Some(comment) || u64::try_from(requested).unwrap_or(0) < not_before {
                continue;
            }
            let same_instances = wanted.as_ref().is_none_or(|w| {
                let mut listed = c.instance_ids().to_vec();
                listed.sort();
                &listed == w
            });
            if same_instances {
                return Ok(c.command_id().map(str::to_owned));
            }
        }
    }
    Ok(None)
}

/// Sends the document to one instance (a catch-up to `generation`, with
/// `parameters` from [`super::SyncParameters::to_ssm`] and `comment`), at
/// most once ([`send_once`]).
pub async fn send_catch_up(
    ssm: &aws_sdk_ssm::Client,
    document: &PinnedDocument,
    parameters: HashMap<String, Vec<String>>,
    instance_id: &str,
    comment: String,
    clock: &dyn Clock,
) -> Result<Sent, AwsError> {
    let request = command(ssm, document, parameters, comment).instance_ids(instance_id);
    send_once(ssm, request, clock).await
}

/// One invocation's status and `StatusDetails`; `Pending` while SSM does
/// not know it yet (for a moment after `SendCommand` it answers
/// `InvocationDoesNotExist`).
pub async fn invocation_status(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    instance_id: &str,
) -> Result<(CommandStatus, String, Option<String>), AwsError> {
    match ssm.get_command_invocation().command_id(command_id).instance_id(instance_id).send().await {
        Ok(out) => {
            let output = format!(
                "{}\n{}",
                out.standard_output_content().unwrap_or_default(),
                out.standard_error_content().unwrap_or_default()
            );
            Ok((
                CommandStatus::parse(out.status().map(|s| s.as_str()).unwrap_or("Pending")),
                out.status_details().unwrap_or_default().to_owned(),
                crate::ssm_document::history::refusal(out.response_code(), &output),
            ))
        }
        Err(SdkError::ServiceError(ctx)) if ctx.err().is_invocation_does_not_exist() => {
            Ok((CommandStatus::Pending, "Pending".to_owned(), None))
        }
        Err(e) => Err(AwsError::from_sdk("GetCommandInvocation", e)),
    }
}

/// A time for `ListCommands`' `InvokedAfter` filter: whole seconds, the only
/// form AWS documents (`2024-07-07T00:00:00Z`).
pub fn invoked_after(epoch_ms: u64) -> String {
    let seconds = i64::try_from(epoch_ms / 1000).unwrap_or(0);
    aws_smithy_types::DateTime::from_secs(seconds)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoked_after_is_whole_seconds() {
        assert_eq!(invoked_after(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(invoked_after(0), "1970-01-01T00:00:00Z");
    }
}
