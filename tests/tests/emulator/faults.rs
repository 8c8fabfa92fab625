//! The fault proxy and the harness's Lambda-like endings: what a function
//! sees of each injected fault, a SIGKILL at a chosen AWS call and the cold
//! start after it, the deadline Lambda enforces, and a real bootstrap on the
//! test clock.

use std::time::Duration;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use fleetkeeper::Component;
use fleetkeeper::clock::Clock;
use fleetkeeper::sync::state::FleetItem;
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::{Caller, TestClock};
use fleetkeeper_tests::events;
use fleetkeeper_tests::faults::{Fault, FaultProxy, Plan};
use fleetkeeper_tests::fleet::{Fleet, FleetSpec, create_sync_document, upload};
use fleetkeeper_tests::inprocess::deployed_retries;
use fleetkeeper_tests::runtime::{LambdaProcess, Outcome};

/// The emulator behind a proxy that faults `caller`'s calls, and `caller`'s
/// clients through it (one attempt per call: the SDK's view of one fault).
async fn proxied(caller: Caller) -> (Emulator, FaultProxy, fleetkeeper::Clients) {
    let emulator = Emulator::from_env();
    let proxy = FaultProxy::start(emulator.url()).await;
    proxy.fault(&emulator.key(caller), None);
    let behind = emulator.behind(proxy.url());
    let clients = fleetkeeper::Clients::new(&behind.sdk_config_as(caller).await);
    (emulator, proxy, clients)
}

#[tokio::test]
async fn every_protocol_reads_an_injected_throttle_as_its_service_s_throttling_error() {
    let caller = Caller::Function(Component::SyncCompletion);
    let (emulator, proxy, c) = proxied(caller).await;
    proxy.set_plan(Plan { limit: None, ..Plan::next(Fault::Throttle, 0) });
    let codes = [
        ("ssm", c.ssm.describe_instance_information().send().await.err().and_then(|e| e.code().map(str::to_owned))),
        ("dynamodb", c.dynamodb.list_tables().send().await.err().and_then(|e| e.code().map(str::to_owned))),
        ("ec2", c.ec2.describe_instances().send().await.err().and_then(|e| e.code().map(str::to_owned))),
        (
            "autoscaling",
            c.autoscaling.describe_auto_scaling_groups().send().await.err().and_then(|e| e.code().map(str::to_owned)),
        ),
        ("elbv2", c.elbv2.describe_target_groups().send().await.err().and_then(|e| e.code().map(str::to_owned))),
        ("s3", c.s3.list_buckets().send().await.err().and_then(|e| e.code().map(str::to_owned))),
    ];
    let throttling = [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "Throttling",
        "SlowDown",
    ];
    for (service, code) in &codes {
        let code = code.as_deref().unwrap_or_else(|| panic!("{service}: no error code"));
        assert!(throttling.contains(&code), "{service}: {code}");
    }
    assert_eq!(emulator.calls(caller).await.total(), 0, "a throttled call never reaches AWS");
    assert_eq!(proxy.counts().get(&Fault::Throttle), Some(&6));
}

#[tokio::test]
async fn the_sdk_retries_injected_throttles_and_server_errors_then_succeeds() {
    let caller = Caller::Function(Component::SyncCompletion);
    let emulator = Emulator::from_env();
    let proxy = FaultProxy::start(emulator.url()).await;
    proxy.fault(&emulator.key(caller), None);
    // The SDK's defaults, as a deployed function has them: three attempts.
    let config = aws_sdk_ssm::config::Builder::from(&emulator.behind(proxy.url()).sdk_config_as(caller).await)
        .retry_config(aws_config::retry::RetryConfig::standard())
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(config);
    for fault in [Fault::Throttle, Fault::ServerError, Fault::DropBefore] {
        proxy.set_plan(Plan::next(fault, 2));
        ssm.describe_instance_information()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{fault:?} twice, then the third attempt: {e:?}"));
    }
    assert_eq!(emulator.calls(caller).await.of("DescribeInstanceInformation"), 3, "one served call per fault kind");
    assert_eq!(proxy.injections().len(), 6);
}

#[tokio::test]
async fn a_dropped_answer_leaves_the_write_committed() {
    let caller = Caller::Function(Component::SyncCompletion);
    let (emulator, proxy, c) = proxied(caller).await;
    let test = emulator.clients().await;
    let table = fleetkeeper_tests::fleet::lock_table(&test, &fleetkeeper_tests::emulator::unique("t")).await;
    proxy.set_plan(Plan::next(Fault::DropAfter, 1));
    let put = c
        .dynamodb
        .put_item()
        .table_name(&table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("fleet".into()))
        .send()
        .await;
    let err = put.expect_err("the answer was dropped");
    assert!(matches!(err, aws_sdk_dynamodb::error::SdkError::DispatchFailure(_)), "{err:?}");
    let got = test
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("fleet".into()))
        .send()
        .await
        .expect("get");
    assert!(got.item().is_some(), "yet the write committed");
}

