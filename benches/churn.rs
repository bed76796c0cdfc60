//! Memory under room churn: a million rooms created, taken live and stopped, at most 10k live at a time. Ended
//! rooms leave memory after their retention, so resident memory follows the live rooms, not the rooms ever
//! created. Prints the curve of VmRSS and checks the end against the level once the first 10k rooms have been
//! created, taken live and stopped.
//!
//! `cargo bench -p cohost-benches --bench churn`. Stated sizes: sled's page cache 8 MiB; ended rooms archived at
//! the next turn (retention 0); no `command_id`s, so the memory of command ids stays empty (its bound is
//! 1,000,000). Environment: `COHOST_BENCH_QUICK=1` (100k rooms), `COHOST_BENCH_CHURN_ROOMS`,
//! `COHOST_BENCH_CHURN_CACHE_MIB` (sled's cache; a smaller one is full sooner, which separates the cache
//! filling up from growth with the rooms ever created), `COHOST_BENCH_DIR`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cohost_benches::{Common, Goal, vm_rss_bytes};
use cohost_engine::{Config, Engine, Options};
use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomTarget, UserId};

const LIVE_MAX: u64 = 10_000;
const CLIENTS: u64 = 64;
const HOSTS: u64 = 100_000;
const RETENTION_MS: u64 = 0;
const GOAL_GROWTH: Goal = Goal::at_most("VmRSS at the end / after the first 10k rooms", 1.5, "x");

fn room_id(n: u64) -> RoomId {
    RoomId::new(&format!("churn-{n}")).expect("valid id")
}

fn host(n: u64) -> Actor {
    Actor::User(UserId::new(&format!("host-{}", n % HOSTS)).expect("valid id"))
}

async fn run(engine: &Engine, host: Actor, command: Command) {
    engine
        .execute(host, command, Options::default())
        .await
        .expect("every churn command succeeds");
}

/// Room `n` is created and taken live, and room `n - LIVE_MAX`, live since, is stopped.
async fn churn_one(engine: &Engine, n: u64) {
    let create = CreateRoom {
        room_id: room_id(n),
        title: None,
        max_cohosts: None,
    };
    run(engine, host(n), Command::CreateRoom(create)).await;
    let target = RoomTarget {
        room_id: room_id(n),
    };
    run(engine, host(n), Command::GoLive(target)).await;
    if let Some(old) = n.checked_sub(LIVE_MAX) {
        let target = RoomTarget {
            room_id: room_id(old),
        };
        run(engine, host(old), Command::StopRoom(target)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let common = Common::from_env(1, 0.0, 1, 0.0);
    let rooms: u64 = common.setting("COHOST_BENCH_CHURN_ROOMS", 1_000_000, 100_000);
    let cache_mib: u64 = common.setting("COHOST_BENCH_CHURN_CACHE_MIB", 8, 8);
    let dir = common.fresh_dir();
    let mut config = Config::new(dir.path());
    config.store_cache_bytes = cache_mib << 20;
    config.ended_retention_ms = RETENTION_MS;
    config.idempotency_max = 1_000_000;
    let engine = Engine::open(config).expect("a fresh directory opens");
    println!(
        "churn: {rooms} rooms created, live and stopped, <= {LIVE_MAX} live at once, {CLIENTS} clients; \
         sled cache {cache_mib} MiB, ended rooms kept {RETENTION_MS} ms, no command ids"
    );
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (engine, next, done) = (engine.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= rooms {
                        return;
                    }
                    churn_one(&engine, n).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let curve = sample(&done, rooms, &started).await;
    for client in clients {
        client.await.expect("a client finishes");
    }
    report(&engine, &curve);
    engine.shutdown().await;
}

/// VmRSS once the first 10k rooms have been created, taken live and stopped, and at every tenth of the run:
/// `(rooms created, bytes)`.
async fn sample(done: &AtomicU64, rooms: u64, started: &Instant) -> Vec<(u64, u64)> {
    // The first mark: the first 10k rooms have been created, taken live and stopped.
    let mut marks: Vec<u64> = vec![2 * LIVE_MAX];
    marks.extend((1..=10).map(|tenth| rooms * tenth / 10));
    marks.retain(|&m| m > 2 * LIVE_MAX);
    marks.insert(0, 2 * LIVE_MAX);
    let mut curve = Vec::new();
    for mark in marks {
        while done.load(Ordering::Relaxed) < mark {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let rss = vm_rss_bytes();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {mark:>8} rooms: VmRSS {:>7.1} MiB  ({:.0} rooms/s so far)",
            rss as f64 / 1_048_576.0,
            mark as f64 / secs
        );
        curve.push((mark, rss));
    }
    curve
}

fn report(engine: &Engine, curve: &[(u64, u64)]) {
    let (first, last) = (curve[0].1 as f64, curve[curve.len() - 1].1 as f64);
    println!(
        "  rooms in memory at the end: {} (live {LIVE_MAX} plus those ended within the retention)",
        engine.room_states().1.len()
    );
    GOAL_GROWTH.report(last / first);
}
