//! The auditor: what the engine must have done, checked against the reference model and the log.
//!
//! It follows the sequencer's trace of decisions. A decision answered at once, or one whose batch became
//! durable, is replayed on the reference model (`cohost-model`) in the order the sequencer decided it; the two
//! must agree on the outcome and on how many events it appended, and the batch's envelopes must be exactly
//! those events. A decision whose batch failed is not replayed: its command must be answered `unavailable`.
//! Every command must be answered, once, and never before the read model shows its batch. The auditor keeps
//! every durable envelope, so after a crash the recovered log must be exactly that, plus at most one batch that
//! a failed flush or a death in a flush left unconfirmed, whole.
//!
//! It also models the engine's memory of command ids: the newest `max` keyed commands that landed (and those
//! of the batch being decided), each for `ttl_ms`. A retry within that memory must repeat the first reply and
//! append nothing; one past it is decided afresh.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Range;

use cohost_core::{RoomState, apply};
use cohost_engine::Error;
use cohost_engine::sequencer::{Answer, Batch, BatchId, Decision};
use cohost_model::{Model, ROOMS, compare_room, from_command, model_step, room_name};
use cohost_proto::{Actor, Command, CommandId, Envelope, ErrorCode, Reply, RoomId};

pub type Ticket = u64;

/// What a command's answer must be, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// Not decided yet (queued, or refused at the door, which answers `unavailable`).
    Waiting,
    /// Decided in a batch that is in flight: no answer may come yet.
    InFlight(BatchId),
    /// Decided in a batch that failed: only `unavailable` may come.
    Unavailable,
    /// Final: exactly this, once the read model reaches `visible_seq`.
    Exactly {
        outcome: Result<Reply, Error>,
        visible_seq: u64,
    },
}

/// A `command_id` is scoped by actor and room.
type Key = (Actor, RoomId, CommandId);

/// A keyed command that landed: what it asked, its first reply, and its place in the engine's memory.
#[derive(Debug, Clone)]
struct Landed {
    command: Command,
    expected_version: Option<u64>,
    reply: Reply,
    at_ms: u64,
    number: u64,
}

counters! {
    /// What the auditor checked, summed over seeds by the campaign.
    pub struct Counts {
        /// Decisions in the sequencer's trace, each checked.
        decisions,
        /// Batches that became durable.
        durable_batches,
        /// Batches whose write or flush failed.
        failed_batches,
        /// Replies checked.
        replies,
        /// Replies that were `unavailable`.
        unavailable,
        /// Retries the engine still remembered: the first reply repeated, nothing appended.
        retries_remembered,
        /// Retries of ids the engine had forgotten, decided afresh.
        retries_forgotten,
        /// Remembered retries answered with the first reply read back from the log.
        stored_answers,
        /// Expiries that appended.
        expiries,
        /// Removals for a disconnect grace run out.
        disconnects,
        /// Rooms the engine's own timers ended as abandoned (idle too long, or their host away too long).
        abandoned,
        /// Unconfirmed batches (a failed flush, a death in one) found whole in the log after recovery.
        survived_crashes,
    }
}

#[derive(Debug)]
pub struct Auditor {
    pub model: Model,
    /// Every durable envelope, in seq order.
    log: Vec<Envelope>,
    versions: HashMap<RoomId, u64>,
    landed: HashMap<Key, Landed>,
    /// The numbers of the durable landings the engine remembers, oldest first: the newest `memory_max`.
    memory: VecDeque<u64>,
    memory_max: usize,
    memory_ttl_ms: u64,
    next_landing: u64,
    by_submission: HashMap<u64, Ticket>,
    expected: HashMap<Ticket, Expected>,
    /// The decisions of the batch in flight.
    in_flight: Vec<Decision>,
    /// Decisions of a batch that failed in its flush or died in it: it may yet turn up in the log.
    unconfirmed: Vec<Decision>,
    /// Tickets cut off by a crash: no answer may ever come for them.
    cut_off: HashSet<Ticket>,
    /// The engine's `idle_room_ms` and `host_absent_ms`, which no timed ending may come before.
    pub abandon_after_ms: (u64, u64),
    pub counts: Counts,
}

fn code(outcome: &Result<Reply, Error>) -> Result<(), ErrorCode> {
    outcome.as_ref().map(drop).map_err(|e| e.code())
}

