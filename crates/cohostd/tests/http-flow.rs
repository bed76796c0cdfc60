//! The seed flow over HTTP against the real binary: host and co-host, each with their own JWT.

mod support;

use std::collections::HashSet;

use livekit_api::access_token::TokenVerifier;
use serde_json::{Value, json};
use support::{Flow, Step, delete, get, invite, post};

const LIST: &str = "/v1/rooms/stage-1/invitations";
const BROADCASTER: &str = "/v1/rooms/stage-1/broadcaster-data";
const PRECONDITION: &str = "failed_precondition";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn verify_livekit(broadcaster: &Value, identity: &str, room: &str, admin: bool) {
    assert_eq!(broadcaster["url"], "ws://localhost:7880");
    assert!(broadcaster["expires_ms"].as_u64().unwrap() > now_ms());
    let token = broadcaster["token"].as_str().expect("token");
    let claims = TokenVerifier::with_api_key("devkey", "secret")
        .verify(token)
        .expect("LiveKit token verifies with the dev key pair");
    assert_eq!(claims.sub, identity);
    assert_eq!(claims.video.room, room);
    assert!(claims.video.room_join);
    assert_eq!(claims.video.room_admin, admin);
    assert_ne!(claims.video.can_publish, Some(false));
    let sources: HashSet<&str> = claims
        .video
        .can_publish_sources
        .iter()
        .map(String::as_str)
        .collect();
    // A co-host is limited to camera and microphone; the host may publish any source (an empty list).
    assert!(
        (admin && sources.is_empty())
            || (sources.contains("camera") && sources.contains("microphone")),
        "sources {sources:?}"
    );
    let metadata: Value = serde_json::from_str(&claims.metadata).expect("JSON metadata");
    assert_eq!(metadata["role"], if admin { "host" } else { "cohost" });
}

/// alice's host credentials for stage-1.
fn alice_livekit(broadcaster: &Value) {
    verify_livekit(broadcaster, "alice", "stage-1", true);
}

/// bob's co-host credentials for stage-1.
fn bob_livekit(broadcaster: &Value) {
    verify_livekit(broadcaster, "bob", "stage-1", false);
}

/// alice hosts stage-1; bob and carol are invited, accept, reject, are cancelled, removed and leave; it ends.
fn seats() -> Vec<Step> {
    vec![
        post("alice", "/v1/rooms", json!({"room_id": "stage-1", "title": "Stage one"})).ok(json!({
            "room_id": "stage-1", "host": "alice", "status": "idle", "version": 1, "max_cohosts": 4, "cohosts": [],
        })),
        post("alice", "/v1/rooms/stage-1/live", json!({}))
            .ok(json!({"status": "live", "version": 2})),
        // Before any seat: the host gets host credentials, bob is refused.
        get("alice", BROADCASTER)
            .ok(json!({"role": "host"}))
            .then(alice_livekit),
        get("bob", BROADCASTER).any_of(&[403, 409]),
        invite("alice", "stage-1", "bob")
            .ok(json!({
                "status": "pending", "kind": "invite", "host": "alice", "user_id": "bob", "room_id": "stage-1",
            }))
            .save("/invitation_id", "bob1"),
        // bob's pending invitation gives him no credentials yet.
        get("bob", BROADCASTER).err(409, PRECONDITION).why("pending seat"),
        post("bob", "/v1/invitations/{bob1}/accept", json!({}))
            .ok(json!({
                "invitation": {"status": "approved", "invitation_id": "{bob1}"}, "broadcaster": {"role": "cohost"},
            }))
            .then(|accepted| bob_livekit(&accepted["broadcaster"])),
        get("bob", "/v1/rooms/stage-1")
            .ok(json!({"cohosts": [{"user_id": "bob", "invitation_id": "{bob1}"}]})),
        get("bob", BROADCASTER)
            .ok(json!({"role": "cohost"}))
            .then(bob_livekit),
        get("alice", BROADCASTER)
            .ok(json!({"role": "host"}))
            .then(alice_livekit),
        // Invite carol; she rejects, then rejects again.
        invite("alice", "stage-1", "carol").save("/invitation_id", "carol1"),
        post("carol", "/v1/invitations/{carol1}/reject", json!({}))
            .ok(json!({"status": "rejected"})),
        get("carol", BROADCASTER).err(409, PRECONDITION).why("rejected candidate"),
        post("carol", "/v1/invitations/{carol1}/reject", json!({}))
            .err(409, PRECONDITION)
            .why("reject twice"),
        // Re-invite carol (a new id); the host cancels; accepting then fails and appends nothing.
        invite("alice", "stage-1", "carol").save("/invitation_id", "carol2"),
        post("alice", "/v1/invitations/{carol2}/cancel", json!({}))
            .ok(json!({"status": "cancelled"})),
        post("carol", "/v1/invitations/{carol2}/accept", json!({}))
            .err(409, PRECONDITION)
            .why("accept after cancel"),
        // The host removes bob.
        delete("alice", "/v1/rooms/stage-1/cohosts/bob").ok(json!({"cohosts": []})),
        get("bob", BROADCASTER).err(409, PRECONDITION).why("removed co-host"),
        // bob comes back and leaves by himself.
        invite("alice", "stage-1", "bob").save("/invitation_id", "bob2"),
        post("bob", "/v1/invitations/{bob2}/accept", json!({}))
            .ok(json!({"broadcaster": {"role": "cohost"}})),
        post("bob", "/v1/rooms/stage-1/leave", json!({})).ok(json!({"cohosts": []})),
        post("bob", "/v1/rooms/stage-1/leave", json!({}))
            .err(404, "not_found")
            .why("leave twice"),
        // A pending invitation for carol, cancelled by stop.
        invite("alice", "stage-1", "carol").save("/invitation_id", "carol3"),
        // bob asks to join another room: a request.
        post("carol", "/v1/rooms", json!({"room_id": "stage-2"})),
        post("bob", "/v1/rooms/stage-2/requests", json!({}))
            .ok(json!({"kind": "request", "user_id": "bob", "host": "carol"}))
            .save("", "request"),
        post("alice", "/v1/rooms/stage-1/stop", json!({}))
            .ok(json!({"status": "ended"}))
            .save("", "ended"),
        get("alice", "/v1/rooms/stage-1").ok(json!("{ended}")),
        get("alice", BROADCASTER)
            .err(409, PRECONDITION)
            .why("broadcaster data of an ended room"),
    ]
}

