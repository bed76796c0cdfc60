//! LiveKit webhooks, with bodies signed the way LiveKit signs them (a JWT from the API key and secret whose
//! `sha256` claim is the base64 SHA-256 of the body): valid ones change presence or stop the room; tampered
//! bodies, wrong keys, stale `createdAt` and replayed ids are refused, and a refusal changes nothing.

mod support;

use std::sync::Arc;

use base64::Engine as _;
use cohost_credentials::webhook::WEBHOOK_AGE_MAX_MS;
use cohost_credentials::{
    LiveKitConfig, TOKEN_TTL_DEFAULT, WebhookOutcome, WebhookRefusal, Webhooks,
};
use cohost_engine::{Config, Engine, ManualClock};
use cohost_proto::limits::BODY_BYTES_MAX;
use cohost_proto::{BanUser, Command, ErrorCode, Reply, RoomId, RoomStatus};
use livekit_api::access_token::AccessToken;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::stand_in::{self, Answer, StandIn};
use support::{accept, create, go_live, invite, remove, room_id, run, user};

const KEY: &str = "lk-hook-key";
const SECRET: &str = "lk-hook-secret";
const PREFIX: &str = "cohost-";
/// The LiveKit room of cohost room `stage-1`.
const LIVEKIT_ROOM: &str = "cohost-stage-1";
/// The engine's (manual) clock, and the `createdAt` of a fresh webhook.
const NOW_MS: u64 = 1_700_000_000_000;
const NOW_SECS: u64 = NOW_MS / 1_000;

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

/// A LiveKit `WebhookEvent` in LiveKit's JSON (protobuf JSON: camelCase, 64-bit integers as strings), in
/// `LIVEKIT_ROOM` and created now; `in_room` and `created_at` change that.
fn event(kind: &str, identity: Option<&str>, id: &str) -> Value {
    let mut event = json!({
        "event": kind,
        "room": {"sid": "RM_xyz", "name": LIVEKIT_ROOM},
        "id": id,
        "createdAt": NOW_SECS.to_string(),
    });
    if let Some(identity) = identity {
        event["participant"] = json!({"sid": "PA_xyz", "identity": identity});
    }
    event
}

fn joined(identity: &str, id: &str) -> Value {
    event("participant_joined", Some(identity), id)
}

fn left(identity: &str, id: &str) -> Value {
    event("participant_left", Some(identity), id)
}

fn finished(id: &str) -> Value {
    event("room_finished", None, id)
}

fn in_room(mut event: Value, room: &str) -> Value {
    event["room"]["name"] = json!(room);
    event
}

fn created_at(mut event: Value, created_at_secs: u64) -> Value {
    event["createdAt"] = json!(created_at_secs.to_string());
    event
}

/// A webhook as it arrives: the body and its `Authorization` header.
#[derive(Debug, Clone)]
struct Delivery {
    body: Vec<u8>,
    authorization: String,
}

fn delivery(body: &[u8], authorization: impl Into<String>) -> Delivery {
    Delivery {
        body: body.to_vec(),
        authorization: authorization.into(),
    }
}

/// `body`, signed with the deployment's key and secret.
fn signed_bytes(body: &[u8]) -> Delivery {
    delivery(body, sign(body))
}

/// `event`, signed with the deployment's key and secret.
fn signed(event: Value) -> Delivery {
    signed_bytes(event.to_string().as_bytes())
}

/// What a delivery must come to.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Turned into this command, which appended to the log.
    Applied(&'static str),
    /// Turned into `presence`, after which exactly these of the stage (alice the host, bob the co-host) are
    /// online.
    Online(&'static [&'static str]),
    /// Acknowledged without effect.
    Ignored,
    /// Refused with this code, changing nothing.
    Refused(ErrorCode),
}

use Then::{Applied, Ignored, Online, Refused};

impl Then {
    /// The command an applied delivery must have become.
    fn command(self) -> Option<&'static str> {
        match self {
            Applied(command) => Some(command),
            Online(_) => Some("presence"),
            Ignored | Refused(_) => None,
        }
    }
}

