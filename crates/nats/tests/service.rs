//! The `cohost` NATS service against a private nats-server, driven by a plain async-nats client: every command
//! of the seed flow with its exact reply, every error code, malformed and oversized input, the queries
//! including `read_events`, discovery through `$SRV`, concurrency, and stopping.
//!
//! Most cases are scripts of (request, the reply it must get), run in order by `Harness::check`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::RequestErrorKind;
use cohost_engine::{Clock, Config, Engine, ManualClock};
use cohost_nats::service::{ServiceHandle, serve};
use cohost_nats::test_server::TestServer;
use cohost_proto::limits::BODY_BYTES_MAX;
use cohost_proto::subject;
use serde_json::{Value, json};

const START_MS: u64 = 1_700_000_000_000;
const TTL_MS: u64 = 300_000;
/// No request may take longer: the service never hangs.
const WAIT: Duration = Duration::from_secs(5);
const INVALID: Want = Code("invalid_argument");

/// Where a request goes: a command or a query, by name.
#[derive(Debug, Clone, Copy)]
enum To {
    Cmd(&'static str),
    Query(&'static str),
}
use To::{Cmd, Query};

impl To {
    fn subject(self) -> String {
        match self {
            Cmd(name) => subject::command(name),
            Query(name) => subject::query(name),
        }
    }
}

/// What the reply to a request must be.
#[derive(Debug)]
enum Want {
    /// `{"ok": value}`, exactly.
    Is(Value),
    /// `{"ok": body}` whose body holds the value at the JSON pointer.
    At(&'static str, Value),
    /// `{"ok": …}`, whatever it holds: a step that sets the stage.
    Done,
    /// `{"error": {"code": code, "message": …}}`.
    Code(&'static str),
}
use Want::{At, Code, Done, Is};

/// A request and the reply it must get.
type Step = (Request, Want);

struct Harness {
    client: async_nats::Client,
    engine: Engine,
    clock: Arc<ManualClock>,
    service: Option<ServiceHandle>,
    server: TestServer,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let server = TestServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = Engine::open(Config::new(dir.path()).with_clock(clock.clone())).unwrap();
    let service_client = async_nats::connect(server.url()).await.unwrap();
    let service = serve(service_client, engine.clone()).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    // No waiting: once `serve` returns, the server routes requests to the service.
    Harness {
        client,
        engine,
        clock,
        service: Some(service),
        server,
        _dir: dir,
    }
}

impl Harness {
    async fn raw(&self, subject: String, payload: Vec<u8>) -> Value {
        let request = self.client.request(subject.clone(), payload.into());
        let message = tokio::time::timeout(WAIT, request)
            .await
            .unwrap_or_else(|_| panic!("{subject}: no reply within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        serde_json::from_slice(&message.payload)
            .unwrap_or_else(|e| panic!("{subject}: the reply is not JSON: {e}"))
    }

    async fn send(&self, to: To, body: Value) -> Value {
        self.raw(to.subject(), body.to_string().into_bytes()).await
    }

    /// The body of the `{"ok": body}` reply to a request.
    async fn ok(&self, (to, body): Request) -> Value {
        ok(&format!("{to:?} {body}"), self.send(to, body).await)
    }

    /// Sends each request in order and checks its reply.
    async fn check(&self, script: impl IntoIterator<Item = Step>) {
        for (index, ((to, body), want)) in script.into_iter().enumerate() {
            let what = format!("step {index}: {to:?} {body}");
            let reply = self.send(to, body).await;
            match want {
                Is(expected) => assert_eq!(ok(&what, reply), expected, "{what}"),
                At(pointer, expected) => {
                    let got = ok(&what, reply);
                    assert_eq!(got.pointer(pointer), Some(&expected), "{what}: {got}");
                }
                Done => drop(ok(&what, reply)),
                Code(expected) => assert_eq!(code(&what, reply), expected, "{what}"),
            }
        }
    }

    async fn stop(mut self) {
        if let Some(service) = self.service.take() {
            service.stop().await.unwrap();
        }
        self.engine.shutdown().await;
    }
}

/// The body of an `{"ok": body}` reply; anything else fails the test.
fn ok(what: &str, reply: Value) -> Value {
    match reply {
        Value::Object(mut object) if object.len() == 1 && object.contains_key("ok") => {
            object.remove("ok").unwrap()
        }
        other => panic!("{what}: expected ok, got {other}"),
    }
}

/// The code of an `{"error": {"code", "message"}}` reply; anything else fails the test.
fn code(what: &str, reply: Value) -> String {
    let error = reply
        .as_object()
        .filter(|object| object.len() == 1)
        .and_then(|object| object.get("error"))
        .unwrap_or_else(|| panic!("{what}: expected an error, got {reply}"));
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty(),
        "{what}: an error has a message: {reply}"
    );
    assert_eq!(error.as_object().unwrap().len(), 2, "{what}: {reply}");
    error["code"].as_str().unwrap().to_owned()
}

fn invitation(n: u64, kind: &str, user: &str, status: &str, created: u64, updated: u64) -> Value {
    json!({
        "invitation_id": format!("stage.{n}"),
        "room_id": "stage",
        "kind": kind,
        "host": "alice",
        "user_id": user,
        "status": status,
        "created_ms": created,
        "updated_ms": updated,
        "expires_ms": created + TTL_MS,
        "seat": if status == "approved" { json!(seat_number(user)) } else { Value::Null },
    })
}

/// The seat each co-host of the script takes: the lowest free one when they accept.
fn seat_number(user: &str) -> u8 {
    match user {
        "bob" => 1,
        "dave" => 2,
        other => panic!("{other} takes no seat in these scripts"),
    }
}

fn room(status: &str, cohosts: Value, version: u64) -> Value {
    json!({
        "room_id": "stage",
        "host": "alice",
        "title": "Friday jam",
        "status": status,
        "max_cohosts": 2,
        "cohosts": cohosts,
        "version": version,
        "moderators": [],
        "locked_seats": [],
        "requests_open": true,
    })
}

fn seat(user: &str, n: u64, since: u64, online: bool) -> Value {
    json!({
        "user_id": user,
        "invitation_id": format!("stage.{n}"),
        "since_ms": since,
        "online": online,
        "seat": seat_number(user),
        "audio": true,
        "video": true,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Requests: one helper per command of the contract, the actor `SYSTEM` for `null`
// ---------------------------------------------------------------------------------------------------------

/// Where a request goes, and its JSON body.
type Request = (To, Value);

const SYSTEM: Value = Value::Null;

fn cmd(name: &'static str, body: Value) -> Request {
    (Cmd(name), body)
}

fn query(name: &'static str, body: Value) -> Request {
    (Query(name), body)
}

/// One request helper per command, named after it, whose arguments after the actor are the body's fields:
/// `invite(actor, room_id, user_id)` sends `{"actor": actor, "room_id": room_id, "user_id": user_id}` to
/// `invite`.
macro_rules! commands {
    ($($helper:ident => $name:literal ($($field:ident),*);)*) => {$(
        fn $helper(actor: impl Into<Value>, $($field: &str),*) -> Request {
            let mut body = json!({"actor": actor.into()});
            $(body[stringify!($field)] = json!($field);)*
            cmd($name, body)
        }
    )*};
}

commands! {
    create_room => "create_room" (room_id);
    go_live => "go_live" (room_id);
    stop_room => "stop_room" (room_id);
    request_to_join => "request_to_join" (room_id);
    leave_stage => "leave_stage" (room_id);
    invite => "invite" (room_id, user_id);
    remove_cohost => "remove_cohost" (room_id, user_id);
    accept => "accept_invitation" (invitation_id);
    reject => "reject_invitation" (invitation_id);
    cancel => "cancel_invitation" (invitation_id);
    expire => "expire" (invitation_id);
}

fn presence(actor: impl Into<Value>, room: &str, user: &str, online: bool) -> Request {
    let body = json!({"actor": actor.into(), "room_id": room, "user_id": user, "online": online});
    cmd("presence", body)
}

/// The `room` query for `room`.
fn get_room(room: &str) -> Request {
    query("room", json!({"room_id": room}))
}

/// alice creates room `stage`, "Friday jam" for two co-hosts.
fn create_friday_jam() -> Request {
    let body =
        json!({"actor": "alice", "room_id": "stage", "title": "Friday jam", "max_cohosts": 2});
    cmd("create_room", body)
}

/// alice's room `stage` from `create_friday_jam`, live, with bob invited as `stage.1`.
fn live_stage_inviting_bob() -> [Step; 3] {
    [
        (create_friday_jam(), Done),
        (go_live("alice", "stage"), Done),
        (invite("alice", "stage", "bob"), Done),
    ]
}

/// The seed flow of room `stage`, every step over the service, each reply checked exactly. 14 events.
async fn seed_flow(h: &Harness) {
    let (t0, t1, t2) = (START_MS, START_MS + 1_000, START_MS + 2_000);
    h.check([
        (create_friday_jam(), Is(room("idle", json!([]), 1))),
        (go_live("alice", "stage"), Is(room("live", json!([]), 2))),
    ])
    .await;
    assert_eq!(h.clock.now_ms(), t0);

    h.clock.advance(1_000);
    let bob = invitation(1, "invite", "bob", "pending", t1, t1);
    h.check([(invite("alice", "stage", "bob"), Is(bob))]).await;
    h.clock.advance(1_000);
    let approved = |invitation| Is(json!({"invitation": invitation, "broadcaster": null}));
    let bob = invitation(1, "invite", "bob", "approved", t1, t2);
    let carol = |n, status| Is(invitation(n, "invite", "carol", status, t2, t2));
    let dave = |status| invitation(4, "request", "dave", status, t2, t2);
    let both = json!([seat("bob", 1, t2, true), seat("dave", 4, t2, false)]);
    let bob_only = json!([seat("bob", 1, t2, true)]);
    h.check([
        (accept("bob", "stage.1"), approved(bob)),
        (invite("alice", "stage", "carol"), carol(2, "pending")),
        (reject("carol", "stage.2"), carol(2, "rejected")),
        (invite("alice", "stage", "carol"), carol(3, "pending")),
        (cancel("alice", "stage.3"), carol(3, "cancelled")),
        (request_to_join("dave", "stage"), Is(dave("pending"))),
        (accept("alice", "stage.4"), approved(dave("approved"))),
        (
            presence(SYSTEM, "stage", "bob", true),
            Is(room("live", both, 11)),
        ),
        (
            remove_cohost("alice", "stage", "dave"),
            Is(room("live", bob_only, 12)),
        ),
        (leave_stage("bob", "stage"), Is(room("live", json!([]), 13))),
        (
            stop_room("alice", "stage"),
            Is(room("ended", json!([]), 14)),
        ),
    ])
    .await;
}

#[tokio::test]
async fn the_seed_flow_runs_over_the_service() {
    let h = start().await;
    seed_flow(&h).await;
    h.check([(get_room("stage"), Is(room("ended", json!([]), 14)))])
        .await;
    h.stop().await;
}

#[tokio::test]
async fn the_system_acts_with_a_null_actor() {
    let h = start().await;
    let denied = || Code("permission_denied");
    h.check(live_stage_inviting_bob()).await;
    h.check([
        // Not due yet.
        (expire(SYSTEM, "stage.1"), Code("failed_precondition")),
        (expire("alice", "stage.1"), denied()),
        (presence("alice", "stage", "alice", true), denied()),
        // These need a user.
        (create_room(SYSTEM, "other"), INVALID),
        (go_live(SYSTEM, "stage"), INVALID),
        (invite(SYSTEM, "stage", "carol"), INVALID),
        (leave_stage(SYSTEM, "stage"), INVALID),
    ])
    .await;

    // The engine's own timer expires an invitation once the clock passes it, before any command decided at
    // that time: an explicit expire then finds it expired already, and the list shows the timer's work.
    let created = h.clock.now_ms();
    h.check([(invite("alice", "stage", "guest2"), Done)]).await;
    h.clock.advance(TTL_MS);
    let now = created + TTL_MS;
    let expired = |n, user| invitation(n, "invite", user, "expired", created, now);
    let erin = invitation(3, "invite", "erin", "pending", now, now);
    let invitations = |status| {
        query(
            "room_invitations",
            json!({"room_id": "stage", "status": status}),
        )
    };
    h.check([
        // The timer expired it first.
        (expire(SYSTEM, "stage.2"), Code("failed_precondition")),
        (
            invitations("expired"),
            At("/items", json!([expired(1, "bob"), expired(2, "guest2")])),
        ),
        (invite("alice", "stage", "erin"), Done),
        (invitations("pending"), At("/items", json!([erin]))),
        (accept("erin", "stage.3"), Done),
        (
            presence(SYSTEM, "stage", "erin", true),
            At("/cohosts/0/online", json!(true)),
        ),
    ])
    .await;
    let before = h.ok(get_room("stage")).await["version"].as_u64().unwrap();
    h.check([
        (
            presence(SYSTEM, "stage", "alice", true),
            At("/version", json!(before + 1)),
        ),
        (
            remove_cohost(SYSTEM, "stage", "erin"),
            At("/cohosts", json!([])),
        ),
        (stop_room(SYSTEM, "stage"), At("/status", json!("ended"))),
    ])
    .await;
    let last = h
        .engine
        .read_events(h.engine.last_seq(), 1)
        .unwrap()
        .remove(0);
    assert_eq!(last.actor, None, "the system stopped the room");
    h.stop().await;
}

#[tokio::test]
async fn a_service_names_itself_and_does_only_what_a_service_may() {
    let h = start().await;
    h.check(live_stage_inviting_bob()).await;
    h.check([(accept("bob", "stage.1"), Done)]).await;
    let as_service = |name: &'static str, body: Value| {
        let mut body = body;
        body["actor"] = Value::Null;
        body["service"] = json!("moderation-bot");
        cmd(name, body)
    };
    h.check([
        (
            as_service("invite", json!({"room_id": "stage", "user_id": "carol"})),
            INVALID,
        ),
        // The system's disconnect, as the contract lists it: bob is within the grace.
        (
            cmd(
                "disconnect",
                json!({"actor": null, "room_id": "stage", "user_id": "bob"}),
            ),
            Code("failed_precondition"),
        ),
        (
            as_service("expire", json!({"invitation_id": "stage.1"})),
            INVALID,
        ),
        (
            cmd(
                "stop_room",
                json!({"actor": "alice", "service": "moderation-bot", "room_id": "stage"}),
            ),
            INVALID,
        ),
        (
            cmd(
                "stop_room",
                json!({"actor": null, "service": "bad id", "room_id": "stage"}),
            ),
            INVALID,
        ),
        (
            as_service(
                "remove_cohost",
                json!({"room_id": "stage", "user_id": "bob"}),
            ),
            At("/cohosts", json!([])),
        ),
        (
            as_service("stop_room", json!({"room_id": "stage"})),
            At("/status", json!("ended")),
        ),
    ])
    .await;
    let events = h.engine.read_events(h.engine.last_seq() - 1, 2).unwrap();
    for event in &events {
        assert_eq!(event.actor, None);
        assert_eq!(
            event.service.as_ref().map(|s| s.as_str()),
            Some("moderation-bot")
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn rule_errors_carry_the_contract_codes() {
    let h = start().await;
    let at_version = |v| {
        cmd(
            "go_live",
            json!({"actor": "alice", "room_id": "stage", "expected_version": v}),
        )
    };
    let keyed = |user| {
        let body =
            json!({"actor": "alice", "room_id": "stage", "user_id": user, "command_id": "k-1"});
        cmd("invite", body)
    };
    let bob = invitation(1, "invite", "bob", "pending", START_MS, START_MS);
    let small = json!({"actor": "erin", "room_id": "small", "max_cohosts": 1});
    h.check([
        (create_room("alice", "stage"), Done),
        (create_room("alice", "stage"), Code("already_exists")),
        (go_live("bob", "stage"), Code("permission_denied")),
        (go_live("alice", "nowhere"), Code("not_found")),
        (accept("bob", "stage.9"), Code("not_found")),
        (at_version(5), Code("conflict")),
        (at_version(1), At("/version", json!(2))),
        (go_live("alice", "stage"), Code("failed_precondition")),
        (invite("alice", "stage", "alice"), INVALID),
        (keyed("bob"), Is(bob.clone())),
        // A retry gets the first reply, and appends nothing.
        (keyed("bob"), Is(bob)),
        (get_room("stage"), At("/version", json!(3))),
        (keyed("carol"), Code("conflict")),
        (invite("alice", "stage", "bob"), Code("already_exists")),
        // A room with one seat, taken by bob.
        (cmd("create_room", small), Done),
        (go_live("erin", "small"), Done),
        (invite("erin", "small", "bob"), Done),
        (accept("bob", "small.1"), Done),
        (invite("erin", "small", "carol"), Code("resource_exhausted")),
        // Not the responder: bob was invited, so it is his to answer.
        (accept("alice", "stage.1"), Code("permission_denied")),
    ])
    .await;
    h.stop().await;
}

fn padded(json: &str, len: usize) -> Vec<u8> {
    let mut bytes = json.as_bytes().to_vec();
    assert!(bytes.len() <= len);
    bytes.resize(len, b' ');
    bytes
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_never_hangs() {
    let h = start().await;
    let long_id = "k".repeat(65);
    let bad_title = "t".repeat(201);
    let create_cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        br#"{"actor":"#.to_vec(),
        b"[1,2]".to_vec(),
        br#""alice""#.to_vec(),
        b"null".to_vec(),
        b"42".to_vec(),
        b"\xff\xfe".to_vec(),
        br#"{"actor":"alice","room_id":"r1"} x"#.to_vec(),
        br#"{"actor":"alice","actor":"bob","room_id":"r1"}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","colour":"red"}"#.to_vec(),
        br#"{"actor":"alice","room_id":"bad room"}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1.1"}"#.to_vec(),
        br#"{"actor":"alice"}"#.to_vec(),
        br#"{"actor":"bad actor","room_id":"r1"}"#.to_vec(),
        br#"{"actor":"","room_id":"r1"}"#.to_vec(),
        br#"{"actor":7,"room_id":"r1"}"#.to_vec(),
        br#"{"room_id":"r1"}"#.to_vec(),
        br#"{"actor":null,"room_id":"r1"}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","command_id":"has space"}"#.to_vec(),
        format!(r#"{{"actor":"alice","room_id":"r1","command_id":"{long_id}"}}"#).into_bytes(),
        br#"{"actor":"alice","room_id":"r1","command_id":5}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","expected_version":-1}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","expected_version":"0"}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","expected_version":1.5}"#.to_vec(),
        format!(r#"{{"actor":"alice","room_id":"r1","title":"{bad_title}"}}"#).into_bytes(),
        br#"{"actor":"alice","room_id":"r1","max_cohosts":0}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","max_cohosts":17}"#.to_vec(),
        br#"{"actor":"alice","room_id":"r1","max_cohosts":300}"#.to_vec(),
        format!(
            r#"{{"actor":"alice","room_id":"r1","title":{}"#,
            "[".repeat(50_000)
        )
        .into_bytes(),
        padded(r#"{"actor":"alice","room_id":"r1"}"#, BODY_BYTES_MAX + 1),
    ];
    for payload in create_cases {
        let reply = h
            .raw(subject::command("create_room"), payload.clone())
            .await;
        let shown = String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
        assert_eq!(code(&shown, reply), "invalid_argument", "{shown}");
    }
    let command_cases = [
        ("invite", json!({"actor": "alice", "room_id": "r1"})),
        (
            "invite",
            json!({"actor": "alice", "room_id": "r1", "user_id": ["bob"]}),
        ),
        (
            "accept_invitation",
            json!({"actor": "bob", "invitation_id": "r1.0"}),
        ),
        (
            "accept_invitation",
            json!({"actor": "bob", "invitation_id": "r1"}),
        ),
        (
            "presence",
            json!({"actor": null, "room_id": "r1", "user_id": "bob"}),
        ),
        (
            "presence",
            json!({"actor": null, "room_id": "r1", "user_id": "bob", "online": "yes"}),
        ),
    ];
    h.check(command_cases.map(|(name, body)| (cmd(name, body), INVALID)))
        .await;
    let query_cases = [
        ("room", json!({})),
        ("room", json!({"room_id": "r1", "extra": 1})),
        ("room", json!({"room_id": "r1", "actor": 5})),
        ("room", json!({"room_id": "r1", "actor": "bad actor"})),
        ("room", json!({"room_id": "no way"})),
        ("room_invitations", json!({"room_id": "r1", "limit": 0})),
        ("room_invitations", json!({"room_id": "r1", "limit": 101})),
        (
            "room_invitations",
            json!({"room_id": "r1", "status": "bogus"}),
        ),
        ("room_invitations", json!({"room_id": "r1", "kind": "poke"})),
        (
            "room_invitations",
            json!({"room_id": "r1", "cursor": "not-a-cursor"}),
        ),
        ("user_invitations", json!({"user_id": "bad id"})),
        ("user_invitations", json!({"user_id": "bob", "cursor": "x"})),
        ("broadcaster_entitlement", json!({"room_id": "r1"})),
        ("read_events", json!({})),
        ("read_events", json!({"from_seq": -1})),
        ("read_events", json!({"from_seq": 1, "limit": 0})),
        ("read_events", json!({"from_seq": 1, "limit": 1001})),
        ("read_events", json!({"from_seq": 1, "room_id": "r1"})),
        ("read_room", json!({"room_id": "r1"})),
        (
            "read_room",
            json!({"room_id": "r1", "from_version": 1, "limit": 5000}),
        ),
    ];
    h.check(query_cases.map(|(name, body)| (query(name, body), INVALID)))
        .await;
    for name in ["room", "read_events"] {
        for payload in [padded("{}", BODY_BYTES_MAX + 1), vec![]] {
            let reply = h.raw(subject::query(name), payload).await;
            assert_eq!(code(name, reply), "invalid_argument");
        }
    }

    // Nothing ran; a body of exactly the limit runs, and the service still answers.
    h.check([(get_room("r1"), Code("not_found"))]).await;
    let exactly_the_limit = padded(r#"{"actor":"alice","room_id":"r1"}"#, BODY_BYTES_MAX);
    let reply = h
        .raw(subject::command("create_room"), exactly_the_limit)
        .await;
    assert_eq!(ok("64 KiB", reply)["room_id"], "r1");
    h.check([(get_room("r1"), At("/host", json!("alice")))])
        .await;
    h.stop().await;
}

#[tokio::test]
async fn queries_read_rooms_invitations_and_entitlements() {
    let h = start().await;
    let t1 = START_MS + 1_000;
    h.check(live_stage_inviting_bob()).await;
    h.check([(accept("bob", "stage.1"), Done)]).await;
    h.clock.advance(1_000);
    h.check([
        (invite("alice", "stage", "carol"), Done),
        (request_to_join("dave", "stage"), Done),
    ])
    .await;
    h.clock.advance(1_000);
    h.check([
        (create_room("erin", "other"), Done),
        (invite("erin", "other", "carol"), Done),
    ])
    .await;

    let bob = invitation(1, "invite", "bob", "approved", START_MS, START_MS);
    let carol = invitation(2, "invite", "carol", "pending", t1, t1);
    let dave = invitation(3, "request", "dave", "pending", t1, t1);
    let mut other = carol.clone();
    other["invitation_id"] = json!("other.1");
    other["room_id"] = json!("other");
    other["host"] = json!("erin");
    for (key, at) in [
        ("created_ms", t1 + 1_000),
        ("updated_ms", t1 + 1_000),
        ("expires_ms", t1 + 1_000 + TTL_MS),
    ] {
        other[key] = json!(at);
    }
    let page = |items: Value| Is(json!({"items": items, "next_cursor": null}));
    let of_room = |body| query("room_invitations", body);
    let of_user = |body| query("user_invitations", body);
    let room_now = room("live", json!([seat("bob", 1, START_MS, false)]), 6);
    let pending = json!({"room_id": "stage", "status": "pending"});
    let requests = json!({"room_id": "stage", "kind": "request", "status": "pending"});
    h.check([
        // An actor is accepted and ignored.
        (
            query("room", json!({"actor": "zed", "room_id": "stage"})),
            Is(room_now),
        ),
        (
            of_room(json!({"room_id": "stage"})),
            page(json!([bob, carol, dave])),
        ),
        (of_room(pending), At("/items", json!([carol, dave]))),
        (of_room(requests), At("/items", json!([dave]))),
        (of_room(json!({"room_id": "nowhere"})), Code("not_found")),
        (get_room("nowhere"), Code("not_found")),
        (
            of_user(json!({"user_id": "carol"})),
            page(json!([carol, other])),
        ),
        (
            of_user(json!({"user_id": "dave", "kind": "invite"})),
            page(json!([])),
        ),
        (of_user(json!({"user_id": "nobody"})), page(json!([]))),
    ])
    .await;

    // Pages: the first holds `limit` items and a cursor to the rest.
    let first = h.ok(of_room(json!({"room_id": "stage", "limit": 2}))).await;
    assert_eq!(first["items"], json!([bob, carol]));
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more to come")
        .to_owned();
    let one = h.ok(of_user(json!({"user_id": "carol", "limit": 1}))).await;
    assert_eq!(one["items"], json!([carol]));
    let rest = json!({"room_id": "stage", "limit": 2, "cursor": cursor});
    let next = json!({"user_id": "carol", "limit": 1, "cursor": one["next_cursor"]});
    h.check([
        (of_room(rest), page(json!([dave]))),
        (of_user(next), page(json!([other]))),
    ])
    .await;

    let entitlement = |user: &str, room: &str| {
        query(
            "broadcaster_entitlement",
            json!({"room_id": room, "user_id": user}),
        )
    };
    h.check([
        (
            entitlement("alice", "stage"),
            Is(json!({"role": "host", "invitation_id": null, "audio": true, "video": true})),
        ),
        (
            entitlement("bob", "stage"),
            Is(json!({"role": "cohost", "invitation_id": "stage.1", "audio": true, "video": true})),
        ),
        (entitlement("carol", "stage"), Code("failed_precondition")),
        (entitlement("zed", "stage"), Code("permission_denied")),
        (entitlement("alice", "nowhere"), Code("not_found")),
        (entitlement("erin", "other"), Code("failed_precondition")),
    ])
    .await;
    h.stop().await;
}

#[tokio::test]
async fn read_events_returns_contract_envelopes_in_seq_order() {
    let h = start().await;
    let other = json!({"actor": "erin", "room_id": "other", "command_id": "first"});
    h.check([(cmd("create_room", other), Done)]).await;
    seed_flow(&h).await;
    assert_eq!(h.engine.last_seq(), 15);

    let all = h.ok(query("read_events", json!({"from_seq": 1}))).await;
    assert_eq!(all["last_seq"], 15);
    let events = all["events"].as_array().unwrap();
    let stored: Vec<Value> = h
        .engine
        .read_events(1, 100)
        .unwrap()
        .iter()
        .map(|envelope| serde_json::to_value(envelope).unwrap())
        .collect();
    assert_eq!(events, &stored, "the contract's JSON envelopes");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "room_created",
            "room_created",
            "room_live",
            "invitation_created",
            "invitation_approved",
            "invitation_created",
            "invitation_rejected",
            "invitation_created",
            "invitation_cancelled",
            "invitation_created",
            "invitation_approved",
            "presence_changed",
            "cohost_removed",
            "cohost_left",
            "room_stopped",
        ]
    );
    assert_eq!(events[0]["event_id"], "other:1");
    assert_eq!(events[0]["command_id"], "first");
    assert_eq!(events[0]["actor"], "erin");
    assert_eq!(events[4]["event_id"], "stage:4");
    assert_eq!(events[4]["at_ms"], START_MS + 2_000);
    assert_eq!(events[4]["invitation"]["status"], "approved");
    assert_eq!(events[11]["actor"], Value::Null, "presence is the system's");
    assert_eq!(events[11]["user_id"], "bob");
    assert_eq!(events[11]["online"], true);

    let read_events = |body| query("read_events", body);
    let read_room = |body| query("read_room", body);
    let log = |events: &[Value]| Is(json!({"events": events, "last_seq": 15}));
    let room_log = |events: &[Value]| Is(json!({"events": events, "version": 14}));
    h.check([
        (
            read_events(json!({"from_seq": 5, "limit": 3})),
            log(&events[4..7]),
        ),
        (
            read_events(json!({"from_seq": 100, "actor": "bob"})),
            log(&[]),
        ),
        (
            read_events(json!({"from_seq": 0, "limit": 1})),
            At("/events", json!([events[0]])),
        ),
        (
            read_room(json!({"room_id": "stage", "from_version": 12})),
            room_log(&events[12..15]),
        ),
        (
            read_room(json!({"room_id": "stage", "from_version": 1, "limit": 2})),
            room_log(&events[1..3]),
        ),
        (
            read_room(json!({"room_id": "nowhere", "from_version": 1})),
            Code("not_found"),
        ),
    ])
    .await;
    h.stop().await;
}

#[tokio::test]
async fn the_service_is_discoverable_in_queue_group_cohost() {
    let h = start().await;
    let id = h.service.as_ref().unwrap().id().to_owned();
    let ping = h.raw("$SRV.PING.cohost".into(), vec![]).await;
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(ping["name"], "cohost");
    assert_eq!(ping["id"], id.as_str());
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));

    let info = h.raw(format!("$SRV.INFO.cohost.{id}"), vec![]).await;
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!(info["name"], "cohost");
    assert!(!info["description"].as_str().unwrap().is_empty());
    let endpoints: BTreeSet<(String, String, String)> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |key: &str| e[key].as_str().unwrap().to_owned();
            (field("name"), field("subject"), field("queue_group"))
        })
        .collect();
    let commands = cohost_proto::Command::NAMES.map(|name| (name, subject::command(name)));
    let queries = cohost_nats::service::QUERY_NAMES.map(|name| (name, subject::query(name)));
    let want: BTreeSet<(String, String, String)> = commands
        .into_iter()
        .chain(queries)
        .map(|(name, subject)| (name.to_owned(), subject, "cohost".to_owned()))
        .collect();
    assert_eq!(endpoints, want);
    assert_eq!(want.len(), 29);
    for (name, subject) in [
        ("read_events", "cohost.v1.query.read_events"),
        ("invite", "cohost.v1.cmd.invite"),
        ("add_moderator", "cohost.v1.cmd.add_moderator"),
        ("remove_moderator", "cohost.v1.cmd.remove_moderator"),
    ] {
        let endpoint = (name.to_owned(), subject.to_owned(), "cohost".to_owned());
        assert!(want.contains(&endpoint), "{endpoint:?}");
    }
    h.stop().await;
}

#[tokio::test]
async fn requests_run_concurrently() {
    let h = start().await;
    let room = |n| format!("room-{n}");
    // A host per room: one host's open rooms are limited (a quota across rooms).
    let creates = (0..300).map(|n| h.ok(create_room(format!("host-{n}"), &room(n))));
    let queries = (0..300).map(|n| h.send(Query("room"), json!({"room_id": room(n)})));
    let (created, read) = futures::join!(
        futures::future::join_all(creates),
        futures::future::join_all(queries)
    );
    for (n, created) in created.iter().enumerate() {
        assert_eq!(created["room_id"], room(n));
        assert_eq!(created["version"], 1);
    }
    for reply in read {
        assert!(reply.get("ok").is_some() || code("room", reply) == "not_found");
    }
    assert_eq!(h.engine.last_seq(), 300);
    h.stop().await;
}

#[tokio::test]
async fn a_message_without_a_reply_subject_is_not_executed() {
    let h = start().await;
    let (_, create) = create_room("alice", "silent");
    h.client
        .publish(subject::command("create_room"), create.to_string().into())
        .await
        .unwrap();
    // A barrier on the same endpoint: the service takes one endpoint's messages in order, so once this one is
    // answered, the silent one was seen and dropped.
    h.check([
        (create_room("alice", "after-silent"), Done),
        (get_room("silent"), Code("not_found")),
    ])
    .await;
    assert_eq!(h.engine.last_seq(), 1, "only the barrier appended");
    h.stop().await;
}

/// Whether the server says nobody serves `subject`. A request sent while a dropped service tears down may be
/// lost (no reply at all); that counts as not yet.
async fn no_responders(client: &async_nats::Client, subject: String) -> bool {
    let request = client.request(subject, br#"{"room_id":"stage"}"#.to_vec().into());
    match tokio::time::timeout(Duration::from_millis(500), request).await {
        Ok(Err(e)) => e.kind() == RequestErrorKind::NoResponders,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test]
async fn instances_share_the_queue_group_and_stop_cleanly() {
    let mut h = start().await;
    let second_client = async_nats::connect(h.server.url()).await.unwrap();
    let second = serve(second_client, h.engine.clone()).await.unwrap();
    h.check([(create_room("alice", "stage"), Done)]).await;

    let first = h.service.take().unwrap();
    let began = Instant::now();
    first.stop().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        began.elapsed()
    );
    // The other instance answers.
    h.check((0..20).map(|_| (get_room("stage"), At("/host", json!("alice")))))
        .await;
    let ping = h.raw("$SRV.PING.cohost".into(), vec![]).await;
    assert_eq!(ping["id"], second.id(), "only the second instance is left");

    drop(second);
    let deadline = Instant::now() + WAIT;
    while !no_responders(&h.client, subject::query("room")).await {
        assert!(
            Instant::now() < deadline,
            "dropping the handle stops the service"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(no_responders(&h.client, subject::command("go_live")).await);
    assert!(no_responders(&h.client, "$SRV.PING.cohost".into()).await);
    h.stop().await;
}
