//! A full queue answers `unavailable` at once instead of growing; shutdown drains what was queued; a stopped
//! engine refuses new work.

mod support;

use std::sync::Arc;

use cohost_engine::{Engine, ManualClock};
use cohost_proto::{ErrorCode, Reply};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_unavailable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut config = config(dir.path(), &clock);
    config.queue_max = 4;
    let engine = Engine::open(config).unwrap();
    engine
        .execute(actor("alice"), create("stage"), Default::default())
        .await
        .unwrap();
    engine
        .execute(actor("alice"), go_live("stage"), Default::default())
        .await
        .unwrap();
    let attempts: Vec<_> = (0..2_000)
        .map(|n| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .execute(
                        actor(&format!("fan-{n}")),
                        request("stage"),
                        Default::default(),
                    )
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    let mut unavailable = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) if e.code == ErrorCode::Unavailable => unavailable += 1,
            // Past 32 pending requests the room itself refuses.
            Err(e) => assert_eq!(e.code, ErrorCode::ResourceExhausted, "{e}"),
        }
    }
    assert!(
        unavailable > 0,
        "a queue of 4 under 2000 concurrent commands must refuse some"
    );
    assert!(accepted > 0 && accepted <= 32);
    assert_eq!(engine.stats().queue_full, unavailable);
    assert_eq!(
        engine.last_seq(),
        2 + accepted,
        "every accepted command, and only those, appended"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_and_then_refuses() {
    let t = open();
    t.live_room("stage", "alice").await;
    let pending: Vec<_> = (0..200)
        .map(|n| {
            let engine = t.engine.clone();
            tokio::spawn(async move {
                let room_name = format!("room-{n}");
                engine
                    .execute(actor("alice"), create(&room_name), Default::default())
                    .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    t.engine.shutdown().await;
    let mut created = Vec::new();
    for (n, outcome) in pending.into_iter().enumerate() {
        match outcome.await.unwrap() {
            Ok(Reply::Room(room)) => created.push(room.room_id),
            Ok(other) => panic!("create replies the room, got {other:?}"),
            Err(e) => assert_eq!(e.code, ErrorCode::Unavailable, "room-{n}: {e}"),
        }
    }
    assert_eq!(
        t.code("alice", create("late")).await,
        ErrorCode::Unavailable
    );
    let t = t.restart().await;
    for room_id in &created {
        assert!(
            t.engine.room(room_id).is_ok(),
            "{room_id} was acknowledged, so it survives"
        );
    }
    assert_eq!(t.engine.last_seq(), 2 + created.len() as u64);
    t.engine.shutdown().await;
}