/// A live room `stage-1` hosted by alice, with bob seated as co-host, and the webhook handler.
struct Hooks {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Engine,
    webhooks: Webhooks,
}

/// The deployment's LiveKit settings, admin off.
fn livekit_config() -> LiveKitConfig {
    LiveKitConfig {
        url: "ws://localhost:7880".into(),
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        room_prefix: PREFIX.into(),
        token_ttl: TOKEN_TTL_DEFAULT,
        admin: false,
    }
}

impl Hooks {
    async fn open() -> Self {
        Self::open_with(livekit_config(), cohost_core::Policy::default()).await
    }

    async fn open_with(config: LiveKitConfig, policy: cohost_core::Policy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let engine = Config::new(dir.path())
            .with_clock(clock.clone())
            .with_policy(policy);
        let engine = Engine::open(engine).unwrap();
        let webhooks = Webhooks::new(engine.clone(), config, clock.clone());
        let hooks = Self {
            _dir: dir,
            clock,
            engine,
            webhooks,
        };
        for (who, command) in [
            ("alice", create()),
            ("alice", go_live()),
            ("alice", invite("bob")),
            ("bob", accept(1)),
        ] {
            run(&hooks.engine, who, command).await;
        }
        for who in ["alice", "bob"] {
            assert!(!hooks.online(who), "{who} is not in LiveKit yet");
        }
        hooks
    }

    /// Everything a webhook could change: the log's end and every room's state.
    fn snapshot(&self) -> (u64, Vec<(RoomId, cohost_core::RoomState)>) {
        let (seq, mut rooms) = self.engine.room_states();
        rooms.sort_by(|a, b| a.0.cmp(&b.0));
        (seq, rooms)
    }

    /// Delivers each webhook in order and checks what it came to.
    async fn check(&self, script: impl IntoIterator<Item = (&str, Delivery, Then)>) {
        for (case, delivery, then) in script {
            self.deliver(case, &delivery, then).await;
        }
    }

    /// Delivers one webhook and checks what it came to: the reply of an applied one, and nothing changed by
    /// an ignored or refused one.
    async fn deliver(&self, case: &str, delivery: &Delivery, then: Then) -> Option<Reply> {
        let (seq, before) = (self.engine.last_seq(), self.snapshot());
        let got = self
            .webhooks
            .handle(&delivery.body, &delivery.authorization)
            .await;
        match (then, got) {
            (Applied(_) | Online(_), Ok(WebhookOutcome::Applied { command, reply })) => {
                assert_eq!(Some(command), then.command(), "{case}");
                assert!(self.engine.last_seq() > seq, "{case}: nothing was appended");
                if let Online(online) = then {
                    for who in ["alice", "bob"] {
                        let expected = online.contains(&who);
                        assert_eq!(self.online(who), expected, "{case}: is {who} online?");
                    }
                }
                return Some(*reply);
            }
            (Ignored, Ok(WebhookOutcome::Ignored(_))) => {}
            (Refused(code), Err(error)) => assert_eq!(error.code(), code, "{case}: {error}"),
            (then, got) => panic!("{case}: expected {then:?}, got {got:?}"),
        }
        assert_eq!(
            self.snapshot(),
            before,
            "{case}: a webhook {then:?} changed something"
        );
        None
    }

    /// Whether `who`, the host or a seated co-host, is online.
    fn online(&self, who: &str) -> bool {
        let room = self.engine.room(&room_id()).unwrap();
        if room.host == user(who) {
            let (_, rooms) = self.snapshot();
            return rooms[0].1.host_online();
        }
        let seat = room.cohosts.iter().find(|seat| seat.user_id == user(who));
        seat.unwrap_or_else(|| panic!("{who} is seated")).online
    }
}

