//! Cluster mode with real processes: three JetStream servers (R3, every write synced before its ack) and three
//! cohostd nodes. Sixteen clients send commands to the owners of their rooms' partitions for the whole test; one
//! node is killed with SIGKILL mid-load. Its partitions are served again by the others (the time from the kill
//! to the first acknowledged command on each moved partition is printed), and every acknowledged command is in
//! its room exactly once: each room's version is its setup plus the commands acknowledged in it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohost_nats::test_server::TestCluster;
use cohost_proto::{RoomId, partition};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Daemon;

const PARTITIONS: u32 = 8;
const CLIENTS: usize = 16;
const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// The limit for a moved partition to be served again.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
const LOAD_BEFORE_KILL: Duration = Duration::from_secs(2);
const LOAD_AFTER_FAILOVER: Duration = Duration::from_secs(2);

fn token(user: &str) -> String {
    let now = support::now_s();
    let claims = json!({"sub": user, "iat": now, "exp": now + 3_600});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("HS256 signs")
}

async fn start_node(cluster: &TestCluster, name: &str, dir: &std::path::Path) -> Daemon {
    let urls: Vec<String> = cluster.servers.iter().map(|s| s.url()).collect();
    let urls = urls.join(",");
    let partitions = PARTITIONS.to_string();
    let args = [
        "--cluster",
        "true",
        "--node-id",
        name,
        "--nats-url",
        &urls,
        "--partitions",
        &partitions,
        "--log-replicas",
        "3",
        "--auth-secret",
        SECRET,
        "--livekit-api-key",
        "cluster-test-key",
        "--livekit-api-secret",
        "cluster-test-livekit-secret-0123456789",
        "--user-commands-per-s",
        "1000000",
        "--user-invitations-per-min",
        "1000000",
    ];
    Daemon::start_with(dir, &args).await
}

/// Which node owns which partition, from each live node's /healthz.
async fn owners(nodes: &[Option<Daemon>]) -> BTreeMap<u32, usize> {
    let mut owners = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        let (status, body) = node.call(Method::GET, "/healthz", None, None).await;
        if status != StatusCode::OK {
            continue;
        }
        for p in body["partitions"].as_array().into_iter().flatten() {
            owners.insert(p.as_u64().unwrap() as u32, index);
        }
    }
    owners
}

/// One client's room: created, taken live, then invite and cancel in turn, each command keyed, retried on
/// whichever node owns the room until acknowledged.
struct Client {
    room: String,
    partition: u32,
    acked: u64,
    /// When each acknowledged command was first sent, and when it was acknowledged.
    acks: Vec<(Instant, Instant)>,
}

