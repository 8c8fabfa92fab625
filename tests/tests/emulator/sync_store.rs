//! The sync store against the emulator's DynamoDB: real conditional writes.
//!
//! * conformance: random sequences of transitions, results and records give
//!   the same answers and the same reads on the DynamoDB store as on the
//!   specification (the same properties the in-memory table is held to);
//! * 16 concurrent contenders for a wave: exactly one winner, round after round;
//! * instance records (quarantine) and wave records.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use fleetkeeper::ssm_document::history::{InstanceResult, RunHistory, Synced};
use fleetkeeper::store::{StoreError, Table};
use fleetkeeper::sync::state::{Op, Refusal, WaveEnd};
use fleetkeeper::sync::store::{Applied, FleetStore, WaveRecord, conformance};
use fleetkeeper_tests::Emulator;
use fleetkeeper_tests::emulator::unique;
use fleetkeeper_tests::fleet::lock_table;

const EPOCH: &str = "0123456789abcdef0123456789abcdef";

fn at(generation: u64) -> Synced<'static> {
    Synced { epoch: EPOCH, generation }
}

async fn store(emulator: &Emulator) -> (Table, aws_sdk_dynamodb::Client, String, String) {
    let clients = emulator.clients().await;
    let table = lock_table(&clients, &unique("locks")).await;
    let fleet = unique("fleet");
    (Table::new(clients.dynamodb.clone(), &table, &fleet), clients.dynamodb, table, fleet)
}

#[tokio::test]
async fn dynamodb_store_conforms_to_the_specification_on_random_sequences() {
    let emulator = Emulator::from_env();
    let mut won = std::collections::BTreeMap::<String, usize>::new();
    for seed in [1u64, 7, 42, 1_234, 99_991, 0xDEAD_BEEF] {
        let (dynamo, ..) = store(&emulator).await;
        match conformance::check(&dynamo, seed, 60).await {
            Ok(counts) => counts.into_iter().for_each(|(k, n)| *won.entry(k).or_default() += n),
            Err(e) => panic!("{e}"),
        }
    }
    for kind in ["Start", "Finish", "Rollback", "Unpin"] {
        assert!(won.get(kind).is_some_and(|n| *n > 0), "{kind} was never applied: {won:?}");
    }
}

#[tokio::test]
async fn sixteen_contenders_one_winner_per_wave() {
    let emulator = Emulator::from_env();
    let (dynamo, ..) = store(&emulator).await;
    let dynamo = Arc::new(dynamo);
    for round in 0..5u64 {
        dynamo
            .apply(&Op::Demand { count: 1, epoch: EPOCH.into(), changes: None, allow_shrink: false })
            .await
            .expect("demand");
        let mut tasks = Vec::new();
        for contender in 0..16 {
            let store = dynamo.clone();
            tasks.push(tokio::spawn(async move {
                let op = Op::Start {
                    wave_id: format!("r{round}-c{contender}"),
                    now: 1_000 * round,
                    lease_ms: 60_000,
                    quiet: None,
                };
                store.apply(&op).await
            }));
        }
        let mut winners = Vec::new();
        let mut busy = 0;
        for t in tasks {
            match t.await.expect("task").expect("apply") {
                Applied::Won(item) => winners.push(item.wave.expect("wave").id),
                Applied::Lost(Refusal::Busy { .. }) => busy += 1,
                Applied::Lost(other) => panic!("round {round}: unexpected refusal {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner, got {winners:?}");
        assert_eq!(busy, 15);
        let item = dynamo.load().await.expect("load").expect("item");
        assert_eq!(item.wave.as_ref().map(|w| &w.id), winners.first());
        assert_eq!(item.wave.as_ref().map(|w| w.target), Some(round + 1));
        let done =
            dynamo.apply(&Op::Finish { wave_id: winners[0].clone(), end: WaveEnd::Success }).await.expect("finish");
        assert!(matches!(done, Applied::Won(ref i) if i.completed_gen == round + 1), "{done:?}");
    }
}

#[tokio::test]
async fn concurrent_demand_is_never_lost() {
    let emulator = Emulator::from_env();
    let (dynamo, ..) = store(&emulator).await;
    let dynamo = Arc::new(dynamo);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = dynamo.clone();
            tokio::spawn(async move {
                store.apply(&Op::Demand { count: 1, epoch: EPOCH.into(), changes: None, allow_shrink: false }).await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.expect("task").expect("apply"), Applied::Won(_)));
    }
    assert_eq!(dynamo.load().await.expect("load").expect("item").requested_gen, 16);
}

#[tokio::test]
async fn a_failing_instance_is_quarantined_at_three_and_released_by_a_success() {
    let emulator = Emulator::from_env();
    let (dynamo, ..) = store(&emulator).await;
    let ids = vec!["i-00000000000000001".to_owned(), "i-00000000000000002".to_owned()];
    let fresh = dynamo.instances(&ids).await.expect("instances");
    assert!(fresh.iter().all(|r| r.sync_failures == 0 && !r.quarantined()), "{fresh:?}");

    for (generation, now) in [(1, 100), (2, 200), (3, 300)] {
        let results = [(ids[0].clone(), InstanceResult::Failed), (ids[1].clone(), InstanceResult::Synced)];
        dynamo.record_results(at(generation), &results, now, 3).await.expect("record");
    }
    let records = dynamo.instances(&ids).await.expect("instances");
    assert_eq!((records[0].sync_failures, records[0].quarantined_since), (3, Some(300)));
    assert_eq!((records[1].sync_failures, records[1].last_synced_gen, records[1].quarantined()), (0, 3, false));

    // Not attempted (cancelled) or gone: nothing changes.
    dynamo.record_results(at(4), &[(ids[0].clone(), InstanceResult::NotAttempted)], 400, 3).await.expect("record");
    assert_eq!(dynamo.instances(&ids[..1]).await.expect("get")[0].sync_failures, 3);
    // A fourth failure keeps the original quarantine time.
    dynamo.record_results(at(4), &[(ids[0].clone(), InstanceResult::Failed)], 450, 3).await.expect("record");
    assert_eq!(dynamo.instances(&ids[..1]).await.expect("get")[0].quarantined_since, Some(300));
    // A successful catch-up lifts it.
    let after =
        dynamo.record_results(at(5), &[(ids[0].clone(), InstanceResult::Synced)], 500, 3).await.expect("record");
    assert_eq!((after[0].sync_failures, after[0].quarantined(), after[0].last_synced_gen), (0, false, 5));
}

#[tokio::test]
async fn instance_records_are_read_in_batches_of_a_hundred() {
    let emulator = Emulator::from_env();
    let (dynamo, ..) = store(&emulator).await;
    let ids: Vec<String> = (0..230).map(|n| format!("i-{n:017x}")).collect();
    let failed: Vec<(String, InstanceResult)> =
        ids.iter().step_by(2).map(|i| (i.clone(), InstanceResult::Failed)).collect();
    dynamo.record_results(at(1), &failed, 1, 3).await.expect("record");
    let records = dynamo.instances(&ids).await.expect("instances");
    assert_eq!(records.len(), 230);
    for (n, r) in records.iter().enumerate() {
        assert_eq!(r.instance_id, ids[n]);
        assert_eq!(r.sync_failures, u32::from(n % 2 == 0), "{r:?}");
    }
}

#[tokio::test]
async fn wave_records_round_trip() {
    let emulator = Emulator::from_env();
    let (dynamo, client, table, fleet) = store(&emulator).await;
    let record = WaveRecord {
        wave_id: "w-1".into(),
        target: 7,
        reason: "follow-up".into(),
        started_at: 1_700_000_000_000,
        instances: vec!["i-a".into(), "i-b".into()],
        quarantined: vec!["i-q".into()],
        command_ids: vec!["c-1".into()],
        end: Some(WaveEnd::Failure),
        finished_at: Some(1_700_000_060_000),
        synced: 1,
        failed: vec!["i-b".into()],
        unreachable: vec!["i-u".into()],
        blame: Some("release or configuration failure".into()),
        ..WaveRecord::default()
    };
    assert!(dynamo.put_wave(&record).await.expect("put"));
    assert_eq!(dynamo.wave("w-1").await.expect("get"), Some(record.clone()));
    assert_eq!(dynamo.wave("w-2").await.expect("get"), None);
    let raw = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("{fleet}#wave#w-1")))
        .send()
        .await
        .expect("raw");
    let expires = raw.item.and_then(|i| i.get("expires_at").cloned());
    assert_eq!(expires, Some(AttributeValue::N((1_700_000_060 + 30 * 86_400).to_string())), "TTL in epoch seconds");
    // A slow sender's running snapshot never erases the finished record.
    let running = WaveRecord { end: None, finished_at: None, ..record.clone() };
    assert!(!dynamo.put_wave(&running).await.expect("put"));
    assert_eq!(dynamo.wave("w-1").await.expect("get"), Some(record));
}

