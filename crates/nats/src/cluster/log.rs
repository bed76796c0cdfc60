//! The partition log: a few JetStream streams, one subject per partition, one message per batch. Every append
//! names the stream sequence it expects last on its subject, so the stream refuses a writer that was deposed:
//! the fence holds whatever clocks and leases say.
//!
//! Partition `p` lives in stream `COHOST_LOG_<p mod streams>`, on subject `cohost.log.<p mod streams>.<p>`.
//! More than one stream because a stream writes its messages one after another, each synced, on its leader:
//! streams sync side by side, and their leaders spread over the servers.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The log streams of a new cluster (fixed when it is created, like its partitions). One, because on one
/// machine running three servers more streams cost more than they give (measured: R3 at 1,024 clients 26-29k
/// acked commands/s with one stream, 16-24k with four); servers on their own disks and cores gain from more.
pub const LOG_STREAMS_DEFAULT: u32 = 1;
/// The most log streams a cluster may have.
pub const LOG_STREAMS_MAX: u32 = 64;
const STREAM_PREFIX: &str = "COHOST_LOG_";
const SUBJECT_PREFIX: &str = "cohost.log.";
/// What a message is: a batch of events or an ownership marker.
const KIND_HEADER: &str = "Cohost-Kind";
const KIND_BATCH: &str = "batch";
const KIND_MARKER: &str = "marker";
const MSG_ID: &str = "Nats-Msg-Id";
/// Reads of a partition's log started again after a failure on the way, before giving up.
const READ_ATTEMPTS: u32 = 4;
/// Appends tried again after a lost ack that left the outcome open, before giving up as unresolved: with the
/// default ack timeout, enough to ride out a stream leader's election (nats-server: 4 to 9 s).
const APPEND_ATTEMPTS: u32 = 6;

/// The stream of `partition` in a cluster with `streams` log streams: `COHOST_LOG_<partition mod streams>`.
pub fn log_stream(partition: u32, streams: u32) -> String {
    format!("{STREAM_PREFIX}{}", partition % streams)
}

/// `cohost.log.<partition mod streams>.<partition>`.
pub fn log_subject(partition: u32, streams: u32) -> String {
    format!("{SUBJECT_PREFIX}{}.{partition}", partition % streams)
}

/// The `Nats-Msg-Id` of a batch: the same when its owner tries it again (the stream drops the repeat), different
/// for another owner writing the same seqs (so a new owner's batch is never taken for an old owner's).
pub fn msg_id(partition: u32, epoch: u64, first_seq: u64) -> String {
    format!("p{partition}-e{epoch}-s{first_seq}")
}

/// How the stream is made. The replica count is fixed when the stream is first created.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `COHOST_LOG_REPLICAS`: 1, or 3 on a 3-server JetStream cluster.
    pub replicas: usize,
    /// The streams the partitions are spread over; fixed when the cluster is created.
    pub streams: u32,
    /// The largest message, so the largest batch: bounded by the server's `max_payload` (1 MiB by default).
    pub max_message_bytes: i32,
    /// How long the stream remembers a Msg-Id: the longest a lost append can be tried again and dropped as a repeat.
    pub duplicate_window: Duration,
    /// How long an append waits for its PubAck before it is taken as lost and resolved.
    pub ack_timeout: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            streams: LOG_STREAMS_DEFAULT,
            max_message_bytes: 1 << 20,
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(2),
        }
    }
}

/// An owner's claim on a partition, appended before it serves: it moves the subject's tail past anything an
/// older owner knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The node that claimed the partition.
    pub node: String,
    /// Its lease epoch.
    pub epoch: u64,
}

/// The last message on a partition's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// Its stream sequence: what the next append expects.
    pub seq: u64,
    /// Its `Nats-Msg-Id`: which owner wrote it, so a writer after a lost ack knows its own.
    pub msg_id: Option<String>,
}

/// What a message of the partition log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A batch record, as the writer encoded it.
    Batch(Bytes),
    /// An ownership marker: a node claimed the partition here.
    Marker(Marker),
}

/// One message of a partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream sequence.
    pub seq: u64,
    /// Its `Nats-Msg-Id`.
    pub msg_id: Option<String>,
    /// A batch or a marker.
    pub kind: EntryKind,
}

