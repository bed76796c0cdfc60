//! Seats, bans and media over HTTP against the real binary: each route with the right party and the wrong
//! one, bad input, and the room each returns.

mod support;

use serde_json::json;
use support::{Flow, Step, delete, get, invite, post};

const BANS: &str = "/v1/rooms/stage-1/bans";

/// A live room of four seats with dave as moderator, bob on seat 3 (asked for) and carol on seat 1.
fn staged() -> Vec<Step> {
    vec![
        post(
            "alice",
            "/v1/rooms",
            json!({"room_id": "stage-1", "max_cohosts": 4}),
        )
        .ok(json!({"locked_seats": []})),
        post("alice", "/v1/rooms/stage-1/live", json!({})).ok(json!({"status": "live"})),
        post(
            "alice",
            "/v1/rooms/stage-1/moderators",
            json!({"user_id": "dave"}),
        )
        .ok(json!({"moderators": ["dave"]})),
        post(
            "alice",
            "/v1/rooms/stage-1/invitations",
            json!({"user_id": "bob", "seat": 3}),
        )
        .ok(json!({"seat": 3}))
        .save("/invitation_id", "bob1"),
        post(
            "alice",
            "/v1/rooms/stage-1/invitations",
            json!({"user_id": "bob", "seat": 9}),
        )
        .err(400, "invalid_argument"),
        post(
            "erin",
            "/v1/rooms/stage-1/invitations",
            json!({"user_id": "zed"}),
        )
        .err(403, "permission_denied"),
        post("bob", "/v1/invitations/{bob1}/accept", json!({}))
            .ok(json!({"invitation": {"status": "approved", "seat": 3}})),
        post(
            "carol",
            "/v1/rooms/stage-1/requests",
            json!({"seat": "one"}),
        )
        .err(400, "invalid_argument"),
        post("carol", "/v1/rooms/stage-1/requests", json!({})).save("/invitation_id", "carol1"),
        post("alice", "/v1/invitations/{carol1}/accept", json!({}))
            .ok(json!({"invitation": {"user_id": "carol", "seat": 1}})),
    ]
}

fn seats_and_media() -> Vec<Step> {
    vec![
        // Lock an empty seat, not a taken one; only the stage's runners.
        post("bob", "/v1/rooms/stage-1/seats/2/lock", json!({})).err(403, "permission_denied"),
        post("dave", "/v1/rooms/stage-1/seats/3/lock", json!({})).err(409, "failed_precondition"),
        post("dave", "/v1/rooms/stage-1/seats/5/lock", json!({})).err(400, "invalid_argument"),
        post("dave", "/v1/rooms/stage-1/seats/two/lock", json!({})).err(400, "invalid_argument"),
        post("dave", "/v1/rooms/stage-1/seats/2/lock", json!({})).ok(json!({"locked_seats": [2]})),
        post("alice", "/v1/rooms/stage-1/seats/2/lock", json!({})).ok(json!({"locked_seats": [2]})),
        // A move to a locked seat is refused, to a taken one swaps.
        post(
            "alice",
            "/v1/rooms/stage-1/cohosts/bob/move",
            json!({"seat": 2}),
        )
        .err(409, "failed_precondition"),
        post(
            "carol",
            "/v1/rooms/stage-1/cohosts/bob/move",
            json!({"seat": 4}),
        )
        .err(403, "permission_denied"),
        post(
            "alice",
            "/v1/rooms/stage-1/cohosts/erin/move",
            json!({"seat": 4}),
        )
        .err(404, "not_found"),
        post("alice", "/v1/rooms/stage-1/cohosts/bob/move", json!({})).err(400, "invalid_argument"),
        post(
            "dave",
            "/v1/rooms/stage-1/cohosts/bob/move",
            json!({"seat": 1}),
        )
        .ok(json!({
            "cohosts": [{"user_id": "bob", "seat": 1}, {"user_id": "carol", "seat": 3}]
        })),
        post("alice", "/v1/rooms/stage-1/seats/2/unlock", json!({}))
            .ok(json!({"locked_seats": []})),
        // Mute bob's audio, then his video; carol is untouched.
        post("alice", "/v1/rooms/stage-1/cohosts/bob/media", json!({}))
            .err(400, "invalid_argument"),
        post(
            "alice",
            "/v1/rooms/stage-1/cohosts/bob/media",
            json!({"audio": "off"}),
        )
        .err(400, "invalid_argument"),
        post(
            "carol",
            "/v1/rooms/stage-1/cohosts/bob/media",
            json!({"audio": false}),
        )
        .err(403, "permission_denied"),
        post(
            "alice",
            "/v1/rooms/stage-1/cohosts/erin/media",
            json!({"audio": false}),
        )
        .err(404, "not_found"),
        post(
            "dave",
            "/v1/rooms/stage-1/cohosts/bob/media",
            json!({"audio": false}),
        )
        .ok(json!({
            "cohosts": [
                {"user_id": "bob", "audio": false, "video": true},
                {"user_id": "carol", "audio": true, "video": true}
            ]
        })),
        post(
            "alice",
            "/v1/rooms/stage-1/cohosts/bob/media",
            json!({"video": false}),
        )
        .ok(json!({"cohosts": [{"user_id": "bob", "audio": false, "video": false}, {}]})),
        get("erin", "/v1/rooms/stage-1").ok(json!({
            "cohosts": [{"user_id": "bob", "seat": 1, "audio": false}, {"user_id": "carol"}]
        })),
    ]
}

