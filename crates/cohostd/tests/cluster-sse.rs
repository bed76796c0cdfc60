//! Cluster mode, live collections on any node: a room's live collection opened on a node that does not own
//! the room streams the owner's (snapshot, then each change); the owner is killed (SIGKILL), the stream ends,
//! and the client resumes with `Last-Event-ID` on another node once the partition has moved: every change after
//! that id arrives, none twice, none missing. A candidate's collection (`/v1/me/invitations`), whose rooms are
//! in several partitions, does the same across nodes.

mod support;

use std::time::{Duration, Instant};

use cohost_proto::{RoomId, partition};
use serde_json::{Value, json};
use support::cluster::{
    COMMANDS_PER_S, Cluster, FAILOVER_LIMIT, Live, PARTITIONS, create_live, send, signal,
};

/// The web app the nodes let call them.
const APP: &str = "https://app.example.com";

/// Node `n`'s base URL.
async fn base(cluster: &Cluster, n: usize) -> String {
    cluster.nodes.read().await[n]
        .as_ref()
        .expect("running")
        .url("")
}

async fn invite(cluster: &Cluster, room: &str, p: u32, guest: &str) {
    let path = format!("/v1/rooms/{room}/invitations");
    let key = format!("{room}-{guest}");
    send(
        &cluster.nodes,
        p,
        "host",
        &path,
        json!({"user_id": guest}),
        &key,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_collection_on_any_node_resumes_on_another_after_the_owner_dies() {
    let cluster = Cluster::start_with_flags(COMMANDS_PER_S, &["--cors-origins", APP]).await;
    let room = "live-1";
    let p = partition::of(&RoomId::new(room).unwrap(), PARTITIONS);
    send(
        &cluster.nodes,
        p,
        "host",
        "/v1/rooms",
        json!({"room_id": room}),
        "c",
    )
    .await;
    send(
        &cluster.nodes,
        p,
        "host",
        &format!("/v1/rooms/{room}/live"),
        json!({}),
        "l",
    )
    .await;
    let owner = cluster.owners().await[&p];
    let viewer = (owner + 1) % 3;
    let path = format!("/v1/rooms/{room}/invitations");

    let mut live = Live::open(&base(&cluster, viewer).await, &path, None).await;
    let (event, id, _) = live.next().await.expect("a snapshot");
    assert_eq!(
        (event.as_str(), id),
        ("snapshot", 2),
        "the snapshot at the room's version"
    );
    invite(&cluster, room, p, "guest-1").await;
    invite(&cluster, room, p, "guest-2").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (event, id, _) = live.next().await.expect("a change");
        assert_eq!(event, "change");
        seen.push(id);
    }
    assert_eq!(
        seen,
        [3, 4],
        "each change once, in order, through the viewer node"
    );
    tickets_work_on_every_node(&cluster, viewer, &path).await;

    let killed = Instant::now();
    {
        let mut nodes = cluster.nodes.write().await;
        let mut daemon = nodes[owner].take().expect("running");
        signal(daemon.pid(), "KILL");
        daemon.wait_exit(Duration::from_secs(5));
    }
    while live.next().await.is_some() {}
    println!(
        "the stream ended {:?} after the owner was killed",
        killed.elapsed()
    );
    let moved = |owners: &std::collections::BTreeMap<u32, usize>| {
        owners.get(&p).is_some_and(|n| *n != owner)
    };
    cluster
        .wait_owners(killed, FAILOVER_LIMIT, "the partition did not move", moved)
        .await;
    invite(&cluster, room, p, "guest-3").await;
    invite(&cluster, room, p, "guest-4").await;

    // Resumed on the node that is neither the dead owner nor the first viewer.
    let other = (owner + 2) % 3;
    let mut live = Live::open(&base(&cluster, other).await, &path, Some(4)).await;
    let mut resumed = Vec::new();
    while resumed.len() < 2 {
        let (event, id, _) = live.next().await.expect("a change");
        assert_eq!(event, "change", "no snapshot when resuming");
        resumed.push(id);
    }
    assert_eq!(
        resumed,
        [5, 6],
        "every change after Last-Event-ID, none twice"
    );
    drop(live);
    candidate_across_partitions(&cluster, [other, (owner + 1) % 3]).await;
}

/// A stream ticket made on one node (not the room's owner) opens the room's collection on every node: the
/// owner's own, and through the others. Nothing about it is stored: each node checks it with the shared secret.
async fn tickets_work_on_every_node(cluster: &Cluster, maker: usize, path: &str) {
    let made = reqwest::Client::new()
        .post(format!("{}/v1/stream-tickets", base(cluster, maker).await))
        .bearer_auth(support::cluster::token("host"))
        .json(&json!({ "collection": path }))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(made.status(), 200);
    let made: Value = made.json().await.expect("JSON");
    let ticket = made["ticket"].as_str().expect("a ticket");
    for n in 0..3 {
        let mut live = Live::open_with_ticket(&base(cluster, n).await, path, ticket).await;
        let (event, id, _) = live.next().await.expect("a snapshot");
        assert_eq!((event.as_str(), id), ("snapshot", 4), "on node {n}");
        // CORS is the asked node's, once, whether it serves the room or forwards it.
        let read = reqwest::Client::new()
            .get(format!("{}{path}", base(cluster, n).await))
            .bearer_auth(support::cluster::token("host"))
            .header("origin", APP)
            .send()
            .await
            .expect("the node answers");
        assert_eq!(read.status(), 200, "on node {n}");
        let allowed: Vec<_> = read
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .collect();
        assert_eq!(allowed, [APP], "on node {n}");
    }
}

/// A candidate's live collection spans partitions: a snapshot gathered from every partition, then each
/// invitation from any partition once, in the stream `COHOST`'s order (its sequence is the `id:`); resumed on
/// another node after the last change, exactly the changes since; resumed from the snapshot's id, a fresh one.
async fn candidate_across_partitions(cluster: &Cluster, nodes: [usize; 2]) {
    let rooms: Vec<(String, u32)> = (0..6)
        .map(|n| {
            let room = format!("me-{n}");
            let p = partition::of(&RoomId::new(&room).unwrap(), PARTITIONS);
            (room, p)
        })
        .collect();
    let spread: std::collections::BTreeSet<u32> = rooms.iter().map(|(_, p)| *p).collect();
    assert!(spread.len() >= 3, "the rooms are in {spread:?}");
    for (room, p) in &rooms {
        create_live(&cluster.nodes, room, *p).await;
    }
    let path = "/v1/me/invitations";
    for (room, p) in &rooms[..2] {
        invite(cluster, room, *p, "frank").await;
    }
    let mut live = Live::open_as(&base(cluster, nodes[0]).await, path, "frank", None).await;
    let (event, _, page) = live.next().await.expect("a snapshot");
    assert_eq!(event, "snapshot", "{page}");
    assert!(
        live.raw_id.starts_with('s'),
        "the snapshot's id: {}",
        live.raw_id
    );
    let snapshot_id = live.raw_id.clone();
    let rooms_of = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["room_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        rooms_of(page["items"].as_array().unwrap()),
        ["me-0", "me-1"],
        "{page}"
    );
    for (room, p) in &rooms[2..4] {
        invite(cluster, room, *p, "frank").await;
    }
    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < 2 {
        let (event, id, change) = live.next().await.expect("a change");
        assert_eq!(event, "change", "{change}");
        assert!(id > last, "ids go up: {id} after {last}");
        last = id;
        seen.push(change["room_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        seen,
        ["me-2", "me-3"],
        "each change once, in order, from any partition"
    );
    drop(live);

    for (room, p) in &rooms[4..] {
        invite(cluster, room, *p, "frank").await;
    }
    let mut live = Live::open_as(
        &base(cluster, nodes[1]).await,
        path,
        "frank",
        Some(last.to_string()),
    )
    .await;
    let mut resumed = Vec::new();
    while resumed.len() < 2 {
        let (event, _, change) = live.next().await.expect("a change");
        assert_eq!(event, "change", "no snapshot when resuming: {change}");
        resumed.push(change["room_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        resumed,
        ["me-4", "me-5"],
        "every change after Last-Event-ID, none twice"
    );
    drop(live);

    let mut live = Live::open_as(
        &base(cluster, nodes[1]).await,
        path,
        "frank",
        Some(snapshot_id),
    )
    .await;
    let (event, _, page) = live.next().await.expect("a fresh snapshot");
    assert_eq!(
        event, "snapshot",
        "resuming from a snapshot's id starts over: {page}"
    );
    let mut all = rooms_of(page["items"].as_array().unwrap());
    all.sort();
    assert_eq!(
        all,
        ["me-0", "me-1", "me-2", "me-3", "me-4", "me-5"],
        "{page}"
    );
}
