//! Bad input over HTTP against the real binary: oversized, malformed and mistyped bodies, unknown fields,
//! invalid ids and page sizes are refused with the contract's error body, append nothing, and the daemon stays up.

mod support;

use reqwest::Method;
use serde_json::json;
use support::{Flow, Step, call, get, invite, post, post_raw};

const INVALID: &str = "invalid_argument";

/// alice's live room r1 with bob invited; the room and the log position are saved.
fn given() -> Vec<Step> {
    vec![
        post("alice", "/v1/rooms", json!({"room_id": "r1"})),
        post("alice", "/v1/rooms/r1/live", json!({})),
        invite("alice", "r1", "bob").save("/invitation_id", "inv"),
        get("alice", "/v1/rooms/r1").save("", "room"),
        get("", "/healthz").token(None).save("/last_seq", "seq"),
    ]
}

/// Over 64 KiB: 413, for each body-taking route; exactly at the limit is not "too large" (a bad title instead).
fn too_large() -> Vec<Step> {
    let big = json!({"room_id": "big", "title": "x".repeat(70 * 1024)}).to_string();
    let mut steps: Vec<Step> = [
        "/v1/rooms",
        "/v1/rooms/r1/invitations",
        "/v1/rooms/r1/stop",
        "/v1/invitations/{inv}/accept",
    ]
    .map(|path| post_raw("alice", path, big.as_bytes()).err(413, INVALID))
    .into();
    let mut at_limit = json!({"room_id": "big", "title": ""})
        .to_string()
        .into_bytes();
    let pad = 64 * 1024 - at_limit.len();
    at_limit.splice(
        at_limit.len() - 2..at_limit.len() - 2,
        std::iter::repeat_n(b'y', pad),
    );
    assert_eq!(at_limit.len(), 64 * 1024);
    steps.push(
        post_raw("alice", "/v1/rooms", &at_limit)
            .err(400, INVALID)
            .why("body at the limit, title too long"),
    );
    steps
}

/// Malformed JSON.
fn malformed() -> Vec<Step> {
    let raw = [
        &b"{"[..],
        b"{\"room_id\": ",
        b"not json",
        b"[1, 2",
        b"\xff\xfe",
        b"null",
        b"[]",
        b"\"r3\"",
    ];
    (raw.iter().map(|raw| ("/v1/rooms", *raw)))
        .chain([
            ("/v1/rooms/r1/invitations", &b"{\"user_id\":"[..]),
            ("/v1/rooms/r1/stop", b"{oops}"),
            ("/v1/rooms/r1/stop", b"[]"),
            ("/v1/rooms/r1/stop", b" 7"),
            ("/v1/rooms/r1/invitations", b"[\"carol\"]"),
        ])
        .map(|(path, raw)| post_raw("alice", path, raw).err(400, INVALID))
        .collect()
}

