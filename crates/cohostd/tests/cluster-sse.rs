//! Cluster mode, live collections on any node: a room's live collection opened on a node that does not own
//! the room streams the owner's (snapshot, then each change); the owner is killed (SIGKILL), the stream ends,
//! and the client resumes with `Last-Event-ID` on another node once the partition has moved: every change after
//! that id arrives, none twice, none missing.

mod support;

use std::time::{Duration, Instant};

use cohost_proto::{RoomId, partition};
use serde_json::{Value, json};
use support::cluster::{Cluster, FAILOVER_LIMIT, PARTITIONS, send, signal, token};

/// A live collection read over HTTP: its events as `(event, id, data)`.
struct Live {
    response: reqwest::Response,
    buffer: String,
}

impl Live {
    async fn open(base: &str, path: &str, last_id: Option<u64>) -> Live {
        let mut request = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token("host"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the node answers");
        assert_eq!(response.status(), 200, "{path} on {base}");
        Live {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, skipping keep-alive comments; `None` once the stream ends (or fails).
    async fn next(&mut self) -> Option<(String, u64, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), 0, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().unwrap_or(0);
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue;
                }
                return Some((
                    event,
                    id,
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                ));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("an event or the end within 20 s");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

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
    let cluster = Cluster::start().await;
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
}