fn key_of(decision: &Decision) -> Option<Key> {
    let id = decision.options.command_id.clone()?;
    Some((
        decision.actor.clone(),
        decision.command.room_id().clone(),
        id,
    ))
}

impl Auditor {
    pub fn new(memory_max: usize, memory_ttl_ms: u64) -> Self {
        Self {
            model: Model::new(),
            log: Vec::new(),
            versions: HashMap::new(),
            landed: HashMap::new(),
            memory: VecDeque::new(),
            memory_max,
            memory_ttl_ms,
            next_landing: 1,
            by_submission: HashMap::new(),
            expected: HashMap::new(),
            in_flight: Vec::new(),
            unconfirmed: Vec::new(),
            cut_off: HashSet::new(),
            abandon_after_ms: (0, 0),
            counts: Counts::default(),
        }
    }

    pub fn durable_seq(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn log(&self) -> &[Envelope] {
        &self.log
    }

    /// Commands sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.expected.len()
    }

    pub fn submitted(&mut self, ticket: Ticket, number: u64) {
        self.by_submission.insert(number, ticket);
        self.expected.insert(ticket, Expected::Waiting);
    }

    /// Decisions from the trace, in the order they were made, all at `now_ms`. Those answered at once are
    /// final now.
    pub fn decided(&mut self, decisions: Vec<Decision>, now_ms: u64) {
        for decision in decisions {
            self.counts.decisions += 1;
            assert_eq!(
                decision.at_ms, now_ms,
                "decided at the time of its turn: {decision:?}"
            );
            match decision.batch {
                None => {
                    let outcome = self.replay(&decision, &mut Vec::new());
                    self.expect_final(&decision, outcome);
                }
                Some(id) => {
                    self.expect(&decision, Expected::InFlight(id));
                    self.in_flight.push(decision);
                }
            }
        }
    }

    /// The decision's outcome is final: its caller gets exactly it, once readers see the log as it is now.
    fn expect_final(&mut self, decision: &Decision, outcome: Result<Reply, Error>) {
        let visible_seq = self.durable_seq();
        let expected = Expected::Exactly {
            outcome,
            visible_seq,
        };
        self.expect(decision, expected);
    }

    fn expect(&mut self, decision: &Decision, expected: Expected) {
        let Some(number) = decision.submission else {
            return;
        };
        let ticket = self.by_submission[&number];
        let before = self.expected.insert(ticket, expected.clone());
        let was_waiting = before == Some(Expected::Waiting);
        let was_in_flight = matches!(before, Some(Expected::InFlight(_)))
            && !matches!(expected, Expected::InFlight(_));
        assert!(
            was_waiting || was_in_flight,
            "submission {number}: {before:?} then {expected:?}"
        );
    }

    /// The batch in flight became durable.
    pub fn durable(&mut self, batch: &Batch) {
        self.counts.durable_batches += 1;
        let decisions = std::mem::take(&mut self.in_flight);
        assert!(
            decisions.iter().all(|d| d.batch == Some(batch.id)),
            "the trace's batch is the one committed"
        );
        for (decision, outcome) in self.take_in(batch, &decisions) {
            self.expect_final(&decision, outcome);
        }
    }

    /// The batch in flight failed. A failed write is gone; a failed flush may still turn up at recovery.
    pub fn failed(&mut self, flush: bool) {
        self.counts.failed_batches += 1;
        let decisions = std::mem::take(&mut self.in_flight);
        for decision in &decisions {
            self.expect(decision, Expected::Unavailable);
        }
        if flush {
            self.unconfirmed = decisions;
        }
    }

    /// The process died in the flush of the batch in flight: like a failed flush, nobody hears of it.
    pub fn died_in_flush(&mut self) {
        self.unconfirmed = std::mem::take(&mut self.in_flight);
    }

