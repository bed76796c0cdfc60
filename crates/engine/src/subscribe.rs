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
    All,
    Room(RoomId),
    /// Invitation events whose candidate is this user.
    Candidate(UserId),
}

impl Interest {
    pub fn matches(&self, envelope: &Envelope) -> bool {
        match self {
            Self::All => true,
            Self::Room(room_id) => &envelope.room_id == room_id,
            Self::Candidate(user) => envelope.event.candidate() == Some(user),
        }
    }
}

/// Committed envelopes in seq order from a starting seq. A slow reader never blocks the engine: when it falls
/// behind the live feed, it reads the log instead.
pub struct EventStream {
    shared: Arc<Shared>,
    live: broadcast::Receiver<Arc<Vec<Envelope>>>,
    next_seq: u64,
    buffer: VecDeque<Envelope>,
    interest: Interest,
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
        }
    }

    /// The seq the next envelope will have at least.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next matching envelope; `None` once the engine has shut down and everything was delivered.
    pub async fn next(&mut self) -> Option<Result<Envelope, Error>> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                self.next_seq = envelope.seq + 1;
                if self.interest.matches(&envelope) {
                    return Some(Ok(envelope));
                }
                continue;
            }
            self.drain_live();
            if !self.buffer.is_empty() {
                continue;
            }
            let durable = crate::read_model::read(&self.shared.read).last_seq;
            if self.next_seq <= durable {
                // No store means the engine has shut down: the stream ends, and the log keeps the rest.
                let Ok(store) = self.shared.store() else {
                    return None;
                };
                match store.read_events(self.next_seq, CATCH_UP_CHUNK) {
                    // The store may already hold a batch whose flush is still running: only what the read model
                    // has published is durable, so nothing past it is served.
                    Ok(events) => self.buffer.extend(
                        events
                            .into_iter()
                            .filter(|e| e.seq >= self.next_seq && e.seq <= durable),
                    ),
                    Err(error) => return Some(Err(error.into())),
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => self.take_contiguous(&batch),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
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

/// A live collection: a page of invitations as of `seq`, then every change after it.
#[derive(Debug)]
pub struct Watch {
    pub snapshot: Page<Invitation>,
    /// The snapshot is the state after this seq; `changes` starts right after it.
    pub seq: u64,
    pub changes: EventStream,
}
