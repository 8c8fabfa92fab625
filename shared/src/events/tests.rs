//! Envelope tests against JSON fixtures in the shapes AWS documents
//! (`shared/fixtures/events/`), including hostile and malformed ones.

use serde_json::{Value, json};

use super::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn events(name: &str) -> Vec<Event> {
    parse(&fixture(name)).into_iter().map(|r| r.event).collect()
}

fn only(name: &str) -> Event {
    let mut all = events(name);
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    all.remove(0)
}

fn skip_reasons(all: &[Event]) -> Vec<SkipReason> {
    all.iter()
        .map(|e| match e {
            Event::Skipped(s) => s.reason,
            other => panic!("expected a skip, got {other:?}"),
        })
        .collect()
}

#[test]
fn lifecycle_launch_via_eventbridge() {
    let Event::Lifecycle(a) = only("lifecycle-launch-eventbridge.json") else { panic!() };
    assert_eq!(
        a,
        LifecycleAction {
            auto_scaling_group_name: "web-a".into(),
            lifecycle_hook_name: "fk-launch".into(),
            instance_id: "i-1234567890abcdef0".into(),
            transition: Transition::Launching,
            token: Some("87654321-4321-4321-4321-210987654321".into()),
            origin: Some(Place::Ec2),
            destination: Some(Place::AutoScalingGroup),
            notification_metadata: Some("{\"purpose\": \"gate\"}".into()),
            // The envelope's `time`, 2026-11-01T00:00:00Z.
            time_ms: Some(1_793_491_200_000),
        }
    );
}

#[test]
fn lifecycle_terminate_via_eventbridge() {
    let Event::Lifecycle(a) = only("lifecycle-terminate-eventbridge.json") else { panic!() };
    assert_eq!(a.transition, Transition::Terminating);
    assert_eq!((a.origin, a.destination), (Some(Place::AutoScalingGroup), Some(Place::Ec2)));
    assert_eq!(a.notification_metadata, None);
}

#[test]
fn lifecycle_leaving_the_warm_pool_keeps_origin_and_destination() {
    let Event::Lifecycle(a) = only("lifecycle-warm-pool-to-asg-eventbridge.json") else { panic!() };
    assert_eq!((a.origin, a.destination), (Some(Place::WarmPool), Some(Place::AutoScalingGroup)));
}

#[test]
fn lifecycle_via_sqs_hook_target_with_test_notification() {
    let received = parse(&fixture("lifecycle-launch-sqs.json"));
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].via, Via::Sqs { message_id: Some("059f36b4-87a3-44ab-83d2-661975830a7d".into()) });
    let Event::Lifecycle(a) = &received[0].event else { panic!("{:?}", received[0]) };
    assert_eq!(a.instance_id, "i-0123456789abcdef1");
    assert_eq!((a.origin, a.destination), (Some(Place::Ec2), Some(Place::WarmPool)));
    assert_eq!(a.notification_metadata.as_deref(), Some("free text, not JSON"));
    assert_eq!(a.time_ms, Some(1_793_491_201_123), "the hook message's Time, with its milliseconds");
    assert_eq!(
        received[1].event,
        Event::LifecycleTest(LifecycleTestNotification { auto_scaling_group_name: Some("web-a".into()) })
    );
}

