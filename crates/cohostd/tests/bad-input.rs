//! Bad input over HTTP against the real binary: oversized, malformed and mistyped bodies, unknown fields,
//! invalid ids and page sizes are refused with the contract's error body, append nothing, and the daemon stays up.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{Daemon, assert_error, data_dir};

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_the_daemon_stays_up() {
    let dir = data_dir();
    let d = Daemon::start(dir.path()).await;
    let alice = d.token("alice");
    let bob = d.token("bob");
    d.ok_post("/v1/rooms", &alice, &json!({"room_id": "r1"}))
        .await;
    d.ok_post("/v1/rooms/r1/live", &alice, &json!({})).await;
    let invitation = d
        .ok_post(
            "/v1/rooms/r1/invitations",
            &alice,
            &json!({"user_id": "bob"}),
        )
        .await;
    let invitation_id = invitation["invitation_id"].as_str().unwrap().to_owned();
    let room = d.ok_get("/v1/rooms/r1", &alice).await;
    let seq = d.last_seq().await;

    // Over 64 KiB: 413 with invalid_argument, for each body-taking route.
    let big_title = "x".repeat(70 * 1024);
    let big = json!({"room_id": "big", "title": big_title})
        .to_string()
        .into_bytes();
    for path in [
        "/v1/rooms".to_owned(),
        "/v1/rooms/r1/invitations".to_owned(),
        "/v1/rooms/r1/stop".to_owned(),
        format!("/v1/invitations/{invitation_id}/accept"),
    ] {
        let got = d
            .call_raw(Method::POST, &path, Some(&alice), big.clone())
            .await;
        assert_error(&got, 413, "invalid_argument", &format!("oversized {path}"));
    }
    // Exactly at the limit is not "too large" (it is a bad title instead).
    let mut at_limit = json!({"room_id": "big", "title": ""})
        .to_string()
        .into_bytes();
    let pad = 64 * 1024 - at_limit.len();
    at_limit.splice(
        at_limit.len() - 2..at_limit.len() - 2,
        std::iter::repeat_n(b'y', pad),
    );
    assert_eq!(at_limit.len(), 64 * 1024);
    let got = d
        .call_raw(Method::POST, "/v1/rooms", Some(&alice), at_limit)
        .await;
    assert_error(
        &got,
        400,
        "invalid_argument",
        "body at the limit, title too long",
    );

    // Malformed JSON.
    for raw in [
        &b"{"[..],
        b"{\"room_id\": ",
        b"not json",
        b"[1, 2",
        b"\xff\xfe",
        b"null",
        b"[]",
        b"\"r3\"",
    ] {
        let got = d
            .call_raw(Method::POST, "/v1/rooms", Some(&alice), raw.to_vec())
            .await;
        assert_error(
            &got,
            400,
            "invalid_argument",
            &format!("malformed {:?}", String::from_utf8_lossy(raw)),
        );
    }
    let got = d
        .call_raw(
            Method::POST,
            "/v1/rooms/r1/invitations",
            Some(&alice),
            b"{\"user_id\":".to_vec(),
        )
        .await;
    assert_error(&got, 400, "invalid_argument", "malformed invite");
    let got = d
        .call_raw(
            Method::POST,
            "/v1/rooms/r1/stop",
            Some(&alice),
            b"{oops}".to_vec(),
        )
        .await;
    assert_error(&got, 400, "invalid_argument", "malformed stop");

    // Wrong types, missing and unknown fields, out-of-range values.
    let bodies = [
        json!({"room_id": "r3", "max_cohosts": "x"}),
        json!({"room_id": "r3", "max_cohosts": -1}),
        json!({"room_id": "r3", "max_cohosts": 300}),
        json!({"room_id": "r3", "max_cohosts": 1.5}),
        json!({"room_id": "r3", "max_cohosts": 17}),
        json!({"room_id": "r3", "max_cohosts": 0}),
        json!({"room_id": "r3", "title": 5}),
        json!({"room_id": "r3", "title": "t".repeat(201)}),
        json!({"room_id": 3}),
        json!({"room_id": null}),
        json!({}),
        json!({"room_id": "r3", "bogus": true}),
        json!({"room_id": "r3", "host": "mallory"}),
        json!({"room_id": ""}),
        json!({"room_id": "bad id"}),
        json!({"room_id": "r.3"}),
        json!({"room_id": "r/3"}),
        json!({"room_id": "é"}),
        json!({"room_id": "r".repeat(65)}),
    ];
    for body in &bodies {
        let got = d.post("/v1/rooms", &alice, body).await;
        assert_error(&got, 400, "invalid_argument", &format!("create {body}"));
    }
    for body in [
        json!({"user_id": 7}),
        json!({"user_id": "b@d"}),
        json!({"user_id": ""}),
        json!({"user_id": "u".repeat(65)}),
        json!({"user_id": "carol", "extra": 1}),
        json!({}),
    ] {
        let got = d.post("/v1/rooms/r1/invitations", &alice, &body).await;
        assert_error(&got, 400, "invalid_argument", &format!("invite {body}"));
    }
    for path in [
        "/v1/rooms/r1/live",
        "/v1/rooms/r1/stop",
        "/v1/rooms/r1/leave",
        "/v1/rooms/r1/requests",
    ] {
        let got = d.post(path, &bob, &json!({"unexpected": 1})).await;
        assert_error(
            &got,
            400,
            "invalid_argument",
            &format!("unknown field {path}"),
        );
    }
    let got = d
        .post(
            &format!("/v1/invitations/{invitation_id}/accept"),
            &bob,
            &json!({"invitation_id": invitation_id}),
        )
        .await;
    assert_error(&got, 400, "invalid_argument", "unknown field on accept");

    // Invalid ids in the path.
    let long = "r".repeat(65);
    for (method, path) in [
        (Method::GET, "/v1/rooms/bad%20id".to_owned()),
        (Method::GET, "/v1/rooms/b@d".to_owned()),
        (Method::GET, format!("/v1/rooms/{long}")),
        (Method::GET, "/v1/rooms/%C3%A9".to_owned()),
        (Method::POST, "/v1/rooms/bad%20id/live".to_owned()),
        (Method::POST, "/v1/rooms/r.1/stop".to_owned()),
        (Method::POST, "/v1/rooms/bad%20id/invitations".to_owned()),
        (Method::GET, "/v1/rooms/bad%20id/invitations".to_owned()),
        (
            Method::GET,
            "/v1/rooms/bad%20id/broadcaster-data".to_owned(),
        ),
        (Method::POST, "/v1/rooms/bad%20id/leave".to_owned()),
        (Method::POST, "/v1/rooms/bad%20id/requests".to_owned()),
        (Method::DELETE, "/v1/rooms/bad%20id/cohosts/bob".to_owned()),
        (Method::DELETE, "/v1/rooms/r1/cohosts/b@d".to_owned()),
        (Method::DELETE, format!("/v1/rooms/r1/cohosts/{long}")),
        (Method::POST, "/v1/invitations/not-an-id!/accept".to_owned()),
        (Method::POST, "/v1/invitations/%20/reject".to_owned()),
        (Method::POST, "/v1/invitations/x/cancel".to_owned()),
        (Method::POST, format!("/v1/invitations/{long}/accept")),
    ] {
        let body = json!({"user_id": "carol"});
        let body = (method == Method::POST && path.ends_with("/invitations")).then_some(&body);
        let got = d.call(method.clone(), &path, Some(&alice), body).await;
        assert_error(&got, 400, "invalid_argument", &format!("{method} {path}"));
    }

    // Page sizes over the cap, zero, or not numbers; bad filters; unknown parameters.
    for query in [
        "limit=101",
        "limit=1000000000000000000000",
        "limit=0",
        "limit=-1",
        "limit=ten",
        "status=bogus",
        "status=",
        "kind=bogus",
        "sort=asc",
    ] {
        let got = d
            .get(&format!("/v1/rooms/r1/invitations?{query}"), &alice)
            .await;
        assert_error(
            &got,
            400,
            "invalid_argument",
            &format!("room list ?{query}"),
        );
        let got = d.get(&format!("/v1/me/invitations?{query}"), &bob).await;
        assert_error(&got, 400, "invalid_argument", &format!("my list ?{query}"));
    }
    let got = d.get("/v1/rooms/r1/invitations?limit=100", &alice).await;
    assert_eq!(got.0, StatusCode::OK, "limit=100 is allowed: {}", got.1);
    let got = d.get("/v1/me/invitations?cursor=%00garbage", &bob).await;
    assert!(
        got.0 == StatusCode::OK || got.0 == StatusCode::BAD_REQUEST,
        "a garbage cursor: {got:?}"
    );

    // Bad headers.
    let got = d
        .call_with(
            Method::POST,
            "/v1/rooms/r1/stop",
            Some(&alice),
            Some(&json!({})),
            &[("if-match", "not-a-version")],
        )
        .await;
    assert_error(&got, 400, "invalid_argument", "If-Match not a number");
    let long_key = "k".repeat(65);
    let got = d
        .call_with(
            Method::POST,
            "/v1/rooms/r1/stop",
            Some(&alice),
            Some(&json!({})),
            &[("idempotency-key", long_key.as_str())],
        )
        .await;
    assert_error(&got, 400, "invalid_argument", "Idempotency-Key over 64");

    // Nothing was appended, nothing changed, and the daemon is still up.
    assert_eq!(d.last_seq().await, seq);
    assert_eq!(d.ok_get("/v1/rooms/r1", &alice).await, room);
    let (status, health) = d.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "ok");
    // And it still works.
    d.ok_post(
        "/v1/rooms",
        &alice,
        &json!({"room_id": "r3", "max_cohosts": 16}),
    )
    .await;
}
