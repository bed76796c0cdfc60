//! Service credentials: a backend calls the API as itself, with a JWT signed by the service secret and
//! `role: service`. It may stop any room, remove any co-host and read any room, each event naming it; it may
//! not act as a user, open live collections, or be used from a browser; and no user token passes for one.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;

const SERVICE_SECRET: &str = "service-secret-0123456789";

fn service_token(dir: &std::path::Path, service: &str) -> String {
    let output = command(dir)
        .env("COHOST_SERVICE_SECRET", SERVICE_SECRET)
        .args(["token", "--service", service])
        .output()
        .expect("run cohostd token");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn start() -> (Daemon, tempfile::TempDir) {
    let dir = data_dir();
    let daemon = Daemon::start_with(dir.path(), &["--service-secret", SERVICE_SECRET]).await;
    (daemon, dir)
}

/// Alice's live room `room` with bob seated.
async fn seated(daemon: &Daemon, room: &str) -> String {
    let alice = daemon.token("alice");
    daemon.live_room(&alice, room).await;
    let invitation = daemon
        .ok_post(
            &format!("/v1/rooms/{room}/invitations"),
            &alice,
            &json!({"user_id": "bob"}),
        )
        .await;
    let id = invitation["invitation_id"].as_str().unwrap().to_owned();
    let bob = daemon.token("bob");
    daemon
        .ok_post(&format!("/v1/invitations/{id}/accept"), &bob, &json!({}))
        .await;
    alice
}

async fn events(daemon: &Daemon, room: &str, token: &str) -> Vec<Value> {
    let page = daemon
        .ok_get(&format!("/v1/rooms/{room}/events"), token)
        .await;
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_service_removes_stops_and_reads_any_room_and_is_named_in_its_events() {
    let (daemon, dir) = start().await;
    let alice = seated(&daemon, "one").await;
    let bot = service_token(dir.path(), "moderation-bot");

    // Reads of a room it neither hosts nor moderates.
    let room = daemon.ok_get("/v1/rooms/one", &bot).await;
    assert_eq!(room["cohosts"][0]["user_id"], "bob");
    let invitations = daemon.ok_get("/v1/rooms/one/invitations", &bot).await;
    assert_eq!(invitations["items"].as_array().unwrap().len(), 1);

    let (status, reply) = daemon
        .call(
            Method::DELETE,
            "/v1/rooms/one/cohosts/bob",
            Some(&bot),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    daemon.ok_post("/v1/rooms/one/stop", &bot, &json!({})).await;

    let history = events(&daemon, "one", &bot).await;
    let removed = history
        .iter()
        .find(|e| e["type"] == "cohost_removed")
        .unwrap();
    assert_eq!(removed["service"], "moderation-bot");
    assert_eq!(removed["actor"], Value::Null);
    assert_eq!(removed["reason"], "system");
    let stopped = history.last().unwrap();
    assert_eq!(
        (&stopped["type"], &stopped["service"]),
        (&json!("room_stopped"), &json!("moderation-bot"))
    );
    // A user's events carry no service key at all.
    let created = &history[0];
    assert_eq!(created["actor"], "alice");
    assert!(created.get("service").is_none(), "{created}");
    // The host reads the same history.
    assert_eq!(events(&daemon, "one", &alice).await, history);
}

#[tokio::test]
async fn a_service_does_nothing_a_user_does_and_opens_no_live_collection() {
    let (daemon, dir) = start().await;
    seated(&daemon, "one").await;
    let bot = service_token(dir.path(), "moderation-bot");

    let (status, reply) = (daemon.call(
        Method::POST,
        "/v1/rooms",
        Some(&bot),
        Some(&json!({"room_id": "mine"})),
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    let (status, reply) = (daemon.call(
        Method::POST,
        "/v1/rooms/one/invitations",
        Some(&bot),
        Some(&json!({"user_id": "carol"})),
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    let (status, reply) = (daemon.call(
        Method::POST,
        "/v1/rooms/one/moderators",
        Some(&bot),
        Some(&json!({"user_id": "carol"})),
    ))
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "it appoints no one: {reply}");
    let (status, reply) = daemon
        .call(Method::GET, "/v1/me/invitations", Some(&bot), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acts for users only"),
        "{reply}"
    );
    let (status, _) = daemon
        .call(
            Method::GET,
            "/v1/rooms/one/broadcaster-data",
            Some(&bot),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let live = [("accept".to_owned(), "text/event-stream".to_owned())];
    let (status, reply) = daemon
        .send(
            Method::GET,
            "/v1/rooms/one",
            Some(&bot),
            &Body::Empty,
            &live,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
}

#[tokio::test]
async fn a_service_credential_is_refused_from_a_browser_and_no_user_token_passes_for_one() {
    let (daemon, dir) = start().await;
    seated(&daemon, "one").await;
    let bot = service_token(dir.path(), "moderation-bot");
    for header in [
        ("origin", "https://app.example.com"),
        ("sec-fetch-mode", "cors"),
    ] {
        let headers = [(header.0.to_owned(), header.1.to_owned())];
        let (status, reply) = daemon
            .send(
                Method::POST,
                "/v1/rooms/one/stop",
                Some(&bot),
                &Body::Json(json!({})),
                &headers,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{header:?}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("browser"),
            "{reply}"
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed with the users' secret: neither a service (wrong key) nor a user (it has a role).
    let forged = signed(
        dir.path(),
        &json!({"sub": "moderation-bot", "role": "service", "exp": now + 600}),
    );
    let (status, _) = daemon
        .call(
            Method::POST,
            "/v1/rooms/one/stop",
            Some(&forged),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Signed with the service secret but without the role: not a service credential, nor a user token.
    let key = jsonwebtoken::EncodingKey::from_secret(SERVICE_SECRET.as_bytes());
    let claims = json!({"sub": "moderation-bot", "exp": now + 600});
    let roleless = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let (status, _) = daemon
        .call(
            Method::POST,
            "/v1/rooms/one/stop",
            Some(&roleless),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        daemon.ok_get("/v1/rooms/one", &daemon.token("alice")).await["status"],
        "live"
    );
}

#[tokio::test]
async fn without_a_service_secret_no_service_credential_is_taken() {
    let dir = data_dir();
    let daemon = Daemon::start(dir.path()).await;
    seated(&daemon, "one").await;
    let bot = service_token(dir.path(), "moderation-bot");
    let (status, _) = daemon
        .call(
            Method::POST,
            "/v1/rooms/one/stop",
            Some(&bot),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A service secret that is the users' own, or the admin secret, is refused at start, in one line.
    let secret = "same-secret-for-both-0123";
    for (other, why) in [("--auth-secret", "auth"), ("--admin-secret", "admin")] {
        let output = command(dir.path())
            .args([other, secret, "--service-secret", secret])
            .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!("the service secret must differ from the {why} secret");
        assert!(stderr.contains(&expected), "{stderr}");
    }
}

#[tokio::test]
async fn a_service_erases_a_user_who_is_then_served_only_by_a_pseudonym() {
    let (daemon, dir) = start().await;
    let alice = seated(&daemon, "one").await;
    let bob = daemon.token("bob");
    daemon.live_room(&bob, "bobs").await;
    let privacy = service_token(dir.path(), "privacy");
    let path = "/v1/admin/users/bob/erase";
    // A service withdraws any offer on its own too.
    let offer = (daemon)
        .ok_post(
            "/v1/rooms/one/invitations",
            &alice,
            &json!({"user_id": "carol"}),
        )
        .await;
    let cancel = format!(
        "/v1/invitations/{}/cancel",
        offer["invitation_id"].as_str().unwrap()
    );
    let cancelled = daemon.ok_post(&cancel, &privacy, &json!({})).await;
    assert_eq!(cancelled["status"], "cancelled");

    let (status, body) = daemon.call(Method::POST, path, Some(&alice), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user's JWT: {body}");
    let (status, _) = daemon.call(Method::POST, path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = (daemon)
        .call(
            Method::POST,
            "/v1/admin/users/b%20b/erase",
            Some(&privacy),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not a user id");

    let erased = daemon.ok_post(path, &privacy, &json!({})).await;
    let pseudonym = erased["user_id"].as_str().unwrap().to_owned();
    assert!(
        pseudonym.starts_with("erased-") && pseudonym.len() == 31,
        "{erased}"
    );
    assert_eq!(
        (erased["rooms"].as_u64(), erased["commands"].as_u64()),
        (Some(2), Some(2))
    );
    let again = daemon.ok_post(path, &privacy, &json!({})).await;
    assert_eq!(again["user_id"], pseudonym.as_str(), "stable");
    assert_eq!(again["commands"], 0, "nothing left to end");

    // Bob's seat and his own room ended, and nothing served names him any more.
    let one = daemon.ok_get("/v1/rooms/one", &alice).await;
    assert_eq!(one["cohosts"], json!([]));
    let bobs = daemon.ok_get("/v1/rooms/bobs", &privacy).await;
    assert_eq!(
        (bobs["status"].as_str(), bobs["host"].as_str()),
        (Some("ended"), Some(pseudonym.as_str()))
    );
    let mut served = vec![one, bobs];
    served.extend(events(&daemon, "one", &alice).await);
    served.extend(events(&daemon, "bobs", &privacy).await);
    served.push(daemon.ok_get("/v1/rooms/one/invitations", &alice).await);
    let text = serde_json::to_string(&served).unwrap();
    assert!(!text.contains("\"bob\""), "{text}");
    assert!(text.contains(&format!("\"{pseudonym}\"")));
    // The removal and the stop are the service's.
    let last = events(&daemon, "one", &alice).await.pop().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["service"].as_str()),
        (Some("cohost_removed"), Some("privacy"))
    );
    // Bob signing in again is a user like any other: he hosts and reads a new room, and is seated again with
    // his credentials, all served under the pseudonym.
    daemon.live_room(&bob, "again").await;
    daemon.ok_get("/v1/rooms/again/invitations", &bob).await;
    let page = daemon.ok_get("/v1/rooms/again/events", &bob).await;
    assert_eq!(page["items"][0]["actor"], pseudonym.as_str(), "{page}");
    let offer = (daemon)
        .ok_post(
            "/v1/rooms/one/invitations",
            &alice,
            &json!({"user_id": "bob"}),
        )
        .await;
    let accept = format!(
        "/v1/invitations/{}/accept",
        offer["invitation_id"].as_str().unwrap()
    );
    let accepted = daemon.ok_post(&accept, &bob, &json!({})).await;
    assert_eq!(accepted["broadcaster"]["role"], "cohost", "{accepted}");
    assert_eq!(accepted["invitation"]["user_id"], pseudonym.as_str());
    // No one signs in under a pseudonym.
    let (status, body) = (daemon)
        .call(
            Method::GET,
            "/v1/rooms/bobs/events",
            Some(&daemon.token(&pseudonym)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
