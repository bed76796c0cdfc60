//! A room's state and `apply`, the fold that builds it from events.

use std::collections::VecDeque;

use cohost_proto::limits::BANS_PER_ROOM_MAX;
use cohost_proto::limits::PAGE_LIMIT_MAX;
use cohost_proto::limits::PENDING_PER_ROOM_MAX;
use cohost_proto::{
    Event, Invitation, InvitationId, InvitationKind, InvitationStatus, PresenceStamp, Room, Seat,
    UserId,
};
use serde::{Deserialize, Serialize};

/// Ended invitations a room keeps for queries, newest last. Older ones are only in the log, so a busy
/// room's memory stays bounded; pending ones and those behind a seat are always kept.
pub const ENDED_KEPT_MAX: usize = 64;

/// One room, as a fold of its events. `RoomState::default()` is a room that does not exist yet.
///
/// Invitations live in three short lists by stage rather than one map: the command path touches only the
/// pending list (at most 32) and the seats, so a command reads a few cache lines however long the room's
/// history is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    room: Option<Room>,
    host_online: bool,
    /// Pending invitations and requests, oldest first.
    pending: Vec<Invitation>,
    /// Approved invitations whose seat is held, in seat order.
    seated: Vec<Invitation>,
    /// Invitations that ended, and approvals whose seat ended, in the order they ended.
    ended: VecDeque<Invitation>,
    /// Invitations created so far; the next one gets number `created + 1`.
    created: u64,
    /// Banned users, at most one entry each; an entry past its end stays until the next ban prunes it.
    bans: Vec<Ban>,
    /// What LiveKit last said of each seated co-host, one entry per seat: what orders its reports and
    /// starts its disconnect grace.
    liveness: Vec<Liveness>,
}

/// A seated co-host's connection as LiveKit last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The seated co-host it is about.
    pub user_id: UserId,
    /// The stamp of the last report applied; a report stamped earlier is stale.
    pub stamp: Option<PresenceStamp>,
    /// Since when the co-host has been away: from the accept until they first join, and from a stamped
    /// report that they left until one that they joined. `None` while connected, or when no stamped report
    /// said when they left.
    pub offline_since_ms: Option<u64>,
}

impl Liveness {
    /// When the disconnect grace of `grace_ms` runs out; `None` while connected, or with no grace (0).
    pub fn deadline_ms(&self, grace_ms: u64) -> Option<u64> {
        let since = self.offline_since_ms.filter(|_| grace_ms > 0)?;
        Some(since.saturating_add(grace_ms))
    }
}

/// A user the room refuses: no invitation, no request, no seat, until `until_ms` (or the room's life).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned user.
    pub user_id: UserId,
    /// When the ban was decided, in ms since the Unix epoch.
    pub since_ms: u64,
    /// When it ends (exclusive), in ms since the Unix epoch; `None` for as long as the room lives.
    pub until_ms: Option<u64>,
}

impl Ban {
    /// Whether the ban still holds at `now_ms`.
    pub fn holds_at(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// Which invitations a query wants; the default wants every one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvitationFilter {
    /// Only invitations in this status; `None` for any.
    pub status: Option<InvitationStatus>,
    /// Only invitations of this kind (host's invites or candidates' requests); `None` for both.
    pub kind: Option<InvitationKind>,
}

impl InvitationFilter {
    /// Whether `invitation` passes both conditions.
    pub fn matches(&self, invitation: &Invitation) -> bool {
        self.status.is_none_or(|s| s == invitation.status)
            && self.kind.is_none_or(|k| k == invitation.kind)
    }
}

/// One page of a room's invitations, in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationPage<'a> {
    /// The invitations, borrowed from the state; at most the limit asked for.
    pub items: Vec<&'a Invitation>,
    /// The invitation number to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<u64>,
}

impl RoomState {
    /// The room as the contract shows it (status, host, seats, version…); `None` until `room_created`.
    pub fn room(&self) -> Option<&Room> {
        self.room.as_ref()
    }

    /// The number of events applied; 0 before the room exists.
    pub fn version(&self) -> u64 {
        self.room.as_ref().map_or(0, |room| room.version)
    }

