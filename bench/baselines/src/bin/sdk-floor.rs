//! The cold-start benchmark's second baseline: the floor of any Rust Lambda
//! that calls AWS. `lambda_runtime` (as `bare-runtime`) plus the standard
//! `aws-config` chain and one SDK client (DynamoDB) at init, the same HTTPS
//! client fleetkeeper shares; it answers with the event, no call.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(fleetkeeper::clients::https_client())
        .load()
        .await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let _client = &dynamodb;
        async move { Ok::<Value, Error>(event.payload) }
    }))
    .await
}
