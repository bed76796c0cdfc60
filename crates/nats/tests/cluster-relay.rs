//! A partition's relay moves with the partition: a node that takes a crashed node's partitions resumes each
//! relay from the cursor the old owner saved in the cursor bucket, and the stream `COHOST` ends up holding every
//! event of every partition exactly once, each tagged with its partition.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cohost_engine::{Config, Engine};
use cohost_nats::cluster::{
    CursorBook, Following, LeaseConfig, Leases, LogConfig, Node, NodeConfig, PartitionLog,
    StartFollowing,
};
use cohost_nats::relay::{Mode, Relay, RelayConfig};
use cohost_nats::test_server::TestServer;
use cohost_proto::subject::header;
use cohost_proto::{RoomId, partition};
use futures::FutureExt;

const PARTITIONS: u32 = 4;
const LEASES: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(1),
    renew_every: Duration::from_millis(200),
    margin: Duration::from_millis(200),
};
const SINK: &str = "jetstream";

/// A node whose partitions each run a JetStream relay; `resumed` records the cursor each relay started from.
struct Started {
    node: Node,
    resumed: Arc<Mutex<BTreeMap<u32, u64>>>,
}

async fn start(server: &TestServer, name: &str, dir: &tempfile::TempDir) -> Started {
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = jetstream::new(client.clone());
    let log = PartitionLog::open(js.clone(), LogConfig::default())
        .await
        .unwrap();
    let leases = Leases::open(&js, name, 1, LEASES).await.unwrap();
    let cursors = CursorBook::open(&js, 1).await.unwrap();
    let resumed: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    let record = resumed.clone();
    let follow: StartFollowing = Arc::new(move |partition, engine: Engine| {
        let (client, record) = (client.clone(), record.clone());
        async move {
            let config = RelayConfig {
                partition: Some(partition),
                ..RelayConfig::new(Mode::JetStream)
            };
            let from = engine.cursor(SINK).map_err(|e| e.to_string())?;
            record.lock().unwrap().insert(partition, from);
            let relay = Relay::start(engine, client, config)
                .await
                .map_err(|e| e.to_string())?;
            let statuses = vec![relay.follower()];
            let stop = async move { relay.stop().await }.boxed();
            let sinks = vec![SINK.to_owned()];
            Ok(Following {
                statuses,
                sinks,
                stop,
            })
        }
        .boxed()
    });
    let config = NodeConfig {
        partitions: PARTITIONS,
        data_dir: dir.path().to_owned(),
        engine: Arc::new(Config::new),
        follow: Some(follow),
        snapshots: None,
    };
    Started {
        node: Node::start(leases, log, cursors, config),
        resumed,
    }
}

/// The `n`th room of each partition.
fn rooms(n: usize) -> Vec<String> {
    (0..PARTITIONS)
        .map(|p| {
            (0..)
                .map(|i| format!("stage-{i}"))
                .filter(|room| partition::of(&RoomId::new(room).unwrap(), PARTITIONS) == p)
                .nth(n)
                .unwrap()
        })
        .collect()
}

async fn serve_all(node: &Node) {
    let started = Instant::now();
    while node.serving().len() != PARTITIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} serves {:?} only",
            node.node_id(),
            node.serving()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the seed's flow in each room, on the node that owns it.
async fn flows(node: &Node, rooms: &[String]) {
    for room in rooms {
        let engine = node
            .engine_for(&RoomId::new(room).unwrap())
            .expect("the node serves every partition");
        support::seed_flow(&engine, room).await;
    }
}

