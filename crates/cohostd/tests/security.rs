//! Authentication and authorization over HTTP against the real binary: bad tokens are 401 `unauthenticated`,
//! the wrong user is 403, and nothing changes in any of these cases.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Daemon, assert_error, data_dir, dev_secret};

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(algorithm: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token: `{"alg":"none"}`, with an empty signature (or a given one).
fn unsigned(claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(claims.to_string().as_bytes())
    )
}

/// The room, every invitation list the test can see, and the log position.
async fn snapshot(d: &Daemon, alice: &str, bob: &str, carol: &str) -> Vec<Value> {
    vec![
        d.ok_get("/v1/rooms/r1", alice).await,
        d.ok_get("/v1/rooms/r1/invitations", alice).await,
        d.ok_get("/v1/me/invitations", bob).await,
        d.ok_get("/v1/me/invitations", carol).await,
        json!(d.last_seq().await),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_and_wrong_users_change_nothing() {
    let dir = data_dir();
    let d = Daemon::start(dir.path()).await;
    let alice = d.token("alice");
    let bob = d.token("bob");
    let carol = d.token("carol");
    let dave = d.token("dave");
    let secret = dev_secret(dir.path());

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
    let bob_invitation = invitation["invitation_id"].as_str().unwrap().to_owned();
    d.ok_post(
        &format!("/v1/invitations/{bob_invitation}/accept"),
        &bob,
        &json!({}),
    )
    .await;
    let invitation = d
        .ok_post(
            "/v1/rooms/r1/invitations",
            &alice,
            &json!({"user_id": "carol"}),
        )
        .await;
    let carol_invitation = invitation["invitation_id"].as_str().unwrap().to_owned();

    let before = snapshot(&d, &alice, &bob, &carol).await;

    // 401: missing, malformed, expired, wrongly signed, unsigned and otherwise-signed tokens.
    let exp = now_s() + 3_600;
    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("garbage", Some("not.a.jwt".into())),
        (
            "expired",
            Some(sign(
                Algorithm::HS256,
                &secret,
                &json!({"sub": "alice", "exp": now_s() - 60}),
            )),
        ),
        (
            "wrong signature",
            Some(sign(
                Algorithm::HS256,
                "some-other-secret-0123456789abcdef",
                &json!({"sub": "alice", "exp": exp}),
            )),
        ),
        (
            "alg none",
            Some(unsigned(&json!({"sub": "alice", "exp": exp}), "")),
        ),
        (
            "alg none with a signature",
            Some(unsigned(&json!({"sub": "alice", "exp": exp}), "c2ln")),
        ),
        (
            "HS512",
            Some(sign(
                Algorithm::HS512,
                &secret,
                &json!({"sub": "alice", "exp": exp}),
            )),
        ),
        (
            "no exp",
            Some(sign(Algorithm::HS256, &secret, &json!({"sub": "alice"}))),
        ),
        (
            "no sub",
            Some(sign(Algorithm::HS256, &secret, &json!({"exp": exp}))),
        ),
        (
            "invalid sub",
            Some(sign(
                Algorithm::HS256,
                &secret,
                &json!({"sub": "alice bob", "exp": exp}),
            )),
        ),
    ];
    let stop = json!({});
    let create = json!({"room_id": "r2"});
    let invite = json!({"user_id": "erin"});
    let calls: Vec<(Method, String, Option<&Value>)> = vec![
        (Method::POST, "/v1/rooms/r1/stop".into(), Some(&stop)),
        (Method::POST, "/v1/rooms".into(), Some(&create)),
        (
            Method::POST,
            "/v1/rooms/r1/invitations".into(),
            Some(&invite),
        ),
        (
            Method::POST,
            format!("/v1/invitations/{carol_invitation}/cancel"),
            Some(&stop),
        ),
        (Method::DELETE, "/v1/rooms/r1/cohosts/bob".into(), None),
        (Method::GET, "/v1/rooms/r1".into(), None),
        (Method::GET, "/v1/rooms/r1/invitations".into(), None),
        (Method::GET, "/v1/me/invitations".into(), None),
        (Method::GET, "/v1/rooms/r1/broadcaster-data".into(), None),
    ];
    for (what, token) in &bad_tokens {
        for (method, path, body) in &calls {
            let got = d.call(method.clone(), path, token.as_deref(), *body).await;
            assert_error(
                &got,
                401,
                "unauthenticated",
                &format!("{what}: {method} {path}"),
            );
        }
    }
    // Not a Bearer scheme.
    let got = d
        .call_with(
            Method::POST,
            "/v1/rooms/r1/stop",
            None,
            Some(&stop),
            &[("authorization", &format!("Basic {alice}"))],
        )
        .await;
    assert_error(&got, 401, "unauthenticated", "Basic scheme");
    assert_eq!(snapshot(&d, &alice, &bob, &carol).await, before);

    // 403: another user accepts (or rejects, or cancels) someone's invitation.
    for (action, token) in [("accept", &dave), ("reject", &dave), ("cancel", &dave)] {
        let got = d
            .post(
                &format!("/v1/invitations/{carol_invitation}/{action}"),
                token,
                &json!({}),
            )
            .await;
        assert_error(&got, 403, "permission_denied", &format!("dave {action}s"));
    }
    // The host cannot accept on the candidate's behalf, and the candidate cannot cancel the host's invite.
    let got = d
        .post(
            &format!("/v1/invitations/{carol_invitation}/accept"),
            &alice,
            &json!({}),
        )
        .await;
    assert_error(&got, 403, "permission_denied", "host accepts an invite");
    let got = d
        .post(
            &format!("/v1/invitations/{carol_invitation}/cancel"),
            &carol,
            &json!({}),
        )
        .await;
    assert_error(
        &got,
        403,
        "permission_denied",
        "candidate cancels an invite",
    );
    // A co-host invites, stops, goes live, removes a co-host: 403.
    let got = d
        .post(
            "/v1/rooms/r1/invitations",
            &bob,
            &json!({"user_id": "erin"}),
        )
        .await;
    assert_error(&got, 403, "permission_denied", "co-host invites");
    let got = d.post("/v1/rooms/r1/stop", &bob, &json!({})).await;
    assert_error(&got, 403, "permission_denied", "co-host stops");
    let got = d.post("/v1/rooms/r1/stop", &dave, &json!({})).await;
    assert_error(&got, 403, "permission_denied", "stranger stops");
    let got = d
        .call(
            Method::DELETE,
            "/v1/rooms/r1/cohosts/bob",
            Some(&carol),
            None,
        )
        .await;
    assert_error(
        &got,
        403,
        "permission_denied",
        "candidate removes a co-host",
    );
    let got = d.get("/v1/rooms/r1/invitations", &bob).await;
    assert_error(&got, 403, "permission_denied", "co-host lists");
    let got = d.get("/v1/rooms/r1/broadcaster-data", &dave).await;
    assert!(
        got.0 == StatusCode::FORBIDDEN || got.0 == StatusCode::CONFLICT,
        "stranger's broadcaster data: {got:?}"
    );
    assert!(got.1.get("error").is_some(), "{got:?}");

    assert_eq!(snapshot(&d, &alice, &bob, &carol).await, before);
    // The metrics page still renders and the daemon is healthy.
    let (status, _) = d.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
}
