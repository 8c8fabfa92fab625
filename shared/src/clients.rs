//! The one place SDK clients are built.
//!
//! Region, credentials and endpoint come from the standard `aws-config` chain,
//! so `AWS_ENDPOINT_URL=http://127.0.0.1:PORT` points every client at the local
//! emulator with no code branch. Clients are built once at cold start and
//! passed down (they are cheap `Arc` clones).
//!
//! Every attempt of a call is bounded (`FLEET_AWS_ATTEMPT_TIMEOUT_SECONDS`):
//! the SDK sets no read timeout by default, so a connection that hangs
//! without a reset would hold the invocation until Lambda's timeout; bounded,
//! the attempt is abandoned and retried under the SDK's standard retry
//! policy (three attempts, exponential backoff with jitter).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

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
        let sdk = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts).load().await;
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
