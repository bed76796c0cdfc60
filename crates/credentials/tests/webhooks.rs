//! LiveKit webhooks, with bodies signed the way LiveKit signs them (a JWT from the API key and secret whose
//! `sha256` claim is the base64 SHA-256 of the body): valid ones change presence or stop the room; tampered
//! bodies, wrong keys, stale `createdAt` and replayed ids are refused, and a refusal changes nothing.

use std::sync::Arc;

use base64::Engine as _;
use cohost_credentials::webhook::WEBHOOK_AGE_MAX_MS;
use cohost_credentials::{
    LiveKitConfig, TOKEN_TTL_DEFAULT, WebhookOutcome, WebhookRefusal, Webhooks,
};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_proto::limits::BODY_BYTES_MAX;
use cohost_proto::{
    Actor, Command, CreateRoom, ErrorCode, InvitationId, InvitationTarget, Reply, RoomId,
    RoomStatus, RoomTarget, UserId, UserTarget,
};
use livekit_api::access_token::AccessToken;
use serde_json::json;
use sha2::{Digest, Sha256};

const KEY: &str = "lk-hook-key";
const SECRET: &str = "lk-hook-secret";
const PREFIX: &str = "cohost-";
/// The LiveKit room of cohost room `stage-1`.
const LIVEKIT_ROOM: &str = "cohost-stage-1";
/// The engine's (manual) clock, and the `createdAt` of a fresh webhook.
const NOW_MS: u64 = 1_700_000_000_000;
const NOW_SECS: u64 = NOW_MS / 1_000;

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn room_id() -> RoomId {
    RoomId::new("stage-1").unwrap()
}

/// The `Authorization` LiveKit sends: a JWT signed with the API secret, carrying the body's SHA-256.
fn sign_with(body: &[u8], key: &str, secret: &str) -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
    AccessToken::with_api_key(key, secret)
        .with_sha256(&hash)
        .to_jwt()
        .unwrap()
}

fn sign(body: &[u8]) -> String {
    sign_with(body, KEY, SECRET)
}

/// A LiveKit `WebhookEvent` in LiveKit's JSON (protobuf JSON: camelCase, 64-bit integers as strings).
fn event(kind: &str, room: &str, identity: Option<&str>, id: &str, created_at_secs: u64) -> String {
    let mut event = json!({
        "event": kind,
        "room": {"sid": "RM_xyz", "name": room},
        "id": id,
        "createdAt": created_at_secs.to_string(),
    });
    if let Some(identity) = identity {
        event["participant"] = json!({"sid": "PA_xyz", "identity": identity});
    }
    event.to_string()
}

fn joined(identity: &str, id: &str) -> String {
    event(
        "participant_joined",
        LIVEKIT_ROOM,
        Some(identity),
        id,
        NOW_SECS,
    )
}

fn left(identity: &str, id: &str) -> String {
    event(
        "participant_left",
        LIVEKIT_ROOM,
        Some(identity),
        id,
        NOW_SECS,
    )
}

/// A live room `stage-1` hosted by alice, with bob seated as co-host, and the webhook handler.
struct Hooks {
    _dir: tempfile::TempDir,
    engine: Engine,
    webhooks: Webhooks,
}

