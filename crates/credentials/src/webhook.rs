//! LiveKit webhooks: verified (the signed JWT and the body's hash, through livekit-api's receiver), checked for
//! replays, and mapped to engine commands issued as the system.
//!
//! With LiveKit admin on, a participant who joins but may not be there (banned, or publishing without a seat:
//! a removed co-host whose token a self-hosted LiveKit did not revoke) is removed again at once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use cohost_engine::{Clock, Engine, Error, Options};
use cohost_proto::{
    Actor, Command, ErrorCode, Presence, PresenceStamp, Reply, RoomId, RoomTarget, UserId,
};
use livekit_api::access_token::TokenVerifier;
use livekit_api::services::room::{RemoveParticipantOptions, RoomClient};
use livekit_api::webhooks::{WebhookError, WebhookReceiver};

use crate::LiveKitConfig;
use cohost_proto::limits::BODY_BYTES_MAX;

/// Webhooks older than this are refused, so a captured one cannot be replayed later.
pub const WEBHOOK_AGE_MAX_MS: u64 = 5 * 60_000;
/// Event ids remembered to refuse replays. Ids leave once stale; this bounds memory under a flood.
pub const SEEN_IDS_MAX: usize = 1_000_000;

/// What a verified webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// It became this command, which the engine applied.
    Applied {
        /// The command's contract name: `presence` or `stop_room`.
        command: &'static str,
        /// The engine's reply to it (the room).
        reply: Box<Reply>,
    },
    /// Acknowledged with no effect, and why: a room or user that is not cohost's, an event cohost needs
    /// nothing from, a viewer's presence, a room that already ended.
    Ignored(String),
    /// A participant who may not be in the room joined, and was removed from it again; why.
    Removed {
        /// Who was removed.
        user_id: UserId,
        /// Why they may not be there: banned, or publishing without a seat.
        why: String,
    },
}

/// Why a webhook was refused. It changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRefusal {
    /// The body is over 64 KiB, not UTF-8, not a LiveKit event, or has no event id. `invalid_argument`.
    #[error("{0}")]
    Malformed(String),
    /// The token or the body's hash does not verify with the deployment's LiveKit keys. `unauthenticated`.
    #[error("webhook refused: {0}")]
    Unverified(String),
    /// Created more than 5 minutes ago: a replay, or a clock badly off. `invalid_argument`.
    #[error("webhook is older than 5 minutes")]
    Stale,
    /// This event id was received already. `already_exists`.
    #[error("webhook {0} was already received")]
    Replayed(String),
    /// The engine did not apply it (for a reason other than a viewer's presence or an ended room); the
    /// engine's code.
    #[error(transparent)]
    Engine(#[from] Error),
    /// A participant who may not be in the room joined, and LiveKit did not take the removal. `unavailable`,
    /// so LiveKit sends the webhook again.
    #[error("removing {user_id} from LiveKit failed: {message}")]
    Removal {
        /// Who was to be removed.
        user_id: UserId,
        /// What LiveKit (or the connection to it) said.
        message: String,
    },
    /// The room is not served here now (a cluster node that does not own its partition, or one moving).
    /// `unavailable`, so LiveKit sends the webhook again.
    #[error("room {0} is not served here now")]
    NotServed(RoomId),
}

impl WebhookRefusal {
    /// The contract's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed(_) | Self::Stale => ErrorCode::InvalidArgument,
            Self::Unverified(_) => ErrorCode::Unauthenticated,
            Self::Replayed(_) => ErrorCode::AlreadyExists,
            Self::Engine(error) => error.code(),
            Self::Removal { .. } | Self::NotServed(_) => ErrorCode::Unavailable,
        }
    }
}

