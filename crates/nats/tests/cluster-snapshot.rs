//! A partition's snapshot moves with it: its owner saves one to the snapshot bucket once every follower has
//! handled it, and a node taking the partition after a crash starts from it, replaying only the log after it,
//! with every room as it was, every remembered reply answered again, and reads from before it refused by name.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cohost_engine::{Config, Engine, Error, FollowerStatus, Options};
use cohost_nats::cluster::{
    CursorBook, Following, LeaseConfig, Leases, LogConfig, Node, NodeConfig, PartitionLog,
    SnapshotBook, StartFollowing,
};
use cohost_nats::test_server::TestServer;
use cohost_proto::{
    Actor, Command, CommandId, CreateRoom, Reply, RoomId, RoomTarget, UserId, UserTarget, partition,
};
use futures::FutureExt;

const PARTITIONS: u32 = 2;
const LEASES: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(1),
    renew_every: Duration::from_millis(200),
    margin: Duration::from_millis(200),
};
const SNAPSHOT_EVERY: u64 = 20;
const ROOMS_PER_PARTITION: usize = 3;
const INVITES_PER_ROOM: usize = 12;

/// Each partition's follower, whose progress the test sets by hand.
type Statuses = Arc<Mutex<BTreeMap<u32, Arc<FollowerStatus>>>>;

struct Started {
    node: Node,
    statuses: Statuses,
}

