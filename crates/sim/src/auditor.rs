//! The auditor: what the engine must have done, checked against the reference model and the log.
//!
//! It follows the sequencer's trace of decisions. A decision answered at once, or one whose batch became
//! durable, is replayed on the reference model (`cohost-model`) in the order the sequencer decided it; the two
//! must agree on the outcome and on how many events it appended, and the batch's envelopes must be exactly
//! those events. A decision whose batch failed is not replayed: its command must be answered `unavailable`.
//! The auditor keeps every durable envelope, so after a crash the recovered log must be exactly that, plus at
//! most the one batch whose flush the crash interrupted.

use std::collections::{HashMap, HashSet};
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
    /// Decided in a batch that is in flight.
    InFlight(BatchId, Answer),
    /// Decided in a batch that failed, or cut off by a crash: only `unavailable` may come.
    Unavailable,
    /// Decided and final: exactly this.
    Exactly(Result<Reply, Error>),
}

/// A keyed command that landed: what it asked and its first reply.
#[derive(Debug, Clone)]
struct Landed {
    command: Command,
    expected_version: Option<u64>,
    reply: Reply,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub decisions: u64,
    pub durable_batches: u64,
    pub failed_batches: u64,
    pub replies: u64,
    pub unavailable: u64,
    pub retries_remembered: u64,
    pub stored_answers: u64,
    pub expiries: u64,
    pub survived_crashes: u64,
}

#[derive(Debug)]
pub struct Auditor {
    pub model: Model,
    /// Every durable envelope, in seq order.
    log: Vec<Envelope>,
    versions: HashMap<RoomId, u64>,
    landed: HashMap<(Actor, CommandId), Landed>,
    by_submission: HashMap<u64, Ticket>,
    expected: HashMap<Ticket, Expected>,
    /// The decisions of the batch in flight, with its envelopes once known.
    in_flight: Vec<Decision>,
    /// Tickets cut off by a crash: no answer may ever come for them.
    cut_off: HashSet<Ticket>,
    pub counts: Counts,
}

fn code(outcome: &Result<Reply, Error>) -> Result<(), ErrorCode> {
    outcome.as_ref().map(drop).map_err(|e| e.code)
}

impl Auditor {
    pub fn new() -> Self {
        Self {
            model: Model::new(),
            log: Vec::new(),
            versions: HashMap::new(),
            landed: HashMap::new(),
            by_submission: HashMap::new(),
            expected: HashMap::new(),
            in_flight: Vec::new(),
            cut_off: HashSet::new(),
            counts: Counts::default(),
        }
    }

    pub fn durable_seq(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn log(&self) -> &[Envelope] {
        &self.log
    }

    pub fn submitted(&mut self, ticket: Ticket, number: u64) {
        self.by_submission.insert(number, ticket);
        self.expected.insert(ticket, Expected::Waiting);
    }

    /// Decisions from the trace, in the order they were made. Those answered at once are final now.
    pub fn decided(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            self.counts.decisions += 1;
            match decision.batch {
                None => {
                    let outcome = self.replay(&decision);
                    self.expect(&decision, Expected::Exactly(outcome));
                }
                Some(id) => {
                    self.expect(&decision, Expected::InFlight(id, decision.answer.clone()));
                    self.in_flight.push(decision);
                }
            }
        }
    }

    fn expect(&mut self, decision: &Decision, expected: Expected) {
        if let Some(number) = decision.submission {
            let ticket = self.by_submission[&number];
            let before = self.expected.insert(ticket, expected);
            assert_eq!(
                before,
                Some(Expected::Waiting),
                "submission {number} was decided twice"
            );
        }
    }

    /// The batch in flight became durable.
    pub fn durable(&mut self, batch: &Batch) {
        self.counts.durable_batches += 1;
        let decisions = std::mem::take(&mut self.in_flight);
        assert!(
            decisions.iter().all(|d| d.batch == Some(batch.id)),
            "the trace's batch is the one committed"
        );
        self.check_envelopes(batch, &decisions);
        for decision in &decisions {
            let outcome = self.replay(decision);
            if let Some(number) = decision.submission {
                let ticket = self.by_submission[&number];
                self.expected.insert(ticket, Expected::Exactly(outcome));
            }
        }
        self.log.extend(batch.envelopes.iter().cloned());
    }

    /// The batch in flight failed: nothing of it happened.
    pub fn failed(&mut self) {
        self.counts.failed_batches += 1;
        for decision in std::mem::take(&mut self.in_flight) {
            if let Some(number) = decision.submission {
                let ticket = self.by_submission[&number];
                self.expected.insert(ticket, Expected::Unavailable);
            }
        }
    }

