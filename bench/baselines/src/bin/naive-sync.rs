//! The burst benchmark's baseline: the bastion script automated per event.
//!
//! For every S3 record it is handed (an SQS batch of EventBridge S3 events,
//! as `codebase-sync` is), it sends one Run Command to every instance of the
//! group running `aws s3 sync` of the codebase: no lock, no coalescing, no
//! quiet period. This is what "run the sync on each upload" costs; it is a
//! baseline to measure against, never something to deploy.

use aws_sdk_ssm::types::Target;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

struct Naive {
    ssm: aws_sdk_ssm::Client,
    groups: Vec<String>,
    source: String,
    destination: String,
}

/// How many S3 object records `payload` carries (an SQS batch of EventBridge
/// events, or one event).
fn records(payload: &Value) -> usize {
    match payload["Records"].as_array() {
        Some(messages) => messages.len(),
        None => usize::from(payload["detail"]["object"]["key"].is_string()),
    }
}

async fn handle(event: LambdaEvent<Value>, naive: &Naive) -> Result<Value, Error> {
    let uploads = records(&event.payload);
    let mut sent = 0;
    for _ in 0..uploads {
        naive
            .ssm
            .send_command()
            .document_name("AWS-RunShellScript")
            .targets(
                Target::builder().key("tag:aws:autoscaling:groupName").set_values(Some(naive.groups.clone())).build(),
            )
            .parameters("commands", vec![format!("aws s3 sync --delete {} {}", naive.source, naive.destination)])
            .send()
            .await?;
        sent += 1;
    }
    Ok(json!({"uploads": uploads, "commands": sent}))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let naive = Naive {
        ssm: aws_sdk_ssm::Client::new(&sdk),
        groups: var("FLEET_ASG_NAMES")?.split(',').map(|g| g.trim().to_owned()).collect(),
        source: format!("s3://{}/{}", var("FLEET_CODEBASE_BUCKET")?, var("FLEET_CODEBASE_PREFIX").unwrap_or_default()),
        destination: var("FLEET_SYNC_DESTINATION")?,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handle(event, &naive))).await
}
