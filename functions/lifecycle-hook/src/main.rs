use fleetkeeper::{Component, Deps};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use lifecycle_hook::{Function, function_handler};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    fleetkeeper::telemetry::init();
    let function = Function::new(Deps::from_env(Component::LifecycleHook).await?)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| function_handler(event, &function))).await
}
