//! The engine on a disk that fails, through its public API: a failed write costs only its batch, a failed
//! flush and a panic in the sequencer are fail-stop (reported by `health`, every command `unavailable`, reads
//! still served), and reopening the store recovers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cohost_engine::{Config, Engine, Health, ManualClock};
use cohost_proto::{ErrorCode, RoomStatus};
use cohost_store::{Backend, Crash, MemoryBackend};
use support::*;

fn open_on(backend: Arc<dyn Backend>, clock: &Arc<ManualClock>) -> Engine {
    let config = Config::new("unused-with-a-backend")
        .with_clock(clock.clone())
        .with_backend(backend);
    Engine::open(config).expect("the engine opens")
}

async fn run(engine: &Engine, by: &str, command: cohost_proto::Command) -> Result<(), ErrorCode> {
    engine
        .execute(actor(by), command, Default::default())
        .await
        .map(drop)
        .map_err(|e| e.code())
}

const UNAVAILABLE: Result<(), ErrorCode> = Err(ErrorCode::Unavailable);

/// An engine on a fresh in-memory disk, with alice's room "stage" created.
async fn stage_on_a_disk() -> (Arc<ManualClock>, MemoryBackend, Engine) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let disk = MemoryBackend::new();
    let engine = open_on(Arc::new(disk.clone()), &clock);
    run(&engine, "alice", create("stage")).await.unwrap();
    (clock, disk, engine)
}

#[tokio::test]
async fn a_failed_write_costs_its_batch_and_nothing_more() {
    let (_clock, disk, engine) = stage_on_a_disk().await;
    disk.fail_writes(1);
    assert_eq!(run(&engine, "alice", go_live("stage")).await, UNAVAILABLE);
    assert_eq!(engine.health(), Health::Serving);
    assert_eq!(
        engine.room(&room("stage")).unwrap().status,
        RoomStatus::Idle
    );
    run(&engine, "alice", go_live("stage")).await.unwrap();
    assert_eq!(engine.last_seq(), 2);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_failed_flush_stops_writes_until_the_store_is_reopened() {
    let (clock, disk, engine) = stage_on_a_disk().await;
    disk.fail_flushes(1);
    assert_eq!(run(&engine, "alice", go_live("stage")).await, UNAVAILABLE);
    let Health::Failed { cause } = engine.health() else {
        panic!("a failed flush is fail-stop");
    };
    assert!(cause.contains("injected flush failure"), "{cause}");
    for command in [go_live("stage"), create("other")] {
        let error = engine
            .execute(actor("alice"), command, Default::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable);
        assert!(error.to_string().contains(&cause), "{error}");
    }
    let stage = engine.room(&room("stage")).expect("reads are still served");
    assert_eq!((stage.status, stage.version), (RoomStatus::Idle, 1));
    engine.shutdown().await;
    assert_eq!(
        disk.stats().flushes,
        3,
        "nothing flushed after the failure, at shutdown neither"
    );

    // The supervisor restarts the process on the same machine: the cache still shows the batch whose flush
    // failed. It was answered unavailable, which allows it to have landed; opening writes it again, so it is
    // durable now.
    disk.restart();
    let engine = open_on(Arc::new(disk.clone()), &clock);
    assert_eq!(engine.health(), Health::Serving);
    assert_eq!(engine.last_seq(), 2);
    assert_eq!(
        run(&engine, "alice", go_live("stage")).await,
        Err(ErrorCode::FailedPrecondition),
        "the go_live that was answered unavailable had landed"
    );
    engine.shutdown().await;
    disk.crash(Crash::LoseUnflushed);
    let engine = open_on(Arc::new(disk.clone()), &clock);
    assert_eq!(
        engine.room(&room("stage")).unwrap().status,
        RoomStatus::Live
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_panic_in_the_sequencer_is_fail_stop_not_a_hang_or_a_poisoned_reader() {
    let (_clock, disk, engine) = stage_on_a_disk().await;
    // The next write panics: a broken invariant in the sequencer thread, as far as the engine can tell.
    let armed = Arc::new(AtomicBool::new(true));
    disk.before_write(move || assert!(!armed.swap(false, Ordering::SeqCst), "the disk panics"));
    assert_eq!(
        run(&engine, "alice", go_live("stage")).await,
        UNAVAILABLE,
        "the caller of the batch in flight is answered, not left waiting"
    );
    let Health::Failed { cause } = engine.health() else {
        panic!("a panic is fail-stop");
    };
    assert!(
        cause.contains("the sequencer panicked: the disk panics"),
        "{cause}"
    );
    assert_eq!(run(&engine, "alice", create("other")).await, UNAVAILABLE);
    assert_eq!(engine.room(&room("stage")).unwrap().version, 1);
    assert_eq!(engine.read_events(1, 10).unwrap().len(), 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_failed_flush_of_a_cursor_stops_the_engine_too() {
    let (_clock, disk, engine) = stage_on_a_disk().await;
    disk.fail_flushes(1);
    assert!(engine.set_cursor("nats", 1).is_err());
    let Health::Failed { cause } = engine.health() else {
        panic!("the store takes no writes after any failed flush, so the engine says so");
    };
    assert!(cause.contains("injected flush failure"), "{cause}");
    assert_eq!(run(&engine, "alice", go_live("stage")).await, UNAVAILABLE);
    engine.shutdown().await;
}
