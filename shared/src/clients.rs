//! The one place SDK clients are built.
//!
//! Region, credentials and endpoint come from the standard `aws-config` chain,
//! so `AWS_ENDPOINT_URL=http://127.0.0.1:PORT` points every client at the local
//! emulator with no code branch. Clients are built once at cold start and
//! passed down (they are cheap `Arc` clones).
//!
//! Every client shares one HTTPS client, the SDK's default (rustls with
//! aws-lc, the system's root certificates, the proxy from the environment),
//! with one change: the SDK "validates" it once per client it builds, each
//! time building a connector it throws away (root certificates parsed into
//! trust anchors again) so that the certificates load at init. fleetkeeper
//! builds eight clients and the credential chain a ninth: [`https_client`]
//! does that warm-up once. Init, measured by callgrind: BENCHMARKS.md.
//!
//! Every attempt of a call is bounded (`FLEET_AWS_ATTEMPT_TIMEOUT_SECONDS`):
//! the SDK sets no read timeout by default, so a connection that hangs
//! without a reset would hold the invocation until Lambda's timeout; bounded,
//! the attempt is abandoned and retried under the SDK's standard retry
//! policy (three attempts, exponential backoff with jitter).

use std::sync::OnceLock;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::config_bag::ConfigBag;

/// The SDK's default HTTPS client (`aws-smithy-runtime`'s
/// `default_https_client` at the behavior version fleetkeeper uses: rustls
/// with aws-lc, the proxy from `HTTPS_PROXY`/`NO_PROXY`), to be shared by
/// every client, its init warm-up done once.
pub fn https_client() -> SharedHttpClient {
    let inner = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    SharedHttpClient::new(WarmOnce { inner, warmed: OnceLock::new() })
}

/// An HTTP client whose base-config validation (the SDK's warm-up: a
/// connector built and dropped so the root certificates load at init) runs
/// for the first client only. Connectors are still built, once per timeout
/// pair, and cached by the inner client, on first use as before.
#[derive(Debug)]
struct WarmOnce {
    inner: SharedHttpClient,
    warmed: OnceLock<Result<(), String>>,
}

impl HttpClient for WarmOnce {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.inner.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        runtime_components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        // The first client's answer, for every client (an error stays one).
        let first = self
            .warmed
            .get_or_init(|| self.inner.validate_base_client_config(runtime_components, cfg).map_err(|e| e.to_string()));
        first.clone().map_err(BoxError::from)
    }

    fn validate_final_config(&self, runtime_components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

/// Every SDK client fleetkeeper uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// EC2: instances, subnets, security groups.
    pub ec2: aws_sdk_ec2::Client,
    /// Auto Scaling: groups, lifecycle actions.
    pub autoscaling: aws_sdk_autoscaling::Client,
    /// ELBv2: target registration and health.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// EFS: mount targets.
    pub efs: aws_sdk_efs::Client,
    /// SSM: the sync document, managed-instance status.
    pub ssm: aws_sdk_ssm::Client,
    /// DynamoDB: the lock table.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// S3: the codebase fingerprint.
    pub s3: aws_sdk_s3::Client,
    /// SQS: the delayed re-trigger.
    pub sqs: aws_sdk_sqs::Client,
    /// The region the clients talk to (the sync document's `region`).
    pub region: String,
}

impl Clients {
    /// Loads the standard configuration chain and builds every client, each
    /// attempt of a call bounded by `attempt_timeout`.
    pub async fn from_env(attempt_timeout: Duration) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(3_100).min(attempt_timeout))
            .operation_attempt_timeout(attempt_timeout)
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .http_client(https_client())
            .load()
            .await;
        Self::new(&sdk)
    }

    /// Builds every client from one shared SDK configuration.
    pub fn new(sdk: &SdkConfig) -> Self {
        Clients {
            ec2: aws_sdk_ec2::Client::new(sdk),
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(sdk),
            efs: aws_sdk_efs::Client::new(sdk),
            ssm: aws_sdk_ssm::Client::new(sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            s3: aws_sdk_s3::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            region: sdk.region().map(|r| r.as_ref().to_owned()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_config::Region;
    use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;

    use super::*;

    #[derive(Debug)]
    struct Never;

    impl HttpConnector for Never {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            HttpConnectorFuture::ready(Err(aws_smithy_runtime_api::client::result::ConnectorError::other(
                "not in this test".into(),
                None,
            )))
        }
    }

    /// Counts the SDK's validations of it.
    #[derive(Debug, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl HttpClient for Counting {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(Never)
        }

        fn validate_base_client_config(&self, _: &RuntimeComponentsBuilder, _: &ConfigBag) -> Result<(), BoxError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn every_client_shares_one_warm_up() {
        let count = Arc::new(AtomicUsize::new(0));
        let inner = SharedHttpClient::new(Counting(count.clone()));
        let shared = SharedHttpClient::new(WarmOnce { inner, warmed: OnceLock::new() });
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .http_client(shared)
            .build();
        let _clients = Clients::new(&sdk);
        assert_eq!(count.load(Ordering::SeqCst), 1, "eight clients, one warm-up");

        // Without it, the SDK warms up once per client.
        let count = Arc::new(AtomicUsize::new(0));
        let plain = sdk.to_builder().http_client(SharedHttpClient::new(Counting(count.clone()))).build();
        let _clients = Clients::new(&plain);
        assert_eq!(count.load(Ordering::SeqCst), 8);
    }
}
