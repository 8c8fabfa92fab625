//! One set of properties for every [`FleetStore`]: seeded random sequences
//! of transitions, results and records, applied to the store under test and
//! to the pure specification ([`state::apply`], [`next_record`]); after
//! every step the answers and what the store reads back must be the same.
//! Run on [`crate::store::MemoryTable`] by the unit tests and on the
//! DynamoDB [`crate::store::Table`] by the emulator tests (the two diverged
//! once, on `last_synced_gen`).

use std::collections::BTreeMap;

use super::{Applied, FleetStore, WaveRecord};
use crate::ssm_document::history::{Claim, InstanceRecord, InstanceResult, Synced, next_record};
use crate::store::{Doc, Items};
use crate::sync::state::{self, Fingerprint, FleetItem, Op, ReleaseRef, WaveEnd};

/// A tiny deterministic generator (xorshift), so a failing sequence is
/// reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const INSTANCES: [&str; 4] =
    ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c", "i-0000000000000000d"];

/// The specification's side of the comparison.
#[derive(Debug, Default)]
struct Model {
    fleet: Option<FleetItem>,
    instances: BTreeMap<String, InstanceRecord>,
    old_waves: Vec<String>,
    next_id: u32,
    docs: BTreeMap<String, (Vec<u64>, u64)>,
}

impl Model {
    fn record(&self, id: &str) -> InstanceRecord {
        self.instances.get(id).cloned().unwrap_or_else(|| InstanceRecord::fresh(id))
    }
}

