//! The error policy (DESIGN.md, principle 5).
//!
//! Lambda retries *any* error of an async invocation and SQS redelivers until
//! `maxReceiveCount`, whatever the `Diagnostic.error_type`. So:
//!
//! * [`Kind::Transient`] (throttling, 5xx, timeouts, contention): return `Err`,
//!   a retry can fix it.
//! * [`Kind::Configuration`] (access denied, a configured table or document
//!   that does not exist): return `Err` too. A retry cannot fix it by itself,
//!   but an operator can while retries run, and the failure must reach the
//!   function's error metrics and its DLQ instead of vanishing as a success.
//! * Bad input (a malformed event, an unknown group, a hostile key) is not an
//!   error at all: it is a successful response with a logged
//!   [`Skip`](crate::events::Skip), since a retry would only repeat it.

use std::error::Error as StdError;
use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use thiserror::Error;

/// How a failed AWS call should be treated by a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A retry may succeed (throttling, 5xx, timeouts, contention).
    Transient,
    /// The deployment is wrong (permissions, a missing configured resource).
    Configuration,
    /// AWS refused the request itself; retrying it unchanged will not help.
    Rejected,
}

/// Error codes AWS services use for throttling or contention.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionConflictException",
    "LimitExceededException",
    "SlowDown",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ResourceContention",
];

/// Error codes that mean the deployment, not the request, is wrong.
const CONFIGURATION_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "ResourceNotFoundException",
    "NoSuchBucket",
    "InvalidDocument",
];

/// Classifies an SDK error by transport outcome, HTTP status and error code.
pub fn classify<E>(err: &SdkError<E, HttpResponse>) -> Kind
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Kind::Transient,
        SdkError::ConstructionFailure(_) => Kind::Rejected,
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            classify_code(ctx.err().code(), status)
        }
        _ => Kind::Transient,
    }
}

/// Classifies by error code and HTTP status alone (for errors already
/// unwrapped from their `SdkError`).
pub fn classify_code(code: Option<&str>, status: u16) -> Kind {
    match code {
        Some(c) if TRANSIENT_CODES.contains(&c) => Kind::Transient,
        Some(c) if CONFIGURATION_CODES.contains(&c) => Kind::Configuration,
        _ if status >= 500 || status == 429 => Kind::Transient,
        _ if status == 401 || status == 403 => Kind::Configuration,
        _ => Kind::Rejected,
    }
}

/// A failed AWS call, with the operation named and the typed SDK error kept
/// as its source.
#[derive(Debug, Error)]
#[error("{operation} failed ({kind:?}{code}): {message}")]
pub struct AwsError {
    /// The API operation, e.g. `DescribeAutoScalingGroups`.
    pub operation: &'static str,
    /// How a handler should treat it.
    pub kind: Kind,
    /// AWS's error code, prefixed with `, ` for display when present.
    code: DisplayCode,
    /// AWS's message, or the transport error's.
    pub message: String,
    /// The typed SDK error.
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

#[derive(Debug)]
struct DisplayCode(Option<String>);

impl fmt::Display for DisplayCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(c) => write!(f, ", {c}"),
            None => Ok(()),
        }
    }
}

impl AwsError {
    /// Wraps an SDK error of `operation`.
    pub fn from_sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let kind = classify(&err);
        let code = err.code().map(str::to_owned);
        let message = match err.message() {
            Some(m) => m.to_owned(),
            None => aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
        };
        AwsError { operation, kind, code: DisplayCode(code), message, source: Box::new(err) }
    }

    /// A request that could not be built (`operation`'s input was invalid):
    /// nothing was sent.
    pub fn construction(operation: &'static str, err: aws_smithy_types::error::operation::BuildError) -> Self {
        let message = err.to_string();
        AwsError { operation, kind: Kind::Rejected, code: DisplayCode(None), message, source: Box::new(err) }
    }

    /// Calls of `operation` that did not finish in the time they had: worth
    /// trying again.
    pub fn timed_out(operation: &'static str, what: &str) -> Self {
        let source = std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned());
        AwsError {
            operation,
            kind: Kind::Transient,
            code: DisplayCode(None),
            message: what.to_owned(),
            source: Box::new(source),
        }
    }

    /// AWS's error code, when the service sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.0.as_deref()
    }

    /// Whether an immediate retry may succeed (throttling, 5xx, timeouts,
    /// contention). A configuration error is not, though it is still worth
    /// surfacing to Lambda: see [`AwsError::worth_redelivering`].
    pub fn is_retryable(&self) -> bool {
        self.kind == Kind::Transient
    }

    /// Whether the event should come back later (Lambda's retries, SQS's
    /// redelivery): a transient failure, or a configuration one an operator
    /// can fix while redeliveries run; never a request AWS rejected as such.
    pub fn worth_redelivering(&self) -> bool {
        self.kind != Kind::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_map_to_kinds() {
        let table = [
            (Some("ThrottlingException"), 400, Kind::Transient),
            (Some("RequestLimitExceeded"), 503, Kind::Transient),
            (Some("ProvisionedThroughputExceededException"), 400, Kind::Transient),
            (Some("AccessDeniedException"), 400, Kind::Configuration),
            (Some("ResourceNotFoundException"), 400, Kind::Configuration),
            (Some("ValidationError"), 400, Kind::Rejected),
            (Some("ConditionalCheckFailedException"), 400, Kind::Rejected),
            (None, 500, Kind::Transient),
            (None, 502, Kind::Transient),
            (None, 429, Kind::Transient),
            (None, 403, Kind::Configuration),
            (None, 404, Kind::Rejected),
        ];
        for (code, status, kind) in table {
            assert_eq!(classify_code(code, status), kind, "{code:?} {status}");
        }
    }

    #[test]
    fn configuration_errors_are_redelivered_but_not_retried_at_once_and_rejections_neither() {
        let error = |kind| AwsError {
            operation: "X",
            kind,
            code: DisplayCode(None),
            message: String::new(),
            source: Box::new(std::io::Error::other("x")),
        };
        let cases = [(Kind::Transient, true, true), (Kind::Configuration, false, true), (Kind::Rejected, false, false)];
        for (kind, retry, redeliver) in cases {
            assert_eq!((error(kind).is_retryable(), error(kind).worth_redelivering()), (retry, redeliver), "{kind:?}");
        }
    }
}
