//! What readers see: every room as of the last durable batch, and each candidate's invitations across rooms.
//! The sequencer's driver updates it after each flush, under a lock that readers share; queries never wait for
//! a batch to be decided or flushed, only for the short apply of one that was.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use cohost_core::{InvitationFilter, RoomState, apply};
use cohost_proto::{Envelope, Event, Invitation, Page, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::candidates::{Candidates, UserKey};
use cohost_proto::limits::PAGE_LIMIT_MAX;

/// A room's state, plus where each of its events sits in the log. This is what a room snapshot stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RoomEntry {
    pub state: RoomState,
    /// `seqs[v - 1]` is the seq of the room's version `v`: reading a room reads only the log records that hold
    /// its events. Eight bytes per event of a room held in memory.
    pub seqs: Vec<u64>,
}

impl RoomEntry {
    pub fn apply(&mut self, envelope: &Envelope) {
        apply(&mut self.state, &envelope.event);
        assert_eq!(
            self.state.version(),
            envelope.version,
            "room versions are gap-free"
        );
        self.seqs.push(envelope.seq);
    }

    /// The room's invitations in creation order, paged by invitation number (`after`, from
    /// [`room_cursor`]).
    pub fn invitations(&self, list: &ListRequest, after: Option<u64>) -> Page<Invitation> {
        let page = self.state.invitations(list.filter, after, list.limit);
        Page {
            items: page.items.into_iter().cloned().collect(),
            next_cursor: page.next_after.map(|n| n.to_string()),
        }
    }

    /// The seqs of the room's versions from `from_version` on, at most `limit` of them.
    pub fn seqs_from(&self, from_version: u64, limit: usize) -> &[u64] {
        let start = usize::try_from(from_version.max(1) - 1).unwrap_or(usize::MAX);
        let rest = self.seqs.get(start..).unwrap_or_default();
        &rest[..rest.len().min(limit)]
    }

    /// The seqs of the room's events after `seq`, at most `limit` of them.
    pub fn seqs_after(&self, seq: u64, limit: usize) -> &[u64] {
        let start = self.seqs.partition_point(|&s| s <= seq);
        let rest = &self.seqs[start..];
        &rest[..rest.len().min(limit)]
    }
}

/// Which page of a list of invitations a reader wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// Which invitations: by status and kind; the default takes every one.
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

/// Every room as of the last durable seq, and each candidate's invitations across rooms. A fold of the durable
/// log, like the rooms themselves: `apply` each envelope in seq order.
#[derive(Debug, Default)]
pub struct ReadModel {
    pub(crate) rooms: HashMap<RoomId, RoomEntry>,
    pub(crate) candidates: Candidates,
    /// Where the rooms ended lately start in the log, for retention.
    pub(crate) ended: crate::retention::EndedRooms,
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

    /// The stored form of the given rooms (for snapshots and archives), each saying it is as of `last_seq`.
    pub(crate) fn encode_rooms(&self, rooms: &[RoomId]) -> Vec<(RoomId, Vec<u8>)> {
        rooms
            .iter()
            .filter_map(|room_id| {
                let entry = self.rooms.get(room_id)?;
                Some((room_id.clone(), encode_entry(self.last_seq, entry)))
            })
            .collect()
    }

    /// The stored form of every room in memory, as of `last_seq`: a snapshot.
    pub(crate) fn encode_all(&self) -> Vec<(RoomId, Vec<u8>)> {
        self.rooms
            .iter()
            .map(|(room_id, entry)| (room_id.clone(), encode_entry(self.last_seq, entry)))
            .collect()
    }

