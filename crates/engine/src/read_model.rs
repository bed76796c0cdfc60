//! What readers see: every room as of the last durable batch, and each candidate's invitations across rooms.
//! The sequencer's driver updates it after each flush, under a lock that readers share; queries never wait for
//! a batch to be decided or flushed, only for the short apply of one that was.

use std::collections::{BTreeSet, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use cohost_core::{InvitationFilter, RoomState, apply};
use cohost_proto::{Envelope, Event, Invitation, InvitationId, Page, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::Error;
use cohost_proto::limits::PAGE_LIMIT_MAX;

/// One seq kept per this many versions of a room, so `read_room` starts its scan near the wanted version.
pub(crate) const SEQ_INDEX_STRIDE: u64 = 64;
/// The ended invitations listed per candidate across rooms, newest kept. Pending ones are never dropped
/// from the list: the quota of pending offers per candidate bounds them instead.
pub const USER_ENDED_INVITATIONS_MAX: usize = 256;

/// A room's state, plus where its events sit in the log. This is what a room snapshot stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoomEntry {
    pub state: RoomState,
    /// `seq_index[i]` is the seq of version `i * SEQ_INDEX_STRIDE + 1`.
    pub seq_index: Vec<u64>,
}

impl RoomEntry {
    pub fn apply(&mut self, envelope: &Envelope) {
        apply(&mut self.state, &envelope.event);
        assert_eq!(
            self.state.version(),
            envelope.version,
            "room versions are gap-free"
        );
        if (envelope.version - 1).is_multiple_of(SEQ_INDEX_STRIDE) {
            self.seq_index.push(envelope.seq);
        }
    }

    /// A seq at or before the event of `version`.
    pub fn seq_hint(&self, version: u64) -> u64 {
        let slot = (version.saturating_sub(1) / SEQ_INDEX_STRIDE) as usize;
        self.seq_index
            .get(slot.min(self.seq_index.len().saturating_sub(1)))
            .copied()
            .unwrap_or(1)
    }
}

/// Which page of a list of invitations a reader wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: InvitationFilter,
    /// The `next_cursor` of the page before; `None` for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to [`PAGE_LIMIT_MAX`]; out of range is clamped.
    pub limit: usize,
}

impl Default for ListRequest {
    /// The first page of everything, as long as a page may be.
    fn default() -> Self {
        Self {
            filter: InvitationFilter::default(),
            cursor: None,
            limit: PAGE_LIMIT_MAX,
        }
    }
}

/// An invitation's place in a candidate's list: newest last.
type UserKey = (u64, InvitationId);

/// A candidate's invitations across rooms: every pending one, and the newest ended ones.
#[derive(Debug, Default)]
struct CandidateList {
    /// Every listed invitation, in list order.
    listed: BTreeSet<UserKey>,
    /// Those that have ended, the oldest first to go.
    ended: BTreeSet<UserKey>,
}

impl CandidateList {
    fn add(&mut self, invitation: &Invitation) {
        let key = (invitation.created_ms, invitation.invitation_id.clone());
        if !invitation.status.is_pending() {
            self.ended.insert(key.clone());
        }
        self.listed.insert(key);
        if self.ended.len() > USER_ENDED_INVITATIONS_MAX
            && let Some(oldest) = self.ended.pop_first()
        {
            self.listed.remove(&oldest);
        }
    }
}

/// Every room as of the last durable seq, and each candidate's invitations across rooms. A fold of the durable
/// log, like the rooms themselves: `apply` each envelope in seq order.
#[derive(Debug, Default)]
pub struct ReadModel {
    pub(crate) rooms: HashMap<RoomId, RoomEntry>,
    by_candidate: HashMap<UserId, CandidateList>,
    /// The last seq whose event is applied here (and durable).
    pub(crate) last_seq: u64,
}