    /// Whether the room exists and has ended: its state never changes again.
    pub fn is_ended(&self) -> bool {
        self.room
            .as_ref()
            .is_some_and(|room| room.status == cohost_proto::RoomStatus::Ended)
    }

    /// Whether LiveKit last reported the host as connected.
    pub fn host_online(&self) -> bool {
        self.host_online
    }

    /// The invitation with this id, if the room still holds it: every pending and seated one, and the
    /// [`ENDED_KEPT_MAX`] newest that ended. `None` for another room's id.
    pub fn invitation(&self, id: &InvitationId) -> Option<&Invitation> {
        let room = self.room.as_ref()?;
        if id.room_id() != &room.room_id {
            return None;
        }
        let number = id.number();
        self.held_invitations()
            .find(|invitation| invitation.invitation_id.number() == number)
    }

    /// Every invitation the room holds, in no particular order.
    pub fn held_invitations(&self) -> impl Iterator<Item = &Invitation> + '_ {
        self.pending.iter().chain(&self.seated).chain(&self.ended)
    }

    /// The ended invitation the room lets go of next (the oldest it keeps), once it keeps as many as it may.
    pub fn next_to_forget(&self) -> Option<&Invitation> {
        self.ended
            .front()
            .filter(|_| self.ended.len() >= ENDED_KEPT_MAX)
    }

    /// The candidate's pending invitation or request, if any.
    pub fn pending_for(&self, candidate: &UserId) -> Option<&Invitation> {
        self.pending
            .iter()
            .find(|invitation| &invitation.user_id == candidate)
    }

    /// Pending invitations and requests, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Invitation> + '_ {
        self.pending.iter()
    }

    /// How many invitations and requests are pending, at most 32 (`PENDING_PER_ROOM_MAX`).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The user's co-host seat, if they hold one now.
    pub fn seat(&self, user: &UserId) -> Option<&Seat> {
        self.room
            .as_ref()?
            .cohosts
            .iter()
            .find(|seat| &seat.user_id == user)
    }

    /// The user's ban, if one holds at `now_ms`.
    pub fn ban(&self, user: &UserId, now_ms: u64) -> Option<&Ban> {
        self.bans
            .iter()
            .find(|ban| &ban.user_id == user && ban.holds_at(now_ms))
    }

    /// Every ban entry, ended ones not yet pruned included, in the order banned.
    pub fn bans(&self) -> &[Ban] {
        &self.bans
    }

    /// A seated co-host's connection as LiveKit last reported it.
    pub fn liveness(&self, user: &UserId) -> Option<&Liveness> {
        self.liveness.iter().find(|l| &l.user_id == user)
    }

    /// Each seated co-host's disconnect deadline under a grace of `grace_ms`, for the engine's timers; none
    /// once the room has ended.
    pub fn disconnect_deadlines(&self, grace_ms: u64) -> impl Iterator<Item = (u64, &UserId)> + '_ {
        let open = !self.is_ended();
        (self.liveness.iter().filter(move |_| open))
            .filter_map(move |l| Some((l.deadline_ms(grace_ms)?, &l.user_id)))
    }

    /// Whether the user holds a co-host seat now.
    pub fn is_cohost(&self, user: &UserId) -> bool {
        self.seat(user).is_some()
    }

    /// Whether the user was ever a candidate of an invitation the room still holds.
    pub fn has_offer_history(&self, user: &UserId) -> bool {
        self.held_invitations()
            .any(|invitation| &invitation.user_id == user)
    }

    /// The invitations matching `filter` after number `after`, in creation order, at most `limit` (capped
    /// at [`PAGE_LIMIT_MAX`], and raised to 1). Only those the room still holds: ended ones past the
    /// [`ENDED_KEPT_MAX`] newest are only in the log. Allocates the page, and scans and sorts every held
    /// invitation (at most 32 + 16 + 64) to make it.
    pub fn invitations(
        &self,
        filter: InvitationFilter,
        after: Option<u64>,
        limit: usize,
    ) -> InvitationPage<'_> {
        let limit = limit.clamp(1, PAGE_LIMIT_MAX);
        let after = after.unwrap_or(0);
        let mut matching: Vec<&Invitation> = self
            .held_invitations()
            .filter(|invitation| {
                invitation.invitation_id.number() > after && filter.matches(invitation)
            })
            .collect();
        matching.sort_unstable_by_key(|invitation| invitation.invitation_id.number());
        let more = matching.len() > limit;
        matching.truncate(limit);
        let next_after = more
            .then(|| {
                matching
                    .last()
                    .map(|invitation| invitation.invitation_id.number())
            })
            .flatten();
        InvitationPage {
            items: matching,
            next_after,
        }
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

    fn end(&mut self, invitation: Invitation) {
        self.ended.push_back(invitation);
        if self.ended.len() > ENDED_KEPT_MAX {
            self.ended.pop_front();
        }
    }

    /// Takes the pending invitation an answering event is about. An invitation leaves pending exactly
    /// once, so a miss is a bug.
    fn take_pending(&mut self, number: u64) -> Invitation {
        let index = self
            .pending
            .iter()
            .position(|invitation| invitation.invitation_id.number() == number);
        self.pending
            .remove(index.expect("invitation event for an invitation that is not pending"))
    }
}

