//! Moderators over HTTP against the real binary: the host appoints and removes them; a moderator runs the stage
//! (invites, answers requests, removes) but may not stop the room or change moderators.

mod support;

use serde_json::json;
use support::{Flow, Step, delete, get, invite, post};

const MODERATORS: &str = "/v1/rooms/stage-1/moderators";

fn moderators() -> Vec<Step> {
    vec![
        post("alice", "/v1/rooms", json!({"room_id": "stage-1"})).ok(json!({"moderators": []})),
        post("alice", "/v1/rooms/stage-1/live", json!({})).ok(json!({"status": "live"})),
        // Only the host appoints, never themselves, never twice.
        post("bob", MODERATORS, json!({"user_id": "dave"})).err(403, "permission_denied"),
        post("alice", MODERATORS, json!({"user_id": "alice"})).err(400, "invalid_argument"),
        post("alice", MODERATORS, json!({"user_id": "dave"}))
            .ok(json!({"moderators": ["dave"], "version": 3})),
        post("alice", MODERATORS, json!({"user_id": "dave"})).err(409, "already_exists"),
        post("alice", MODERATORS, json!({"name": "dave"})).err(400, "invalid_argument"),
        // dave invites bob, who accepts; dave takes carol's request; dave removes bob.
        invite("dave", "stage-1", "bob").save("/invitation_id", "bob1"),
        post("bob", "/v1/invitations/{bob1}/accept", json!({}))
            .ok(json!({"invitation": {"status": "approved", "seat": 1}})),
        post("carol", "/v1/rooms/stage-1/requests", json!({})).save("/invitation_id", "carol1"),
        post("dave", "/v1/invitations/{carol1}/accept", json!({}))
            .ok(json!({"invitation": {"status": "approved", "user_id": "carol", "seat": 2}})),
        delete("dave", "/v1/rooms/stage-1/cohosts/bob")
            .ok(json!({"cohosts": [{"user_id": "carol", "seat": 2}]})),
        // dave closes the room to requests; erin's is refused until alice opens it again.
        post("erin", "/v1/rooms/stage-1/requests/close", json!({})).err(403, "permission_denied"),
        post("dave", "/v1/rooms/stage-1/requests/close", json!({}))
            .ok(json!({"requests_open": false})),
        post("erin", "/v1/rooms/stage-1/requests", json!({})).err(409, "failed_precondition"),
        post("alice", "/v1/rooms/stage-1/requests/open", json!({}))
            .ok(json!({"requests_open": true})),
        post("erin", "/v1/rooms/stage-1/requests", json!({})).ok(json!({"kind": "request"})),
        // A moderator may not invite themselves, stop the room, or change moderators.
        invite("dave", "stage-1", "dave").err(400, "invalid_argument"),
        post("dave", "/v1/rooms/stage-1/stop", json!({})).err(403, "permission_denied"),
        post("dave", MODERATORS, json!({"user_id": "erin"})).err(403, "permission_denied"),
        delete("dave", &format!("{MODERATORS}/dave")).err(403, "permission_denied"),
        // The host removes dave; he runs nothing any more.
        delete("alice", &format!("{MODERATORS}/erin")).err(404, "not_found"),
        delete("alice", &format!("{MODERATORS}/dave")).ok(json!({"moderators": []})),
        invite("dave", "stage-1", "erin").err(403, "permission_denied"),
        get("erin", "/v1/rooms/stage-1").ok(json!({"moderators": [], "requests_open": true})),
        // After the stop only reads are taken.
        post("alice", "/v1/rooms/stage-1/stop", json!({})).ok(json!({"status": "ended"})),
        post("alice", MODERATORS, json!({"user_id": "dave"})).err(409, "failed_precondition"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_appoints_moderators_who_run_the_stage_but_not_the_room() {
    let mut flow = Flow::start().await;
    flow.run(moderators()).await;
}