    /// A reply reached its caller.
    pub fn replied(&mut self, ticket: Ticket, outcome: &Result<Reply, Error>) {
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
            Expected::InFlight(id, _) => {
                panic!("ticket {ticket} answered while its batch {id:?} was in flight: {outcome:?}")
            }
            Expected::Exactly(want) => assert_eq!(outcome, &want, "ticket {ticket}'s reply"),
        }
    }

    /// The process died. Whatever was not answered never will be; a batch in flight may have survived.
    pub fn crashed(&mut self) -> Vec<Ticket> {
        let lost: Vec<Ticket> = self.expected.drain().map(|(ticket, _)| ticket).collect();
        self.cut_off.extend(lost.iter().copied());
        self.by_submission.clear();
        lost
    }

    /// After recovery: the log holds every durable envelope and nothing else, except perhaps all of `died`,
    /// the batch whose flush the crash cut off (then it counts as durable).
    pub fn recovered(&mut self, recovered_log: &[Envelope], died: Option<&Batch>) {
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
            self.in_flight.clear();
            return;
        }
        let batch = died.unwrap_or_else(|| {
            panic!(
                "the recovered log has {} events nobody wrote durably",
                extra.len()
            )
        });
        assert_eq!(
            extra,
            &batch.envelopes[..],
            "a batch survives a crash whole or not at all"
        );
        self.counts.survived_crashes += 1;
        let decisions = std::mem::take(&mut self.in_flight);
        self.check_envelopes(batch, &decisions);
        for decision in &decisions {
            // Its callers were cut off by the crash: nobody hears this outcome.
            let _unheard = self.replay(decision);
        }
        self.log.extend(batch.envelopes.iter().cloned());
    }

    /// Replays a final decision on the model; returns the reply its caller must get.
    fn replay(&mut self, decision: &Decision) -> Result<Reply, Error> {
        let (room, who, op) = from_command(&decision.actor, &decision.command)
            .unwrap_or_else(|| panic!("a command outside the model: {decision:?}"));
        self.model.now_ms = decision.at_ms;
        let appended = decision.seqs.end - decision.seqs.start;
        if matches!(decision.command, Command::Expire(_)) && appended > 0 {
            self.counts.expiries += 1;
        }
        let key = decision
            .options
            .command_id
            .clone()
            .map(|id| (decision.actor.clone(), id));
        if let Some(landed) = key.as_ref().and_then(|key| self.landed.get(key)) {
            let same = landed.command == decision.command
                && landed.expected_version == decision.options.expected_version;
            if !same {
                assert_eq!(
                    code(&answer_outcome(&decision.answer)),
                    Err(ErrorCode::Conflict),
                    "a command_id reused for another command: {decision:?}"
                );
                return answer_outcome(&decision.answer);
            }
            self.counts.retries_remembered += 1;
            assert_eq!(appended, 0, "a retry appends nothing: {decision:?}");
            match &decision.answer {
                Answer::Stored(_) => self.counts.stored_answers += 1,
                Answer::Ready(outcome) => {
                    assert_eq!(outcome.as_ref(), Ok(&landed.reply), "a retry's reply")
                }
            }
            return Ok(landed.reply.clone());
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
            Answer::Stored(at) => panic!("a stored answer for a command never remembered: {at:?}"),
        };
        match (&outcome, want) {
            (Ok(_), Ok(events)) => assert_eq!(appended, events, "events of {decision:?}"),
            (Err(error), Err(code)) => {
                assert_eq!(error.code, code, "{decision:?}");
                assert_eq!(appended, 0, "a rejection appends nothing");
            }
            (got, want) => panic!("{decision:?}: the engine gave {got:?}, the model {want:?}"),
        }
        if let Ok(reply) = &outcome {
            self.check_reply(room, reply);
        }
        if let (Some(key), Ok(reply)) = (key, &outcome)
            && appended > 0
        {
            let landed = Landed {
                command: decision.command.clone(),
                expected_version: decision.options.expected_version,
                reply: reply.clone(),
            };
            self.landed.insert(key, landed);
        }
        outcome
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
            let state = folded.get(&room_name(room)).cloned().unwrap_or_default();
            compare_room(&state, self.model.rooms[room].as_ref());
        }
    }

    /// The earliest expiry of a pending offer, by the model.
    pub fn earliest_pending_ms(&self) -> Option<u64> {
        self.model
            .rooms
            .iter()
            .flatten()
            .flat_map(|room| room.offers.iter())
            .filter(|offer| offer.status.is_pending())
            .map(|offer| offer.expires_ms)
            .min()
    }
}

fn answer_outcome(answer: &Answer) -> Result<Reply, Error> {
    match answer {
        Answer::Ready(outcome) => outcome.clone(),
        Answer::Stored(at) => panic!("a conflict is never a stored answer: {at:?}"),
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