    /// A reply reached its caller, when the read model was at `read_seq`.
    pub fn replied(&mut self, ticket: Ticket, outcome: &Result<Reply, Error>, read_seq: u64) {
        self.counts.replies += 1;
        assert!(
            !self.cut_off.contains(&ticket),
            "ticket {ticket} was answered after the crash that cut it off"
        );
        let expected = self
            .expected
            .remove(&ticket)
            .unwrap_or_else(|| panic!("ticket {ticket} answered twice, or never submitted"));
        if code(outcome) == Err(ErrorCode::Unavailable) {
            self.counts.unavailable += 1;
        }
        match expected {
            Expected::Waiting | Expected::Unavailable => assert_eq!(
                code(outcome),
                Err(ErrorCode::Unavailable),
                "ticket {ticket}: a command not decided in a durable batch may only be told unavailable, got {outcome:?}"
            ),
            Expected::InFlight(id) => {
                panic!("ticket {ticket} answered while its batch {id:?} was in flight: {outcome:?}")
            }
            Expected::Exactly {
                outcome: want,
                visible_seq,
            } => {
                assert_eq!(outcome, &want, "ticket {ticket}'s reply");
                assert!(
                    read_seq >= visible_seq,
                    "ticket {ticket} answered while readers were at seq {read_seq}, before its seq {visible_seq}"
                );
            }
        }
    }

    /// The process died. Whatever was not answered never will be.
    pub fn crashed(&mut self) {
        let lost: Vec<Ticket> = self.expected.drain().map(|(ticket, _)| ticket).collect();
        self.cut_off.extend(lost);
        self.by_submission.clear();
    }

    /// After recovery: the log holds every durable envelope and nothing else, except perhaps all of
    /// `unconfirmed` (the batch a failed flush or a death in a flush left behind; then it counts as durable).
    pub fn recovered(&mut self, recovered_log: &[Envelope], unconfirmed: Option<&Batch>) {
        self.in_flight.clear();
        let decisions = std::mem::take(&mut self.unconfirmed);
        let known = self.log.len();
        assert!(
            recovered_log.len() >= known,
            "the recovered log ends at seq {} but seq {known} was acknowledged",
            recovered_log.len()
        );
        assert_eq!(
            &recovered_log[..known],
            &self.log[..],
            "the recovered log differs from what was durable"
        );
        let extra = &recovered_log[known..];
        if extra.is_empty() {
            return;
        }
        let batch = unconfirmed
            .unwrap_or_else(|| panic!("the recovered log has {} events nobody wrote", extra.len()));
        assert_eq!(
            extra,
            &batch.envelopes[..],
            "a batch survives a crash whole or not at all"
        );
        self.counts.survived_crashes += 1;
        // Its callers were cut off or told unavailable: nobody hears these outcomes.
        let _unheard = self.take_in(batch, &decisions);
    }

    /// Replays a batch's decisions on the model and makes its envelopes part of the log; returns each
    /// decision's final outcome.
    fn take_in(
        &mut self,
        batch: &Batch,
        decisions: &[Decision],
    ) -> Vec<(Decision, Result<Reply, Error>)> {
        self.check_envelopes(batch, decisions);
        let mut landings = Vec::new();
        let outcomes = decisions
            .iter()
            .map(|decision| (decision.clone(), self.replay(decision, &mut landings)))
            .collect();
        self.log.extend(batch.envelopes.iter().cloned());
        self.memory.extend(landings);
        while self.memory.len() > self.memory_max {
            self.memory.pop_front();
        }
        outcomes
    }

    /// Whether the engine still remembers `key` at `now_ms`, and what.
    fn remembered(&self, key: &Key, now_ms: u64, batch: &[u64]) -> Option<&Landed> {
        let landed = self.landed.get(key)?;
        let fresh = landed.at_ms.saturating_add(self.memory_ttl_ms) > now_ms;
        // Landings are numbered densely in durable order, so the memory is the numbers from its oldest on.
        let kept = batch.contains(&landed.number)
            || self
                .memory
                .front()
                .is_some_and(|&oldest| landed.number >= oldest);
        (fresh && kept).then_some(landed)
    }

    /// A timer's ending comes no earlier than its limit after what started it, as the durable log tells it:
    /// the room's creation, or the later of its going live and its host's last leaving. (A restart may only
    /// make it later.)
    fn check_not_early(&self, at_ms: u64, target: &cohost_proto::EndAbandoned) {
        use cohost_proto::{Event, StopReason};
        let events = || self.log.iter().filter(|e| e.room_id == target.room_id);
        let (idle_ms, absent_ms) = self.abandon_after_ms;
        let (since, limit) = match target.reason {
            StopReason::NeverLive => (events().next().map(|e| e.at_ms), idle_ms),
            _ => {
                let host = events().find_map(|e| match &e.event {
                    Event::RoomCreated { room } => Some(room.host.clone()),
                    _ => None,
                });
                let started = events().filter_map(|e| match &e.event {
                    Event::RoomLive { .. } => Some(e.at_ms),
                    Event::PresenceChanged {
                        user_id,
                        online: false,
                        stamp,
                    } if Some(user_id) == host.as_ref() => {
                        Some(stamp.as_ref().map_or(e.at_ms, |s| s.at_ms))
                    }
                    _ => None,
                });
                (started.max(), absent_ms)
            }
        };
        let since = since.unwrap_or_else(|| panic!("{target:?} with nothing that started it"));
        assert!(
            at_ms >= since + limit,
            "{target:?} at {at_ms}, before {since} + {limit}"
        );
    }

