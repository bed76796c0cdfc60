//! Reply bodies: what a command or a query returns, over HTTP as it is and over the NATS service wrapped in
//! [`ServiceReply`].

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
    /// The invitation after the change: approved, its `seat` the one taken.
    pub invitation: Invitation,
    /// LiveKit credentials when the caller is the new co-host (the candidate accepting an invite); `None` when
    /// the host or a moderator approved a request, and always over NATS, where tokens never travel.
    pub broadcaster: Option<BroadcasterData>,
}

/// LiveKit credentials for one participant. Sent only to that participant, never logged or published.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BroadcasterData {
    /// The LiveKit server to connect to: the deployment's `LIVEKIT_URL`.
    pub url: String,
    /// A LiveKit access token (a JWT) for this participant and room; a secret, redacted from `Debug`.
    pub token: String,
    /// Which grants the token carries.
    pub role: BroadcasterRole,
    /// When the token stops admitting a join, in ms since the Unix epoch (`COHOST_TOKEN_TTL_S` after minting).
    /// LiveKit checks it only at join: a participant already in stays.
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

/// Whom a LiveKit token is for, and so which grants it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BroadcasterRole {
    /// The room's host: may publish any source, and holds `room_admin`.
    Host,
    /// A seated co-host: join, subscribe, publish data, and publish only the media the seat allows.
    Cohost,
}

/// One page of a list, `{"items": [...], "next_cursor": string | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// This page's items, in the list's order: at most the request's `limit`, which is at most 100 for
    /// invitations and 1,000 for events.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The NATS service's reply: `{"ok": body}` or `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceReply<T> {
    /// Success, with the same body HTTP would return.
    Ok(T),
    /// Failure, with its code and a message for people.
    Error(ErrorInfo),
}