/// The read model behind its lock, for reading. A panic while the lock was held leaves it poisoned; that is
/// the sequencer's fail-stop, and readers go on reading the last state rather than panicking in turn.
pub fn read(lock: &RwLock<ReadModel>) -> RwLockReadGuard<'_, ReadModel> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The read model behind its lock, for the driver to apply a durable batch.
pub fn write(lock: &RwLock<ReadModel>) -> RwLockWriteGuard<'_, ReadModel> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ReadModel {
    /// The last seq applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// A room's state, if the room exists.
    pub fn room_state(&self, room_id: &RoomId) -> Option<&RoomState> {
        self.rooms
            .get(room_id)
            .map(|entry| &entry.state)
            .filter(|state| state.room().is_some())
    }

    /// Every room, in no particular order.
    pub fn rooms(&self) -> impl Iterator<Item = (&RoomId, &RoomState)> {
        self.rooms.iter().map(|(id, entry)| (id, &entry.state))
    }

    /// The snapshot bytes of the given rooms, as of `last_seq`.
    pub(crate) fn encode_rooms(&self, rooms: &[RoomId]) -> Vec<(RoomId, Vec<u8>)> {
        rooms
            .iter()
            .filter_map(|room_id| {
                let entry = self.rooms.get(room_id)?;
                Some((room_id.clone(), encode_entry(entry)))
            })
            .collect()
    }

    /// Folds one durable envelope in; seqs must follow on without a gap.
    pub fn apply(&mut self, envelope: &Envelope) {
        assert_eq!(envelope.seq, self.last_seq + 1, "seqs are gap-free");
        self.last_seq = envelope.seq;
        self.rooms
            .entry(envelope.room_id.clone())
            .or_default()
            .apply(envelope);
        if let Some(invitation) = envelope.event.invitation() {
            self.index_candidate(invitation);
        }
    }

    /// Lists an invitation under its candidate as it is now: created, or ended.
    fn index_candidate(&mut self, invitation: &Invitation) {
        self.by_candidate
            .entry(invitation.user_id.clone())
            .or_default()
            .add(invitation);
    }

    /// Lists every held invitation of the rooms loaded so far under its candidate (at open, before replay).
    /// Order does not matter: each list keeps the newest entries whatever order they arrive in.
    pub(crate) fn index_loaded_rooms(&mut self) {
        let rooms = std::mem::take(&mut self.rooms);
        for entry in rooms.values() {
            for invitation in entry.state.held_invitations() {
                self.index_candidate(invitation);
            }
        }
        self.rooms = rooms;
    }

    pub(crate) fn room(&self, room_id: &RoomId) -> Result<&RoomEntry, Error> {
        self.rooms
            .get(room_id)
            .filter(|e| e.state.room().is_some())
            .ok_or(Error::RoomNotFound)
    }

    /// A room's invitations in creation order, paged by invitation number.
    pub fn room_invitations(
        &self,
        room_id: &RoomId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        let after = match &list.cursor {
            None => None,
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| Error::invalid_argument("cursor is not one this list gave"))?,
            ),
        };
        let state = &self.room(room_id)?.state;
        let page = state.invitations(list.filter, after, list.limit);
        Ok(Page {
            items: page.items.into_iter().cloned().collect(),
            next_cursor: page.next_after.map(|n| n.to_string()),
        })
    }

    /// The candidate's invitations across rooms, oldest first, paged by `"{created_ms}:{invitation_id}"`.
    pub fn user_invitations(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        let (filter, limit) = (list.filter, list.limit.clamp(1, PAGE_LIMIT_MAX));
        let after = list.cursor.as_deref().map(parse_user_cursor).transpose()?;
        let Some(list) = self.by_candidate.get(user) else {
            return Ok(Page {
                items: vec![],
                next_cursor: None,
            });
        };
        let start = match &after {
            Some(key) => std::ops::Bound::Excluded(key.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        for key in list.listed.range((start, std::ops::Bound::Unbounded)) {
            let held = self
                .rooms
                .get(key.1.room_id())
                .and_then(|room| room.state.invitation(&key.1));
            let Some(invitation) = held.filter(|invitation| filter.matches(invitation)) else {
                continue;
            };
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(invitation.clone());
            last_key = Some(key);
        }
        let next_cursor = more
            .then(|| last_key.map(|(ms, id)| format!("{ms}:{id}")))
            .flatten();
        Ok(Page { items, next_cursor })
    }
}

fn parse_user_cursor(text: &str) -> Result<UserKey, Error> {
    let bad = || Error::invalid_argument("cursor is not one this list gave");
    let (ms, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        ms.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
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
