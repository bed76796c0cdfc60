//! The sequencer as a state machine: commands and time go in, batches to make durable and replies come out.
//!
//! Every decision of the write path lives here, and nothing else does: no channel, clock, thread, lock or store.
//! It holds the rooms as decided so far, the remembered command ids, the expiry timers and the numbering of seqs
//! and versions. A driver feeds it inputs and polls its outputs, doing the IO in between, in this order:
//!
//! ```text
//! handle_timeout(now) · handle_command(now, submission)   queue
//!   (a command on a room not held: the driver looks for
//!   its archive first, handle_loaded(room, state))        admit
//! poll_batch() -> Batch                                   decide
//! (the driver writes and flushes the batch)               flush
//! handle_durable(id) · handle_failed(id, failure, ..)     ack
//! poll_reply() -> (reply_to, Answer)
//! (the driver publishes the batch)                        publish
//! poll_timeout() -> when handle_timeout is due next
//! poll_snapshot() · handle_snapshot(..)                   snapshot
//! poll_evict() -> rooms · handle_evicted(rooms, written)  archive ended rooms
//! ```
//!
//! An ended room is final (nothing is appended to it), so once its retention has passed the driver archives it
//! in the store and the sequencer lets it go; a later command on it loads it back ([`crate::driver::admit`]).
//!
//! At most one batch is in flight. A command's reply is released only once the batch it was decided in is
//! durable, rejections included, since they were decided against state that was not durable yet. A failed
//! batch answers every one of its commands `unavailable` and puts the state back to what is durable; a failed
//! flush also stops the sequencer for good ("fail-stop"): nothing written since the last good flush can be
//! trusted, so it refuses every command until a new one is recovered from the store.
//!
//! `T` is whatever the driver needs to answer a caller: a channel sender in the engine, a ticket number in the
//! simulator.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;

use cohost_core::{Context, Policy, RoomState, apply, decide, reply};
use cohost_proto::{
    Actor, Command, Envelope, Event, InvitationId, InvitationTarget, Reply, RoomId, StopReason,
    UserId, UserTarget,
};
use cohost_store::IdempotencyRecord;

use crate::abandoned::{self, Abandoned};
use crate::idempotency::{self, Idempotency, Remembered};
use crate::tallies::RoomTallies;
use crate::timers::{Due, Timers};
use crate::{Error, Options};

/// The largest batch the sequencer takes, whatever the config says.
pub const BATCH_MAX_LIMIT: usize = 1_024;

/// How long after a failed batch its expiries are tried again, so a disk that keeps failing costs one failed
/// write per this interval, not a busy loop.
pub const RETRY_AFTER_FAILURE_MS: u64 = 100;

/// How long an ended room stays in memory unless configured otherwise.
pub const ENDED_RETENTION_MS_DEFAULT: u64 = 10 * 60_000;
/// Rooms archived in one go.
pub const EVICT_MAX: usize = 1_024;

/// What the sequencer needs to know of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerConfig {
    /// The rules' settings, as [`crate::Config::policy`].
    pub policy: Policy,
    /// Commands decided per batch, 1 to [`BATCH_MAX_LIMIT`].
    pub batch_max: usize,
    /// Commands waiting to be decided; past this, `handle_command` answers `unavailable` at once.
    pub queue_max: usize,
    /// Events between room snapshots.
    pub snapshot_every_events: u64,
    /// How long a `command_id` is remembered.
    pub idempotency_ttl_ms: u64,
    /// The most `command_id`s remembered; the oldest are forgotten first.
    pub idempotency_max: usize,
    /// How long an ended room stays in memory before it is archived and leaves (it is loaded back on demand).
    pub ended_retention_ms: u64,
    /// How long a room may stay idle from its creation before the system ends it (`never_live`); 0 never.
    pub idle_room_ms: u64,
    /// How long a live room's host may be away, as presence reports say, before the system stops it
    /// (`host_absent`); 0 never. Only where presence is reported.
    pub host_absent_ms: u64,
    /// How long the log keeps the events of an ended room; 0 keeps everything ([`crate::Config`]).
    pub retain_ended_ms: u64,
    /// Keep a [`Decision`] for every command, for an auditor to check (the simulator); costs a clone each.
    pub trace: bool,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            batch_max: BATCH_MAX_LIMIT,
            queue_max: 65_536,
            snapshot_every_events: 1_000_000,
            idempotency_ttl_ms: 24 * 3_600_000,
            idempotency_max: 1_000_000,
            ended_retention_ms: ENDED_RETENTION_MS_DEFAULT,
            idle_room_ms: 0,
            host_absent_ms: 0,
            retain_ended_ms: 0,
            trace: false,
        }
    }
}

