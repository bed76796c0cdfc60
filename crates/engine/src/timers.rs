//! Pending invitations by `expires_ms`, so the sequencer issues `expire` when each comes due.
//!
//! An answered invitation's entry is not removed when it is answered (a heap cannot), but skipped when it comes
//! due. So the heap stays bounded, it is rebuilt from the rooms' pending invitations whenever it grows past
//! twice what it held after the last rebuild.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cohost_proto::{Invitation, InvitationId};

/// The size below which the heap is never rebuilt.
const REBUILD_FLOOR: usize = 65_536;

#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, InvitationId)>>,
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
    pub fn push(&mut self, expires_ms: u64, id: InvitationId) {
        self.heap.push(Reverse((expires_ms, id)));
    }

    pub fn next_due_ms(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes the next invitation due at `now_ms`, if any.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<InvitationId> {
        if self.next_due_ms()? > now_ms {
            return None;
        }
        self.heap.pop().map(|Reverse((_, id))| id)
    }

    pub fn needs_rebuild(&self) -> bool {
        self.heap.len() > self.rebuild_at
    }

    /// Replaces every entry with exactly the given pending invitations.
    pub fn rebuild<'a>(&mut self, pending: impl Iterator<Item = &'a Invitation>) {
        let entries: Vec<_> = pending
            .map(|i| Reverse((i.expires_ms, i.invitation_id.clone())))
            .collect();
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
            timers.push(n, InvitationId::new(room.clone(), n).unwrap());
        }
        assert!(timers.needs_rebuild());
        timers.rebuild(std::iter::empty());
        assert_eq!(timers.len(), 0);
        assert!(!timers.needs_rebuild());
        assert_eq!(timers.pop_due(u64::MAX), None);
    }
}
