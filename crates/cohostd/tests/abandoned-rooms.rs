//! The daemon ends abandoned rooms on its own clock: a room idle past `COHOST_IDLE_ROOM_S` ends as
//! `never_live`, and a live room whose host LiveKit's webhooks report gone past `COHOST_HOST_ABSENT_S` stops as
//! `host_absent`, its co-host's seat with it. Without webhooks and the reconciliation that catches a lost one,
//! no host is ever judged away.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const LIVEKIT_KEY: &str = "abandoned-test-key";
const LIVEKIT_SECRET: &str = "abandoned-test-livekit-secret-0123456789";

/// A participant webhook for `user`, signed with the daemon's key pair.
fn webhook(kind: &str, user: &str, room: &str, id: &str) -> (String, String) {
    let sid = format!("PA_{user}");
    livekit_webhook((LIVEKIT_KEY, LIVEKIT_SECRET), kind, (user, &sid), id, room)
}

async fn deliver(daemon: &Daemon, (body, jwt): (String, String)) {
    let response = daemon
        .http
        .post(daemon.url("/v1/livekit/webhook"))
        .header("authorization", jwt)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the webhook is taken");
}

async fn events(daemon: &Daemon, room: &str, token: &str) -> Vec<Value> {
    let page = daemon
        .ok_get(&format!("/v1/rooms/{room}/events"), token)
        .await;
    page["items"].as_array().unwrap().clone()
}

/// Waits (at most 20 s) for the room to end; its events then.
async fn ended(daemon: &Daemon, room: &str, token: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = daemon.ok_get(&format!("/v1/rooms/{room}"), token).await;
        if state["status"] == "ended" {
            return events(daemon, room, token).await;
        }
        assert!(Instant::now() < deadline, "{room} did not end: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stopped_for(history: &[Value]) -> &Value {
    let last = history.last().expect("events");
    assert_eq!(last["type"], "room_stopped", "{last}");
    assert_eq!(last["actor"], Value::Null, "by the system: {last}");
    &last["reason"]
}

#[tokio::test]
async fn idle_rooms_and_rooms_whose_host_left_end_on_their_own() {
    let dir = data_dir();
    let args = [
        "--livekit-api-key",
        LIVEKIT_KEY,
        "--livekit-api-secret",
        LIVEKIT_SECRET,
        "--livekit-webhooks",
        "true",
        // The reconciliation asks a LiveKit that is not there: it changes nothing, as when LiveKit is down.
        "--livekit-admin",
        "true",
        "--livekit-url",
        "http://127.0.0.1:9",
        "--livekit-reconcile-s",
        "1",
        "--host-absent-s",
        "2",
        "--idle-room-s",
        "2",
    ];
    let daemon = Daemon::start_with(dir.path(), &args).await;
    let alice = daemon.token("alice");
    let bob = daemon.token("bob");
    let started = Instant::now();
    daemon
        .ok_post("/v1/rooms", &alice, &json!({"room_id": "idle"}))
        .await;
    daemon.live_room(&alice, "stage").await;
    let invitation = daemon
        .ok_post(
            "/v1/rooms/stage/invitations",
            &alice,
            &json!({"user_id": "bob"}),
        )
        .await;
    let id = invitation["invitation_id"].as_str().unwrap();
    daemon
        .ok_post(&format!("/v1/invitations/{id}/accept"), &bob, &json!({}))
        .await;
    deliver(
        &daemon,
        webhook("participant_joined", "alice", "stage", "WH_1"),
    )
    .await;
    deliver(
        &daemon,
        webhook("participant_left", "alice", "stage", "WH_2"),
    )
    .await;

    let idle = ended(&daemon, "idle", &alice).await;
    assert_eq!(stopped_for(&idle), "never_live");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not before its time"
    );
    let stage = ended(&daemon, "stage", &alice).await;
    assert_eq!(stopped_for(&stage), "host_absent");
    let seat_ended = stage
        .iter()
        .any(|e| e["type"] == "cohost_removed" && e["reason"] == "room_stopped");
    assert!(seat_ended, "bob's seat ends with the room");
}

#[tokio::test]
async fn without_webhooks_and_the_reconciliation_no_host_is_judged_away() {
    let webhooks_only = [
        "--livekit-api-key",
        LIVEKIT_KEY,
        "--livekit-api-secret",
        LIVEKIT_SECRET,
        "--livekit-webhooks",
        "true",
    ];
    for extra in [&[][..], &webhooks_only[..]] {
        let dir = data_dir();
        let mut args = vec!["--host-absent-s", "1"];
        args.extend_from_slice(extra);
        let daemon = Daemon::start_with(dir.path(), &args).await;
        let alice = daemon.token("alice");
        daemon.live_room(&alice, "stage").await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let state = daemon.ok_get("/v1/rooms/stage", &alice).await;
        assert_eq!(state["status"], "live", "{args:?}: {state}");
    }
}
