//! Authentication and authorization over HTTP against the real binary: bad tokens are 401 `unauthenticated`,
//! the wrong user is 403, and nothing changes in any of these cases.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use support::{Flow, Step, delete, dev_secret, get, invite, now_s, post};

const DENIED: &str = "permission_denied";

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
async fn snapshot(flow: &mut Flow) -> Vec<Value> {
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|user| flow.token(user));
    let d = &flow.d;
    vec![
        d.ok_get("/v1/rooms/r1", &alice).await,
        d.ok_get("/v1/rooms/r1/invitations", &alice).await,
        d.ok_get("/v1/me/invitations", &bob).await,
        d.ok_get("/v1/me/invitations", &carol).await,
        json!(d.last_seq().await),
    ]
}

/// alice's live room r1 with bob seated and carol invited.
fn given() -> Vec<Step> {
    vec![
        post("alice", "/v1/rooms", json!({"room_id": "r1"})),
        post("alice", "/v1/rooms/r1/live", json!({})),
        invite("alice", "r1", "bob").save("/invitation_id", "bob"),
        post("bob", "/v1/invitations/{bob}/accept", json!({})),
        invite("alice", "r1", "carol").save("/invitation_id", "carol"),
    ]
}

/// Missing, malformed, expired, wrongly signed, unsigned and otherwise-signed tokens, by name.
fn bad_tokens(secret: &str) -> Vec<(&'static str, Option<String>)> {
    let exp = now_s() + 3_600;
    let alice = json!({"sub": "alice", "exp": exp});
    let hs256 = |claims: Value| Some(sign(Algorithm::HS256, secret, &claims));
    vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("garbage", Some("not.a.jwt".into())),
        (
            "expired",
            hs256(json!({"sub": "alice", "exp": now_s() - 60})),
        ),
        (
            "wrong signature",
            Some(sign(
                Algorithm::HS256,
                "some-other-secret-0123456789abcdef",
                &alice,
            )),
        ),
        ("alg none", Some(unsigned(&alice, ""))),
        ("alg none with a signature", Some(unsigned(&alice, "c2ln"))),
        ("HS512", Some(sign(Algorithm::HS512, secret, &alice))),
        ("no exp", hs256(json!({"sub": "alice"}))),
        (
            "not valid before a minute from now",
            hs256(json!({"sub": "alice", "exp": exp, "nbf": now_s() + 60})),
        ),
        (
            "a lifetime of 25 h by iat",
            hs256(json!({"sub": "alice", "iat": now_s(), "exp": now_s() + 25 * 3_600})),
        ),
        (
            "ten years ahead, with an iat an hour before its exp",
            hs256(json!({
                "sub": "alice",
                "iat": now_s() + 10 * 365 * 86_400 - 3_600,
                "exp": now_s() + 10 * 365 * 86_400,
            })),
        ),
        (
            "a lifetime of 25 h from now, without iat",
            hs256(json!({"sub": "alice", "exp": now_s() + 25 * 3_600})),
        ),
        ("no sub", hs256(json!({"exp": exp}))),
        (
            "invalid sub",
            hs256(json!({"sub": "alice bob", "exp": exp})),
        ),
    ]
}

/// Every route, each bad token: 401 `unauthenticated`. And a token in a scheme other than Bearer. (The calls'
/// user is a placeholder: `token` replaces it.)
fn unauthenticated(secret: &str, alice: &str) -> Vec<Step> {
    let calls = [
        post("", "/v1/rooms/r1/stop", json!({})),
        post("", "/v1/rooms", json!({"room_id": "r2"})),
        invite("", "r1", "erin"),
        post("", "/v1/invitations/{carol}/cancel", json!({})),
        delete("", "/v1/rooms/r1/cohosts/bob"),
        get("", "/v1/rooms/r1"),
        get("", "/v1/rooms/r1/invitations"),
        get("", "/v1/me/invitations"),
        get("", "/v1/rooms/r1/broadcaster-data"),
    ];
    let mut steps: Vec<Step> = (bad_tokens(secret).into_iter())
        .flat_map(|(what, token)| {
            calls.clone().map(|call| {
                call.token(token.as_deref())
                    .err(401, "unauthenticated")
                    .why(what)
            })
        })
        .collect();
    steps.push(
        post("", "/v1/rooms/r1/stop", json!({}))
            .token(None)
            .header("authorization", &format!("Basic {alice}"))
            .err(401, "unauthenticated")
            .why("Basic scheme"),
    );
    steps
}

