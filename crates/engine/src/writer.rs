//! The sequencer: one thread that takes commands in batches, decides them in order against its own state,
//! appends every event of the batch in one write with one flush, and only then updates readers, acks and
//! publishes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohost_core::{Context, Policy, RoomState, apply, decide, reply};
use cohost_proto::{Actor, Command, Envelope, ErrorCode, Event, InvitationTarget, Reply, RoomId};
use cohost_store::{IdempotencyRecord, Store};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::idempotency::{self, Idempotency, Remembered};
use crate::read_model::RoomEntry;
use crate::timers::Timers;
use crate::{Error, Options, Shared};

/// The longest the sequencer sleeps without looking at the clock, which bounds how late an expiry can be.
const TIMER_POLL_MS: u64 = 100;

pub(crate) type ReplySender = oneshot::Sender<Result<Reply, Error>>;

pub(crate) enum Job {
    Command {
        actor: Actor,
        command: Command,
        options: Options,
        reply: ReplySender,
    },
    Stop,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub events: tokio::sync::broadcast::Sender<Arc<Vec<Envelope>>>,
    pub store: Arc<Store>,
    pub clock: Arc<dyn Clock>,
    pub policy: Policy,
    pub batch_max: usize,
    pub snapshot_every_events: u64,
    pub rooms: HashMap<RoomId, RoomState>,
    pub idempotency: Idempotency,
    pub timers: Timers,
    pub last_seq: u64,
    pub snapshot_seq: u64,
    pub dirty: std::collections::HashSet<RoomId>,
}

/// The batch being built: its events and the idempotency records of its commands.
#[derive(Default)]
struct Batch {
    first_seq: u64,
    envelopes: Vec<Envelope>,
    records: Vec<IdempotencyRecord>,
    touched: Vec<RoomId>,
}

/// One command of a batch, decided.
struct Decided {
    reply_to: Option<ReplySender>,
    outcome: Result<Reply, Error>,
    remembered: Option<idempotency::Key>,
}