/// A command to decide, and whatever the driver needs to answer its caller.
#[derive(Debug)]
pub struct Submission<T> {
    /// Who sends it, already authenticated.
    pub actor: Actor,
    /// What to do.
    pub command: Command,
    /// Its `command_id` and `expected_version`.
    pub options: Options,
    /// Handed back with the answer by [`Sequencer::poll_reply`].
    pub reply_to: T,
}

/// Names a batch between `poll_batch` and `handle_durable` / `handle_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub u64);

/// What must become durable, in one write with one flush, before any command decided in it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// What to name it in `handle_durable` or `handle_failed`.
    pub id: BatchId,
    /// Seqs consecutive, continuing the durable log.
    pub envelopes: Vec<Envelope>,
    /// The replies of its commands that carry a `command_id`, so a retry gets the same answer.
    pub records: Vec<IdempotencyRecord>,
    /// Commands decided in it, those that appended nothing included.
    pub commands: usize,
}

impl Batch {
    /// The seq of its first envelope (a batch holds at least one).
    pub fn first_seq(&self) -> u64 {
        self.envelopes[0].seq
    }

    /// The seq of its last envelope.
    pub fn last_seq(&self) -> u64 {
        self.envelopes[self.envelopes.len() - 1].seq
    }
}

/// Where a remembered reply is stored: the `index`th idempotency record of the batch whose first seq is
/// `batch_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAt {
    /// The first seq of the batch whose record holds the reply.
    pub batch_seq: u64,
    /// The reply's position among that batch's idempotency records.
    pub index: u32,
}

/// A command's answer. The sequencer keeps no replies in memory past their batch, so a retry of a remembered
/// command is answered with where its first reply is stored, for the driver to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The answer itself.
    Ready(Result<Reply, Error>),
    /// A remembered command's first reply, to be read from the store (`driver::resolve`).
    Stored(StoredAt),
}

/// Why a batch did not become durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The write failed and was taken back: the store is as it was before the batch. The sequencer goes on.
    Write(String),
    /// The flush failed, or taking a failed write back did: what is on disk is unknown until the store is
    /// reopened, so the sequencer stops (fail-stop).
    Flush(String),
}

/// Whether the sequencer takes commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Taking commands.
    Serving,
    /// Fail-stop: every command is answered `unavailable` until the engine is recovered from its store.
    Failed {
        /// The first failure: a flush's error, or the sequencer's panic message.
        cause: String,
    },
}

/// What opening a log found, for [`Sequencer::resume`].
#[derive(Debug)]
pub(crate) struct Resumed {
    /// The rooms in memory as of `last_seq`, all durable.
    pub rooms: HashMap<RoomId, RoomState>,
    pub last_seq: u64,
    pub snapshot_seq: u64,
    /// Whether anything changed since the snapshot at `snapshot_seq` (the replay applied events, or opening
    /// archived rooms).
    pub changed: bool,
    pub idempotency: Idempotency,
    pub now_ms: u64,
    /// When idle rooms were created, where the log still holds their first event.
    pub created_ms: HashMap<RoomId, u64>,
}

/// One decided command, as the trace keeps it (only with [`SequencerConfig::trace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The number `handle_command` returned; `None` for the sequencer's own expiries.
    pub submission: Option<u64>,
    /// Who sent it (the system, for expiries).
    pub actor: Actor,
    /// What was decided.
    pub command: Command,
    /// Its options.
    pub options: Options,
    /// The sequencer's time when it was decided, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The answer it got (or will get, once its batch is durable).
    pub answer: Answer,
    /// The seqs of the events it appended; empty when it appended none.
    pub seqs: Range<u64>,
    /// The batch that must become durable before it is answered; `None` when it was answered at once.
    pub batch: Option<BatchId>,
}

/// A snapshot of every room in memory is due, as of `seq`, the last durable seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The durable seq the snapshot is as of.
    pub seq: u64,
}

struct Queued<T> {
    actor: Actor,
    command: Command,
    options: Options,
    /// `None` for the sequencer's own expiries, which nobody waits for.
    reply_to: Option<T>,
    submission: Option<u64>,
}

/// The batch being decided, then in flight until it is durable or failed.
struct InFlight<T> {
    id: BatchId,
    first_seq: u64,
    envelopes: Vec<Envelope>,
    records: Vec<IdempotencyRecord>,
    answers: Vec<(Option<T>, Answer)>,
    touched: Vec<RoomId>,
    remembered: Vec<idempotency::Key>,
    /// Invitations this batch creates and co-hosts it starts a disconnect grace for, armed once it is
    /// durable.
    timers: Vec<(u64, Due)>,
    /// Rooms this batch ends, to leave memory a retention after it is durable.
    ended: Vec<RoomId>,
}

