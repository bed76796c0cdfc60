//! The world one seed builds: a clock, a disk that fails, the engine's sequencer with its store and read
//! model, clients, and the auditor. Each step does one thing to it; the driver turn is the engine's own
//! (`writer.rs`), with the engine's `driver` doing the IO.

use std::sync::RwLock;

use cohost_core::RoomState;
use cohost_engine::sequencer::{
    Batch, Failure, Health, RETRY_AFTER_FAILURE_MS, Sequencer, SequencerConfig, Submission,
};
use cohost_engine::{Options, ReadModel, driver, recover};
use cohost_model::{Dice, Op, Rng, Step, TTL_MS, USERS, Who, to_command, user_name};
use cohost_proto::{Actor, CommandId, Envelope, ErrorCode, RoomId};
use cohost_store::{Crash, MemoryBackend, Store};

use crate::auditor::{Auditor, Ticket};
use crate::cluster::{Append, SharedLog};

/// Where the simulated clock starts.
const START_MS: u64 = 1_000_000;
/// More batches than this in one turn means the sequencer is looping.
const BATCHES_PER_TURN_MAX: usize = 10_000;

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

/// How often faults and crashes come, per seed, so that some seeds are calm and others are storms.
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
    /// Cluster mode (some seeds): the partition log every batch goes to first; each start is a takeover.
    cluster: Option<SharedLog>,
    /// Sent, not yet handed to the sequencer (the engine's channel).
    inbox: Vec<(Ticket, Request)>,
    /// Handed to the sequencer, not yet answered.
    sent: Vec<(Ticket, Request)>,
    /// Requests answered `unavailable` or cut off by a crash, that a client may send again.
    retryable: Vec<Request>,
    next_ticket: Ticket,
    next_command_id: u64,
    weather: Weather,
    /// A fault armed for the next turn, so the turn knows not to expect its expiries done.
    armed: bool,
    /// The batch whose flush failed or was cut off by death: the log may yet hold it after a restart.
    unconfirmed: Option<Batch>,
    /// `COHOST_SIM_TRACE=1`: print every step, to follow a failing seed.
    verbose: bool,
    /// A batch failed: its expiries are due again no earlier than this.
    retry_at_ms: u64,
    pub auditor: Auditor,
    pub stats: Stats,
}

counters! {
    /// What a run did, summed over seeds by the campaign to show that every fault was exercised.
    pub struct Stats {
        /// Steps taken.
        steps,
        /// Commands clients sent, retries included.
        commands,
        /// Commands sent again after `unavailable` or a crash that cut them off.
        retries,
        /// Turns of the engine's driver.
        turns,
        /// Batches whose write the disk failed: taken back and answered `unavailable`.
        failed_writes,
        /// Batches whose flush failed: the engine stops taking writes until restarted.
        failed_flushes,
        /// Times the process died inside a flush.
        deaths_in_flush,
        /// Machine crashes: the disk keeps a prefix of what was not flushed, or tears the last write.
        crashes,
        /// Process deaths that kept the machine up, and so its page cache.
        process_restarts,
        /// Opens that found a torn record past the committed mark and took it back.
        torn_records_dropped,
        /// Records found past the committed mark at open, written again and flushed.
        records_confirmed,
        /// Crashes that also lost the committed mark's last writes.
        marks_set_back,
        /// Clean stops and starts: the queue drained, a snapshot, a flush, then recovery.
        restarts,
        /// Snapshots the sequencer asked for and the driver wrote.
        snapshots,
        /// Times commands arrived while a batch was in flight.
        sent_in_flight,
        /// Ended rooms archived out of memory.
        rooms_archived,
        /// Commands that loaded an archived room back.
        archived_rooms_loaded,
        /// Seeds run in cluster mode (1 or 0 for one seed).
        cluster_seeds,
        /// Starts in cluster mode: each takes the partition over from its log.
        takeovers,
        /// Appends the partition log refused outright.
        appends_refused,
        /// Appends the partition log took whose ack was lost.
        acks_lost_committed,
        /// Appends lost along with their ack.
        acks_lost_not_committed,
        /// Local store writes that failed after the partition log took the batch.
        local_writes_failed_after_the_log,
        /// Times another writer claimed the partition.
        other_writers,
        /// Appends the log's fence refused because another writer had appended.
        writers_fenced,
        /// Snapshots saved as the partition's base.
        bases_saved,
        /// Takeovers that started from a saved base rather than the log's first entry.
        takeovers_from_base,
    }
}

