//! The world one seed builds: a clock, a disk that fails, the engine's sequencer with its store and read
//! model, clients, and the auditor. Each step does one thing to it; the driver turn is the engine's own
//! (`writer.rs`), with the engine's `driver` doing the IO.

use std::sync::RwLock;

use cohost_core::Policy;
use cohost_engine::sequencer::{Batch, Health, Sequencer, SequencerConfig, Submission};
use cohost_engine::{Options, ReadModel, driver, recover};
use cohost_model::{Dice, Op, Rng, SEATS_DEFAULT, Step, TTL_MS, USERS, Who, to_command, user_name};
use cohost_proto::{Actor, CommandId, Envelope, ErrorCode};
use cohost_store::{Crash, MemoryBackend, Store};

use crate::auditor::{Auditor, Ticket};

/// Where the simulated clock starts.
const START_MS: u64 = 1_000_000;

/// A command a client means to send, kept so it can be sent again after `unavailable`.
#[derive(Debug, Clone)]
struct Request {
    room: usize,
    who: Who,
    op: Op,
    expected_version: Option<u64>,
    command_id: Option<CommandId>,
}

/// The engine as one process has it: lost whole at a crash.
#[derive(Debug)]
struct Node {
    sequencer: Sequencer<Ticket>,
    store: Store,
    read: RwLock<ReadModel>,
}

/// How often each kind of step comes, per seed, so that some seeds are calm and others are storms.
#[derive(Debug, Clone, Copy)]
struct Weather {
    fault_percent: u64,
    crash_percent: u64,
}

#[derive(Debug)]
pub struct World {
    rng: Rng,
    now_ms: u64,
    config: SequencerConfig,
    disk: MemoryBackend,
    node: Node,
    /// Sent, not yet handed to the sequencer (the engine's channel).
    inbox: Vec<(Ticket, Request)>,
    sent: Vec<(Ticket, Request)>,
    /// Requests answered `unavailable` or cut off by a crash, that a client may send again.
    retryable: Vec<Request>,
    next_ticket: Ticket,
    next_command_id: u64,
    weather: Weather,
    /// A fault armed for the next turn, so the turn knows not to expect its expiries done.
    armed: bool,
    /// A flush failed since the last recovery: the engine must refuse every write until it is recovered.
    flush_failed: bool,
    pub auditor: Auditor,
    pub stats: Stats,
}

/// What a run did, summed over seeds by the campaign to show that every fault was exercised.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub steps: u64,
    pub commands: u64,
    pub retries: u64,
    pub turns: u64,
    pub failed_writes: u64,
    pub failed_flushes: u64,
    pub deaths_in_flush: u64,
    pub crashes: u64,
    pub torn: u64,
    pub restarts: u64,
    pub snapshots: u64,
}

fn open_node(disk: &MemoryBackend, now_ms: u64, config: SequencerConfig) -> Node {
    let store = Store::with_backend(Box::new(disk.clone())).expect("the store opens after a crash");
    let recovered = recover(&store, now_ms, config).expect("the engine recovers");
    Node {
        sequencer: recovered.sequencer,
        store,
        read: RwLock::new(recovered.read),
    }
}