/// The rooms a queued command or the batch in flight names.
fn busy_rooms<'a, T>(
    queue: &'a VecDeque<Queued<T>>,
    in_flight: Option<&'a InFlight<T>>,
) -> HashSet<&'a RoomId> {
    let queued = queue.iter().map(|q| q.command.room_id());
    let in_flight = in_flight.into_iter().flat_map(|f| &f.touched);
    queued.chain(in_flight).collect()
}

/// See the module docs.
pub struct Sequencer<T> {
    config: SequencerConfig,
    now_ms: u64,
    rooms: HashMap<RoomId, RoomState>,
    idempotency: Idempotency,
    /// Counts across rooms, for the quotas that span them; as of `rooms`.
    tallies: RoomTallies,
    timers: Timers,
    /// Invitations with an `expire` queued and not yet decided, so a timer armed twice queues it once.
    expiring: HashSet<InvitationId>,
    /// Co-hosts with a `disconnect` queued and not yet decided, likewise.
    disconnecting: HashSet<(RoomId, UserId)>,
    /// When rooms become abandoned, and which have an `end_abandoned` queued and not yet decided.
    abandoned: Abandoned,
    ending: HashSet<RoomId>,
    queue: VecDeque<Queued<T>>,
    in_flight: Option<InFlight<T>>,
    replies: VecDeque<(T, Answer)>,
    /// The last seq decided, and the last one durable.
    last_seq: u64,
    durable_seq: u64,
    next_batch: u64,
    next_submission: u64,
    /// Whether anything durable changed since the last snapshot.
    changed: bool,
    /// Ended rooms and when they leave memory, in that order.
    evictions: VecDeque<(u64, RoomId)>,
    snapshot_seq: u64,
    /// The durable seq at which the next snapshot is due.
    snapshot_due_seq: u64,
    health: Health,
    trace: Vec<Decision>,
}

impl<T> std::fmt::Debug for Sequencer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("now_ms", &self.now_ms)
            .field("last_seq", &self.last_seq)
            .field("durable_seq", &self.durable_seq)
            .field("queued", &self.queue.len())
            .field("in_flight", &self.in_flight.as_ref().map(|b| b.id))
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

fn limits(config: &SequencerConfig) -> abandoned::Limits {
    abandoned::Limits {
        idle_room_ms: config.idle_room_ms,
        host_absent_ms: config.host_absent_ms,
    }
}

fn clamp(config: SequencerConfig) -> SequencerConfig {
    SequencerConfig {
        batch_max: config.batch_max.clamp(1, BATCH_MAX_LIMIT),
        queue_max: config.queue_max.max(1),
        snapshot_every_events: config.snapshot_every_events.max(1),
        ..config
    }
}

impl<T> Sequencer<T> {
    /// A sequencer over an empty log.
    pub fn new(config: SequencerConfig) -> Self {
        let idempotency = Idempotency::new(config.idempotency_ttl_ms, config.idempotency_max);
        let found = Resumed {
            rooms: HashMap::new(),
            last_seq: 0,
            snapshot_seq: 0,
            changed: false,
            idempotency,
            now_ms: 0,
            created_ms: HashMap::new(),
        };
        Self::resume(config, found)
    }

    /// A sequencer that continues a log, from what opening it found.
    pub(crate) fn resume(config: SequencerConfig, found: Resumed) -> Self {
        let Resumed {
            rooms,
            last_seq,
            snapshot_seq,
            changed,
            idempotency,
            now_ms,
            created_ms,
        } = found;
        let config = clamp(config);
        let abandoned = Abandoned::resume(limits(&config), rooms.iter(), created_ms, now_ms);
        let mut timers = Timers::default();
        let grace_ms = config.policy.disconnect_grace_ms();
        timers.rebuild(rooms.values(), grace_ms, abandoned.deadlines());
        // Ended rooms that opening kept in memory leave a retention from now.
        let evict_at = now_ms.saturating_add(config.ended_retention_ms);
        let evictions = rooms
            .iter()
            .filter(|(_, state)| state.is_ended())
            .map(|(room_id, _)| (evict_at, room_id.clone()))
            .collect();
        Self {
            config,
            now_ms,
            tallies: RoomTallies::count(rooms.values()),
            rooms,
            idempotency,
            timers,
            expiring: HashSet::new(),
            disconnecting: HashSet::new(),
            abandoned,
            ending: HashSet::new(),
            queue: VecDeque::new(),
            in_flight: None,
            replies: VecDeque::new(),
            last_seq,
            durable_seq: last_seq,
            next_batch: 1,
            next_submission: 1,
            changed,
            evictions,
            snapshot_seq,
            snapshot_due_seq: snapshot_seq + config.snapshot_every_events,
            health: Health::Serving,
            trace: Vec::new(),
        }
    }

