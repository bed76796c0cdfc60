//! Three nodes share the partitions; when one crashes, the others take its partitions over once its leases age
//! out, with every room's state intact. Prints the time from the crash to the first acknowledged command on
//! each partition that moved.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cohost_engine::{Config, Options};
use cohost_nats::cluster::{
    CursorBook, LeaseConfig, Leases, LogConfig, Node, NodeConfig, PartitionLog, preferred,
};
use cohost_nats::test_server::TestServer;
use cohost_proto::{Actor, Command, CreateRoom, Invite, RoomId, RoomTarget, UserId, partition};

const PARTITIONS: u32 = 8;
const LEASES: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(1),
    renew_every: Duration::from_millis(200),
    margin: Duration::from_millis(200),
};
/// The limit for a partition to be served again after its owner died.
const FAILOVER_LIMIT: Duration = Duration::from_secs(10);

fn engine_config(dir: PathBuf) -> Config {
    Config::new(dir)
}

async fn start(server: &TestServer, name: &str, dir: &tempfile::TempDir) -> Node {
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let log = PartitionLog::open(js.clone(), LogConfig::default())
        .await
        .unwrap();
    let leases = Leases::open(&js, name, 1, LEASES).await.unwrap();
    let config = NodeConfig {
        partitions: PARTITIONS,
        data_dir: dir.path().to_owned(),
        engine: std::sync::Arc::new(engine_config),
        follow: None,
        snapshots: None,
    };
    let cursors = CursorBook::open(&js, 1).await.unwrap();
    Node::start(leases, log, cursors, config)
}

/// A room in each partition.
fn rooms() -> Vec<RoomId> {
    (0..PARTITIONS)
        .map(|p| {
            (0..)
                .map(|n| RoomId::new(&format!("stage-{n}")).unwrap())
                .find(|room| partition::of(room, PARTITIONS) == p)
                .unwrap()
        })
        .collect()
}

fn host() -> Actor {
    Actor::User(UserId::new("alice").unwrap())
}

/// Runs `command` on whichever node serves `room`, trying until one does or `limit` passes.
async fn run(nodes: &[&Node], room: &RoomId, command: Command, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(engine) = nodes.iter().find_map(|node| node.engine_for(room))
            && engine
                .execute(host(), command.clone(), Options::default())
                .await
                .is_ok()
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "room {room} was not served within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_share_the_partitions_and_take_a_crashed_node_s_over() {
    let server = TestServer::start(true);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(&server, "node-a", &dirs[0]).await;
    let b = start(&server, "node-b", &dirs[1]).await;
    let c = start(&server, "node-c", &dirs[2]).await;

    // Every partition owned by exactly one node, the one preferred for it: each node some. (The first node may
    // take every partition before the others beat their hearts; it hands theirs over once it sees them.)
    let names: Vec<String> = ["node-a", "node-b", "node-c"].map(String::from).to_vec();
    let started = Instant::now();
    loop {
        let owned = [a.owned(), b.owned(), c.owned()];
        let all: Vec<u32> = owned.iter().flatten().copied().collect();
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        let settled = owned.iter().zip(&names).all(|(owned, name)| {
            owned
                .iter()
                .all(|p| preferred(*p, &names) == Some(name.as_str()))
        });
        if all.len() == PARTITIONS as usize && distinct.len() == all.len() && settled {
            assert!(owned.iter().all(|o| !o.is_empty()), "{owned:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "partitions not shared: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let rooms = rooms();
    for room in &rooms {
        let create = Command::CreateRoom(CreateRoom {
            room_id: room.clone(),
            title: None,
            max_cohosts: None,
        });
        run(&[&a, &b, &c], room, create, FAILOVER_LIMIT).await;
        run(
            &[&a, &b, &c],
            room,
            Command::GoLive(RoomTarget {
                room_id: room.clone(),
            }),
            FAILOVER_LIMIT,
        )
        .await;
    }

    let moved: Vec<u32> = b.owned();
    let crashed = Instant::now();
    b.crash();
    let mut failovers = Vec::new();
    for &p in &moved {
        let room = &rooms[p as usize];
        let invite = Command::Invite(Invite {
            room_id: room.clone(),
            user_id: UserId::new("bob").unwrap(),
            seat: None,
        });
        run(&[&a, &c], room, invite, FAILOVER_LIMIT).await;
        failovers.push(crashed.elapsed());
    }
    failovers.sort();
    println!(
        "node crash: {} partitions moved; first command acknowledged after p50 {:?}, max {:?}",
        moved.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
    // Every room kept its history: the invite came right after create and go_live.
    for room in &rooms {
        let engine = [&a, &c]
            .iter()
            .find_map(|node| node.engine_for(room))
            .expect("served");
        let version = engine.room(room).unwrap().version;
        let expected = if moved.contains(&partition::of(room, PARTITIONS)) {
            3
        } else {
            2
        };
        assert_eq!(version, expected, "room {room}");
    }
    let all: BTreeSet<u32> = a.owned().into_iter().chain(c.owned()).collect();
    assert_eq!(all.len(), PARTITIONS as usize);
    // A clean stop leaves the live nodes at once (node-b's heartbeat aged out long ago), so the others need not
    // wait for its heartbeat to age out before taking its partitions.
    c.stop().await;
    let client = async_nats::connect(server.url()).await.expect("connects");
    let probe = Leases::open(&async_nats::jetstream::new(client), "probe", 1, LEASES)
        .await
        .unwrap();
    assert_eq!(probe.live_nodes().await.unwrap(), ["node-a"]);
    a.stop().await;
}
