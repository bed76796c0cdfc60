//! Cluster mode, the stage controls: a moderator, a seat asked for, a mute, a move, a locked seat and a ban, each
//! step sent to the next node in turn (most are forwarded to the room's owner); the room's live collection and
//! its history on a node that does not own it; then the owner stops, another node takes the partition from the
//! log, and the stage is as it was: the seats, the media, the lock, the moderator and the ban still hold.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::cluster::{Cluster, Live, PARTITIONS, token};
use support::livekit_webhook;

use cohost_proto::{RoomId, partition};

/// `user` sends `method path` with `body` to node `n` (of three); returns the status and the body.
async fn send(
    cluster: &Cluster,
    n: usize,
    user: &str,
    (method, path): (Method, &str),
    body: Value,
) -> (StatusCode, Value) {
    let nodes = cluster.nodes.read().await;
    let node = (nodes.iter().flatten())
        .cycle()
        .nth(n)
        .expect("a node runs");
    let body = (method != Method::GET).then_some(body);
    node.call(method, path, Some(&token(user)), body.as_ref())
        .await
}

/// As [`send`], expecting 200.
async fn ok(cluster: &Cluster, n: usize, user: &str, call: (Method, &str), body: Value) -> Value {
    let what = format!("{} {} by {user} on node {n}", call.0, call.1);
    let (status, reply) = send(cluster, n, user, call, body).await;
    assert_eq!(status, StatusCode::OK, "{what}: {reply}");
    reply
}