/// A fleet with the sync document and one object, `sync-completion`'s
/// environment for it, and the proxy faulting that function.
async fn sweep_setup(instances: i32) -> (Emulator, Fleet, FaultProxy, Vec<(String, String)>) {
    let emulator = Emulator::from_env();
    let clients = emulator.clients().await;
    let spec = FleetSpec { instances, launch_hook: false, terminate_hook: false, ..FleetSpec::default() };
    let fleet = Fleet::provision(&clients, &spec).await;
    create_sync_document(&clients, &fleet).await;
    upload(&clients, &fleet, &["index.php".into()]).await;
    for id in fleet.members(&clients).await.into_iter().map(|m| m.id) {
        emulator.set_agent(&id, Some("Online")).await;
    }
    let proxy = FaultProxy::start(emulator.url()).await;
    let mut env = fleet.env();
    env.extend(emulator.behind(proxy.url()).aws_env_for(Component::SyncCompletion));
    (emulator, fleet, proxy, env)
}

/// `sync-completion` as a real bootstrap on `clock`, its AWS calls faulted by
/// `proxy` (a `Kill` SIGKILLs it).
async fn faulted_sweep(
    emulator: &Emulator,
    proxy: &FaultProxy,
    env: &[(String, String)],
    clock: &TestClock,
) -> LambdaProcess {
    let sweep = LambdaProcess::start_on_clock(Component::SyncCompletion, env, clock).await;
    proxy.fault(&emulator.key(Caller::Function(Component::SyncCompletion)), Some(sweep.killer()));
    sweep
}

async fn item(emulator: &Emulator, fleet: &Fleet) -> FleetItem {
    fleet.item(&emulator.clients().await).await
}

#[tokio::test]
async fn a_kill_at_an_aws_call_ends_the_invocation_and_the_next_one_cold_starts() {
    let (emulator, fleet, proxy, env) = sweep_setup(1).await;
    let clock = TestClock::new(&emulator).await;
    let mut sweep = faulted_sweep(&emulator, &proxy, &env, &clock).await;
    proxy.set_plan(Plan::next(Fault::Kill, 1));

    let first = sweep.invoke(events::scheduled()).await;
    let Outcome::Error { error_type, error_message } = &first else { panic!("{first:?}") };
    assert_eq!(error_type, "Runtime.ExitError", "{error_message}");
    assert!(error_message.contains("killed by the harness"), "{error_message}");
    assert_eq!(proxy.injections().len(), 1);

    // Lambda's retry of the same event: a fresh process, the sweep done.
    let second = sweep.invoke(events::scheduled()).await.response();
    assert_eq!(sweep.cold_starts(), 2);
    assert!(second.to_string().contains("wave"), "{second}");
    assert!(item(&emulator, &fleet).await.wave.is_some(), "the retry started the wave");
    sweep.stop().await;
}

#[tokio::test]
async fn lambda_ends_an_invocation_at_its_deadline_and_starts_afresh() {
    let (emulator, _fleet, proxy, env) = sweep_setup(0).await;
    let clock = TestClock::new(&emulator).await;
    let mut sweep = faulted_sweep(&emulator, &proxy, &env, &clock).await;
    proxy.set_plan(Plan { hold: Duration::from_secs(120), ..Plan::next(Fault::Timeout, 1) });
    let hung = sweep.invoke_with_deadline(events::scheduled(), Duration::from_secs(2)).await;
    let Outcome::Error { error_type, .. } = &hung else { panic!("{hung:?}") };
    assert_eq!(error_type, "Sandbox.Timedout");
    let next = sweep.invoke(events::scheduled()).await;
    assert!(matches!(next, Outcome::Response(_)), "{next:?}");
    assert_eq!(sweep.cold_starts(), 2);
    sweep.stop().await;
}

#[tokio::test]
async fn a_hung_call_is_abandoned_at_the_attempt_timeout_and_retried_within_the_deadline() {
    let (emulator, fleet, proxy, mut env) = sweep_setup(1).await;
    deployed_retries(&mut env, 1);
    let clock = TestClock::new(&emulator).await;
    let mut sweep = faulted_sweep(&emulator, &proxy, &env, &clock).await;
    proxy.set_plan(Plan { hold: Duration::from_secs(120), ..Plan::next(Fault::Timeout, 1) });
    let answer = sweep.invoke_with_deadline(events::scheduled(), Duration::from_secs(20)).await;
    assert!(matches!(answer, Outcome::Response(_)), "{answer:?}");
    assert!(item(&emulator, &fleet).await.wave.is_some(), "the sweep went on after the hung call");
    sweep.stop().await;
}

