//! The cohost event log: an append-only sequence of checksummed batch records in sled, plus the derived data kept
//! beside it (room snapshots, idempotency records, outbox cursors).
//!
//! The log is the only durable truth. Everything else here can be rebuilt from it, and a record that fails its
//! checksum is reported with its seq rather than served. This crate is the only one that knows sled, and it knows
//! it through the small [`Backend`] trait. It never decides anything: rules are `cohost-core`'s, sequencing is
//! the engine's.
//!
//! Layout, in one sled tree so that a batch is one atomic write:
//! - `L{first_seq:be64}`: one record per committed batch: `[crc32][event count][postcard BatchRecord]`;
//! - `S{room_id}`: the room's snapshot as of the snapshot mark, `[crc32][engine bytes]`;
//! - `Msnapshot_seq`: the snapshot mark; `Mformat`: the format name;
//! - `I{first_seq:be64}`: the batch's idempotency records without their replies, `[crc32][postcard]`, so opening
//!   reads only these to remember command ids;
//! - `C{sink}`: an outbox cursor, `[crc32][seq:le64]`;
//! - `Mlog_from`, `R{first_seq:be64}`, `Msnapshot_position`: a log that starts past seq 1 ([`Base`], cluster
//!   mode): its first seq, the remembered records of batches before it, and where the replicated log stood at
//!   the snapshot.

mod backend;
mod log;
mod mark;
mod memory;
mod record;
mod replicate;

pub use backend::{Backend, BackendError, Entries, Entry, Op, SledBackend};
pub use log::{
    Base, LogSummary, Opened, SINK_NAME_LEN_MAX, SNAPSHOT_CHUNK_BYTES, STORE_CACHE_BYTES_DEFAULT,
    Snapshots, Store, StoreError,
};
pub use memory::{Crash, MemoryBackend, MemoryStats};
pub use record::{Batch, CommandIndexEntry, FrameError, IdempotencyRecord, StoredReply};
pub use replicate::{ReplicateError, Replicator};

/// The seq of the last event in a batch record (as the partition log holds it), for tools that show positions.
pub fn batch_last_seq(record: &[u8]) -> Result<u64, FrameError> {
    batch_seqs(record).map(|(_, last)| last)
}

/// The seqs of the first and the last event in a batch record.
pub fn batch_seqs(record: &[u8]) -> Result<(u64, u64), FrameError> {
    let batch = record::decode_batch(record)?;
    let first = batch.first_seq().unwrap_or(1);
    Ok((first, first + batch.events.len() as u64 - 1))
}
