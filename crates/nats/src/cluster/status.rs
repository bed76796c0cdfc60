//! What `cohostd cluster status` prints: each partition's owner, its position in the log, and where its relay
//! is, read from the buckets and the log, not from any node.

use async_nats::jetstream;

use super::cursor::CursorBook;
use super::fixed::{self, Fixed};
use super::lease::{Holder, LeaseConfig, Leases};
use super::log::{EntryKind, LogConfig, PartitionLog};

/// One partition as the cluster's buckets and log show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    Nothing,
    /// A batch whose last event has this seq.
    Batch {
        last_seq: u64,
    },
    Marker(Holder),
}

/// The cluster's fixed configuration and every partition's status.
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
    let log = PartitionLog::open(js.clone(), log_config)
        .await
        .map_err(|e| e.to_string())?;
    let leases = Leases::open(js, "status", 1, LeaseConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let book = CursorBook::open(js, 1).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for partition in 0..fixed.partitions {
        let owner = leases.holder(partition).await.map_err(|e| e.to_string())?;
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
        let cursors = book.load(partition).await.map_err(|e| e.to_string())?;
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