/// Wrong types, missing and unknown fields, out-of-range values.
fn mistyped() -> Vec<Step> {
    let create = [
        json!({"room_id": "r3", "max_cohosts": "x"}),
        json!({"room_id": "r3", "max_cohosts": -1}),
        json!({"room_id": "r3", "max_cohosts": 300}),
        json!({"room_id": "r3", "max_cohosts": 1.5}),
        json!({"room_id": "r3", "max_cohosts": 17}),
        json!({"room_id": "r3", "max_cohosts": 0}),
        json!({"room_id": "r3", "title": 5}),
        json!({"room_id": "r3", "title": "t".repeat(201)}),
        json!({"room_id": "r3", "title": "two\nlines"}),
        json!({"room_id": "r3", "title": "nul\u{0}"}),
        json!({"room_id": "r3", "title": "esc\u{1b}[31m"}),
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
    let invites = [
        json!({"user_id": 7}),
        json!({"user_id": "b@d"}),
        json!({"user_id": ""}),
        json!({"user_id": "u".repeat(65)}),
        json!({"user_id": "carol", "extra": 1}),
        json!({}),
    ];
    let unknown_field = [
        "/v1/rooms/r1/live",
        "/v1/rooms/r1/stop",
        "/v1/rooms/r1/leave",
        "/v1/rooms/r1/requests",
    ];
    let create = create.map(|body| post("alice", "/v1/rooms", body));
    let invites = invites.map(|body| post("alice", "/v1/rooms/r1/invitations", body));
    let unknown = unknown_field.map(|path| post("bob", path, json!({"unexpected": 1})));
    let accept = post(
        "bob",
        "/v1/invitations/{inv}/accept",
        json!({"invitation_id": "{inv}"}),
    );
    (create.into_iter())
        .chain(invites)
        .chain(unknown)
        .chain([accept])
        .map(|step| step.err(400, INVALID))
        .collect()
}

/// Invalid ids in the path.
fn bad_ids() -> Vec<Step> {
    let long = "r".repeat(65);
    let gets = [
        "/v1/rooms/bad%20id",
        "/v1/rooms/b@d",
        &format!("/v1/rooms/{long}"),
        "/v1/rooms/%C3%A9",
        "/v1/rooms/bad%20id/invitations",
        "/v1/rooms/bad%20id/broadcaster-data",
    ];
    let posts = [
        "/v1/rooms/bad%20id/live",
        "/v1/rooms/r.1/stop",
        "/v1/rooms/bad%20id/leave",
        "/v1/rooms/bad%20id/requests",
        "/v1/invitations/not-an-id!/accept",
        "/v1/invitations/%20/reject",
        "/v1/invitations/x/cancel",
        &format!("/v1/invitations/{long}/accept"),
    ];
    let deletes = [
        "/v1/rooms/bad%20id/cohosts/bob",
        "/v1/rooms/r1/cohosts/b@d",
        &format!("/v1/rooms/r1/cohosts/{long}"),
    ];
    let gets = gets.map(|path| call(Method::GET, "alice", path));
    let posts = posts.map(|path| call(Method::POST, "alice", path));
    let deletes = deletes.map(|path| call(Method::DELETE, "alice", path));
    (gets.into_iter())
        .chain(posts)
        .chain(deletes)
        .chain([invite("alice", "bad%20id", "carol")])
        .map(|step| step.err(400, INVALID))
        .collect()
}

/// A method the route does not take: 405 with the JSON error body, not an empty one.
fn wrong_methods() -> Vec<Step> {
    [
        "PUT /v1/rooms",
        "DELETE /v1/rooms/r1",
        "GET /v1/rooms/r1/live",
        "GET /v1/invitations/{inv}/accept",
        "POST /v1/me/invitations",
        "PATCH /v1/rooms/r1/cohosts/bob",
    ]
    .map(|line| {
        let (method, path) = line.split_once(' ').expect("METHOD path");
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        call(method, "alice", path).err(405, INVALID)
    })
    .into()
}

/// Page sizes over the cap, zero, or not numbers; bad filters; unknown parameters; bad headers.
fn bad_queries_and_headers() -> Vec<Step> {
    let queries = [
        "limit=101",
        "limit=1000000000000000000000",
        "limit=0",
        "limit=-1",
        "limit=ten",
        "status=bogus",
        "status=",
        "kind=bogus",
        "sort=asc",
    ];
    let stop = || post("alice", "/v1/rooms/r1/stop", json!({}));
    (queries.iter())
        .flat_map(|query| {
            [
                get("alice", &format!("/v1/rooms/r1/invitations?{query}")).err(400, INVALID),
                get("bob", &format!("/v1/me/invitations?{query}")).err(400, INVALID),
            ]
        })
        .chain([
            get("alice", "/v1/rooms/r1/invitations?limit=100")
                .same_log()
                .why("limit=100 is allowed"),
            get("bob", "/v1/me/invitations?cursor=%00garbage")
                .any_of(&[200, 400])
                .why("a garbage cursor"),
            stop()
                .header("if-match", "not-a-version")
                .err(400, INVALID)
                .why("If-Match not a number"),
            stop()
                .header("idempotency-key", &"k".repeat(65))
                .err(400, INVALID)
                .why("Idempotency-Key over 64"),
        ])
        .collect()
}

/// Nothing was appended, nothing changed, the daemon is still up, and it still works.
fn then() -> Vec<Step> {
    vec![
        get("", "/healthz")
            .token(None)
            .ok(json!({"status": "ok", "last_seq": "{seq}"})),
        get("alice", "/v1/rooms/r1").ok(json!("{room}")),
        post(
            "alice",
            "/v1/rooms",
            json!({"room_id": "r3", "max_cohosts": 16}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_the_daemon_stays_up() {
    let mut flow = Flow::start().await;
    flow.run(given()).await;
    flow.run(too_large()).await;
    flow.run(malformed()).await;
    flow.run(mistyped()).await;
    flow.run(bad_ids()).await;
    flow.run(wrong_methods()).await;
    flow.run(bad_queries_and_headers()).await;
    flow.run(then()).await;
}
