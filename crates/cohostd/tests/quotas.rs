//! Per-user quotas against the real binary: commands per second, invitations per minute, live collections per
//! user and in all, open rooms per host and pending offers per candidate. Each refusal is 429
//! `resource_exhausted` with `Retry-After`, leaves other users alone, and is counted in `/metrics`.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Daemon;

/// A 429 `resource_exhausted` with a `Retry-After` of at least `at_least_s` seconds.
async fn refused(reply: reqwest::Response, at_least_s: u64, what: &str) {
    assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after: u64 = reply.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry_after >= at_least_s,
        "{what}: Retry-After {retry_after}"
    );
    let body: Value = reply.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "resource_exhausted",
        "{what}: {body}"
    );
}

async fn post(d: &Daemon, token: &str, path: &str, body: Value) -> reqwest::Response {
    d.http
        .post(d.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn invite(d: &Daemon, token: &str, room: &str, user: &str) -> reqwest::Response {
    let path = format!("/v1/rooms/{room}/invitations");
    post(d, token, &path, json!({"user_id": user})).await
}

async fn refusals(d: &Daemon, quota: &str) -> u64 {
    d.metric(&format!("cohost_quota_refusals_total{{quota=\"{quota}\"}}"))
        .await
}

#[tokio::test]
async fn commands_per_second_are_a_token_bucket_per_user() {
    let dir = support::data_dir();
    let d = Daemon::start_with(dir.path(), &["--user-commands-per-s", "2"]).await;
    let (ann, bob) = (d.token("ann"), d.token("bob"));
    // A burst of twice the rate, then a refusal that names a wait under a second (rounded up to one).
    for n in 0..4 {
        let reply = post(&d, &ann, "/v1/rooms", json!({"room_id": format!("r{n}")})).await;
        assert_eq!(reply.status(), StatusCode::OK);
    }
    refused(
        post(&d, &ann, "/v1/rooms", json!({"room_id": "r4"})).await,
        1,
        "the fifth",
    )
    .await;
    let reply = post(&d, &bob, "/v1/rooms", json!({"room_id": "b0"})).await;
    assert_eq!(
        reply.status(),
        StatusCode::OK,
        "another user is not affected"
    );
    assert_eq!(refusals(&d, "commands").await, 1);
    // Nothing was created by the refusal.
    let (status, _) = d.call(Method::GET, "/v1/rooms/r4", Some(&ann), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invitations_per_minute_count_invites_and_requests() {
    let dir = support::data_dir();
    let d = Daemon::start_with(dir.path(), &["--user-invitations-per-min", "3"]).await;
    let ann = d.token("ann");
    d.live_room(&ann, "r1").await;
    for guest in ["g1", "g2", "g3"] {
        d.ok_post("/v1/rooms/r1/invitations", &ann, &json!({"user_id": guest}))
            .await;
    }
    refused(
        invite(&d, &ann, "r1", "g4").await,
        2,
        "the fourth invitation in a minute",
    )
    .await;
    // Other commands go on.
    d.ok_post("/v1/rooms", &ann, &json!({"room_id": "r2"}))
        .await;
    let bob = d.token("bob");
    for n in 0..3 {
        let room = format!("b{n}");
        d.live_room(&bob, &room).await;
        let ask = post(&d, &ann, &format!("/v1/rooms/{room}/requests"), json!({})).await;
        refused(ask, 2, "a request to join counts as an invitation").await;
    }
    assert_eq!(refusals(&d, "invitations").await, 4);
}

#[tokio::test]
async fn live_collections_are_capped_per_user_and_in_total() {
    let dir = support::data_dir();
    let args = ["--user-streams-max", "2", "--streams-max", "3"];
    let d = Daemon::start_with(dir.path(), &args).await;
    let open = |user: &str| {
        let token = d.token(user);
        let request = d
            .http
            .get(d.url("/v1/me/invitations"))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        async move { request.send().await.unwrap() }
    };
    let first = [open("ann").await, open("ann").await];
    assert!(first.iter().all(|r| r.status() == StatusCode::OK));
    refused(open("ann").await, 1, "a third stream for ann").await;
    let bob = open("bob").await;
    assert_eq!(bob.status(), StatusCode::OK);
    refused(open("cat").await, 1, "a fourth stream in all").await;
    assert_eq!(refusals(&d, "streams_per_user").await, 1);
    assert_eq!(refusals(&d, "streams_total").await, 1);
    drop((first, bob));
}

#[tokio::test]
async fn open_rooms_per_host_and_pending_offers_per_candidate_are_quotas_of_the_rules() {
    let dir = support::data_dir();
    let args = [
        "--open-rooms-per-host-max=2",
        "--pending-per-candidate-max=1",
    ];
    let d = Daemon::start_with(dir.path(), &args).await;
    let (ann, bob) = (d.token("ann"), d.token("bob"));
    for room in ["r1", "r2"] {
        d.live_room(&ann, room).await;
    }
    refused(
        post(&d, &ann, "/v1/rooms", json!({"room_id": "r3"})).await,
        1,
        "a third open room",
    )
    .await;
    d.ok_post("/v1/rooms/r1/invitations", &ann, &json!({"user_id": "cat"}))
        .await;
    refused(
        invite(&d, &ann, "r2", "cat").await,
        1,
        "a second pending offer for cat",
    )
    .await;
    // Ending a room frees its place.
    d.ok_post("/v1/rooms/r2/stop", &ann, &json!({})).await;
    d.ok_post("/v1/rooms", &ann, &json!({"room_id": "r3"}))
        .await;
    d.ok_post("/v1/rooms", &bob, &json!({"room_id": "b1"}))
        .await;
}
