use serde::{Deserialize, Serialize};

use crate::error::ErrorInfo;
use crate::invitation::Invitation;
use crate::room::Room;

/// What a command returns on success, as the contract's reply bodies say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Reply {
    /// create_room, go_live, stop_room, remove_cohost, leave_stage and presence.
    Room(Room),
    /// accept_invitation.
    Accepted(Accepted),
    /// invite, request_to_join, reject, cancel and expire.
    Invitation(Invitation),
}

/// accept's reply: the approved invitation, and credentials when the caller is the new co-host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    pub invitation: Invitation,
    pub broadcaster: Option<BroadcasterData>,
}

/// LiveKit credentials for one participant. Sent only to that participant, never logged or published.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BroadcasterData {
    pub url: String,
    pub token: String,
    pub role: BroadcasterRole,
    pub expires_ms: u64,
}

/// Keeps tokens out of logs that print replies with `{:?}`.
impl std::fmt::Debug for BroadcasterData {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("BroadcasterData")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BroadcasterRole {
    Host,
    Cohost,
}

/// One page of a list, `{"items": [...], "next_cursor": string | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The NATS service's reply: `{"ok": body}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceReply<T> {
    Ok(T),
    Error(ErrorInfo),
}