/// Delivers each webhook in order to a fresh `Hooks` and checks what it came to.
async fn check(script: impl IntoIterator<Item = (&str, Delivery, Then)>) {
    let hooks = Hooks::open().await;
    hooks.check(script).await;
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn a_seated_cohost_joining_and_leaving_livekit_changes_their_presence() {
    let hooks = Hooks::open().await;
    let joins = signed(joined("bob", "EV_1"));
    let reply = hooks.deliver("bob joins", &joins, Online(&["bob"])).await;
    let Some(Reply::Room(room)) = reply else {
        panic!("presence replies with the room: {reply:?}");
    };
    assert!(room.cohosts[0].online, "the reply shows bob online");
    let leaves = signed(left("bob", "EV_2"));
    hooks.check([("bob leaves", leaves, Online(&[]))]).await;
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn the_host_joining_livekit_is_recorded() {
    // Only the host changes.
    check([(
        "alice joins",
        signed(joined("alice", "EV_1")),
        Online(&["alice"]),
    )])
    .await;
}

#[tokio::test]
async fn room_finished_stops_the_room_as_the_system() {
    let hooks = Hooks::open().await;
    hooks
        .check([(
            "room finished",
            signed(finished("EV_1")),
            Applied("stop_room"),
        )])
        .await;
    let room = hooks.engine.room(&room_id()).unwrap();
    assert_eq!(room.status, RoomStatus::Ended);
    let stopped = hooks
        .engine
        .read_events(hooks.engine.last_seq(), 1)
        .unwrap();
    assert_eq!(stopped[0].actor, None, "stopped by the system, not a user");
    // LiveKit may report it again under another id: the room has already ended, so nothing to do.
    hooks
        .check([("room finished again", signed(finished("EV_2")), Ignored)])
        .await;
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn webhooks_that_concern_no_one_on_the_stage_are_acknowledged_and_change_nothing() {
    let elsewhere = |room: &str, id: &str| in_room(joined("bob", id), room);
    let cases = [
        ("a viewer joins", joined("carol", "EV_1")),
        ("a viewer leaves", left("carol", "EV_2")),
        (
            "an unknown event type",
            event("track_published", Some("bob"), "EV_3"),
        ),
        ("egress started", event("egress_started", None, "EV_4")),
        ("a room without the prefix", elsewhere("stage-1", "EV_5")),
        (
            "a room of another prefix",
            elsewhere("other-stage-1", "EV_6"),
        ),
        (
            "a prefixed name that is no room id",
            elsewhere("cohost-stage.1", "EV_7"),
        ),
        (
            "a room cohost does not have",
            elsewhere("cohost-stage-2", "EV_8"),
        ),
        (
            "an identity that is no cohost user",
            joined("bob@example", "EV_9"),
        ),
        (
            "room_finished for another room",
            in_room(finished("EV_10"), "cohost-stage-2"),
        ),
    ];
    check(cases.map(|(case, event)| (case, signed(event), Ignored))).await;
}

#[tokio::test]
async fn forged_malformed_stale_and_oversized_webhooks_are_refused_and_change_nothing() {
    let hooks = Hooks::open().await;
    let Delivery {
        body,
        authorization: auth,
    } = signed(joined("bob", "EV_1"));
    let tampered = String::from_utf8(body.clone())
        .unwrap()
        .replace("\"bob\"", "\"bod\"");
    assert_eq!(
        tampered.len(),
        body.len(),
        "one character changed after signing"
    );
    let stale_secs = NOW_SECS - WEBHOOK_AGE_MAX_MS / 1_000 - 1;
    let not_utf8: &[u8] = b"{\"event\": \"\xff\xfe\"}";
    let unhashed = AccessToken::with_api_key(KEY, SECRET).to_jwt().unwrap();
    let unauthenticated = Refused(ErrorCode::Unauthenticated);
    let invalid = Refused(ErrorCode::InvalidArgument);
    let another_body = signed(left("bob", "EV_1")).authorization;
    let cases = [
        (
            "tampered body",
            delivery(tampered.as_bytes(), &auth),
            unauthenticated,
        ),
        (
            "the signature of another body",
            delivery(&body, another_body),
            unauthenticated,
        ),
        (
            "wrong secret",
            delivery(&body, sign_with(&body, KEY, "not-the-secret")),
            unauthenticated,
        ),
        (
            "wrong key",
            delivery(&body, sign_with(&body, "not-the-key", SECRET)),
            unauthenticated,
        ),
        ("no authorization", delivery(&body, ""), unauthenticated),
        (
            "garbage authorization",
            delivery(&body, "Bearer not.a.jwt"),
            unauthenticated,
        ),
        (
            "a token without the body's hash",
            delivery(&body, unhashed),
            unauthenticated,
        ),
        (
            "signed, but not JSON",
            signed_bytes(b"{\"event\": \"participant_joined\", "),
            invalid,
        ),
        ("signed, but not UTF-8", signed_bytes(not_utf8), invalid),
        (
            "signed, but without an id",
            signed(joined("bob", "")),
            invalid,
        ),
        (
            "older than 5 minutes",
            signed(created_at(joined("bob", "EV_2"), stale_secs)),
            invalid,
        ),
        (
            "over 64 KiB",
            signed(padded("EV_3", BODY_BYTES_MAX + 1)),
            invalid,
        ),
    ];
    hooks.check(cases).await;
    assert!(!hooks.online("bob"));
    hooks.engine.shutdown().await;
}

/// bob's join padded with an unknown field to exactly `bytes` bytes.
fn padded(id: &str, bytes: usize) -> Value {
    let with = |padding: usize| {
        let mut event = joined("bob", id);
        event["padding"] = json!("x".repeat(padding));
        event
    };
    let event = with(bytes - with(0).to_string().len());
    assert_eq!(event.to_string().len(), bytes);
    event
}

#[tokio::test]
async fn the_limits_themselves_are_accepted() {
    let oldest_secs = NOW_SECS - WEBHOOK_AGE_MAX_MS / 1_000;
    let largest = signed(padded("EV_1", BODY_BYTES_MAX));
    // The host's: a co-host's report from before their seat was taken is of an earlier seat, so stale.
    let oldest = signed(created_at(joined("alice", "EV_2"), oldest_secs));
    check([
        ("exactly 5 minutes old", oldest, Online(&["alice"])),
        ("exactly 64 KiB", largest, Online(&["alice", "bob"])),
    ])
    .await;
}

#[tokio::test]
async fn a_replayed_id_is_refused_but_a_refused_webhook_does_not_use_its_id_up() {
    let hooks = Hooks::open().await;
    let first = signed(joined("bob", "EV_1"));
    let exists = Refused(ErrorCode::AlreadyExists);
    hooks
        .check([
            ("first delivery", first.clone(), Online(&["bob"])),
            ("the same delivery again", first, exists),
            // A captured id re-signed around another body is still a replay.
            (
                "the same id, another body",
                signed(left("bob", "EV_1")),
                exists,
            ),
        ])
        .await;
    assert!(hooks.online("bob"));

    // Refused before it was believed, so the real delivery with that id still counts.
    let real = signed(left("bob", "EV_2"));
    let forged = String::from_utf8(real.body.clone())
        .unwrap()
        .replace("participant_left", "participant_joind");
    let forged = delivery(forged.as_bytes(), real.authorization.clone());
    let stale = signed(created_at(left("bob", "EV_2"), 1));
    hooks
        .check([
            ("forged", forged, Refused(ErrorCode::Unauthenticated)),
            ("stale", stale, Refused(ErrorCode::InvalidArgument)),
            ("the real one", real, Online(&[])),
        ])
        .await;
    hooks.engine.shutdown().await;
}

#[tokio::test]
async fn the_authorization_header_may_carry_a_bearer_prefix() {
    let joins = signed(joined("bob", "EV_1"));
    let bearer = delivery(&joins.body, format!("Bearer {}", joins.authorization));
    // LiveKit's JSON writes 64-bit integers as strings, but a number is read too.
    let number = json!({
        "event": "participant_left",
        "room": {"name": LIVEKIT_ROOM},
        "participant": {"identity": "bob"},
        "id": "EV_2",
        "createdAt": NOW_SECS + 1,
    });
    check([
        ("with Bearer", bearer, Online(&["bob"])),
        ("createdAt as a number", signed(number), Online(&[])),
    ])
    .await;
}

/// A participant event signed with the stand-in's key; `can_publish` names the participant's permission.
fn joined_as(identity: &str, id: &str, can_publish: Option<bool>) -> Delivery {
    let mut event = joined(identity, id);
    if let Some(can_publish) = can_publish {
        event["participant"]["permission"] =
            json!({"canPublish": can_publish, "canSubscribe": true});
    }
    let body = event.to_string();
    let authorization = sign_with(body.as_bytes(), stand_in::API_KEY, stand_in::API_SECRET);
    delivery(body.as_bytes(), authorization)
}

/// Delivers a webhook that must append nothing, and returns what it came to.
async fn handled(hooks: &Hooks, delivery: Delivery) -> Result<WebhookOutcome, WebhookRefusal> {
    let before = hooks.engine.last_seq();
    let got = hooks
        .webhooks
        .handle(&delivery.body, &delivery.authorization)
        .await;
    assert_eq!(
        hooks.engine.last_seq(),
        before,
        "removing again appends nothing"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admin_on_a_banned_user_or_a_seatless_publisher_who_joins_is_removed_again() {
    let stand_in = StandIn::start().await;
    let hooks = Hooks::open_with(stand_in::livekit(stand_in.port), Default::default()).await;
    let ban = Command::BanUser(BanUser {
        room_id: room_id(),
        user_id: user("erin"),
        duration_s: None,
    });
    run(&hooks.engine, "alice", ban).await;
    run(&hooks.engine, "alice", remove("bob")).await;
    let removed = |delivery: Delivery| handled(&hooks, delivery);
    let now_secs = NOW_SECS as i64;
    let removal = |who: &str, answer| {
        (
            stand_in::LIVEKIT_ROOM.to_owned(),
            who.to_owned(),
            now_secs,
            answer,
        )
    };
    // A viewer's token does not publish: they stay.
    let viewer = removed(joined_as("zed", "EV_1", Some(false))).await;
    assert!(
        matches!(viewer, Ok(WebhookOutcome::Ignored(_))),
        "{viewer:?}"
    );
    let unknown = removed(joined_as("yan", "EV_2", None)).await;
    assert!(
        matches!(unknown, Ok(WebhookOutcome::Ignored(_))),
        "{unknown:?}"
    );
    assert_eq!(stand_in.seen(), []);
    // Banned: removed whatever the token; LiveKit down first, so the webhook is refused and taken again.
    stand_in.plan(&[Answer::Unavailable], Answer::Removed);
    let erin = joined_as("erin", "EV_3", Some(false));
    let refused = removed(erin.clone()).await.expect_err("LiveKit was down");
    assert_eq!(refused.code(), ErrorCode::Unavailable);
    let again = removed(erin.clone()).await;
    assert!(
        matches!(&again, Ok(WebhookOutcome::Removed { user_id, .. }) if user_id.as_str() == "erin"),
        "{again:?}"
    );
    // bob, removed, joins with his old co-host token that LiveKit did not revoke.
    let bob = removed(joined_as("bob", "EV_4", Some(true))).await;
    assert!(
        matches!(&bob, Ok(WebhookOutcome::Removed { user_id, .. }) if user_id.as_str() == "bob"),
        "{bob:?}"
    );
    assert_eq!(
        stand_in.seen(),
        [
            removal("erin", Answer::Unavailable),
            removal("erin", Answer::Removed),
            removal("bob", Answer::Removed)
        ]
    );
    // The host and a seated co-host are never removed.
    let alice = joined_as("alice", "EV_5", Some(true));
    let alice = (hooks.webhooks.handle(&alice.body, &alice.authorization)).await;
    assert!(
        matches!(alice, Ok(WebhookOutcome::Applied { .. })),
        "{alice:?}"
    );
    assert_eq!(stand_in.seen().len(), 3);
    hooks.engine.shutdown().await;
}

/// A participant event of session `sid`, stamped `at_s` seconds after [`NOW_SECS`] by LiveKit.
fn stamped(kind: &str, identity: &str, sid: &str, at_s: u64, id: &str) -> Delivery {
    let mut event = created_at(event(kind, Some(identity), id), NOW_SECS + at_s);
    event["participant"]["sid"] = json!(sid);
    signed(event)
}

/// With a disconnect grace of a minute: webhooks out of order and missing neither leak a seat nor remove a
/// co-host who is there. The grace runs on the engine's (manual) clock; a refused command after each step
/// makes the engine look at the time.
#[tokio::test]
async fn the_grace_removes_only_a_cohost_who_stays_away_whatever_order_webhooks_come_in() {
    const GRACE_MS: u64 = 60_000;
    let policy = cohost_core::Policy::default()
        .with_disconnect_grace_ms(GRACE_MS)
        .unwrap();
    // bob is seated; carol takes a seat too.
    let Hooks {
        clock,
        engine,
        webhooks,
        ..
    } = &Hooks::open_with(livekit_config(), policy).await;
    run(engine, "alice", invite("carol")).await;
    run(engine, "carol", accept(2)).await;
    let deliver = |delivery: Delivery| {
        let webhooks = webhooks.clone();
        async move {
            webhooks
                .handle(&delivery.body, &delivery.authorization)
                .await
                .unwrap()
        }
    };
    let seated = |who: &str| {
        let room = engine.room(&room_id()).unwrap();
        room.cohosts
            .iter()
            .find(|s| s.user_id == user(who))
            .map(|s| s.online)
    };
    let after = |ms: u64| {
        clock.set(NOW_MS + ms);
        let engine = engine.clone();
        // go_live on a live room: refused, and decided after whatever came due.
        async move {
            assert!(
                engine
                    .execute(
                        cohost_proto::Actor::User(user("alice")),
                        go_live(),
                        Default::default()
                    )
                    .await
                    .is_err()
            )
        }
    };
    // bob joins in session A at +1 s and leaves at +5 s; LiveKit's webhooks arrive the other way round.
    deliver(stamped("participant_left", "bob", "PA_a", 5, "EV_1")).await;
    deliver(stamped("participant_joined", "bob", "PA_a", 1, "EV_2")).await;
    // carol joins at +2 s, leaves at +3 s and rejoins in session B at +4 s; her second join is lost, and the
    // first session's leave arrives last.
    deliver(stamped("participant_joined", "carol", "PA_c1", 2, "EV_3")).await;
    deliver(stamped("participant_joined", "carol", "PA_c2", 4, "EV_4")).await;
    deliver(stamped("participant_left", "carol", "PA_c1", 3, "EV_5")).await;
    assert_eq!((seated("bob"), seated("carol")), (Some(false), Some(true)));
    // bob is away since +5 s (LiveKit's time): still seated a moment before the grace ends, removed after.
    after(5_000 + GRACE_MS - 1).await;
    assert_eq!(seated("bob"), Some(false));
    after(5_000 + GRACE_MS).await;
    assert_eq!(seated("bob"), None, "bob stayed away past the grace");
    let removed = engine.read_events(engine.last_seq(), 1).unwrap().remove(0);
    assert!(
        matches!(
            removed.event,
            cohost_proto::Event::CohostRemoved {
                reason: cohost_proto::RemovalReason::Disconnected,
                ..
            }
        ),
        "{removed:?}"
    );
    assert_eq!(removed.actor, None, "the system removes");
    // carol is there: no grace runs for her however long it gets.
    after(10 * GRACE_MS).await;
    assert_eq!(seated("carol"), Some(true));
    // dave accepts and never joins (his webhook is lost): removed a grace after accepting.
    run(engine, "alice", invite("dave")).await;
    run(engine, "dave", accept(3)).await;
    after(11 * GRACE_MS - 1).await;
    assert_eq!(seated("dave"), Some(false));
    after(11 * GRACE_MS).await;
    assert_eq!(seated("dave"), None, "dave never joined within the grace");
    engine.shutdown().await;
}