impl Hooks {
    async fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let engine = Engine::open(Config::new(dir.path()).with_clock(clock.clone())).unwrap();
        let config = LiveKitConfig {
            url: "ws://localhost:7880".into(),
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            room_prefix: PREFIX.into(),
            token_ttl: TOKEN_TTL_DEFAULT,
            admin: false,
        };
        let webhooks = Webhooks::new(engine.clone(), config, clock);
        let hooks = Self {
            _dir: dir,
            engine,
            webhooks,
        };
        let target = RoomTarget { room_id: room_id() };
        let create = Command::CreateRoom(CreateRoom {
            room_id: room_id(),
            title: None,
            max_cohosts: None,
        });
        let invite = Command::Invite(UserTarget {
            room_id: room_id(),
            user_id: user("bob"),
        });
        let accept = Command::AcceptInvitation(InvitationTarget {
            invitation_id: InvitationId::new(room_id(), 1).unwrap(),
        });
        hooks.run("alice", create).await;
        hooks.run("alice", Command::GoLive(target)).await;
        hooks.run("alice", invite).await;
        hooks.run("bob", accept).await;
        hooks
    }

    async fn run(&self, who: &str, command: Command) {
        let actor = Actor::User(user(who));
        self.engine
            .execute(actor, command, Options::default())
            .await
            .unwrap();
    }

    async fn send(&self, body: &str) -> Result<WebhookOutcome, WebhookRefusal> {
        self.webhooks
            .handle(body.as_bytes(), &sign(body.as_bytes()))
            .await
    }

    /// Everything a webhook could change: the log's end and every room's state.
    fn snapshot(&self) -> (u64, Vec<(RoomId, cohost_core::RoomState)>) {
        let (seq, mut rooms) = self.engine.room_states();
        rooms.sort_by(|a, b| a.0.cmp(&b.0));
        (seq, rooms)
    }

    /// The webhook must be refused with `code` and change nothing.
    async fn refused(&self, case: &str, body: &[u8], authorization: &str, code: ErrorCode) {
        let before = self.snapshot();
        let got = self.webhooks.handle(body, authorization).await;
        match got {
            Err(error) => assert_eq!(error.code(), code, "{case}: {error}"),
            Ok(outcome) => panic!("{case}: accepted as {outcome:?}"),
        }
        assert_eq!(
            self.snapshot(),
            before,
            "{case}: a refusal changed something"
        );
    }

    /// The webhook must be acknowledged without effect.
    async fn ignored(&self, case: &str, body: &str) {
        let before = self.snapshot();
        let got = self.send(body).await;
        assert!(
            matches!(got, Ok(WebhookOutcome::Ignored(_))),
            "{case}: {got:?}"
        );
        assert_eq!(
            self.snapshot(),
            before,
            "{case}: an ignored webhook changed something"
        );
    }

    /// The webhook must become `command` and append exactly one event.
    async fn applied(&self, case: &str, body: &str, authorization: &str, command: &str) -> Reply {
        let seq = self.engine.last_seq();
        let got = self.webhooks.handle(body.as_bytes(), authorization).await;
        let reply = match got {
            Ok(WebhookOutcome::Applied {
                command: name,
                reply,
            }) => {
                assert_eq!(name, command, "{case}");
                *reply
            }
            other => panic!("{case}: {other:?}"),
        };
        assert!(self.engine.last_seq() > seq, "{case}: nothing was appended");
        reply
    }

    fn bob_online(&self) -> bool {
        let room = self.engine.room(&room_id()).unwrap();
        let seat = room.cohosts.iter().find(|seat| seat.user_id == user("bob"));
        seat.expect("bob is seated").online
    }

    fn host_online(&self) -> bool {
        let (_, rooms) = self.snapshot();
        rooms[0].1.host_online()
    }
}