    /// Replays a final decision on the model; returns the reply its caller must get. `landings` collects the
    /// numbers of keyed commands that land in the same batch.
    fn replay(&mut self, decision: &Decision, landings: &mut Vec<u64>) -> Result<Reply, Error> {
        let (room, who, op) = from_command(&decision.actor, &decision.command)
            .unwrap_or_else(|| panic!("a command outside the model: {decision:?}"));
        self.model.now_ms = decision.at_ms;
        let appended = decision.seqs.end - decision.seqs.start;
        if matches!(decision.command, Command::Expire(_)) && appended > 0 {
            self.counts.expiries += 1;
        }
        if matches!(decision.command, Command::Disconnect(_)) && appended > 0 {
            self.counts.disconnects += 1;
        }
        let timed = decision.submission.is_none();
        if let Command::EndAbandoned(target) = &decision.command
            && timed
            && appended > 0
        {
            self.counts.abandoned += 1;
            self.check_not_early(decision.at_ms, target);
        }
        let key = key_of(decision);
        if let Some(key) = &key {
            if let Some(landed) = self.remembered(key, decision.at_ms, landings) {
                return self.replay_retry(decision, landed.clone());
            }
            if self.landed.contains_key(key) {
                self.counts.retries_forgotten += 1;
            }
        }
        let want = model_step(
            &mut self.model,
            room,
            who,
            op,
            decision.options.expected_version,
        );
        let outcome = match &decision.answer {
            Answer::Ready(outcome) => outcome.clone(),
            Answer::Stored(at) => panic!("a stored answer for a command not remembered: {at:?}"),
        };
        match (&outcome, want) {
            (Ok(reply), Ok(events)) => {
                assert_eq!(appended, events, "events of {decision:?}");
                self.check_reply(room, reply);
            }
            (Err(error), Err(code)) => {
                assert_eq!(error.code(), code, "{decision:?}");
                assert_eq!(appended, 0, "a rejection appends nothing");
            }
            (got, want) => panic!("{decision:?}: the engine gave {got:?}, the model {want:?}"),
        }
        if let (Some(key), Ok(reply)) = (key, &outcome)
            && appended > 0
        {
            let number = self.next_landing;
            self.next_landing += 1;
            landings.push(number);
            let landed = Landed {
                command: decision.command.clone(),
                expected_version: decision.options.expected_version,
                reply: reply.clone(),
                at_ms: decision.at_ms,
                number,
            };
            self.landed.insert(key, landed);
        }
        outcome
    }

    /// A command whose id the engine remembers: the same command repeats its first reply and appends nothing,
    /// another one is `conflict`.
    fn replay_retry(&mut self, decision: &Decision, landed: Landed) -> Result<Reply, Error> {
        let appended = decision.seqs.end - decision.seqs.start;
        assert_eq!(
            appended, 0,
            "a remembered command_id appends nothing: {decision:?}"
        );
        let same = landed.command == decision.command
            && landed.expected_version == decision.options.expected_version;
        if !same {
            let outcome = match &decision.answer {
                Answer::Ready(outcome) => outcome.clone(),
                Answer::Stored(at) => panic!("a conflict is never a stored answer: {at:?}"),
            };
            assert_eq!(
                code(&outcome),
                Err(ErrorCode::Conflict),
                "a command_id reused for another command: {decision:?}"
            );
            return outcome;
        }
        self.counts.retries_remembered += 1;
        match &decision.answer {
            Answer::Stored(_) => self.counts.stored_answers += 1,
            Answer::Ready(outcome) => {
                assert_eq!(outcome.as_ref(), Ok(&landed.reply), "a retry's reply")
            }
        }
        Ok(landed.reply)
    }

