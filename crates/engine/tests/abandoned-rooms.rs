//! Abandoned rooms end on their own: one idle past `idle_room_ms` from its creation (reason `never_live`),
//! one live with its host away past `host_absent_ms` (reason `host_absent`), and never while the setting is 0.
//! The idle time survives a restart (it is read from the room's first event); a host's absence counts from
//! the opening after one, so a room is never ended early.
//!
//! No test sleeps: after moving the clock, a refused command is a barrier, as in `expiry.rs`.

mod support;

use std::sync::Arc;

use cohost_engine::{Clock, ManualClock};
use cohost_proto::{
    Command, Envelope, ErrorCode, Event, Presence, PresenceStamp, RemovalReason, RoomStatus,
    StopReason,
};
use support::*;

const IDLE_MS: u64 = 3_600_000;
const ABSENT_MS: u64 = 600_000;

fn open_with(dir: tempfile::TempDir, clock: Arc<ManualClock>, limits: (u64, u64)) -> TestEngine {
    open_configured(dir, clock, |config| {
        (config.idle_room_ms, config.host_absent_ms) = limits;
        // A snapshot after every event: after a restart, rooms come from the snapshot, not from a replay.
        config.snapshot_every_events = 1;
    })
}

async fn reopen(t: TestEngine, limits: (u64, u64)) -> TestEngine {
    t.engine.shutdown().await;
    open_with(t.dir, t.clock, limits)
}

/// A command decided after whatever is due now: `go_live` on the live room `barrier`, refused.
async fn barrier(t: &TestEngine) {
    let code = t.code("zed", go_live("barrier")).await;
    assert_eq!(code, ErrorCode::FailedPrecondition);
}

fn status(t: &TestEngine, name: &str) -> RoomStatus {
    t.engine.room(&room(name)).expect("room exists").status
}

fn events_of(t: &TestEngine, name: &str) -> Vec<Envelope> {
    let all = t.engine.read_events(1, 1_000).expect("log reads");
    all.into_iter()
        .filter(|e| e.room_id == room(name))
        .collect()
}

fn host_presence(t: &TestEngine, name: &str, host: &str, online: bool) -> Command {
    Command::Presence(Presence {
        room_id: room(name),
        user_id: user(host),
        online,
        stamp: Some(PresenceStamp {
            at_ms: t.clock.now_ms(),
            participant_sid: format!("PA_{host}_{}", t.clock.now_ms()),
        }),
    })
}

/// The room's last event is `room_stopped` by the system (no actor), for `reason`.
fn assert_ended_for(t: &TestEngine, name: &str, reason: StopReason) {
    let events = events_of(t, name);
    let last = events.last().expect("the room has events");
    assert!(
        matches!(&last.event, Event::RoomStopped { reason: r, .. } if *r == reason),
        "{name} ends with room_stopped for {reason:?}: {last:?}"
    );
    assert_eq!(
        (&last.actor, &last.service),
        (&None, &None),
        "by the system"
    );
    assert_eq!(status(t, name), RoomStatus::Ended);
}

#[tokio::test]
async fn an_idle_room_ends_as_never_live_counting_from_its_creation_across_a_restart() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let t = open_with(tempfile::tempdir().unwrap(), clock, (IDLE_MS, 0));
    t.live_room("barrier", "zed").await;
    t.ok("alice", create("idle")).await;
    t.ok("carol", create("went-live")).await;
    t.clock.advance(IDLE_MS / 2);
    t.ok("carol", go_live("went-live")).await;
    t.clock.advance(IDLE_MS / 2 - 1);
    barrier(&t).await;
    assert_eq!(status(&t, "idle"), RoomStatus::Idle, "not yet due");

    // Opening again reads the room's creation from the log: the day does not start over.
    let t = reopen(t, (IDLE_MS, 0)).await;
    t.ok("alice", invite("idle", "bob")).await;
    t.clock.advance(1);
    barrier(&t).await;
    assert_ended_for(&t, "idle", StopReason::NeverLive);
    let cancelled = events_of(&t, "idle")
        .iter()
        .any(|e| matches!(&e.event, Event::InvitationCancelled { .. }));
    assert!(cancelled, "the pending invitation ends with the room");
    t.clock.advance(10 * IDLE_MS);
    barrier(&t).await;
    assert_eq!(
        status(&t, "went-live"),
        RoomStatus::Live,
        "a room that went live is not idle"
    );
    assert_eq!(status(&t, "barrier"), RoomStatus::Live);
}