/// Why the log could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// JetStream refused or did not answer (a stream missing, a leader being elected), or the stream count is
    /// out of range; what went wrong.
    #[error("the log: {0}")]
    Stream(String),
    /// A message on a partition's subject is not one this build wrote: not a batch or a marker.
    #[error(
        "partition {partition}: message at stream seq {seq} is not a cohost log message: {reason}"
    )]
    Corrupt {
        /// The partition.
        partition: u32,
        /// The message's stream sequence.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why an append was not acknowledged. In every case nothing of the batch may be acknowledged to its callers.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended on the subject: this one is deposed. Nothing of the batch may be acknowledged.
    #[error(
        "partition {partition}: the log moved from stream seq {expected} to {tail} under another writer; this \
         writer is deposed"
    )]
    Fenced {
        /// The partition.
        partition: u32,
        /// The stream sequence this writer expected last.
        expected: u64,
        /// The subject's last stream sequence now.
        tail: u64,
    },
    /// Whether the append committed could not be found out (NATS unreachable). Nothing may be acknowledged,
    /// and the writer must learn the tail again before it appends.
    #[error("partition {partition}: append {msg_id} unresolved: {cause}")]
    Unresolved {
        /// The partition.
        partition: u32,
        /// The append's `Nats-Msg-Id`, to look for in the log.
        msg_id: String,
        /// The last failure, for people.
        cause: String,
    },
    /// The stream refused the message itself (too large, no space): nothing was committed.
    #[error("partition {partition}: append {msg_id} refused: {cause}")]
    Refused {
        /// The partition.
        partition: u32,
        /// The append's `Nats-Msg-Id`.
        msg_id: String,
        /// What the stream said.
        cause: String,
    },
}

/// One attempt at an append: settled, or still open for this reason.
enum Attempt {
    Done(Result<u64, AppendError>),
    Open(String),
}

/// What reading the log after an ambiguous append showed.
enum Outcome {
    Committed(u64),
    NotCommitted,
    Moved(u64),
}

/// The partition log of one cluster, as one node sees it.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    js: jetstream::Context,
    /// Stream `k` holds the partitions `p` with `p mod streams == k`.
    streams: Vec<stream::Stream>,
    config: LogConfig,
}

impl PartitionLog {
    /// The log's streams as they are, creating nothing (for tools that only read).
    pub async fn existing(js: jetstream::Context, config: LogConfig) -> Result<Self, LogError> {
        let mut streams = Vec::new();
        for k in 0..config.streams {
            let stream = js
                .get_stream(log_stream(k, config.streams))
                .await
                .map_err(|e| LogError::Stream(e.to_string()))?;
            streams.push(stream);
        }
        Ok(Self {
            js,
            streams,
            config,
        })
    }

    /// Opens the streams, creating them on first use (file storage, deletes and purges denied, direct gets
    /// allowed). A stream that exists keeps its replicas.
    ///
    /// # Errors
    ///
    /// [`LogError::Stream`] when `config.streams` is outside 1 to [`LOG_STREAMS_MAX`], or JetStream refuses.
    pub async fn open(js: jetstream::Context, config: LogConfig) -> Result<Self, LogError> {
        if !(1..=LOG_STREAMS_MAX).contains(&config.streams) {
            return Err(LogError::Stream(format!(
                "{} log streams; from 1 to {LOG_STREAMS_MAX}",
                config.streams
            )));
        }
        let mut streams = Vec::new();
        for k in 0..config.streams {
            let wanted = stream::Config {
                name: log_stream(k, config.streams),
                description: Some("cohost: partition logs, one subject per partition".to_owned()),
                subjects: vec![format!("{SUBJECT_PREFIX}{k}.*")],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_message_size: config.max_message_bytes,
                duplicate_window: config.duplicate_window,
                deny_delete: true,
                deny_purge: true,
                allow_direct: true,
                ..Default::default()
            };
            let stream = js
                .get_or_create_stream(wanted)
                .await
                .map_err(|e| LogError::Stream(e.to_string()))?;
            streams.push(stream);
        }
        Ok(Self {
            js,
            streams,
            config,
        })
    }

    fn stream(&self, partition: u32) -> &stream::Stream {
        &self.streams[(partition % self.config.streams) as usize]
    }

    fn subject(&self, partition: u32) -> String {
        log_subject(partition, self.config.streams)
    }

    /// The last message on `partition`'s subject, read from the stream's leader; `None` when it has none.
    async fn last_message(
        &self,
        partition: u32,
    ) -> Result<Option<jetstream::message::StreamMessage>, LogError> {
        let found = self
            .stream(partition)
            .raw_message_builder()
            .last_by_subject(self.subject(partition))
            .send()
            .await;
        match found {
            Ok(message) => Ok(Some(message)),
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(LogError::Stream(error.to_string())),
        }
    }

