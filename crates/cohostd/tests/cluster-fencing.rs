//! Cluster mode, fencing: a partition's owner is paused (SIGSTOP) past its lease while clients keep sending
//! commands; another node takes the partition and removes a co-host; the old owner resumes (SIGCONT). It
//! acknowledges nothing it was sent, mints no broadcaster token for the removed co-host and answers no read
//! from its stale state (it forwards them to the new owner, whose answers show the removal), and gives the
//! partition up (it may take it back later, as its preferred owner, only by a new claim).
//! Every acknowledged command is in its room exactly once, and the partition log shows exactly one writer per
//! position: every batch after an ownership marker is that owner's.

mod support;

use std::time::{Duration, Instant};

use cohost_nats::cluster::{EntryKind, LogConfig, PartitionLog};
use cohost_proto::{RoomId, partition};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::cluster::{
    CLIENTS, Cluster, FAILOVER_LIMIT, PARTITIONS, assert_exactly_once, create_live, send, signal,
    spread_rooms, start_load, stop_load, token,
};

const VICTIM: usize = 1;

/// A room in `partition` that the load does not use.
fn stage_in(partition: u32) -> String {
    (0..)
        .map(|n| format!("stage-{n}"))
        .find(|room| partition::of(&RoomId::new(room).unwrap(), PARTITIONS) == partition)
        .unwrap()
}

async fn call(
    cluster: &Cluster,
    node: usize,
    method: Method,
    path: &str,
    user: &str,
) -> (StatusCode, Value) {
    let nodes = cluster.nodes.read().await;
    let node = nodes[node].as_ref().expect("running");
    let reply = node
        .http
        .request(method, node.url(path))
        .bearer_auth(token(user))
        // Generous: a node just resumed from SIGSTOP first finds out it lost its leases, and on a loaded
        // 2-core machine that can take a few seconds; slow is allowed, answering from stale state is not.
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the node answers");
    let status = reply.status();
    (status, reply.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_resumes_is_fenced_off() {
    let cluster = Cluster::start().await;
    let owned: Vec<u32> = cluster
        .owners()
        .await
        .iter()
        .filter(|(_, n)| **n == VICTIM)
        .map(|(p, _)| *p)
        .collect();
    assert!(!owned.is_empty(), "node-1 owned no partition");
    let p = owned[0];
    let stage = stage_in(p);
    let nodes = cluster.nodes.clone();
    create_live(&nodes, &stage, p).await;
    let invite = format!("/v1/rooms/{stage}/invitations");
    let offer = send(
        &nodes,
        p,
        "host",
        &invite,
        json!({"user_id": "bob"}),
        "stage-invite",
    )
    .await;
    let id = offer["invitation_id"].as_str().unwrap().to_owned();
    send(
        &nodes,
        p,
        "bob",
        &format!("/v1/invitations/{id}/accept"),
        json!({}),
        "stage-accept",
    )
    .await;
    let credentials = format!("/v1/rooms/{stage}/broadcaster-data");
    let (status, _) = call(&cluster, VICTIM, Method::GET, &credentials, "bob").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the owner mints bob's token while it owns the partition"
    );

    let (stop, tasks) = start_load(&cluster.nodes, spread_rooms(CLIENTS, 2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim_pid = cluster.pid(VICTIM).await;
    signal(victim_pid, "STOP");
    let paused = Instant::now();
    let taken = |owners: &std::collections::BTreeMap<u32, usize>| {
        owned
            .iter()
            .all(|q| owners.get(q).is_some_and(|n| *n != VICTIM))
    };
    let what = "the paused owner's partitions were not taken";
    let new_owner = cluster
        .wait_owners(paused, FAILOVER_LIMIT, what, taken)
        .await[&p];
    let removed = call(
        &cluster,
        new_owner,
        Method::DELETE,
        &format!("/v1/rooms/{stage}/cohosts/bob"),
        "host",
    )
    .await;
    assert_eq!(removed.0, StatusCode::OK, "{removed:?}");

    signal(victim_pid, "CONT");
    // Asked on the old owner: answered by the new one (bob holds no seat there), or unavailable; never from
    // the old owner's state, where bob still holds his seat.
    let (status, body) = call(&cluster, VICTIM, Method::GET, &credentials, "bob").await;
    assert!(
        status == StatusCode::CONFLICT || status == StatusCode::SERVICE_UNAVAILABLE,
        "the old owner minted a token for a removed co-host: {status} {body}"
    );
    let (status, body) = call(
        &cluster,
        VICTIM,
        Method::GET,
        &format!("/v1/rooms/{stage}"),
        "host",
    )
    .await;
    let stale = body["cohosts"]
        .as_array()
        .is_some_and(|cohosts| cohosts.iter().any(|c| c["user_id"] == "bob"));
    assert!(
        (status == StatusCode::OK && !stale) || status == StatusCode::SERVICE_UNAVAILABLE,
        "the old owner served a read from its stale state: {status} {body}"
    );
    // Its lease is lost, so it gives the partitions up. Alive again, it is their preferred owner, so it may
    // take them back, but only through a new claim: the log check below holds every batch to its marker.
    let resumed = Instant::now();
    let all = |owners: &std::collections::BTreeMap<u32, usize>| owners.len() == PARTITIONS as usize;
    cluster
        .wait_owners(resumed, FAILOVER_LIMIT, "partitions left unowned", all)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let clients = stop_load(stop, tasks).await;
    assert_exactly_once(&cluster, &clients).await;
    assert_one_writer_per_position(&cluster).await;
}

/// Every batch on a partition's subject carries the epoch of the last ownership marker before it.
async fn assert_one_writer_per_position(cluster: &Cluster) {
    let client = async_nats::connect(cluster.servers.addrs())
        .await
        .expect("connects");
    let log_config = LogConfig {
        replicas: 3,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(async_nats::jetstream::new(client), log_config)
        .await
        .expect("the log opens");
    for p in 0..PARTITIONS {
        let mut epoch = None;
        let mut markers = 0;
        for entry in log.read_after(p, 0).await.expect("the partition log reads") {
            match entry.kind {
                EntryKind::Marker(marker) => {
                    assert!(epoch < Some(marker.epoch), "partition {p}: epochs go up");
                    epoch = Some(marker.epoch);
                    markers += 1;
                }
                EntryKind::Batch(_) => {
                    let id = entry.msg_id.expect("a batch has a Msg-Id");
                    let written_in: u64 = id.split('-').nth(1).unwrap()[1..].parse().unwrap();
                    assert_eq!(
                        Some(written_in),
                        epoch,
                        "partition {p}: batch {id} after another owner's marker"
                    );
                }
            }
        }
        assert!(markers >= 1, "partition {p} was never claimed");
    }
}
