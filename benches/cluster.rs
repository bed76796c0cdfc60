//! Cluster mode against embedded mode, in one run, on the same workload: the engine on sled in process; a
//! cluster of one JetStream server (R1) and one node; three servers (R3) and three nodes. Every JetStream write
//! is synced before its ack (`sync_interval: always`), as sled's flush is. Then, on the R3 cluster, nodes are
//! crashed one after another (a new node joins after each) and the time from a crash to the first
//! acknowledged command on each partition that moved is measured.
//!
//! The nodes run in this process (`cohost_nats::cluster::Node`), the servers beside it: all share the
//! machine's CPUs. 64 clients drive 2,000 live rooms with the command mix of the engine bench, each sent to the
//! engine of its room's partition.
//!
//! `cargo bench -p cohost-benches --bench cluster`. Environment: `COHOST_BENCH_QUICK=1` (short phases, 2
//! kills), `COHOST_BENCH_SECS`, `COHOST_BENCH_RUNS`, `COHOST_BENCH_KILLS`, `COHOST_BENCH_DIR`,
//! `COHOST_BENCH_PARTITIONS` (8), `COHOST_BENCH_LOG_STREAMS` (1), `COHOST_BENCH_CLIENTS` (1,024), `COHOST_BENCH_SYNC` (`always` or `default`, for the R1 server),
//! `COHOST_BENCH_ONLY=takeovers` (only the takeover phase).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cohost_benches::mix::{self, Client};
use cohost_benches::{Common, Goal, median, percentile};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_nats::cluster::{Joining, Node, preferred};
use cohost_nats::test_server::{TestCluster, TestServer};
use cohost_proto::RoomId;

const ROOMS: usize = 2_000;
/// Clients, each with one command in flight: `COHOST_BENCH_CLIENTS` (1,024). A log append waits for a synced
/// quorum, so a cluster's throughput is its clients over its latency; more clients fill bigger batches. With 64
/// clients every mode is bound by its latency (R3: 64 clients / ~20 ms), which measures the disk, not cohost.
fn clients() -> usize {
    static CLIENTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CLIENTS.get_or_init(|| {
        let clients = cohost_benches::env_or("COHOST_BENCH_CLIENTS", 1_024);
        assert!(
            (1..=ROOMS).contains(&clients),
            "COHOST_BENCH_CLIENTS is {clients}: from 1 to {ROOMS}, each client driving rooms of its own"
        );
        clients
    })
}
/// The cluster's partitions: `COHOST_BENCH_PARTITIONS` (8). Fewer partitions give each one more clients, so
/// bigger batches per synced log message: on one machine whose disk syncs every message of three servers,
/// messages per second are the bound. (cohostd's default, 64, suits nodes on their own machines.)
fn partitions() -> u32 {
    static PARTITIONS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PARTITIONS.get_or_init(|| cohost_benches::env_or("COHOST_BENCH_PARTITIONS", 8))
}
/// The log's streams: `COHOST_BENCH_LOG_STREAMS`, else the default of cohostd.
fn log_streams() -> u32 {
    static STREAMS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *STREAMS.get_or_init(|| {
        cohost_benches::env_or(
            "COHOST_BENCH_LOG_STREAMS",
            cohost_nats::cluster::LOG_STREAMS_DEFAULT,
        )
    })
}
const GOAL_R3: Goal = Goal::at_least("R3 cluster, acked commands", 30_000.0, "/s");
const GOAL_R1_RATIO: Goal = Goal::at_least("R1 cluster / embedded", 0.3, "x");
const GOAL_FAILOVER_P50: Goal = Goal::at_most("failover p50", 3.0, "s");
const GOAL_FAILOVER_MAX: Goal = Goal::at_most("failover max", 10.0, "s");

/// Where each room's commands go.
type Route = Arc<dyn Fn(&RoomId) -> Option<Engine> + Send + Sync>;