impl Writer {
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.batch_max);
        let mut stopping = false;
        while !stopping {
            let wait = self.timer_wait();
            match jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            while batch.len() < self.batch_max {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Some(at) = batch.iter().position(|job| matches!(job, Job::Stop)) {
                // Drain what was queued before the stop; `execute` refuses new work once closed is set.
                batch.remove(at);
                batch.extend(jobs.try_iter().filter(|job| !matches!(job, Job::Stop)));
                stopping = true;
            }
            while !batch.is_empty() {
                let take = batch.len().min(self.batch_max);
                let chunk: Vec<Job> = batch.drain(..take).collect();
                self.commit(chunk);
            }
            self.expire_due();
            if self.timers.needs_rebuild() {
                self.timers
                    .rebuild(self.rooms.values().flat_map(RoomState::pending));
            }
            if self.last_seq - self.snapshot_seq >= self.snapshot_every_events {
                self.snapshot();
            }
        }
        self.snapshot();
        if let Err(error) = self.store.flush() {
            tracing::error!(%error, "final flush failed");
        }
    }

    fn timer_wait(&self) -> Duration {
        let now = self.clock.now_ms();
        let until_due = self
            .timers
            .next_due_ms()
            .map_or(TIMER_POLL_MS, |due| due.saturating_sub(now));
        Duration::from_millis(until_due.min(TIMER_POLL_MS))
    }

    /// Issues `expire` for every invitation due now, as the system, in batches like any command.
    fn expire_due(&mut self) {
        let now = self.clock.now_ms();
        let mut due = Vec::new();
        while let Some(id) = self.timers.pop_due(now) {
            let still_pending = self
                .rooms
                .get(id.room_id())
                .and_then(|state| state.invitation(&id))
                .is_some_and(|invitation| invitation.status.is_pending());
            if still_pending {
                due.push(id);
            }
        }
        for ids in due.chunks(self.batch_max) {
            let jobs = ids
                .iter()
                .map(|id| {
                    let command = Command::Expire(InvitationTarget {
                        invitation_id: id.clone(),
                    });
                    let (reply, _ignored) = oneshot::channel();
                    Job::Command {
                        actor: Actor::System,
                        command,
                        options: Options::default(),
                        reply,
                    }
                })
                .collect();
            self.commit(jobs);
        }
    }

    /// Decides a batch, makes it durable with one write and one flush, then publishes and acks.
    fn commit(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let mut batch = Batch {
            first_seq: self.last_seq + 1,
            ..Batch::default()
        };
        let mut decided: Vec<Decided> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Job::Command {
                actor,
                command,
                options,
                reply,
            } = job
            else {
                continue;
            };
            let (outcome, remembered) = self.decide_one(actor, &command, options, now, &mut batch);
            decided.push(Decided {
                reply_to: Some(reply),
                outcome,
                remembered,
            });
        }
        if !batch.envelopes.is_empty() {
            let started = Instant::now();
            if let Err(error) = self.store.append(&batch.envelopes, &batch.records) {
                tracing::error!(%error, first_seq = batch.first_seq, "batch not durable; its commands get unavailable");
                self.roll_back(batch.first_seq, &batch.touched, &decided);
                for d in decided {
                    let outcome = match d.outcome {
                        Ok(_) => Err(Error::unavailable(
                            "storage failed; the command may retry with its command_id",
                        )),
                        Err(e) => Err(e),
                    };
                    if let Some(tx) = d.reply_to {
                        let _ = tx.send(outcome);
                    }
                }
                return;
            }
            self.shared
                .stats
                .record_batch(batch.envelopes.len(), decided.len(), started.elapsed());
        }
        self.publish(batch.envelopes, decided);
    }

    fn decide_one(
        &mut self,
        actor: Actor,
        command: &Command,
        options: Options,
        now: u64,
        batch: &mut Batch,
    ) -> (Result<Reply, Error>, Option<idempotency::Key>) {
        let key = options
            .command_id
            .as_ref()
            .map(|id| idempotency::key(&actor, id));
        let fingerprint = key.map(|_| idempotency::fingerprint(command, options.expected_version));
        if let (Some(key), Some(fingerprint)) = (key, fingerprint)
            && let Some(seen) = self.idempotency.get(key, now)
        {
            let outcome = if seen.fingerprint == fingerprint {
                self.remembered_reply(seen, batch)
            } else {
                Err(Error::new(
                    ErrorCode::Conflict,
                    "command_id was already used for a different command",
                ))
            };
            return (outcome, None);
        }
        let room_id = command.room_id();
        let creating =
            matches!(command, Command::CreateRoom(_)) && !self.rooms.contains_key(room_id);
        if !creating && !self.rooms.contains_key(room_id) {
            return (Err(Error::not_found("room not found")), None);
        }
        let state = self.rooms.entry(room_id.clone()).or_default();
        let ctx = Context {
            actor: &actor,
            now_ms: now,
            expected_version: options.expected_version,
            policy: self.policy,
        };
        let events = match decide(state, command, &ctx) {
            Ok(events) => events,
            Err(rejection) => {
                if creating {
                    self.rooms.remove(room_id);
                }
                return (Err(rejection.into()), None);
            }
        };
        for event in &events {
            apply(state, event);
        }
        let reply = reply(state, command, &events);
        // A command that changed nothing is not remembered: there is no record to keep its reply in, and a
        // retry decides the same nothing again.
        if events.is_empty() {
            return (Ok(reply), None);
        }
        let version_before = state.version() - events.len() as u64;
        batch.touched.push(room_id.clone());
        for (offset, event) in events.into_iter().enumerate() {
            self.last_seq += 1;
            batch.envelopes.push(Envelope {
                seq: self.last_seq,
                room_id: room_id.clone(),
                version: version_before + offset as u64 + 1,
                at_ms: now,
                actor: actor.user().cloned(),
                command_id: options.command_id.clone(),
                event,
            });
        }
        let (Some(key), Some(fingerprint), Some(command_id)) =
            (key, fingerprint, options.command_id)
        else {
            return (Ok(reply), None);
        };
        let index =
            u32::try_from(batch.records.len()).expect("a batch holds at most 1024 commands");
        batch.records.push(IdempotencyRecord {
            actor,
            command_id,
            fingerprint,
            at_ms: now,
            reply: idempotency::to_stored(&reply),
        });
        let remembered = Remembered {
            fingerprint,
            at_ms: now,
            batch_seq: batch.first_seq,
            index,
        };
        self.idempotency.insert(key, remembered);
        (Ok(reply), Some(key))
    }

    /// The first reply to a remembered command: from the batch being built, or from its stored record.
    fn remembered_reply(&self, seen: Remembered, batch: &Batch) -> Result<Reply, Error> {
        let missing = || Error::internal("a remembered command's record is missing from the log");
        if seen.batch_seq == batch.first_seq {
            let record = batch.records.get(seen.index as usize).ok_or_else(missing)?;
            return Ok(idempotency::from_stored(&record.reply));
        }
        let stored = self
            .store
            .batches_from(seen.batch_seq)
            .next()
            .ok_or_else(missing)??;
        if stored.first_seq() != Some(seen.batch_seq) {
            return Err(missing());
        }
        let record = stored
            .commands
            .get(seen.index as usize)
            .ok_or_else(missing)?;
        Ok(idempotency::from_stored(&record.reply))
    }

    /// Puts the sequencer's state back to what is durable, after a failed write.
    fn roll_back(&mut self, first_seq: u64, touched: &[RoomId], decided: &[Decided]) {
        if let Err(error) = self.store.discard(first_seq) {
            tracing::error!(%error, first_seq, "could not discard the failed batch");
        }
        let read = self
            .shared
            .read
            .read()
            .expect("read model lock is never poisoned: its holders do not panic");
        for room_id in touched {
            match read.rooms.get(room_id) {
                Some(entry) => {
                    self.rooms.insert(room_id.clone(), entry.state.clone());
                }
                None => {
                    self.rooms.remove(room_id);
                }
            }
        }
        self.last_seq = read.last_seq;
        drop(read);
        for key in decided.iter().filter_map(|d| d.remembered) {
            self.idempotency.remove(key);
        }
    }

    /// After the flush: readers see the batch, then callers get their acks, then subscribers get the events.
    fn publish(&mut self, envelopes: Vec<Envelope>, decided: Vec<Decided>) {
        if !envelopes.is_empty() {
            let mut read = self
                .shared
                .read
                .write()
                .expect("read model lock is never poisoned: its holders do not panic");
            for envelope in &envelopes {
                read.apply(envelope);
            }
            drop(read);
            for envelope in &envelopes {
                if let Event::InvitationCreated { invitation } = &envelope.event {
                    self.timers
                        .push(invitation.expires_ms, invitation.invitation_id.clone());
                }
                if !self.dirty.contains(&envelope.room_id) {
                    self.dirty.insert(envelope.room_id.clone());
                }
            }
        }
        for d in decided {
            self.shared.stats.record_outcome(&d.outcome);
            if let Some(tx) = d.reply_to {
                let _ = tx.send(d.outcome);
            }
        }
        if !envelopes.is_empty() {
            // No receiver is fine: subscribers catch up from the log.
            let _ = self.events.send(Arc::new(envelopes));
        }
    }

    /// Writes the rooms changed since the last snapshot, as of the last durable seq.
    fn snapshot(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let read = self
            .shared
            .read
            .read()
            .expect("read model lock is never poisoned: its holders do not panic");
        let rooms: Vec<(RoomId, Vec<u8>)> = self
            .dirty
            .iter()
            .filter_map(|room_id| {
                read.rooms
                    .get(room_id)
                    .map(|entry| (room_id.clone(), encode_entry(entry)))
            })
            .collect();
        let seq = read.last_seq;
        drop(read);
        match self.store.write_snapshots(seq, &rooms) {
            Ok(()) => {
                self.snapshot_seq = seq;
                self.dirty.clear();
            }
            Err(error) => {
                tracing::warn!(%error, "snapshot not written; the log still has everything")
            }
        }
    }
}

pub(crate) fn encode_entry(entry: &RoomEntry) -> Vec<u8> {
    cohost_proto::codec::to_postcard(&SnapshotRecordRef::V1(entry))
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<RoomEntry, cohost_proto::DecodeError> {
    let SnapshotRecord::V1(entry) = cohost_proto::codec::from_postcard(bytes)?;
    Ok(entry)
}

/// A room snapshot's stored form, versioned like the log.
#[derive(serde::Deserialize)]
enum SnapshotRecord {
    V1(RoomEntry),
}

#[derive(serde::Serialize)]
#[serde(rename = "SnapshotRecord")]
enum SnapshotRecordRef<'a> {
    V1(&'a RoomEntry),
}
