//! What every handler is given: the validated configuration, the SDK clients
//! and the clock, built once at cold start.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{SharedClock, SystemClock};
use crate::{Clients, Component, Config, ConfigError};

/// A handler's dependencies.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The validated configuration.
    pub config: Config,
    /// SDK clients.
    pub clients: Clients,
    /// Injected time.
    pub clock: SharedClock,
}

impl Deps {
    /// Reads and validates the configuration for `component` (an error names
    /// the variable), then builds the clients from the standard chain.
    pub async fn from_env(component: Component) -> Result<Self, ConfigError> {
        let config = Config::from_env(component)?;
        let clients = Clients::from_env(Duration::from_secs(config.aws_attempt_timeout_seconds)).await;
        Ok(Deps { config, clients, clock: Arc::new(SystemClock) })
    }
}
