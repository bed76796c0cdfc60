//! Rooms and their seats, as events and replies carry them.

use serde::{Deserialize, Serialize};

use crate::id::{InvitationId, RoomId, UserId};

/// A room as the contract shows it, after the event that carries it.
///
/// JSON written before the stage controls lacks their fields: they read as their defaults (no moderators, no
/// locked seats, requests open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Room {
    /// The room's id, chosen by the host.
    pub room_id: RoomId,
    /// The user who created the room; never changes.
    pub host: UserId,
    /// At most 200 characters, no control characters; may be empty.
    pub title: String,
    /// `idle` → `live` → `ended`, never back.
    pub status: RoomStatus,
    /// How many seats the room has, 1 to 16; fixed at creation.
    pub max_cohosts: u8,
    /// Seated co-hosts, in the order they were seated.
    pub cohosts: Vec<Seat>,
    /// The number of events applied to the room: gap-free, 1 after `room_created`. A command's
    /// `expected_version` is compared with it.
    pub version: u64,
    /// Appointed by the host, at most 8, in appointment order.
    #[serde(default)]
    pub moderators: Vec<UserId>,
    /// Seats no one may take or be moved to, ascending.
    #[serde(default)]
    pub locked_seats: Vec<u8>,
    /// Whether `request_to_join` is taken.
    #[serde(default = "open")]
    pub requests_open: bool,
}

fn open() -> bool {
    true
}

/// Numbers `seats` 1, 2, … in the order listed: how a room from before numbered seats reads.
pub fn number_in_order(seats: &mut [Seat]) {
    for (number, seat) in (1..=u8::MAX).zip(seats.iter_mut()) {
        seat.seat = number;
    }
}

/// Where a room is in its life: `idle` → `live` → `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    /// Created, not yet live: invitations may already be made, but no broadcaster data is given.
    Idle,
    /// Broadcasting: the host and co-hosts get broadcaster data.
    Live,
    /// Stopped, for good: only reads are accepted.
    Ended,
}

/// A co-host's place on the stage, held from approval until removal or leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Seat {
    /// The co-host.
    pub user_id: UserId,
    /// The invitation whose approval gave the seat.
    pub invitation_id: InvitationId,
    /// When the seat was taken (the approval), in ms since the Unix epoch.
    pub since_ms: u64,
    /// Whether LiveKit last reported the co-host as connected.
    pub online: bool,
    /// The seat's number, 1 to the room's `max_cohosts`; 0 in an event recorded before seats were numbered
    /// (the room's state numbers it: the lowest seat free when it was taken).
    #[serde(default)]
    pub seat: u8,
    /// Whether the co-host may publish their microphone: true when seated, kept across moves, set by
    /// `set_cohost_media`.
    #[serde(default = "open")]
    pub audio: bool,
    /// Whether the co-host may publish their camera; set the same way as `audio`.
    #[serde(default = "open")]
    pub video: bool,
}