/// The webhook handler. Cheap to clone: clones share the memory of ids seen.
///
/// It remembers the ids of the webhooks it took within the last [`WEBHOOK_AGE_MAX_MS`], at most
/// [`SEEN_IDS_MAX`], to refuse replays; that memory is per process, so a webhook replayed to another node (or
/// after a restart) within the age limit is applied again, which for presence and `stop_room` changes
/// nothing twice.
#[derive(Clone)]
pub struct Webhooks {
    receiver: WebhookReceiver,
    engines: EngineFor,
    config: LiveKitConfig,
    clock: Arc<dyn Clock>,
    seen: Arc<Mutex<Seen>>,
    /// With LiveKit admin on: removes who may not be in the room.
    room_service: Option<Arc<RoomClient>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Event ids seen within the age limit, oldest first. An id leaves once its webhook would be refused as stale
/// anyway; the count limit only bounds memory under a flood.
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

impl Seen {
    /// Remembers `id`, created at `created_ms`; false if it was already seen.
    fn insert(&mut self, id: &str, created_ms: u64, now_ms: u64) -> bool {
        while let Some((at, oldest)) = self.order.front() {
            if at.saturating_add(WEBHOOK_AGE_MAX_MS) >= now_ms && self.order.len() < SEEN_IDS_MAX {
                break;
            }
            self.ids.remove(oldest);
            self.order.pop_front();
        }
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        let at = self.order.partition_point(|(at, _)| *at <= created_ms);
        self.order.insert(at, (created_ms, id.to_owned()));
        true
    }

    fn forget(&mut self, id: &str) {
        if self.ids.remove(id)
            && let Some(index) = self.order.iter().rposition(|(_, seen)| seen == id)
        {
            self.order.remove(index);
        }
    }
}

/// The engine that holds a room: the one engine of a single node, or on a cluster node the engine of the room's
/// partition while this node owns it.
pub type EngineFor = Arc<dyn Fn(&RoomId) -> Option<Engine> + Send + Sync>;

impl Webhooks {
    /// Webhooks for the rooms of one engine, verified with `config`'s key and secret; `clock` judges their
    /// age. With [`LiveKitConfig::admin`] on, intruders are removed through RoomService.
    pub fn new(engine: Engine, config: LiveKitConfig, clock: Arc<dyn Clock>) -> Self {
        Self::for_engines(
            Arc::new(move |_: &RoomId| Some(engine.clone())),
            config,
            clock,
        )
    }

    /// Webhooks for the rooms `engines` finds; a webhook for a room it finds none for (not this node's, or
    /// its partition moving) is refused `unavailable`, so LiveKit sends it again.
    pub fn for_engines(engines: EngineFor, config: LiveKitConfig, clock: Arc<dyn Clock>) -> Self {
        let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(
            &config.api_key,
            &config.api_secret,
        ));
        let room_service = config.admin.then(|| {
            Arc::new(RoomClient::with_api_key(
                &config.http_url(),
                &config.api_key,
                &config.api_secret,
            ))
        });
        Self {
            receiver,
            engines,
            config,
            clock,
            seen: Arc::default(),
            room_service,
        }
    }

