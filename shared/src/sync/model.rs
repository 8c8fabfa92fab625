//! Property tests of the sync state machine in a simulated world.
//!
//! Actors: dispatchers (an upload: demand, then one try at starting a
//! wave), senders (renew, send a chunk, record its id; they can crash between
//! any two steps), SSM (commands end, well or badly, whenever), completion
//! events (delivered, duplicated, lost, late), the sweep, the clock (leases
//! expire while commands still run), and stale holders (old wave ids trying
//! to renew, record or finish).
//!
//! Invariants, checked after every step:
//! * never two waves in flight: a wave starts only when every command of
//!   every earlier wave is terminal, and commands are sent only by the lease
//!   holder;
//! * a stale holder never changes the item;
//! * a wave whose commands still run is never finished or taken over;
//! * a new wave needs a reason: demand since the last start, or a failed or
//!   abandoned last wave; a failed generation is retried once at most
//!   without new demand;
//! * generations only move forward; a wave targets more than `completed_gen`.
//!
//! And at the end, once completions succeed: no demand was lost —
//! `completed_gen` reaches `requested_gen`.

use proptest::prelude::*;

use super::decide::{CommandView, InvocationView, Settlement, settle, transition};
use super::state::{FleetItem, MAX_ATTEMPTS, Op, Refusal, WaveEnd, apply, start_refusal};
use crate::events::CommandStatus;

const LEASE: u64 = 1_000;

#[derive(Debug, Clone)]
enum Action {
    Upload { chunks: u8 },
    SenderStep(u8),
    SenderCrash(u8),
    SenderPause(u8),
    CommandEnds { pick: u8, success: bool },
    Deliver(u8),
    Duplicate(u8),
    Lose(u8),
    Sweep,
    Tick(u16),
    Stale { pick: u8, kind: u8 },
}

fn action() -> impl Strategy<Value = Action> {
    action_with(0.75)
}

/// Actions where a command succeeds with probability `success`.
fn action_with(success: f64) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0u8..4).prop_map(|chunks| Action::Upload { chunks }),
        6 => any::<u8>().prop_map(Action::SenderStep),
        1 => any::<u8>().prop_map(Action::SenderCrash),
        1 => any::<u8>().prop_map(Action::SenderPause),
        4 => (any::<u8>(), prop::bool::weighted(success)).prop_map(|(pick, success)| Action::CommandEnds { pick, success }),
        3 => any::<u8>().prop_map(Action::Deliver),
        1 => any::<u8>().prop_map(Action::Duplicate),
        1 => any::<u8>().prop_map(Action::Lose),
        2 => Just(Action::Sweep),
        2 => (0u16..1_500).prop_map(Action::Tick),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(pick, kind)| Action::Stale { pick, kind }),
    ]
}

#[derive(Debug, Clone)]
struct Command {
    wave: String,
    instances: Vec<(String, CommandStatus)>,
}

impl Command {
    fn terminal(&self) -> bool {
        self.instances.iter().all(|(_, s)| s.is_terminal())
    }

