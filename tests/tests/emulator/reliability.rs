//! The fault campaigns, three seeds per rate (`make reliability` runs more
//! and writes `docs/reliability.md`): the sync keeps its four invariants and
//! the lifecycle gate its three under 5 %, 20 % and 50 % faulted AWS calls
//! (see `campaign` and `lifecycle_campaign`).

use fleetkeeper_tests::campaign::{Spec, run};

/// Seeds `1..=3`, or `FK_CAMPAIGN_SEEDS` (`first,count`) to reproduce others.
fn seeds() -> Vec<u64> {
    let (first, count) = std::env::var("FK_CAMPAIGN_SEEDS")
        .ok()
        .and_then(|v| v.split_once(',').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?))))
        .unwrap_or((1u64, 3u64));
    (first..first + count).collect()
}

async fn campaign_at(rate: f64) {
    let reports = futures::future::join_all(seeds().into_iter().map(|seed| run(Spec::standard(rate, seed)))).await;
    for r in &reports {
        eprintln!("{}", r.summary());
    }
    for r in &reports {
        assert!(r.held(), "{}\nfaults: {:#?}", r.summary(), r.injections);
        assert!(r.agent_runs > 0 && r.calls > 0, "the run did something: {}", r.summary());
    }
}

#[tokio::test]
async fn the_sync_keeps_its_invariants_with_5_percent_of_calls_faulted() {
    campaign_at(0.05).await;
}

#[tokio::test]
async fn the_sync_keeps_its_invariants_with_20_percent_of_calls_faulted() {
    campaign_at(0.20).await;
}

#[tokio::test]
async fn the_sync_keeps_its_invariants_with_50_percent_of_calls_faulted() {
    campaign_at(0.50).await;
}

async fn lifecycle_campaign_at(rate: f64) {
    use fleetkeeper_tests::lifecycle_campaign::{Spec, run};
    let reports = futures::future::join_all(seeds().into_iter().map(|seed| run(Spec::standard(rate, seed)))).await;
    for r in &reports {
        eprintln!("{}", r.summary());
    }
    for r in &reports {
        assert!(r.held(), "{}", r.summary());
        assert!(r.opened > 0 && r.calls > 0, "the run did something: {}", r.summary());
    }
}

#[tokio::test]
async fn the_lifecycle_gate_keeps_its_invariants_with_5_percent_of_calls_faulted() {
    lifecycle_campaign_at(0.05).await;
}

#[tokio::test]
async fn the_lifecycle_gate_keeps_its_invariants_with_20_percent_of_calls_faulted() {
    lifecycle_campaign_at(0.20).await;
}

#[tokio::test]
async fn the_lifecycle_gate_keeps_its_invariants_with_50_percent_of_calls_faulted() {
    lifecycle_campaign_at(0.50).await;
}