/// The invitation lists after [`seats`]: the host's, with the status filter, and each candidate's own.
fn lists() -> Vec<Step> {
    vec![
        get("alice", LIST)
            .ok(json!({"next_cursor": null, "items": [
                {"invitation_id": "{bob1}", "status": "approved"},
                {"invitation_id": "{carol1}", "status": "rejected"},
                {"invitation_id": "{carol2}", "status": "cancelled"},
                {"invitation_id": "{bob2}", "status": "approved"},
                {"invitation_id": "{carol3}", "status": "cancelled"},
            ]}))
            .save("/items", "all"),
        get("alice", "/v1/rooms/stage-1/invitations?status=approved")
            .ok(json!({"items": [{"invitation_id": "{bob1}"}, {"invitation_id": "{bob2}"}]})),
        get("alice", "/v1/rooms/stage-1/invitations?status=cancelled")
            .ok(json!({"items": [{"status": "cancelled"}, {"status": "cancelled"}]})),
        get("alice", "/v1/rooms/stage-1/invitations?status=pending").ok(json!({"items": []})),
        // Only the host lists a room's invitations.
        get("bob", LIST)
            .err(403, "permission_denied")
            .why("co-host lists"),
        get("bob", "/v1/me/invitations").ok(json!({"items": [
            {"invitation_id": "{bob1}"}, {"invitation_id": "{bob2}"}, "{request}",
        ]})),
        get("bob", "/v1/me/invitations?kind=invite")
            .ok(json!({"items": [{"invitation_id": "{bob1}"}, {"invitation_id": "{bob2}"}]})),
        get("bob", "/v1/me/invitations?kind=request").ok(json!({"items": ["{request}"]})),
        get("bob", "/v1/me/invitations?kind=request&status=pending")
            .ok(json!({"items": ["{request}"]})),
        get("carol", "/v1/me/invitations?status=cancelled")
            .ok(json!({"items": [{"invitation_id": "{carol2}"}, {"invitation_id": "{carol3}"}]})),
        get("bob", "/v1/me/invitations?limit=1")
            .ok(json!({"items": [{}]}))
            .then(|page| assert!(page["next_cursor"].is_string(), "{page}")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow() {
    let mut flow = Flow::start().await;
    flow.run(seats()).await;
    flow.run(lists()).await;
    // Paging with limit=2 walks the same list, in the same order, without duplicates.
    let alice = flow.token("alice");
    let paged = flow.d.list_all(LIST, &alice, 2).await;
    assert_eq!(
        Some(&paged),
        flow.var("all").as_array(),
        "paged list differs"
    );
}

/// Retries with an Idempotency-Key return the first reply and append nothing; If-Match guards on the version.
fn retries() -> Vec<Step> {
    let create = || post("alice", "/v1/rooms", json!({"room_id": "stage-9"}));
    let keyed_invite =
        |user| invite("alice", "stage-9", user).header("idempotency-key", "invite-bob");
    let stop = || post("alice", "/v1/rooms/stage-9/stop", json!({}));
    vec![
        create()
            .header("idempotency-key", "create-stage-9")
            .save("", "created"),
        create()
            .header("idempotency-key", "create-stage-9")
            .ok(json!("{created}"))
            .same_log(),
        // Without the key, the same command is already_exists.
        create().err(409, "already_exists").why("create twice"),
        post("alice", "/v1/rooms/stage-9/live", json!({})),
        keyed_invite("bob").save("", "invited"),
        get("alice", "/v1/rooms/stage-9")
            .ok(json!({"version": 3}))
            .save("", "room"),
        keyed_invite("bob").ok(json!("{invited}")).same_log(),
        keyed_invite("bob").ok(json!("{invited}")).same_log(),
        keyed_invite("bob").ok(json!("{invited}")).same_log(),
        get("alice", "/v1/rooms/stage-9").ok(json!("{room}")),
        get("alice", "/v1/rooms/stage-9/invitations").ok(json!({"items": [{"user_id": "bob"}]})),
        // The same key with another command is a conflict.
        keyed_invite("carol").err(409, "conflict").why("key reused"),
        // If-Match: a stale version is a conflict and changes nothing; the current one passes.
        stop()
            .header("if-match", "2")
            .err(409, "conflict")
            .why("stale If-Match"),
        get("alice", "/v1/rooms/stage-9").ok(json!("{room}")),
        stop()
            .header("if-match", "\"3\"")
            .ok(json!({"status": "ended"})),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_and_if_match() {
    Flow::start().await.run(retries()).await;
}