    /// A successful reply shows the room or invitation as the model has it after the command.
    fn check_reply(&self, room: usize, reply: &Reply) {
        let model = self.model.rooms[room]
            .as_ref()
            .expect("a command that succeeded has its room");
        let invitation = match reply {
            Reply::Room(room) => {
                assert_eq!(
                    (room.version, room.status, room.cohosts.len()),
                    (model.version, model.status, model.seats.len()),
                    "the room in the reply"
                );
                return;
            }
            Reply::Invitation(invitation) => invitation,
            Reply::Accepted(accepted) => &accepted.invitation,
        };
        let offer = &model.offers[invitation.invitation_id.number() as usize - 1];
        assert_eq!(
            (invitation.kind, invitation.status, invitation.expires_ms),
            (offer.kind, offer.status, offer.expires_ms),
            "the invitation in the reply"
        );
    }

    /// A batch's envelopes continue the log without a gap, per room too, and each decision's seqs hold
    /// exactly its command's events.
    fn check_envelopes(&mut self, batch: &Batch, decisions: &[Decision]) {
        let first = self.log.len() as u64 + 1;
        let seqs: Vec<u64> = batch.envelopes.iter().map(|e| e.seq).collect();
        let want: Vec<u64> = (first..first + seqs.len() as u64).collect();
        assert_eq!(seqs, want, "seqs are gap-free");
        let mut covered = 0;
        for decision in decisions {
            let Range { start, end } = decision.seqs.clone();
            for seq in start..end {
                let envelope = &batch.envelopes[(seq - first) as usize];
                assert_eq!(&envelope.room_id, decision.command.room_id());
                assert_eq!(envelope.actor.as_ref(), decision.actor.user());
                assert_eq!(envelope.command_id, decision.options.command_id);
                assert_eq!(envelope.at_ms, decision.at_ms);
                covered += 1;
            }
        }
        assert_eq!(
            covered,
            batch.envelopes.len(),
            "every event has its command"
        );
        for envelope in &batch.envelopes {
            let version = self.versions.entry(envelope.room_id.clone()).or_default();
            *version += 1;
            assert_eq!(envelope.version, *version, "room versions are gap-free");
        }
    }

    /// One room the engine holds agrees with the model.
    pub fn check_room(&self, room_id: &RoomId, state: Option<&RoomState>) {
        let Some(room) = (0..ROOMS).find(|&r| &room_name(r) == room_id) else {
            panic!("a room outside the model: {room_id}");
        };
        compare_room(
            &state.cloned().unwrap_or_default(),
            self.model.rooms[room].as_ref(),
        );
    }

    /// The rooms `states` hold are the log folded, and what the model says.
    pub fn check_rooms<'a>(
        &self,
        what: &str,
        states: impl Iterator<Item = (&'a RoomId, &'a RoomState)>,
    ) {
        let folded = fold(&self.log);
        let states: HashMap<&RoomId, &RoomState> = states.collect();
        assert_eq!(
            states.len(),
            folded.len(),
            "{what}: the rooms are the log's rooms"
        );
        for (room_id, state) in &folded {
            assert_eq!(
                states.get(room_id).copied(),
                Some(state),
                "{what}: room {room_id} is the fold of the log"
            );
        }
        for room in 0..ROOMS {
            self.check_room(&room_name(room), folded.get(&room_name(room)));
        }
    }

    /// The earliest expiry of a pending offer or end of a co-host's disconnect grace, by the model.
    pub fn earliest_pending_ms(&self) -> Option<u64> {
        let rooms = self.model.rooms.iter().flatten();
        let expiries = (rooms.clone().flat_map(|room| room.offers.iter()))
            .filter(|offer| offer.status.is_pending())
            .map(|offer| offer.expires_ms);
        let open = rooms.filter(|room| room.status != cohost_proto::RoomStatus::Ended);
        let graces = (open.flat_map(|room| room.seats.iter()))
            .filter_map(|seat| Some(seat.away_since? + cohost_model::GRACE_MS));
        expiries.chain(graces).min()
    }
}

fn fold(log: &[Envelope]) -> HashMap<RoomId, RoomState> {
    let mut rooms: HashMap<RoomId, RoomState> = HashMap::new();
    for envelope in log {
        apply(
            rooms.entry(envelope.room_id.clone()).or_default(),
            &envelope.event,
        );
    }
    rooms
}
