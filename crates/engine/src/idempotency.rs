//! Remembered `command_id`s: the same id with the same command gets the first reply and appends nothing; with
//! another command it is a conflict. Ids are scoped by actor, so two users never collide.

use std::collections::{HashMap, VecDeque};

use cohost_proto::{Accepted, Actor, Command, CommandId, Reply};
use cohost_store::{IdempotencyRecord, StoredReply};

pub(crate) type Key = (Actor, CommandId);

#[derive(Debug, Clone)]
pub(crate) struct Remembered {
    pub fingerprint: u64,
    pub at_ms: u64,
    pub reply: StoredReply,
}

/// The index, bounded by age and by count; the oldest go first.
#[derive(Debug)]
pub(crate) struct Idempotency {
    map: HashMap<Key, Remembered>,
    order: VecDeque<(u64, Key)>,
    ttl_ms: u64,
    max: usize,
}

/// A stable hash of what a command asks, so a retry can be told from a different command under the same id.
pub(crate) fn fingerprint(command: &Command, expected_version: Option<u64>) -> u64 {
    let bytes = cohost_proto::codec::to_postcard(&(command, expected_version));
    xxhash_rust::xxh3::xxh3_64(&bytes)
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
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            ttl_ms,
            max: max.max(1),
        }
    }

    pub fn get(&self, key: &Key, now_ms: u64) -> Option<&Remembered> {
        self.map
            .get(key)
            .filter(|r| r.at_ms.saturating_add(self.ttl_ms) > now_ms)
    }

    pub fn insert(&mut self, key: Key, remembered: Remembered) {
        let at_ms = remembered.at_ms;
        self.order.push_back((at_ms, key.clone()));
        self.map.insert(key, remembered);
        self.evict(at_ms);
    }

    pub fn remove(&mut self, key: &Key) {
        self.map.remove(key);
    }

    /// Re-remembers a stored record (at open).
    pub fn restore(&mut self, record: IdempotencyRecord) {
        let key = (record.actor, record.command_id);
        let remembered = Remembered {
            fingerprint: record.fingerprint,
            at_ms: record.at_ms,
            reply: record.reply,
        };
        self.insert(key, remembered);
    }

    fn evict(&mut self, now_ms: u64) {
        while let Some((at_ms, key)) = self.order.front() {
            let stale = at_ms.saturating_add(self.ttl_ms) <= now_ms;
            if !stale && self.order.len() <= self.max {
                break;
            }
            // The map may hold a newer entry under the same key (a removed, then reused id): keep that one.
            if self.map.get(key).is_some_and(|r| r.at_ms == *at_ms) {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }
}
