//! Each partition's latest snapshot, kept in a JetStream object store so a node taking the partition starts
//! from it and replays only the log after it: a takeover costs the partition's recent history, not all of it.
//!
//! One object per partition (`p<n>`), replaced whole by its owner when its engine has taken a newer snapshot
//! and every follower's saved cursor has reached it (a taker's followers then need nothing from before it).
//! The object holds a [`cohost_store::Base`] and the stream sequence of the partition log it was taken at; the
//! object store checks its digest on the way back. A snapshot is never wrong, only old: it is a prefix of the
//! log, so one written late by a deposed owner just costs the taker a longer replay.

use async_nats::jetstream::{self, object_store};
use cohost_engine::Exported;
use cohost_proto::codec::{from_postcard, to_postcard};
use cohost_store::Base;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// The object store of partition snapshots.
pub const SNAPSHOT_BUCKET: &str = "COHOST_SNAPSHOTS";

/// What an object holds, versioned like the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stored {
    /// The layout before the stage controls: not read (its idempotency records are of the earlier layout); a
    /// taker that finds one replays the whole log, and the next save replaces it.
    V1(()),
    V2(PartitionSnapshot),
}

/// A partition's base, where in its log it was taken, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// The partition it is of.
    pub partition: u32,
    /// The owner that wrote it, and its lease epoch, for `cluster status` and logs.
    pub node: String,
    /// The lease epoch of that owner.
    pub epoch: u64,
    /// The stream sequence of the partition log's last message it covers: the log after it continues it.
    pub position: u64,
    /// The partition's state as of the base's seq: rooms, archives, remembered replies.
    pub base: Base,
}

impl PartitionSnapshot {
    /// The snapshot of `exported`, an engine's base with its log position, written by `node` holding the
    /// lease of `epoch`.
    pub fn new(partition: u32, node: &str, epoch: u64, exported: Exported) -> Self {
        Self {
            partition,
            node: node.to_owned(),
            epoch,
            position: exported.position,
            base: exported.base,
        }
    }
}

/// A snapshot could not be saved or loaded: the object store did not answer or refused, the object does not
/// decode (or is of the earlier layout), or it holds another partition. The message is for people; a taker
/// replays the whole log instead.
#[derive(Debug, thiserror::Error)]
#[error("partition snapshots: {0}")]
pub struct SnapshotError(String);

fn nats(error: impl std::fmt::Display) -> SnapshotError {
    SnapshotError(error.to_string())
}

/// The snapshot bucket.
#[derive(Clone)]
pub struct SnapshotBook {
    store: object_store::ObjectStore,
}

impl std::fmt::Debug for SnapshotBook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("SnapshotBook").finish_non_exhaustive()
    }
}

fn name(partition: u32) -> String {
    format!("p{partition}")
}

impl SnapshotBook {
    /// Opens (creating on first use) the bucket, with `replicas` like the log it stands for.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, SnapshotError> {
        if let Ok(store) = js.get_object_store(SNAPSHOT_BUCKET).await {
            return Ok(Self { store });
        }
        let config = object_store::Config {
            bucket: SNAPSHOT_BUCKET.to_owned(),
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let store = match js.create_object_store(config).await {
            Ok(store) => store,
            // Another node created it first.
            Err(_) => js.get_object_store(SNAPSHOT_BUCKET).await.map_err(nats)?,
        };
        Ok(Self { store })
    }

    /// The bucket if it exists; nothing is created (for tools that only read).
    pub async fn existing(js: &jetstream::Context) -> Option<Self> {
        let store = js.get_object_store(SNAPSHOT_BUCKET).await.ok()?;
        Some(Self { store })
    }

    /// Replaces the partition's snapshot.
    pub async fn save(&self, snapshot: &PartitionSnapshot) -> Result<(), SnapshotError> {
        let bytes = to_postcard(&Stored::V2(snapshot.clone()));
        self.store
            .put(name(snapshot.partition).as_str(), &mut bytes.as_slice())
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// The partition's snapshot; `None` before its first.
    pub async fn load(&self, partition: u32) -> Result<Option<PartitionSnapshot>, SnapshotError> {
        let mut object = match self.store.get(name(partition)).await {
            Ok(object) => object,
            Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(nats(error)),
        };
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.map_err(nats)?;
        let earlier =
            || SnapshotError("the snapshot is of an earlier layout (V1), not read".into());
        if bytes.first() == Some(&0) {
            return Err(earlier());
        }
        let Stored::V2(snapshot) = from_postcard(&bytes).map_err(nats)? else {
            return Err(earlier());
        };
        if snapshot.partition != partition {
            return Err(SnapshotError(format!(
                "the object of partition {partition} holds partition {}'s",
                snapshot.partition
            )));
        }
        Ok(Some(snapshot))
    }
}