    /// Folds one durable envelope in; seqs must follow on without a gap.
    pub fn apply(&mut self, envelope: &Envelope) {
        assert_eq!(envelope.seq, self.last_seq + 1, "seqs are gap-free");
        self.last_seq = envelope.seq;
        let entry = match self.rooms.get_mut(&envelope.room_id) {
            Some(entry) => entry,
            None => self.rooms.entry(envelope.room_id.clone()).or_default(),
        };
        let forgotten = entry.state.next_to_forget().cloned();
        entry.apply(envelope);
        if matches!(envelope.event, Event::RoomStopped { .. }) {
            let first = entry.seqs.first().copied().unwrap_or(envelope.seq);
            self.ended.note(envelope.at_ms, first);
        }
        // An invitation the room no longer holds leaves its candidate's list too, so no list keeps what
        // nothing else does.
        if let Some(forgotten) = forgotten
            && entry.state.invitation(&forgotten.invitation_id).is_none()
        {
            self.candidates.forget(std::iter::once(&forgotten));
        }
        if let Some(invitation) = envelope.event.invitation() {
            self.candidates.on_event(invitation, envelope.seq);
        }
    }

    /// The log moves on past an event this model does not hold (of a room archived already, at open).
    pub(crate) fn skip(&mut self, envelope: &Envelope) {
        assert_eq!(envelope.seq, self.last_seq + 1, "seqs are gap-free");
        self.last_seq = envelope.seq;
        if let Some(invitation) = envelope.event.invitation() {
            self.candidates.skip(&invitation.user_id, envelope.seq);
        }
    }

    /// These ended rooms were archived: they leave memory, and their invitations leave their candidates'
    /// lists.
    pub(crate) fn evict(&mut self, rooms: &[RoomId]) {
        for room_id in rooms {
            if let Some(entry) = self.rooms.remove(room_id) {
                assert!(entry.state.is_ended(), "only ended rooms leave memory");
                self.candidates.forget(entry.state.held_invitations());
            }
        }
    }

    /// An archived room back in memory (while opening, for an event a log written before ended rooms were
    /// final holds after room_stopped), its invitations listed under their candidates again.
    pub(crate) fn load(&mut self, room_id: RoomId, entry: RoomEntry) {
        for invitation in entry.state.held_invitations() {
            self.candidates.list(invitation);
        }
        self.rooms.insert(room_id, entry);
    }

    /// Lists every held invitation of the rooms loaded so far under its candidate (at open, before replay, as
    /// of `last_seq`, the snapshot's seq). Order does not matter: each list keeps the newest entries whatever
    /// order they arrive in.
    pub(crate) fn index_loaded_rooms(&mut self) {
        self.candidates = Candidates::from_seq(self.last_seq);
        for entry in self.rooms.values() {
            for invitation in entry.state.held_invitations() {
                self.candidates.list(invitation);
            }
        }
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
        let after = room_cursor(list)?;
        Ok(self.room(room_id)?.invitations(list, after))
    }

