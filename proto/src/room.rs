use serde::{Deserialize, Serialize};

use crate::id::{InvitationId, RoomId, UserId};

/// A room as the contract shows it, after the event that carries it.
///
/// JSON written before the stage controls lacks their fields: they read as their defaults (no moderators, no
/// locked seats, requests open), and seats without a number are numbered in the order the room lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RoomIn")]
pub struct Room {
    pub room_id: RoomId,
    pub host: UserId,
    pub title: String,
    pub status: RoomStatus,
    pub max_cohosts: u8,
    /// Seated co-hosts, in the order they were seated.
    pub cohosts: Vec<Seat>,
    /// The number of events applied to the room.
    pub version: u64,
    /// Appointed by the host, at most 8, in appointment order.
    pub moderators: Vec<UserId>,
    /// Seats no one may take or be moved to, ascending.
    pub locked_seats: Vec<u8>,
    /// Whether `request_to_join` is taken.
    pub requests_open: bool,
}

/// [`Room`] as decoded, before seats without a number get one.
#[derive(Deserialize)]
struct RoomIn {
    room_id: RoomId,
    host: UserId,
    title: String,
    status: RoomStatus,
    max_cohosts: u8,
    cohosts: Vec<Seat>,
    version: u64,
    #[serde(default)]
    moderators: Vec<UserId>,
    #[serde(default)]
    locked_seats: Vec<u8>,
    #[serde(default = "open")]
    requests_open: bool,
}

fn open() -> bool {
    true
}

impl From<RoomIn> for Room {
    fn from(raw: RoomIn) -> Self {
        let mut cohosts = raw.cohosts;
        if cohosts.iter().any(|seat| seat.seat == 0) {
            number_in_order(&mut cohosts);
        }
        Self {
            room_id: raw.room_id,
            host: raw.host,
            title: raw.title,
            status: raw.status,
            max_cohosts: raw.max_cohosts,
            cohosts,
            version: raw.version,
            moderators: raw.moderators,
            locked_seats: raw.locked_seats,
            requests_open: raw.requests_open,
        }
    }
}

/// Seats numbered 1, 2, … in the order listed: how a room from before numbered seats reads.
pub fn number_in_order(seats: &mut [Seat]) {
    for (number, seat) in (1..=u8::MAX).zip(seats.iter_mut()) {
        seat.seat = number;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    Idle,
    Live,
    Ended,
}

/// A co-host's place on the stage, held from approval until removal or leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    pub user_id: UserId,
    /// The invitation whose approval gave the seat.
    pub invitation_id: InvitationId,
    pub since_ms: u64,
    /// Whether LiveKit last reported the co-host as connected.
    pub online: bool,
    /// The seat's number, 1 to the room's `max_cohosts` (0 only in JSON from before seats were numbered, until
    /// the room around it numbers it).
    #[serde(default)]
    pub seat: u8,
    /// Whether the co-host may publish audio, and video: the host's media controls.
    #[serde(default = "open")]
    pub audio: bool,
    #[serde(default = "open")]
    pub video: bool,
}