    fn view(&self, id: usize) -> CommandView {
        let status = if self.terminal() { CommandStatus::Success } else { CommandStatus::InProgress };
        CommandView {
            command_id: id.to_string(),
            status,
            invocations: self
                .instances
                .iter()
                .map(|(i, s)| InvocationView {
                    instance_id: i.clone(),
                    status: s.clone(),
                    details: format!("{s:?}"),
                    gone: false,
                    unreachable: false,
                    // The first instance of a chunk refuses a failing
                    // release (its shrink guard): a refused wave.
                    refused: (*s == CommandStatus::Failed && i.ends_with("-0")).then(|| "guard".to_owned()),
                    stale: false,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct Sender {
    wave: String,
    token: String,
    chunks_left: u8,
    unrecorded: Option<usize>,
    /// A resumer: with nothing left to send it only says so (the wave
    /// settles when its commands end).
    resumed: bool,
}

/// Instances in the `c`-th chunk of a wave.
fn chunk_size(c: u8) -> u8 {
    1 + c % 3
}

#[derive(Debug, Default)]
struct World {
    item: Option<FleetItem>,
    now: u64,
    commands: Vec<Command>,
    senders: Vec<Sender>,
    events: Vec<usize>,
    old_waves: Vec<String>,
    next_wave: u32,
    starts: u32,
    finishes: u32,
    demand_since_start: bool,
    last_end: Option<WaveEnd>,
    last_target: u64,
    retries: std::collections::HashMap<u64, u32>,
    /// Each wave's intended instances (its record, written before sending).
    intended: std::collections::HashMap<String, Vec<String>>,
    /// Each wave's planned number of chunks.
    planned: std::collections::HashMap<String, u8>,
}

impl World {
    fn apply(&mut self, op: &Op) -> Result<FleetItem, Refusal> {
        let before = self.item.clone();
        let result = apply(self.item.as_ref(), op);
        if let Ok(next) = &result {
            if let Some(b) = &before {
                assert!(next.requested_gen >= b.requested_gen, "requested_gen went back");
                assert!(next.completed_gen >= b.completed_gen, "completed_gen went back");
            }
            assert!(next.completed_gen <= next.requested_gen, "completed beyond requested: {next:?}");
            self.item = Some(next.clone());
        }
        result
    }

    fn current_wave(&self) -> Option<String> {
        self.item.as_ref().and_then(|i| i.wave.as_ref().map(|w| w.id.clone()))
    }

    fn upload(&mut self, chunks: u8) {
        self.apply(&Op::Demand { count: 1, epoch: "e".into(), changes: None, allow_shrink: false })
            .expect("demand always applies");
        self.demand_since_start = true;
        self.try_start(chunks);
    }

    fn try_start(&mut self, chunks: u8) {
        let id = format!("w{}", self.next_wave);
        self.next_wave += 1;
        let op = Op::Start { wave_id: id.clone(), now: self.now, lease_ms: LEASE, quiet: None };
        if let Ok(next) = self.apply(&op) {
            // Never two waves in flight.
            for c in &self.commands {
                assert!(c.terminal(), "wave {id} started while {} still runs", c.wave);
            }
            // A wave needs a reason.
            let retry = matches!(self.last_end, Some(WaveEnd::Failure | WaveEnd::Abandoned));
            assert!(
                self.demand_since_start || retry || self.starts == 0,
                "wave {id} started without new demand or a retry"
            );
            let target = next.wave.as_ref().map(|w| w.target).unwrap_or_default();
            if !self.demand_since_start && self.last_end == Some(WaveEnd::Failure) {
                let n = self.retries.entry(target).or_default();
                *n += 1;
                assert!(*n < MAX_ATTEMPTS, "generation {target} retried {n} times without new demand");
            }
            assert!(target > next.completed_gen, "wave targets an already synced generation");
            assert!(target >= self.last_target, "targets go back");
            self.last_target = target;
            self.starts += 1;
            self.demand_since_start = false;
            self.last_end = None;
            let planned = (0..chunks).flat_map(|c| (0..chunk_size(c)).map(move |k| format!("i-{c}-{k}"))).collect();
            self.intended.insert(id.clone(), planned);
            self.planned.insert(id.clone(), chunks);
            self.senders.push(Sender {
                token: id.clone(),
                wave: id,
                chunks_left: chunks,
                unrecorded: None,
                resumed: false,
            });
        }
        assert!(self.finishes <= self.starts && self.starts <= self.finishes + 1, "one wave at a time");
    }

    fn sender_step(&mut self, pick: usize) {
        if self.senders.is_empty() {
            return;
        }
        let i = pick % self.senders.len();
        let mut s = self.senders[i].clone();
        let done;
        if let Some(c) = s.unrecorded.take() {
            let sent = s.chunks_left == 0;
            let op = Op::RecordCommands {
                wave_id: s.wave.clone(),
                sender: s.token.clone(),
                command_ids: vec![c.to_string()],
                sent,
                fingerprint: None,
                manifest: None,
            };
            done = self.apply(&op).is_err() || sent;
        } else if s.chunks_left > 0 {
            // Renew, then send: only the lease holder sends.
            let renew =
                Op::Renew { wave_id: s.wave.clone(), sender: Some(s.token.clone()), now: self.now, lease_ms: LEASE };
            let renewed = self.apply(&renew);
            if renewed.is_ok() {
                assert_eq!(self.current_wave().as_deref(), Some(s.wave.as_str()));
                let n = self.commands.len();
                let c = self.commands.iter().filter(|cmd| cmd.wave == s.wave).count() as u8;
                let planned = self.planned.get(&s.wave).copied().unwrap_or(0);
                assert!(c < planned, "wave {} sent more chunks than planned: a chunk went out twice", s.wave);
                let instances = (0..chunk_size(c)).map(|k| (format!("i-{c}-{k}"), CommandStatus::InProgress)).collect();
                self.commands.push(Command { wave: s.wave.clone(), instances });
                s.chunks_left -= 1;
                s.unrecorded = Some(n);
                done = false;
            } else {
                done = true;
            }
        } else if s.resumed {
            // Everything was sent before the pause: say so.
            let op = Op::RecordCommands {
                wave_id: s.wave.clone(),
                sender: s.token.clone(),
                command_ids: vec![],
                sent: true,
                fingerprint: None,
                manifest: None,
            };
            let _ = self.apply(&op);
            done = true;
        } else {
            // No instance to sync: the generation completes with nothing to do.
            let op = Op::RecordCommands {
                wave_id: s.wave.clone(),
                sender: s.token.clone(),
                command_ids: vec![],
                sent: true,
                fingerprint: None,
                manifest: None,
            };
            if self.apply(&op).is_ok() {
                self.finish(&Op::Finish { wave_id: s.wave.clone(), end: WaveEnd::Success });
            }
            done = true;
        }
        if done {
            self.senders.remove(i);
        } else {
            self.senders[i] = s;
        }
    }

    fn command_ends(&mut self, pick: usize, success: bool) {
        let running: Vec<usize> = (0..self.commands.len()).filter(|&c| !self.commands[c].terminal()).collect();
        if running.is_empty() {
            return;
        }
        let c = running[pick % running.len()];
        for (k, (_, status)) in self.commands[c].instances.iter_mut().enumerate() {
            *status = if success || k > 0 { CommandStatus::Success } else { CommandStatus::Failed };
        }
        self.events.push(c);
    }

    /// A completion event or a sweep: settle the running wave from SSM.
    fn settle(&mut self, event: Option<usize>) {
        let Some(wave) = self.item.as_ref().and_then(|i| i.wave.clone()) else { return };
        if let Some(c) = event {
            // Classified by command id: the fleet item's wave ids, else its comment.
            if self.commands.get(c).map(|cmd| cmd.wave.as_str()) != Some(wave.id.as_str()) {
                return;
            }
        }
        let mut ids: Vec<usize> = wave.command_ids.iter().filter_map(|c| c.parse().ok()).collect();
        if !wave.sent {
            let found: Vec<usize> =
                (0..self.commands.len()).filter(|c| self.commands[*c].wave == wave.id && !ids.contains(c)).collect();
            ids.extend(found);
        }
        let views: Vec<CommandView> = ids.iter().map(|&c| self.commands[c].view(c)).collect();
        let intended = self.intended.get(&wave.id).cloned();
        let settlement = settle(&wave, &views, intended.as_deref(), self.now, u64::MAX);
        if let Settlement::Done(r) = &settlement
            && r.end == WaveEnd::Success
        {
            let reached: usize = ids.iter().map(|&c| self.commands[c].instances.len()).sum();
            let planned = intended.as_ref().map_or(reached, Vec::len);
            assert_eq!(reached, planned, "wave {} would succeed without reaching every instance", wave.id);
        }
        if let Some(op) = transition(&wave, &settlement, self.now, LEASE) {
            self.finish(&op);
        }
    }

    fn finish(&mut self, op: &Op) {
        let wave = op.holder().unwrap_or_default().to_owned();
        if self.apply(op).is_err() {
            return;
        }
        let end = match op {
            Op::Finish { end, .. } | Op::TakeOver { end, .. } => *end,
            Op::Renew { .. } => return,
            Op::Resume { sender, .. } => {
                // The resumer adopts the commands found by their comment (so
                // they are judged once the wave says it is sent), then sends
                // what was not sent yet; a slow earlier sender can no longer
                // renew, so it stops.
                let recorded: Vec<String> =
                    self.item.as_ref().and_then(|i| i.wave.as_ref()).map(|w| w.command_ids.clone()).unwrap_or_default();
                let adopt: Vec<String> = (0..self.commands.len())
                    .filter(|c| self.commands[*c].wave == wave && !recorded.contains(&c.to_string()))
                    .map(|c| c.to_string())
                    .collect();
                let op = Op::RecordCommands {
                    wave_id: wave.clone(),
                    sender: sender.clone(),
                    command_ids: adopt,
                    sent: false,
                    fingerprint: None,
                    manifest: None,
                };
                let _ = self.apply(&op);
                let sent = self.commands.iter().filter(|c| c.wave == wave).count() as u8;
                let planned = self.planned.get(&wave).copied().unwrap_or(0);
                self.senders.push(Sender {
                    wave,
                    token: sender.clone(),
                    chunks_left: planned.saturating_sub(sent),
                    unrecorded: None,
                    resumed: true,
                });
                return;
            }
            _ => unreachable!("{op:?}"),
        };
        for c in self.commands.iter().filter(|c| c.wave == wave) {
            assert!(c.terminal(), "wave {wave} finished while a command runs");
        }
        self.finishes += 1;
        self.last_end = Some(end);
        self.old_waves.push(wave);
        self.try_start(1);
    }

    fn stale(&mut self, pick: usize, kind: u8) {
        if self.old_waves.is_empty() {
            return;
        }
        let id = self.old_waves[pick % self.old_waves.len()].clone();
        if self.current_wave().as_deref() == Some(id.as_str()) {
            return;
        }
        let op = match kind % 4 {
            0 => Op::Renew { wave_id: id, sender: None, now: self.now, lease_ms: LEASE },
            1 => Op::RecordCommands {
                sender: id.clone(),
                wave_id: id,
                command_ids: vec!["999".into()],
                sent: true,
                fingerprint: None,
                manifest: None,
            },
            2 => Op::Finish { wave_id: id, end: WaveEnd::Success },
            _ => Op::TakeOver { wave_id: id, now: self.now + 10 * LEASE, end: WaveEnd::Abandoned },
        };
        let before = self.item.clone();
        assert!(matches!(self.apply(&op), Err(Refusal::Stale { .. })), "a stale holder was not refused: {op:?}");
        assert_eq!(self.item, before, "a stale holder changed the item");
    }

    fn step(&mut self, a: &Action) {
        match a {
            Action::Upload { chunks } => self.upload(*chunks),
            Action::SenderStep(p) => self.sender_step(*p as usize),
            Action::SenderCrash(p) => {
                if !self.senders.is_empty() {
                    let i = *p as usize % self.senders.len();
                    self.senders.remove(i);
                }
            }
            Action::SenderPause(p) => {
                // Out of time (or an AWS error): the lease ends at once, the
                // next settle resumes the wave.
                if !self.senders.is_empty() {
                    let i = *p as usize % self.senders.len();
                    let s = self.senders.remove(i);
                    let _ = self.apply(&Op::Pause { wave_id: s.wave, sender: s.token, until: self.now });
                }
            }
            Action::CommandEnds { pick, success } => self.command_ends(*pick as usize, *success),
            Action::Deliver(p) | Action::Duplicate(p) | Action::Lose(p) => {
                if self.events.is_empty() {
                    return;
                }
                let i = *p as usize % self.events.len();
                let c = self.events[i];
                if !matches!(a, Action::Duplicate(_)) {
                    self.events.remove(i);
                }
                if !matches!(a, Action::Lose(_)) {
                    self.settle(Some(c));
                }
            }
            Action::Sweep => self.settle(None),
            Action::Tick(ms) => self.now += u64::from(*ms),
            Action::Stale { pick, kind } => self.stale(*pick as usize, *kind),
        }
    }

    /// Plays `actions` (every invariant checked at each step), then drains.
    fn run(actions: &[Action]) -> World {
        let mut world = World::default();
        for a in actions {
            world.step(a);
        }
        world.drain();
        world
    }

    /// Completions succeed from now on: senders finish, commands succeed,
    /// sweeps run past leases; a held generation gets a manual sync.
    fn drain(&mut self) {
        for _ in 0..50 {
            while !self.senders.is_empty() {
                self.sender_step(0);
            }
            for c in 0..self.commands.len() {
                if !self.commands[c].terminal() {
                    self.command_ends(c, true);
                }
            }
            self.now += LEASE + 1;
            self.settle(None);
            if let Some(item) = self.item.clone()
                && let Err(Refusal::Held { attempts, .. }) = start_refusal(&item)
            {
                assert_eq!(attempts, MAX_ATTEMPTS);
                self.upload(1); // the operator's manual sync
            }
            let idle = self.item.as_ref().is_none_or(|i| i.wave.is_none() && i.completed_gen == i.requested_gen);
            if idle && self.senders.is_empty() {
                return;
            }
        }
        panic!("the world did not settle: {:?}", self.item);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn interleavings_keep_the_invariants_and_lose_no_demand(actions in prop::collection::vec(action(), 1..160)) {
        let world = World::run(&actions);
        if let Some(item) = &world.item {
            prop_assert_eq!(item.completed_gen, item.requested_gen);
            prop_assert!(item.wave.is_none());
        }
    }

    #[test]
    fn failing_fleets_retry_each_generation_once(actions in prop::collection::vec(action_with(0.1), 1..160)) {
        let world = World::run(&actions);
        if let Some(item) = &world.item {
            prop_assert_eq!(item.completed_gen, item.requested_gen);
        }
    }

    #[test]
    fn a_burst_during_a_wave_makes_exactly_one_follow_up(burst in 1u32..300) {
        let mut world = World::default();
        world.upload(1);
        world.sender_step(0); // renew + send
        world.sender_step(0); // record, sent
        for _ in 0..burst {
            world.upload(1);
        }
        prop_assert_eq!(world.starts, 1, "uploads during a wave start nothing");
        world.command_ends(0, true);
        world.settle(Some(0));
        prop_assert_eq!(world.starts, 2, "completion starts exactly one follow-up");
        let wave = world.item.as_ref().and_then(|i| i.wave.clone()).expect("follow-up");
        prop_assert_eq!(wave.target, 1 + u64::from(burst), "the follow-up covers the whole burst");
        world.drain();
        prop_assert_eq!(world.starts, 2, "caught up: no more waves");
    }
}

/// The quiet period in a timed world: uploads at random times, waves that
/// take a while, delayed starts due when the quiet period ends (the only
/// continuation: no sweep). Every start happens only once the codebase was
/// quiet for `quiet` (or its first unsynced change is `max_delay` old); a
/// start is never later than the trigger that was due; and all demand
/// completes.
fn quiet_world(gaps: &[u64], quiet: u64, max_delay: u64, wave_ms: u64) -> Result<(u32, FleetItem), TestCaseError> {
    use super::state::{ChangeTimes, Quiet};
    let rule = Quiet { quiet_ms: quiet, max_delay_ms: max_delay };
    let mut item: Option<FleetItem> = None;
    let mut uploads: Vec<u64> = Vec::new();
    let mut t = 1_000_000;
    for g in gaps {
        t += g;
        uploads.push(t);
    }
    let mut next_upload = 0;
    let mut running: Option<(String, u64)> = None; // wave id, ends at
    let mut starts = 0;
    let mut waves = 0u32;
    let try_start = |item: &mut Option<FleetItem>, now: u64, due: Option<u64>, starts: &mut u32| -> Option<String> {
        let current = item.clone().unwrap_or_default();
        *starts += 1;
        let id = format!("w{starts}");
        match apply(Some(&current), &Op::Start { wave_id: id.clone(), now, lease_ms: LEASE, quiet: Some(rule) }) {
            Ok(next) => {
                let quiet_since = current.last_change_at.is_none_or(|l| now >= l + quiet);
                let forced = current.unsynced_since.is_some_and(|f| now >= f + max_delay);
                assert!(quiet_since || forced, "a wave started at {now} within the quiet period: {current:?}");
                *item = Some(next);
                Some(id)
            }
            Err(Refusal::Quiet { until }) => {
                assert!(until > now);
                if let Ok(next) = apply(item.as_ref(), &Op::Trigger { at: until, now, replacing: due }) {
                    *item = Some(next);
                }
                None
            }
            Err(_) => None,
        }
    };
    for _ in 0..10_000 {
        let trigger = item.as_ref().and_then(|i| i.trigger_at);
        let upload = uploads.get(next_upload).copied();
        let end = running.as_ref().map(|(_, e)| *e);
        let Some(now) = [trigger, upload, end].into_iter().flatten().min() else { break };
        if upload == Some(now) {
            next_upload += 1;
            let changes = Some(ChangeTimes::at(now));
            let demand = Op::Demand { count: 1, epoch: "e".into(), changes, allow_shrink: false };
            item = Some(apply(item.as_ref(), &demand).expect("demand"));
            if running.is_none()
                && let Some(id) = try_start(&mut item, now, None, &mut starts)
            {
                running = Some((id, now + wave_ms));
                waves += 1;
            }
        } else if end == Some(now) {
            let (id, _) = running.take().expect("running");
            item = Some(apply(item.as_ref(), &Op::Finish { wave_id: id, end: WaveEnd::Success }).expect("finish"));
            if item.as_ref().is_some_and(|i| i.requested_gen > i.completed_gen)
                && let Some(id) = try_start(&mut item, now, None, &mut starts)
            {
                running = Some((id, now + wave_ms));
                waves += 1;
            }
        } else {
            // The delayed start is due (and consumed).
            let due = trigger;
            if let Some(i) = item.as_mut() {
                i.trigger_at = None;
            }
            if running.is_none()
                && item.as_ref().is_some_and(|i| i.requested_gen > i.completed_gen)
                && let Some(id) = try_start(&mut item, now, due, &mut starts)
            {
                running = Some((id, now + wave_ms));
                waves += 1;
            }
        }
    }
    let item = item.unwrap_or_default();
    prop_assert!(running.is_none() && next_upload == uploads.len(), "the world did not settle");
    prop_assert_eq!(item.completed_gen, item.requested_gen, "demand was lost: {:?}", item);
    Ok((waves, item))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_quiet_period_holds_waves_until_the_codebase_settles_and_loses_nothing(
        gaps in prop::collection::vec(0u64..90_000, 1..120),
        quiet in 1u64..60_000,
        extra in 0u64..600_000,
        wave_ms in 1u64..200_000,
    ) {
        let (waves, _) = quiet_world(&gaps, quiet, quiet + extra, wave_ms)?;
        // Each wave needs the codebase to settle (a gap of `quiet`), the max
        // delay, or the end of a wave: never one per upload.
        let settled = gaps.iter().skip(1).filter(|g| **g >= quiet).count() as u32 + 1;
        let forced = (gaps.iter().sum::<u64>() / (quiet + extra)) as u32 + 1;
        let ends = (gaps.iter().sum::<u64>() / wave_ms) as u32 + 1;
        prop_assert!(waves <= settled + forced + ends, "{} waves for {} settled bursts", waves, settled);
    }

    #[test]
    fn a_deploy_of_uploads_closer_than_the_quiet_period_is_one_wave(
        gaps in prop::collection::vec(0u64..120, 1..500),
    ) {
        // 500 files within about 30 s, quiet 60 s, max delay 600 s.
        let (waves, _) = quiet_world(&gaps, 60_000, 600_000, 30_000)?;
        prop_assert_eq!(waves, 1);
    }
}