fn engine_config(dir: PathBuf) -> Config {
    let mut config = Config::new(dir);
    // A node's cache shared by its partitions, as cohostd does.
    config.store_cache_bytes = cohost_store_cache_share();
    // The mirrors' clock: the same expiries, none during a run.
    config.clock = Arc::new(ManualClock::new(mix::MIRROR_NOW_MS));
    config
}

/// Whether the R1 server syncs every write before its ack (`COHOST_BENCH_SYNC=always`, the default) or keeps
/// JetStream's default `sync_interval` (`COHOST_BENCH_SYNC=default`). The R3 servers always sync.
fn synced() -> bool {
    std::env::var("COHOST_BENCH_SYNC").map_or(true, |v| v != "default")
}

/// cohostd's default store cache divided among the partitions.
fn cohost_store_cache_share() -> u64 {
    (256 << 20) / u64::from(partitions())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    unlike_mirror: u64,
    latency_us: Vec<f64>,
}

async fn execute(
    route: &Route,
    room: &RoomId,
    plan: &mix::Plan,
) -> Result<(), cohost_engine::Error> {
    loop {
        if let Some(engine) = route(room) {
            return engine
                .execute(plan.actor.clone(), plan.command.clone(), Options::default())
                .await
                .map(drop);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs a room's setup commands as its host; each must succeed.
async fn set_up(
    route: &Route,
    room: &RoomId,
    host: &cohost_proto::Actor,
    commands: impl IntoIterator<Item = cohost_proto::Command>,
) {
    for command in commands {
        let plan = mix::Plan {
            room: 0,
            actor: host.clone(),
            command,
            expected: None,
        };
        execute(route, room, &plan)
            .await
            .expect("setup commands succeed");
    }
}

async fn drive(
    route: Route,
    mut client: Client,
    stop: Arc<AtomicBool>,
    prefix: &'static str,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let room = client.rng.index(client.rooms.len());
        let plan = client.plan(room);
        let room_id = mix::room_id(prefix, client.global_room(room));
        let sent = Instant::now();
        let outcome = execute(&route, &room_id, &plan).await;
        tally.latency_us.push(sent.elapsed().as_secs_f64() * 1e6);
        match (plan.expected, outcome.is_ok()) {
            (Some(events), true) => {
                client.settle(plan.room, &events);
                tally.ok += 1;
            }
            (None, false) => {}
            _ => tally.unlike_mirror += 1,
        }
    }
    tally
}

/// Sets the rooms up, then runs the mix for `secs`: acked commands per second, p50 and p99 in ms.
async fn measure(route: &Route, secs: f64) -> (f64, f64, f64) {
    measure_rooms(route, secs, "bench").await
}

/// [`measure`] on rooms named with `prefix`, so one cluster can be measured again on fresh rooms.
async fn measure_rooms(route: &Route, secs: f64, prefix: &'static str) -> (f64, f64, f64) {
    let tasks: Vec<_> = (0..clients())
        .map(|c| {
            let route = route.clone();
            tokio::spawn(async move {
                for i in (c..ROOMS).step_by(clients()) {
                    let (host, commands) = mix::setup(prefix, i);
                    let room = mix::room_id(prefix, i);
                    set_up(&route, &room, &host, commands).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("setup does not panic");
    }
    let users = mix::users();
    let clients = Client::all(&mix::mirror_rooms(prefix, ROOMS), &users, clients());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(drive(route.clone(), client, stop.clone(), prefix)))
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await.expect("a client does not panic");
        all.ok += tally.ok;
        all.unlike_mirror += tally.unlike_mirror;
        all.latency_us.extend(tally.latency_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(
        all.unlike_mirror, 0,
        "every answer is the one the mirror expects"
    );
    let p50 = percentile(&mut all.latency_us, 50.0) / 1e3;
    let p99 = percentile(&mut all.latency_us, 99.0) / 1e3;
    (all.ok as f64 / elapsed, p50, p99)
}

async fn join(urls: &str, name: &str, replicas: usize, dir: &std::path::Path) -> Node {
    join_with(
        urls,
        name,
        replicas,
        dir,
        partitions(),
        Arc::new(engine_config),
    )
    .await
}

async fn join_with(
    urls: &str,
    name: &str,
    replicas: usize,
    dir: &std::path::Path,
    partitions: u32,
    engine: cohost_nats::cluster::EngineConfig,
) -> Node {
    let joining = Joining {
        nats_url: urls.to_owned(),
        node_id: name.to_owned(),
        partitions,
        log_streams: log_streams(),
        replicas,
        data_dir: dir.join(name),
        engine,
        follow: None,
        advertise: None,
    };
    Node::join(joining).await.expect("the node joins")
}

async fn all_owned(nodes: &[Arc<Node>]) {
    all_owned_of(nodes, partitions()).await;
}

/// Waits until each partition is served by the node preferred for it among `nodes`: the share is settled, so
/// no handoff falls in the measurement (a command in flight at a handoff is answered `unavailable`).
async fn all_owned_of(nodes: &[Arc<Node>], partitions: u32) {
    let names: Vec<String> = nodes.iter().map(|n| n.node_id().to_owned()).collect();
    let settled = || {
        nodes.iter().all(|node| {
            let wanted: Vec<u32> = (0..partitions)
                .filter(|p| preferred(*p, &names) == Some(node.node_id()))
                .collect();
            node.serving() == wanted
        })
    };
    let started = Instant::now();
    while !settled() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the partitions were never settled on their preferred nodes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn route_to(nodes: Arc<std::sync::RwLock<Vec<Arc<Node>>>>) -> Route {
    Arc::new(move |room: &RoomId| {
        let nodes = nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.iter().find_map(|node| node.engine_for(room))
    })
}

fn report(name: &str, runs: &mut [(f64, f64, f64)]) -> f64 {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let mut p50s: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let mut p99s: Vec<f64> = runs.iter().map(|r| r.2).collect();
    let rate = median(&mut rates);
    println!(
        "  {name:<22} {rate:>8.0} acked commands/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        median(&mut p50s),
        median(&mut p99s)
    );
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let common = Common::from_env(3, 5.0, 1, 1.0);
    if std::env::var("COHOST_BENCH_ONLY").is_ok_and(|only| only == "takeovers") {
        takeovers(&common).await;
        return;
    }
    let kills: usize = common.setting("COHOST_BENCH_KILLS", 10, 2);
    println!(
        "cluster: {} clients over {ROOMS} live rooms, {} partitions in {} log streams, {:.0} s per run, {} run(s); \
         R1 server syncs every write: {}",
        clients(),
        partitions(),
        log_streams(),
        common.secs,
        common.runs,
        synced()
    );
    let (mut embedded, mut r1, mut r3) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..common.runs {
        let dir = common.fresh_dir();
        let engine = Engine::open(engine_config(dir.path().join("embedded"))).expect("opens");
        let one = engine.clone();
        let route: Route = Arc::new(move |_: &RoomId| Some(one.clone()));
        embedded.push(measure(&route, common.secs).await);
        engine.shutdown().await;

        let server = if synced() {
            TestServer::start_with_config(true, Some(String::new()))
        } else {
            TestServer::start(true)
        };
        let node = Arc::new(join(&server.url(), "r1-node", 1, dir.path()).await);
        all_owned(std::slice::from_ref(&node)).await;
        let nodes = Arc::new(std::sync::RwLock::new(vec![node.clone()]));
        r1.push(measure(&route_to(nodes), common.secs).await);
        node.stop().await;
        drop(server);

        let servers = TestCluster::start(3);
        let probe = async_nats::connect(servers.addrs())
            .await
            .expect("connects");
        servers.wait_ready(&probe).await;
        let mut started = Vec::new();
        for (i, server) in servers.servers.iter().enumerate() {
            started.push(Arc::new(
                join(&server.url(), &format!("r3-node-{i}"), 3, dir.path()).await,
            ));
        }
        all_owned(&started).await;
        let nodes = Arc::new(std::sync::RwLock::new(started.clone()));
        r3.push(measure(&route_to(nodes), common.secs).await);
        for node in started {
            node.stop().await;
        }
    }
    println!("medians over {} run(s):", common.runs);
    let embedded_rate = report("embedded (sled)", &mut embedded);
    let r1_rate = report("R1, 1 node", &mut r1);
    let r3_rate = report("R3, 3 nodes", &mut r3);
    let failovers = failovers(&common, kills).await;
    takeovers(&common).await;
    GOAL_R3.report(r3_rate);
    GOAL_R1_RATIO.report(r1_rate / embedded_rate);
    let mut seconds: Vec<f64> = failovers.iter().map(Duration::as_secs_f64).collect();
    if !seconds.is_empty() {
        let p50 = median(&mut seconds.clone());
        let max = seconds.iter().copied().fold(0.0, f64::max);
        seconds.sort_by(f64::total_cmp);
        let p90 = percentile(&mut seconds.clone(), 90.0);
        println!(
            "  failover, {} partitions moved in {kills} kills: min {:.2} s, p50 {p50:.2} s, p90 {p90:.2} s, \
             max {max:.2} s",
            seconds.len(),
            seconds[0]
        );
        GOAL_FAILOVER_P50.report(p50);
        GOAL_FAILOVER_MAX.report(max);
    }
}

/// On an R3 cluster under load, crashes a node `kills` times (a new node joins after each) and returns, for
/// each partition that moved, the time from the crash to its first acknowledged command.
async fn failovers(common: &Common, kills: usize) -> Vec<Duration> {
    let dir = common.fresh_dir();
    let servers = TestCluster::start(3);
    let probe = async_nats::connect(servers.addrs())
        .await
        .expect("connects");
    servers.wait_ready(&probe).await;
    let urls: Vec<String> = servers.servers.iter().map(TestServer::url).collect();
    let urls = urls.join(",");
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Arc::new(
            join(&urls, &format!("f-node-{i}"), 3, dir.path()).await,
        ));
    }
    all_owned(&nodes).await;
    let rooms: Vec<RoomId> = (0..partitions())
        .map(|p| {
            (0..)
                .map(|n| RoomId::new(&format!("f-{n}")).expect("valid id"))
                .find(|room| cohost_proto::partition::of(room, partitions()) == p)
                .expect("some room falls in each partition")
        })
        .collect();
    let shared = Arc::new(std::sync::RwLock::new(nodes));
    let route = route_to(shared.clone());
    for room in &rooms {
        let (host, commands) = (
            mix::host("f", 0),
            [
                cohost_proto::Command::CreateRoom(cohost_proto::CreateRoom {
                    room_id: room.clone(),
                    title: None,
                    max_cohosts: None,
                }),
                cohost_proto::Command::GoLive(cohost_proto::RoomTarget {
                    room_id: room.clone(),
                }),
            ],
        );
        set_up(&route, room, &host, commands).await;
    }
    let mut moved_times = Vec::new();
    for kill in 0..kills {
        let victim = shared.write().unwrap_or_else(|e| e.into_inner()).remove(0);
        let moved = victim.owned();
        let crashed = Instant::now();
        Arc::into_inner(victim)
            .expect("the victim is held once")
            .crash();
        let probes: Vec<_> = moved
            .iter()
            .map(|p| {
                let (route, room) = (route.clone(), rooms[*p as usize].clone());
                tokio::spawn(async move {
                    let invite = cohost_proto::Command::Invite(
                        cohost_proto::UserTarget {
                            room_id: room.clone(),
                            user_id: cohost_proto::UserId::new(&format!("guest-{kill}"))
                                .expect("valid id"),
                        }
                        .into(),
                    );
                    let plan = mix::Plan {
                        room: 0,
                        actor: mix::host("f", 0),
                        command: invite,
                        expected: None,
                    };
                    loop {
                        if execute(&route, &room, &plan).await.is_ok() {
                            return crashed.elapsed();
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        for probe in probes {
            moved_times.push(probe.await.expect("a probe does not panic"));
        }
        let fresh = Arc::new(join(&urls, &format!("f-node-{}", kill + 3), 3, dir.path()).await);
        shared
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(fresh);
        let current = shared.read().unwrap_or_else(|e| e.into_inner()).clone();
        all_owned(&current).await;
    }
    let remaining = shared.read().unwrap_or_else(|e| e.into_inner()).clone();
    for node in remaining {
        node.stop().await;
    }
    moved_times
}

/// How a takeover's time grows with the partition's history: one partition, filled by the mix for a while
/// (a snapshot every [`TAKEOVER_SNAPSHOT_EVERY`] events, as cohostd's default), handed off, and taken by a fresh
/// node from the partition's snapshot (load it, read the subject after it, rebuild the local store, claim, open
/// the engine); then, with the snapshot deleted, by another fresh node replaying the whole subject.
async fn takeovers(common: &Common) {
    let dir = common.fresh_dir();
    let server = TestServer::start_with_config(true, Some(String::new()));
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    let snapshotting: cohost_nats::cluster::EngineConfig = Arc::new(|dir| Config {
        snapshot_every_events: TAKEOVER_SNAPSHOT_EVERY,
        ..engine_config(dir)
    });
    let mut filled = 0.0;
    for (round, secs) in [common.secs / 5.0, common.secs].into_iter().enumerate() {
        let name = format!("fill-{round}");
        let writer = join_with(&server.url(), &name, 1, dir.path(), 1, snapshotting.clone()).await;
        let writer = Arc::new(writer);
        all_owned_of(std::slice::from_ref(&writer), 1).await;
        let nodes = Arc::new(std::sync::RwLock::new(vec![writer.clone()]));
        measure_rooms(&route_to(nodes), secs, ["fill-0", "fill-1"][round]).await;
        filled += secs;
        let events = writer.engines()[0].1.last_seq();
        // The writer's last snapshot saved (its turns save one within a second of taking it).
        tokio::time::sleep(Duration::from_secs(2)).await;
        writer.stop().await;
        let from_snapshot =
            take_once(&server, dir.path(), &format!("take-{round}"), &snapshotting).await;
        let store = js
            .get_object_store(cohost_nats::cluster::SNAPSHOT_BUCKET)
            .await
            .expect("the snapshot bucket");
        store.delete("p0").await.expect("the snapshot deleted");
        let whole = take_once(
            &server,
            dir.path(),
            &format!("whole-{round}"),
            &snapshotting,
        )
        .await;
        println!(
            "  takeover of one partition holding {events} events ({filled:.0} s of the mix): from its snapshot {:.2} s (the log after it: {} events), replaying the whole log {:.2} s",
            from_snapshot.0.as_secs_f64(),
            events - from_snapshot.1,
            whole.0.as_secs_f64(),
        );
    }
}

/// Events between snapshots in the takeover phase: cohostd's default in cluster mode.
const TAKEOVER_SNAPSHOT_EVERY: u64 = 10_000;

/// A fresh node takes the single partition: how long until it serves it, and the seq its store's log starts
/// after (0 for a whole replay). Handed off again after, so the next node takes it at once.
async fn take_once(
    server: &TestServer,
    dir: &std::path::Path,
    name: &str,
    engine: &cohost_nats::cluster::EngineConfig,
) -> (Duration, u64) {
    let started = Instant::now();
    let taker = Arc::new(join_with(&server.url(), name, 1, dir, 1, engine.clone()).await);
    all_owned_of(std::slice::from_ref(&taker), 1).await;
    let took = started.elapsed();
    let base = taker.engines()[0].1.log_from() - 1;
    taker.stop().await;
    (took, base)
}
