//! A takeover that lasts longer than the lease's TTL (a long history to replay) still completes: the taking node
//! renews its lease while it replays. Without that, the lease aged out under every attempt, the takeover failed
//! and started again, and the partition was never served. And it holds nothing else up: a partition the node
//! took quickly keeps its lease, renewed all along, while the long takeover runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohost_engine::{Config, Engine, Options};
use cohost_nats::cluster::{
    CursorBook, LeaseConfig, Leases, LogConfig, Node, NodeConfig, PartitionLog, take_over,
};
use cohost_nats::test_server::TestServer;
use cohost_proto::{Actor, Command, CreateRoom, RoomId, UserId};

/// Short, so that a history this test can write in a few seconds takes longer than it to replay, and not so
/// short that a loaded machine misses renewals.
const LEASES: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(1),
    renew_every: Duration::from_millis(200),
    margin: Duration::from_millis(200),
};
/// Rooms created in the history, and the tasks creating them.
const ROOMS: usize = 300_000;
const WRITERS: usize = 256;

/// Fills partition 0's log through an engine of its own, and returns how many events it holds.
async fn write_history(log: &PartitionLog, leases: &Leases, dir: PathBuf) -> u64 {
    let lease = leases.acquire(0).await.unwrap().expect("a free partition");
    let engine: Engine = take_over(
        log,
        "writer",
        &lease,
        Config::new(dir),
        Default::default(),
        None,
    )
    .await
    .expect("the writer takes the partition");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for n in (w..ROOMS).step_by(WRITERS) {
                    let host = Actor::User(UserId::new(&format!("host-{n}")).unwrap());
                    let create = Command::CreateRoom(CreateRoom {
                        room_id: RoomId::new(&format!("room-{n}")).unwrap(),
                        title: None,
                        max_cohosts: None,
                    });
                    engine
                        .execute(host, create, Options::default())
                        .await
                        .expect("each room is created");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = engine.last_seq();
    engine.shutdown().await;
    // The writer never renewed (the log fences writes, not the lease): its lease has aged out already.
    let _ = leases.release(lease).await;
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_longer_than_the_lease_completes() {
    let server = TestServer::start(true);
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let log = PartitionLog::open(js.clone(), LogConfig::default())
        .await
        .unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let writer = Leases::open(&js, "writer", 1, LEASES).await.unwrap();
    let events = write_history(&log, &writer, dirs.path().join("writer")).await;

    let started = Instant::now();
    let node = Node::start(
        Leases::open(&js, "taker", 1, LEASES).await.unwrap(),
        log,
        CursorBook::open(&js, 1).await.unwrap(),
        NodeConfig {
            partitions: 2,
            data_dir: dirs.path().join("taker"),
            engine: Arc::new(Config::new),
            follow: None,
            snapshots: None,
        },
    );
    // Partition 1 has no history: it is served long before partition 0. Each one's lease as first taken.
    let (mut quick, mut slow) = (None, None);
    while node.serving() != [0, 1] {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a partition of {events} events was never served"
        );
        if quick.is_none() && node.serving().contains(&1) {
            quick = writer.holder(1).await.unwrap();
        }
        if slow.is_none() {
            slow = writer
                .holder(0)
                .await
                .unwrap()
                .filter(|holder| holder.node == "taker");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    println!("took a partition of {events} events over in {took:?}");
    // Otherwise this test would show nothing: the history must outlast the lease.
    assert!(
        took > LEASES.ttl,
        "the takeover took {took:?}, not longer than the lease's TTL ({:?}): write a longer history",
        LEASES.ttl
    );
    let engine = node.engines()[0].1.clone();
    assert_eq!(engine.last_seq(), events, "the whole history is there");
    assert!(quick.is_some() && slow.is_some());
    assert_eq!(
        writer.holder(0).await.unwrap(),
        slow,
        "partition 0 was taken once: its lease lasted the whole replay"
    );
    assert_eq!(
        writer.holder(1).await.unwrap(),
        quick,
        "partition 1 kept its lease through the long takeover, never lost and taken again"
    );
    node.stop().await;
}