/// The store's events from `from` up to `to_seq`.
fn read_all(store: &Store, from: u64, to_seq: u64) -> Vec<Envelope> {
    let mut out: Vec<Envelope> = Vec::new();
    let mut next = from;
    while next <= to_seq {
        let page = store.read_events(next, 1_000).expect("the log reads back");
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        out.extend(page);
    }
    out.retain(|e| e.seq <= to_seq);
    out
}

impl World {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let config = SequencerConfig {
            policy: cohost_model::policy(),
            batch_max: rng.pick(&[1, 2, 3, 8, 64]),
            queue_max: rng.pick(&[4, 16, 1_000]),
            snapshot_every_events: rng.pick(&[3, 10, 50, 1_000_000]),
            // A small memory of command ids in some seeds, so forgetting is exercised too; never so large
            // that the map sized up front at every recovery dominates the run.
            idempotency_max: rng.pick(&[3, 20, 100_000]),
            idempotency_ttl_ms: rng.pick(&[3 * TTL_MS, 24 * 3_600_000]),
            // Ended rooms leave memory at the next turn, after a while, or never in a run.
            ended_retention_ms: rng.pick(&[0, TTL_MS, 1_000_000_000]),
            // Abandoned rooms are ended within a run in some seeds, never in others.
            idle_room_ms: rng.pick(&[0, 2 * TTL_MS]),
            host_absent_ms: rng.pick(&[0, TTL_MS]),
            // Log retention is not drawn yet: the auditor reads the whole log back.
            retain_ended_ms: 0,
            trace: true,
        };
        let weather = Weather {
            fault_percent: rng.pick(&[0, 2, 5, 12]),
            crash_percent: rng.pick(&[0, 1, 3, 6]),
        };
        let cluster = rng.chance(33).then(SharedLog::default);
        let mut stats = Stats {
            cluster_seeds: u64::from(cluster.is_some()),
            ..Stats::default()
        };
        let (disk, node) = Self::boot(
            &MemoryBackend::new(),
            cluster.as_ref(),
            START_MS,
            config,
            &mut stats,
            true,
        );
        let mut auditor = Auditor::new(config.idempotency_max, config.idempotency_ttl_ms);
        auditor.abandon_after_ms = (config.idle_room_ms, config.host_absent_ms);
        let mut world = Self {
            rng,
            now_ms: START_MS,
            config,
            node,
            disk,
            cluster,
            inbox: Vec::new(),
            sent: Vec::new(),
            retryable: Vec::new(),
            next_ticket: 1,
            next_command_id: 1,
            weather,
            armed: false,
            unconfirmed: None,
            verbose: std::env::var_os("COHOST_SIM_TRACE").is_some(),
            retry_at_ms: 0,
            auditor,
            stats,
        };
        world.check_state("at the start");
        world
    }

    /// Starts the engine: from `disk` in single-node mode, or in cluster mode by taking the partition over on
    /// a fresh disk (returned), the local store being a cache of the log (and of its last base, `from_base`).
    fn boot(
        disk: &MemoryBackend,
        cluster: Option<&SharedLog>,
        now_ms: u64,
        config: SequencerConfig,
        stats: &mut Stats,
        from_base: bool,
    ) -> (MemoryBackend, Node) {
        let Some(log) = cluster else {
            return (disk.clone(), Self::open(disk, now_ms, config, stats));
        };
        stats.takeovers += 1;
        let (disk, store, recovered) = log.take_over(now_ms, config, from_base);
        stats.takeovers_from_base += u64::from(store.log_from() > 1);
        let node = Node {
            sequencer: recovered.sequencer,
            store,
            read: RwLock::new(recovered.read),
        };
        (disk, node)
    }

    fn open(disk: &MemoryBackend, now_ms: u64, config: SequencerConfig, stats: &mut Stats) -> Node {
        let store =
            Store::with_backend(Box::new(disk.clone())).expect("the store opens after a crash");
        let opened = store.opened();
        stats.torn_records_dropped += u64::from(opened.torn_dropped.is_some());
        stats.records_confirmed += opened.confirmed;
        let recovered = recover(&store, now_ms, config).expect("the engine recovers");
        Node {
            sequencer: recovered.sequencer,
            store,
            read: RwLock::new(recovered.read),
        }
    }

    fn note(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!(
                "[step {} at {} ms, durable seq {}] {}",
                self.stats.steps,
                self.now_ms,
                self.auditor.durable_seq(),
                what()
            );
        }
    }

    /// One step, drawn from the seed.
    pub fn step(&mut self) {
        self.stats.steps += 1;
        let failed = *self.node.sequencer.health() != Health::Serving;
        let roll = self.rng.below(100);
        let weather = self.weather;
        match roll {
            // A supervisor restarts a failed engine soon, usually on the same machine.
            _ if failed && self.rng.chance(30) => {
                self.check_between_steps("before a restart after fail-stop");
                let process_only = self.rng.chance(70);
                self.die(process_only);
            }
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
        if let Some(log) = &self.cluster {
            self.stats.writers_fenced = log.fenced();
        }
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
        if let Some(log) = &self.cluster {
            let fault = self.rng.below(5);
            let stats = &mut self.stats;
            let (what, count) = match fault {
                0 => {
                    self.disk.fail_writes(1);
                    (
                        "fail the next local write",
                        &mut stats.local_writes_failed_after_the_log,
                    )
                }
                1 => {
                    log.arm(Append::Refuse);
                    ("refuse the next append", &mut stats.appends_refused)
                }
                2 => {
                    log.arm(Append::LoseAck { committed: true });
                    (
                        "commit the next append, lose its ack",
                        &mut stats.acks_lost_committed,
                    )
                }
                3 => {
                    log.arm(Append::LoseAck { committed: false });
                    (
                        "lose the next append and its ack",
                        &mut stats.acks_lost_not_committed,
                    )
                }
                _ => {
                    log.claim();
                    (
                        "another writer claims the partition",
                        &mut stats.other_writers,
                    )
                }
            };
            *count += 1;
            self.note(|| what.into());
            return;
        }
        let fault = self.rng.below(3);
        self.note(|| {
            [
                "fail the next write",
                "fail the next flush",
                "die in the next flush",
            ][fault as usize]
                .into()
        });
        match fault {
            // Now and then a disk that keeps failing: the batch's write and the write taking it back.
            0 => self.disk.fail_writes(1 + u32::from(self.rng.chance(20))),
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
                    Some(self.retryable.swap_remove(self.rng.index(n)))
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
            room: r.index(cohost_model::ROOMS),
            op: r.below(256) as u8,
            who: r.below(10) as u8,
            user: r.index(USERS),
            other: r.index(USERS),
            offer: r.index(16),
            online: r.chance(50),
            tick_ms: r.below(TTL_MS),
            version: r.below(20) as u8,
            max_cohosts: r.below(24) as u8,
            bad_title: r.chance(50),
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

    /// Hands what the clients sent to the sequencer, as the driver hands it what arrived on the channel.
    fn submit_inbox(&mut self) {
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
            self.note(|| {
                format!(
                    "ticket {ticket}: {:?} by {:?}, {:?}",
                    submission.command, submission.actor, submission.options
                )
            });
            let node = &mut self.node;
            let room_id = submission.command.room_id().clone();
            let held = node.sequencer.holds(&room_id);
            let number = driver::admit(&mut node.sequencer, &node.store, self.now_ms, submission);
            if !held && node.sequencer.holds(&room_id) {
                self.stats.archived_rooms_loaded += 1;
                self.note(|| format!("archived room {room_id} loaded back"));
            }
            self.auditor.submitted(ticket, number);
            self.sent.push((ticket, request));
        }
    }

    /// One turn of the engine's driver, as `writer.rs` takes it.
    fn turn(&mut self) {
        self.stats.turns += 1;
        let armed = std::mem::take(&mut self.armed);
        self.node.sequencer.handle_timeout(self.now_ms);
        self.submit_inbox();
        let mut clean = !armed;
        let mut batches = 0;
        loop {
            batches += 1;
            assert!(
                batches < BATCHES_PER_TURN_MAX,
                "the sequencer keeps making batches in one turn"
            );
            let batch = self.node.sequencer.poll_batch();
            let decisions = self.node.sequencer.take_decisions();
            let failed = *self.node.sequencer.health() != Health::Serving;
            assert!(
                !failed || (decisions.is_empty() && batch.is_none()),
                "the engine decided commands after a failed flush"
            );
            self.auditor.decided(decisions, self.now_ms);
            // Anything answerable now must not wait for the batch, and no answer of the batch may come yet.
            self.answer();
            let Some(batch) = batch else { break };
            match self.commit(batch) {
                Some(durable) => clean &= durable,
                None => return,
            }
            self.answer();
        }
        if let Some(request) = self.node.sequencer.poll_snapshot() {
            self.stats.snapshots += 1;
            self.note(|| format!("snapshot at seq {}", request.seq));
            let node = &mut self.node;
            driver::snapshot(&mut node.sequencer, request, &node.store, &node.read);
            self.save_base();
        }
        self.evict();
        self.check_turn(clean);
    }

    /// In cluster mode, a serving owner saves its latest snapshot as the partition's base (now and then: a
    /// taker may find an older one, or none).
    fn save_base(&mut self) {
        let Some(log) = &self.cluster else { return };
        if *self.node.sequencer.health() != Health::Serving || !self.rng.chance(50) {
            return;
        }
        let remembering = cohost_engine::Remembering {
            now_ms: self.now_ms,
            ttl_ms: self.config.idempotency_ttl_ms,
            max: self.config.idempotency_max,
        };
        if let Some(exported) =
            cohost_engine::export_base(&self.node.store, remembering).expect("a base exports")
        {
            self.stats.bases_saved += 1;
            log.save_base(exported);
        }
    }

    /// The log as the engine holds it: the part a base stands for (which came from this same log, checked
    /// when it was written) as the auditor knows it, then the store's own.
    fn held_log(&self, to_seq: u64) -> Vec<Envelope> {
        let from = self.node.store.log_from();
        let mut log = self.auditor.log()[..(from - 1) as usize].to_vec();
        log.extend(read_all(&self.node.store, from, to_seq));
        log
    }

    /// Ended rooms due to leave memory are archived, as the driver does at the end of a turn.
    fn evict(&mut self) {
        let node = &mut self.node;
        let before = node.sequencer.rooms().count();
        driver::evict(&mut node.sequencer, &node.store, &node.read);
        let evicted = before - node.sequencer.rooms().count();
        self.stats.rooms_archived += evicted as u64;
        if evicted > 0 {
            self.note(|| format!("{evicted} ended rooms archived"));
        }
    }

    /// Makes a batch durable (or not) through the engine's driver: whether it became durable; `None` when
    /// the process died in its flush (and was started again).
    fn commit(&mut self, batch: Batch) -> Option<bool> {
        if self.rng.chance(10) {
            // Inputs while the batch is in flight, which the sequencer must queue behind it.
            self.stats.sent_in_flight += 1;
            self.send();
            self.submit_inbox();
            self.node.sequencer.handle_timeout(self.now_ms);
        }
        let node = &mut self.node;
        let committed = driver::commit(&mut node.sequencer, &batch, &node.store, &node.read);
        let seqs = (batch.first_seq(), batch.last_seq());
        self.note(|| format!("batch of seqs {seqs:?}: {committed:?}"));
        if self.disk.is_down() {
            self.stats.deaths_in_flush += 1;
            self.auditor.died_in_flush();
            self.unconfirmed = Some(batch);
            let process_only = self.rng.chance(50);
            self.die(process_only);
            return None;
        }
        let Err(failure) = committed else {
            self.auditor.durable(&batch);
            self.check_batch_rooms(&batch);
            return Some(true);
        };
        self.retry_at_ms = self.now_ms + RETRY_AFTER_FAILURE_MS;
        let flush = matches!(failure, Failure::Flush(_));
        if flush {
            self.stats.failed_flushes += 1;
            self.unconfirmed = Some(batch);
        } else {
            self.stats.failed_writes += 1;
        }
        self.auditor.failed(flush);
        Some(false)
    }

    fn answer(&mut self) {
        while let Some((ticket, answer)) = self.node.sequencer.poll_reply() {
            let outcome = driver::resolve(answer, &self.node.store);
            let read_seq = self
                .node
                .read
                .read()
                .expect("the read model lock")
                .last_seq();
            self.auditor.replied(ticket, &outcome, read_seq);
            let index = self
                .sent
                .iter()
                .position(|(t, _)| *t == ticket)
                .expect("a reply goes to a command that was sent");
            let (_, request) = self.sent.swap_remove(index);
            let unavailable =
                outcome.as_ref().err().map(|e| e.code()) == Some(ErrorCode::Unavailable);
            if unavailable && request.command_id.is_some() {
                self.retryable.push(request);
            }
        }
    }

    /// The rooms a durable batch touched, as readers see them, agree with the model.
    fn check_batch_rooms(&self, batch: &Batch) {
        let read = self.node.read.read().expect("the read model lock");
        let mut rooms: Vec<_> = batch.envelopes.iter().map(|e| &e.room_id).collect();
        rooms.dedup();
        for room_id in rooms {
            self.auditor.check_room(room_id, read.room_state(room_id));
        }
    }

    /// After a turn: every command was answered; a failed sequencer decides nothing; a healthy one left no
    /// invitation overdue (when no fault got in its way), and its next wake-up is no later than the next expiry.
    fn check_turn(&mut self, clean: bool) {
        assert_eq!(
            self.auditor.outstanding(),
            0,
            "a command left unanswered by its turn"
        );
        assert!(self.sent.is_empty() && self.inbox.is_empty());
        let sequencer = &mut self.node.sequencer;
        assert_eq!(sequencer.queued(), 0, "the turn decided everything queued");
        assert_eq!(sequencer.in_flight(), None);
        assert_eq!(
            self.unconfirmed.is_some(),
            *sequencer.health() != Health::Serving,
            "a failed flush, and only that, stops the engine"
        );
        if *sequencer.health() != Health::Serving {
            return;
        }
        // A failed batch puts its expiries off until the retry interval has passed.
        let earliest = self.auditor.earliest_pending_ms().map(|due| {
            if due <= self.retry_at_ms {
                self.retry_at_ms
            } else {
                due
            }
        });
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
        let log = self.held_log(durable);
        assert_eq!(log, self.auditor.log(), "{what}: the store's log");
        let archived = self.archived(&log, what);
        let read = self.node.read.read().expect("the read model lock");
        assert_eq!(read.last_seq(), durable, "{what}: the read model's seq");
        let rooms = read
            .rooms()
            .chain(archived.iter().map(|(id, state)| (id, state)));
        self.auditor
            .check_rooms(&format!("{what}, read model"), rooms);
        drop(read);
        if self.node.sequencer.in_flight().is_none() {
            // After a failed batch too, failed flush included: its rooms went back to what is durable.
            let rooms = self.node.sequencer.rooms();
            let rooms = rooms.chain(archived.iter().map(|(id, state)| (id, state)));
            self.auditor
                .check_rooms(&format!("{what}, sequencer"), rooms);
        }
    }

    /// The archived rooms that are not in memory: each ended, with the seqs of its events in the log. (A room
    /// in memory may also be archived: loaded back for a command, or not yet gone from the snapshots.)
    fn archived(&self, log: &[Envelope], what: &str) -> Vec<(RoomId, RoomState)> {
        let read = self.node.read.read().expect("the read model lock");
        let mut archived = Vec::new();
        for (room_id, entry) in driver::archived_rooms(&self.node.store).expect("archives list") {
            let held = read.room_state(&room_id).is_some();
            let (state, seqs) = match entry {
                Ok(entry) => entry,
                // Torn by a crash before a flush made it durable: the room is back in memory, from the log.
                Err(reason) if held => {
                    self.note(|| format!("a torn archive of {room_id}: {reason}"));
                    continue;
                }
                Err(reason) => {
                    panic!("{what}: the archive of {room_id}, not in memory, is lost: {reason}")
                }
            };
            assert!(
                state.is_ended(),
                "{what}: archived room {room_id} has ended"
            );
            let in_log: Vec<u64> = log
                .iter()
                .filter(|e| e.room_id == room_id)
                .map(|e| e.seq)
                .collect();
            assert_eq!(
                seqs, in_log,
                "{what}: the archive of {room_id} names its events"
            );
            if !held {
                archived.push((room_id, state));
            }
        }
        archived
    }

    /// Between steps nothing is in flight and every command handed to the engine was answered.
    fn check_between_steps(&mut self, what: &str) {
        assert_eq!(
            self.auditor.outstanding(),
            0,
            "{what}: a command left unanswered"
        );
        self.check_state(what);
    }

    /// The machine crashes between steps.
    fn crash(&mut self) {
        self.check_between_steps("before a crash");
        self.die(false);
    }

    /// The process dies (in a flush, or between steps) and is started again, on the same machine (its page
    /// cache intact) or after the machine crashed (keeping what a crash keeps). It must recover exactly the
    /// durable log, plus at most the unconfirmed batch, whole.
    fn die(&mut self, process_only: bool) {
        self.note(|| {
            format!(
                "dies; restarts {}",
                if process_only {
                    "the process"
                } else {
                    "the machine"
                }
            )
        });
        if self.cluster.is_some() {
            // The local store is a cache, whatever the disk kept: the next owner starts from the log.
        } else if process_only {
            self.stats.process_restarts += 1;
            self.disk.restart();
        } else {
            self.stats.crashes += 1;
            let how = match self.rng.below(3) {
                0 => Crash::LoseUnflushed,
                1 => Crash::KeepUnflushed(self.rng.index(3)),
                _ => Crash::TearLast,
            };
            self.note(|| format!("the disk keeps {how:?}"));
            self.disk.crash(how);
            if self.rng.chance(30) {
                // The mark file is written without a flush: the crash may have lost its last writes.
                self.stats.marks_set_back += 1;
                self.disk.set_mark_back(1 + self.rng.index(2));
            }
        }
        self.auditor.crashed();
        for (_, request) in std::mem::take(&mut self.sent)
            .into_iter()
            .chain(std::mem::take(&mut self.inbox))
        {
            if request.command_id.is_some() {
                self.retryable.push(request);
            }
        }
        self.start();
        let recovered = self.held_log(u64::MAX);
        self.note(|| {
            format!(
                "recovered {} events, opened {:?}",
                recovered.len(),
                self.node.store.opened()
            )
        });
        self.auditor
            .recovered(&recovered, self.unconfirmed.take().as_ref());
        self.armed = false;
        self.check_state("after recovery");
    }

    /// A clean stop and start: the queue drained, a snapshot and a flush, then recovery from it.
    fn restart(&mut self) {
        self.stats.restarts += 1;
        self.note(|| "a clean restart".into());
        self.turn();
        if self.unconfirmed.is_some() {
            // The turn failed its flush or died in it: the supervisor's restart is the process's.
            return self.die(true);
        }
        let node = &mut self.node;
        if let Some(request) = node.sequencer.snapshot_now() {
            driver::snapshot(&mut node.sequencer, request, &node.store, &node.read);
        }
        if node.store.flush().is_err() || self.disk.is_down() {
            // The stop's own flush failed: a crash, then.
            return self.die(false);
        }
        self.check_between_steps("before a restart");
        self.start();
        self.check_state("after a restart");
    }

    /// Starts the engine again (see [`World::boot`]).
    fn start(&mut self) {
        // In cluster mode, usually from the last base saved; now and then the snapshot bucket cannot be read.
        let from_base = self.cluster.is_some() && self.rng.chance(90);
        let (disk, node) = Self::boot(
            &self.disk,
            self.cluster.as_ref(),
            self.now_ms,
            self.config,
            &mut self.stats,
            from_base,
        );
        self.disk = disk;
        self.node = node;
    }
}