    /// Verifies and applies one webhook. `authorization` is the request's `Authorization` header (the JWT,
    /// with or without `Bearer `). A refused webhook changes nothing.
    ///
    /// `participant_joined` and `participant_left` of the host or a co-host become `presence` (stamped with
    /// LiveKit's time and session, so a late webhook cannot undo a newer one); `room_finished` becomes
    /// `stop_room`; both run as the system. It waits for the engine to make the command durable, and with
    /// admin on for LiveKit to take a removal; it holds a lock on the ids seen only briefly, never across an
    /// await.
    ///
    /// # Errors
    ///
    /// A [`WebhookRefusal`], whose [`code`](WebhookRefusal::code) is the reply's: `Malformed` and `Stale`
    /// (`invalid_argument`), `Unverified` (`unauthenticated`), `Replayed` (`already_exists`), `Engine` (the
    /// engine's code), `Removal` and `NotServed` (`unavailable`: LiveKit retries, and the retry is not taken
    /// for a replay).
    ///
    /// # Examples
    ///
    /// A webhook signed the way LiveKit signs one: a JWT from the API key and secret whose `sha256` claim is
    /// the base64 SHA-256 of the body.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use base64::Engine as _;
    /// use cohost_credentials::{LiveKitConfig, WebhookOutcome, WebhookRefusal, Webhooks};
    /// use cohost_engine::{Config, Engine, ManualClock, Options};
    /// use cohost_proto::{Actor, Command, CreateRoom, ErrorCode, RoomId, UserId};
    /// use livekit_api::access_token::AccessToken;
    /// use sha2::{Digest, Sha256};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let now_ms = 1_700_000_000_000;
    /// let clock = Arc::new(ManualClock::new(now_ms));
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::open(Config::new(dir.path()).with_clock(clock.clone())).unwrap();
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let create = Command::CreateRoom(CreateRoom { room_id, title: None, max_cohosts: None });
    /// let alice = Actor::User(UserId::new("alice").unwrap());
    /// engine.execute(alice, create, Options::default()).await.unwrap();
    ///
    /// let config = LiveKitConfig::dev();
    /// let webhooks = Webhooks::new(engine.clone(), config.clone(), clock);
    /// let body = serde_json::json!({
    ///     "event": "participant_joined",
    ///     "id": "EV_1",
    ///     "createdAt": (now_ms / 1_000).to_string(),
    ///     "room": {"sid": "RM_1", "name": "stage-1"},
    ///     "participant": {"sid": "PA_1", "identity": "alice"},
    /// })
    /// .to_string();
    /// let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
    /// let jwt = AccessToken::with_api_key(&config.api_key, &config.api_secret)
    ///     .with_sha256(&hash)
    ///     .to_jwt()
    ///     .unwrap();
    ///
    /// // The host joined: that is a presence report, applied.
    /// let outcome = webhooks.handle(body.as_bytes(), &format!("Bearer {jwt}")).await.unwrap();
    /// assert!(matches!(outcome, WebhookOutcome::Applied { command: "presence", .. }));
    ///
    /// // The same webhook again is a replay; a body that does not match its signature is refused.
    /// let again = webhooks.handle(body.as_bytes(), &jwt).await.unwrap_err();
    /// assert!(matches!(again, WebhookRefusal::Replayed(_)));
    /// let tampered = body.replace("alice", "mallory");
    /// let refused = webhooks.handle(tampered.as_bytes(), &jwt).await.unwrap_err();
    /// assert_eq!(refused.code(), ErrorCode::Unauthenticated);
    /// engine.shutdown().await;
    /// # }
    /// ```
    pub async fn handle(
        &self,
        body: &[u8],
        authorization: &str,
    ) -> Result<WebhookOutcome, WebhookRefusal> {
        let event = self.verify(body, authorization)?;
        let command = match self.command_for(&event) {
            Ok(command) => command,
            Err(ignored) => return Ok(ignored),
        };
        let name = command.name();
        let Some(engine) = (self.engines)(command.room_id()) else {
            self.seen().forget(&event.id);
            let room_id = command.room_id().clone();
            return Err(WebhookRefusal::NotServed(room_id));
        };
        match engine
            .execute(Actor::System, command, Options::default())
            .await
        {
            Ok(reply) => Ok(WebhookOutcome::Applied {
                command: name,
                reply: Box::new(reply),
            }),
            // A viewer's presence, or a room that already ended: nothing to record, unless the participant may
            // not be there at all.
            Err(error)
                if matches!(
                    error.code(),
                    ErrorCode::NotFound | ErrorCode::FailedPrecondition
                ) =>
            {
                if let Some((user_id, why)) = self.intruder(&engine, &event) {
                    return self.remove_again(&event, user_id, why).await;
                }
                Ok(WebhookOutcome::Ignored(format!("{name}: {error}")))
            }
            Err(error) => {
                // Not applied: LiveKit's retry of this webhook must not count as a replay.
                self.seen().forget(&event.id);
                Err(WebhookRefusal::Engine(error))
            }
        }
    }

    /// A joined participant who holds no place on the stage and may not be in the room: banned, or holding a
    /// token that publishes (only the host and co-hosts get those). `None` with admin off.
    fn intruder(
        &self,
        engine: &Engine,
        event: &livekit_protocol::WebhookEvent,
    ) -> Option<(UserId, String)> {
        self.room_service.as_ref()?;
        let participant = event.participant.as_ref()?;
        if event.event != "participant_joined" {
            return None;
        }
        let user_id = UserId::new(&participant.identity).ok()?;
        let room_id = self.config.room_id(&event.room.as_ref()?.name)?;
        let now_ms = self.clock.now_ms();
        if engine.is_banned(&room_id, &user_id, now_ms) == Ok(true) {
            return Some((user_id, "banned from the room".into()));
        }
        let publishes = (participant.permission.as_ref()).is_some_and(|p| p.can_publish);
        publishes.then(|| (user_id, "publishes without a seat".into()))
    }