#[tokio::test]
async fn a_wave_record_of_twelve_thousand_instances_fits_in_one_item() {
    let emulator = Emulator::from_env();
    let (dynamo, ..) = store(&emulator).await;
    let instances: Vec<String> = (0..12_000).map(|n| format!("i-{n:017x}")).collect();
    let record = WaveRecord {
        wave_id: "big".into(),
        target: 1,
        instances,
        synced: 11_990,
        failed: (0..10).map(|n| format!("i-{n:017x}")).collect(),
        end: Some(WaveEnd::Failure),
        ..WaveRecord::default()
    };
    assert!(dynamo.put_wave(&record).await.expect("within DynamoDB's 400 KB item limit"));
    assert_eq!(dynamo.wave("big").await.expect("get").map(|r| r.instances.len()), Some(12_000));
}

#[tokio::test]
async fn an_item_from_a_newer_schema_is_refused_not_overwritten() {
    let emulator = Emulator::from_env();
    let (dynamo, client, table, fleet) = store(&emulator).await;
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(fleet.clone()))
        .item("schema", AttributeValue::N("3".into()))
        .item("requested_gen", AttributeValue::N("5".into()))
        .send()
        .await
        .expect("put");
    assert!(matches!(dynamo.load().await, Err(StoreError::Unreadable { .. })));
    // With or without change times (an upload's demand carries them).
    for changes in [None, Some(fleetkeeper::sync::state::ChangeTimes::at(1_700_000_000_000))] {
        assert!(matches!(
            dynamo.apply(&Op::Demand { count: 1, epoch: EPOCH.into(), changes, allow_shrink: false }).await,
            Err(StoreError::Unreadable { .. })
        ));
    }
    let raw =
        client.get_item().table_name(&table).key("pk", AttributeValue::S(fleet.clone())).send().await.expect("raw");
    assert_eq!(
        raw.item.and_then(|i| i.get("requested_gen").cloned()),
        Some(AttributeValue::N("5".into())),
        "untouched"
    );
    let raw = client.get_item().table_name(&table).key("pk", AttributeValue::S(fleet.clone())).send().await;
    let item = raw.expect("raw").item.expect("item");
    assert!(!item.contains_key("last_change_at") && !item.contains_key("unsynced_since"), "{item:?}");
}
