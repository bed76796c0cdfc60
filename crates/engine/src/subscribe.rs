//! Subscriptions: every envelope from a seq on, without gaps or duplicates, caught up from the log and then
//! followed live; and live collections, a page of invitations plus every change after it.

use std::collections::VecDeque;
use std::sync::Arc;

use cohost_proto::{Envelope, Invitation, Page, RoomId, UserId};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::{Error, Shared};

/// Events read from the log per catch-up step.
const CATCH_UP_CHUNK: usize = 512;

/// Which envelopes a stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    /// Every envelope: what the outbox relay follows.
    All,
    /// Every event of one room, in version order.
    Room(RoomId),
    /// Invitation events whose candidate is this user.
    Candidate(UserId),
}

impl Interest {
    /// Whether a stream with this interest yields `envelope`.
    pub fn matches(&self, envelope: &Envelope) -> bool {
        match self {
            Self::All => true,
            Self::Room(room_id) => &envelope.room_id == room_id,
            Self::Candidate(user) => envelope.event.candidate() == Some(user),
        }
    }
}

/// Committed envelopes in seq order from a starting seq, from [`Engine::subscribe`](crate::Engine::subscribe).
/// A slow reader never blocks the engine: when it falls behind the live feed, it reads the log instead. It
/// holds at most one catch-up step (512 events) or one live batch buffered.
pub struct EventStream {
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<Vec<Envelope>>>,
    next_seq: u64,
    buffer: VecDeque<Envelope>,
    interest: Interest,
    /// Erased users are named by their pseudonyms (everything served); off for the engine's own followers
    /// that act on LiveKit's identities.
    serve: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("next_seq", &self.next_seq)
            .field("interest", &self.interest)
            .finish()
    }
}

impl EventStream {
    pub(crate) fn new(shared: Arc<Shared>, from_seq: u64, interest: Interest) -> Self {
        let sender = crate::lock(&shared.events).clone();
        // After shutdown there is no live feed: a closed one makes the stream end once the log is read.
        let live = sender
            .unwrap_or_else(|| broadcast::channel(1).0)
            .subscribe();
        Self {
            shared,
            live,
            next_seq: from_seq.max(1),
            buffer: VecDeque::new(),
            interest,
            serve: true,
        }
    }

    /// The stream with the user ids as stored, for a follower that acts on them (the LiveKit revoker): never
    /// to be served.
    pub(crate) fn with_stored_ids(mut self) -> Self {
        self.serve = false;
        self
    }

