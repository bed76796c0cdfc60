//! The partition log against a real JetStream server: appends chain by expected sequence, a deposed writer is
//! refused and acknowledges nothing, a retried append is written once, and a lost ack resolves to what the log
//! holds.

use std::time::Duration;

use bytes::Bytes;
use cohost_nats::cluster::{
    AppendError, EntryKind, LogConfig, Marker, PartitionLog, Tail, log_stream, log_subject, msg_id,
};
use cohost_nats::test_server::TestServer;

async fn open(server: &TestServer, config: LogConfig) -> PartitionLog {
    let client = async_nats::connect(server.url()).await.expect("connects");
    PartitionLog::open(async_nats::jetstream::new(client), config)
        .await
        .expect("the log stream opens")
}

fn batch(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn batches(entries: &[cohost_nats::cluster::Entry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| match &entry.kind {
            EntryKind::Batch(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            EntryKind::Marker(marker) => format!("marker {}@{}", marker.node, marker.epoch),
        })
        .collect()
}

#[tokio::test]
async fn appends_chain_by_expected_sequence_and_read_back_in_order() {
    let server = TestServer::start(true);
    let log = open(&server, LogConfig::default()).await;
    assert_eq!(log.tail(3).await.unwrap(), None);
    let first = log
        .append_batch(3, 0, &msg_id(3, 1, 1), batch("one"))
        .await
        .unwrap();
    // Another partition's appends (in the same stream) do not move this one's tail.
    let neighbour = 3 + LogConfig::default().streams;
    let other = log
        .append_batch(neighbour, 0, &msg_id(neighbour, 1, 1), batch("elsewhere"))
        .await
        .unwrap();
    let second = log
        .append_batch(3, first, &msg_id(3, 1, 2), batch("two"))
        .await
        .unwrap();
    assert!(first < other && other < second);
    assert_eq!(
        log.tail(3).await.unwrap(),
        Some(Tail {
            seq: second,
            msg_id: Some(msg_id(3, 1, 2))
        })
    );
    let entries = log.read_after(3, 0).await.unwrap();
    assert_eq!(batches(&entries), ["one", "two"]);
    assert_eq!(entries[1].seq, second);
    assert_eq!(batches(&log.read_after(3, first).await.unwrap()), ["two"]);
    assert!(log.read_after(3, second).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_writer_deposed_by_a_marker_is_refused_and_the_log_keeps_one_writer_per_position() {
    let server = TestServer::start(true);
    let old = open(&server, LogConfig::default()).await;
    let new = open(&server, LogConfig::default()).await;
    let known = old
        .append_batch(0, 0, &msg_id(0, 1, 1), batch("old 1"))
        .await
        .unwrap();

    // The new owner replays to the tail, then claims the partition right after it.
    let tail = new.tail(0).await.unwrap().expect("a tail").seq;
    let marker = Marker {
        node: "node-b".into(),
        epoch: 2,
    };
    let claimed = new.append_marker(0, tail, &marker).await.unwrap();

    // The old owner wakes up and appends on what it knows: refused, whatever it believes.
    let refused = old
        .append_batch(0, known, &msg_id(0, 1, 2), batch("old 2"))
        .await;
    match refused {
        Err(AppendError::Fenced {
            partition: 0,
            expected,
            tail,
        }) => {
            assert_eq!((expected, tail), (known, claimed));
        }
        other => panic!("the deposed writer was not fenced: {other:?}"),
    }
    new.append_batch(0, claimed, &msg_id(0, 2, 2), batch("new 2"))
        .await
        .unwrap();
    let entries = new.read_after(0, 0).await.unwrap();
    assert_eq!(batches(&entries), ["old 1", "marker node-b@2", "new 2"]);
}

#[tokio::test]
async fn an_append_tried_again_is_written_once() {
    let server = TestServer::start(true);
    let log = open(&server, LogConfig::default()).await;
    let id = msg_id(7, 1, 1);
    let first = log.append_batch(7, 0, &id, batch("once")).await.unwrap();
    // The same append again, as after a lost ack: the stream drops the repeat and answers the first seq.
    let again = log.append_batch(7, 0, &id, batch("once")).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(batches(&log.read_after(7, 0).await.unwrap()), ["once"]);
}

#[tokio::test]
async fn a_lost_ack_resolves_from_the_log_even_past_the_duplicate_window_and_after_a_new_owner() {
    let server = TestServer::start(true);
    let config = LogConfig {
        duplicate_window: Duration::from_millis(200),
        ..LogConfig::default()
    };
    let log = open(&server, config.clone()).await;
    let id = msg_id(1, 1, 1);
    let committed = log.append_batch(1, 0, &id, batch("landed")).await.unwrap();
    // A new owner takes the partition after the batch landed, before its writer learnt so.
    let other = open(&server, config).await;
    other
        .append_marker(
            1,
            committed,
            &Marker {
                node: "node-b".into(),
                epoch: 2,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The stream no longer remembers the Msg-Id; the retry is refused as out of date, and the log shows the
    // batch landed: the writer never takes its own committed batch for being deposed.
    let again = log.append_batch(1, 0, &id, batch("landed")).await.unwrap();
    assert_eq!(again, committed);
    assert_eq!(
        batches(&log.read_after(1, 0).await.unwrap()),
        ["landed", "marker node-b@2"]
    );
}

#[tokio::test]
async fn an_append_with_nats_gone_is_unresolved_not_acknowledged() {
    let mut server = TestServer::start(true);
    let config = LogConfig {
        ack_timeout: Duration::from_millis(300),
        ..LogConfig::default()
    };
    let log = open(&server, config).await;
    server.kill();
    let result = log
        .append_batch(2, 0, &msg_id(2, 1, 1), batch("lost"))
        .await;
    assert!(
        matches!(result, Err(AppendError::Unresolved { partition: 2, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_batch_over_the_message_limit_is_refused_and_nothing_is_written() {
    let server = TestServer::start(true);
    let config = LogConfig {
        max_message_bytes: 1_024,
        ..LogConfig::default()
    };
    let log = open(&server, config).await;
    let big = Bytes::from(vec![b'x'; 4_096]);
    let result = log.append_batch(5, 0, &msg_id(5, 1, 1), big).await;
    assert!(
        matches!(result, Err(AppendError::Refused { .. })),
        "{result:?}"
    );
    assert_eq!(log.tail(5).await.unwrap(), None);
    assert_eq!(log_subject(5, 8), "cohost.log.5.5");
    assert_eq!(log_subject(13, 8), "cohost.log.5.13");
    assert_eq!(log_stream(13, 8), "COHOST_LOG_5");
}
