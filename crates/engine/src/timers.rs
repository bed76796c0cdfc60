//! Pending invitations by `expires_ms`, so the sequencer issues `expire` when each comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cohost_proto::InvitationId;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, InvitationId)>>,
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
}
