use fleetkeeper::{Component, Deps};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    fleetkeeper::telemetry::init();
    let deps = Deps::from_env(Component::MountTargets).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| mount_targets::function_handler(event, &deps))).await
}