/// The wrong user for the action: 403.
fn wrong_users() -> Vec<Step> {
    vec![
        // Another user accepts (or rejects, or cancels) someone's invitation.
        post("dave", "/v1/invitations/{carol}/accept", json!({})).err(403, DENIED),
        post("dave", "/v1/invitations/{carol}/reject", json!({})).err(403, DENIED),
        post("dave", "/v1/invitations/{carol}/cancel", json!({})).err(403, DENIED),
        // The host cannot accept on the candidate's behalf, and the candidate cannot cancel the host's invite.
        post("alice", "/v1/invitations/{carol}/accept", json!({})).err(403, DENIED),
        post("carol", "/v1/invitations/{carol}/cancel", json!({})).err(403, DENIED),
        // A co-host invites, stops, lists; a stranger stops; a candidate removes a co-host.
        invite("bob", "r1", "erin").err(403, DENIED),
        post("bob", "/v1/rooms/r1/stop", json!({})).err(403, DENIED),
        post("dave", "/v1/rooms/r1/stop", json!({})).err(403, DENIED),
        delete("carol", "/v1/rooms/r1/cohosts/bob").err(403, DENIED),
        get("bob", "/v1/rooms/r1/invitations").err(403, DENIED),
        // A stranger's broadcaster data.
        get("dave", "/v1/rooms/r1/broadcaster-data").any_of(&[403, 409]),
    ]
}

/// The scheme name in any case (RFC 7235), and a 401 that names the scheme it wants.
async fn scheme_names(flow: &mut Flow) {
    let alice = flow.token("alice");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let reply = flow
            .d
            .http
            .get(flow.d.url("/v1/rooms/r1"))
            .header("authorization", format!("{scheme} {alice}"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{scheme}");
    }
    let reply = flow
        .d
        .http
        .get(flow.d.url("/v1/rooms/r1"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert_eq!(
        reply.headers()["www-authenticate"],
        "Bearer realm=\"cohost\""
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn issuer_and_audience_are_checked_when_configured() {
    let args = [
        "--jwt-issuer",
        "https://id.example",
        "--jwt-audience",
        "cohost",
    ];
    let mut flow = Flow::start_with(&args).await;
    let dir = flow.d.dir.clone();
    let exp = now_s() + 600;
    let token = |claims: Value| Some(support::signed(&dir, &claims));
    let cases = [
        (
            "no iss or aud",
            token(json!({"sub": "alice", "exp": exp})),
            401,
        ),
        (
            "another issuer",
            token(
                json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "cohost"}),
            ),
            401,
        ),
        (
            "another audience",
            token(json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": "other"})),
            401,
        ),
        (
            "both right",
            token(
                json!({"sub": "alice", "exp": exp, "iss": "https://id.example", "aud": "cohost"}),
            ),
            404,
        ),
    ];
    let steps: Vec<Step> = cases
        .into_iter()
        .map(|(why, token, status)| {
            let code = if status == 401 {
                "unauthenticated"
            } else {
                "not_found"
            };
            get("", "/v1/rooms/r1")
                .token(token.as_deref())
                .err(status, code)
                .why(why)
        })
        .collect();
    flow.run(steps).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_and_wrong_users_change_nothing() {
    let mut flow = Flow::start().await;
    flow.run(given()).await;
    let before = snapshot(&mut flow).await;

    let alice = flow.token("alice");
    flow.run(unauthenticated(&dev_secret(&flow.d.dir), &alice))
        .await;
    assert_eq!(snapshot(&mut flow).await, before);
    flow.run(wrong_users()).await;
    assert_eq!(snapshot(&mut flow).await, before);
    scheme_names(&mut flow).await;

    // The metrics page still renders and the daemon is healthy.
    let (status, _) = flow.d.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, reqwest::StatusCode::OK);
}
