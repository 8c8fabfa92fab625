//! Property tests of rollback and pinning, in a simulated fleet.
//!
//! The fleet item moves by the real transitions ([`apply`]); the instances
//! follow the sync document's rules, modelled here: a run of generation `g`
//! is a no-op below the instance's fence; a run that switches moves the fence
//! to `g`; a rollback switches to the release it holds, else materializes it
//! (a versioned bucket); after each new release an instance keeps the
//! `keep` newest, the current, the previous one, and those of generation
//! `keep` (ids of the fleet's rollback targets: the parameters the functions
//! send with each wave).
//!
//! Actions: uploads (a wave whose instances each succeed or fail), rollbacks
//! (to `previous`, or to a random generation), resumes, an old command
//! delivered late to a random instance, a new instance launched (a catch-up
//! to what the fleet serves).
//!
//! Properties:
//! * a pinned fleet never syncs: no `Start` is applied while pinned, and
//!   what every instance serves stays the pinned release until `resume`;
//! * a rollback never targets a release an instance that took it lacks:
//!   every instance that switched to the target's release still holds it;
//! * a later wave never undoes a rollback: an older generation delivered
//!   late is fenced out on every instance.

use proptest::prelude::*;

use super::state::{FleetItem, KeptRelease, Op, Refusal, ReleaseRef, WaveEnd, apply};

const KEEP: usize = 3;

/// The sha256 of generation `n`'s manifest: distinct ids (first 12 digits).
fn sha(n: u64) -> String {
    format!("{:012x}{:052x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16, n)
}
const INSTANCES: usize = 3;

#[derive(Debug, Clone)]
enum Action {
    Upload { fails: u8 },
    Rollback { to: u8 },
    Resume,
    Late { instance: u8, command: u8 },
    Launch,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        5 => any::<u8>().prop_map(|fails| Action::Upload { fails }),
        2 => any::<u8>().prop_map(|to| Action::Rollback { to }),
        1 => Just(Action::Resume),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(instance, command)| Action::Late { instance, command }),
        1 => Just(Action::Launch),
    ]
}

/// A release on an instance: its generation and its manifest's sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dir {
    generation: u64,
    sha: String,
}

#[derive(Debug, Clone, Default)]
struct Instance {
    dirs: Vec<Dir>,
    current: Option<usize>,
    previous: Option<Dir>,
    fence: u64,
}

/// A command as sent: its generation, its manifest, whether it is a
/// rollback, and the retention it carries.
#[derive(Debug, Clone)]
struct Command {
    generation: u64,
    sha: String,
    rollback: bool,
    keep: Vec<String>,
}

impl Instance {
    fn serving(&self) -> Option<&str> {
        self.current.map(|c| self.dirs[c].sha.as_str())
    }

    fn holds(&self, sha: &str) -> bool {
        self.dirs.iter().any(|d| d.sha == sha)
    }

    /// The document's run of `c`: `true` when it switched.
    fn run(&mut self, c: &Command) -> bool {
        if c.generation < self.fence {
            return false; // superseded
        }
        let held = if c.rollback { self.dirs.iter().position(|d| d.sha == c.sha) } else { None };
        let was = self.current.map(|i| self.dirs[i].clone());
        let to = match held {
            Some(i) => i,
            None => {
                self.dirs.push(Dir { generation: c.generation, sha: c.sha.clone() });
                self.dirs.len() - 1
            }
        };
        if was.as_ref() != Some(&self.dirs[to]) {
            self.previous = was;
        }
        self.current = Some(to);
        self.fence = c.generation;
        if held.is_none() {
            // Pruning: the newest `KEEP`, current, previous, those `keep` names.
            let newest = self.dirs.len().saturating_sub(KEEP);
            let current = self.dirs[to].clone();
            let kept: Vec<Dir> = self
                .dirs
                .iter()
                .enumerate()
                .filter(|(i, d)| {
                    *i >= newest
                        || **d == current
                        || Some(*d) == self.previous.as_ref()
                        || c.keep.iter().any(|id| d.sha.starts_with(id.as_str()))
                })
                .map(|(_, d)| d.clone())
                .collect();
            self.dirs = kept;
            self.current = self.dirs.iter().position(|d| *d == current);
        }
        true
    }
}

