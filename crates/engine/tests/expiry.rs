//! The timer expires pending invitations when `expires_ms` passes, driven by an injected clock, and picks up
//! where it was after a restart.
//!
//! No test sleeps: after moving the clock, a command acts as a barrier. The sequencer reads the clock after
//! a command arrives and decides due expiries before it, so once the command is answered, every expiry due
//! at that time is durable, and none that is not due has happened.

mod support;

use cohost_engine::ListRequest;
use cohost_proto::{ErrorCode, Event, InvitationStatus};
use support::*;

fn status(t: &TestEngine, n: u64) -> InvitationStatus {
    let page = t
        .engine
        .room_invitations(&room("stage"), &ListRequest::default())
        .unwrap();
    page.items
        .iter()
        .find(|i| i.invitation_id.number() == n)
        .expect("invitation listed")
        .status
}

fn assert_status(t: &TestEngine, n: u64, want: InvitationStatus, why: &str) {
    assert_eq!(status(t, n), want, "invitation {n}: {why}");
}

/// A command decided after every expiry due now: `go_live` on the live room, refused, changing nothing.
async fn barrier(t: &TestEngine) {
    assert_eq!(
        t.code("alice", go_live("stage")).await,
        ErrorCode::FailedPrecondition
    );
}

#[tokio::test]
async fn a_pending_invitation_expires_when_its_time_passes() {
    let t = live(&[("stage", "alice")]).await;
    t.ok("alice", invite("stage", "bob")).await;
    t.ok("alice", invite("stage", "carol")).await;
    t.ok("carol", accept("stage", 2)).await;
    t.clock.advance(299_999);
    barrier(&t).await;
    assert_status(&t, 1, InvitationStatus::Pending, "not yet due");
    t.clock.advance(1);
    barrier(&t).await;
    assert_status(
        &t,
        1,
        InvitationStatus::Expired,
        "due: expired before the barrier",
    );
    assert_status(
        &t,
        2,
        InvitationStatus::Approved,
        "an answered invitation never expires",
    );
    let last = t
        .engine
        .read_events(t.engine.last_seq(), 1)
        .unwrap()
        .remove(0);
    assert!(matches!(last.event, Event::InvitationExpired { .. }));
    assert_eq!(last.actor, None, "the system expires invitations");
    assert_eq!(last.at_ms, START_MS + 300_000);
    assert_eq!(
        t.code("bob", accept("stage", 1)).await,
        ErrorCode::FailedPrecondition
    );
    t.ok("alice", invite("stage", "bob")).await;
    t.engine.shutdown().await;
}

#[tokio::test]
async fn timers_survive_a_restart() {
    let t = live(&[("stage", "alice")]).await;
    t.ok("alice", invite("stage", "bob")).await;
    let t = t.restart().await;
    t.clock.advance(300_000);
    barrier(&t).await;
    assert_status(&t, 1, InvitationStatus::Expired, "expired after restart");
    let t = t.restart().await;
    assert_status(
        &t,
        1,
        InvitationStatus::Expired,
        "and after a second restart",
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn invitations_due_while_stopped_expire_on_open() {
    let t = live(&[("stage", "alice")]).await;
    for candidate in ["bob", "carol", "dave"] {
        t.ok("alice", invite("stage", candidate)).await;
    }
    t.engine.shutdown().await;
    t.clock.advance(3_600_000);
    let t = t.restart().await;
    barrier(&t).await;
    for n in 1..=3 {
        assert_status(&t, n, InvitationStatus::Expired, "due while stopped");
    }
    assert_eq!(t.engine.last_seq(), 8);
    t.engine.shutdown().await;
}