    fn observe(&mut self, now_ms: u64) {
        // Decisions never go back in time, even if the clock does.
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Queues a command; returns its submission number (what the trace names it by). When the queue is full
    /// or the sequencer has failed, the command is answered `unavailable` at once.
    pub fn handle_command(&mut self, now_ms: u64, submission: Submission<T>) -> u64 {
        self.observe(now_ms);
        let number = self.next_submission;
        self.next_submission += 1;
        let refused = match &self.health {
            Health::Failed { cause } => Some(failed_error(cause)),
            Health::Serving if self.queue.len() >= self.config.queue_max => Some(Error::QueueFull),
            Health::Serving => None,
        };
        match refused {
            Some(error) => self
                .replies
                .push_back((submission.reply_to, Answer::Ready(Err(error)))),
            None => self.queue.push_back(Queued {
                actor: submission.actor,
                command: submission.command,
                options: submission.options,
                reply_to: Some(submission.reply_to),
                submission: Some(number),
            }),
        }
        number
    }

    /// Queues `expire`, as the system, for every pending invitation due at `now_ms` (as far as the queue has
    /// room; the rest stay armed).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.observe(now_ms);
        self.queue_due();
    }

    /// Queues `expire` for what is due at the time last seen, as far as the queue has room.
    fn queue_due(&mut self) {
        if self.health != Health::Serving {
            return;
        }
        while self.queue.len() < self.config.queue_max {
            let Some(due) = self.timers.pop_due(self.now_ms) else {
                break;
            };
            let command = match due {
                Due::Expire(id) => {
                    let pending = self
                        .rooms
                        .get(id.room_id())
                        .and_then(|state| state.invitation(&id))
                        .is_some_and(|invitation| invitation.status.is_pending());
                    if !pending || !self.expiring.insert(id.clone()) {
                        continue;
                    }
                    Command::Expire(InvitationTarget { invitation_id: id })
                }
                Due::Disconnect(room_id, user_id) => {
                    if !self.disconnect_due(&room_id, &user_id)
                        || !self
                            .disconnecting
                            .insert((room_id.clone(), user_id.clone()))
                    {
                        continue;
                    }
                    Command::Disconnect(UserTarget { room_id, user_id })
                }
                Due::NeverLive(room_id) | Due::HostAbsent(room_id)
                    if self.ending.contains(&room_id) =>
                {
                    continue;
                }
                Due::NeverLive(room_id) => {
                    match self.abandoned_due(&room_id, StopReason::NeverLive) {
                        Some(command) => command,
                        None => continue,
                    }
                }
                Due::HostAbsent(room_id) => {
                    match self.abandoned_due(&room_id, StopReason::HostAbsent) {
                        Some(command) => command,
                        None => continue,
                    }
                }
            };
            self.queue.push_back(Queued {
                actor: Actor::System,
                command,
                options: Options::default(),
                reply_to: None,
                submission: None,
            });
        }
        if self.timers.needs_rebuild() {
            let grace_ms = self.config.policy.disconnect_grace_ms();
            let more = self.abandoned.deadlines();
            self.timers.rebuild(self.rooms.values(), grace_ms, more);
        }
    }

    /// `end_abandoned` for the room if it is still abandoned for `reason` by now, marked as queued.
    fn abandoned_due(&mut self, room_id: &RoomId, reason: StopReason) -> Option<Command> {
        let state = self.rooms.get(room_id);
        let command = self.abandoned.due(room_id, reason, state, self.now_ms)?;
        self.ending.insert(room_id.clone());
        Some(command)
    }

    /// Whether the co-host's disconnect grace has run out by now (a deadline armed before a report that they
    /// joined, or before they left the seat, no longer holds).
    fn disconnect_due(&self, room_id: &RoomId, user_id: &UserId) -> bool {
        let grace_ms = self.config.policy.disconnect_grace_ms();
        let state = self.rooms.get(room_id);
        let liveness = state.and_then(|state| state.liveness(user_id));
        liveness
            .and_then(|l| l.deadline_ms(grace_ms))
            .is_some_and(|deadline| deadline <= self.now_ms)
    }