    /// Where `partition`'s subject ends: its last message's stream seq and Msg-Id; `None` when it has none.
    pub async fn tail(&self, partition: u32) -> Result<Option<Tail>, LogError> {
        Ok(self.last_message(partition).await?.map(|message| Tail {
            seq: message.sequence,
            msg_id: header(&message.headers, MSG_ID),
        }))
    }

    /// The last entry on `partition`'s subject; `None` when it has none.
    pub async fn last(&self, partition: u32) -> Result<Option<Entry>, LogError> {
        let Some(message) = self.last_message(partition).await? else {
            return Ok(None);
        };
        let (seq, headers) = (message.sequence, Some(&message.headers));
        entry(partition, seq, headers, &message.payload).map(Some)
    }

    /// Appends a batch record on `partition`, expecting `expected` (a stream seq, 0 for none) as the subject's
    /// last message. Returns the batch's stream seq once a quorum holds it. A lost ack is resolved here, by
    /// reading the log, before this returns: `Ok` means committed, `Fenced` means another writer appended.
    /// Resolving may take up to 6 attempts, each waiting an ack timeout, enough to ride out a leader's
    /// election.
    ///
    /// # Errors
    ///
    /// [`AppendError::Fenced`] (deposed), [`AppendError::Refused`] (too large, no space: not committed), or
    /// [`AppendError::Unresolved`] (not known whether it committed: learn the tail again before appending).
    pub async fn append_batch(
        &self,
        partition: u32,
        expected: u64,
        msg_id: &str,
        record: Bytes,
    ) -> Result<u64, AppendError> {
        self.append(partition, expected, msg_id, KIND_BATCH, record)
            .await
    }

    /// Appends `marker` right after `expected`, the tail the new owner replayed to. Served only after this
    /// returns `Ok`: an older owner's next append expects less and is refused.
    pub async fn append_marker(
        &self,
        partition: u32,
        expected: u64,
        marker: &Marker,
    ) -> Result<u64, AppendError> {
        let id = format!("p{partition}-e{}-marker", marker.epoch);
        let payload = serde_json::to_vec(marker).expect("a marker serializes");
        self.append(partition, expected, &id, KIND_MARKER, payload.into())
            .await
    }

    async fn append(
        &self,
        partition: u32,
        expected: u64,
        msg_id: &str,
        kind: &str,
        payload: Bytes,
    ) -> Result<u64, AppendError> {
        let mut cause = String::new();
        let mut started = tokio::time::Instant::now();
        for attempt in 0..APPEND_ATTEMPTS {
            // Attempts start at least a backoff apart; one that timed out has waited already, so the next
            // starts at once and catches a newly elected leader without a further pause.
            if attempt > 0 {
                let spacing = Duration::from_millis(100 << attempt.min(4));
                tokio::time::sleep_until(started + spacing).await;
                started = tokio::time::Instant::now();
            }
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .header(KIND_HEADER, kind)
                .message_id(msg_id)
                .expected_last_subject_sequence(expected);
            match self.attempt(partition, expected, msg_id, message).await {
                Attempt::Done(result) => return result,
                Attempt::Open(why) => cause = why,
            }
        }
        Err(AppendError::Unresolved {
            partition,
            msg_id: msg_id.to_owned(),
            cause,
        })
    }

