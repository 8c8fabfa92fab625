//! Tracing set-up. Lambda's advanced logging controls apply:
//! `AWS_LAMBDA_LOG_FORMAT=JSON` gives JSON lines, `AWS_LAMBDA_LOG_LEVEL` (or
//! `RUST_LOG`) the level. Logs carry structured fields, never whole events or
//! credentials.

/// Installs the default Lambda subscriber. Call once, first thing in `main`.
pub fn init() {
    lambda_runtime::tracing::init_default_subscriber();
}
