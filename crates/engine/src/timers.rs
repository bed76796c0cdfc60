//! What the sequencer does when a time comes: `expire` a pending invitation at its `expires_ms`,
//! `disconnect` a co-host whose disconnect grace ran out, and `end_abandoned` a room left idle or without its
//! host for too long ([`crate::abandoned`]).
//!
//! An entry is not removed when what it waits for is settled (a heap cannot), but checked when it comes due. So
//! the heap stays bounded, it is rebuilt from the rooms' pending invitations and deadlines whenever it grows
//! past twice what it held after the last rebuild.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cohost_core::RoomState;
use cohost_proto::{InvitationId, RoomId, UserId};

/// What comes due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    Expire(InvitationId),
    Disconnect(RoomId, UserId),
    /// The room may have stayed idle past the deployment's limit.
    NeverLive(RoomId),
    /// The live room's host may have been away past the deployment's limit.
    HostAbsent(RoomId),
}

/// The size below which the heap is never rebuilt.
const REBUILD_FLOOR: usize = 65_536;

#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, Due)>>,
    rebuild_at: usize,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            rebuild_at: REBUILD_FLOOR,
        }
    }
}

impl Timers {
    pub fn push(&mut self, at_ms: u64, due: Due) {
        self.heap.push(Reverse((at_ms, due)));
    }

    pub fn extend(&mut self, entries: impl IntoIterator<Item = (u64, Due)>) {
        self.heap.extend(entries.into_iter().map(Reverse));
    }

    pub fn next_due_ms(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the next entry due at `now_ms`, if any.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Due> {
        if self.next_due_ms()? > now_ms {
            return None;
        }
        self.heap.pop().map(|Reverse((_, id))| id)
    }

    pub fn needs_rebuild(&self) -> bool {
        self.heap.len() > self.rebuild_at
    }

    /// Replaces every entry with exactly the rooms' pending invitations and disconnect deadlines under a
    /// grace of `grace_ms`, and `more`.
    pub fn rebuild<'a>(
        &mut self,
        rooms: impl Iterator<Item = &'a RoomState>,
        grace_ms: u64,
        more: impl Iterator<Item = (u64, Due)>,
    ) {
        let mut entries: Vec<_> = more.map(Reverse).collect();
        for state in rooms {
            entries.extend(
                state
                    .pending()
                    .map(|i| Reverse((i.expires_ms, Due::Expire(i.invitation_id.clone())))),
            );
            let room_id = state.room().map(|room| &room.room_id);
            for (at_ms, user) in state.disconnect_deadlines(grace_ms) {
                let room_id = room_id.expect("a room with seats exists").clone();
                entries.push(Reverse((at_ms, Due::Disconnect(room_id, user.clone()))));
            }
        }
        self.heap = BinaryHeap::from(entries);
        self.rebuild_at = (2 * self.heap.len()).max(REBUILD_FLOOR);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_invitations_do_not_pile_up() {
        let mut timers = Timers::default();
        let room = cohost_proto::RoomId::new("r").unwrap();
        for n in 1..=(REBUILD_FLOOR as u64 + 1) {
            timers.push(n, Due::Expire(InvitationId::new(room.clone(), n).unwrap()));
        }
        assert!(timers.needs_rebuild());
        timers.rebuild(std::iter::empty(), 0, std::iter::empty());
        assert_eq!(timers.len(), 0);
        assert!(!timers.needs_rebuild());
        assert_eq!(timers.pop_due(u64::MAX), None);
    }
}
