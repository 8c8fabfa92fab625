//! The CLI's errors: each names the failing AWS call (and, when AWS says
//! access was denied, the permission to grant), and maps to an exit code.

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use fleetkeeper::ConfigError;
use fleetkeeper::error::AwsError;
use thiserror::Error;

/// Exit codes (also in `--help` and the README).
pub mod exit {
    /// All good.
    pub const OK: u8 = 0;
    /// Problems found (doctor), or the request was refused or did not end
    /// as asked (a sync that failed, a live lease without `--force`).
    pub const PROBLEMS: u8 = 1;
    /// Could not check or could not act: configuration, credentials, an AWS
    /// call that failed.
    pub const COULD_NOT: u8 = 2;
}

/// A CLI failure.
#[derive(Debug, Error)]
pub enum CliError {
    /// The configuration contract is not met.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// An AWS call failed.
    #[error("{message}{hint}")]
    Aws {
        /// `service:Operation`, as IAM names the permission.
        call: &'static str,
        /// What AWS said (the call named).
        message: String,
        /// The permission to grant, when access was denied.
        hint: String,
    },
    /// A fleetkeeper operation failed (the shared library's error).
    #[error("{0}")]
    Fleet(String),
    /// Bad usage or input.
    #[error("{0}")]
    Usage(String),
    /// The request was refused, or did not end as asked.
    #[error("{0}")]
    Refused(String),
}

impl CliError {
    /// An SDK error of `call` (the IAM action, `service:Operation`).
    pub fn aws<E>(call: &'static str, e: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let e = AwsError::from_sdk(call, e);
        let hint = denied_hint(e.code(), call);
        CliError::Aws { call, message: e.to_string(), hint }
    }

    /// A shared-library error (its text names the failing call).
    pub fn fleet(e: impl fmt::Display) -> Self {
        let text = e.to_string();
        CliError::Fleet(match permission_in(&text) {
            Some(hint) => format!("{text}{hint}"),
            None => text,
        })
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        match self {
            CliError::Refused(_) => exit::PROBLEMS,
            _ => exit::COULD_NOT,
        }
    }
}

/// The hint for an access-denied error of `call`.
fn denied_hint(code: Option<&str>, call: &str) -> String {
    match code {
        Some(c) if c.contains("AccessDenied") || c == "UnauthorizedOperation" || c == "Forbidden" => {
            format!(" (grant {call}; docs/cli.md#permissions lists what each verb needs)")
        }
        _ => String::new(),
    }
}

/// A shared-library error names its call (`<Operation> failed (...)`, as
/// [`AwsError`] prints it); when access was denied, the hint names it.
fn permission_in(text: &str) -> Option<String> {
    if !(text.contains("AccessDenied") || text.contains("UnauthorizedOperation")) {
        return None;
    }
    let before = &text[..text.find(" failed (")?];
    let op = before.rsplit(|c: char| !c.is_ascii_alphanumeric() && c != ':').next().filter(|w| !w.is_empty())?;
    Some(format!(" (grant the permission for {op}; docs/cli.md#permissions lists what each verb needs)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_call_names_its_operation() {
        let text = "store: GetItem failed (Configuration, AccessDeniedException): User is not authorized";
        assert_eq!(
            permission_in(text).as_deref(),
            Some(" (grant the permission for GetItem; docs/cli.md#permissions lists what each verb needs)")
        );
        assert_eq!(permission_in("GetItem failed (Transient): timeout"), None);
        assert_eq!(permission_in("AccessDenied somewhere without a call"), None);
        assert!(denied_hint(Some("AccessDeniedException"), "lambda:InvokeFunction").contains("lambda:InvokeFunction"));
        assert_eq!(denied_hint(Some("ThrottlingException"), "lambda:InvokeFunction"), "");
    }
}
