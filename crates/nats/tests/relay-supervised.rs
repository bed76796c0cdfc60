//! The relay survives a log it cannot read: a damaged record makes it retry, visibly (state `retrying`, the error,
//! the retries), from the last seq NATS confirmed; once the record is whole again it catches up without a
//! restart, and JetStream holds every event exactly once, in order, with nothing published twice.

mod support;

use std::sync::Arc;

use cohost_engine::{Config, Engine, FollowerState, ManualClock};
use cohost_nats::relay::{Mode, RelayConfig};
use cohost_nats::test_server::TestServer;
use cohost_store::MemoryBackend;
use support::{
    assert_exactly_once, create, eventually, read_all, run, seed_flow, start_relay, stream_contents,
};

/// Events in the log before the relay starts: more than one catch-up read, so the relay confirms a part of the
/// log before it reaches the damage.
const EVENTS: u64 = 600;
/// The record the test damages.
const DAMAGED_SEQ: u64 = 550;

/// The key of the batch record that starts at `seq` (`L` + big-endian seq, as the store writes it).
fn log_key(seq: u64) -> Vec<u8> {
    let mut key = b"L".to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// An engine whose log lives on `disk`.
fn open_on(disk: &MemoryBackend) -> Engine {
    let config = Config::new("unused")
        .with_backend(Arc::new(disk.clone()))
        .with_clock(Arc::new(ManualClock::new(1_700_000_000_000)));
    Engine::open(config).unwrap()
}

/// The seed flow, then a room per host up to `EVENTS` events, one command (one event, one batch) at a time.
async fn fill(engine: &Engine) {
    seed_flow(engine, "stage-1").await;
    for i in engine.last_seq()..EVENTS {
        let (host, room) = (format!("host-{i}"), format!("room-{i}"));
        run(engine, [(host.as_str(), create(&room, None))]).await;
    }
    assert_eq!(engine.last_seq(), EVENTS);
}

/// Damages the record at `seq` so that it fails its checksum; returns its bytes, whole.
fn damage(disk: &MemoryBackend, seq: u64) -> Vec<u8> {
    let mut whole = Vec::new();
    let damaged = disk.damage(&log_key(seq), |bytes| {
        whole = bytes.clone();
        *bytes.last_mut().expect("a record is never empty") ^= 0xff;
    });
    assert!(damaged, "seq {seq} starts a batch of its own");
    whole
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_retried_until_whole_then_every_event_is_published_once() {
    let server = TestServer::start(true);
    let client = async_nats::connect(server.url()).await.unwrap();
    let disk = MemoryBackend::new();
    let engine = open_on(&disk);
    fill(&engine).await;
    let whole = damage(&disk, DAMAGED_SEQ);
    assert!(
        engine.read_events(DAMAGED_SEQ, 1).is_err(),
        "the damage shows"
    );

    let relay = start_relay(&engine, &client, RelayConfig::new(Mode::JetStream)).await;
    eventually("the relay retrying, twice", || {
        let status = relay.status();
        status.state == FollowerState::Retrying && status.retries >= 2
    })
    .await;
    let status = relay.status();
    assert_eq!(status.name, "relay");
    let error = status.last_error.expect("the failure is recorded");
    assert!(
        error.message.starts_with("reading the log: "),
        "{}",
        error.message
    );
    assert!(status.handled_seq < DAMAGED_SEQ, "nothing past the damage");
    assert_eq!(relay.lag(), EVENTS - status.handled_seq);

    // The record is whole again: the relay catches up without being restarted.
    assert!(disk.damage(&log_key(DAMAGED_SEQ), |bytes| *bytes = whole));
    eventually("the relay caught up", || relay.lag() == 0).await;
    eventually("the relay following", || {
        relay.status().state == FollowerState::Following
    })
    .await;
    let log = read_all(&engine).await;
    let contents = stream_contents(&server.url()).await;
    assert_exactly_once(&contents, &log);
    assert_eq!(
        relay.published(),
        contents.len() as u64,
        "nothing was published twice: each retry resumed after the last confirmed seq"
    );
    eventually("the cursor at the end of the log", || {
        engine.cursor("jetstream").unwrap() == EVENTS
    })
    .await;

    // It follows the log on.
    run(&engine, [("late-host", create("late-room", None))]).await;
    eventually("the new event confirmed", || relay.lag() == 0).await;
    assert_eq!(relay.published(), contents.len() as u64 + 1);
    let status = relay.status();
    assert_eq!(status.state, FollowerState::Following);
    relay.stop().await;
    engine.shutdown().await;
}
