use fleetkeeper::{Component, Deps};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use sync_completion::{Function, function_handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    fleetkeeper::telemetry::init();
    let function = Function::new(Deps::from_env(Component::SyncCompletion).await?)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| function_handler(event, &function))).await
}
