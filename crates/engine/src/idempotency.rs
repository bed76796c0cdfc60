//! Remembered `command_id`s: the same id with the same command gets the first reply and appends nothing; with
//! another command it is a conflict. Ids are scoped by actor and room, so two users never collide, and one user's
//! id in one room says nothing about another room.
//!
//! An entry is small and fixed-size: a 128-bit hash of (actor, room_id, command_id) and where the reply is stored (its
//! batch record). The map is sized for `max` entries (plus a batch) up front, so it never rehashes on the
//! sequencer thread; untouched capacity costs address space, not memory.
//!
//! The newest `max` entries are kept, and none past its TTL is answered. Entries are added as a batch is
//! decided and trimmed only once it is durable, so a failed batch, whose entries are taken back, never cost an
//! older entry its place.

use std::collections::{HashMap, VecDeque};

use cohost_proto::{
    Accepted, Actor, Command, CommandId, Invite, Presence, Reply, RequestToJoin, RoomId, UserId,
};
use cohost_store::StoredReply;

/// `xxh3_128` of the actor, the room and the command id.
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
    /// Each entry with the number of its insertion, so a stale place in `order` never evicts a newer entry.
    map: HashMap<Key, (Remembered, u64)>,
    order: VecDeque<(u64, Key, u64)>,
    inserted: u64,
    ttl_ms: u64,
    max: usize,
}

/// A `command_id` is scoped by actor and room, so cluster mode, which remembers ids per partition, answers as
/// single-node mode does.
pub(crate) fn key(actor: &Actor, room_id: &RoomId, command_id: &CommandId) -> Key {
    xxhash_rust::xxh3::xxh3_128(&cohost_proto::codec::to_postcard(&(
        actor, room_id, command_id,
    )))
}

/// A stable hash of what a command asks, so a retry can be told from a different command under the same id.
///
/// Fingerprints are stored, so an invite or request that names no seat hashes as it did before commands could
/// name one: a retry that spans an upgrade is still a retry.
pub(crate) fn fingerprint(command: &Command, expected_version: Option<u64>) -> u64 {
    use cohost_proto::codec::to_postcard;
    let bytes = match command {
        Command::Invite(Invite {
            room_id,
            user_id,
            seat: None,
        }) => to_postcard(&(Before::Invite(room_id, user_id), expected_version)),
        Command::RequestToJoin(RequestToJoin {
            room_id,
            seat: None,
        }) => to_postcard(&(Before::RequestToJoin(room_id), expected_version)),
        Command::Presence(Presence {
            room_id,
            user_id,
            online,
            stamp: None,
        }) => to_postcard(&(
            Before::Presence(room_id, user_id, *online),
            expected_version,
        )),
        _ => to_postcard(&(command, expected_version)),
    };
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// [`Command`]'s variants whose arguments grew, encoded as they were before: postcard writes a variant's place
/// in the enum, then its fields.
#[derive(serde::Serialize)]
#[allow(dead_code)] // The unit variants only hold the others' places.
enum Before<'a> {
    CreateRoom(()),
    GoLive(()),
    StopRoom(()),
    Invite(&'a RoomId, &'a UserId),
    RequestToJoin(&'a RoomId),
    AcceptInvitation(()),
    RejectInvitation(()),
    CancelInvitation(()),
    RemoveCohost(()),
    LeaveStage(()),
    Expire(()),
    Presence(&'a RoomId, &'a UserId, bool),
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
        let capacity = max + crate::sequencer::BATCH_MAX_LIMIT;
        Self {
            map: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            inserted: 0,
            ttl_ms,
            max,
        }
    }

    pub fn get(&self, key: Key, now_ms: u64) -> Option<Remembered> {
        self.map
            .get(&key)
            .map(|(remembered, _)| *remembered)
            .filter(|r| r.at_ms.saturating_add(self.ttl_ms) > now_ms)
    }

    /// Adds an entry; [`Idempotency::trim`] keeps the bounds once its batch is durable.
    pub fn insert(&mut self, key: Key, remembered: Remembered) {
        self.inserted += 1;
        self.order.push_back((remembered.at_ms, key, self.inserted));
        self.map.insert(key, (remembered, self.inserted));
    }

    /// Takes back an entry of the batch being decided (its batch failed): it is among the newest.
    pub fn remove(&mut self, key: Key) {
        if let Some((_, number)) = self.map.remove(&key)
            && let Some(at) = self.order.iter().rposition(|&(_, _, n)| n == number)
        {
            self.order.remove(at);
        }
    }

    /// Forgets entries older than the TTL at `now_ms`, and the oldest beyond `max`.
    pub fn trim(&mut self, now_ms: u64) {
        while let Some(&(at_ms, key, number)) = self.order.front() {
            let stale = at_ms.saturating_add(self.ttl_ms) <= now_ms;
            if !stale && self.order.len() <= self.max {
                break;
            }
            // The map may hold a newer entry under the same key (an id forgotten, then used again): keep it.
            if self.map.get(&key).is_some_and(|&(_, n)| n == number) {
                self.map.remove(&key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use cohost_proto::{InvitationId, InvitationTarget, RoomTarget, UserTarget};

    use super::*;

    /// The values the build before invitations could name a seat computed for these commands.
    #[test]
    fn commands_that_name_no_seat_fingerprint_as_before_seats() {
        let room_id = RoomId::new("stage-1").unwrap();
        let bob = UserId::new("bob").unwrap();
        let invite = Command::Invite(
            UserTarget {
                room_id: room_id.clone(),
                user_id: bob.clone(),
            }
            .into(),
        );
        let request = Command::RequestToJoin(
            RoomTarget {
                room_id: room_id.clone(),
            }
            .into(),
        );
        let accept = Command::AcceptInvitation(InvitationTarget {
            invitation_id: InvitationId::new(room_id.clone(), 1).unwrap(),
        });
        assert_eq!(fingerprint(&invite, None), 7913765635063041548);
        assert_eq!(fingerprint(&invite, Some(7)), 4167071804407745477);
        assert_eq!(fingerprint(&request, None), 9568411622871004562);
        assert_eq!(fingerprint(&accept, Some(3)), 12719224525897832450);
        // One that names a seat is another command.
        let to_seat = Command::Invite(Invite {
            room_id: room_id.clone(),
            user_id: bob.clone(),
            seat: Some(2),
        });
        assert_ne!(fingerprint(&to_seat, None), fingerprint(&invite, None));
        // A presence report with no stamp, as before reports could carry one; a stamped one is another.
        let mut report = Presence {
            room_id,
            user_id: bob,
            online: true,
            stamp: None,
        };
        let unstamped = Command::Presence(report.clone());
        assert_eq!(fingerprint(&unstamped, None), 4641683156160054471);
        assert_eq!(fingerprint(&unstamped, Some(7)), 4810374721611174699);
        report.stamp = Some(cohost_proto::PresenceStamp {
            at_ms: 1,
            participant_sid: "PA_1".into(),
        });
        let stamped = Command::Presence(report);
        assert_ne!(fingerprint(&stamped, None), fingerprint(&unstamped, None));
    }
}
