use serde::{Deserialize, Serialize};

use crate::id::{InvitationId, RoomId, UserId};

/// A room as the contract shows it, after the event that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}
