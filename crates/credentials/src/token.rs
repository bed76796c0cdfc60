//! Minting LiveKit access tokens for the host and for seated co-hosts.

use std::time::{SystemTime, UNIX_EPOCH};

use cohost_engine::Broadcaster;
use cohost_proto::{BroadcasterData, BroadcasterRole, RoomId, UserId};
use livekit_api::access_token::{AccessToken, VideoGrants};

use crate::LiveKitConfig;

/// What a co-host may publish at most: camera and microphone, not screen share.
pub const COHOST_SOURCES: [&str; 2] = ["camera", "microphone"];

/// The sources a co-host's seat allows: the camera unless video is off, the microphone unless audio is off.
pub fn cohost_sources(audio: bool, video: bool) -> Vec<String> {
    let allowed = [video, audio];
    (COHOST_SOURCES.iter().zip(allowed))
        .filter(|(_, allowed)| *allowed)
        .map(|(source, _)| (*source).to_owned())
        .collect()
}

/// A token could not be signed: livekit-api's signer failed (in practice, never with a non-empty secret).
/// The text is livekit-api's reason, for people.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a LiveKit token: {0}")]
pub struct MintError(String);

/// Signs broadcaster credentials. It does not decide who is entitled: the engine does, and callers pass its
/// answer in.
#[derive(Debug, Clone)]
pub struct Minter {
    config: LiveKitConfig,
}

impl Minter {
    /// A signer with these settings: key, secret, room prefix, TTL and the URL it hands out.
    pub fn new(config: LiveKitConfig) -> Self {
        Self { config }
    }

    /// The settings it signs with.
    pub fn config(&self) -> &LiveKitConfig {
        &self.config
    }

    /// Credentials for `user` in `room_id`, with the grants of `entitled`'s role: identity = user id, room =
    /// prefix + room id, valid for the configured TTL from now (the system clock). Pure computation, no IO.
    ///
    /// # Errors
    ///
    /// [`MintError`] when livekit-api cannot sign the token.
    pub fn mint(
        &self,
        room_id: &RoomId,
        user: &UserId,
        entitled: &Broadcaster,
    ) -> Result<BroadcasterData, MintError> {
        let room = self.config.room_name(room_id);
        let grants = match entitled.role {
            BroadcasterRole::Host => VideoGrants {
                room_join: true,
                room_admin: true,
                room,
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                ..Default::default()
            },
            BroadcasterRole::Cohost => VideoGrants {
                room_join: true,
                room,
                // LiveKit reads an empty source list as "any source": a seat with both off publishes nothing.
                can_publish: Some(entitled.audio || entitled.video),
                can_publish_sources: cohost_sources(entitled.audio, entitled.video),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                ..Default::default()
            },
        };
        let metadata = match (&entitled.role, &entitled.invitation_id) {
            (BroadcasterRole::Cohost, Some(id)) => {
                serde_json::json!({"role": "cohost", "invitation_id": id.to_string()})
            }
            (BroadcasterRole::Cohost, None) => serde_json::json!({"role": "cohost"}),
            (BroadcasterRole::Host, _) => serde_json::json!({"role": "host"}),
        };
        let ttl = self.config.token_ttl;
        // The token's expiry comes from the system clock inside the signer, so the reply reads the same clock.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let token = AccessToken::with_api_key(&self.config.api_key, &self.config.api_secret)
            .with_identity(user.as_str())
            .with_name(user.as_str())
            .with_grants(grants)
            .with_metadata(&metadata.to_string())
            .with_ttl(ttl)
            .to_jwt()
            .map_err(|e| MintError(e.to_string()))?;
        Ok(BroadcasterData {
            url: self.config.url.clone(),
            token,
            role: entitled.role,
            // The token's `exp` is in whole seconds, rounded down; never report a later expiry than it has.
            expires_ms: (now_ms + ttl.as_millis() as u64) / 1_000 * 1_000,
        })
    }
}