#[derive(Debug, Default)]
struct World {
    item: FleetItem,
    now: u64,
    instances: Vec<Instance>,
    sent: Vec<Command>,
    /// For each release (sha), the instances that switched to it.
    took: std::collections::HashMap<String, Vec<usize>>,
    next: u32,
}

impl World {
    fn new() -> Self {
        World { instances: vec![Instance::default(); INSTANCES], ..World::default() }
    }

    fn apply(&mut self, op: &Op) -> Result<(), Refusal> {
        let next = apply(Some(&self.item), op)?;
        if self.item.pin.is_some() && matches!(op, Op::Start { .. }) {
            panic!("a wave started while pinned: {op:?}");
        }
        self.item = next;
        Ok(())
    }

    fn wave_id(&mut self) -> String {
        self.next += 1;
        format!("w{}", self.next)
    }

    /// Sends the running wave to every instance; `fails` picks those whose
    /// run fails before switching; finishes it.
    fn run_wave(&mut self, fails: u8) {
        let Some(wave) = self.item.wave.clone() else { return };
        let manifest = wave.manifest.clone().unwrap_or_else(|| ReleaseRef {
            key: format!("manifests/f/m{}.jsonl.gz", wave.target),
            sha256: sha(wave.target),
            generation: wave.target,
            versioned: true,
        });
        let op = Op::RecordCommands {
            wave_id: wave.id.clone(),
            sender: wave.sender.clone(),
            command_ids: vec![wave.id.clone()],
            sent: true,
            fingerprint: None,
            manifest: Some(manifest.clone()),
        };
        self.apply(&op).expect("the holder records");
        let command = Command {
            generation: wave.target,
            sha: manifest.sha256.clone(),
            rollback: wave.rollback.is_some(),
            keep: self.item.keep_ids(KEEP),
        };
        self.sent.push(command.clone());
        let mut all = true;
        for i in 0..self.instances.len() {
            if fails & (1 << (i % 8)) != 0 {
                all = false;
                continue;
            }
            if self.instances[i].run(&command) {
                self.took.entry(command.sha.clone()).or_default().push(i);
            }
        }
        let end = if all { WaveEnd::Success } else { WaveEnd::Failure };
        self.apply(&Op::Finish { wave_id: wave.id, end }).expect("the holder finishes");
    }