/// Folds one event into the state. Holds no rules: it records what `decide` already decided, and asserts
/// the invariants that must never break.
///
/// It cannot fail, and replaying a room's log is `apply` in a loop, from `RoomState::default()`: the events
/// of one room, in version order. It never blocks; it clones what the event carries into the state, and
/// lets go of the oldest ended invitation past [`ENDED_KEPT_MAX`].
///
/// # Panics
///
/// On an event `decide` could not have emitted for this state: a version or invitation number out of
/// order, an event for a room that does not exist, more co-hosts than `max_cohosts`, more than 32 pending
/// offers, two co-hosts on one seat. These assertions hold in release builds too: such an event means a
/// bug, or a log that is not this room's.
///
/// # Examples
///
/// ```
/// use cohost_core::{Context, Policy, RoomState, apply, decide};
/// use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomTarget, UserId};
///
/// let room_id = RoomId::new("stage-1").unwrap();
/// let alice = Actor::User(UserId::new("alice").unwrap());
/// let ctx = Context::new(&alice, 1_000, Policy::default());
/// let mut room = RoomState::default();
/// let mut log = Vec::new();
/// for command in [
///     Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None }),
///     Command::GoLive(RoomTarget { room_id }),
/// ] {
///     for event in decide(&room, &command, &ctx).unwrap() {
///         apply(&mut room, &event);
///         log.push(event);
///     }
/// }
///
/// // Replaying the log rebuilds the same state.
/// let mut replayed = RoomState::default();
/// for event in &log {
///     apply(&mut replayed, event);
/// }
/// assert_eq!(replayed, room);
/// assert_eq!(replayed.version(), 2);
/// ```
pub fn apply(state: &mut RoomState, event: &Event) {
    match event {
        Event::RoomCreated { room } => {
            assert!(state.room.is_none(), "room created twice");
            assert_eq!(room.version, 1, "a room starts at version 1");
            state.room = Some(room.clone());
        }
        Event::RoomLive { room } | Event::RoomStopped { room, .. } => state.replace_room(room),
        Event::InvitationCreated { invitation } => state.add_pending(invitation),
        Event::InvitationApproved { invitation } => state.seat_taken(invitation),
        Event::InvitationRejected { invitation }
        | Event::InvitationCancelled { invitation }
        | Event::InvitationExpired { invitation } => {
            state.bump_version();
            state.take_pending(invitation.invitation_id.number());
            state.end(invitation.clone());
        }
        Event::CohostRemoved {
            user_id,
            invitation_id,
            ..
        }
        | Event::CohostLeft {
            user_id,
            invitation_id,
        } => state.seat_ended(user_id, invitation_id),
        Event::PresenceChanged {
            user_id,
            online,
            stamp,
        } => state.presence(user_id, *online, stamp.as_ref()),
        Event::ModeratorAdded { user_id } => state.moderator(user_id, true),
        Event::RequestsOpened {} | Event::RequestsClosed {} => {
            state.bump_version();
            state.room_mut().requests_open = matches!(event, Event::RequestsOpened {});
        }
        Event::ModeratorRemoved { user_id } => state.moderator(user_id, false),
        Event::CohostMoved {
            user_id,
            seat,
            from_seat,
            swapped_with,
        } => state.seat_moved(user_id, *seat, *from_seat, swapped_with.as_ref()),
        Event::SeatLocked { seat } | Event::SeatUnlocked { seat } => {
            state.lock(*seat, matches!(event, Event::SeatLocked { .. }));
        }
        Event::UserBanned {
            user_id,
            since_ms,
            until_ms,
        } => state.banned(user_id, *since_ms, *until_ms),
        Event::UserUnbanned { user_id } => state.unbanned(user_id),
        Event::CohostMediaChanged {
            user_id,
            audio,
            video,
        } => {
            state.bump_version();
            let seat = state.seat_mut(user_id);
            (seat.audio, seat.video) = (*audio, *video);
        }
    }
}

