//! A room's state and `apply`, the fold that builds it from events.

use std::collections::{BTreeMap, VecDeque};

use cohost_proto::invitation::PENDING_PER_ROOM_MAX;
use cohost_proto::{
    Event, Invitation, InvitationId, InvitationKind, InvitationStatus, Room, Seat, UserId,
};
use serde::{Deserialize, Serialize};

/// Ended invitations a room keeps for queries, newest last. Older ones are only in the log, so a busy
/// room's memory stays bounded; pending ones and those behind a seat are always kept.
pub const ENDED_KEPT_MAX: usize = 64;
/// The largest page [`RoomState::invitations`] returns.
pub const PAGE_LIMIT_MAX: usize = 100;

/// One room, as a fold of its events. `RoomState::default()` is a room that does not exist yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    room: Option<Room>,
    host_online: bool,
    /// Every invitation still held, by number.
    invitations: BTreeMap<u64, Invitation>,
    /// The pending ones, oldest first, with their candidate so the one-per-candidate rule needs no lookup.
    pending: Vec<(u64, UserId)>,
    /// Numbers of ended invitations still held, in the order they ended.
    ended: VecDeque<u64>,
    /// Invitations created so far; the next one gets number `created + 1`.
    created: u64,
}

/// Which invitations a query wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvitationFilter {
    pub status: Option<InvitationStatus>,
    pub kind: Option<InvitationKind>,
}

impl InvitationFilter {
    pub fn matches(&self, invitation: &Invitation) -> bool {
        self.status.is_none_or(|s| s == invitation.status)
            && self.kind.is_none_or(|k| k == invitation.kind)
    }
}

/// One page of a room's invitations, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationPage<'a> {
    pub items: Vec<&'a Invitation>,
    /// The invitation number to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

impl RoomState {
    pub fn room(&self) -> Option<&Room> {
        self.room.as_ref()
    }

    /// The number of events applied; 0 before the room exists.
    pub fn version(&self) -> u64 {
        self.room.as_ref().map_or(0, |room| room.version)
    }

    /// Whether LiveKit last reported the host as connected.
    pub fn host_online(&self) -> bool {
        self.host_online
    }

    pub fn invitation(&self, id: &InvitationId) -> Option<&Invitation> {
        let room = self.room.as_ref()?;
        if id.room_id() != &room.room_id {
            return None;
        }
        self.invitations.get(&id.number())
    }

    /// The candidate's pending invitation or request, if any.
    pub fn pending_for(&self, candidate: &UserId) -> Option<&Invitation> {
        let (number, _) = self.pending.iter().find(|(_, user)| user == candidate)?;
        self.invitations.get(number)
    }

    /// Pending invitations and requests, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Invitation> + '_ {
        self.pending
            .iter()
            .filter_map(|(number, _)| self.invitations.get(number))
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn seat(&self, user: &UserId) -> Option<&Seat> {
        self.room
            .as_ref()?
            .cohosts
            .iter()
            .find(|seat| &seat.user_id == user)
    }

    /// Whether the user holds a co-host seat now.
    pub fn is_cohost(&self, user: &UserId) -> bool {
        self.seat(user).is_some()
    }

    /// Whether the user was ever a candidate of an invitation the room still holds.
    pub fn has_offer_history(&self, user: &UserId) -> bool {
        self.invitations
            .values()
            .any(|invitation| &invitation.user_id == user)
    }