    /// The candidate's invitations across rooms, oldest first, paged by `"{created_ms}:{invitation_id}"`.
    pub fn user_invitations(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        let (filter, limit) = (list.filter, list.limit.clamp(1, PAGE_LIMIT_MAX));
        let after = list.cursor.as_deref().map(parse_user_cursor).transpose()?;
        let Some(list) = self.candidates.lists.get(user) else {
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

/// The invitation number a room's list continues after; a cursor the list did not give is
/// `invalid_argument`, checked before the room is looked up.
pub(crate) fn room_cursor(list: &ListRequest) -> Result<Option<u64>, Error> {
    list.cursor
        .as_deref()
        .map(|text| {
            text.parse::<u64>()
                .map_err(|_| Error::invalid_argument("cursor is not one this list gave"))
        })
        .transpose()
}

fn parse_user_cursor(text: &str) -> Result<UserKey, Error> {
    let bad = || Error::invalid_argument("cursor is not one this list gave");
    let (ms, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        ms.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

pub(crate) fn encode_entry(seq: u64, entry: &RoomEntry) -> Vec<u8> {
    cohost_proto::codec::to_postcard(&SnapshotRecordRef::V5 { seq, entry })
}

/// A room's stored state (a snapshot or an archive) and the seq it is as of. A snapshot of the earlier format,
/// whose index of seqs was sparse, cannot serve exact reads: it is refused, and opening replays the log instead.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<(u64, RoomEntry), String> {
    match cohost_proto::codec::from_postcard(bytes).map_err(|e| e.to_string())? {
        SnapshotRecord::V2 { seq, entry } => {
            let state: RoomState = entry.state.into();
            // Its seats have no numbers; only replaying its events numbers them as they were taken. An ended
            // room (an archive) never changes again, so its list order stands.
            if state
                .room()
                .is_some_and(|r| r.status != cohost_proto::RoomStatus::Ended)
            {
                return Err("a room snapshot of the earlier layout (seats not numbered)".into());
            }
            Ok((
                seq,
                RoomEntry {
                    state,
                    seqs: entry.seqs,
                },
            ))
        }
        SnapshotRecord::V3 { seq, entry } => without_liveness(seq, entry.state.into(), entry.seqs),
        SnapshotRecord::V4 { seq, entry } => without_liveness(seq, entry.state.into(), entry.seqs),
        SnapshotRecord::V5 { seq, entry } => Ok((seq, entry)),
        SnapshotRecord::V1(_) => {
            Err("a room snapshot of the earlier format (a sparse seq index)".into())
        }
    }
}

/// A room stored before seats kept their liveness. An open room with co-hosts seated is refused: whether each is
/// away, and since when, follows from its presence events, so opening replays them; an ended room, or one with
/// no seats, has no liveness to know.
fn without_liveness(
    seq: u64,
    state: RoomState,
    seqs: Vec<u64>,
) -> Result<(u64, RoomEntry), String> {
    let seated = state
        .room()
        .is_some_and(|r| r.status != cohost_proto::RoomStatus::Ended && !r.cohosts.is_empty());
    if seated {
        return Err("a room snapshot from before seats kept their liveness".into());
    }
    Ok((seq, RoomEntry { state, seqs }))
}

/// A room snapshot's stored form, versioned like the log.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // V1 is decoded only to be refused.
enum SnapshotRecord {
    /// The room's state and one seq per 64 versions.
    V1(RoomStateWithSparseIndex),
    /// The room as of `seq`, with the seq of each of its versions; the state in the log's `V1` layout.
    V2 { seq: u64, entry: RoomEntryV1 },
    /// The same, in the log's `V2` layout before bans joined the room's state.
    V3 { seq: u64, entry: RoomEntryV2 },
    /// The same, with bans, before each seat's liveness joined the room's state.
    V4 { seq: u64, entry: RoomEntryV3 },
    /// The same, in today's layout. When the room's state changes next, this layout is first copied into
    /// `cohost_core::stored::v4`, as `v3` was.
    V5 { seq: u64, entry: RoomEntry },
}

/// A [`RoomEntry`] in the log's `V1` layout, decoded through that layout's own types so the wire types can
/// change under it.
#[derive(serde::Deserialize)]
struct RoomEntryV1 {
    state: cohost_core::stored::v1::RoomState,
    seqs: Vec<u64>,
}

/// A [`RoomEntry`] of snapshot `V3`, decoded through that layout's own types.
#[derive(serde::Deserialize)]
struct RoomEntryV2 {
    state: cohost_core::stored::v2::RoomState,
    seqs: Vec<u64>,
}

/// A [`RoomEntry`] of snapshot `V4`, decoded through that layout's own types.
#[derive(serde::Deserialize)]
struct RoomEntryV3 {
    state: cohost_core::stored::v3::RoomState,
    seqs: Vec<u64>,
}

#[derive(serde::Deserialize)]
struct RoomStateWithSparseIndex {
    _state: cohost_core::stored::v1::RoomState,
    _seq_index: Vec<u64>,
}

#[derive(serde::Serialize)]
#[serde(rename = "SnapshotRecord")]
enum SnapshotRecordRef<'a> {
    #[allow(dead_code)]
    V1(()),
    #[allow(dead_code)]
    V2(()),
    #[allow(dead_code)]
    V3(()),
    #[allow(dead_code)]
    V4(()),
    V5 {
        seq: u64,
        entry: &'a RoomEntry,
    },
}