/// The parts of `apply` for one kind of event each; each records what `decide` decided and asserts what must
/// never break.
impl RoomState {
    fn replace_room(&mut self, room: &Room) {
        let current = self.room_mut();
        assert_eq!(
            room.version,
            current.version + 1,
            "room version must be gap-free"
        );
        let mut room = room.clone();
        // An event recorded before seats were numbered lists them unnumbered: they keep their numbers.
        for seat in room.cohosts.iter_mut().filter(|seat| seat.seat == 0) {
            if let Some(held) = current.cohosts.iter().find(|h| h.user_id == seat.user_id) {
                seat.seat = held.seat;
            }
        }
        *current = room;
    }

    fn moderator(&mut self, user_id: &UserId, added: bool) {
        self.bump_version();
        let room = self.room_mut();
        let at = room.moderators.iter().position(|m| m == user_id);
        if added {
            assert!(at.is_none(), "moderator added twice");
            room.moderators.push(user_id.clone());
        } else {
            room.moderators
                .remove(at.expect("removing a user who is not a moderator"));
        }
    }

    fn unbanned(&mut self, user_id: &UserId) {
        self.bump_version();
        let at = self.bans.iter().position(|ban| &ban.user_id == user_id);
        self.bans
            .remove(at.expect("unbanning a user who is not banned"));
    }

    fn add_pending(&mut self, invitation: &Invitation) {
        let number = invitation.invitation_id.number();
        assert_eq!(
            number,
            self.created + 1,
            "invitation numbers must be gap-free"
        );
        self.bump_version();
        self.created = number;
        self.pending.push(invitation.clone());
        assert!(
            self.pending.len() <= PENDING_PER_ROOM_MAX,
            "too many pending invitations"
        );
    }

    fn seat_taken(&mut self, invitation: &Invitation) {
        self.bump_version();
        self.take_pending(invitation.invitation_id.number());
        self.seated.push(invitation.clone());
        let room = self.room_mut();
        // An approval from before seats were numbered names none: it took the lowest free one.
        let seat = invitation
            .seat
            .unwrap_or_else(|| crate::seats::seat_for(room, None));
        assert!(
            !room.cohosts.iter().any(|taken| taken.seat == seat),
            "two co-hosts on seat {seat}"
        );
        assert!(
            !room.locked_seats.contains(&seat),
            "a co-host on locked seat {seat}"
        );
        room.cohosts.push(Seat {
            user_id: invitation.user_id.clone(),
            invitation_id: invitation.invitation_id.clone(),
            since_ms: invitation.updated_ms,
            online: false,
            seat,
            audio: true,
            video: true,
        });

        assert!(
            room.cohosts.len() <= usize::from(room.max_cohosts),
            "co-hosts exceed max_cohosts"
        );
        // Away until LiveKit says they joined; in a room not live yet no one can join (there are no
        // credentials), so the grace starts only with a report that they left, or reconciliation's.
        let live = room.status == cohost_proto::RoomStatus::Live;
        self.liveness.retain(|l| l.user_id != invitation.user_id);
        self.liveness.push(Liveness {
            user_id: invitation.user_id.clone(),
            stamp: None,
            offline_since_ms: live.then_some(invitation.updated_ms),
        });
    }

