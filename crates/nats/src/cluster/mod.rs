//! Cluster mode's use of NATS. The log lives in replicated JetStream streams, rooms are split into partitions
//! (`cohost_proto::partition`), and each partition has one writer at a time, fenced by the stream itself. NATS does
//! every distributed part: cohost writes no consensus, election or replication. See ARCHITECTURE.md,
//! "Cluster mode".

mod cursor;
mod erasure;
mod fixed;
pub mod forward;
mod lease;
mod log;
mod node;
mod owner;
mod snapshot;
mod status;

pub use cursor::{CURSOR_BUCKET, CursorBook, CursorError, Cursors};
pub use erasure::{ERASED_BUCKET, Erased, ErasureBook, ErasureError};
pub use fixed::{CLUSTER_BUCKET, Fixed, JoinError, LOG_FORMAT, join};
pub use forward::{ForwardError, Forwarder, Handler, Keys, Kind, Limits, Responder, Serving};
pub use lease::{
    Holder, LEASE_BUCKET, Lease, LeaseConfig, LeaseError, Leases, NODE_BUCKET, preferred,
};
pub use log::{
    AppendError, Entry, EntryKind, LOG_STREAMS_DEFAULT, LOG_STREAMS_MAX, LogConfig, LogError,
    Marker, PartitionLog, Tail, log_stream, log_subject, msg_id,
};
pub use node::{
    EngineConfig, Following, JoinNodeError, Joining, Node, NodeConfig, NodeStats, StartFollowing,
};
pub use owner::{LogReplicator, TakeOverError, take_over};
pub use snapshot::{PartitionSnapshot, SNAPSHOT_BUCKET, SnapshotBook, SnapshotError};
pub use status::{Last, PartitionStatus, status};

/// Opens the KV bucket `bucket` (one value per key, on file, with `replicas`), creating it on first use; the
/// error as text.
pub(crate) async fn open_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    use async_nats::jetstream::{kv, stream::StorageType};
    if let Ok(kv) = js.get_key_value(bucket).await {
        return Ok(kv);
    }
    let config = kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        num_replicas: replicas,
        storage: StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(kv) => Ok(kv),
        // Another node created it first.
        Err(_) => js.get_key_value(bucket).await.map_err(|e| e.to_string()),
    }
}