    /// When `handle_timeout` is due next: the earliest pending expiry.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.health {
            Health::Serving => self.timers.next_due_ms(),
            Health::Failed { .. } => None,
        }
    }

    /// Decides queued commands in order, at most `batch_max` per batch, and returns the next batch to make
    /// durable. Commands that append nothing, when no batch is in flight, were decided against durable state
    /// and are answered at once. `None` while a batch is in flight, after a failure, or when the queue is empty.
    pub fn poll_batch(&mut self) -> Option<Batch> {
        if self.in_flight.is_some() || self.health != Health::Serving {
            return None;
        }
        // Expiries a full queue held back get their turn as it empties.
        self.queue_due();
        while !self.queue.is_empty() {
            let mut batch = InFlight {
                id: BatchId(self.next_batch),
                first_seq: self.last_seq + 1,
                envelopes: Vec::new(),
                records: Vec::new(),
                answers: Vec::with_capacity(self.queue.len().min(self.config.batch_max)),
                touched: Vec::new(),
                remembered: Vec::new(),
                timers: Vec::new(),
                ended: Vec::new(),
            };
            let traced_from = self.trace.len();
            for _ in 0..self.config.batch_max {
                let Some(queued) = self.queue.pop_front() else {
                    break;
                };
                self.decide_one(queued, &mut batch);
            }
            if batch.envelopes.is_empty() {
                self.release(batch.answers);
                self.queue_due();
                continue;
            }
            self.next_batch += 1;
            let out = Batch {
                id: batch.id,
                envelopes: std::mem::take(&mut batch.envelopes),
                records: std::mem::take(&mut batch.records),
                commands: batch.answers.len(),
            };
            for decision in &mut self.trace[traced_from..] {
                decision.batch = Some(batch.id);
            }
            self.in_flight = Some(batch);
            return Some(out);
        }
        None
    }

    /// The batch is durable: its commands' answers are released, its invitations' timers armed.
    pub fn handle_durable(&mut self, id: BatchId) {
        let batch = self.take_in_flight(id);
        assert_eq!(
            batch.first_seq,
            self.durable_seq + 1,
            "batches become durable in seq order"
        );
        self.durable_seq = self.last_seq;
        self.idempotency.trim(self.now_ms);
        for (at_ms, due) in batch.timers {
            self.timers.push(at_ms, due);
        }
        for room_id in &batch.touched {
            self.abandoned.settle(room_id, self.rooms.get(room_id));
        }
        let evict_at = self.now_ms.saturating_add(self.config.ended_retention_ms);
        self.evictions
            .extend(batch.ended.into_iter().map(|room_id| (evict_at, room_id)));
        self.changed = true;
        self.release(batch.answers);
    }

    /// The batch did not become durable: every command decided in it is answered `unavailable` (a retry with
    /// the same `command_id` is safe), and each room it touched goes back to `durable(room_id)`, its state as
    /// of the last durable batch (`None` for a room that did not exist). A [`Failure::Flush`] stops the
    /// sequencer.
    pub fn handle_failed(
        &mut self,
        id: BatchId,
        failure: Failure,
        durable: impl Fn(&RoomId) -> Option<RoomState>,
    ) {
        let mut batch = self.take_in_flight(id);
        batch.touched.sort_unstable();
        batch.touched.dedup();
        let retry_ms = self.now_ms + RETRY_AFTER_FAILURE_MS;
        for room_id in &batch.touched {
            if let Some(decided) = self.rooms.get(room_id) {
                self.tallies.room(decided, false);
            }
            match durable(room_id) {
                Some(state) => {
                    // The timers of what this batch answered were dropped as not pending: arm them again,
                    // not before the retry interval.
                    for invitation in state.pending() {
                        let due_ms = invitation.expires_ms.max(retry_ms);
                        let due = Due::Expire(invitation.invitation_id.clone());
                        self.timers.push(due_ms, due);
                    }
                    let grace_ms = self.config.policy.disconnect_grace_ms();
                    for (at_ms, user) in state.disconnect_deadlines(grace_ms) {
                        let due = Due::Disconnect(room_id.clone(), user.clone());
                        self.timers.push(at_ms.max(retry_ms), due);
                    }
                    let reset = self.abandoned.reset(room_id, Some(&state), retry_ms);
                    let reset = reset.map(|(at_ms, due)| (at_ms.max(retry_ms), due));
                    self.timers.extend(reset);
                    self.tallies.room(&state, true);
                    self.rooms.insert(room_id.clone(), state);
                }
                None => {
                    self.abandoned.reset(room_id, None, retry_ms);
                    self.rooms.remove(room_id);
                }
            }
        }
        for key in batch.remembered {
            self.idempotency.remove(key);
        }
        self.last_seq = self.durable_seq;
        let cause = match failure {
            Failure::Write(cause) => cause,
            Failure::Flush(cause) => {
                self.fail(cause.clone());
                cause
            }
        };
        let error = Error::NotStored {
            cause: cause.clone(),
        };
        let answers = batch
            .answers
            .into_iter()
            .map(|(to, _)| (to, Answer::Ready(Err(error.clone()))));
        self.release_answers(answers);
    }

    /// Fail-stop: every queued command is answered `unavailable`, and every later one.
    fn fail(&mut self, cause: String) {
        let error = failed_error(&cause);
        self.health = Health::Failed { cause };
        let queued: Vec<_> = self.queue.drain(..).collect();
        self.expiring.clear();
        self.disconnecting.clear();
        self.ending.clear();
        self.release_answers(
            queued
                .into_iter()
                .map(|q| (q.reply_to, Answer::Ready(Err(error.clone())))),
        );
    }

    /// The next answer to send.
    pub fn poll_reply(&mut self) -> Option<(T, Answer)> {
        self.replies.pop_front()
    }

    /// Rooms changed since the last snapshot, when one is due and no batch is in flight.
    pub fn poll_snapshot(&mut self) -> Option<SnapshotRequest> {
        let due = self.durable_seq >= self.snapshot_due_seq;
        if !due {
            return None;
        }
        self.snapshot_now()
    }

    /// The rooms changed since the last snapshot, whether or not one is due (at shutdown).
    pub fn snapshot_now(&mut self) -> Option<SnapshotRequest> {
        if !self.changed || self.in_flight.is_some() || self.health != Health::Serving {
            return None;
        }
        Some(SnapshotRequest {
            seq: self.durable_seq,
        })
    }

    /// The snapshot taken as of `seq` was written (or not; then the next is due a full interval later).
    pub fn handle_snapshot(&mut self, seq: u64, written: bool) {
        self.snapshot_due_seq = seq + self.config.snapshot_every_events;
        if written {
            assert_eq!(seq, self.durable_seq, "a snapshot is as of the durable seq");
            self.snapshot_seq = seq;
            self.changed = false;
        }
    }

    /// Ended rooms due to leave memory: the driver archives them (their read-model entries, as of the durable
    /// seq) and answers [`Sequencer::handle_evicted`]. Under load the sequencer is never idle, so it evicts
    /// while busy too, passing over the rooms a queued command or the batch in flight names (a queued command
    /// must find its room where the driver admitted it, and the read model holds an in-flight room's final
    /// state only once its batch is durable); those are tried again at the next call.
    pub fn poll_evict(&mut self) -> Option<Vec<RoomId>> {
        if self.health != Health::Serving {
            return None;
        }
        let due_now = self
            .evictions
            .front()
            .is_some_and(|(at_ms, _)| *at_ms <= self.now_ms);
        if !due_now {
            return None;
        }
        let busy = busy_rooms(&self.queue, self.in_flight.as_ref());
        let mut due = Vec::new();
        let mut passed_over = Vec::new();
        for _ in 0..EVICT_MAX {
            let Some((at_ms, _)) = self.evictions.front() else {
                break;
            };
            if *at_ms > self.now_ms {
                break;
            }
            let (at_ms, room_id) = self.evictions.pop_front().expect("looked at above");
            if busy.contains(&room_id) {
                passed_over.push((at_ms, room_id));
            } else if self.rooms.get(&room_id).is_some_and(RoomState::is_ended) {
                due.push(room_id);
            }
        }
        for entry in passed_over.into_iter().rev() {
            self.evictions.push_front(entry);
        }
        (!due.is_empty()).then_some(due)
    }

    /// The rooms of [`Sequencer::poll_evict`] were archived (`written`) and leave memory, or were not: then
    /// they are tried again after the retry interval.
    pub fn handle_evicted(&mut self, rooms: Vec<RoomId>, written: bool) {
        if !written {
            // In their place by time, so that the retry is not kept waiting behind rooms due later.
            let retry_at = self.now_ms.saturating_add(RETRY_AFTER_FAILURE_MS);
            let at = self
                .evictions
                .partition_point(|(at_ms, _)| *at_ms <= retry_at);
            for (offset, room_id) in rooms.into_iter().enumerate() {
                self.evictions.insert(at + offset, (retry_at, room_id));
            }
            return;
        }
        for room_id in rooms {
            let state = self
                .rooms
                .remove(&room_id)
                .expect("poll_evict names held rooms");
            assert!(state.is_ended(), "only ended rooms leave memory");
        }
    }

    /// Whether the room is in memory (else the driver looks for it among the archived, before a command on it).
    pub fn holds(&self, room_id: &RoomId) -> bool {
        self.rooms.contains_key(room_id)
    }

    /// An archived room is back in memory for a command on it; it leaves again a retention from now.
    pub fn handle_loaded(&mut self, room_id: RoomId, state: RoomState) {
        assert!(state.is_ended(), "only ended rooms are archived");
        assert!(
            !self.rooms.contains_key(&room_id),
            "a held room is not loaded"
        );
        let evict_at = self.now_ms.saturating_add(self.config.ended_retention_ms);
        self.evictions.push_back((evict_at, room_id.clone()));
        self.rooms.insert(room_id, state);
    }

    /// Answers a command at once with `error` (the driver could not prepare it: an archived room unreadable);
    /// returns its submission number, as `handle_command` does.
    pub fn refuse(&mut self, submission: Submission<T>, error: Error) -> u64 {
        let number = self.next_submission;
        self.next_submission += 1;
        self.replies
            .push_back((submission.reply_to, Answer::Ready(Err(error))));
        number
    }

    /// Whether it takes commands, or why not.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The last durable seq.
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// With retention on: the time last seen and how long ended rooms' events are kept.
    pub fn retention(&self) -> Option<(u64, u64)> {
        (self.config.retain_ended_ms > 0).then_some((self.now_ms, self.config.retain_ended_ms))
    }

    /// The seq the last snapshot was written at.
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq
    }

    /// Commands waiting to be decided.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a batch is waiting for `handle_durable` or `handle_failed`.
    pub fn in_flight(&self) -> Option<BatchId> {
        self.in_flight.as_ref().map(|b| b.id)
    }

    /// Every room as decided so far (including a batch in flight).
    pub fn rooms(&self) -> impl Iterator<Item = (&RoomId, &RoomState)> {
        self.rooms.iter()
    }

    /// The decisions made since the last call, in order (empty unless [`SequencerConfig::trace`] is on).
    pub fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.trace)
    }

    fn take_in_flight(&mut self, id: BatchId) -> InFlight<T> {
        let batch = self
            .in_flight
            .take()
            .expect("handle_durable or handle_failed answers a batch in flight");
        assert_eq!(batch.id, id, "the batch answered is the one in flight");
        batch
    }

    fn release(&mut self, answers: Vec<(Option<T>, Answer)>) {
        self.release_answers(answers.into_iter());
    }

    fn release_answers(&mut self, answers: impl Iterator<Item = (Option<T>, Answer)>) {
        self.replies
            .extend(answers.filter_map(|(to, answer)| Some((to?, answer))));
    }

    /// Decides one command into the batch being built, applying its events to the rooms as it goes.
    fn decide_one(&mut self, queued: Queued<T>, batch: &mut InFlight<T>) {
        // A timer's ending is checked again now: what was queued before it (the host's return) may have
        // changed the room since the timer fired.
        if let Command::EndAbandoned(target) = &queued.command
            && queued.reply_to.is_none()
        {
            self.ending.remove(&target.room_id);
            let state = self.rooms.get(&target.room_id);
            let due = (self.abandoned).due(&target.room_id, target.reason, state, self.now_ms);
            if due.is_none() {
                return;
            }
        }
        let first_seq = self.last_seq + 1;
        let answer = self.decide_answer(&queued, batch);
        match &queued.command {
            Command::Expire(target) if queued.reply_to.is_none() => {
                self.expiring.remove(&target.invitation_id);
            }
            Command::Disconnect(target) if queued.reply_to.is_none() => {
                let key = (target.room_id.clone(), target.user_id.clone());
                self.disconnecting.remove(&key);
            }
            _ => {}
        }
        if self.config.trace {
            self.trace.push(Decision {
                submission: queued.submission,
                actor: queued.actor.clone(),
                command: queued.command.clone(),
                options: queued.options.clone(),
                at_ms: self.now_ms,
                answer: answer.clone(),
                seqs: first_seq..self.last_seq + 1,
                batch: None,
            });
        }
        batch.answers.push((queued.reply_to, answer));
    }

    fn decide_answer(&mut self, queued: &Queued<T>, batch: &mut InFlight<T>) -> Answer {
        let Queued {
            actor,
            command,
            options,
            ..
        } = queued;
        let key = options
            .command_id
            .as_ref()
            .map(|id| idempotency::key(actor, command.room_id(), id));
        let fingerprint = key.map(|_| idempotency::fingerprint(command, options.expected_version));
        if let (Some(key), Some(fingerprint)) = (key, fingerprint)
            && let Some(seen) = self.idempotency.get(key, self.now_ms)
        {
            if seen.fingerprint != fingerprint {
                return Answer::Ready(Err(Error::CommandIdReused));
            }
            return remembered_answer(seen, batch);
        }
        let Decided {
            events,
            reply,
            version,
        } = match self.decide_events(actor, command, options) {
            Ok(decided) => decided,
            Err(error) => return Answer::Ready(Err(error)),
        };
        // A command that changed nothing is not remembered: there is no record to keep its reply in, and a
        // retry decides the same nothing again.
        if events.is_empty() {
            return Answer::Ready(Ok(reply));
        }
        self.append(command.room_id(), version, actor, options, events, batch);
        if let (Some(key), Some(fingerprint), Some(command_id)) =
            (key, fingerprint, &options.command_id)
        {
            let index =
                u32::try_from(batch.records.len()).expect("a batch holds at most 1024 commands");
            batch.records.push(IdempotencyRecord {
                actor: actor.clone(),
                command_id: command_id.clone(),
                fingerprint,
                at_ms: self.now_ms,
                reply: idempotency::to_stored(&reply),
            });
            self.idempotency.insert(
                key,
                Remembered {
                    fingerprint,
                    at_ms: self.now_ms,
                    batch_seq: batch.first_seq,
                    index,
                },
            );
            batch.remembered.push(key);
        }
        Answer::Ready(Ok(reply))
    }

    /// The events `command` appends, already applied to its room; a room that a rejected `create_room` made
    /// room for is taken back.
    fn decide_events(
        &mut self,
        actor: &Actor,
        command: &Command,
        options: &Options,
    ) -> Result<Decided, Error> {
        let room_id = command.room_id();
        let creating =
            matches!(command, Command::CreateRoom(_)) && !self.rooms.contains_key(room_id);
        let ctx = Context {
            actor,
            now_ms: self.now_ms,
            expected_version: options.expected_version,
            policy: self.config.policy,
            tallies: &self.tallies,
        };
        // One lookup, and the id cloned only for a room being created.
        let state = if creating {
            self.rooms.entry(room_id.clone()).or_default()
        } else {
            self.rooms.get_mut(room_id).ok_or(Error::RoomNotFound)?
        };
        let ended = state.is_ended();
        match decide(state, command, &ctx) {
            Ok(events) => {
                // Eviction rests on this: an archived room's archive is its final state.
                assert!(
                    !ended || events.is_empty(),
                    "an ended room is final, yet {command:?} appended {events:?}"
                );
                for event in &events {
                    apply(state, event);
                    self.tallies.on_event(event);
                }
                Ok(Decided {
                    reply: reply(state, command, &events),
                    version: state.version(),
                    events,
                })
            }
            Err(rejection) => {
                if creating {
                    self.rooms.remove(room_id);
                }
                Err(rejection.into())
            }
        }
    }

    /// Numbers the events and adds them to the batch.
    fn append(
        &mut self,
        room_id: &RoomId,
        version_after: u64,
        actor: &Actor,
        options: &Options,
        events: Vec<Event>,
        batch: &mut InFlight<T>,
    ) {
        let version_before = version_after - events.len() as u64;
        let grace_ms = self.config.policy.disconnect_grace_ms();
        // Kept once each only if the batch fails: a search per command would cost a batch of n commands n².
        batch.touched.push(room_id.clone());
        if let Some(state) = self.rooms.get(room_id) {
            let started = self
                .abandoned
                .on_events(room_id, state, &events, self.now_ms);
            batch.timers.extend(started);
        }
        for (offset, event) in events.into_iter().enumerate() {
            match &event {
                Event::InvitationCreated { invitation } => batch.timers.push((
                    invitation.expires_ms,
                    Due::Expire(invitation.invitation_id.clone()),
                )),
                // A new seat, or a co-host reported gone: a disconnect grace starts.
                Event::InvitationApproved { invitation } if grace_ms > 0 => batch.timers.push((
                    invitation.updated_ms.saturating_add(grace_ms),
                    Due::Disconnect(room_id.clone(), invitation.user_id.clone()),
                )),
                Event::PresenceChanged {
                    user_id,
                    online: false,
                    stamp: Some(stamp),
                } if grace_ms > 0 => batch.timers.push((
                    stamp.at_ms.saturating_add(grace_ms),
                    Due::Disconnect(room_id.clone(), user_id.clone()),
                )),
                Event::RoomStopped { .. } => batch.ended.push(room_id.clone()),
                _ => {}
            }
            self.last_seq += 1;
            batch.envelopes.push(Envelope {
                seq: self.last_seq,
                room_id: room_id.clone(),
                version: version_before + offset as u64 + 1,
                at_ms: self.now_ms,
                actor: actor.user().cloned(),
                service: actor.service().cloned(),
                command_id: options.command_id.clone(),
                event,
            });
        }
        assert_eq!(
            batch.first_seq + batch.envelopes.len() as u64 - 1,
            self.last_seq,
            "seqs are gap-free"
        );
    }
}

/// What a command decided: its events (applied to its room already), its reply, and the room's version after.
struct Decided {
    events: Vec<Event>,
    reply: Reply,
    version: u64,
}

/// The first reply to a remembered command: from the batch being built, or where it is stored.
fn remembered_answer<T>(seen: Remembered, batch: &InFlight<T>) -> Answer {
    if seen.batch_seq != batch.first_seq {
        return Answer::Stored(StoredAt {
            batch_seq: seen.batch_seq,
            index: seen.index,
        });
    }
    let record = batch
        .records
        .get(seen.index as usize)
        .expect("a command remembered in this batch has its record in it");
    Answer::Ready(Ok(idempotency::from_stored(&record.reply)))
}

fn failed_error(cause: &str) -> Error {
    Error::Stopped {
        cause: cause.to_owned(),
    }
}
