//! Rewriting the user ids a value carries. An erased user is served under a pseudonym: the log keeps its bytes
//! (replayable, gap-free), and what is read from it is rewritten on the way out.
//!
//! Every match below names each variant and field, with no wildcard, so a new event or field that carries a
//! user cannot be added without saying how it is rewritten.

use crate::event::{Envelope, Event};
use crate::id::UserId;
use crate::invitation::Invitation;
use crate::reply::{Accepted, Page, Reply};
use crate::room::{Room, Seat};

/// A value whose user ids can be rewritten in place.
pub trait MapUsers {
    /// Replaces each user id for which `f` returns `Some` by what it returns; the others stay. Allocates
    /// nothing itself.
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>);
}

fn map(user: &mut UserId, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
    if let Some(other) = f(user) {
        *user = other;
    }
}

impl MapUsers for Room {
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        let Room {
            room_id: _,
            host,
            title: _,
            status: _,
            max_cohosts: _,
            cohosts,
            version: _,
            moderators,
            locked_seats: _,
            requests_open: _,
        } = self;
        map(host, f);
        for seat in cohosts {
            let Seat {
                user_id,
                invitation_id: _,
                since_ms: _,
                online: _,
                seat: _,
                audio: _,
                video: _,
            } = seat;
            map(user_id, f);
        }
        for moderator in moderators {
            map(moderator, f);
        }
    }
}

impl MapUsers for Invitation {
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        let Invitation {
            invitation_id: _,
            room_id: _,
            kind: _,
            host,
            user_id,
            status: _,
            created_ms: _,
            updated_ms: _,
            expires_ms: _,
            seat: _,
        } = self;
        map(host, f);
        map(user_id, f);
    }
}

impl MapUsers for Event {
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        match self {
            Event::RoomCreated { room }
            | Event::RoomLive { room }
            | Event::RoomStopped { room, reason: _ } => room.map_users(f),
            Event::InvitationCreated { invitation }
            | Event::InvitationApproved { invitation }
            | Event::InvitationRejected { invitation }
            | Event::InvitationCancelled { invitation }
            | Event::InvitationExpired { invitation } => invitation.map_users(f),
            Event::CohostRemoved {
                user_id,
                invitation_id: _,
                reason: _,
            }
            | Event::CohostLeft {
                user_id,
                invitation_id: _,
            }
            | Event::PresenceChanged {
                user_id,
                online: _,
                stamp: _,
            }
            | Event::ModeratorAdded { user_id }
            | Event::ModeratorRemoved { user_id }
            | Event::UserBanned {
                user_id,
                since_ms: _,
                until_ms: _,
            }
            | Event::UserUnbanned { user_id }
            | Event::CohostMediaChanged {
                user_id,
                audio: _,
                video: _,
            } => map(user_id, f),
            Event::CohostMoved {
                user_id,
                seat: _,
                from_seat: _,
                swapped_with,
            } => {
                map(user_id, f);
                if let Some(other) = swapped_with {
                    map(other, f);
                }
            }
            Event::RequestsOpened {}
            | Event::RequestsClosed {}
            | Event::SeatLocked { seat: _ }
            | Event::SeatUnlocked { seat: _ } => {}
        }
    }
}

impl MapUsers for Envelope {
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        let Envelope {
            seq: _,
            room_id: _,
            version: _,
            at_ms: _,
            actor,
            service: _,
            command_id: _,
            event,
        } = self;
        if let Some(actor) = actor {
            map(actor, f);
        }
        event.map_users(f);
    }
}

impl MapUsers for Reply {
    /// The broadcaster credentials of an accept are left as they are: LiveKit knows the participant by the
    /// id it was given, and only that participant receives them.
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        match self {
            Reply::Room(room) => room.map_users(f),
            Reply::Accepted(Accepted {
                invitation,
                broadcaster: _,
            }) => invitation.map_users(f),
            Reply::Invitation(invitation) => invitation.map_users(f),
        }
    }
}

impl<T: MapUsers> MapUsers for Page<T> {
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        self.items.map_users(f);
    }
}

impl<T: MapUsers> MapUsers for Vec<T> {
    fn map_users(&mut self, f: &mut dyn FnMut(&UserId) -> Option<UserId>) {
        for item in self {
            item.map_users(f);
        }
    }
}
