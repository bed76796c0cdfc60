//! Remembered `command_id`s: the same id with the same command gets the first reply and appends nothing; with
//! another command it is a conflict. Ids are scoped by actor, so two users never collide.
//!
//! An entry is small and fixed-size: a 128-bit hash of (actor, command_id) and where the reply is stored (its
//! batch record). The map is sized for `max` entries up front, so it never rehashes on the sequencer thread;
//! untouched capacity costs address space, not memory.

use std::collections::{HashMap, VecDeque};

use cohost_proto::{Accepted, Actor, Command, CommandId, Reply};
use cohost_store::StoredReply;

/// `xxh3_128` of the actor and the command id.
pub(crate) type Key = u128;

/// Where a remembered reply is: the `index`th idempotency record of the batch whose first seq is `batch_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remembered {
    pub fingerprint: u64,
    pub at_ms: u64,
    pub batch_seq: u64,
    pub index: u32,
}

/// The index, bounded by age and by count; the oldest go first.
#[derive(Debug)]
pub(crate) struct Idempotency {
    map: HashMap<Key, Remembered>,
    order: VecDeque<(u64, Key)>,
    ttl_ms: u64,
    max: usize,
}

pub(crate) fn key(actor: &Actor, command_id: &CommandId) -> Key {
    xxhash_rust::xxh3::xxh3_128(&cohost_proto::codec::to_postcard(&(actor, command_id)))
}

/// A stable hash of what a command asks, so a retry can be told from a different command under the same id.
pub(crate) fn fingerprint(command: &Command, expected_version: Option<u64>) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&cohost_proto::codec::to_postcard(&(
        command,
        expected_version,
    )))
}

pub(crate) fn to_stored(reply: &Reply) -> StoredReply {
    match reply {
        Reply::Room(room) => StoredReply::Room(room.clone()),
        Reply::Invitation(invitation) => StoredReply::Invitation(invitation.clone()),
        Reply::Accepted(accepted) => StoredReply::Accepted(accepted.invitation.clone()),
    }
}

pub(crate) fn from_stored(reply: &StoredReply) -> Reply {
    match reply {
        StoredReply::Room(room) => Reply::Room(room.clone()),
        StoredReply::Invitation(invitation) => Reply::Invitation(invitation.clone()),
        StoredReply::Accepted(invitation) => Reply::Accepted(Accepted {
            invitation: invitation.clone(),
            broadcaster: None,
        }),
    }
}

impl Idempotency {
    pub fn new(ttl_ms: u64, max: usize) -> Self {
        let max = max.max(1);
        Self {
            map: HashMap::with_capacity(max),
            order: VecDeque::with_capacity(max),
            ttl_ms,
            max,
        }
    }

    pub fn get(&self, key: Key, now_ms: u64) -> Option<Remembered> {
        self.map
            .get(&key)
            .filter(|r| r.at_ms.saturating_add(self.ttl_ms) > now_ms)
            .copied()
    }

    pub fn insert(&mut self, key: Key, remembered: Remembered) {
        // Make room first, so neither collection grows past its initial capacity.
        self.evict(remembered.at_ms, self.max - 1);
        self.order.push_back((remembered.at_ms, key));
        self.map.insert(key, remembered);
    }

    pub fn remove(&mut self, key: Key) {
        self.map.remove(&key);
    }

    /// Forgets entries older than the TTL, and the oldest beyond `keep`.
    fn evict(&mut self, now_ms: u64, keep: usize) {
        while let Some(&(at_ms, key)) = self.order.front() {
            let stale = at_ms.saturating_add(self.ttl_ms) <= now_ms;
            if !stale && self.order.len() <= keep {
                break;
            }
            // The map may hold a newer entry under the same key (a removed, then reused id): keep that one.
            if self.map.get(&key).is_some_and(|r| r.at_ms == at_ms) {
                self.map.remove(&key);
            }
            self.order.pop_front();
        }
    }
}
