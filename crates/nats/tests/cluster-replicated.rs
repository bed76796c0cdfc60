//! On a 3-server JetStream cluster (R3, every write synced before its ack): the cluster's configuration is
//! fixed by the first node and refused to a node configured otherwise, and the partition log loses no
//! acknowledged batch when the stream's leader is killed mid-appends.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cohost_nats::cluster::{
    AppendError, EntryKind, Fixed, JoinError, LogConfig, PartitionLog, join, log_stream, msg_id,
};
use cohost_nats::test_server::TestCluster;

const REPLICAS: usize = 3;
/// The cluster's log streams: more than one, so the partition below is not in stream 0.
const STREAMS: u32 = 2;
/// How long appends may fail while the stream elects a new leader.
const ELECTION_LIMIT: Duration = Duration::from_secs(20);

async fn jetstream(cluster: &TestCluster) -> async_nats::jetstream::Context {
    let client = async_nats::connect(cluster.addrs())
        .await
        .expect("connects");
    cluster.wait_ready(&client).await;
    async_nats::jetstream::new(client)
}

#[tokio::test]
async fn one_cluster_one_configuration_and_no_acknowledged_batch_lost_with_the_leader() {
    let mut cluster = TestCluster::start(3);
    let js = jetstream(&cluster).await;

    // The first node fixes the configuration; a node configured otherwise is refused, naming both values.
    assert_eq!(
        join(&js, &Fixed::new(64, STREAMS), REPLICAS).await.unwrap(),
        Fixed::new(64, STREAMS)
    );
    assert_eq!(
        join(&js, &Fixed::new(64, STREAMS), REPLICAS).await.unwrap(),
        Fixed::new(64, STREAMS)
    );
    let refused = join(&js, &Fixed::new(16, STREAMS), REPLICAS)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            JoinError::Partitions {
                cluster: 64,
                node: 16
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("64") && refused.to_string().contains("16"));
    let refused = join(&js, &Fixed::new(64, 4), REPLICAS).await.unwrap_err();
    assert!(
        matches!(
            refused,
            JoinError::LogStreams {
                cluster: STREAMS,
                node: 4
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("COHOST_LOG_STREAMS"));
    let other_format = Fixed {
        partitions: 64,
        log_streams: STREAMS,
        format: "cohost-log/99".into(),
    };
    let refused = join(&js, &other_format, REPLICAS).await.unwrap_err();
    assert!(matches!(refused, JoinError::Format { .. }), "{refused}");

    let config = LogConfig {
        replicas: REPLICAS,
        streams: STREAMS,
        ack_timeout: Duration::from_secs(2),
        ..LogConfig::default()
    };
    let log = PartitionLog::open(js.clone(), config)
        .await
        .expect("the R3 log opens");
    let mut acknowledged = Vec::new();
    let mut tail = 0;
    let append = async |log: &PartitionLog, n: u64, tail: &mut u64, acknowledged: &mut Vec<u64>| {
        let started = Instant::now();
        loop {
            let record = Bytes::from(format!("batch {n}"));
            match log.append_batch(9, *tail, &msg_id(9, 1, n), record).await {
                Ok(seq) => {
                    *tail = seq;
                    acknowledged.push(n);
                    return;
                }
                Err(AppendError::Unresolved { .. }) if started.elapsed() < ELECTION_LIMIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("batch {n}: {error}"),
            }
        }
    };
    for n in 1..=20 {
        append(&log, n, &mut tail, &mut acknowledged).await;
    }
    let mut stream = js
        .get_stream(log_stream(9, STREAMS))
        .await
        .expect("the stream");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, REPLICAS);
    let client = async_nats::connect(cluster.addrs())
        .await
        .expect("connects");
    let index = cluster.leader_of(&client, &log_stream(9, STREAMS)).await;
    cluster.servers[index].kill();
    let killed = Instant::now();
    append(&log, 21, &mut tail, &mut acknowledged).await;
    println!(
        "the stream's leader killed: the next batch acknowledged after {:?}",
        killed.elapsed()
    );
    for n in 22..=40 {
        append(&log, n, &mut tail, &mut acknowledged).await;
    }

    let entries = log.read_after(9, 0).await.expect("the log reads back");
    let read: Vec<u64> = entries
        .iter()
        .map(|entry| match &entry.kind {
            EntryKind::Batch(bytes) => String::from_utf8_lossy(bytes)
                .trim_start_matches("batch ")
                .parse()
                .unwrap(),
            EntryKind::Marker(_) => panic!("no marker was appended"),
        })
        .collect();
    assert_eq!(
        read, acknowledged,
        "every acknowledged batch, once, in order"
    );
    assert_eq!(read, (1..=40).collect::<Vec<_>>());
}
