use std::time::Duration;

/// How cohost talks to LiveKit. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct LiveKitConfig {
    /// What `broadcaster.url` returns to clients, e.g. `wss://example.livekit.cloud` or `ws://localhost:7880`.
    pub url: String,
    /// The LiveKit API key: the issuer of every token, and the key webhooks must be signed with.
    pub api_key: String,
    /// The secret of `api_key`: it signs tokens and RoomService calls, and verifies webhooks. Never logged.
    pub api_secret: String,
    /// Put before the room id to name the LiveKit room.
    pub room_prefix: String,
    /// How long a minted token is valid.
    pub token_ttl: Duration,
    /// Whether removal, leaving and stopping also call LiveKit's RoomService. Off by default, so a development
    /// setup never calls out.
    pub admin: bool,
}

impl std::fmt::Debug for LiveKitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("LiveKitConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("room_prefix", &self.room_prefix)
            .field("token_ttl", &self.token_ttl)
            .field("admin", &self.admin)
            .finish()
    }
}

/// The token TTL when none is configured.
pub const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(600);

impl LiveKitConfig {
    /// LiveKit's usual development key pair (`devkey` / `secret`) on `ws://localhost:7880`.
    pub fn dev() -> Self {
        Self {
            url: "ws://localhost:7880".into(),
            api_key: "devkey".into(),
            api_secret: "secret".into(),
            room_prefix: String::new(),
            token_ttl: TOKEN_TTL_DEFAULT,
            admin: false,
        }
    }

    /// The LiveKit room of a cohost room.
    pub fn room_name(&self, room_id: &cohost_proto::RoomId) -> String {
        format!("{}{}", self.room_prefix, room_id)
    }

    /// The cohost room of a LiveKit room name, if it has the prefix and is a valid room id.
    pub fn room_id(&self, room_name: &str) -> Option<cohost_proto::RoomId> {
        room_name
            .strip_prefix(&self.room_prefix)
            .and_then(|id| cohost_proto::RoomId::new(id).ok())
    }

    /// The RoomService endpoint: LiveKit's HTTP(S) twin of the WebSocket URL (`wss://` becomes `https://`,
    /// `ws://` becomes `http://`; anything else is kept as it is).
    pub fn http_url(&self) -> String {
        if let Some(rest) = self.url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = self.url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            self.url.clone()
        }
    }
}