    fn upload(&mut self, fails: u8) {
        self.now += 10;
        self.apply(&Op::Demand { count: 1, epoch: "e".into(), changes: None, allow_shrink: false })
            .expect("demand always applies");
        let id = self.wave_id();
        match self.apply(&Op::Start { wave_id: id, now: self.now, lease_ms: 1_000, quiet: None }) {
            Ok(()) => self.run_wave(fails),
            Err(Refusal::Pinned { .. } | Refusal::Held { .. } | Refusal::CaughtUp) => {}
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }

    fn rollback(&mut self, to: u8) {
        let target: Option<KeptRelease> = match to % 3 {
            0 => self.item.rollback_target("previous", KEEP).ok().cloned(),
            _ => {
                let targets = self.item.rollback_targets(KEEP);
                (!targets.is_empty()).then(|| targets[usize::from(to) % targets.len()].clone())
            }
        };
        let Some(target) = target else { return };
        // Never a release an instance that took it lacks.
        for &i in self.took.get(&target.manifest.sha256).into_iter().flatten() {
            assert!(
                self.instances[i].holds(&target.manifest.sha256),
                "rollback to {} (generation {}): instance {i} took it and no longer holds it: {:?}",
                target.id,
                target.manifest.generation,
                self.instances[i]
            );
        }
        let id = self.wave_id();
        let op = Op::Rollback {
            wave_id: id,
            now: self.now,
            lease_ms: 1_000,
            to: target,
            reason: "test".into(),
            request: String::new(),
        };
        if self.apply(&op).is_ok() {
            self.run_wave(0);
        }
    }

    fn check_pinned(&self) {
        let Some(pin) = &self.item.pin else { return };
        if self.item.completed_gen != pin.manifest.generation {
            return; // the rollback wave failed somewhere: nothing promised yet
        }
        for (i, instance) in self.instances.iter().enumerate() {
            if instance.fence >= pin.manifest.generation {
                assert_eq!(
                    instance.serving(),
                    Some(pin.manifest.sha256.as_str()),
                    "instance {i} no longer serves the pinned release {}",
                    pin.release
                );
            }
        }
    }

    fn step(&mut self, a: &Action) {
        match a {
            Action::Upload { fails } => self.upload(*fails % 8),
            Action::Rollback { to } => self.rollback(*to),
            Action::Resume => {
                if self.apply(&Op::Unpin).is_ok() {
                    let id = self.wave_id();
                    if self.apply(&Op::Start { wave_id: id, now: self.now, lease_ms: 1_000, quiet: None }).is_ok() {
                        self.run_wave(0);
                    }
                }
            }
            Action::Late { instance, command } => {
                if self.sent.is_empty() {
                    return;
                }
                // (Whether it undid a rollback, check_pinned says.)
                let c = self.sent[usize::from(*command) % self.sent.len()].clone();
                let i = usize::from(*instance) % self.instances.len();
                if self.instances[i].run(&c) {
                    self.took.entry(c.sha.clone()).or_default().push(i);
                }
            }
            Action::Launch => {
                // A catch-up of what the fleet serves (the pinned release while pinned).
                let mut instance = Instance::default();
                if let super::state::CatchUpPlan::Exact { release, pinned } = self.item.catch_up_plan() {
                    let c = Command {
                        generation: release.generation,
                        sha: release.sha256.clone(),
                        rollback: pinned,
                        keep: self.item.keep_ids(KEEP),
                    };
                    instance.run(&c);
                    self.took.entry(c.sha).or_default().push(self.instances.len());
                }
                self.instances.push(instance);
            }
        }
        self.check_pinned();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pinned_fleets_never_sync_rollbacks_find_their_release_and_nothing_undoes_them(
        actions in prop::collection::vec(action(), 1..120)
    ) {
        let mut world = World::new();
        for a in &actions {
            world.step(a);
        }
        // Resume: the fleet syncs again.
        if world.item.pin.is_some() {
            world.step(&Action::Resume);
            prop_assert!(world.item.pin.is_none());
        }
    }
}

#[cfg(test)]
mod scenarios {
    use super::*;

    #[test]
    fn a_rollback_to_previous_switches_every_instance_and_pins_until_resume() {
        let mut w = World::new();
        w.upload(0);
        w.upload(0);
        let served = w.item.release.clone().expect("a release").sha256;
        w.rollback(0);
        let pin = w.item.pin.clone().expect("pinned");
        assert_eq!(pin.manifest.sha256, sha(1), "previous is generation 1's release");
        assert_ne!(pin.manifest.sha256, served);
        assert_eq!(w.item.completed_gen, 3, "the rollback is generation 3");
        for instance in &w.instances {
            assert_eq!(instance.serving(), Some(sha(1).as_str()));
            assert_eq!(instance.dirs.len(), 2, "switched to, not made again");
        }
        w.upload(0);
        assert_eq!(w.item.completed_gen, 3, "an upload while pinned is demand, not a wave");
        assert_eq!(w.item.requested_gen, 4);
        w.step(&Action::Resume);
        assert!(w.item.pin.is_none());
        assert_eq!(w.item.completed_gen, 5, "resume syncs the latest demand");
        assert!(w.instances.iter().all(|i| i.serving() == Some(sha(5).as_str())));
    }
}