#[tokio::test]
async fn a_live_room_whose_host_stays_away_stops_as_host_absent() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let t = open_with(tempfile::tempdir().unwrap(), clock, (0, ABSENT_MS));
    t.live_room("barrier", "zed").await;
    t.ok("system", host_presence(&t, "barrier", "zed", true))
        .await;
    t.live_room("stage", "alice").await;
    t.ok("alice", invite("stage", "bob")).await;
    t.ok("bob", accept("stage", 1)).await;
    t.ok("system", host_presence(&t, "stage", "alice", true))
        .await;
    t.ok("dave", create("idle")).await;

    // alice drops, and comes back within the limit: nothing happens.
    t.ok("system", host_presence(&t, "stage", "alice", false))
        .await;
    t.clock.advance(ABSENT_MS - 1);
    barrier(&t).await;
    t.ok("system", host_presence(&t, "stage", "alice", true))
        .await;
    t.clock.advance(ABSENT_MS);
    barrier(&t).await;
    assert_eq!(status(&t, "stage"), RoomStatus::Live, "the host came back");

    // She drops again and stays away: the room stops, and bob's seat with it.
    t.ok("system", host_presence(&t, "stage", "alice", false))
        .await;
    t.clock.advance(ABSENT_MS - 1);
    barrier(&t).await;
    assert_eq!(status(&t, "stage"), RoomStatus::Live, "not yet due");
    t.clock.advance(1);
    barrier(&t).await;
    assert_ended_for(&t, "stage", StopReason::HostAbsent);
    let seat_ended = events_of(&t, "stage").iter().any(|e| {
        matches!(
            &e.event,
            Event::CohostRemoved {
                reason: RemovalReason::RoomStopped,
                ..
            }
        )
    });
    assert!(seat_ended, "bob's seat ends with the room");
    assert_eq!(
        status(&t, "idle"),
        RoomStatus::Idle,
        "idle_room_ms 0 never ends a room"
    );
    assert_eq!(
        status(&t, "barrier"),
        RoomStatus::Live,
        "its host is connected"
    );
}

#[tokio::test]
async fn a_host_who_never_joined_counts_as_away_and_a_restart_only_delays_the_stop() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let t = open_with(tempfile::tempdir().unwrap(), clock, (0, ABSENT_MS));
    t.live_room("barrier", "zed").await;
    t.ok("system", host_presence(&t, "barrier", "zed", true))
        .await;
    t.live_room("never-joined", "alice").await;
    t.clock.advance(ABSENT_MS / 2);

    // After a restart the absence counts from the opening: later than it might, never early.
    let t = reopen(t, (0, ABSENT_MS)).await;
    t.clock.advance(ABSENT_MS / 2 + 1);
    barrier(&t).await;
    assert_eq!(status(&t, "never-joined"), RoomStatus::Live);
    t.clock.advance(ABSENT_MS / 2);
    barrier(&t).await;
    assert_ended_for(&t, "never-joined", StopReason::HostAbsent);

    // With the setting at 0 nothing is ever stopped for it.
    let t = reopen(t, (0, 0)).await;
    t.live_room("quiet", "carol").await;
    t.clock.advance(100 * ABSENT_MS);
    barrier(&t).await;
    assert_eq!(status(&t, "quiet"), RoomStatus::Live);
}

#[tokio::test]
async fn only_the_system_ends_an_abandoned_room() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let t = open_with(tempfile::tempdir().unwrap(), clock, (0, 0));
    t.ok("alice", create("idle")).await;
    let end = |reason| {
        Command::EndAbandoned(cohost_proto::EndAbandoned {
            room_id: room("idle"),
            reason,
        })
    };
    assert_eq!(
        t.code("alice", end(StopReason::NeverLive)).await,
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        t.code("system", end(StopReason::Host)).await,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        t.code("system", end(StopReason::HostAbsent)).await,
        ErrorCode::FailedPrecondition
    );
    t.ok("system", end(StopReason::NeverLive)).await;
    assert_ended_for(&t, "idle", StopReason::NeverLive);
}