    /// The invitations matching `filter` after number `after`, at most `limit` (capped at [`PAGE_LIMIT_MAX`]).
    pub fn invitations(
        &self,
        filter: InvitationFilter,
        after: Option<u64>,
        limit: usize,
    ) -> InvitationPage<'_> {
        let limit = limit.clamp(1, PAGE_LIMIT_MAX);
        let start = after.map_or(0, |n| n.saturating_add(1));
        let mut matching = self
            .invitations
            .range(start..)
            .filter(|(_, inv)| filter.matches(inv));
        let items: Vec<&Invitation> = matching.by_ref().take(limit).map(|(_, inv)| inv).collect();
        let more = matching.next().is_some();
        let next_after = more
            .then(|| items.last().map(|inv| inv.invitation_id.number()))
            .flatten();
        InvitationPage { items, next_after }
    }

    /// The number the next invitation will get.
    pub(crate) fn next_invitation_number(&self) -> u64 {
        self.created + 1
    }

    fn room_mut(&mut self) -> &mut Room {
        // `decide` emits room-scoped events only for a room that exists; anything else is a bug.
        self.room
            .as_mut()
            .expect("event for a room that does not exist")
    }

    fn bump_version(&mut self) {
        self.room_mut().version += 1;
    }

    fn end(&mut self, number: u64) {
        self.ended.push_back(number);
        if self.ended.len() > ENDED_KEPT_MAX {
            let oldest = self
                .ended
                .pop_front()
                .expect("ended is longer than its limit, so not empty");
            self.invitations.remove(&oldest);
        }
    }

    fn stop_pending(&mut self, number: u64) {
        let index = self.pending.iter().position(|(n, _)| *n == number);
        // An invitation leaves pending exactly once, by the event that ends or approves it.
        let index = index.expect("invitation event for an invitation that is not pending");
        self.pending.remove(index);
    }

    fn put_invitation(&mut self, invitation: &Invitation) {
        self.bump_version();
        self.invitations
            .insert(invitation.invitation_id.number(), invitation.clone());
    }
}

/// Folds one event into the state. Holds no rules: it records what `decide` already decided, and asserts
/// the invariants that must never break.
pub fn apply(state: &mut RoomState, event: &Event) {
    match event {
        Event::RoomCreated { room } => {
            assert!(state.room.is_none(), "room created twice");
            assert_eq!(room.version, 1, "a room starts at version 1");
            state.room = Some(room.clone());
        }
        Event::RoomLive { room } | Event::RoomStopped { room } => {
            let current = state.room_mut();
            assert_eq!(
                room.version,
                current.version + 1,
                "room version must be gap-free"
            );
            *current = room.clone();
        }
        Event::InvitationCreated { invitation } => {
            let number = invitation.invitation_id.number();
            assert_eq!(
                number,
                state.created + 1,
                "invitation numbers must be gap-free"
            );
            state.created = number;
            state.pending.push((number, invitation.user_id.clone()));
            assert!(
                state.pending.len() <= PENDING_PER_ROOM_MAX,
                "too many pending invitations"
            );
            state.put_invitation(invitation);
        }
        Event::InvitationApproved { invitation } => {
            state.stop_pending(invitation.invitation_id.number());
            state.put_invitation(invitation);
            let room = state.room_mut();
            room.cohosts.push(Seat {
                user_id: invitation.user_id.clone(),
                invitation_id: invitation.invitation_id.clone(),
                since_ms: invitation.updated_ms,
                online: false,
            });
            assert!(
                room.cohosts.len() <= usize::from(room.max_cohosts),
                "co-hosts exceed max_cohosts"
            );
        }
        Event::InvitationRejected { invitation }
        | Event::InvitationCancelled { invitation }
        | Event::InvitationExpired { invitation } => {
            let number = invitation.invitation_id.number();
            state.stop_pending(number);
            state.put_invitation(invitation);
            state.end(number);
        }
        Event::CohostRemoved {
            user_id,
            invitation_id,
        }
        | Event::CohostLeft {
            user_id,
            invitation_id,
        } => {
            state.bump_version();
            let room = state.room_mut();
            let index = room
                .cohosts
                .iter()
                .position(|seat| &seat.user_id == user_id);
            room.cohosts
                .remove(index.expect("seat event for a user without a seat"));
            state.end(invitation_id.number());
        }
        Event::PresenceChanged { user_id, online } => {
            state.bump_version();
            let room = state.room_mut();
            if &room.host == user_id {
                state.host_online = *online;
            } else if let Some(seat) = room
                .cohosts
                .iter_mut()
                .find(|seat| &seat.user_id == user_id)
            {
                seat.online = *online;
            }
        }
    }
}