/// Waits until every partition's relay has confirmed its whole log.
async fn relayed(node: &Node) {
    let started = Instant::now();
    loop {
        let engines: BTreeMap<u32, Engine> = node.engines().into_iter().collect();
        let behind: Vec<u32> = node
            .followers()
            .into_iter()
            .filter(|(p, statuses)| {
                statuses.is_empty() || statuses[0].handled_seq() < engines[p].last_seq()
            })
            .map(|(p, _)| p)
            .collect();
        if behind.is_empty() && engines.len() == PARTITIONS as usize {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "relays behind on partitions {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message of the stream: (subject, Nats-Msg-Id, Cohost-Partition, Cohost-Seq).
async fn stream(url: &str) -> Vec<(String, String, u32, u64)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream("COHOST").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let read = |name: &str| {
            message
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("stream seq {sequence} has no {name}"))
                .as_str()
                .to_owned()
        };
        out.push((
            message.subject.to_string(),
            read(header::MSG_ID),
            read(header::PARTITION).parse().unwrap(),
            read(header::SEQ).parse().unwrap(),
        ));
    }
    out
}

/// The relay cursor of each partition, as saved in the bucket.
async fn saved(book: &CursorBook) -> BTreeMap<u32, u64> {
    let mut saved = BTreeMap::new();
    for p in 0..PARTITIONS {
        let cursors = book.load(p).await.unwrap();
        saved.insert(p, cursors.get(SINK).copied().unwrap_or(0));
    }
    saved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_resumes_where_the_crashed_owner_saved_its_cursor() {
    let server = TestServer::start(true);
    let client = async_nats::connect(server.url()).await.unwrap();
    cohost_nats::relay::ensure_stream(&client, 1).await.unwrap();
    let js = jetstream::new(client);
    let book = CursorBook::open(&js, 1).await.unwrap();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();

    let a = start(&server, "node-a", &dirs[0]).await;
    serve_all(&a.node).await;
    flows(&a.node, &rooms(0)).await;
    relayed(&a.node).await;
    // The owner saves its relays' cursors within a few turns of their moving.
    let started = Instant::now();
    while saved(&book).await.values().any(|seq| *seq < 10) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first flow's cursors never reached the bucket: {:?}",
            saved(&book).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More events, relayed, then a crash before the relays' cursors need have reached the bucket: the next
    // owner publishes again what lies between, and the stream drops it by Msg-Id.
    flows(&a.node, &rooms(1)).await;
    relayed(&a.node).await;
    a.node.crash();
    let saved = saved(&book).await;
    let again: u64 = saved.values().map(|seq| 20 - seq).sum();
    println!("events the next owner's relays publish again: {again}");

    let b = start(&server, "node-b", &dirs[1]).await;
    serve_all(&b.node).await;
    assert_eq!(
        *b.resumed.lock().unwrap(),
        saved,
        "each relay resumed from the cursor its partition's last owner saved"
    );
    flows(&b.node, &rooms(2)).await;
    relayed(&b.node).await;

    let contents = stream(&server.url()).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, msg_id, _, _) in &contents {
        *seen.entry(msg_id).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "stored more than once: {repeated:?}");
    for (p, engine) in b.node.engines() {
        let log = support::read_all(&engine).await;
        assert_eq!(log.len(), 30, "partition {p}: three flows of ten events");
        let expected: usize = log
            .iter()
            .map(|e| 1 + usize::from(e.event.candidate().is_some()))
            .sum();
        let mine: Vec<_> = contents.iter().filter(|m| m.2 == p).collect();
        assert_eq!(
            mine.len(),
            expected,
            "partition {p}: each event's messages, once"
        );
        let room_seqs: Vec<u64> = mine
            .iter()
            .filter(|m| m.0.starts_with("cohost.v1.room."))
            .map(|m| m.3)
            .collect();
        assert_eq!(
            room_seqs,
            (1..=30).collect::<Vec<u64>>(),
            "partition {p}: room messages in seq order"
        );
        for (subject, _, _, _) in mine.iter().filter(|m| m.0.starts_with("cohost.v1.room.")) {
            let room = RoomId::new(subject.trim_start_matches("cohost.v1.room.")).unwrap();
            assert_eq!(partition::of(&room, PARTITIONS), p, "{subject}");
        }
    }
    b.node.stop().await;
}
