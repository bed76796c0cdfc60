//! The `cohost` NATS service against a private nats-server, driven by a plain async-nats client: every command
//! of the seed flow with its exact reply, every error code, malformed and oversized input, the queries
//! including `read_events`, discovery through `$SRV`, concurrency, and stopping.

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

    async fn cmd(&self, name: &str, body: Value) -> Value {
        self.raw(subject::command(name), body.to_string().into_bytes())
            .await
    }

    async fn query(&self, name: &str, body: Value) -> Value {
        self.raw(subject::query(name), body.to_string().into_bytes())
            .await
    }

    async fn ok(&self, name: &str, body: Value) -> Value {
        ok(name, self.cmd(name, body).await)
    }

    async fn code(&self, name: &str, body: Value) -> String {
        code(name, self.cmd(name, body).await)
    }

    async fn query_ok(&self, name: &str, body: Value) -> Value {
        ok(name, self.query(name, body).await)
    }

    async fn query_code(&self, name: &str, body: Value) -> String {
        code(name, self.query(name, body).await)
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
    })
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
    })
}

fn seat(user: &str, n: u64, since: u64, online: bool) -> Value {
    json!({"user_id": user, "invitation_id": format!("stage.{n}"), "since_ms": since, "online": online})
}

/// The seed flow of room `stage`, every step over the service, each reply checked exactly. 14 events.
async fn seed_flow(h: &Harness) {
    let (t0, t1, t2) = (START_MS, START_MS + 1_000, START_MS + 2_000);
    let create =
        json!({"actor": "alice", "room_id": "stage", "title": "Friday jam", "max_cohosts": 2});
    assert_eq!(
        h.ok("create_room", create).await,
        room("idle", json!([]), 1)
    );
    let stage = json!({"actor": "alice", "room_id": "stage"});
    assert_eq!(
        h.ok("go_live", stage.clone()).await,
        room("live", json!([]), 2)
    );
    assert_eq!(h.clock.now_ms(), t0);

    h.clock.advance(1_000);
    let invite_bob = json!({"actor": "alice", "room_id": "stage", "user_id": "bob"});
    let bob_pending = invitation(1, "invite", "bob", "pending", t1, t1);
    assert_eq!(h.ok("invite", invite_bob).await, bob_pending);
    h.clock.advance(1_000);
    let accept = json!({"actor": "bob", "invitation_id": "stage.1"});
    let bob_approved = invitation(1, "invite", "bob", "approved", t1, t2);
    let accepted = json!({"invitation": bob_approved, "broadcaster": null});
    assert_eq!(h.ok("accept_invitation", accept).await, accepted);

    let invite_carol = json!({"actor": "alice", "room_id": "stage", "user_id": "carol"});
    let carol_2 = invitation(2, "invite", "carol", "pending", t2, t2);
    assert_eq!(h.ok("invite", invite_carol.clone()).await, carol_2);
    let reject = json!({"actor": "carol", "invitation_id": "stage.2"});
    let rejected = invitation(2, "invite", "carol", "rejected", t2, t2);
    assert_eq!(h.ok("reject_invitation", reject).await, rejected);
    let carol_3 = invitation(3, "invite", "carol", "pending", t2, t2);
    assert_eq!(h.ok("invite", invite_carol).await, carol_3);
    let cancel = json!({"actor": "alice", "invitation_id": "stage.3"});
    let cancelled = invitation(3, "invite", "carol", "cancelled", t2, t2);
    assert_eq!(h.ok("cancel_invitation", cancel).await, cancelled);

    let raise_hand = json!({"actor": "dave", "room_id": "stage"});
    let dave_4 = invitation(4, "request", "dave", "pending", t2, t2);
    assert_eq!(h.ok("request_to_join", raise_hand).await, dave_4);
    let approve = json!({"actor": "alice", "invitation_id": "stage.4"});
    let dave_approved = invitation(4, "request", "dave", "approved", t2, t2);
    let approved = json!({"invitation": dave_approved, "broadcaster": null});
    assert_eq!(h.ok("accept_invitation", approve).await, approved);

    let online = json!({"actor": null, "room_id": "stage", "user_id": "bob", "online": true});
    let both = json!([seat("bob", 1, t2, true), seat("dave", 4, t2, false)]);
    assert_eq!(h.ok("presence", online).await, room("live", both, 11));
    let remove = json!({"actor": "alice", "room_id": "stage", "user_id": "dave"});
    let bob_only = json!([seat("bob", 1, t2, true)]);
    assert_eq!(
        h.ok("remove_cohost", remove).await,
        room("live", bob_only, 12)
    );
    let leave = json!({"actor": "bob", "room_id": "stage"});
    assert_eq!(
        h.ok("leave_stage", leave).await,
        room("live", json!([]), 13)
    );
    assert_eq!(h.ok("stop_room", stage).await, room("ended", json!([]), 14));
}

