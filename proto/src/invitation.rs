use serde::{Deserialize, Serialize};

use crate::id::{InvitationId, RoomId, UserId};

/// Shortest invitation TTL a deployment may configure.
pub const INVITATION_TTL_MS_MIN: u64 = 10_000;
/// Longest invitation TTL a deployment may configure.
pub const INVITATION_TTL_MS_MAX: u64 = 24 * 3_600_000;
/// The TTL when the deployment sets none.
pub const INVITATION_TTL_MS_DEFAULT: u64 = 300_000;

/// One offer of a stage seat to one candidate, after the event that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invitation {
    pub invitation_id: InvitationId,
    pub room_id: RoomId,
    pub kind: InvitationKind,
    pub host: UserId,
    /// The candidate: the user who would take the seat.
    pub user_id: UserId,
    pub status: InvitationStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub expires_ms: u64,
    /// The seat asked for while pending; the seat taken once approved.
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

    /// The party who answers it.
    pub fn responder(&self) -> &UserId {
        match self.kind {
            InvitationKind::Invite => &self.user_id,
            InvitationKind::Request => &self.host,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvitationKind {
    /// The host offers and the candidate responds.
    Invite,
    /// The candidate asks ("raises a hand") and the host responds.
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Approved,
    Rejected,
    Cancelled,
    Expired,
}

impl InvitationStatus {
    pub fn is_pending(self) -> bool {
        self == Self::Pending
    }
}
