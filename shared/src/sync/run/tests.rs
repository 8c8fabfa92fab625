//! Paths the emulator cannot stage: an agent that deregisters between
//! the eligibility check and `SendCommand` (`aws-smithy-mocks`).

use aws_sdk_autoscaling::operation::describe_auto_scaling_groups::DescribeAutoScalingGroupsOutput;
use aws_sdk_autoscaling::types::{AutoScalingGroup, Instance, LifecycleState};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::error::InvalidInstanceId;
use aws_sdk_ssm::types::{Command, InstanceInformation, PingStatus};
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
    }
}

fn info(ids: &'static [&'static str]) -> DescribeInstanceInformationOutput {
    DescribeInstanceInformationOutput::builder()
        .set_instance_information_list(Some(
            ids.iter()
                .map(|i| InstanceInformation::builder().instance_id(*i).ping_status(PingStatus::Online).build())
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
    // Online when the wave is planned; i-b's agent is gone when it is sent.
    let online = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .sequence()
        .output(|| info(&["i-a", "i-b"]))
        .output(|| info(&["i-a"]))
        .build();
    let refused =
        mock!(aws_sdk_ssm::Client::send_command).match_requests(|r| r.instance_ids().len() == 2).then_error(|| {
            SendCommandError::InvalidInstanceId(
                InvalidInstanceId::builder().message("Instances [[i-b]] not in a valid state").build(),
            )
        });
    let accepted = mock!(aws_sdk_ssm::Client::send_command)
        .match_requests(|r| r.instance_ids() == ["i-a"])
        .then_output(|| SendCommandOutput::builder().command(Command::builder().command_id("cmd-1").build()).build());
    let clients = Clients {
        autoscaling: mock_client!(aws_sdk_autoscaling, RuleMode::MatchAny, &[&group]),
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, &[&online, &refused, &accepted]),
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&listing]),
        ec2: mock_client!(aws_sdk_ec2, &[]),
        efs: mock_client!(aws_sdk_efs, &[]),
        elbv2: mock_client!(aws_sdk_elasticloadbalancingv2, &[]),
        dynamodb: mock_client!(aws_sdk_dynamodb, &[]),
        region: "us-east-1".into(),
    };
    let store = MemoryTable::default();
    store.apply(&Op::Demand { count: 1 }).await.expect("demand");
    let settings = settings();
    let clock = ManualClock::at(1_000);
    let cx = SyncContext { clients: &clients, store: &store, settings: &settings, clock: &clock };

    let StartOutcome::Started(wave) = cx.start("upload").await.expect("start") else { panic!("not started") };
    assert_eq!(wave.instances, ["i-a", "i-b"]);
    assert_eq!(wave.dropped, ["i-b"]);
    assert_eq!(wave.command_ids, ["cmd-1"]);
    assert_eq!((refused.num_calls(), accepted.num_calls()), (1, 1), "one retry, without the offender");
    let item = store.load().await.expect("load").expect("item");
    let w = item.wave.expect("wave");
    assert_eq!((w.command_ids, w.sent), (vec!["cmd-1".to_owned()], true));
    let record = store.wave(&wave.wave_id).await.expect("wave").expect("record");
    assert_eq!(record.gone, ["i-b"], "the dropped instance does not fail the wave");
}
