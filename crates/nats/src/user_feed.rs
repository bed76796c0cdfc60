//! A candidate's invitation events across every partition of a cluster, in one order: the stream `COHOST`'s,
//! which captures each partition's relay's `cohost.v1.user.<user_id>` messages. Cluster mode's `/v1/me` live
//! collection follows it, its positions being stream sequences (the partitions' seqs make no one order).

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use cohost_proto::subject::{self, header};
use cohost_proto::{Envelope, UserId};
use futures::{Stream, StreamExt};

/// How long reading the stream's state may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// One event of the feed: where the stream holds it, and where its partition's log does.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its sequence in the stream `COHOST`: the feed's position, which a resume starts after.
    pub stream_seq: u64,
    /// The partition whose log holds it (the `Cohost-Partition` header).
    pub partition: u32,
    /// The event's seq in its partition.
    pub seq: u64,
    /// The event.
    pub envelope: Envelope,
}

/// The stream `COHOST` could not be read: missing (JetStream off, or no relay created it), not answering, or
/// failing on the way. The message is for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the stream COHOST: {0}")]
pub struct FeedError(String);

fn failed(error: impl std::fmt::Display) -> FeedError {
    FeedError(error.to_string())
}

/// The first and the last sequence the stream holds: a feed started after the last misses nothing published
/// from then on; one started before the first would miss what the stream no longer holds. Waits up to 5 s.
///
/// # Errors
///
/// [`FeedError`] when the stream is missing or does not answer in time.
pub async fn bounds(client: &crate::Client) -> Result<(u64, u64), FeedError> {
    let js = jetstream::new(client.clone());
    let info = async {
        let mut stream = js.get_stream(subject::STREAM).await.map_err(failed)?;
        let info = stream.info().await.map_err(failed)?;
        Ok((info.state.first_sequence, info.state.last_sequence))
    };
    tokio::time::timeout(INFO_TIMEOUT, info)
        .await
        .map_err(|_| FeedError("no answer in time".into()))?
}

/// The invitation events of `users` (one candidate under each name it was published as: their id, and the
/// pseudonym an erasure gives them) after stream sequence `after`, then live, in stream order. An event that does not
/// decode, or lacks its partition and seq headers, is skipped; a failure of the stream ends the feed with it.
/// It reads an ephemeral ordered consumer, which the server removes once nobody reads it; messages wait in
/// async-nats's bounded buffers, not here.
///
/// # Errors
///
/// [`FeedError`] when the stream is missing or the consumer cannot be made.
pub async fn user_changes(
    client: &crate::Client,
    users: &[UserId],
    after: u64,
) -> Result<impl Stream<Item = Result<Change, FeedError>> + Send + 'static, FeedError> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(subject::STREAM).await.map_err(failed)?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subjects: users.iter().map(subject::user).collect(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(failed)?;
    let messages = consumer.messages().await.map_err(failed)?;
    Ok(messages.filter_map(|message| async move {
        let message = match message {
            Ok(message) => message,
            Err(error) => return Some(Err(failed(error))),
        };
        let stream_seq = message.info().ok()?.stream_sequence;
        let number = |name: &str| -> Option<u64> {
            message.headers.as_ref()?.get(name)?.as_str().parse().ok()
        };
        let (partition, seq) = (number(header::PARTITION)?, number(header::SEQ)?);
        let envelope = crate::subscriber::decode(&message)?;
        Some(Ok(Change {
            stream_seq,
            partition: u32::try_from(partition).ok()?,
            seq,
            envelope,
        }))
    }))
}