/// What must survive a takeover: each co-host's seat and media, the locks and the moderators.
fn stage_of(room: &Value) -> Value {
    let seats: Vec<Value> = (room["cohosts"].as_array().expect("co-hosts").iter())
        .map(|s| json!([s["user_id"], s["seat"], s["audio"], s["video"]]))
        .collect();
    json!({"seats": seats, "locked": room["locked_seats"], "moderators": room["moderators"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_controls_hold_across_nodes_and_a_takeover() {
    let cluster = Cluster::start().await;
    let room = "stage-c";
    let p = partition::of(&RoomId::new(room).unwrap(), PARTITIONS);
    let owner = cluster.owners().await[&p];
    let path = format!("/v1/rooms/{room}");
    let (post, get) = (Method::POST, Method::GET);
    ok(
        &cluster,
        0,
        "alice",
        (post.clone(), "/v1/rooms"),
        json!({"room_id": room, "max_cohosts": 4}),
    )
    .await;
    ok(
        &cluster,
        1,
        "alice",
        (post.clone(), &format!("{path}/live")),
        json!({}),
    )
    .await;
    // A node that does not own the room follows it live.
    let viewer = (owner + 1) % 3;
    let viewer_url = cluster.nodes.read().await[viewer].as_ref().unwrap().url("");
    let mut live = Live::open_as(&viewer_url, &path, "zed", None).await;
    let (event, id, snapshot) = live.next().await.expect("a snapshot");
    assert_eq!(
        (event.as_str(), id, &snapshot["status"]),
        ("snapshot", 2, &json!("live"))
    );

    let moderators = format!("{path}/moderators");
    ok(
        &cluster,
        2,
        "alice",
        (post.clone(), &moderators),
        json!({"user_id": "dave"}),
    )
    .await;
    let invitations = format!("{path}/invitations");
    let invited = ok(
        &cluster,
        3,
        "dave",
        (post.clone(), &invitations),
        json!({"user_id": "bob", "seat": 2}),
    )
    .await;
    let accept = format!(
        "/v1/invitations/{}/accept",
        invited["invitation_id"].as_str().unwrap()
    );
    let accepted = ok(&cluster, 4, "bob", (post.clone(), &accept), json!({})).await;
    assert_eq!(accepted["invitation"]["seat"], 2, "{accepted}");
    ok(
        &cluster,
        5,
        "dave",
        (post.clone(), &format!("{path}/cohosts/bob/media")),
        json!({"audio": false}),
    )
    .await;
    ok(
        &cluster,
        6,
        "alice",
        (post.clone(), &format!("{path}/seats/1/lock")),
        json!({}),
    )
    .await;
    let (status, refused) = send(
        &cluster,
        7,
        "dave",
        (post.clone(), &format!("{path}/cohosts/bob/move")),
        json!({"seat": 1}),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (StatusCode::CONFLICT, &json!("failed_precondition"))
    );
    ok(
        &cluster,
        8,
        "dave",
        (post.clone(), &format!("{path}/cohosts/bob/move")),
        json!({"seat": 4}),
    )
    .await;
    ok(
        &cluster,
        9,
        "erin",
        (post.clone(), &format!("{path}/requests")),
        json!({}),
    )
    .await;
    let banned = ok(
        &cluster,
        10,
        "dave",
        (post.clone(), &format!("{path}/bans")),
        json!({"user_id": "erin"}),
    )
    .await;
    let version = banned["version"].as_u64().expect("the room");
    assert_eq!(version, 11, "{banned}");

    // The viewer saw each change in order.
    let kinds = [
        "moderator_added",
        "invitation_created",
        "invitation_approved",
        "cohost_media_changed",
        "seat_locked",
        "cohost_moved",
        "invitation_created",
        "invitation_cancelled",
        "user_banned",
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let (event, id, data) = live.next().await.expect("a change");
        assert_eq!(
            (event.as_str(), id, data["type"].as_str()),
            ("change", 3 + i as u64, Some(*kind))
        );
    }
    // Its history, read on another node.
    let history = ok(
        &cluster,
        11,
        "dave",
        (get.clone(), &format!("{path}/events?after_version=9")),
        json!(null),
    )
    .await;
    let types: Vec<&str> = (history["items"].as_array().unwrap().iter())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["invitation_cancelled", "user_banned"], "{history}");
    let before = stage_of(&banned);
    assert_eq!(
        before,
        json!({"seats": [["bob", 4, false, true]], "locked": [1], "moderators": ["dave"]})
    );

    // The owner stops; another node takes the partition from the log and serves the same stage.
    cluster.stop_node(owner).await;
    let taken = cluster.room(room, p).await;
    assert_eq!(taken["version"], version, "{taken}");
    assert_eq!(stage_of(&taken), before, "{taken}");
    let (status, refused) = send(
        &cluster,
        0,
        "erin",
        (post.clone(), &format!("{path}/requests")),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("permission_denied")),
        "the ban holds"
    );
    let (status, refused) = send(
        &cluster,
        1,
        "alice",
        (post.clone(), &invitations),
        json!({"user_id": "carol", "seat": 1}),
    )
    .await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (StatusCode::CONFLICT, &json!("failed_precondition")),
        "the lock holds"
    );
    ok(
        &cluster,
        0,
        "dave",
        (post.clone(), &format!("{path}/cohosts/bob/media")),
        json!({"audio": true}),
    )
    .await;
    let unbanned = ok(
        &cluster,
        1,
        "dave",
        (Method::DELETE, &format!("{path}/bans/erin")),
        json!({}),
    )
    .await;
    assert_eq!(unbanned["version"], version + 2, "{unbanned}");
    assert_eq!(
        stage_of(&unbanned)["seats"],
        json!([["bob", 4, true, true]])
    );
}

/// The nodes' LiveKit key pair (`support::cluster`), with which LiveKit would sign its webhooks.
const LIVEKIT_KEY: &str = "cluster-test-key";
const LIVEKIT_SECRET: &str = "cluster-test-livekit-secret-0123456789";
const GRACE_S: u64 = 3;

/// A participant webhook for `user` in session `sid`, signed with the nodes' key pair.
fn webhook(kind: &str, user: &str, sid: &str, id: &str, room: &str) -> (String, String) {
    livekit_webhook((LIVEKIT_KEY, LIVEKIT_SECRET), kind, (user, sid), id, room)
}

/// Delivers a webhook to node `n`, as LiveKit would to whichever node its load balancer picks.
async fn deliver(cluster: &Cluster, n: usize, (body, jwt): (String, String)) -> Value {
    let url = cluster.nodes.read().await[n]
        .as_ref()
        .unwrap()
        .url("/v1/livekit/webhook");
    let response = reqwest::Client::new()
        .post(url)
        .header("authorization", jwt)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the webhook on node {n}");
    response.json().await.unwrap()
}

/// With webhooks on: a webhook sent to a node that does not own the room reaches the owner; and a co-host's
/// disconnect grace, begun on one owner, ends on the node that takes the partition after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_the_owner_and_the_grace_moves_with_the_partition() {
    let grace = GRACE_S.to_string();
    let flags = ["--livekit-webhooks", "true", "--disconnect-grace-s", &grace];
    let cluster = Cluster::start_with_flags(1_000_000, &flags).await;
    let room = "stage-w";
    let p = partition::of(&RoomId::new(room).unwrap(), PARTITIONS);
    let owner = cluster.owners().await[&p];
    let others = [(owner + 1) % 3, (owner + 2) % 3];
    let path = format!("/v1/rooms/{room}");
    let post = Method::POST;
    ok(
        &cluster,
        owner,
        "alice",
        (post.clone(), "/v1/rooms"),
        json!({"room_id": room}),
    )
    .await;
    ok(
        &cluster,
        owner,
        "alice",
        (post.clone(), &format!("{path}/live")),
        json!({}),
    )
    .await;
    let invited = ok(
        &cluster,
        owner,
        "alice",
        (post.clone(), &format!("{path}/invitations")),
        json!({"user_id": "bob"}),
    )
    .await;
    let accept = format!(
        "/v1/invitations/{}/accept",
        invited["invitation_id"].as_str().unwrap()
    );
    ok(&cluster, owner, "bob", (post.clone(), &accept), json!({})).await;

    // bob joins; LiveKit tells a node that does not own the room.
    let joined = deliver(
        &cluster,
        others[0],
        webhook("participant_joined", "bob", "PA_1", "EV_1", room),
    )
    .await;
    assert_eq!(joined["applied"], "presence", "{joined}");
    let seen = cluster.room(room, p).await;
    assert_eq!(seen["cohosts"][0]["online"], true, "{seen}");
    // He leaves; then the owner stops before his grace runs out.
    let left = deliver(
        &cluster,
        others[1],
        webhook("participant_left", "bob", "PA_1", "EV_2", room),
    )
    .await;
    assert_eq!(left["applied"], "presence", "{left}");
    cluster.stop_node(owner).await;
    // The node that took the partition removes him once the grace is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = cluster.room(room, p).await;
        if now["cohosts"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob was never removed: {now}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let history = ok(
        &cluster,
        0,
        "alice",
        (Method::GET, &format!("{path}/events?after_version=6")),
        json!(null),
    )
    .await;
    let removed = history["items"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (&removed["type"], &removed["reason"], &removed["actor"]),
        (
            &json!("cohost_removed"),
            &json!("disconnected"),
            &json!(null)
        ),
        "{history}"
    );
}