#[test]
fn notification_metadata_sent_as_json_is_kept_as_text() {
    let mut payload = fixture("lifecycle-launch-eventbridge.json");
    payload["detail"]["NotificationMetadata"] = json!({"role": "web"});
    let Event::Lifecycle(a) = parse(&payload).remove(0).event else { panic!() };
    assert_eq!(a.notification_metadata.as_deref(), Some(r#"{"role":"web"}"#));
}

#[test]
fn s3_notification_keys_are_form_decoded() {
    let all = events("s3-notification-direct.json");
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[0],
        Event::S3(S3Change {
            bucket: "code-bucket".into(),
            key: "app/public/my file+v1=ü.php".into(),
            change: S3ChangeKind::Created,
            sequencer: Some("0055AED6DCD90281E5".into()),
            time_ms: Some(1_793_491_200_123),
        })
    );
    let Event::S3(removed) = &all[1] else { panic!() };
    assert_eq!((removed.key.as_str(), removed.change), ("app/index.php", S3ChangeKind::Removed));
    assert_eq!(skip_reasons(&all[2..3]), [SkipReason::NotAContentChange], "tagging is not a content change");
    let Event::S3(expired) = &all[3] else { panic!("{:?}", all[3]) };
    assert_eq!((expired.key.as_str(), expired.change), ("app/old.php", S3ChangeKind::Removed));
}

#[test]
fn s3_notifications_through_sns_to_the_function_are_understood() {
    // S3 -> SNS -> Lambda: the record says `EventSource` (capital E) and the
    // S3 notification is the SNS message (review L10).
    let all = events("s3-notification-sns-lambda.json");
    let Event::S3(change) = &all[0] else { panic!("{all:?}") };
    assert_eq!((change.bucket.as_str(), change.key.as_str()), ("code-bucket", "app/from sns.php"));
    assert_eq!(skip_reasons(&all[1..]), [SkipReason::Malformed]);
}

#[test]
fn s3_notifications_in_sqs_and_sns_bodies() {
    let received = parse(&fixture("s3-notification-sqs.json"));
    let keys: Vec<_> = received
        .iter()
        .filter_map(|r| match &r.event {
            Event::S3(c) => Some(c.key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, ["app/vendor/lib one.php", "app/config/app.ini", "app/via-sns.php"]);
    assert!(received.iter().any(|r| r.event == Event::S3Test(S3TestEvent { bucket: Some("code-bucket".into()) })));
    // Both records of the first message share its message id.
    assert_eq!(received[0].via, received[1].via);
    assert_eq!(received[0].via, Via::Sqs { message_id: Some("c80e8021-a70a-42c7-a470-796e1186f753".into()) });
}

#[test]
fn eventbridge_keys_are_never_decoded() {
    let Event::S3(c) = only("s3-eventbridge-created.json") else { panic!() };
    assert_eq!(c.key, "app/my+file%41.php");
    assert_eq!(c.change, S3ChangeKind::Created);
    // `time` is whole seconds: the change is taken at the end of its second.
    assert_eq!(c.time_ms, Some(1_793_491_200_999));
}

#[test]
fn eventbridge_s3_in_sqs() {
    let received = parse(&fixture("s3-eventbridge-deleted-sqs.json"));
    assert_eq!(received.len(), 1);
    assert!(matches!(received[0].via, Via::Sqs { .. }));
    let Event::S3(c) = &received[0].event else { panic!() };
    assert_eq!((c.key.as_str(), c.change), ("app/gone.php", S3ChangeKind::Removed));
}

#[test]
fn s3_restore_is_not_a_content_change() {
    assert_eq!(skip_reasons(&[only("s3-eventbridge-restore.json")]), [SkipReason::NotAContentChange]);
}

#[test]
fn ssm_command_status_change_with_array_parameters() {
    let Event::CommandStatus(c) = only("ssm-command-status-change.json") else { panic!() };
    assert_eq!(c.command_id, "e8d3c0e4-71f7-4491-898f-c9b35bee5f3b");
    assert_eq!(c.document_name.as_deref(), Some("fleetkeeper-sync"));
    assert_eq!(c.status, CommandStatus::Success);
    assert_eq!(c.parameters["generation"], ["7"]);
    assert_eq!(c.parameters["excludes"], ["media/*"]);
    assert_eq!(c.instance_ids, ["i-1234567890abcdef0", "i-0a1b2c3d4e5f67890"]);
}

#[test]
fn ssm_invocation_status_change() {
    let Event::InvocationStatus(i) = only("ssm-invocation-status-change.json") else { panic!() };
    assert_eq!(i.instance_id, "i-1234567890abcdef0");
    assert_eq!(i.status, CommandStatus::Failed);
    assert!(i.status.is_terminal() && !i.status.is_success());
}

#[test]
fn command_statuses_terminal_or_not() {
    for s in ["Success", "Failed", "TimedOut", "Cancelled", "DeliveryTimedOut", "Undeliverable", "Terminated"] {
        assert!(CommandStatus::parse(s).is_terminal(), "{s}");
    }
    for s in ["Pending", "InProgress", "Delayed", "Cancelling", "SomethingNew"] {
        assert!(!CommandStatus::parse(s).is_terminal(), "{s}");
    }
}

#[test]
fn scheduled_event_names_its_rule() {
    assert_eq!(
        only("scheduled-event.json"),
        Event::Scheduled(ScheduledEvent {
            rule: Some("arn:aws:events:us-east-1:123456789012:rule/fleetkeeper-reconcile".into()),
            time: Some("2026-11-01T00:00:00+00:00".into()),
        })
    );
}

#[test]
fn other_autoscaling_events_name_their_group() {
    assert_eq!(
        only("autoscaling-launch-successful.json"),
        Event::AutoScaling(AutoScalingNotice {
            detail_type: "EC2 Instance Launch Successful".into(),
            auto_scaling_group_name: Some("web-a".into()),
            instance_id: Some("i-1234567890abcdef0".into()),
        })
    );
    let cloudtrail = json!({
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.autoscaling",
        "detail": {"eventName": "UpdateAutoScalingGroup", "requestParameters": {"autoScalingGroupName": "web-b"}}
    });
    let Event::AutoScaling(n) = parse(&cloudtrail).remove(0).event else { panic!() };
    assert_eq!(n.auto_scaling_group_name.as_deref(), Some("web-b"));
}

#[test]
fn manual_sync_keeps_a_clean_reason() {
    assert_eq!(
        only("manual-sync.json"),
        Event::Manual(ManualRequest {
            action: ManualAction::Sync,
            reason: Some("hotfix 4711 deployed by ops".into()),
            allow_shrink: false,
            due: None,
            to: None,
        })
    );
    for (action, expected) in [("reconcile", ManualAction::Reconcile), ("sweep", ManualAction::Sweep)] {
        let Event::Manual(m) = parse(&json!({ "action": action })).remove(0).event else { panic!() };
        assert_eq!((m.action, m.reason), (expected, None));
    }
    let long = "x".repeat(10_000);
    let Event::Manual(m) = parse(&json!({"action": "sync", "reason": long})).remove(0).event else { panic!() };
    assert!(m.reason.expect("reason").len() <= 260);
}

#[test]
fn allow_shrink_must_be_said_plainly() {
    let Event::Manual(m) = parse(&json!({"action": "sync", "allow_shrink": true})).remove(0).event else { panic!() };
    assert!(m.allow_shrink);
    let Event::Manual(m) = parse(&json!({"action": "sync", "allow_shrink": false})).remove(0).event else { panic!() };
    assert!(!m.allow_shrink);
    for loose in [json!("true"), json!(1), json!("yes"), json!(null)] {
        let event = parse(&json!({"action": "sync", "allow_shrink": loose})).remove(0).event;
        assert!(
            matches!(&event, Event::Skipped(s) if s.reason == SkipReason::Malformed),
            "{loose}: a guard is lifted only by a JSON true: {event:?}"
        );
    }
    let event = parse(&json!({"action": "sweep", "allow_shrink": true})).remove(0).event;
    assert!(matches!(&event, Event::Skipped(s) if s.reason == SkipReason::Malformed), "only a sync lifts it");
}

#[test]
fn a_rollback_names_its_release_plainly() {
    let Event::Manual(m) = parse(&json!({"action": "rollback", "reason": "500s"})).remove(0).event else { panic!() };
    assert_eq!(
        (m.action, m.to.as_deref(), m.reason.as_deref()),
        (ManualAction::Rollback, Some("previous"), Some("500s"))
    );
    for to in ["previous", "12", "3f2a9c1b7d0e", "v1.2.3"] {
        let Event::Manual(m) = parse(&json!({"action": "rollback", "to": to})).remove(0).event else { panic!() };
        assert_eq!(m.to.as_deref(), Some(to));
    }
    let Event::Manual(m) = parse(&json!({"action": "rollback", "to": 12})).remove(0).event else { panic!() };
    assert_eq!(m.to.as_deref(), Some("12"), "a generation typed as a number");
    for hostile in
        [json!(""), json!("$(reboot)"), json!("../x"), json!(-1), json!(1.5), json!(null), json!("x".repeat(200))]
    {
        let event = parse(&json!({"action": "rollback", "to": hostile})).remove(0).event;
        assert!(matches!(&event, Event::Skipped(s) if s.reason == SkipReason::Malformed), "{hostile}: {event:?}");
    }
    let event = parse(&json!({"action": "sync", "to": "previous"})).remove(0).event;
    assert!(matches!(&event, Event::Skipped(s) if s.reason == SkipReason::Malformed), "only a rollback has a target");
    let Event::Manual(m) = parse(&json!({"action": "resume", "reason": "fixed"})).remove(0).event else { panic!() };
    assert_eq!((m.action, m.to), (ManualAction::Resume, None));
}

#[test]
fn a_delayed_start_names_when_it_is_due() {
    let Event::Manual(m) = parse(&json!({"action": "sync-due", "due": 1_700_000_000_000_u64})).remove(0).event else {
        panic!()
    };
    assert_eq!((m.action, m.due), (ManualAction::SyncDue, Some(1_700_000_000_000)));
    assert!(!m.allow_shrink);
}

#[test]
fn hostile_keys_are_data_decoded_as_written() {
    let keys: Vec<String> = events("hostile-s3-keys.json")
        .into_iter()
        .map(|e| match e {
            Event::S3(c) => c.key,
            other => panic!("a hostile key is still a change: {other:?}"),
        })
        .collect();
    assert_eq!(keys[0], "app/$(reboot); rm -rf /`id`.php");
    assert_eq!(keys[1], "app/line1\nline2\r\0.php");
    assert_eq!(keys[2], "app/../../etc/passwd");
    assert!(
        keys[3].starts_with("app/") && keys[3].contains('\u{FFFD}'),
        "invalid UTF-8 decodes lossily: {:?}",
        keys[3]
    );
    assert_eq!(keys[4], "app/%{{destination}}%ZZ", "invalid escapes stay literal");
}

#[test]
fn malformed_batch_is_all_skips_never_a_panic() {
    let all = events("malformed-batch.json");
    assert_eq!(
        skip_reasons(&all),
        [
            SkipReason::Malformed,     // body not JSON
            SkipReason::Malformed,     // no body
            SkipReason::UnknownShape,  // JSON of no known shape
            SkipReason::Malformed,     // lifecycle without hook/instance
            SkipReason::Malformed,     // unknown transition
            SkipReason::Malformed,     // instance id with shell words
            SkipReason::UnknownShape,  // kinesis record
            SkipReason::Malformed,     // S3 record without key
            SkipReason::Malformed,     // record without eventSource
            SkipReason::Malformed,     // command status without command-id
            SkipReason::Malformed,     // EventBridge time not a time
            SkipReason::UnknownAction, // manual action not known
            SkipReason::UnknownShape,  // body is an array
        ]
    );
}

#[test]
fn non_objects_and_empty_payloads_are_skips() {
    for payload in [json!(null), json!("text"), json!(42), json!([]), json!({}), json!({"Records": "x"})] {
        let received = parse(&payload);
        assert_eq!(received.len(), 1, "{payload}");
        assert!(matches!(received[0].event, Event::Skipped(_)), "{payload}");
    }
    assert!(parse(&json!({"Records": []})).is_empty(), "an empty batch has nothing to do");
}

#[test]
fn skip_details_are_bounded() {
    let action = "a".repeat(5_000);
    let Event::Skipped(s) = parse(&json!({ "action": action })).remove(0).event else { panic!() };
    assert!(s.detail.len() < 256, "{}", s.detail.len());
}

#[test]
fn events_serialize_for_the_logs() {
    let received = parse(&fixture("lifecycle-launch-sqs.json"));
    let v = serde_json::to_value(&received[0]).expect("serializable");
    assert_eq!(v["via"], "sqs");
    assert_eq!(v["event"]["kind"], "lifecycle");
    assert_eq!(v["event"]["transition"], "launching");
}

#[test]
fn command_statuses_are_spelled_as_ssm_spells_them() {
    for s in [
        "Pending",
        "InProgress",
        "Delayed",
        "Cancelling",
        "Success",
        "Failed",
        "TimedOut",
        "Cancelled",
        "Undeliverable",
        "Whatever",
    ] {
        assert_eq!(CommandStatus::parse(s).as_str(), s);
    }
    assert_eq!(CommandStatus::parse("DeliveryTimedOut").as_str(), "TimedOut");
}