/// A random fleet-item transition, mostly by the holder, sometimes stale.
pub fn random_op(rng: &mut Rng, current: Option<&FleetItem>, old: &[String], next_id: &mut u32, now: u64) -> Op {
    let holder = current.and_then(|i| i.wave.as_ref().map(|w| w.id.clone()));
    let pick_id = |rng: &mut Rng| -> String {
        match (holder.clone(), rng.below(4)) {
            (Some(h), 0..=2) => h,
            _ if !old.is_empty() => old[rng.below(old.len() as u64) as usize].clone(),
            _ => "never-a-wave".to_owned(),
        }
    };
    let sender = current.and_then(|i| i.wave.as_ref().map(|w| w.sender.clone()));
    let pick_sender = |rng: &mut Rng| -> String {
        match (sender.clone(), rng.below(3)) {
            (Some(s), 0 | 1) => s,
            _ => format!("r{}", rng.below(1000)),
        }
    };
    let end = |rng: &mut Rng| match rng.below(4) {
        0 => WaveEnd::Success,
        1 => WaveEnd::Failure,
        2 => WaveEnd::Refused,
        _ => WaveEnd::Abandoned,
    };
    let changes = |rng: &mut Rng| {
        (rng.below(3) > 0).then(|| {
            let oldest = now.saturating_sub(rng.below(3_000));
            state::ChangeTimes { oldest, newest: oldest + rng.below(2_000), seen: now }
        })
    };
    let quiet = |rng: &mut Rng| match rng.below(3) {
        0 => None,
        1 => Some(state::Quiet { quiet_ms: rng.below(3) * 1_000, max_delay_ms: 2_000 + rng.below(3) * 1_000 }),
        // Bounds larger than the clock: nothing below zero may hold.
        _ => Some(state::Quiet { quiet_ms: now + 1 + rng.below(1_000), max_delay_ms: now + 1 }),
    };
    // Rollbacks need a history (a success with a manifest) and no wave;
    // resumes a pin: steered towards both, so that they are exercised.
    if let Some(item) = current {
        if item.wave.is_none() && !item.releases.is_empty() && rng.below(3) == 0 {
            *next_id += 1;
            let to = item.releases[rng.below(item.releases.len() as u64) as usize].clone();
            let request = format!("req-{}", rng.below(3));
            return Op::Rollback {
                wave_id: format!("w{next_id}"),
                now,
                lease_ms: 1_000,
                to,
                reason: "steered".into(),
                request,
            };
        }
        if item.pin.is_some() && rng.below(4) == 0 {
            return Op::Unpin;
        }
        if let Some(w) = item.wave.as_ref().filter(|w| w.manifest.is_none() && rng.below(3) == 0) {
            let manifest = ReleaseRef {
                key: format!("manifests/f/{}.jsonl.gz", w.target),
                sha256: format!("{}", w.target % 4),
                generation: w.target,
                versioned: rng.below(2) == 0,
            };
            return Op::RecordCommands {
                wave_id: w.id.clone(),
                sender: w.sender.clone(),
                command_ids: vec![],
                sent: true,
                fingerprint: None,
                manifest: Some(manifest),
            };
        }
        if let Some(w) = item.wave.as_ref().filter(|w| w.manifest.is_some() && rng.below(3) == 0) {
            return Op::Finish { wave_id: w.id.clone(), end: WaveEnd::Success };
        }
    }
    match rng.below(16) {
        12..=14 => {
            *next_id += 1;
            let kept = current.map(|i| i.releases.clone()).unwrap_or_default();
            let to = match (kept.is_empty(), rng.below(4)) {
                (false, 0..=2) => kept[rng.below(kept.len() as u64) as usize].clone(),
                _ => state::KeptRelease {
                    id: "unknown".into(),
                    manifest: ReleaseRef {
                        key: "manifests/f/x.jsonl.gz".into(),
                        sha256: "x".into(),
                        ..ReleaseRef::default()
                    },
                    wave_id: "w0".into(),
                },
            };
            let request = String::new();
            Op::Rollback {
                wave_id: format!("w{next_id}"),
                now,
                lease_ms: 1_000,
                to,
                reason: "conformance".into(),
                request,
            }
        }
        15 => Op::Unpin,
        0 | 1 => Op::Demand {
            count: rng.below(3),
            epoch: format!("{:032x}", rng.below(3)),
            changes: changes(rng),
            allow_shrink: rng.below(4) == 0,
        },
        2 => {
            *next_id += 1;
            Op::Start { wave_id: format!("w{next_id}"), now, lease_ms: 1_000, quiet: quiet(rng) }
        }
        9 => {
            Op::Demand { count: 1, epoch: format!("{:032x}", rng.below(3)), changes: changes(rng), allow_shrink: true }
        }
        10 => {
            let pending = current.and_then(|i| i.trigger_at);
            let replacing = match rng.below(3) {
                0 => pending,
                1 => Some(now + rng.below(3) * 500),
                _ => None,
            };
            Op::Trigger { at: now + rng.below(4) * 500, now, replacing }
        }
        11 => Op::ClearTrigger {
            at: match (current.and_then(|i| i.trigger_at), rng.below(2)) {
                (Some(t), 0) => t,
                _ => now + rng.below(4) * 500,
            },
        },
        3 => Op::RecordCommands {
            sender: pick_sender(rng),
            wave_id: pick_id(rng),
            command_ids: (0..rng.below(3)).map(|i| format!("cmd-{i}-{}", rng.next_u64())).collect(),
            sent: rng.below(2) == 0,
            fingerprint: (rng.below(2) == 0).then(|| Fingerprint {
                count: rng.below(100),
                newest_ms: now,
                digest: rng.below(3),
            }),
            manifest: (rng.below(4) > 0).then(|| ReleaseRef {
                key: format!("manifests/f/{}.jsonl.gz", rng.below(3)),
                sha256: format!("{}", rng.below(3)),
                generation: rng.below(5),
                versioned: rng.below(2) == 0,
            }),
        },
        4 => Op::Renew {
            sender: (rng.below(2) == 0).then(|| pick_sender(rng)),
            wave_id: pick_id(rng),
            now,
            lease_ms: 1_000,
        },
        5 => Op::Finish { wave_id: pick_id(rng), end: end(rng) },
        6 => Op::Pause { sender: pick_sender(rng), wave_id: pick_id(rng), until: now + rng.below(100) },
        7 => Op::Resume { wave_id: pick_id(rng), sender: format!("r{}", rng.below(1000)), now, lease_ms: 1_000 },
        _ => Op::TakeOver { wave_id: pick_id(rng), now, end: end(rng) },
    }
}

fn random_result(rng: &mut Rng) -> InstanceResult {
    match rng.below(7) {
        0 | 1 => InstanceResult::Synced,
        2 => InstanceResult::Failed,
        3 => InstanceResult::NotAttempted,
        4 => InstanceResult::Gone,
        5 => InstanceResult::Refused,
        _ => InstanceResult::Unreachable,
    }
}

/// A versioned document in the instance items (next to their run history).
const DOC: Doc = Doc { attr: "conformance_doc", version: "conformance_version" };

