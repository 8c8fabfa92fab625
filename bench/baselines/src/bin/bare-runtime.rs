//! The baseline of the cold-start benchmark: `lambda_runtime` answering each
//! event with itself. It starts the way the functions start (the same tokio
//! runtime, the same default tracing subscriber, the same release profile)
//! and does nothing else, so what a function's init costs beyond it is
//! fleetkeeper's own.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move { Ok::<Value, Error>(event.payload) })).await
}
