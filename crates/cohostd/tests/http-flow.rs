//! The seed flow over HTTP against the real binary: host and co-host, each with their own JWT.

mod support;

use std::collections::HashSet;

use livekit_api::access_token::TokenVerifier;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Daemon, assert_error, data_dir};

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

#[tokio::test(flavor = "multi_thread")]
async fn seed_flow() {
    let dir = data_dir();
    let d = Daemon::start(dir.path()).await;
    let alice = d.token("alice");
    let bob = d.token("bob");
    let carol = d.token("carol");

    let room = d
        .ok_post(
            "/v1/rooms",
            &alice,
            &json!({"room_id": "stage-1", "title": "Stage one"}),
        )
        .await;
    assert_eq!(room["room_id"], "stage-1");
    assert_eq!(room["host"], "alice");
    assert_eq!(room["status"], "idle");
    assert_eq!(room["version"], 1);
    assert_eq!(room["max_cohosts"], 4);
    assert_eq!(room["cohosts"], json!([]));

    let room = d
        .ok_post("/v1/rooms/stage-1/live", &alice, &json!({}))
        .await;
    assert_eq!(room["status"], "live");
    assert_eq!(room["version"], 2);

    // Before any seat: the host gets host credentials, bob is refused.
    let host = d.ok_get("/v1/rooms/stage-1/broadcaster-data", &alice).await;
    assert_eq!(host["role"], "host");
    verify_livekit(&host, "alice", "stage-1", true);
    let refused = d.get("/v1/rooms/stage-1/broadcaster-data", &bob).await;
    assert!(
        refused.0 == StatusCode::FORBIDDEN || refused.0 == StatusCode::CONFLICT,
        "bob without a seat: {refused:?}"
    );

    let invitation = d
        .ok_post(
            "/v1/rooms/stage-1/invitations",
            &alice,
            &json!({"user_id": "bob"}),
        )
        .await;
    assert_eq!(invitation["status"], "pending");
    assert_eq!(invitation["kind"], "invite");
    assert_eq!(invitation["host"], "alice");
    assert_eq!(invitation["user_id"], "bob");
    assert_eq!(invitation["room_id"], "stage-1");
    let bob_invitation = invitation["invitation_id"].as_str().unwrap().to_owned();

    // bob's pending invitation gives him no credentials yet.
    let pending = d.get("/v1/rooms/stage-1/broadcaster-data", &bob).await;
    assert_error(&pending, 409, "failed_precondition", "pending seat");

    let accepted = d
        .ok_post(
            &format!("/v1/invitations/{bob_invitation}/accept"),
            &bob,
            &json!({}),
        )
        .await;
    assert_eq!(accepted["invitation"]["status"], "approved");
    assert_eq!(accepted["invitation"]["invitation_id"], bob_invitation);
    let broadcaster = &accepted["broadcaster"];
    assert_eq!(broadcaster["role"], "cohost");
    verify_livekit(broadcaster, "bob", "stage-1", false);

    let room = d.ok_get("/v1/rooms/stage-1", &bob).await;
    assert_eq!(room["cohosts"].as_array().unwrap().len(), 1);
    assert_eq!(room["cohosts"][0]["user_id"], "bob");
    assert_eq!(room["cohosts"][0]["invitation_id"], bob_invitation);

    let data = d.ok_get("/v1/rooms/stage-1/broadcaster-data", &bob).await;
    assert_eq!(data["role"], "cohost");
    verify_livekit(&data, "bob", "stage-1", false);
    let data = d.ok_get("/v1/rooms/stage-1/broadcaster-data", &alice).await;
    assert_eq!(data["role"], "host");
    verify_livekit(&data, "alice", "stage-1", true);

    // Invite carol; she rejects.
    let invitation = d
        .ok_post(
            "/v1/rooms/stage-1/invitations",
            &alice,
            &json!({"user_id": "carol"}),
        )
        .await;
    let carol_first = invitation["invitation_id"].as_str().unwrap().to_owned();
    let rejected = d
        .ok_post(
            &format!("/v1/invitations/{carol_first}/reject"),
            &carol,
            &json!({}),
        )
        .await;
    assert_eq!(rejected["status"], "rejected");
    assert_error(
        &d.get("/v1/rooms/stage-1/broadcaster-data", &carol).await,
        409,
        "failed_precondition",
        "rejected candidate",
    );
    // Rejecting twice is a precondition failure.
    assert_error(
        &d.post(
            &format!("/v1/invitations/{carol_first}/reject"),
            &carol,
            &json!({}),
        )
        .await,
        409,
        "failed_precondition",
        "reject twice",
    );

    // Re-invite carol; the host cancels.
    let invitation = d
        .ok_post(
            "/v1/rooms/stage-1/invitations",
            &alice,
            &json!({"user_id": "carol"}),
        )
        .await;
    let carol_second = invitation["invitation_id"].as_str().unwrap().to_owned();
    assert_ne!(carol_second, carol_first);
    let cancelled = d
        .ok_post(
            &format!("/v1/invitations/{carol_second}/cancel"),
            &alice,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    // Accepting a cancelled invitation fails and appends nothing.
    let seq = d.last_seq().await;
    assert_error(
        &d.post(
            &format!("/v1/invitations/{carol_second}/accept"),
            &carol,
            &json!({}),
        )
        .await,
        409,
        "failed_precondition",
        "accept after cancel",
    );
    assert_eq!(d.last_seq().await, seq);

    // The host removes bob.
    let (status, room) = d
        .call(
            Method::DELETE,
            "/v1/rooms/stage-1/cohosts/bob",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    assert_eq!(room["cohosts"], json!([]));
    assert_error(
        &d.get("/v1/rooms/stage-1/broadcaster-data", &bob).await,
        409,
        "failed_precondition",
        "removed co-host",
    );

    // bob comes back and leaves by himself.
    let invitation = d
        .ok_post(
            "/v1/rooms/stage-1/invitations",
            &alice,
            &json!({"user_id": "bob"}),
        )
        .await;
    let bob_second = invitation["invitation_id"].as_str().unwrap().to_owned();
    let accepted = d
        .ok_post(
            &format!("/v1/invitations/{bob_second}/accept"),
            &bob,
            &json!({}),
        )
        .await;
    assert_eq!(accepted["broadcaster"]["role"], "cohost");
    let room = d.ok_post("/v1/rooms/stage-1/leave", &bob, &json!({})).await;
    assert_eq!(room["cohosts"], json!([]));
    assert_error(
        &d.post("/v1/rooms/stage-1/leave", &bob, &json!({})).await,
        404,
        "not_found",
        "leave twice",
    );

    // A pending invitation for carol, cancelled by stop.
    let invitation = d
        .ok_post(
            "/v1/rooms/stage-1/invitations",
            &alice,
            &json!({"user_id": "carol"}),
        )
        .await;
    let carol_third = invitation["invitation_id"].as_str().unwrap().to_owned();

    // bob asks to join another room: a request.
    d.ok_post("/v1/rooms", &carol, &json!({"room_id": "stage-2"}))
        .await;
    let request = d
        .ok_post("/v1/rooms/stage-2/requests", &bob, &json!({}))
        .await;
    assert_eq!(request["kind"], "request");
    assert_eq!(request["user_id"], "bob");
    assert_eq!(request["host"], "carol");

    let room = d
        .ok_post("/v1/rooms/stage-1/stop", &alice, &json!({}))
        .await;
    assert_eq!(room["status"], "ended");
    let got = d.ok_get("/v1/rooms/stage-1", &alice).await;
    assert_eq!(got, room);
    assert_error(
        &d.get("/v1/rooms/stage-1/broadcaster-data", &alice).await,
        409,
        "failed_precondition",
        "broadcaster data of an ended room",
    );

    // The host's list.
    let all = d.ok_get("/v1/rooms/stage-1/invitations", &alice).await;
    assert!(all["next_cursor"].is_null(), "{all}");
    let statuses: Vec<(String, String)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["invitation_id"].as_str().unwrap().to_owned(),
                i["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut expected = vec![
        (bob_invitation.clone(), "approved".to_owned()),
        (carol_first.clone(), "rejected".to_owned()),
        (carol_second.clone(), "cancelled".to_owned()),
        (bob_second.clone(), "approved".to_owned()),
        (carol_third.clone(), "cancelled".to_owned()),
    ];
    let mut sorted = statuses.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "list {all}");

    let approved = d
        .ok_get("/v1/rooms/stage-1/invitations?status=approved", &alice)
        .await;
    let ids: HashSet<&str> = approved["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["invitation_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([bob_invitation.as_str(), bob_second.as_str()])
    );
    let cancelled = d
        .ok_get("/v1/rooms/stage-1/invitations?status=cancelled", &alice)
        .await;
    assert_eq!(cancelled["items"].as_array().unwrap().len(), 2);
    let pending = d
        .ok_get("/v1/rooms/stage-1/invitations?status=pending", &alice)
        .await;
    assert_eq!(pending["items"], json!([]));

    // Paging with limit=2 walks the same list, in the same order, without duplicates.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            None => "/v1/rooms/stage-1/invitations?limit=2".to_owned(),
            Some(c) => format!("/v1/rooms/stage-1/invitations?limit=2&cursor={c}"),
        };
        let page = d.ok_get(&path, &alice).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        paged.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        paged,
        all["items"].as_array().unwrap().clone(),
        "paged list differs"
    );

    // Only the host lists a room's invitations.
    assert_error(
        &d.get("/v1/rooms/stage-1/invitations", &bob).await,
        403,
        "permission_denied",
        "co-host lists",
    );

    // The candidate's list, with the kind filter.
    let mine = d.ok_get("/v1/me/invitations", &bob).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 3, "{mine}");
    let invites = d.ok_get("/v1/me/invitations?kind=invite", &bob).await;
    let ids: HashSet<&str> = invites["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["invitation_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([bob_invitation.as_str(), bob_second.as_str()])
    );
    let requests = d.ok_get("/v1/me/invitations?kind=request", &bob).await;
    assert_eq!(requests["items"].as_array().unwrap().len(), 1);
    assert_eq!(requests["items"][0], request);
    let pending = d
        .ok_get("/v1/me/invitations?kind=request&status=pending", &bob)
        .await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    let carols = d
        .ok_get("/v1/me/invitations?status=cancelled", &carol)
        .await;
    assert_eq!(carols["items"].as_array().unwrap().len(), 2);
    let page = d.ok_get("/v1/me/invitations?limit=1", &bob).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string(), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_and_if_match() {
    let dir = data_dir();
    let d = Daemon::start(dir.path()).await;
    let alice = d.token("alice");

    let key = [("idempotency-key", "create-stage-9")];
    let first = d
        .call_with(
            Method::POST,
            "/v1/rooms",
            Some(&alice),
            Some(&json!({"room_id": "stage-9"})),
            &key,
        )
        .await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let seq = d.last_seq().await;
    let again = d
        .call_with(
            Method::POST,
            "/v1/rooms",
            Some(&alice),
            Some(&json!({"room_id": "stage-9"})),
            &key,
        )
        .await;
    assert_eq!(again, first, "a retry returns the identical body");
    assert_eq!(d.last_seq().await, seq, "a retry appends nothing");
    // Without the key, the same command is already_exists.
    assert_error(
        &d.post("/v1/rooms", &alice, &json!({"room_id": "stage-9"}))
            .await,
        409,
        "already_exists",
        "create twice",
    );

    d.ok_post("/v1/rooms/stage-9/live", &alice, &json!({}))
        .await;
    let key = [("idempotency-key", "invite-bob")];
    let bob_body = json!({"user_id": "bob"});
    let invite = || {
        d.call_with(
            Method::POST,
            "/v1/rooms/stage-9/invitations",
            Some(&alice),
            Some(&bob_body),
            &key,
        )
    };
    let first = invite().await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    let seq = d.last_seq().await;
    let room = d.ok_get("/v1/rooms/stage-9", &alice).await;
    for _ in 0..3 {
        assert_eq!(invite().await, first);
    }
    assert_eq!(d.last_seq().await, seq);
    assert_eq!(d.ok_get("/v1/rooms/stage-9", &alice).await, room);
    let list = d.ok_get("/v1/rooms/stage-9/invitations", &alice).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // The same key with another command is a conflict.
    let reused = d
        .call_with(
            Method::POST,
            "/v1/rooms/stage-9/invitations",
            Some(&alice),
            Some(&json!({"user_id": "carol"})),
            &key,
        )
        .await;
    assert_error(&reused, 409, "conflict", "key reused");
    assert_eq!(d.last_seq().await, seq);

    // If-Match: a stale version is a conflict and changes nothing; the current one passes.
    let version = room["version"].as_u64().unwrap();
    let stale = (version - 1).to_string();
    let stopped = d
        .call_with(
            Method::POST,
            "/v1/rooms/stage-9/stop",
            Some(&alice),
            Some(&json!({})),
            &[("if-match", stale.as_str())],
        )
        .await;
    assert_error(&stopped, 409, "conflict", "stale If-Match");
    assert_eq!(d.ok_get("/v1/rooms/stage-9", &alice).await, room);
    assert_eq!(d.last_seq().await, seq);
    let current = format!("\"{version}\"");
    let stopped = d
        .call_with(
            Method::POST,
            "/v1/rooms/stage-9/stop",
            Some(&alice),
            Some(&json!({})),
            &[("if-match", current.as_str())],
        )
        .await;
    assert_eq!(stopped.0, StatusCode::OK, "{}", stopped.1);
    assert_eq!(stopped.1["status"], "ended");
}
