//! The revoker survives a log it cannot read: a damaged record makes it retry, visibly (state `retrying`, the
//! error, the retries), and once the record is whole again it catches up, sends each removal exactly once and in
//! order, and follows the log on.

mod support;

use std::sync::Arc;

use cohost_credentials::Revoker;
use cohost_credentials::revoke::SINK;
use cohost_engine::{Config, Engine, FollowerState, ManualClock};
use cohost_proto::Envelope;
use cohost_store::MemoryBackend;
use support::stand_in::{Answer, StandIn, eventually, livekit, seen};
use support::{accept, create, go_live, invite, leave, remove, run, stop};

const START_MS: u64 = 1_700_000_000_000;

/// The key of the batch record that starts at `seq` (`L` + big-endian seq, as the store writes it).
fn log_key(seq: u64) -> Vec<u8> {
    let mut key = b"L".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The clock moves a second, then `by` runs `command`; returns the event it wrote (one command, one batch).
async fn step(
    engine: &Engine,
    clock: &ManualClock,
    by: &str,
    command: cohost_proto::Command,
) -> Envelope {
    clock.advance(1_000);
    run(engine, by, command).await;
    let seq = engine.last_seq();
    engine.read_events(seq, 1).unwrap().remove(0)
}

/// What the revoker sends LiveKit for a removal the event makes, answered `Removed`.
fn removal(identity: &str, event: &Envelope) -> support::stand_in::Seen {
    seen(
        identity,
        event.at_ms.div_ceil(1_000) as i64,
        Answer::Removed,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_retried_until_whole_then_each_removal_is_sent_once() {
    let stand_in = StandIn::start().await;
    let disk = MemoryBackend::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let config = Config::new("unused")
        .with_backend(Arc::new(disk.clone()))
        .with_clock(clock.clone());
    let engine = Engine::open(config).unwrap();
    // Alice's live room with bob and carol seated; alice removes bob, then carol leaves.
    for (by, command) in [
        ("alice", create()),
        ("alice", go_live()),
        ("alice", invite("bob")),
        ("bob", accept(1)),
        ("alice", invite("carol")),
        ("carol", accept(2)),
    ] {
        run(&engine, by, command).await;
    }
    let removed = step(&engine, &clock, "alice", remove("bob")).await;
    let left = step(&engine, &clock, "carol", leave()).await;

    // Bit rot in bob's removal: the record fails its checksum.
    let key = log_key(removed.seq);
    let mut whole = Vec::new();
    let damaged = disk.damage(&key, |bytes| {
        whole = bytes.clone();
        *bytes.last_mut().expect("a record is never empty") ^= 0xff;
    });
    assert!(damaged, "bob's removal is a batch of its own");
    assert!(
        engine.read_events(removed.seq, 1).is_err(),
        "the damage shows"
    );

    let revoker = Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap();
    eventually("the revoker retrying, twice", || {
        let status = revoker.status();
        status.state == FollowerState::Retrying && status.retries >= 2
    })
    .await;
    let status = revoker.status();
    let error = status.last_error.expect("the failure is recorded");
    assert!(
        error.message.starts_with("reading the log: "),
        "{}",
        error.message
    );
    assert!(error.at_ms > 0);
    assert!(status.handled_seq < removed.seq, "nothing past the damage");
    assert!(stand_in.calls().is_empty(), "no removal before bob's");

    // The record is whole again: the revoker catches up without being restarted.
    assert!(disk.damage(&key, |bytes| *bytes = whole));
    eventually("the revoker past carol's leaving", || {
        revoker.done_seq() == left.seq
    })
    .await;
    eventually("the revoker following", || {
        revoker.status().state == FollowerState::Following
    })
    .await;
    assert_eq!(
        stand_in.seen(),
        [removal("bob", &removed), removal("carol", &left)],
        "each removal once, in log order"
    );

    // It follows the log on: the room stops, and its host goes too.
    let stopped = step(&engine, &clock, "alice", stop()).await;
    eventually("the revoker past the stop", || {
        revoker.done_seq() == stopped.seq
    })
    .await;
    assert_eq!(stand_in.seen()[2..], [removal("alice", &stopped)]);
    assert_eq!(engine.cursor(SINK).unwrap(), stopped.seq);
    let status = revoker.status();
    assert_eq!(status.state, FollowerState::Following);
    assert_eq!(status.lag(engine.last_seq()), 0);
    revoker.stop().await;
    engine.shutdown().await;
}
