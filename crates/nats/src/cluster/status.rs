//! What `cohostd cluster status` prints: each partition's owner, its position in the log, and where its relay
//! is, read from the buckets and the log, not from any node. It creates nothing: a bucket or stream that is
//! missing reads as empty, or as an error naming it.

use async_nats::jetstream;

use super::cursor::CursorBook;
use super::fixed::{self, Fixed};
use super::lease::{Holder, LEASE_BUCKET};
use super::log::{EntryKind, LogConfig, PartitionLog};

/// One partition as the cluster's buckets and log show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The partition's number.
    pub partition: u32,
    /// Who holds its lease now.
    pub owner: Option<Holder>,
    /// The stream sequence of the last message on its subject (0 for none).
    pub log_seq: u64,
    /// What that last message is: the last seq of a batch, or the ownership marker of a node and epoch.
    pub last: Last,
    /// Each follower's cursor as its owner last saved it.
    pub cursors: Vec<(String, u64)>,
}

/// The last message on a partition's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    /// None: the partition was never written.
    Nothing,
    /// A batch whose last event has this seq.
    Batch {
        /// The seq of the batch's last event.
        last_seq: u64,
    },
    /// An ownership marker: the node that claimed the partition and its lease epoch, with no batch since.
    Marker(Holder),
}

/// The cluster's fixed configuration and every partition's status. Reads each partition's lease, log tail and
/// cursors in turn: about three round trips per partition.
///
/// # Errors
///
/// A message naming what is missing or unreadable: no cluster yet, a log stream or the lease bucket missing,
/// a key that does not decode, NATS not answering.
pub async fn status(client: &async_nats::Client) -> Result<(Fixed, Vec<PartitionStatus>), String> {
    let js = &jetstream::new(client.clone());
    let fixed = fixed::read(js)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no cluster here: no node has joined yet")?;
    let log_config = LogConfig {
        streams: fixed.log_streams,
        ..LogConfig::default()
    };
    let log = PartitionLog::existing(js.clone(), log_config)
        .await
        .map_err(|e| e.to_string())?;
    let leases = js
        .get_key_value(LEASE_BUCKET)
        .await
        .map_err(|e| format!("the bucket {LEASE_BUCKET}: {e}"))?;
    let book = CursorBook::existing(js).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for partition in 0..fixed.partitions {
        let owner = match leases
            .get(format!("p{partition}"))
            .await
            .map_err(|e| e.to_string())?
        {
            Some(value) => {
                Some(serde_json::from_slice::<Holder>(&value).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let entry = log.last(partition).await.map_err(|e| e.to_string())?;
        let (log_seq, last) = match entry {
            None => (0, Last::Nothing),
            Some(entry) => {
                let last = match entry.kind {
                    EntryKind::Batch(record) => Last::Batch {
                        last_seq: cohost_store::batch_last_seq(&record)
                            .map_err(|e| e.to_string())?,
                    },
                    EntryKind::Marker(marker) => Last::Marker(Holder {
                        node: marker.node,
                        epoch: marker.epoch,
                    }),
                };
                (entry.seq, last)
            }
        };
        let cursors = match &book {
            Some(book) => book.load(partition).await.map_err(|e| e.to_string())?,
            None => Default::default(),
        };
        out.push(PartitionStatus {
            partition,
            owner,
            log_seq,
            last,
            cursors: cursors.into_iter().collect(),
        });
    }
    Ok((fixed, out))
}