/// Runs `steps` random steps of seed `seed` on `store` (empty, for its own
/// fleet) and on the specification; the first disagreement is the error.
/// What it returns: how many transitions of each kind were applied (by
/// their name), so a test can tell that every kind was exercised.
pub async fn check<S: FleetStore + Items>(
    store: &S,
    seed: u64,
    steps: usize,
) -> Result<BTreeMap<String, usize>, String> {
    let mut won: BTreeMap<String, usize> = BTreeMap::new();
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut now = 10_000;
    for step in 0..steps {
        now += rng.below(700);
        let at = |what: &str| format!("seed {seed} step {step}: {what}");
        match rng.below(11) {
            // Fleet-item transitions (most steps).
            0..=5 => {
                let op = random_op(&mut rng, model.fleet.as_ref(), &model.old_waves, &mut model.next_id, now);
                let expected = match state::apply(model.fleet.as_ref(), &op) {
                    Ok(next) => Applied::Won(Box::new(next)),
                    Err(refusal) => Applied::Lost(refusal),
                };
                let got = store.apply(&op).await.map_err(|e| at(&format!("{op:?}: {e}")))?;
                if got != expected {
                    return Err(at(&format!("{op:?}: store {got:?}, specification {expected:?}")));
                }
                if let Applied::Won(next) = expected {
                    let kind = format!("{op:?}");
                    *won.entry(kind.split([' ', '{']).next().unwrap_or_default().to_owned()).or_default() += 1;
                    if let Some(before) = model.fleet.as_ref().and_then(|i| i.wave.as_ref())
                        && next.wave.as_ref().map(|w| &w.id) != Some(&before.id)
                    {
                        model.old_waves.push(before.id.clone());
                    }
                    model.fleet = Some(*next);
                }
                let loaded = store.load().await.map_err(|e| at(&e.to_string()))?;
                if loaded != model.fleet {
                    return Err(at(&format!("load: store {loaded:?}, specification {:?}", model.fleet)));
                }
            }
            // Instance results of a wave or a catch-up, at any generation
            // (a late catch-up may report an older one).
            6 | 7 => {
                let generation = rng.below(20);
                // Two lineages: a counter that started again.
                let epoch = format!("{:032x}", rng.below(2));
                let synced = Synced { epoch: &epoch, generation };
                let k = 1 + rng.below(3) as u32;
                let mut results: Vec<(String, InstanceResult)> = Vec::new();
                for id in INSTANCES {
                    if rng.below(2) == 0 {
                        results.push((id.to_owned(), random_result(&mut rng)));
                    }
                }
                let got = store
                    .record_results(synced, &results, now, k)
                    .await
                    .map_err(|e| at(&format!("record_results: {e}")))?;
                let mut expected = Vec::new();
                for (id, result) in &results {
                    let next = next_record(model.record(id), synced, *result, now, k);
                    model.instances.insert(id.clone(), next.clone());
                    expected.push(next);
                }
                if got != expected {
                    return Err(at(&format!(
                        "record_results {results:?} at {generation}: store {got:?}, specification {expected:?}"
                    )));
                }
            }
            8 if rng.below(3) == 0 => {
                // A claim replaced by its command or dropped, only while it
                // is still the expected value.
                let id = INSTANCES[rng.below(4) as usize];
                let mut r = model.record(id);
                let expected = match (&r.recovery_command, rng.below(3)) {
                    (Some(current), 0 | 1) => current.clone(),
                    _ => format!("cmd-{}", rng.below(3)),
                };
                let command = (rng.below(2) == 0).then(|| format!("cmd-{}", rng.below(3)));
                let generation = rng.below(20);
                let got = store
                    .replace_recovery(id, &expected, command.clone(), generation, now)
                    .await
                    .map_err(|e| at(&format!("replace_recovery: {e}")))?;
                let want = r.recovery_command.as_deref() == Some(expected.as_str())
                    || (command.is_some() && r.recovery_command == command);
                if got != want {
                    return Err(at(&format!(
                        "replace_recovery {expected} -> {command:?} over {:?}: store {got}, specification {want}",
                        r.recovery_command
                    )));
                }
                if want {
                    r.recovery_command = command;
                    r.recovery_gen = generation;
                    r.recovery_sent_at = Some(now);
                    model.instances.insert(id.to_owned(), r);
                }
            }
            8 if rng.below(2) == 0 => {
                // A catch-up claim: taken only when none is in flight.
                let id = INSTANCES[rng.below(4) as usize];
                let claim = Claim::new(now, now + 100).encode();
                let generation = rng.below(20);
                let got = store
                    .claim_catch_up(id, &claim, generation)
                    .await
                    .map_err(|e| at(&format!("claim_catch_up: {e}")))?;
                let mut r = model.record(id);
                let free = r.recovery_command.is_none() || r.recovery_command.as_deref() == Some(claim.as_str());
                if got != free {
                    return Err(at(&format!(
                        "claim_catch_up over {:?}: store {got}, specification {free}",
                        r.recovery_command
                    )));
                }
                if free {
                    // The claim leaves the time of the last catch-up alone.
                    r.recovery_command = Some(claim);
                    r.recovery_gen = generation;
                    model.instances.insert(id.to_owned(), r);
                }
            }
            8 => {
                let id = INSTANCES[rng.below(4) as usize];
                let command = (rng.below(2) == 0).then(|| format!("cmd-{}", rng.next_u64()));
                let generation = rng.below(20);
                store
                    .set_recovery(id, command.clone(), generation, now)
                    .await
                    .map_err(|e| at(&format!("set_recovery: {e}")))?;
                let mut r = model.record(id);
                r.recovery_command = command;
                r.recovery_gen = generation;
                r.recovery_sent_at = Some(now);
                model.instances.insert(id.to_owned(), r);
            }
            // Versioned documents: a writer holding the current version wins,
            // a stale one loses, and neither disturbs the run history.
            9 => {
                let pk = store.keys().instance_pk(INSTANCES[rng.below(4) as usize]);
                let (doc, version) = model.docs.get(&pk).cloned().unwrap_or_default();
                let (got, got_version): (Vec<u64>, u64) =
                    store.load_doc(&pk, DOC).await.map_err(|e| at(&format!("load_doc: {e}")))?;
                if (&got, got_version) != (&doc, version) {
                    return Err(at(&format!(
                        "load_doc: store {got:?} v{got_version}, specification {doc:?} v{version}"
                    )));
                }
                let stale = rng.below(3) == 0 && version > 0;
                let expected = if stale { version - 1 } else { version };
                let value = vec![rng.below(1000)];
                let saved = store
                    .save_doc(&pk, DOC, &value, expected, None, &[])
                    .await
                    .map_err(|e| at(&format!("save_doc: {e}")))?;
                let want = (!stale).then_some(version + 1);
                if saved != want {
                    return Err(at(&format!(
                        "save_doc at v{expected} over v{version}: store {saved:?}, specification {want:?}"
                    )));
                }
                if !stale {
                    model.docs.insert(pk, (value, version + 1));
                }
            }
            _ => {
                let record = WaveRecord {
                    wave_id: format!("rec-{}", rng.below(3)),
                    target: rng.below(50),
                    epoch: format!("{:032x}", rng.below(2)),
                    reason: "conformance".into(),
                    started_at: now,
                    document_version: "1".into(),
                    commands_expire_at: now + 1_000,
                    instances: INSTANCES.iter().take(rng.below(5) as usize).map(|s| (*s).to_owned()).collect(),
                    end: (rng.below(2) == 0).then_some(WaveEnd::Failure),
                    finished_at: (rng.below(2) == 0).then_some(now + 1),
                    synced: rng.below(5),
                    gone: vec![INSTANCES[0].to_owned()],
                    unreachable: vec![INSTANCES[1].to_owned()],
                    blame: (rng.below(2) == 0).then(|| "release or configuration failure".to_owned()),
                    ..WaveRecord::default()
                };
                let before = store.wave(&record.wave_id).await.map_err(|e| at(&format!("wave: {e}")))?;
                let written = store.put_wave(&record).await.map_err(|e| at(&format!("put_wave: {e}")))?;
                // A running snapshot never overwrites a finished record.
                let expected = record.end.is_some() || before.as_ref().is_none_or(|b| b.end.is_none());
                if written != expected {
                    return Err(at(&format!("put_wave over {before:?}: wrote {written}, specification {expected}")));
                }
                let back = store.wave(&record.wave_id).await.map_err(|e| at(&format!("wave: {e}")))?;
                let want = if written { Some(record) } else { before };
                if back != want {
                    return Err(at(&format!("wave record: expected {want:?}, read {back:?}")));
                }
            }
        }
        let ids: Vec<String> = INSTANCES.iter().map(|s| (*s).to_owned()).collect();
        let got = store.instances(&ids).await.map_err(|e| at(&format!("instances: {e}")))?;
        let expected: Vec<InstanceRecord> = ids.iter().map(|id| model.record(id)).collect();
        if got != expected {
            return Err(at(&format!("instances: store {got:?}, specification {expected:?}")));
        }
    }
    Ok(won)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryTable;

    #[tokio::test]
    async fn the_memory_table_follows_the_specification() {
        let mut won: BTreeMap<String, usize> = BTreeMap::new();
        for seed in 1..=200u64 {
            let table = MemoryTable::new(format!("fleet-{seed}"));
            match check(&table, seed, 80).await {
                Ok(counts) => counts.into_iter().for_each(|(k, n)| *won.entry(k).or_default() += n),
                Err(e) => panic!("{e}"),
            }
        }
        for kind in ["Demand", "Start", "RecordCommands", "Finish", "TakeOver", "Rollback", "Unpin", "Resume", "Pause"]
        {
            assert!(won.get(kind).is_some_and(|n| *n > 0), "{kind} never applied: {won:?}");
        }
        eprintln!("{won:?}");
    }
}
