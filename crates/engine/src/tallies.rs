//! Counts across rooms for the quotas that span them: each host's rooms that have not ended, and each
//! candidate's pending offers. The sequencer keeps them as it applies events, and recounts a room from its
//! state when a failed batch puts the room back.

use std::collections::HashMap;

use cohost_core::{RoomState, Tallies};
use cohost_proto::{Event, RoomStatus, UserId};

/// See the module docs. A user appears only while a count of theirs is above zero.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RoomTallies {
    open_rooms: HashMap<UserId, u32>,
    pending: HashMap<UserId, u32>,
}

fn bump(counts: &mut HashMap<UserId, u32>, user: &UserId, up: bool) {
    if up {
        *counts.entry(user.clone()).or_default() += 1;
        return;
    }
    let count = counts
        .get_mut(user)
        .expect("a tally goes down only for what it counted");
    *count -= 1;
    if *count == 0 {
        counts.remove(user);
    }
}

impl RoomTallies {
    /// The tallies of these rooms.
    pub fn count<'a>(rooms: impl Iterator<Item = &'a RoomState>) -> Self {
        let mut tallies = Self::default();
        for state in rooms {
            tallies.room(state, true);
        }
        tallies
    }

    /// Adds (`up`) or takes away what one room contributes.
    pub fn room(&mut self, state: &RoomState, up: bool) {
        let Some(room) = state.room() else {
            return;
        };
        if room.status != RoomStatus::Ended {
            bump(&mut self.open_rooms, &room.host, up);
        }
        for invitation in state.pending() {
            bump(&mut self.pending, &invitation.user_id, up);
        }
    }

    /// Follows one event just applied to its room.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::RoomCreated { room } => bump(&mut self.open_rooms, &room.host, true),
            Event::RoomStopped { room, .. } => bump(&mut self.open_rooms, &room.host, false),
            Event::InvitationCreated { invitation } => {
                bump(&mut self.pending, &invitation.user_id, true)
            }
            // Each of these ends an offer that was pending.
            Event::InvitationApproved { invitation }
            | Event::InvitationRejected { invitation }
            | Event::InvitationCancelled { invitation }
            | Event::InvitationExpired { invitation } => {
                bump(&mut self.pending, &invitation.user_id, false)
            }
            Event::RoomLive { .. }
            | Event::CohostRemoved { .. }
            | Event::CohostLeft { .. }
            | Event::PresenceChanged { .. }
            | Event::ModeratorAdded { .. }
            | Event::ModeratorRemoved { .. }
            | Event::RequestsOpened {}
            | Event::RequestsClosed {}
            | Event::CohostMoved { .. }
            | Event::SeatLocked { .. }
            | Event::SeatUnlocked { .. }
            | Event::UserBanned { .. }
            | Event::UserUnbanned { .. }
            | Event::CohostMediaChanged { .. } => {}
        }
    }
}

impl Tallies for RoomTallies {
    fn open_rooms(&self, host: &UserId) -> u32 {
        self.open_rooms.get(host).copied().unwrap_or(0)
    }

    fn pending_offers(&self, user: &UserId) -> u32 {
        self.pending.get(user).copied().unwrap_or(0)
    }
}
