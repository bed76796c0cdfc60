//! Invitations: one offer of a stage seat to one candidate, in either direction, and its time limits.

use serde::{Deserialize, Serialize};

use crate::id::{InvitationId, RoomId, UserId};

/// Shortest invitation TTL a deployment may configure, in ms (10 s).
pub const INVITATION_TTL_MS_MIN: u64 = 10_000;
/// Longest invitation TTL a deployment may configure, in ms (24 h).
pub const INVITATION_TTL_MS_MAX: u64 = 24 * 3_600_000;
/// The TTL when the deployment sets none, in ms (300 s).
pub const INVITATION_TTL_MS_DEFAULT: u64 = 300_000;

/// One offer of a stage seat to one candidate, after the event that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    /// `{room_id}.{n}`, made by the server.
    pub invitation_id: InvitationId,
    /// The room whose stage is offered; the same as in `invitation_id`.
    pub room_id: RoomId,
    /// Who offered: the host (`invite`) or the candidate (`request`).
    pub kind: InvitationKind,
    /// The room's host, whichever way the offer went.
    pub host: UserId,
    /// The candidate: the user who would take the seat.
    pub user_id: UserId,
    /// Where the offer stands; only `pending` can change.
    pub status: InvitationStatus,
    /// When it was made, in ms since the Unix epoch.
    pub created_ms: u64,
    /// When its status last changed (`created_ms` while pending), in ms since the Unix epoch.
    pub updated_ms: u64,
    /// When a pending offer expires: `created_ms` plus the deployment's TTL. Accept is refused from then on.
    pub expires_ms: u64,
    /// The seat asked for while pending; the seat taken once approved; `None` otherwise, and in JSON written before
    /// seats were numbered.
    #[serde(default)]
    pub seat: Option<u8>,
}

impl Invitation {
    /// The party who made the offer: the host for an invite, the candidate for a request.
    pub fn initiator(&self) -> &UserId {
        match self.kind {
            InvitationKind::Invite => &self.host,
            InvitationKind::Request => &self.user_id,
        }
    }

    /// The party who answers it: the candidate for an invite, the host for a request.
    pub fn responder(&self) -> &UserId {
        match self.kind {
            InvitationKind::Invite => &self.user_id,
            InvitationKind::Request => &self.host,
        }
    }
}

/// Which way an offer goes: it decides who initiates and who responds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvitationKind {
    /// The host offers and the candidate responds.
    Invite,
    /// The candidate asks ("raises a hand") and the host responds.
    Request,
}

/// Where an invitation stands. `pending` is the only status that changes; the other four are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Waiting for the responder's answer.
    Pending,
    /// Accepted: the candidate took a seat.
    Approved,
    /// Declined by the responder.
    Rejected,
    /// Withdrawn by the initiator, or ended by `stop_room` or a ban.
    Cancelled,
    /// Nobody answered before `expires_ms`.
    Expired,
}

impl InvitationStatus {
    /// Whether the invitation still waits for an answer.
    pub fn is_pending(self) -> bool {
        self == Self::Pending
    }
}
