//! A partition changing hands: the new owner rebuilds the partition from its log (state, remembered command
//! ids), claims it, and serves; the old owner, waking up after its lease ran out, is refused by the log,
//! acknowledges nothing more, and stops. The log shows exactly one writer per position.

use std::time::{Duration, Instant};

use cohost_engine::{Config, Engine, Health, Options};
use cohost_nats::cluster::{
    EntryKind, Lease, LeaseConfig, Leases, LogConfig, PartitionLog, take_over,
};
use cohost_nats::test_server::TestServer;
use cohost_proto::{
    Actor, Command, CommandId, CreateRoom, ErrorCode, Invite, RoomId, RoomTarget, UserId,
};

const PARTITION: u32 = 5;
const LEASES: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(1),
    renew_every: Duration::from_millis(250),
    margin: Duration::from_millis(200),
};

struct Node {
    name: &'static str,
    log: PartitionLog,
    leases: Leases,
    dir: tempfile::TempDir,
}

async fn node(server: &TestServer, name: &'static str) -> Node {
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    Node {
        name,
        log: PartitionLog::open(js.clone(), LogConfig::default())
            .await
            .unwrap(),
        leases: Leases::open(&js, name, 1, LEASES).await.unwrap(),
        dir: tempfile::tempdir().unwrap(),
    }
}

async fn acquire(node: &Node) -> Lease {
    let started = Instant::now();
    loop {
        if let Some(lease) = node.leases.acquire(PARTITION).await.unwrap() {
            return lease;
        }
        assert!(
            started.elapsed() < LEASES.ttl * 5,
            "{}: the lease never came free",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn own(node: &Node, lease: &Lease) -> Engine {
    let config = Config::new(node.dir.path().join("partition"));
    take_over(
        &node.log,
        node.name,
        lease,
        config,
        Default::default(),
        None,
    )
    .await
    .expect("the partition is taken over")
}

fn user(name: &str) -> Actor {
    Actor::User(UserId::new(name).unwrap())
}

fn stage() -> RoomId {
    RoomId::new("stage").unwrap()
}

fn invite(candidate: &str) -> Command {
    Command::Invite(Invite {
        room_id: stage(),
        user_id: UserId::new(candidate).unwrap(),
        seat: None,
    })
}

fn keyed(key: &str) -> Options {
    Options {
        command_id: Some(CommandId::new(key).unwrap()),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_owner_rebuilds_the_partition_and_the_old_one_is_fenced_off() {
    let server = TestServer::start(true);
    let (a, b) = (node(&server, "node-a").await, node(&server, "node-b").await);

    let lease_a = acquire(&a).await;
    let engine_a = own(&a, &lease_a).await;
    let create = Command::CreateRoom(CreateRoom {
        room_id: stage(),
        title: None,
        max_cohosts: None,
    });
    engine_a
        .execute(user("alice"), create, Options::default())
        .await
        .unwrap();
    let live = Command::GoLive(RoomTarget { room_id: stage() });
    engine_a
        .execute(user("alice"), live, Options::default())
        .await
        .unwrap();
    let first = engine_a
        .execute(user("alice"), invite("bob"), keyed("invite-bob"))
        .await
        .unwrap();
    let state_a = engine_a.room_states();

    // node-a stops renewing (a pause); node-b takes the partition once the lease ran out.
    let lease_b = acquire(&b).await;
    assert!(lease_b.epoch > lease_a.epoch);
    let engine_b = own(&b, &lease_b).await;
    assert_eq!(
        engine_b.room_states(),
        state_a,
        "the new owner rebuilt the partition from its log"
    );
    // The remembered command ids moved with it: the same keyed command gets the first reply back.
    let again = engine_b
        .execute(user("alice"), invite("bob"), keyed("invite-bob"))
        .await
        .unwrap();
    assert_eq!(again, first);

    // node-a wakes up and goes on as if it still owned the partition: the log refuses it.
    let refused = engine_a
        .execute(user("alice"), invite("carol"), Options::default())
        .await;
    let error = refused.expect_err("a deposed owner acknowledged a command");
    assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
    match engine_a.health() {
        Health::Failed { cause } => assert!(cause.contains("deposed"), "{cause}"),
        Health::Serving => panic!("the deposed owner still serves"),
    }

    // The new owner goes on where the log stands, versions gap-free.
    engine_b
        .execute(user("alice"), invite("carol"), Options::default())
        .await
        .unwrap();
    let room = engine_b.room(&stage()).unwrap();
    assert_eq!(room.version, 4);

    // One writer per position: node-a's three batches, node-b's marker, node-b's batch.
    let entries = b.log.read_after(PARTITION, 0).await.unwrap();
    let writers: Vec<String> = entries
        .iter()
        .map(|entry| match &entry.kind {
            EntryKind::Batch(_) => entry.msg_id.clone().unwrap(),
            EntryKind::Marker(marker) => format!("marker {}", marker.node),
        })
        .collect();
    let (ea, eb) = (lease_a.epoch, lease_b.epoch);
    let p = PARTITION;
    assert_eq!(
        writers,
        [
            "marker node-a".to_owned(),
            format!("p{p}-e{ea}-s1"),
            format!("p{p}-e{ea}-s2"),
            format!("p{p}-e{ea}-s3"),
            "marker node-b".to_owned(),
            format!("p{p}-e{eb}-s4"),
        ]
    );
    engine_b.shutdown().await;
    engine_a.shutdown().await;
}