    fn seat_ended(&mut self, user_id: &UserId, invitation_id: &InvitationId) {
        self.bump_version();
        let room = self.room_mut();
        let seat = room
            .cohosts
            .iter()
            .position(|seat| &seat.user_id == user_id);
        room.cohosts
            .remove(seat.expect("seat event for a user without a seat"));
        let number = invitation_id.number();
        let seated = self
            .seated
            .iter()
            .position(|invitation| invitation.invitation_id.number() == number);
        let invitation = self
            .seated
            .remove(seated.expect("a seat has its approved invitation"));
        self.end(invitation);
        self.liveness.retain(|l| &l.user_id != user_id);
    }

    fn seat_mut(&mut self, user_id: &UserId) -> &mut Seat {
        self.room_mut()
            .cohosts
            .iter_mut()
            .find(|seat| &seat.user_id == user_id)
            .expect("seat event for a user without a seat")
    }

    fn seat_moved(&mut self, user_id: &UserId, to: u8, from: u8, swapped: Option<&UserId>) {
        self.bump_version();
        let room = self.room_mut();
        assert!(
            (1..=room.max_cohosts).contains(&to) && !room.locked_seats.contains(&to),
            "move to seat {to}, out of range or locked"
        );
        let occupant = room
            .cohosts
            .iter()
            .find(|s| s.seat == to)
            .map(|s| &s.user_id);
        assert_eq!(
            occupant, swapped,
            "a move swaps exactly the seat's occupant"
        );
        if let Some(other) = swapped.cloned() {
            self.seat_mut(&other).seat = from;
        }
        let seat = self.seat_mut(user_id);
        assert_eq!(seat.seat, from, "a move starts from the co-host's seat");
        seat.seat = to;
    }

    fn lock(&mut self, seat: u8, locked: bool) {
        self.bump_version();
        let room = self.room_mut();
        let at = room.locked_seats.binary_search(&seat);
        match (locked, at) {
            (true, Err(at)) => {
                assert!(
                    (1..=room.max_cohosts).contains(&seat)
                        && !room.cohosts.iter().any(|s| s.seat == seat),
                    "lock of seat {seat}, out of range or taken"
                );
                room.locked_seats.insert(at, seat);
            }
            (false, Ok(at)) => {
                room.locked_seats.remove(at);
            }
            _ => panic!("seat {seat} locked or unlocked twice"),
        }
    }

    fn banned(&mut self, user_id: &UserId, since_ms: u64, until_ms: Option<u64>) {
        self.bump_version();
        assert!(
            !self.is_cohost(user_id) && self.pending_for(user_id).is_none(),
            "a banned user holds no seat and no pending offer"
        );
        self.bans
            .retain(|ban| &ban.user_id != user_id && ban.holds_at(since_ms));
        self.bans.push(Ban {
            user_id: user_id.clone(),
            since_ms,
            until_ms,
        });
        assert!(
            self.bans.len() <= BANS_PER_ROOM_MAX,
            "too many bans in a room"
        );
    }

    fn presence(&mut self, user_id: &UserId, online: bool, stamp: Option<&PresenceStamp>) {
        self.bump_version();
        let room = self.room_mut();
        if &room.host == user_id {
            self.host_online = online;
            return;
        }
        if let Some(seat) = room
            .cohosts
            .iter_mut()
            .find(|seat| &seat.user_id == user_id)
        {
            seat.online = online;
        }
        if let Some(liveness) = self.liveness.iter_mut().find(|l| &l.user_id == user_id) {
            if online {
                liveness.offline_since_ms = None;
            } else if let Some(stamp) = stamp {
                liveness.offline_since_ms = Some(stamp.at_ms);
            }
            if let Some(stamp) = stamp {
                liveness.stamp = Some(stamp.clone());
            }
        }
    }
}

