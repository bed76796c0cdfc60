//! A web app against the real daemon: CORS for the configured origins only (none by default), and live
//! collections opened the way a browser's `EventSource` must, with no headers: a stream ticket in the query,
//! made with a JWT, for one collection, refused everywhere else.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Daemon;
use support::cluster::Live;

const APP: &str = "https://app.example.com";

async fn preflight(d: &Daemon, origin: &str, headers: &str) -> reqwest::Response {
    d.http
        .request(Method::OPTIONS, d.url("/v1/rooms/r1/invitations"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", headers)
        .send()
        .await
        .expect("preflight")
}

fn header<'a>(reply: &'a reqwest::Response, name: &str) -> &'a str {
    reply
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().expect("ASCII header"))
}

#[tokio::test(flavor = "multi_thread")]
async fn without_configured_origins_a_preflight_is_refused_and_nothing_is_allowed() {
    let dir = support::data_dir();
    let d = Daemon::start(dir.path()).await;
    let reply = preflight(&d, APP, "authorization").await;
    assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&reply, "access-control-allow-origin"), "");
    let body: Value = reply.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "invalid_argument");
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_origins_get_preflights_and_the_headers_they_read() {
    let dir = support::data_dir();
    let origins = format!("{APP},http://localhost:5173");
    let d = Daemon::start_with(dir.path(), &["--cors-origins", &origins]).await;
    let reply = preflight(
        &d,
        APP,
        "authorization,content-type,idempotency-key,if-match",
    )
    .await;
    assert!(reply.status().is_success(), "{}", reply.status());
    assert_eq!(header(&reply, "access-control-allow-origin"), APP);
    assert!(header(&reply, "access-control-allow-methods").contains("POST"));
    let allowed = header(&reply, "access-control-allow-headers").to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "idempotency-key",
        "if-match",
        "last-event-id",
    ] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }
    assert_eq!(header(&reply, "access-control-max-age"), "600");
    assert_eq!(header(&reply, "access-control-allow-credentials"), "");

    let stranger = preflight(&d, "https://evil.example.com", "authorization").await;
    assert_eq!(header(&stranger, "access-control-allow-origin"), "");

    // A real request from the app: allowed, and a 401's headers readable by it.
    let reply = d
        .http
        .get(d.url("/v1/me/invitations"))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .expect("GET");
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&reply, "access-control-allow-origin"),
        "http://localhost:5173"
    );
    let exposed = header(&reply, "access-control-expose-headers").to_ascii_lowercase();
    for name in ["retry-after", "www-authenticate", "idempotency-key"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    assert!(
        header(&reply, "vary")
            .to_ascii_lowercase()
            .contains("origin")
    );
}

/// Asks for a ticket with `token`; returns the status and body.
async fn ticket(d: &Daemon, token: &str, collection: &str) -> (StatusCode, Value) {
    d.call(
        Method::POST,
        "/v1/stream-tickets",
        Some(token),
        Some(&json!({ "collection": collection })),
    )
    .await
}

async fn ok_ticket(d: &Daemon, token: &str, collection: &str) -> String {
    let (status, reply) = ticket(d, token, collection).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["ticket"].as_str().expect("a ticket").to_owned()
}

/// Opens `path?ticket=…` as an `EventSource` does: `Accept: text/event-stream`, no `Authorization`.
async fn open(d: &Daemon, path: &str, ticket: &str, last_id: Option<u64>) -> reqwest::Response {
    let mut request = d
        .http
        .get(d.url(path))
        .query(&[("ticket", ticket)])
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        request = request.header("last-event-id", id.to_string());
    }
    request.send().await.expect("GET")
}