    /// The seq the next envelope will have at least.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next matching envelope; `None` once the engine has shut down and everything was delivered.
    /// Cancel-safe: dropping the future (in a `select!`) loses no envelope, and the next call goes on from
    /// the same seq. Catching up reads the log on the blocking pool, never on the async worker.
    ///
    /// # Errors
    ///
    /// An error does not end the stream: the next call tries the same seq again.
    /// - [`Error::HistoryGone`]: a candidate's events before what the engine indexes, or (cluster mode)
    ///   events before the log's base. Retrying cannot help: start over from a snapshot.
    /// - [`Error::Corrupt`], [`Error::Storage`]: the log read failed.
    /// - [`Error::Internal`]: the log read panicked.
    pub async fn next(&mut self) -> Option<Result<Envelope, Error>> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                self.next_seq = envelope.seq + 1;
                if self.interest.matches(&envelope) {
                    return Some(Ok(match self.serve {
                        true => self.shared.pseudonyms.serve(envelope),
                        false => envelope,
                    }));
                }
                continue;
            }
            self.drain_live();
            if !self.buffer.is_empty() {
                continue;
            }
            let durable = crate::read_model::read(&self.shared.read).last_seq;
            if self.next_seq <= durable {
                match self.catch_up(durable).await {
                    Some(Ok(())) => continue,
                    Some(Err(error)) => return Some(Err(error)),
                    // No store means the engine has shut down: the stream ends, and the log keeps the rest.
                    None => return None,
                }
            }
            match self.live.recv().await {
                Ok(batch) => self.take_contiguous(&batch),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Reads the next envelopes of interest up to `durable` from the log into the buffer, off the async
    /// workers. A room's or a candidate's stream reads only the records that hold its events (the read
    /// model's indexes name their seqs); with none left up to `durable`, it moves on to the live feed.
    /// `None` once the engine has shut down.
    async fn catch_up(&mut self, durable: u64) -> Option<Result<(), Error>> {
        let plan = match self.plan(durable) {
            Ok(plan) => plan,
            Err(error) => return Some(Err(error)),
        };
        if let Plan::Seqs(seqs) = &plan
            && seqs.is_empty()
        {
            self.next_seq = durable + 1;
            return Some(Ok(()));
        }
        let store = self.shared.store().ok()?;
        let from_seq = self.next_seq;
        let read = tokio::task::spawn_blocking(move || match plan {
            Plan::Range => store.read_events(from_seq, CATCH_UP_CHUNK),
            Plan::Seqs(seqs) => store.read_seqs(&seqs),
        })
        .await;
        let events = match read {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => return Some(Err(error.into())),
            Err(join) => return Some(Err(Error::Internal(format!("a log read panicked: {join}")))),
        };
        // The store may already hold a batch whose flush is still running: only what the read model has
        // published is durable, so nothing past it is served.
        self.buffer.extend(
            events
                .into_iter()
                .filter(|e| e.seq >= self.next_seq && e.seq <= durable),
        );
        Some(Ok(()))
    }

    /// Which records the next catch-up step reads.
    fn plan(&self, durable: u64) -> Result<Plan, Error> {
        let after = self.next_seq - 1;
        let seqs = match &self.interest {
            Interest::All => return Ok(Plan::Range),
            Interest::Room(room_id) => self.room_seqs(room_id, after)?,
            Interest::Candidate(user) => crate::read_model::read(&self.shared.read)
                .candidates
                .events_after(user, after, CATCH_UP_CHUNK)
                .map_err(|covered_from| Error::HistoryGone { covered_from })?,
        };
        Ok(Plan::Seqs(
            seqs.into_iter().filter(|&s| s <= durable).collect(),
        ))
    }

    /// The seqs of a room's events after `after`: from memory, or from the archive of an ended room that left
    /// it; none for a room that does not exist (yet: the live feed brings its events).
    fn room_seqs(&self, room_id: &RoomId, after: u64) -> Result<Vec<u64>, Error> {
        {
            let read = crate::read_model::read(&self.shared.read);
            if let Some(entry) = read.rooms.get(room_id) {
                return Ok(entry.seqs_after(after, CATCH_UP_CHUNK).to_vec());
            }
        }
        let Ok(store) = self.shared.store() else {
            return Ok(Vec::new());
        };
        Ok(crate::driver::archived_entry(&store, room_id)?
            .map(|entry| entry.seqs_after(after, CATCH_UP_CHUNK).to_vec())
            .unwrap_or_default())
    }

    /// Moves whatever the live feed already holds into the buffer, as long as it continues without a gap.
    fn drain_live(&mut self) {
        loop {
            match self.live.try_recv() {
                Ok(batch) => self.take_contiguous(&batch),
                Err(TryRecvError::Lagged(_)) => self.buffer.clear(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn take_contiguous(&mut self, batch: &[Envelope]) {
        let expected = self.buffer.back().map_or(self.next_seq, |e| e.seq + 1);
        let Some(first) = batch.iter().position(|e| e.seq >= expected) else {
            return;
        };
        if batch[first].seq != expected {
            // A gap: the log fills it on the next turn.
            self.buffer.clear();
            return;
        }
        self.buffer.extend(batch[first..].iter().cloned());
    }
}

/// What a catch-up step reads: a range of the log, or exactly these seqs.
enum Plan {
    Range,
    Seqs(Vec<u64>),
}

/// A live collection: a snapshot (a page of invitations, or the room) as of `seq`, then every change after it.
#[derive(Debug)]
pub struct Watch<T = Page<Invitation>> {
    /// The page asked for (or the room), as of `seq`.
    pub snapshot: T,
    /// The snapshot is the state after this seq; `changes` starts right after it.
    pub seq: u64,
    /// For a room's collection, the room's version as of `seq`.
    pub room_version: Option<u64>,
    /// Every event of the collection's interest from `seq + 1` on.
    pub changes: EventStream,
}
