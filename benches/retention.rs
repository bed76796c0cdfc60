//! Disk under room churn, with log retention and without: rooms are created, taken live and stopped while the
//! engine's (manual) clock moves an hour per 20k rooms. Without retention the log grows with every room ever
//! created; with it (ended rooms' events kept 2 hours), the log's start follows the churn and the disk stays
//! flat once the first retention has passed. Prints both curves of the data directory's size on disk, and
//! checks the end against the level after the first retention.
//!
//! `cargo bench -p cohost-benches --bench retention`. Stated sizes: 20k rooms per simulated hour, 1,000 live at
//! a time, a snapshot every 50k events, command ids remembered 1 hour (retention is at least that), sled's
//! cache 8 MiB. Environment: `COHOST_BENCH_QUICK=1` (6 hours instead of 12), `COHOST_BENCH_DIR`.

use std::path::Path;
use std::sync::Arc;

use cohost_benches::{Common, Goal};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomTarget, UserId};

const HOUR_MS: u64 = 3_600_000;
const ROOMS_PER_HOUR: u64 = 20_000;
const LIVE_MAX: u64 = 1_000;
const CLIENTS: u64 = 64;
const RETAIN_MS: u64 = 2 * HOUR_MS;
const GOAL_FLAT: Goal = Goal::at_most(
    "disk at the end / after the first retention, with retention",
    1.5,
    "x",
);

fn room_id(n: u64) -> RoomId {
    RoomId::new(&format!("churn-{n}")).expect("valid id")
}

fn host(n: u64) -> Actor {
    Actor::User(UserId::new(&format!("host-{}", n % 10_000)).expect("valid id"))
}

async fn run(engine: &Engine, n: u64, command: Command) {
    let done = engine.execute(host(n), command, Options::default()).await;
    done.expect("every churn command succeeds");
}

/// Room `n` is created and taken live, and room `n - LIVE_MAX`, live since, is stopped.
async fn churn_one(engine: &Engine, n: u64) {
    let create = CreateRoom {
        room_id: room_id(n),
        title: None,
        max_cohosts: None,
    };
    run(engine, n, Command::CreateRoom(create)).await;
    let target = |n| RoomTarget {
        room_id: room_id(n),
    };
    run(engine, n, Command::GoLive(target(n))).await;
    if let Some(old) = n.checked_sub(LIVE_MAX) {
        run(engine, old, Command::StopRoom(target(old))).await;
    }
}

/// Every file's size under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One run of `hours` simulated hours; after each, the data directory's size in bytes and the events the log
/// holds.
async fn churn(common: &Common, hours: u64, retain_ms: u64) -> Vec<(u64, u64)> {
    let dir = common.fresh_dir();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut config = Config::new(dir.path()).with_clock(clock.clone());
    config.store_cache_bytes = 8 << 20;
    config.snapshot_every_events = 50_000;
    config.idempotency_ttl_ms = HOUR_MS;
    config.retain_ended_ms = retain_ms;
    let engine = Engine::open(config).expect("a fresh directory opens");
    let mut sizes = Vec::new();
    for hour in 0..hours {
        let first = hour * ROOMS_PER_HOUR;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    for n in (first + c..first + ROOMS_PER_HOUR).step_by(CLIENTS as usize) {
                        churn_one(&engine, n).await;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("a client finishes");
        }
        clock.advance(HOUR_MS);
        let held = engine.last_seq() + 1 - engine.log_from();
        sizes.push((disk_bytes(dir.path()), held));
    }
    engine.shutdown().await;
    sizes
}

#[tokio::main]
async fn main() {
    let common = Common::from_env(1, 0.0, 1, 0.0);
    let hours: u64 = common.setting("COHOST_BENCH_RETENTION_HOURS", 12, 6);
    println!(
        "retention: {ROOMS_PER_HOUR} rooms per simulated hour for {hours} hours, <= {LIVE_MAX} live, \
         {CLIENTS} clients; ended rooms' events kept {} h, or for ever",
        RETAIN_MS / HOUR_MS
    );
    let kept = churn(&common, hours, 0).await;
    let retained = churn(&common, hours, RETAIN_MS).await;
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "  hour   keep everything: disk, events held   retention {} h: disk, events held",
        RETAIN_MS / HOUR_MS
    );
    for (hour, (k, r)) in kept.iter().zip(&retained).enumerate() {
        println!(
            "  {:>4}   {:>9.1} MiB {:>10}   {:>20.1} MiB {:>10}",
            hour + 1,
            mib(k.0),
            k.1,
            mib(r.0),
            r.1
        );
    }
    let (kept, retained): (Vec<u64>, Vec<u64>) = (
        kept.iter().map(|k| k.0).collect(),
        retained.iter().map(|r| r.0).collect(),
    );
    // After the first retention (and the hour it rounds to) has passed, the log holds about as much as it
    // ever will.
    let settled = (RETAIN_MS / HOUR_MS + 1) as usize;
    let (at_settled, at_end) = (
        retained[settled] as f64,
        retained[retained.len() - 1] as f64,
    );
    println!(
        "  at the end: {:.1} MiB kept for ever, {:.1} MiB with retention ({:.2}x less)",
        mib(kept[kept.len() - 1]),
        mib(retained[retained.len() - 1]),
        kept[kept.len() - 1] as f64 / at_end
    );
    GOAL_FLAT.report(at_end / at_settled);
}