fn read_all(store: &Store, to_seq: u64) -> Vec<Envelope> {
    let mut out = Vec::new();
    while (out.len() as u64) < to_seq {
        let page = store
            .read_events(out.len() as u64 + 1, 1_000)
            .expect("the log reads back");
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    out.truncate(to_seq as usize);
    out
}

impl World {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let config = SequencerConfig {
            policy: Policy::new(TTL_MS, SEATS_DEFAULT as u8).expect("the model's policy is valid"),
            batch_max: rng.pick(&[1, 2, 3, 8, 64]),
            queue_max: rng.pick(&[4, 16, 1_000]),
            snapshot_every_events: rng.pick(&[3, 10, 50, 1_000_000]),
            // Far more than a run remembers, and small enough that the map sized up front at every recovery
            // does not dominate the run.
            idempotency_max: 100_000,
            trace: true,
            ..SequencerConfig::default()
        };
        let weather = Weather {
            fault_percent: rng.pick(&[0, 2, 5, 12]),
            crash_percent: rng.pick(&[0, 1, 3, 6]),
        };
        let disk = MemoryBackend::new();
        let node = open_node(&disk, START_MS, config);
        Self {
            rng,
            now_ms: START_MS,
            config,
            disk,
            node,
            inbox: Vec::new(),
            sent: Vec::new(),
            retryable: Vec::new(),
            next_ticket: 1,
            next_command_id: 1,
            weather,
            armed: false,
            flush_failed: false,
            auditor: Auditor::new(),
            stats: Stats::default(),
        }
    }

    /// One step, drawn from the seed.
    pub fn step(&mut self) {
        self.stats.steps += 1;
        let failed = *self.node.sequencer.health() != Health::Serving;
        let roll = self.rng.below(100);
        let weather = self.weather;
        match roll {
            // A supervisor restarts a failed engine soon.
            _ if failed && self.rng.chance(30) => self.crash(),
            r if r < weather.crash_percent => self.crash(),
            r if r < weather.crash_percent + 2 => self.restart(),
            r if r < weather.crash_percent + 2 + weather.fault_percent => self.arm_fault(),
            r if r < 45 => self.send(),
            r if r < 55 => self.tick(),
            _ => self.turn(),
        }
    }

    /// Ends the run: one last turn, then every check.
    pub fn finish(&mut self) {
        self.turn();
        self.check_state("at the end");
    }

    fn tick(&mut self) {
        let ms = match self.rng.below(4) {
            0 => 0,
            1 => self.rng.below(100),
            2 => self.rng.below(TTL_MS),
            _ => TTL_MS + self.rng.below(TTL_MS),
        };
        self.now_ms += ms;
    }

    fn arm_fault(&mut self) {
        self.armed = true;
        match self.rng.below(3) {
            0 => self.disk.fail_writes(1),
            1 => self.disk.fail_flushes(1),
            _ => self.disk.die_at_next_flush(),
        }
    }

    /// One to four clients send a command each: new ones, or one answered `unavailable` again.
    fn send(&mut self) {
        for _ in 0..=self.rng.below(4) {
            let request = match self.retryable.len() {
                0 => self.new_request(),
                n if self.rng.chance(40) => {
                    self.stats.retries += 1;
                    Some(
                        self.retryable
                            .swap_remove(self.rng.below(n as u64) as usize),
                    )
                }
                _ => self.new_request(),
            };
            let Some(request) = request else { continue };
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.stats.commands += 1;
            self.inbox.push((ticket, request));
        }
    }

    fn new_request(&mut self) -> Option<Request> {
        let r = &mut self.rng;
        let dice = Dice {
            room: r.below(cohost_model::ROOMS as u64) as usize,
            op: r.below(256) as u8,
            who: r.below(10) as u8,
            user: r.below(USERS as u64) as usize,
            other: r.below(USERS as u64) as usize,
            offer: r.below(16) as usize,
            online: r.chance(50),
            tick_ms: r.below(TTL_MS),
            version: r.below(20) as u8,
            max_cohosts: r.below(24) as u8,
            long_title: r.chance(50),
        };
        let Step::Command {
            room,
            who,
            op,
            expected_version,
        } = self.auditor.model.roll(dice)
        else {
            return None;
        };
        let command_id = match self.rng.below(100) {
            0..=44 => None,
            45..=47 if self.next_command_id > 1 => {
                // An id already used, perhaps for another command: a conflict, or a retry by luck.
                let used = 1 + self.rng.below(self.next_command_id - 1);
                Some(CommandId::new(&format!("c{used}")).expect("a valid id"))
            }
            _ => {
                self.next_command_id += 1;
                Some(CommandId::new(&format!("c{}", self.next_command_id - 1)).expect("a valid id"))
            }
        };
        Some(Request {
            room,
            who,
            op,
            expected_version,
            command_id,
        })
    }

    /// One turn of the engine's driver, as `writer.rs` takes it.
    fn turn(&mut self) {
        self.stats.turns += 1;
        let armed = std::mem::take(&mut self.armed);
        let node = &mut self.node;
        node.sequencer.handle_timeout(self.now_ms);
        for (ticket, request) in std::mem::take(&mut self.inbox) {
            let actor = match request.who {
                Who::User(user) => Actor::User(user_name(user)),
                Who::System => Actor::System,
            };
            let submission = Submission {
                actor,
                command: to_command(request.room, request.op),
                options: Options {
                    command_id: request.command_id.clone(),
                    expected_version: request.expected_version,
                },
                reply_to: ticket,
            };
            let number = node.sequencer.handle_command(self.now_ms, submission);
            self.auditor.submitted(ticket, number);
            self.sent.push((ticket, request));
        }
        let mut clean = !armed;
        loop {
            let batch = self.node.sequencer.poll_batch();
            let decisions = self.node.sequencer.take_decisions();
            assert!(
                !self.flush_failed || (decisions.is_empty() && batch.is_none()),
                "the engine decided commands after a failed flush"
            );
            self.auditor.decided(decisions);
            let Some(batch) = batch else { break };
            let node = &mut self.node;
            let committed = driver::commit(&mut node.sequencer, &batch, &node.store, &node.read);
            if self.disk.is_down() {
                self.stats.deaths_in_flush += 1;
                return self.die(Some(batch));
            }
            match committed {
                Ok(()) => self.auditor.durable(&batch),
                Err(failure) => {
                    clean = false;
                    match failure {
                        cohost_engine::sequencer::Failure::Write(_) => {
                            self.stats.failed_writes += 1
                        }
                        cohost_engine::sequencer::Failure::Flush(_) => {
                            self.stats.failed_flushes += 1;
                            self.flush_failed = true;
                        }
                    }
                    self.auditor.failed();
                }
            }
            self.answer();
        }
        self.answer();
        if let Some(request) = self.node.sequencer.poll_snapshot() {
            self.stats.snapshots += 1;
            let node = &mut self.node;
            driver::snapshot(&mut node.sequencer, request, &node.store, &node.read);
        }
        self.check_turn(clean);
    }

    fn answer(&mut self) {
        while let Some((ticket, answer)) = self.node.sequencer.poll_reply() {
            let outcome = driver::resolve(answer, &self.node.store);
            self.auditor.replied(ticket, &outcome);
            let index = self
                .sent
                .iter()
                .position(|(t, _)| *t == ticket)
                .expect("a reply goes to a command that was sent");
            let (_, request) = self.sent.swap_remove(index);
            let unavailable =
                outcome.as_ref().err().map(|e| e.code) == Some(ErrorCode::Unavailable);
            if unavailable && request.command_id.is_some() {
                self.retryable.push(request);
            }
        }
    }

    /// After a turn: a failed sequencer decides nothing; a healthy one left no invitation overdue (when no
    /// fault got in its way), and its next wake-up is no later than the next expiry.
    fn check_turn(&mut self, clean: bool) {
        let sequencer = &mut self.node.sequencer;
        assert_eq!(
            self.flush_failed,
            *sequencer.health() != Health::Serving,
            "a failed flush, and only that, stops the engine"
        );
        if self.flush_failed {
            assert_eq!(
                sequencer.poll_batch(),
                None,
                "a failed sequencer makes no batch"
            );
            assert!(
                sequencer.take_decisions().is_empty(),
                "a failed sequencer decides nothing"
            );
            return;
        }
        let earliest = self.auditor.earliest_pending_ms();
        if clean && let Some(due) = earliest {
            assert!(
                due > self.now_ms,
                "an invitation due at {due} is still pending at {} after a clean turn",
                self.now_ms
            );
        }
        if let Some(due) = earliest {
            let wake = sequencer.poll_timeout();
            assert!(
                wake.is_some_and(|wake| wake <= due),
                "the sequencer wakes at {wake:?}, after the next expiry at {due}"
            );
        }
    }

    /// Every check of the state: the log, the rooms of the sequencer and the read model, the model.
    fn check_state(&mut self, what: &str) {
        let durable = self.auditor.durable_seq();
        assert_eq!(
            self.node.sequencer.durable_seq(),
            durable,
            "{what}: the durable seq"
        );
        let log = read_all(&self.node.store, durable);
        assert_eq!(log, self.auditor.log(), "{what}: the store's log");
        let read = self.node.read.read().expect("the read model lock");
        assert_eq!(read.last_seq(), durable, "{what}: the read model's seq");
        self.auditor
            .check_rooms(&format!("{what}, read model"), read.rooms());
        drop(read);
        if self.node.sequencer.in_flight().is_none()
            && *self.node.sequencer.health() == Health::Serving
        {
            self.auditor
                .check_rooms(&format!("{what}, sequencer"), self.node.sequencer.rooms());
        }
    }

    /// The process dies between steps, and the disk keeps what a crash keeps.
    fn crash(&mut self) {
        self.check_state("before a crash");
        self.die(None);
    }

    /// The process dies (in a flush of `in_flight`, or between steps); it is started again on what the disk
    /// kept, and must recover exactly the durable log.
    fn die(&mut self, in_flight: Option<Batch>) {
        self.stats.crashes += 1;
        let how = match self.rng.below(3) {
            0 => Crash::LoseUnflushed,
            1 => Crash::KeepUnflushed(self.rng.below(3) as usize),
            _ => {
                self.stats.torn += 1;
                Crash::TearLast
            }
        };
        self.disk.crash(how);
        let lost = self.auditor.crashed();
        for (ticket, request) in std::mem::take(&mut self.sent) {
            if lost.contains(&ticket) && request.command_id.is_some() {
                self.retryable.push(request);
            }
        }
        for (_, request) in std::mem::take(&mut self.inbox) {
            if request.command_id.is_some() {
                self.retryable.push(request);
            }
        }
        self.node = open_node(&self.disk, self.now_ms, self.config);
        let recovered = read_all(&self.node.store, u64::MAX);
        self.auditor.recovered(&recovered, in_flight.as_ref());
        self.armed = false;
        self.flush_failed = false;
        self.check_state("after recovery");
    }

    /// A clean stop and start: the queue drained, a snapshot and a flush, then recovery from it.
    fn restart(&mut self) {
        self.stats.restarts += 1;
        self.turn();
        if *self.node.sequencer.health() != Health::Serving {
            return self.crash();
        }
        let node = &mut self.node;
        if let Some(request) = node.sequencer.snapshot_now() {
            driver::snapshot(&mut node.sequencer, request, &node.store, &node.read);
        }
        if node.store.flush().is_err() || self.disk.is_down() {
            // The stop's own flush failed: that is a crash.
            return self.die(None);
        }
        self.check_state("before a restart");
        self.node = open_node(&self.disk, self.now_ms, self.config);
        self.check_state("after a restart");
    }
}