/// Opens `path?ticket=…` as [`open`] does, checks it was taken, and reads its events.
async fn live(d: &Daemon, path: &str, ticket: &str, last_id: Option<u64>) -> Live {
    let response = open(d, path, ticket, last_id).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    Live::from_response(response)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_opens_its_collection_without_headers_and_resumes_from_last_event_id() {
    let dir = support::data_dir();
    let d = Daemon::start(dir.path()).await;
    let (alice, bob) = (d.token("alice"), d.token("bob"));
    d.live_room(&alice, "r1").await;
    let (status, reply) = ticket(&d, &bob, "/v1/rooms/r1").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let expires_ms = reply["expires_ms"].as_u64().expect("expires_ms");
    let now_ms = support::now_s() * 1_000;
    assert!(
        (now_ms + 290_000..=now_ms + 302_000).contains(&expires_ms),
        "the default lifetime is 5 minutes: {expires_ms} at {now_ms}"
    );
    let room_ticket = reply["ticket"].as_str().unwrap().to_owned();

    let mut stream = live(&d, "/v1/rooms/r1", &room_ticket, None).await;
    let (event, version, snapshot) = stream.next().await.unwrap();
    assert_eq!((event.as_str(), version), ("snapshot", 2), "{snapshot}");
    d.ok_post(
        "/v1/rooms/r1/invitations",
        &alice,
        &json!({"user_id": "bob"}),
    )
    .await;
    let (event, version, change) = stream.next().await.unwrap();
    assert_eq!((event.as_str(), version), ("change", 3), "{change}");
    drop(stream);

    // EventSource reconnects with the same URL and Last-Event-ID: no snapshot, the changes after it.
    d.ok_post("/v1/invitations/r1.1/accept", &bob, &json!({}))
        .await;
    let mut stream = live(&d, "/v1/rooms/r1", &room_ticket, Some(3)).await;
    let (event, version, change) = stream.next().await.unwrap();
    assert_eq!((event.as_str(), version), ("change", 4), "{change}");
    assert_eq!(change["type"], "invitation_approved");

    // The candidate's own collection, with a ticket for it.
    let me_ticket = ok_ticket(&d, &bob, "/v1/me/invitations").await;
    let mut stream = live(&d, "/v1/me/invitations", &me_ticket, None).await;
    let (event, _, page) = stream.next().await.unwrap();
    assert_eq!(event, "snapshot");
    assert_eq!(page["items"][0]["invitation_id"], "r1.1", "{page}");
}

async fn refused(reply: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(reply.status(), status);
    let body: Value = reply.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_is_refused_anywhere_but_its_own_live_collection() {
    let dir = support::data_dir();
    let d = Daemon::start(dir.path()).await;
    let alice = d.token("alice");
    d.live_room(&alice, "r1").await;
    let me = ok_ticket(&d, &alice, "/v1/me/invitations").await;
    let room = ok_ticket(&d, &alice, "/v1/rooms/r1/invitations").await;

    // Another collection, and the same route read as JSON rather than as a stream.
    let unauthorized = StatusCode::UNAUTHORIZED;
    refused(
        open(&d, "/v1/rooms/r1", &room, None).await,
        unauthorized,
        "unauthenticated",
    )
    .await;
    refused(
        open(&d, "/v1/me/invitations", &room, None).await,
        unauthorized,
        "unauthenticated",
    )
    .await;
    let as_json = d
        .http
        .get(d.url("/v1/rooms/r1/invitations"))
        .query(&[("ticket", &room)]);
    refused(
        as_json.send().await.unwrap(),
        unauthorized,
        "unauthenticated",
    )
    .await;
    // A command route takes no ticket at all, in the query or as a bearer token.
    let command = d
        .http
        .post(d.url("/v1/rooms/r1/stop"))
        .query(&[("ticket", &room)]);
    refused(
        command.send().await.unwrap(),
        unauthorized,
        "unauthenticated",
    )
    .await;
    let (status, _) = d
        .call(Method::POST, "/v1/rooms/r1/stop", Some(&room), None)
        .await;
    assert_eq!(status, unauthorized, "a ticket is no JWT");
    // A ticket cannot make another ticket.
    let (status, _) = ticket(&d, &me, "/v1/me/invitations").await;
    assert_eq!(status, unauthorized);
    // A JWT in the URL is no ticket.
    refused(
        open(&d, "/v1/me/invitations", &alice, None).await,
        unauthorized,
        "unauthenticated",
    )
    .await;
    // Changed by one character.
    let mut tampered = me.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    refused(
        open(&d, "/v1/me/invitations", &tampered, None).await,
        unauthorized,
        "unauthenticated",
    )
    .await;
    // Both a JWT and a ticket: ambiguous.
    let both = d
        .http
        .get(d.url("/v1/me/invitations"))
        .query(&[("ticket", &me)])
        .bearer_auth(&alice)
        .header("accept", "text/event-stream");
    refused(
        both.send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    )
    .await;

    // Asking: a JWT, and a collection that is one of the live ones.
    let (status, _) = d
        .call(
            Method::POST,
            "/v1/stream-tickets",
            None,
            Some(&json!({"collection": "/v1/me/invitations"})),
        )
        .await;
    assert_eq!(status, unauthorized);
    for bad in [
        json!({"collection": "/v1/rooms/r1/events"}),
        json!({"collection": "/v1/rooms/r1/invitations?status=pending"}),
        json!({"collection": 7}),
        json!({}),
        json!({"collection": "/v1/me/invitations", "ttl": 1}),
    ] {
        let (status, reply) = d
            .call(Method::POST, "/v1/stream-tickets", Some(&alice), Some(&bad))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_argument");
    }
}

/// A ticket never outlives its JWT, and a stream opened with it ends where the JWT would have.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_opened_with_a_ticket_ends_at_its_jwt_expiry() {
    let dir = support::data_dir();
    let d = Daemon::start(dir.path()).await;
    let exp = support::now_s() + 2;
    let short = support::signed(&d.dir, &json!({"sub": "bob", "exp": exp}));
    let (status, reply) = ticket(&d, &short, "/v1/me/invitations").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["expires_ms"], exp * 1_000, "capped at the JWT's exp");
    let ticket = reply["ticket"].as_str().unwrap();
    let mut stream = live(&d, "/v1/me/invitations", ticket, None).await;
    let (event, _, _) = stream.next().await.unwrap();
    assert_eq!(event, "snapshot");
    let (event, _, end) = stream.next().await.unwrap();
    assert_eq!(event, "end", "{end}");
    assert_eq!(end["error"]["code"], "unauthenticated", "{end}");
    assert!(stream.next().await.is_none(), "closed");
    // And once past it, the ticket opens nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused(
        open(&d, "/v1/me/invitations", ticket, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
}