#[tokio::test]
async fn the_seed_flow_runs_over_the_service() {
    let h = start().await;
    seed_flow(&h).await;
    let stage = json!({"room_id": "stage"});
    assert_eq!(
        h.query_ok("room", stage).await,
        room("ended", json!([]), 14)
    );
    h.stop().await;
}

#[tokio::test]
async fn the_system_acts_with_a_null_actor() {
    let h = start().await;
    h.ok(
        "create_room",
        json!({"actor": "alice", "room_id": "stage", "title": "Friday jam", "max_cohosts": 2}),
    )
    .await;
    h.ok("go_live", json!({"actor": "alice", "room_id": "stage"}))
        .await;
    h.ok(
        "invite",
        json!({"actor": "alice", "room_id": "stage", "user_id": "bob"}),
    )
    .await;
    let expire = json!({"actor": null, "invitation_id": "stage.1"});
    assert_eq!(
        h.code("expire", expire).await,
        "failed_precondition",
        "not due yet"
    );
    let by_user = json!({"actor": "alice", "invitation_id": "stage.1"});
    assert_eq!(h.code("expire", by_user).await, "permission_denied");
    let presence_by_user =
        json!({"actor": "alice", "room_id": "stage", "user_id": "alice", "online": true});
    assert_eq!(
        h.code("presence", presence_by_user).await,
        "permission_denied"
    );
    for (name, body) in [
        ("create_room", json!({"actor": null, "room_id": "other"})),
        ("go_live", json!({"actor": null, "room_id": "stage"})),
        (
            "invite",
            json!({"actor": null, "room_id": "stage", "user_id": "carol"}),
        ),
        ("leave_stage", json!({"actor": null, "room_id": "stage"})),
    ] {
        assert_eq!(
            h.code(name, body).await,
            "invalid_argument",
            "{name} needs a user"
        );
    }

    // The engine's own timer expires an invitation once the clock passes it, before any command decided at
    // that time: an explicit expire then finds it expired already, and the list shows the timer's work.
    let created = h.clock.now_ms();
    let invite = json!({"actor": "alice", "room_id": "stage", "user_id": "guest2"});
    h.ok("invite", invite).await;
    h.clock.advance(TTL_MS);
    let expire = json!({"actor": null, "invitation_id": "stage.2"});
    assert_eq!(
        h.code("expire", expire).await,
        "failed_precondition",
        "the timer expired it first"
    );
    let page = h
        .query_ok(
            "room_invitations",
            json!({"room_id": "stage", "status": "expired"}),
        )
        .await;
    let expired = |n, user| invitation(n, "invite", user, "expired", created, created + TTL_MS);
    assert_eq!(
        page["items"],
        json!([expired(1, "bob"), expired(2, "guest2")])
    );

    h.ok(
        "invite",
        json!({"actor": "alice", "room_id": "stage", "user_id": "erin"}),
    )
    .await;
    let page = h
        .query_ok(
            "room_invitations",
            json!({"room_id": "stage", "status": "pending"}),
        )
        .await;
    let erin = page["items"].as_array().unwrap().last().unwrap()["invitation_id"].clone();
    h.ok(
        "accept_invitation",
        json!({"actor": "erin", "invitation_id": erin}),
    )
    .await;
    let online = json!({"actor": null, "room_id": "stage", "user_id": "erin", "online": true});
    assert_eq!(h.ok("presence", online).await["cohosts"][0]["online"], true);
    let host_online =
        json!({"actor": null, "room_id": "stage", "user_id": "alice", "online": true});
    let before = h.query_ok("room", json!({"room_id": "stage"})).await["version"]
        .as_u64()
        .unwrap();
    assert_eq!(h.ok("presence", host_online).await["version"], before + 1);
    let remove = json!({"actor": null, "room_id": "stage", "user_id": "erin"});
    assert_eq!(h.ok("remove_cohost", remove).await["cohosts"], json!([]));
    let stop = json!({"actor": null, "room_id": "stage"});
    assert_eq!(h.ok("stop_room", stop).await["status"], "ended");
    let last = h
        .engine
        .read_events(h.engine.last_seq(), 1)
        .unwrap()
        .remove(0);
    assert_eq!(last.actor, None, "the system stopped the room");
    h.stop().await;
}