/// A room's state as stored (snapshots, archives) in each layout, frozen like the log's ([`cohost_proto::stored`]):
/// a stored room decodes through its layout's types into today's [`RoomState`].
pub mod stored {
    /// The layout written while the log's events were `V1`. Never edited.
    pub mod v1 {
        use std::collections::VecDeque;

        use cohost_proto::RoomStatus;
        use cohost_proto::stored::v1::{Invitation, Room};
        use serde::Deserialize;

        /// A room's state in this layout: the fields of today's, before bans and liveness.
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        pub struct RoomState {
            // Private: a stored layout is only decoded and converted, never read field by field.
            room: Option<Room>,
            host_online: bool,
            pending: Vec<Invitation>,
            seated: Vec<Invitation>,
            ended: VecDeque<Invitation>,
            created: u64,
        }

        impl From<RoomState> for super::super::RoomState {
            /// An ended room's seats are numbered in list order (it never changes again); a room still
            /// open keeps them unnumbered, and its stored state is no use: the caller replays its events.
            fn from(old: RoomState) -> Self {
                let mut room: Option<cohost_proto::Room> = old.room.map(Into::into);
                if let Some(room) = room.as_mut().filter(|r| r.status == RoomStatus::Ended) {
                    cohost_proto::room::number_in_order(&mut room.cohosts);
                }
                Self {
                    room,
                    host_online: old.host_online,
                    pending: old.pending.into_iter().map(Into::into).collect(),
                    seated: old.seated.into_iter().map(Into::into).collect(),
                    ended: old.ended.into_iter().map(Into::into).collect(),
                    created: old.created,
                    bans: Vec::new(),
                    liveness: Vec::new(),
                }
            }
        }
    }

    /// The layout written from the log's `V2` events until bans joined the state (engine snapshots `V3`).
    /// Never edited; its `Room` and `Invitation` are the log's `V2` layout, today's wire types (the day those
    /// change, they are copied into `cohost_proto::stored::v2` and named here).
    pub mod v2 {
        use std::collections::VecDeque;

        use cohost_proto::{Invitation, Room};
        use serde::Deserialize;

        /// A room's state in this layout: the fields of today's, before bans and liveness.
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        pub struct RoomState {
            // Private: a stored layout is only decoded and converted, never read field by field.
            room: Option<Room>,
            host_online: bool,
            pending: Vec<Invitation>,
            seated: Vec<Invitation>,
            ended: VecDeque<Invitation>,
            created: u64,
        }

        impl From<RoomState> for super::super::RoomState {
            /// No bans: the layout had none.
            fn from(old: RoomState) -> Self {
                Self {
                    room: old.room,
                    host_online: old.host_online,
                    pending: old.pending,
                    seated: old.seated,
                    ended: old.ended,
                    created: old.created,
                    bans: Vec::new(),
                    liveness: Vec::new(),
                }
            }
        }
    }

    /// The layout written once bans joined the state, until liveness did (engine snapshots `V4`). Never
    /// edited. Like the layouts before it, it converts with no liveness: whether each co-host is away, and
    /// since when, follows from the room's presence events, so the engine replays an open room with seats
    /// rather than read it from here.
    pub mod v3 {
        use std::collections::VecDeque;

        use cohost_proto::{Invitation, Room};
        use serde::Deserialize;

        use crate::Ban;

        /// A room's state in this layout: the fields of today's, before liveness.
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        pub struct RoomState {
            // Private: a stored layout is only decoded and converted, never read field by field.
            room: Option<Room>,
            host_online: bool,
            pending: Vec<Invitation>,
            seated: Vec<Invitation>,
            ended: VecDeque<Invitation>,
            created: u64,
            bans: Vec<Ban>,
        }

        impl From<RoomState> for super::super::RoomState {
            fn from(old: RoomState) -> Self {
                Self {
                    room: old.room,
                    host_online: old.host_online,
                    pending: old.pending,
                    seated: old.seated,
                    ended: old.ended,
                    created: old.created,
                    bans: old.bans,
                    liveness: Vec::new(),
                }
            }
        }
    }
}