async fn start(server: &TestServer, name: &str, dir: &tempfile::TempDir) -> Started {
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = jetstream::new(client);
    let log = PartitionLog::open(js.clone(), LogConfig::default())
        .await
        .unwrap();
    let leases = Leases::open(&js, name, 1, LEASES).await.unwrap();
    let cursors = CursorBook::open(&js, 1).await.unwrap();
    let snapshots = SnapshotBook::open(&js, 1).await.unwrap();
    let statuses: Statuses = Arc::default();
    let record = statuses.clone();
    let follow: StartFollowing = Arc::new(move |partition, engine: Engine| {
        let status = Arc::new(FollowerStatus::new("test", engine.cursor("test").unwrap()));
        record.lock().unwrap().insert(partition, status.clone());
        async move {
            Ok(Following {
                statuses: vec![status],
                sinks: vec!["test".to_owned()],
                stop: async {}.boxed(),
            })
        }
        .boxed()
    });
    let config = NodeConfig {
        partitions: PARTITIONS,
        data_dir: dir.path().to_owned(),
        engine: Arc::new(|dir| Config {
            snapshot_every_events: SNAPSHOT_EVERY,
            ..Config::new(dir)
        }),
        follow: Some(follow),
        snapshots: Some(snapshots),
    };
    Started {
        node: Node::start(leases, log, cursors, config),
        statuses,
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn host() -> Actor {
    Actor::User(user("host"))
}

/// Rooms spread over every partition.
fn rooms() -> Vec<RoomId> {
    let mut found: BTreeMap<u32, Vec<RoomId>> = BTreeMap::new();
    for n in 0.. {
        let room = RoomId::new(&format!("stage-{n}")).unwrap();
        let list = found.entry(partition::of(&room, PARTITIONS)).or_default();
        if list.len() < ROOMS_PER_PARTITION {
            list.push(room);
        }
        if found.len() == PARTITIONS as usize
            && found.values().all(|l| l.len() == ROOMS_PER_PARTITION)
        {
            break;
        }
    }
    found.into_values().flatten().collect()
}

async fn serving(node: &Node) {
    let started = Instant::now();
    while node.serving().len() < PARTITIONS as usize {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not every partition served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(
    node: &Node,
    room: &RoomId,
    command: Command,
    id: Option<&str>,
) -> Result<Reply, Error> {
    let engine = node.engine_for(room).expect("the node serves the room");
    let options = Options {
        command_id: id.map(|id| CommandId::new(id).unwrap()),
        expected_version: None,
    };
    engine.execute(host(), command, options).await
}

fn invite(room: &RoomId, n: usize) -> Command {
    Command::Invite(
        UserTarget {
            room_id: room.clone(),
            user_id: user(&format!("guest-{n}")),
        }
        .into(),
    )
}

/// Every room's state by room, per partition, with its last seq.
fn states(node: &Node) -> BTreeMap<u32, (u64, Vec<String>)> {
    node.engines()
        .into_iter()
        .map(|(partition, engine)| {
            let (last, rooms) = engine.room_states();
            let mut rooms: Vec<String> = rooms.iter().map(|r| format!("{r:?}")).collect();
            rooms.sort();
            (partition, (last, rooms))
        })
        .collect()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(node: &Node, room: &RoomId) {
    let create = Command::CreateRoom(CreateRoom {
        room_id: room.clone(),
        title: None,
        max_cohosts: None,
    });
    run(node, room, create, None).await.unwrap();
}

/// Every follower has handled its partition's whole log; then, once their cursors reached the cursor bucket,
/// the node saves each partition's snapshot.
async fn followers_caught_up(a: &Started) {
    let saved_before = a.node.stats().snapshots_saved.load(Ordering::Relaxed);
    for (partition, engine) in a.node.engines() {
        a.statuses.lock().unwrap()[&partition].handled(engine.last_seq());
    }
    // Handled but not saved: a taker would start from cursors behind the snapshot, so none is saved.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let saved = a.node.stats().snapshots_saved.load(Ordering::Relaxed);
    assert_eq!(
        saved, saved_before,
        "a snapshot saved past the followers' saved cursors"
    );
    for (_, engine) in a.node.engines() {
        engine.set_cursor("test", engine.last_seq()).unwrap();
    }
    until("each partition's snapshot saved", || {
        a.node.stats().snapshots_saved.load(Ordering::Relaxed) >= u64::from(PARTITIONS)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taker_starts_from_the_snapshot_and_replays_only_the_log_after_it() {
    let server = TestServer::start(true);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&server, "node-a", &dir_a).await;
    serving(&a.node).await;

    let rooms = rooms();
    let mut replies = Vec::new();
    for room in &rooms {
        create(&a.node, room).await;
        run(
            &a.node,
            room,
            Command::GoLive(RoomTarget {
                room_id: room.clone(),
            }),
            None,
        )
        .await
        .unwrap();
        for n in 0..INVITES_PER_ROOM {
            let id = format!("{room}-invite-{n}");
            replies.push((
                room.clone(),
                n,
                id.clone(),
                run(&a.node, room, invite(room, n), Some(&id))
                    .await
                    .unwrap(),
            ));
        }
    }
    // No snapshot is saved while a follower has not handled it: a taker's followers would need the log before it.
    tokio::time::sleep(LEASES.ttl).await;
    assert_eq!(a.node.stats().snapshots_saved.load(Ordering::Relaxed), 0);
    followers_caught_up(&a).await;

    // After the snapshot: a tail for the taker to replay.
    for room in &rooms {
        let id = format!("{room}-late");
        replies.push((
            room.clone(),
            99,
            id.clone(),
            run(&a.node, room, invite(room, 99), Some(&id))
                .await
                .unwrap(),
        ));
    }
    let before = states(&a.node);
    a.node.crash();

    let b = start(&server, "node-b", &dir_b).await;
    serving(&b.node).await;
    assert_eq!(
        b.node
            .stats()
            .takeovers_from_snapshot
            .load(Ordering::Relaxed),
        u64::from(PARTITIONS),
        "every partition was taken over from its snapshot"
    );
    assert_eq!(
        states(&b.node),
        before,
        "the same rooms as the crashed owner acknowledged"
    );
    for (partition, engine) in b.node.engines() {
        let from = engine.log_from();
        let last = before[&partition].0;
        assert!(
            from > 1 && from <= last,
            "partition {partition}: the log here starts at {from}"
        );
        match engine.read_events(1, 10) {
            Err(Error::HistoryGone { covered_from }) => assert_eq!(covered_from, from),
            other => panic!("a read from before the snapshot: {other:?}"),
        }
        let tail = engine.read_events(from, 1_000).unwrap();
        assert_eq!(
            tail.len() as u64,
            last - from + 1,
            "the log after the snapshot, whole"
        );
        // The follower starts from its moved cursor, which is never behind the snapshot.
        let handled = b.statuses.lock().unwrap()[&partition].handled_seq();
        assert!(
            from - 1 <= handled && handled <= last,
            "partition {partition}: the follower starts at {handled}, the log here at {from}"
        );
    }
    for (room, n, id, first) in &replies {
        let again = run(&b.node, room, invite(room, *n), Some(id))
            .await
            .unwrap();
        assert_eq!(&again, first, "a retry of {id} gets its first reply");
    }
    assert_eq!(states(&b.node), before, "no retry appended anything");
    b.node.stop().await;
}

/// A snapshot the taker cannot open (a room that does not decode: say, written by a newer build) costs a whole
/// replay, never the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_does_not_open_costs_a_whole_replay() {
    let server = TestServer::start(true);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&server, "node-a", &dir_a).await;
    serving(&a.node).await;
    let rooms = rooms();
    for room in &rooms {
        create(&a.node, room).await;
        for n in 0..INVITES_PER_ROOM {
            run(&a.node, room, invite(room, n), None).await.unwrap();
        }
    }
    followers_caught_up(&a).await;
    let before = states(&a.node);
    a.node.crash();

    let client = async_nats::connect(server.url()).await.unwrap();
    let book = SnapshotBook::open(&jetstream::new(client), 1)
        .await
        .unwrap();
    for partition in 0..PARTITIONS {
        let mut snapshot = book.load(partition).await.unwrap().expect("saved");
        for (_, bytes) in &mut snapshot.base.rooms {
            *bytes = b"not a room".to_vec();
        }
        book.save(&snapshot).await.unwrap();
    }
    let b = start(&server, "node-b", &dir_b).await;
    serving(&b.node).await;
    assert_eq!(
        b.node
            .stats()
            .takeovers_from_snapshot
            .load(Ordering::Relaxed),
        0,
        "no takeover kept the snapshot"
    );
    assert_eq!(states(&b.node), before, "the whole log replayed");
    for (_, engine) in b.node.engines() {
        assert_eq!(engine.log_from(), 1);
    }
    b.node.stop().await;
}
