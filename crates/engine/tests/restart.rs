//! A restart keeps everything: rooms, invitations, candidates' lists, cursors, idempotency and timers; and a
//! restart from snapshots equals one from the log alone.

mod support;

use cohost_engine::{Config, Engine, ListRequest};
use cohost_proto::ErrorCode;
use support::*;

async fn busy_history(t: &TestEngine) {
    t.live_room("one", "alice").await;
    t.live_room("two", "carol").await;
    t.ok("alice", invite("one", "bob")).await;
    t.ok("bob", accept("one", 1)).await;
    t.ok("dave", request("two")).await;
    t.ok("alice", invite("one", "erin")).await;
    t.ok("erin", reject("one", 2)).await;
    t.ok("alice", invite("one", "dave")).await;
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let t = open();
    busy_history(&t).await;
    t.engine.set_cursor("relay", 5).unwrap();
    let (seq, mut before) = t.engine.room_states();
    let dave_before = t
        .engine
        .user_invitations(&user("dave"), &ListRequest::default())
        .unwrap();
    let t = t.restart().await;
    let (seq_after, mut after) = t.engine.room_states();
    before.sort_by(|a, b| a.0.cmp(&b.0));
    after.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((seq_after, after), (seq, before));
    assert_eq!(t.engine.cursor("relay").unwrap(), 5);
    assert_eq!(t.engine.cursor("other").unwrap(), 0);
    assert_eq!(
        t.engine
            .user_invitations(&user("dave"), &ListRequest::default())
            .unwrap(),
        dave_before
    );
    assert_eq!(
        t.code("alice", invite("one", "dave")).await,
        ErrorCode::AlreadyExists
    );
    t.ok("dave", accept("one", 3)).await;
    assert_eq!(
        t.engine.last_seq(),
        seq + 1,
        "seqs continue after a restart"
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn snapshots_and_a_full_replay_agree() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(cohost_engine::ManualClock::new(START_MS));
    let mut config = config(dir.path(), &clock);
    config.snapshot_every_events = 5;
    let t = TestEngine {
        engine: Engine::open(config.clone()).unwrap(),
        clock: clock.clone(),
        dir,
        log: None,
    };
    busy_history(&t).await;
    t.ok("alice", invite("one", "frank")).await;
    let (_, mut live) = t.engine.room_states();
    t.engine.shutdown().await;
    let from_snapshots = Engine::open(config).unwrap();
    let (_, mut recovered) = from_snapshots.room_states();
    from_snapshots.shutdown().await;
    let store = cohost_store::Store::open(t.dir.path()).unwrap();
    let snapshots = store.snapshots().unwrap();
    assert_eq!(
        snapshots.seq,
        store.verify_log().unwrap().last_seq,
        "shutdown snapshots up to the last seq"
    );
    assert_eq!(snapshots.rooms.len(), 2);
    drop(store);
    // The full replay: fold the whole log from seq 1.
    let events = {
        let engine = Engine::open(Config::new(t.dir.path()).with_clock(clock.clone())).unwrap();
        let events = engine.read_events(1, 1_000).unwrap();
        engine.shutdown().await;
        events
    };
    let mut replayed: std::collections::HashMap<_, cohost_core::RoomState> = Default::default();
    for envelope in &events {
        cohost_core::apply(
            replayed.entry(envelope.room_id.clone()).or_default(),
            &envelope.event,
        );
    }
    let mut replayed: Vec<_> = replayed.into_iter().collect();
    for list in [&mut live, &mut recovered, &mut replayed] {
        list.sort_by(|a, b| a.0.cmp(&b.0));
    }
    assert_eq!(recovered, live);
    assert_eq!(replayed, live);
}

#[tokio::test]
async fn read_room_returns_one_rooms_events_from_a_version() {
    let t = open();
    busy_history(&t).await;
    let events = t.engine.read_room(&room("one"), 3, 100).unwrap();
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [3, 4, 5, 6, 7]);
    assert!(events.iter().all(|e| e.room_id == room("one")));
    assert_eq!(
        t.engine.read_room(&room("one"), 6, 1).unwrap()[0].version,
        6
    );
    assert_eq!(
        t.engine
            .read_room(&room("missing"), 1, 10)
            .unwrap_err()
            .code(),
        ErrorCode::NotFound
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_second_engine_on_the_same_directory_is_refused_clearly() {
    let t = open();
    let second = Engine::open(config(t.dir.path(), &t.clock)).unwrap_err();
    assert_eq!(second.code(), ErrorCode::Unavailable);
    assert!(
        second.to_string().contains("already open"),
        "{}",
        second.to_string()
    );
    t.engine.shutdown().await;
}
