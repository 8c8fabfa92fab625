//! The event wiring the template deploys, made in the emulator for the
//! operator CLI's `doctor`: the four functions (their environment is the
//! fleet's configuration; moto stores them, nothing runs them here), the
//! template's EventBridge rules targeting them (and the upload queue), and
//! the codebase bucket's events sent to EventBridge.

use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_lambda::types::{Environment, FunctionCode, Runtime};
use aws_sdk_s3::types::{EventBridgeConfiguration, NotificationConfiguration};
use fleetkeeper::Component;

use crate::emulator::{Caller, Emulator, REGION};
use crate::fleet::Fleet;

/// Clients for the wiring.
pub struct Wiring {
    /// Lambda.
    pub lambda: aws_sdk_lambda::Client,
    /// EventBridge.
    pub events: aws_sdk_eventbridge::Client,
}

impl Wiring {
    /// Clients as the test.
    pub async fn new(emulator: &Emulator) -> Self {
        let sdk = emulator.sdk_config_as(Caller::Test).await;
        Wiring { lambda: aws_sdk_lambda::Client::new(&sdk), events: aws_sdk_eventbridge::Client::new(&sdk) }
    }

    /// Creates the functions (named `<fleet>-<function>`, with `env`).
    pub async fn functions(&self, emulator: &Emulator, fleet: &Fleet, env: &[(String, String)]) {
        let role = execution_role(emulator, &fleet.name).await;
        let vars = Environment::builder().set_variables(Some(env.iter().cloned().collect())).build();
        for c in Component::ALL {
            self.lambda
                .create_function()
                .function_name(format!("{}-{}", fleet.name, c.name()))
                .runtime(Runtime::Providedal2023)
                .handler("bootstrap")
                .role(&role)
                .code(FunctionCode::builder().zip_file(aws_smithy_types::Blob::new(tiny_zip())).build())
                .environment(vars.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("create_function: {e:?}"));
        }
    }

    /// Creates the template's rules, enabled, each with its target.
    pub async fn rules(&self, fleet: &Fleet) {
        for (suffix, target) in fleetkeeper::stack::RULES {
            let name = format!("{}-{suffix}", fleet.name);
            self.events
                .put_rule()
                .name(&name)
                .schedule_expression("rate(5 minutes)")
                .state(RuleState::Enabled)
                .send()
                .await
                .unwrap_or_else(|e| panic!("put_rule: {e:?}"));
            let arn = match target {
                Some(c) => {
                    let f = self
                        .lambda
                        .get_function()
                        .function_name(format!("{}-{}", fleet.name, c.name()))
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("get_function: {e:?}"));
                    f.configuration().and_then(|c| c.function_arn()).unwrap_or_default().to_owned()
                }
                None => {
                    let queue = fleet.sync_queue_url.rsplit('/').next().unwrap_or_default();
                    format!("arn:aws:sqs:{REGION}:{}:{queue}", emulator_account(&fleet.sync_queue_url))
                }
            };
            let t = Target::builder().id("1").arn(arn).build().unwrap_or_else(|e| panic!("{e}"));
            self.events
                .put_targets()
                .rule(&name)
                .targets(t)
                .send()
                .await
                .unwrap_or_else(|e| panic!("put_targets: {e:?}"));
        }
    }
}

/// The codebase bucket sends its events to EventBridge.
pub async fn bucket_events(clients: &fleetkeeper::Clients, fleet: &Fleet) {
    let config = NotificationConfiguration::builder()
        .event_bridge_configuration(EventBridgeConfiguration::builder().build())
        .build();
    clients
        .s3
        .put_bucket_notification_configuration()
        .bucket(&fleet.bucket)
        .notification_configuration(config)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put_bucket_notification_configuration: {e:?}"));
}

/// The account id in a queue URL (`http://host/<account>/<name>`).
fn emulator_account(queue_url: &str) -> String {
    let parts: Vec<&str> = queue_url.rsplit('/').collect();
    parts.get(1).map(|s| (*s).to_owned()).unwrap_or_default()
}

/// An execution role (moto checks a function's role exists). The IAM call
/// is made as a raw Query-protocol request: the tests link no IAM client.
async fn execution_role(emulator: &Emulator, fleet: &str) -> String {
    let name = format!("{fleet}-fn");
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let form = format!(
        "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument={}",
        percent_encoding::utf8_percent_encode(trust, percent_encoding::NON_ALPHANUMERIC)
    );
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        emulator.key(Caller::Test)
    );
    let (status, body) = crate::http::post_form(&format!("{}/", emulator.url()), &[("authorization", &auth)], &form)
        .await
        .unwrap_or_else(|e| panic!("CreateRole: {e}"));
    assert_eq!(status, 200, "CreateRole: {body}");
    format!("arn:aws:iam::{}:role/{name}", emulator.account())
}

/// The smallest valid zip (an empty archive): moto stores the code unread.
fn tiny_zip() -> Vec<u8> {
    let mut z = vec![0x50, 0x4b, 0x05, 0x06];
    z.extend([0u8; 18]);
    z
}
