//! A JetStream stream ahead of the log (the data directory was wiped, or restored from an older backup) is
//! refused at start with both positions named, and the stream is left as it was. A stream ahead of the relay's
//! cursor but not of the log (a crash between the PubAcks and the cursor write) is adopted, as before.

mod support;

use cohost_nats::relay::{Mode, Relay, RelayConfig, RelayError};
use cohost_nats::test_server::TestServer;
use support::{
    assert_exactly_once, create, eventually, open_engine, read_all, run, seed_flow, start_relay,
    stream_contents,
};

/// A JetStream server whose stream `COHOST` holds the seed flow (10 events), published by the engine in `dir`,
/// which is shut down.
async fn stream_of_the_seed_flow(dir: &std::path::Path) -> (TestServer, async_nats::Client) {
    let server = TestServer::start(true);
    let client = async_nats::connect(server.url()).await.unwrap();
    let engine = open_engine(dir);
    let relay = start_relay(&engine, &client, RelayConfig::new(Mode::JetStream)).await;
    seed_flow(&engine, "stage-1").await;
    eventually("the seed flow in the stream", || relay.lag() == 0).await;
    eventually("the cursor at 10", || {
        engine.cursor("jetstream").unwrap() == 10
    })
    .await;
    relay.stop().await;
    engine.shutdown().await;
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ahead_of_the_log_is_refused_naming_both_seqs() {
    let written = tempfile::tempdir().unwrap();
    let (server, client) = stream_of_the_seed_flow(written.path()).await;
    let before = stream_contents(&server.url()).await;
    assert_eq!(before.len(), 16, "10 room messages and 6 user copies");

    // A fresh, empty data directory against the same stream.
    let wiped = tempfile::tempdir().unwrap();
    let engine = open_engine(wiped.path());
    let started = Relay::start(engine.clone(), client, RelayConfig::new(Mode::JetStream)).await;
    let error = started.expect_err("a stream ahead of the log is refused");
    assert!(
        matches!(
            error,
            RelayError::StreamAhead {
                stream_seq: 10,
                log_seq: 0
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(
            "the JetStream stream COHOST holds events up to seq 10 but the log ends at seq 0: \
             the stream is ahead of the log"
        ),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert_eq!(
        stream_contents(&server.url()).await,
        before,
        "the stream is left as it was"
    );
    assert_eq!(engine.cursor("jetstream").unwrap(), 0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ahead_of_the_cursor_but_not_of_the_log_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = stream_of_the_seed_flow(dir.path()).await;
    let engine = open_engine(dir.path());
    // The cursor write after the PubAcks was lost in a crash.
    engine.set_cursor("jetstream", 3).unwrap();

    let relay = start_relay(&engine, &client, RelayConfig::new(Mode::JetStream)).await;
    eventually("the stream's position adopted as the cursor", || {
        engine.cursor("jetstream").unwrap() == 10
    })
    .await;
    assert_eq!(relay.status().handled_seq, 10);
    // A barrier: one more event. The relay publishes in seq order, so once it is confirmed, anything the relay
    // would have republished from its stale cursor would have gone out before it.
    run(&engine, [("alice", create("stage-2", None))]).await;
    eventually("the barrier event confirmed", || relay.lag() == 0).await;
    assert_eq!(relay.published(), 1, "only the new event was published");
    let log = read_all(&engine).await;
    assert_exactly_once(&stream_contents(&server.url()).await, &log);
    relay.stop().await;
    engine.shutdown().await;
}