#[tokio::test]
async fn rule_errors_carry_the_contract_codes() {
    let h = start().await;
    let create = json!({"actor": "alice", "room_id": "stage"});
    h.ok("create_room", create.clone()).await;
    assert_eq!(h.code("create_room", create).await, "already_exists");
    let by_bob = json!({"actor": "bob", "room_id": "stage"});
    assert_eq!(h.code("go_live", by_bob).await, "permission_denied");
    let nowhere = json!({"actor": "alice", "room_id": "nowhere"});
    assert_eq!(h.code("go_live", nowhere).await, "not_found");
    let unknown = json!({"actor": "bob", "invitation_id": "stage.9"});
    assert_eq!(h.code("accept_invitation", unknown).await, "not_found");
    let stale = json!({"actor": "alice", "room_id": "stage", "expected_version": 5});
    assert_eq!(h.code("go_live", stale).await, "conflict");
    let current = json!({"actor": "alice", "room_id": "stage", "expected_version": 1});
    assert_eq!(h.ok("go_live", current).await["version"], 2);
    let again = json!({"actor": "alice", "room_id": "stage"});
    assert_eq!(h.code("go_live", again).await, "failed_precondition");
    let invite_host = json!({"actor": "alice", "room_id": "stage", "user_id": "alice"});
    assert_eq!(h.code("invite", invite_host).await, "invalid_argument");

    let invite_bob =
        json!({"actor": "alice", "room_id": "stage", "user_id": "bob", "command_id": "k-1"});
    let first = h.ok("invite", invite_bob.clone()).await;
    assert_eq!(
        h.ok("invite", invite_bob).await,
        first,
        "a retry gets the first reply"
    );
    let version = h.query_ok("room", json!({"room_id": "stage"})).await["version"].clone();
    assert_eq!(version, 3, "and appends nothing");
    let reused =
        json!({"actor": "alice", "room_id": "stage", "user_id": "carol", "command_id": "k-1"});
    assert_eq!(h.code("invite", reused).await, "conflict");
    let twice = json!({"actor": "alice", "room_id": "stage", "user_id": "bob"});
    assert_eq!(h.code("invite", twice).await, "already_exists");

    let small = json!({"actor": "erin", "room_id": "small", "max_cohosts": 1});
    h.ok("create_room", small).await;
    h.ok("go_live", json!({"actor": "erin", "room_id": "small"}))
        .await;
    h.ok(
        "invite",
        json!({"actor": "erin", "room_id": "small", "user_id": "bob"}),
    )
    .await;
    h.ok(
        "accept_invitation",
        json!({"actor": "bob", "invitation_id": "small.1"}),
    )
    .await;
    let full = json!({"actor": "erin", "room_id": "small", "user_id": "carol"});
    assert_eq!(h.code("invite", full).await, "resource_exhausted");
    let not_responder = json!({"actor": "alice", "invitation_id": "stage.1"});
    assert_eq!(
        h.code("accept_invitation", not_responder).await,
        "permission_denied"
    );
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
    let long_title = "t".repeat(201);
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
        format!(r#"{{"actor":"alice","room_id":"r1","title":"{long_title}"}}"#).into_bytes(),
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
    for (name, body) in command_cases {
        assert_eq!(
            h.code(name, body.clone()).await,
            "invalid_argument",
            "{name} {body}"
        );
    }
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
    for (name, body) in query_cases {
        assert_eq!(
            h.query_code(name, body.clone()).await,
            "invalid_argument",
            "{name} {body}"
        );
    }
    for name in ["room", "read_events"] {
        let too_big = padded("{}", BODY_BYTES_MAX + 1);
        assert_eq!(
            code(name, h.raw(subject::query(name), too_big).await),
            "invalid_argument"
        );
        assert_eq!(
            code(name, h.raw(subject::query(name), vec![]).await),
            "invalid_argument"
        );
    }

    let r1 = json!({"room_id": "r1"});
    assert_eq!(
        h.query_code("room", r1.clone()).await,
        "not_found",
        "nothing ran"
    );
    let exactly_the_limit = padded(r#"{"actor":"alice","room_id":"r1"}"#, BODY_BYTES_MAX);
    let reply = h
        .raw(subject::command("create_room"), exactly_the_limit)
        .await;
    assert_eq!(ok("64 KiB", reply)["room_id"], "r1");
    assert_eq!(
        h.query_ok("room", r1).await["host"],
        "alice",
        "still answering"
    );
    h.stop().await;
}

#[tokio::test]
async fn queries_read_rooms_invitations_and_entitlements() {
    let h = start().await;
    h.ok(
        "create_room",
        json!({"actor": "alice", "room_id": "stage", "title": "Friday jam", "max_cohosts": 2}),
    )
    .await;
    h.ok("go_live", json!({"actor": "alice", "room_id": "stage"}))
        .await;
    h.ok(
        "invite",
        json!({"actor": "alice", "room_id": "stage", "user_id": "bob"}),
    )
    .await;
    h.ok(
        "accept_invitation",
        json!({"actor": "bob", "invitation_id": "stage.1"}),
    )
    .await;
    h.clock.advance(1_000);
    let t1 = START_MS + 1_000;
    h.ok(
        "invite",
        json!({"actor": "alice", "room_id": "stage", "user_id": "carol"}),
    )
    .await;
    h.ok(
        "request_to_join",
        json!({"actor": "dave", "room_id": "stage"}),
    )
    .await;
    h.clock.advance(1_000);
    h.ok("create_room", json!({"actor": "erin", "room_id": "other"}))
        .await;
    h.ok(
        "invite",
        json!({"actor": "erin", "room_id": "other", "user_id": "carol"}),
    )
    .await;

    let bob = invitation(1, "invite", "bob", "approved", START_MS, START_MS);
    let carol = invitation(2, "invite", "carol", "pending", t1, t1);
    let dave = invitation(3, "request", "dave", "pending", t1, t1);
    let room_now = room("live", json!([seat("bob", 1, START_MS, false)]), 6);
    let with_actor = json!({"actor": "zed", "room_id": "stage"});
    assert_eq!(
        h.query_ok("room", with_actor).await,
        room_now,
        "an actor is accepted and ignored"
    );
    let all = json!({"room_id": "stage"});
    let want = json!({"items": [bob, carol, dave], "next_cursor": null});
    assert_eq!(h.query_ok("room_invitations", all).await, want);
    let first = h
        .query_ok("room_invitations", json!({"room_id": "stage", "limit": 2}))
        .await;
    assert_eq!(first["items"], json!([bob, carol]));
    let cursor = first["next_cursor"]
        .as_str()
        .expect("more to come")
        .to_owned();
    let rest = json!({"room_id": "stage", "limit": 2, "cursor": cursor});
    let want = json!({"items": [dave], "next_cursor": null});
    assert_eq!(h.query_ok("room_invitations", rest).await, want);
    let pending = json!({"room_id": "stage", "status": "pending"});
    assert_eq!(
        h.query_ok("room_invitations", pending).await["items"],
        json!([carol, dave])
    );
    let requests = json!({"room_id": "stage", "kind": "request", "status": "pending"});
    assert_eq!(
        h.query_ok("room_invitations", requests).await["items"],
        json!([dave])
    );
    let nowhere = json!({"room_id": "nowhere"});
    assert_eq!(
        h.query_code("room_invitations", nowhere.clone()).await,
        "not_found"
    );
    assert_eq!(h.query_code("room", nowhere).await, "not_found");

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
    let carols = json!({"user_id": "carol"});
    let want = json!({"items": [carol, other], "next_cursor": null});
    assert_eq!(h.query_ok("user_invitations", carols).await, want);
    let one = h
        .query_ok("user_invitations", json!({"user_id": "carol", "limit": 1}))
        .await;
    assert_eq!(one["items"], json!([carol]));
    let next = json!({"user_id": "carol", "limit": 1, "cursor": one["next_cursor"]});
    assert_eq!(
        h.query_ok("user_invitations", next).await,
        json!({"items": [other], "next_cursor": null})
    );
    let invites = json!({"user_id": "dave", "kind": "invite"});
    assert_eq!(
        h.query_ok("user_invitations", invites).await,
        json!({"items": [], "next_cursor": null})
    );
    let nobody = json!({"user_id": "nobody"});
    assert_eq!(
        h.query_ok("user_invitations", nobody).await,
        json!({"items": [], "next_cursor": null})
    );

    let entitlement = |user: &str, room: &str| json!({"room_id": room, "user_id": user});
    let host = json!({"role": "host", "invitation_id": null});
    assert_eq!(
        h.query_ok("broadcaster_entitlement", entitlement("alice", "stage"))
            .await,
        host
    );
    let cohost = json!({"role": "cohost", "invitation_id": "stage.1"});
    assert_eq!(
        h.query_ok("broadcaster_entitlement", entitlement("bob", "stage"))
            .await,
        cohost
    );
    for (user, room, want) in [
        ("carol", "stage", "failed_precondition"),
        ("zed", "stage", "permission_denied"),
        ("alice", "nowhere", "not_found"),
        ("erin", "other", "failed_precondition"),
    ] {
        let got = h
            .query_code("broadcaster_entitlement", entitlement(user, room))
            .await;
        assert_eq!(got, want, "{user} in {room}");
    }
    h.stop().await;
}

#[tokio::test]
async fn read_events_returns_contract_envelopes_in_seq_order() {
    let h = start().await;
    let other = json!({"actor": "erin", "room_id": "other", "command_id": "first"});
    h.ok("create_room", other).await;
    seed_flow(&h).await;
    assert_eq!(h.engine.last_seq(), 15);

    let all = h.query_ok("read_events", json!({"from_seq": 1})).await;
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

    let middle = h
        .query_ok("read_events", json!({"from_seq": 5, "limit": 3}))
        .await;
    assert_eq!(middle, json!({"events": events[4..7], "last_seq": 15}));
    let past = h
        .query_ok("read_events", json!({"from_seq": 100, "actor": "bob"}))
        .await;
    assert_eq!(past, json!({"events": [], "last_seq": 15}));
    let from_zero = h
        .query_ok("read_events", json!({"from_seq": 0, "limit": 1}))
        .await;
    assert_eq!(from_zero["events"], json!([events[0]]));

    let stage = h
        .query_ok("read_room", json!({"room_id": "stage", "from_version": 12}))
        .await;
    assert_eq!(stage, json!({"events": events[12..15], "version": 14}));
    let head = json!({"room_id": "stage", "from_version": 1, "limit": 2});
    assert_eq!(
        h.query_ok("read_room", head).await,
        json!({"events": events[1..3], "version": 14})
    );
    let nowhere = json!({"room_id": "nowhere", "from_version": 1});
    assert_eq!(h.query_code("read_room", nowhere).await, "not_found");
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
    assert_eq!(want.len(), 18);
    assert!(want.contains(&(
        "read_events".into(),
        "cohost.v1.query.read_events".into(),
        "cohost".into()
    )));
    assert!(want.contains(&(
        "invite".into(),
        "cohost.v1.cmd.invite".into(),
        "cohost".into()
    )));
    h.stop().await;
}

#[tokio::test]
async fn requests_run_concurrently() {
    let h = start().await;
    let creates = (0..300).map(|n| {
        h.ok(
            "create_room",
            json!({"actor": "alice", "room_id": format!("room-{n}")}),
        )
    });
    let queries = (0..300).map(|n| h.query("room", json!({"room_id": format!("room-{n}")})));
    let (created, read) = futures::join!(
        futures::future::join_all(creates),
        futures::future::join_all(queries)
    );
    for (n, room) in created.iter().enumerate() {
        assert_eq!(room["room_id"], format!("room-{n}"));
        assert_eq!(room["version"], 1);
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
    let create = json!({"actor": "alice", "room_id": "silent"}).to_string();
    h.client
        .publish(subject::command("create_room"), create.into_bytes().into())
        .await
        .unwrap();
    // A barrier on the same endpoint: the service takes one endpoint's messages in order, so once this one is
    // answered, the silent one was seen and dropped.
    h.ok(
        "create_room",
        json!({"actor": "alice", "room_id": "after-silent"}),
    )
    .await;
    assert_eq!(
        h.query_code("room", json!({"room_id": "silent"})).await,
        "not_found"
    );
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
    h.ok("create_room", json!({"actor": "alice", "room_id": "stage"}))
        .await;

    let first = h.service.take().unwrap();
    let began = Instant::now();
    first.stop().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        began.elapsed()
    );
    for _ in 0..20 {
        let stage = h.query_ok("room", json!({"room_id": "stage"})).await;
        assert_eq!(stage["host"], "alice", "the other instance answers");
    }
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