#[tokio::test]
async fn a_bootstrap_on_the_test_clock_lives_at_the_test_clock_s_time() {
    let (emulator, fleet, _proxy, env) = sweep_setup(1).await;
    let clock = TestClock::new(&emulator).await;
    let ten_days = Duration::from_secs(10 * 86_400);
    clock.advance(ten_days).await;
    let mut sweep = LambdaProcess::start_on_clock(Component::SyncCompletion, &env, &clock).await;
    sweep.invoke(events::scheduled()).await.response();
    let wave = item(&emulator, &fleet).await.wave.expect("the first sweep starts a wave");
    let wall = fleetkeeper::clock::SystemClock.now_ms();
    assert!(
        wave.lease_expires_at > wall + ten_days.as_millis() as u64,
        "the lease was taken at the test clock's now ({} vs wall {wall})",
        wave.lease_expires_at
    );
    assert!(wave.lease_expires_at <= clock.now_ms() + 900_000);
    sweep.stop().await;
}

/// The commands of the fleet's document, as SSM lists them.
async fn commands(emulator: &Emulator, fleet: &Fleet) -> Vec<String> {
    let ssm = emulator.clients().await.ssm;
    let listed = ssm.list_commands().send().await.expect("list_commands");
    listed
        .commands()
        .iter()
        .filter(|c| c.document_name() == Some(fleet.document.as_str()))
        .filter_map(|c| c.command_id().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_lost_send_command_answer_never_makes_a_second_command() {
    // SendCommand has no idempotency token: a retry after a served attempt
    // whose answer was lost would be a second command, run at once on the
    // same instances (found by the fault campaign, seed 3 at 5 %).
    for fault in [Fault::DropAfter, Fault::Timeout, Fault::Throttle] {
        let (emulator, fleet, proxy, mut env) = sweep_setup(2).await;
        deployed_retries(&mut env, 1);
        let clock = TestClock::new(&emulator).await;
        let mut sweep = faulted_sweep(&emulator, &proxy, &env, &clock).await;
        proxy.set_plan(Plan::next(fault, 1).only("SendCommand"));
        sweep.invoke(events::scheduled()).await.response();
        assert_eq!(proxy.injections().len(), 1, "{fault:?}");
        let sent = commands(&emulator, &fleet).await;
        assert_eq!(sent.len(), 1, "{fault:?}: one command, whatever the SDK heard");
        let wave = item(&emulator, &fleet).await.wave.expect("a wave");
        if wave.command_ids.is_empty() {
            // Not listed yet when looked up by its comment: in doubt, the
            // wave paused until the listing is trustworthy, then resumed.
            assert!(!wave.sent, "{fault:?}: {wave:?}");
            clock.advance(Duration::from_millis(fleetkeeper::ssm_document::run::LISTING_LAG_MS + 1_000)).await;
            sweep.invoke(events::scheduled()).await.response();
        }
        assert_eq!(commands(&emulator, &fleet).await, sent, "{fault:?}: still one command");
        let wave = item(&emulator, &fleet).await.wave.expect("a wave");
        assert_eq!(wave.command_ids, sent, "{fault:?}: the wave recorded that command");
        sweep.stop().await;
    }
}

#[tokio::test]
async fn a_sender_killed_mid_send_leaves_a_wave_the_first_sweep_after_its_deadline_resumes() {
    let (emulator, fleet, proxy, env) = sweep_setup(1).await;
    let clock = TestClock::new(&emulator).await;
    let mut sweep = faulted_sweep(&emulator, &proxy, &env, &clock).await;
    // The first sweep starts a wave (the existing codebase) and dies at its SendCommand.
    proxy.set_plan(Plan { weights: [0, 0, 0, 0, 0, 1], ..Plan::next(Fault::Kill, 1) }.only("SendCommand"));
    let killed = sweep.invoke_with_deadline(events::scheduled(), Duration::from_secs(60)).await;
    assert!(matches!(&killed, Outcome::Error { error_type, .. } if error_type == "Runtime.ExitError"), "{killed:?}");
    let wave = item(&emulator, &fleet).await.wave.expect("the wave it started");
    assert!(!wave.sent);
    assert!(
        wave.lease_expires_at <= clock.now_ms() + 60_000 + 30_000,
        "the sender's lease ends with its deadline, not 900 s later"
    );
    // The next schedule, two minutes on: the sender is surely gone.
    clock.advance(Duration::from_secs(120)).await;
    sweep.invoke(events::scheduled()).await.response();
    let resumed = item(&emulator, &fleet).await.wave.expect("still the wave");
    assert_eq!(resumed.id, wave.id);
    assert!(resumed.sent && resumed.command_ids.len() == 1, "resumed and sent: {resumed:?}");
    assert_eq!(commands(&emulator, &fleet).await.len(), 1);
    sweep.stop().await;
}
