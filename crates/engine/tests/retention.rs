//! Log retention: with `retain_ended_ms` set, the prefix of the log that only rooms ended longer ago hold is
//! removed after a snapshot. An open room's history stays whole however old, so does a room ended within the
//! retention; an ended room's removed history reads as `not_found` while its final state still reads; and the
//! engine reopens on the shortened log to the same state.

mod support;

use std::sync::Arc;

use cohost_engine::{Error, ManualClock};
use cohost_proto::RoomStatus;
use support::*;

const HOUR_MS: u64 = 3_600_000;
const RETAIN_MS: u64 = 2 * HOUR_MS;

fn open_at(dir: tempfile::TempDir, clock: Arc<ManualClock>) -> TestEngine {
    open_configured(dir, clock, |config| {
        config.retain_ended_ms = RETAIN_MS;
        config.idempotency_ttl_ms = HOUR_MS;
        // A snapshot, and so a retention pass, after every event.
        config.snapshot_every_events = 1;
    })
}

/// A refused command: once it is answered, the engine's turn before it (its snapshot and retention pass) is
/// done.
async fn barrier(t: &TestEngine) {
    let code = t.code("zed", go_live("open")).await;
    assert_eq!(code, cohost_proto::ErrorCode::PermissionDenied);
}

fn first_seq(t: &TestEngine) -> u64 {
    match t.engine.read_events(1, 1) {
        Ok(events) => events.first().map_or(1, |e| e.seq),
        Err(Error::HistoryGone { covered_from }) => covered_from,
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn only_rooms_ended_longer_ago_than_the_retention_lose_their_history() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let t = open_at(tempfile::tempdir().unwrap(), clock);
    t.live_room("old", "alice").await;
    t.ok("alice", invite("old", "bob")).await;
    t.ok("alice", stop("old")).await;
    t.clock.advance(HOUR_MS);
    t.live_room("recent", "carol").await;
    t.live_room("open", "dave").await;
    t.clock.advance(HOUR_MS);
    t.ok("carol", stop("recent")).await;
    barrier(&t).await;
    assert_eq!(
        first_seq(&t),
        1,
        "nothing ended longer ago than the retention yet"
    );

    // Past the retention of `old` (and the hour it ended in), the next snapshot removes its events.
    t.clock.advance(RETAIN_MS);
    t.ok("dave", invite("open", "erin")).await;
    barrier(&t).await;
    let from = first_seq(&t);
    assert!(from > 1, "the log's start moved");
    match t.engine.read_room(&room("old"), 1, 100) {
        Err(error @ Error::EventsRemoved { .. }) => {
            assert_eq!(error.code(), cohost_proto::ErrorCode::NotFound);
        }
        other => panic!("the removed history of an old room: {other:?}"),
    }
    let old = t
        .engine
        .room(&room("old"))
        .expect("its final state still reads");
    assert_eq!(old.status, RoomStatus::Ended);
    let recent = t.engine.read_room(&room("recent"), 1, 100).unwrap();
    assert_eq!(
        recent.len() as u64,
        3,
        "a room ended within the retention keeps its history"
    );
    let open = t.engine.read_room(&room("open"), 1, 100).unwrap();
    assert_eq!(open.len(), 3, "an open room keeps its history, however old");

    // Long after, `recent` goes too, but never the open room's events.
    t.clock.advance(2 * RETAIN_MS);
    t.ok("dave", invite("open", "frank")).await;
    barrier(&t).await;
    assert!(first_seq(&t) > from);
    assert!(t.engine.read_room(&room("recent"), 1, 100).is_err());
    let open = t.engine.read_room(&room("open"), 1, 100).unwrap();
    let version = t.engine.room(&room("open")).unwrap().version;
    assert_eq!(open.len() as u64, version, "every version of the open room");

    // Reopened on the shortened log: the same state, and it goes on.
    let (last, before) = t.engine.room_states();
    t.engine.shutdown().await;
    let t = open_at(t.dir, t.clock);
    let (last_after, mut after) = t.engine.room_states();
    let mut before = before;
    before.sort_by(|a, b| a.0.cmp(&b.0));
    after.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((last_after, after), (last, before));
    t.ok("dave", stop("open")).await;
}