#[tokio::test]
async fn a_seated_cohost_joining_and_leaving_livekit_changes_their_presence() {
    let hooks = Hooks::open().await;
    assert!(!hooks.bob_online());
    let body = joined("bob", "EV_1");
    let reply = hooks
        .applied("bob joins", &body, &sign(body.as_bytes()), "presence")
        .await;
    let Reply::Room(room) = reply else {
        panic!("presence replies with the room: {reply:?}");
    };
    assert!(room.cohosts[0].online, "the reply shows bob online");
    assert!(hooks.bob_online());
    let body = left("bob", "EV_2");
    hooks
        .applied("bob leaves", &body, &sign(body.as_bytes()), "presence")
        .await;
    assert!(!hooks.bob_online());
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn the_host_joining_livekit_is_recorded() {
    let hooks = Hooks::open().await;
    assert!(!hooks.host_online());
    let body = joined("alice", "EV_1");
    hooks
        .applied("alice joins", &body, &sign(body.as_bytes()), "presence")
        .await;
    assert!(hooks.host_online());
    assert!(!hooks.bob_online(), "only the host changed");
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn room_finished_stops_the_room_as_the_system() {
    let hooks = Hooks::open().await;
    let body = event("room_finished", LIVEKIT_ROOM, None, "EV_1", NOW_SECS);
    hooks
        .applied("room finished", &body, &sign(body.as_bytes()), "stop_room")
        .await;
    let room = hooks.engine.room(&room_id()).unwrap();
    assert_eq!(room.status, RoomStatus::Ended);
    let stopped = hooks
        .engine
        .read_events(hooks.engine.last_seq(), 1)
        .unwrap();
    assert_eq!(stopped[0].actor, None, "stopped by the system, not a user");
    // LiveKit may report it again under another id: the room has already ended, so nothing to do.
    let again = event("room_finished", LIVEKIT_ROOM, None, "EV_2", NOW_SECS);
    hooks.ignored("room finished again", &again).await;
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn webhooks_that_concern_no_one_on_the_stage_are_acknowledged_and_change_nothing() {
    let hooks = Hooks::open().await;
    let cases = [
        ("a viewer joins", joined("carol", "EV_1")),
        ("a viewer leaves", left("carol", "EV_2")),
        (
            "an unknown event type",
            event(
                "track_published",
                LIVEKIT_ROOM,
                Some("bob"),
                "EV_3",
                NOW_SECS,
            ),
        ),
        (
            "egress started",
            event("egress_started", LIVEKIT_ROOM, None, "EV_4", NOW_SECS),
        ),
        (
            "a room without the prefix",
            event(
                "participant_joined",
                "stage-1",
                Some("bob"),
                "EV_5",
                NOW_SECS,
            ),
        ),
        (
            "a room of another prefix",
            event(
                "participant_joined",
                "other-stage-1",
                Some("bob"),
                "EV_6",
                NOW_SECS,
            ),
        ),
        (
            "a prefixed name that is no room id",
            event(
                "participant_joined",
                "cohost-stage.1",
                Some("bob"),
                "EV_7",
                NOW_SECS,
            ),
        ),
        (
            "a room cohost does not have",
            event(
                "participant_joined",
                "cohost-stage-2",
                Some("bob"),
                "EV_8",
                NOW_SECS,
            ),
        ),
        (
            "an identity that is no cohost user",
            event(
                "participant_joined",
                LIVEKIT_ROOM,
                Some("bob@example"),
                "EV_9",
                NOW_SECS,
            ),
        ),
        (
            "room_finished for another room",
            event("room_finished", "cohost-stage-2", None, "EV_10", NOW_SECS),
        ),
    ];
    for (case, body) in &cases {
        hooks.ignored(case, body).await;
    }
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn forged_malformed_stale_and_oversized_webhooks_are_refused_and_change_nothing() {
    let hooks = Hooks::open().await;
    let body = joined("bob", "EV_1");
    let auth = sign(body.as_bytes());
    let tampered = body.replace("\"bob\"", "\"bod\"");
    assert_eq!(
        tampered.len(),
        body.len(),
        "one character changed after signing"
    );
    let stale_secs = NOW_SECS - WEBHOOK_AGE_MAX_MS / 1_000 - 1;
    let stale = event(
        "participant_joined",
        LIVEKIT_ROOM,
        Some("bob"),
        "EV_2",
        stale_secs,
    );
    let no_id = event(
        "participant_joined",
        LIVEKIT_ROOM,
        Some("bob"),
        "",
        NOW_SECS,
    );
    let not_json = "{\"event\": \"participant_joined\", ";
    let not_utf8: &[u8] = b"{\"event\": \"\xff\xfe\"}";
    let oversized = padded("EV_3", BODY_BYTES_MAX + 1);
    let unhashed = AccessToken::with_api_key(KEY, SECRET).to_jwt().unwrap();
    let unauthenticated = ErrorCode::Unauthenticated;
    let invalid = ErrorCode::InvalidArgument;
    let cases: [(&str, &[u8], String, ErrorCode); 12] = [
        (
            "tampered body",
            tampered.as_bytes(),
            auth.clone(),
            unauthenticated,
        ),
        (
            "the signature of another body",
            body.as_bytes(),
            sign(left("bob", "EV_1").as_bytes()),
            unauthenticated,
        ),
        (
            "wrong secret",
            body.as_bytes(),
            sign_with(body.as_bytes(), KEY, "not-the-secret"),
            unauthenticated,
        ),
        (
            "wrong key",
            body.as_bytes(),
            sign_with(body.as_bytes(), "not-the-key", SECRET),
            unauthenticated,
        ),
        (
            "no authorization",
            body.as_bytes(),
            String::new(),
            unauthenticated,
        ),
        (
            "garbage authorization",
            body.as_bytes(),
            "Bearer not.a.jwt".into(),
            unauthenticated,
        ),
        (
            "a token without the body's hash",
            body.as_bytes(),
            unhashed,
            unauthenticated,
        ),
        (
            "signed, but not JSON",
            not_json.as_bytes(),
            sign(not_json.as_bytes()),
            invalid,
        ),
        ("signed, but not UTF-8", not_utf8, sign(not_utf8), invalid),
        (
            "signed, but without an id",
            no_id.as_bytes(),
            sign(no_id.as_bytes()),
            invalid,
        ),
        (
            "older than 5 minutes",
            stale.as_bytes(),
            sign(stale.as_bytes()),
            invalid,
        ),
        (
            "over 64 KiB",
            oversized.as_bytes(),
            sign(oversized.as_bytes()),
            invalid,
        ),
    ];
    for (case, body, authorization, code) in &cases {
        hooks.refused(case, body, authorization, *code).await;
    }
    assert!(!hooks.bob_online());
    hooks.engine.shutdown().await;
}

/// bob's join padded with an unknown field to exactly `bytes` bytes.
fn padded(id: &str, bytes: usize) -> String {
    let with = |padding: usize| {
        let mut event: serde_json::Value = serde_json::from_str(&joined("bob", id)).unwrap();
        event["padding"] = json!("x".repeat(padding));
        event.to_string()
    };
    let body = with(bytes - with(0).len());
    assert_eq!(body.len(), bytes);
    body
}

#[tokio::test]
async fn the_limits_themselves_are_accepted() {
    let hooks = Hooks::open().await;
    let body = padded("EV_1", BODY_BYTES_MAX);
    hooks
        .applied("exactly 64 KiB", &body, &sign(body.as_bytes()), "presence")
        .await;
    assert!(hooks.bob_online());
    let oldest_secs = NOW_SECS - WEBHOOK_AGE_MAX_MS / 1_000;
    let body = event(
        "participant_left",
        LIVEKIT_ROOM,
        Some("bob"),
        "EV_2",
        oldest_secs,
    );
    hooks
        .applied(
            "exactly 5 minutes old",
            &body,
            &sign(body.as_bytes()),
            "presence",
        )
        .await;
    assert!(!hooks.bob_online());
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn a_replayed_id_is_refused_but_a_refused_webhook_does_not_use_its_id_up() {
    let hooks = Hooks::open().await;
    let body = joined("bob", "EV_1");
    let auth = sign(body.as_bytes());
    hooks
        .applied("first delivery", &body, &auth, "presence")
        .await;
    let exists = ErrorCode::AlreadyExists;
    hooks
        .refused("the same delivery again", body.as_bytes(), &auth, exists)
        .await;
    // A captured id re-signed around another body is still a replay.
    let again = left("bob", "EV_1");
    hooks
        .refused(
            "the same id, another body",
            again.as_bytes(),
            &sign(again.as_bytes()),
            exists,
        )
        .await;
    assert!(hooks.bob_online());

    // Refused before it was believed, so the real delivery with that id still counts.
    let body = left("bob", "EV_2");
    let forged = body.replace("participant_left", "participant_joind");
    let unauthenticated = ErrorCode::Unauthenticated;
    hooks
        .refused(
            "forged",
            forged.as_bytes(),
            &sign(body.as_bytes()),
            unauthenticated,
        )
        .await;
    let stale = event("participant_left", LIVEKIT_ROOM, Some("bob"), "EV_2", 1);
    let invalid = ErrorCode::InvalidArgument;
    hooks
        .refused("stale", stale.as_bytes(), &sign(stale.as_bytes()), invalid)
        .await;
    hooks
        .applied("the real one", &body, &sign(body.as_bytes()), "presence")
        .await;
    assert!(!hooks.bob_online());
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn the_authorization_header_may_carry_a_bearer_prefix() {
    let hooks = Hooks::open().await;
    let body = joined("bob", "EV_1");
    let bearer = format!("Bearer {}", sign(body.as_bytes()));
    hooks
        .applied("with Bearer", &body, &bearer, "presence")
        .await;
    assert!(hooks.bob_online());
    // LiveKit's JSON writes 64-bit integers as strings, but a number is read too.
    let body = json!({
        "event": "participant_left",
        "room": {"name": LIVEKIT_ROOM},
        "participant": {"identity": "bob"},
        "id": "EV_2",
        "createdAt": NOW_SECS,
    })
    .to_string();
    hooks
        .applied("bare token", &body, &sign(body.as_bytes()), "presence")
        .await;
    assert!(!hooks.bob_online());
    hooks.engine.shutdown().await;
}