async fn send(
    nodes: &tokio::sync::RwLock<Vec<Option<Daemon>>>,
    client: &Client,
    path: &str,
    body: Value,
    key: &str,
) -> Value {
    let started = Instant::now();
    let token = token("host");
    loop {
        let owner = {
            let nodes = nodes.read().await;
            let owners = owners(&nodes).await;
            owners
                .get(&client.partition)
                .and_then(|i| nodes[*i].as_ref().map(|d| d.url(path)))
        };
        if let Some(url) = owner {
            let http = support::client();
            let reply = http
                .post(url)
                .bearer_auth(&token)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await;
            if let Ok(reply) = reply {
                let status = reply.status();
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                if status == StatusCode::OK {
                    return body;
                }
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            }
        }
        assert!(
            started.elapsed() < FAILOVER_LIMIT * 2,
            "{path} not acknowledged in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive(
    nodes: Arc<tokio::sync::RwLock<Vec<Option<Daemon>>>>,
    mut client: Client,
    until: Arc<tokio::sync::watch::Receiver<bool>>,
) -> Client {
    let room = client.room.clone();
    send(
        &nodes,
        &client,
        "/v1/rooms",
        json!({"room_id": room}),
        &format!("{room}-create"),
    )
    .await;
    send(
        &nodes,
        &client,
        &format!("/v1/rooms/{room}/live"),
        json!({}),
        &format!("{room}-live"),
    )
    .await;
    let mut n = 0;
    while !*until.borrow() {
        n += 1;
        let invite = format!("/v1/rooms/{room}/invitations");
        let sent = Instant::now();
        let reply = send(
            &nodes,
            &client,
            &invite,
            json!({"user_id": "guest"}),
            &format!("{room}-i{n}"),
        )
        .await;
        client.acked += 1;
        client.acks.push((sent, Instant::now()));
        let id = reply["invitation_id"]
            .as_str()
            .expect("an invitation id")
            .to_owned();
        let cancel = format!("/v1/invitations/{id}/cancel");
        let sent = Instant::now();
        send(&nodes, &client, &cancel, json!({}), &format!("{room}-c{n}")).await;
        client.acked += 1;
        client.acks.push((sent, Instant::now()));
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_partitions_are_served_again_and_no_acknowledged_command_is_lost_or_doubled()
 {
    let servers = TestCluster::start(3);
    let probe = async_nats_probe(&servers).await;
    drop(probe);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| support::data_dir()).collect();
    let mut started = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        started.push(Some(
            start_node(&servers, &format!("node-{i}"), dir.path()).await,
        ));
    }
    let nodes = Arc::new(tokio::sync::RwLock::new(started));
    let deadline = Instant::now() + Duration::from_secs(30);
    while owners(&nodes.read().await).await.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "the partitions were never all owned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Rooms spread over the partitions: two clients per partition.
    let rooms: Vec<(String, u32)> = (0..)
        .map(|n| format!("room-{n}"))
        .map(|room| {
            let p = partition::of(&RoomId::new(&room).unwrap(), PARTITIONS);
            (room, p)
        })
        .scan(BTreeMap::<u32, usize>::new(), |per, (room, p)| {
            let count = per.entry(p).or_default();
            *count += 1;
            Some((*count <= 2).then_some((room, p)))
        })
        .flatten()
        .take(CLIENTS)
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_rx = Arc::new(stop_rx);
    let tasks: Vec<_> = rooms
        .into_iter()
        .map(|(room, partition)| {
            let client = Client {
                room,
                partition,
                acked: 0,
                acks: Vec::new(),
            };
            tokio::spawn(drive(nodes.clone(), client, stop_rx.clone()))
        })
        .collect();

    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    let before = owners(&nodes.read().await).await;
    let victim = 1;
    let moved: BTreeSet<u32> = before
        .iter()
        .filter(|(_, n)| **n == victim)
        .map(|(p, _)| *p)
        .collect();
    assert!(!moved.is_empty(), "node-1 owned no partition: {before:?}");
    let killed = Instant::now();
    {
        let mut nodes = nodes.write().await;
        let mut daemon = nodes[victim].take().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &daemon.pid().to_string()])
            .status();
        assert!(status.unwrap().success());
        daemon.wait_exit(Duration::from_secs(5));
    }
    // Load goes on until every moved partition has acknowledged commands again, then a little longer.
    let deadline = killed + FAILOVER_LIMIT;
    loop {
        let owners = owners(&nodes.read().await).await;
        if moved
            .iter()
            .all(|p| owners.get(p).is_some_and(|n| *n != victim))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moved partitions not served within {FAILOVER_LIMIT:?}: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(LOAD_AFTER_FAILOVER).await;
    stop_tx.send(true).unwrap();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("a client finishes"));
    }

    let mut failovers: Vec<Duration> = moved
        .iter()
        .map(|p| {
            clients
                .iter()
                .filter(|c| c.partition == *p)
                // A command first sent after the kill cannot have been acknowledged by the killed node.
                .filter_map(|c| {
                    c.acks
                        .iter()
                        .find(|(sent, _)| *sent > killed)
                        .map(|(_, at)| *at - killed)
                })
                .min()
                .expect("a moved partition acknowledged commands after the kill")
        })
        .collect();
    failovers.sort();
    println!(
        "node kill: {} partitions moved; first acknowledged command after p50 {:?}, max {:?}",
        failovers.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
    assert!(failovers.iter().all(|d| *d <= FAILOVER_LIMIT));

    // Exactly once: each room's version is create + go_live + every acknowledged command.
    let nodes = nodes.read().await;
    let owners = owners(&nodes).await;
    for client in &clients {
        let node = nodes[owners[&client.partition]].as_ref().unwrap();
        let room = node
            .ok_get(&format!("/v1/rooms/{}", client.room), &token("host"))
            .await;
        assert_eq!(
            room["version"],
            2 + client.acked,
            "room {}: {room}",
            client.room
        );
    }
}

/// Waits until the servers' JetStream answers, so the nodes do not start against a cluster still electing.
async fn async_nats_probe(servers: &TestCluster) -> async_nats::Client {
    let client = async_nats::connect(servers.addrs())
        .await
        .expect("connects");
    servers.wait_ready(&client).await;
    client
}