fn bans() -> Vec<Step> {
    vec![
        // Only the host or a moderator bans, never the host, and a moderator only by the host.
        post("carol", BANS, json!({"user_id": "bob"})).err(403, "permission_denied"),
        post("dave", BANS, json!({"user_id": "alice"})).err(403, "permission_denied"),
        post(
            "alice",
            "/v1/rooms/stage-1/moderators",
            json!({"user_id": "frank"}),
        )
        .ok(json!({})),
        post("dave", BANS, json!({"user_id": "frank"})).err(403, "permission_denied"),
        post("alice", BANS, json!({"user_id": "bob", "duration_s": 0}))
            .err(400, "invalid_argument"),
        post("alice", BANS, json!({"user_id": "bob", "duration_s": -1}))
            .err(400, "invalid_argument"),
        post("alice", BANS, json!({})).err(400, "invalid_argument"),
        // erin has a pending request: the ban cancels it.
        post("erin", "/v1/rooms/stage-1/requests", json!({})).save("/invitation_id", "erin1"),
        post("dave", BANS, json!({"user_id": "erin", "duration_s": 3600})).ok(json!({})),
        post("alice", "/v1/invitations/{erin1}/accept", json!({})).err(409, "failed_precondition"),
        post("erin", "/v1/rooms/stage-1/requests", json!({})).err(403, "permission_denied"),
        // bob is seated: the ban takes his seat; he cannot be invited back.
        post("dave", BANS, json!({"user_id": "bob"}))
            .ok(json!({"cohosts": [{"user_id": "carol"}]})),
        invite("alice", "stage-1", "bob").err(403, "permission_denied"),
        post("bob", "/v1/rooms/stage-1/leave", json!({})).err(404, "not_found"),
        // frank, a moderator, banned by the host: the role ends too.
        post("alice", BANS, json!({"user_id": "frank"})).ok(json!({"moderators": ["dave"]})),
        // Unban: the stage's runners, a user banned.
        delete("carol", &format!("{BANS}/bob")).err(403, "permission_denied"),
        delete("alice", &format!("{BANS}/carol")).err(404, "not_found"),
        delete("dave", &format!("{BANS}/bob")).ok(json!({"cohosts": [{"user_id": "carol"}]})),
        delete("dave", &format!("{BANS}/bob")).err(404, "not_found"),
        invite("alice", "stage-1", "bob").ok(json!({"status": "pending"})),
        // After the stop only reads are taken.
        post("alice", "/v1/rooms/stage-1/stop", json!({})).ok(json!({"status": "ended"})),
        post("alice", BANS, json!({"user_id": "zed"})).err(409, "failed_precondition"),
        post("alice", "/v1/rooms/stage-1/seats/4/lock", json!({})).err(409, "failed_precondition"),
        delete("alice", &format!("{BANS}/erin")).err(409, "failed_precondition"),
    ]
}

/// The room's history: the host and moderators read it, paged; others may not.
fn history() -> Vec<Step> {
    const EVENTS: &str = "/v1/rooms/stage-1/events";
    vec![
        get("bob", EVENTS).err(403, "permission_denied"),
        get("erin", EVENTS).err(403, "permission_denied"),
        get("alice", "/v1/rooms/nowhere/events").err(404, "not_found"),
        get("alice", &format!("{EVENTS}?limit=0")).err(400, "invalid_argument"),
        get("alice", &format!("{EVENTS}?limit=1001")).err(400, "invalid_argument"),
        get("alice", &format!("{EVENTS}?after_version=-1")).err(400, "invalid_argument"),
        get("alice", &format!("{EVENTS}?cursor=3")).err(400, "invalid_argument"),
        get("alice", &format!("{EVENTS}?limit=2")).ok(json!({
            "items": [
                {"version": 1, "type": "room_created", "actor": "alice"},
                {"version": 2, "type": "room_live"}
            ],
            "next_cursor": "2"
        })),
        // A removal says why and by whom.
        get("dave", &format!("{EVENTS}?after_version=16&limit=1")).ok(json!({
            "items": [{"version": 17, "type": "cohost_removed", "reason": "ban", "user_id": "bob", "actor": "dave"}],
            "next_cursor": "17"
        })),
        get("alice", &format!("{EVENTS}?after_version=1000")).ok(json!({"items": [], "next_cursor": null})),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stage_runners_seat_mute_and_ban_and_no_one_else_does() {
    let mut flow = Flow::start().await;
    flow.run(staged()).await;
    flow.run(seats_and_media()).await;
    flow.run(bans()).await;
    flow.run(history()).await;
}
