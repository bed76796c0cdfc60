//! Each candidate's invitations across rooms, for `/v1/me/invitations`: every pending one and the newest ended
//! ones, plus the seqs of the candidate's recent invitation events, so that a live collection resumes by reading
//! exactly those records, never by scanning the log.
//!
//! The index of events is bounded ([`RECENT_EVENTS_MAX`] per candidate) and begins where the engine opened
//! (events before the snapshot it opened from are not indexed). A resume from before what is indexed is told so
//! ([`Candidates::events_after`] answers `Err(covered_from)`), and the caller starts over from a snapshot.

use std::collections::{BTreeSet, HashMap, VecDeque};

use cohost_proto::{Invitation, InvitationId, UserId};

/// The ended invitations listed per candidate across rooms, newest kept. Pending ones are never dropped from
/// the list: the quota of pending offers per candidate bounds them instead.
pub const USER_ENDED_INVITATIONS_MAX: usize = 256;
/// The seqs of a candidate's newest invitation events kept for resuming a live collection.
pub const RECENT_EVENTS_MAX: usize = 1_024;

/// An invitation's place in a candidate's list: newest last.
pub(crate) type UserKey = (u64, InvitationId);

/// One candidate's list and recent events.
#[derive(Debug)]
pub(crate) struct CandidateList {
    /// Every listed invitation, in list order.
    pub listed: BTreeSet<UserKey>,
    /// Those that have ended, the oldest first to go.
    ended: BTreeSet<UserKey>,
    /// The seqs of the candidate's invitation events from `covered_from` on, ascending.
    recent: VecDeque<u64>,
    covered_from: u64,
}

impl CandidateList {
    fn new(covered_from: u64) -> Self {
        Self {
            listed: BTreeSet::new(),
            ended: BTreeSet::new(),
            recent: VecDeque::new(),
            covered_from,
        }
    }

    /// `listed_pending`: the invitation was listed as pending until now (an event that ended it), so it is
    /// in `listed` already.
    fn list(&mut self, invitation: &Invitation, listed_pending: bool) {
        let key = (invitation.created_ms, invitation.invitation_id.clone());
        if !invitation.status.is_pending() {
            self.ended.insert(key.clone());
        }
        if listed_pending {
            debug_assert!(self.listed.contains(&key), "a pending invitation is listed");
        } else {
            self.listed.insert(key);
        }
        if self.ended.len() > USER_ENDED_INVITATIONS_MAX
            && let Some(oldest) = self.ended.pop_first()
        {
            self.listed.remove(&oldest);
        }
    }

    fn record(&mut self, seq: u64) {
        self.recent.push_back(seq);
        if self.recent.len() > RECENT_EVENTS_MAX
            && let Some(oldest) = self.recent.pop_front()
        {
            self.covered_from = oldest + 1;
        }
    }
}

/// Every candidate's list. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    pub lists: HashMap<UserId, CandidateList>,
    /// Events at or before this seq are not indexed for a candidate who has no list now.
    floor: u64,
}

impl Candidates {
    /// Nothing indexed at or before `seq` (where the engine opened from).
    pub fn from_seq(seq: u64) -> Self {
        Self {
            lists: HashMap::new(),
            floor: seq,
        }
    }

    /// Lists an invitation under its candidate as it is now (created, or ended), without an event: for rooms
    /// loaded from a snapshot.
    pub fn list(&mut self, invitation: &Invitation) {
        self.list_of(&invitation.user_id).list(invitation, false);
    }

    /// An invitation event at `seq`: the invitation as it is after it. An event that leaves it not pending
    /// ended it, and its candidate's list held it while pending (pending ones never leave it).
    pub fn on_event(&mut self, invitation: &Invitation, seq: u64) {
        let list = self.list_of(&invitation.user_id);
        list.list(invitation, !invitation.status.is_pending());
        list.record(seq);
    }

    fn list_of(&mut self, user: &UserId) -> &mut CandidateList {
        let floor = self.floor;
        self.lists
            .entry(user.clone())
            .or_insert_with(|| CandidateList::new(floor + 1))
    }

    /// The room of these invitations left memory: they leave their candidates' lists. A list left empty goes,
    /// and what it indexed is forgotten (a resume from before it starts over from a snapshot).
    pub fn forget<'a>(&mut self, invitations: impl Iterator<Item = &'a Invitation>) {
        for invitation in invitations {
            let Some(list) = self.lists.get_mut(&invitation.user_id) else {
                continue;
            };
            let key = (invitation.created_ms, invitation.invitation_id.clone());
            list.listed.remove(&key);
            list.ended.remove(&key);
            if list.listed.is_empty() {
                let newest = list.recent.back().copied().unwrap_or(0);
                self.floor = self
                    .floor
                    .max(newest)
                    .max(list.covered_from.saturating_sub(1));
                self.lists.remove(&invitation.user_id);
            }
        }
    }

    /// An invitation event at `seq` that opening did not index (its room was archived already): a resume of
    /// its candidate from before it starts over from a snapshot.
    pub fn skip(&mut self, user: &UserId, seq: u64) {
        match self.lists.get_mut(user) {
            Some(list) => {
                list.recent.retain(|&s| s > seq);
                list.covered_from = list.covered_from.max(seq + 1);
            }
            None => self.floor = self.floor.max(seq),
        }
    }

    /// The seqs of `user`'s invitation events after `seq`, at most `limit`; `Err(covered_from)` when events
    /// after `seq` may exist that are no longer indexed.
    pub fn events_after(&self, user: &UserId, seq: u64, limit: usize) -> Result<Vec<u64>, u64> {
        let Some(list) = self.lists.get(user) else {
            return if seq >= self.floor {
                Ok(Vec::new())
            } else {
                Err(self.floor + 1)
            };
        };
        if seq.saturating_add(1) < list.covered_from {
            return Err(list.covered_from);
        }
        let start = list.recent.partition_point(|&s| s <= seq);
        Ok(list.recent.range(start..).take(limit).copied().collect())
    }
}
