//! Paths the emulator cannot stage: an instance that shuts down between the
//! eligibility check and `SendCommand` while SSM still lists it `Online`
//! (`aws-smithy-mocks`; the emulator test of the same path is in
//! `tests/tests/emulator/sync_real.rs`).

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{InstanceStateName, Reservation};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_ssm::operation::describe_document::DescribeDocumentOutput;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::error::InvalidInstanceId;
use aws_sdk_ssm::types::{Command, DocumentDescription, DocumentParameter, InstanceInformation, PingStatus};
use aws_smithy_mocks::{RuleMode, mock, mock_client};

use super::*;
use crate::clock::ManualClock;
use crate::store::MemoryTable;
use crate::sync::state::Op;
use crate::sync::store::FleetStore;

fn settings() -> SyncSettings {
    let codebase = CodebaseConfig {
        bucket: "code-bucket".into(),
        prefix: "app/".into(),
        excludes: vec![],
        destination: Some("/var/www".into()),
        document: Some("fk-sync".into()),
        region: None,
    };
    SyncSettings {
        fleet: "web".into(),
        asg_names: vec!["web".into()],
        excludes: Excludes::new(&[]).expect("globs"),
        codebase,
        destination: "/var/www".into(),
        document: "fk-sync".into(),
        lock_table: "locks".into(),
        lease_ms: 60_000,
        rate: RateControls { max_concurrency: "50".into(), max_errors: "0".into() },
        quarantine_after: 3,
        dry_run: false,
        region: "us-east-1".into(),
        release: crate::config::ReleaseConfig {
            quiet_seconds: 0,
            max_delay_seconds: 600,
            marker: None,
            max_shrink_percent: 50,
            manifest_bucket: None,
            keep_releases: 3,
        },
        trigger_queue_url: None,
        manifest: None,
    }
}

fn info(ids: &'static [&'static str]) -> DescribeInstanceInformationOutput {
    DescribeInstanceInformationOutput::builder()
        .set_instance_information_list(Some(
            ids.iter()
                .map(|i| {
                    InstanceInformation::builder()
                        .instance_id(*i)
                        .ping_status(PingStatus::Online)
                        .agent_version("3.3.2746.0")
                        .build()
                })
                .collect(),
        ))
        .build()
}

#[tokio::test]
async fn invalid_instance_id_drops_the_offenders_and_retries_the_chunk_once() {
    let group = mock!(aws_sdk_autoscaling::Client::describe_auto_scaling_groups).then_output(|| {
        let member = |id: &str| {
            Instance::builder()
                .instance_id(id)
                .lifecycle_state(LifecycleState::InService)
                .health_status("Healthy")
                .availability_zone("az-a")
                .protected_from_scale_in(false)
                .build()
        };
        DescribeAutoScalingGroupsOutput::builder()
            .auto_scaling_groups(
                AutoScalingGroup::builder()
                    .auto_scaling_group_name("web")
                    .instances(member("i-a"))
                    .instances(member("i-b"))
                    .build(),
            )
            .build()
    });
    let listing = mock!(aws_sdk_s3::Client::list_objects_v2).then_output(|| ListObjectsV2Output::builder().build());
    // Online when the wave is planned, and still listed Online when SSM
    // refuses it: only EC2 says it is shutting down.
    let online = mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(|| info(&["i-a", "i-b"]));
    let document = mock!(aws_sdk_ssm::Client::describe_document).then_output(|| {
        DescribeDocumentOutput::builder()
            .document(
                DocumentDescription::builder()
                    .name("fk-sync")
                    .document_version("4")
                    .set_parameters(Some(
                        ["bucket", "prefix", "destination", "excludes", "generation", "region", "epoch"]
                            .iter()
                            .map(|n| DocumentParameter::builder().name(*n).build())
                            .collect(),
                    ))
                    .build(),
            )
            .build()
    });
    let ec2_state = mock!(aws_sdk_ec2::Client::describe_instances).then_output(|| {
        let instance = |id: &str, state: InstanceStateName| {
            aws_sdk_ec2::types::Instance::builder()
                .instance_id(id)
                .state(aws_sdk_ec2::types::InstanceState::builder().name(state).build())
                .build()
        };
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(instance("i-a", InstanceStateName::Running))
                    .instances(instance("i-b", InstanceStateName::ShuttingDown))
                    .build(),
            )
            .build()
    });
    let refused =
        mock!(aws_sdk_ssm::Client::send_command).match_requests(|r| r.instance_ids().len() == 2).then_error(|| {
            SendCommandError::InvalidInstanceId(
                InvalidInstanceId::builder().message("Instances [[i-b]] not in a valid state").build(),
            )
        });
    let accepted = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| {
            r.instance_ids() == ["i-a"] && r.document_version() == Some("4") && r.timeout_seconds().is_some()
        })
        .then_output(|| SendCommandOutput::builder().command(Command::builder().command_id("cmd-1").build()).build());
    let clients = Clients {
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, &[&group]),
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&online, &document, &refused, &accepted]),
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&listing]),
        ec2: mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[&ec2_state]),
        efs: mock_client!(aws_sdk_efs, &[]),
        elbv2: mock_client!(aws_sdk_elasticloadbalancingv2, &[]),
        dynamodb: mock_client!(aws_sdk_dynamodb, &[]),
        sqs: mock_client!(aws_sdk_sqs, &[]),
        region: "us-east-1".into(),
    };
    let store = MemoryTable::default();
    store
        .apply(&Op::Demand {
            count: 1,
            epoch: "0123456789abcdef0123456789abcdef".into(),
            changes: None,
            allow_shrink: false,
        })
        .await
        .expect("demand");
    let settings = settings();
    let clock = ManualClock::at(1_000);
    let cx = SyncContext {
        clients: &clients,
        store: &store,
        settings: &settings,
        clock: &clock,
        until: u64::MAX,
        deadline: u64::MAX,
    };

    let StartOutcome::Started(wave) = cx.start("upload", StartWhen::Now).await.expect("start") else {
        panic!("not started")
    };
    assert_eq!(wave.instances, ["i-a", "i-b"]);
    assert_eq!(wave.gone, ["i-b"]);
    assert_eq!(wave.command_ids, ["cmd-1"]);
    assert_eq!(
        (refused.num_calls(), accepted.num_calls()),
        (1, 1),
        "one retry, without the instance that left, pinned to version 4"
    );
    let item = store.load().await.expect("load").expect("item");
    let w = item.wave.expect("wave");
    assert_eq!((w.command_ids, w.sent), (vec!["cmd-1".to_owned()], true));
    let record = store.wave(&wave.wave_id).await.expect("wave").expect("record");
    assert_eq!(record.gone, ["i-b"], "the instance that left does not fail the wave");
    assert_eq!(record.document_version, "4");
}