    /// One publish, and when its answer does not settle it (refused as out of date, or lost), the log's.
    async fn attempt(
        &self,
        partition: u32,
        expected: u64,
        msg_id: &str,
        message: jetstream::message::PublishMessage,
    ) -> Attempt {
        let timeout = self.config.ack_timeout;
        let sent =
            tokio::time::timeout(timeout, self.publish(self.subject(partition), message)).await;
        let cause = match sent {
            Ok(Ok(seq)) => return Attempt::Done(Ok(seq)),
            Ok(Err(error)) if refused(&error) => {
                return Attempt::Done(Err(AppendError::Refused {
                    partition,
                    msg_id: msg_id.to_owned(),
                    cause: error.to_string(),
                }));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no ack within {timeout:?}"),
        };
        let outcome =
            tokio::time::timeout(timeout, self.outcome(partition, expected, msg_id)).await;
        match outcome {
            Ok(Ok(Outcome::Committed(seq))) => Attempt::Done(Ok(seq)),
            Ok(Ok(Outcome::Moved(tail))) => Attempt::Done(Err(AppendError::Fenced {
                partition,
                expected,
                tail,
            })),
            Ok(Ok(Outcome::NotCommitted)) => Attempt::Open(cause),
            Ok(Err(error)) => Attempt::Open(format!("{cause}; reading the log: {error}")),
            Err(_) => Attempt::Open(format!(
                "{cause}; reading the log: no answer within {timeout:?}"
            )),
        }
    }
    async fn publish(
        &self,
        subject: String,
        message: jetstream::message::PublishMessage,
    ) -> Result<u64, jetstream::context::PublishError> {
        let ack = self.js.send_publish(subject, message).await?;
        ack.await.map(|ack| ack.sequence)
    }

    /// Whether `msg_id` landed right after `expected`: the first message on the subject after `expected` is it
    /// (committed, even if others followed), there is none (not committed), or another writer's is (moved).
    async fn outcome(
        &self,
        partition: u32,
        expected: u64,
        msg_id: &str,
    ) -> Result<Outcome, LogError> {
        let next = self
            .stream(partition)
            .raw_message_builder()
            .sequence(expected + 1)
            .next_by_subject(self.subject(partition))
            .send()
            .await;
        match next {
            Ok(message) => {
                let id = header(&message.headers, MSG_ID);
                if id.as_deref() == Some(msg_id) {
                    Ok(Outcome::Committed(message.sequence))
                } else {
                    let tail = self
                        .tail(partition)
                        .await?
                        .map_or(message.sequence, |t| t.seq);
                    Ok(Outcome::Moved(tail))
                }
            }
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                Ok(Outcome::NotCommitted)
            }
            Err(error) => Err(LogError::Stream(error.to_string())),
        }
    }

    /// Every message on `partition`'s subject after stream seq `after`, up to the tail as of this call, in order.
    /// A read that fails on the way (a stream electing its leader times out) is started again a few times.
    /// Holds every entry read in memory: a takeover reads from the partition's snapshot on.
    ///
    /// # Errors
    ///
    /// [`LogError::Stream`] once the retries are spent, [`LogError::Corrupt`] for a message this build did not
    /// write.
    pub async fn read_after(&self, partition: u32, after: u64) -> Result<Vec<Entry>, LogError> {
        let mut attempt = 0;
        loop {
            match self.read_once(partition, after).await {
                Err(LogError::Stream(cause)) if attempt + 1 < READ_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(partition, attempt, %cause, "reading the partition log again");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                done => return done,
            }
        }
    }

    async fn read_once(&self, partition: u32, after: u64) -> Result<Vec<Entry>, LogError> {
        let Some(tail) = self.tail(partition).await? else {
            return Ok(Vec::new());
        };
        if tail.seq <= after {
            return Ok(Vec::new());
        }
        let stream_error = |e: &dyn std::fmt::Display| LogError::Stream(e.to_string());
        let consumer = self
            .stream(partition)
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: self.subject(partition),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| stream_error(&e))?;
        let mut entries = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| stream_error(&e))?;
            let seq = message
                .info()
                .map_err(|e| stream_error(&e))?
                .stream_sequence;
            entries.push(entry(
                partition,
                seq,
                message.headers.as_ref(),
                &message.payload,
            )?);
            if seq >= tail.seq {
                break;
            }
        }
        Ok(entries)
    }
}

/// Whether the stream answered the publish with an error of its own other than an out-of-date expected
/// sequence: then it decided not to store the message (too large, no space).
fn refused(error: &jetstream::context::PublishError) -> bool {
    match error.kind() {
        // No responders: while the stream elects a leader, nobody takes the message. Tried again.
        PublishErrorKind::WrongLastSequence | PublishErrorKind::StreamNotFound => false,
        PublishErrorKind::MaxPayloadExceeded => true,
        _ => std::error::Error::source(error)
            .is_some_and(|source| source.downcast_ref::<jetstream::Error>().is_some()),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.as_str().to_owned())
}

fn entry(
    partition: u32,
    seq: u64,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
) -> Result<Entry, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        partition,
        seq,
        reason,
    };
    let headers = headers.ok_or_else(|| corrupt("no headers".into()))?;
    let msg_id = header(headers, MSG_ID);
    let kind = match header(headers, KIND_HEADER).as_deref() {
        Some(KIND_BATCH) => EntryKind::Batch(payload.clone()),
        Some(KIND_MARKER) => EntryKind::Marker(
            serde_json::from_slice(payload).map_err(|e| corrupt(format!("marker: {e}")))?,
        ),
        other => return Err(corrupt(format!("{KIND_HEADER} is {other:?}"))),
    };
    Ok(Entry { seq, msg_id, kind })
}