    /// Removes `user_id` from the LiveKit room and revokes every token issued to them until now.
    async fn remove_again(
        &self,
        event: &livekit_protocol::WebhookEvent,
        user_id: UserId,
        why: String,
    ) -> Result<WebhookOutcome, WebhookRefusal> {
        let client = self.room_service.as_ref().expect("intruder checks admin");
        let room = event.room.as_ref().map_or("", |room| room.name.as_str());
        let options = RemoveParticipantOptions {
            revoke_token_ts: self.clock.now_ms().div_ceil(1_000) as i64,
        };
        let removed = client
            .remove_participant_with_options(room, user_id.as_str(), options)
            .await;
        match removed {
            Ok(()) => {
                tracing::warn!(%room, %user_id, %why, "a participant who may not be in the room joined; removed again");
                Ok(WebhookOutcome::Removed { user_id, why })
            }
            Err(error) => {
                // Not done: LiveKit's retry of this webhook must not count as a replay.
                self.seen().forget(&event.id);
                let message = error.to_string();
                Err(WebhookRefusal::Removal { user_id, message })
            }
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // The set is whole between calls, so a panic elsewhere leaves nothing half-done in it.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signed, fresh, first-seen LiveKit event in the body.
    fn verify(
        &self,
        body: &[u8],
        authorization: &str,
    ) -> Result<livekit_protocol::WebhookEvent, WebhookRefusal> {
        if body.len() > BODY_BYTES_MAX {
            return Err(WebhookRefusal::Malformed(
                "webhook body is larger than 64 KiB".into(),
            ));
        }
        let body = std::str::from_utf8(body)
            .map_err(|_| WebhookRefusal::Malformed("webhook body is not UTF-8".into()))?;
        let token = authorization
            .trim()
            .strip_prefix("Bearer ")
            .unwrap_or(authorization.trim());
        let event = self
            .receiver
            .receive(body, token)
            .map_err(|error| match error {
                WebhookError::InvalidData(e) => {
                    WebhookRefusal::Malformed(format!("webhook body is not a LiveKit event: {e}"))
                }
                other => WebhookRefusal::Unverified(other.to_string()),
            })?;
        let created_ms = u64::try_from(event.created_at)
            .unwrap_or(0)
            .saturating_mul(1_000);
        let now_ms = self.clock.now_ms();
        if created_ms.saturating_add(WEBHOOK_AGE_MAX_MS) < now_ms {
            return Err(WebhookRefusal::Stale);
        }
        if event.id.is_empty() {
            return Err(WebhookRefusal::Malformed("webhook has no event id".into()));
        }
        if !self.seen().insert(&event.id, created_ms, now_ms) {
            return Err(WebhookRefusal::Replayed(event.id));
        }
        Ok(event)
    }

    /// The command a verified event means, or why it means none.
    fn command_for(
        &self,
        event: &livekit_protocol::WebhookEvent,
    ) -> Result<Command, WebhookOutcome> {
        let ignored = |why: String| WebhookOutcome::Ignored(why);
        let room_name = event
            .room
            .as_ref()
            .map(|room| room.name.as_str())
            .unwrap_or_default();
        let room_id = self
            .config
            .room_id(room_name)
            .ok_or_else(|| ignored(format!("room {room_name:?} is not a cohost room")))?;
        match event.event.as_str() {
            "participant_joined" | "participant_left" => {
                let identity = event
                    .participant
                    .as_ref()
                    .map(|p| p.identity.as_str())
                    .unwrap_or_default();
                let user_id = UserId::new(identity).map_err(|_| {
                    ignored(format!("participant {identity:?} is not a cohost user"))
                })?;
                // LiveKit's time and session for the report: the core orders reports by them, not by arrival.
                let sid = event.participant.as_ref().map(|p| p.sid.clone());
                let stamp = sid.map(|participant_sid| PresenceStamp {
                    at_ms: u64::try_from(event.created_at)
                        .unwrap_or(0)
                        .saturating_mul(1_000),
                    participant_sid,
                });
                Ok(Command::Presence(Presence {
                    room_id,
                    user_id,
                    online: event.event == "participant_joined",
                    stamp,
                }))
            }
            "room_finished" => Ok(Command::StopRoom(RoomTarget { room_id })),
            other => Err(ignored(format!("event {other:?} needs nothing"))),
        }
    }
}
