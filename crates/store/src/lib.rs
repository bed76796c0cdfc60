//! The cohost event log: an append-only sequence of checksummed batch records, plus the derived data kept
//! beside it (a snapshot of the rooms, ended rooms' archives, idempotency records, outbox cursors).
//!
//! The log is the only durable truth. Everything else here can be rebuilt from it, and a record that fails its
//! checksum is reported with its seq rather than served. This crate is the only one that knows sled, and it knows
//! it through the small [`Backend`] trait ([`SledBackend`] on disk, [`MemoryBackend`] in memory with faults on
//! request). [`Store::append`] returns only once a batch is durable, and after the first failed flush the store
//! refuses every write until it is reopened (fail-stop): nothing is built on pages the kernel may have dropped.
//!
//! It never decides, orders or publishes. It does not know the rules (`cohost-core`'s), nor which command came
//! first or which seq comes next (the engine's sequencer hands it whole batches), nor who listens; the room
//! snapshots and archives it keeps are opaque bytes to it. Neighbours: the envelopes it stores and their stored
//! layout ([`StoredEvent`](cohost_proto::StoredEvent)) are [`cohost_proto`]'s; `cohost-engine` writes and reads
//! it (the sequencer appends, recovery replays, queries and subscriptions read); in cluster mode `cohost-nats`
//! implements [`Replicator`] and fills a taken partition's store ([`Store::install_base`],
//! [`Store::append_replicated`]); `cohost-sim` runs the engine on a [`MemoryBackend`].
//!
//! Layout. Everything but the snapshot's chunks lives in one sled tree, so that a batch is one atomic write:
//! - `L{first_seq:be64}`: one record per committed batch: `[crc32][event count][postcard BatchRecord]`;
//! - `S{seq:be64}{chunk:be32}`: the snapshot's rooms as of its mark, a few values of about
//!   [`SNAPSHOT_CHUNK_BYTES`] (in a tree of their own, so sled never rewrites them with the log's tail);
//! - `Msnapshot_seq`: the snapshot mark; `Mformat`: the format name;
//! - `A{room_id}`: an ended room's final state, once it left the engine's memory, `[crc32][engine bytes]`;
//! - `I{first_seq:be64}`: the batch's idempotency records without their replies, `[crc32][postcard]`, so opening
//!   reads only these to remember command ids;
//! - `C{sink}`: an outbox cursor, `[crc32][seq:le64]`;
//! - `Mlog_from`, `R{first_seq:be64}`, `Msnapshot_position`: a log that starts past seq 1 ([`Base`], cluster
//!   mode): its first seq, the remembered records of batches before it, and where the replicated log stood at
//!   the snapshot.
//!
//! Beside the tree, the committed mark: the last seq an append made durable, so a log that ends before it is an
//! error at open ([`StoreError::Truncated`]) rather than a silent loss.
//!
//! ```
//! use cohost_proto::{Envelope, Event, RoomId, UserId};
//! use cohost_store::Store;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//! let presence = |seq, version| Envelope {
//!     seq,
//!     room_id: RoomId::new("stage-1").unwrap(),
//!     version,
//!     at_ms: 1_700_000_000_000,
//!     actor: None,
//!     service: None,
//!     command_id: None,
//!     event: Event::PresenceChanged { user_id: UserId::new("bob").unwrap(), online: seq % 2 == 1, stamp: None },
//! };
//! // One batch of two events: one record, one write, one flush. `Ok` means durable.
//! store.append(&[presence(1, 1), presence(2, 2)], &[]).unwrap();
//! drop(store);
//!
//! // Reopened: verify_log checks every record, and reads serve them in seq order.
//! let store = Store::open(dir.path()).unwrap();
//! assert_eq!(store.verify_log().unwrap().last_seq, 2);
//! let events = store.read_events(1, 10).unwrap();
//! assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
//! ```

#![warn(missing_docs)]

mod backend;
mod log;
mod mark;
mod memory;
mod record;
mod replicate;

pub use backend::{Backend, BackendError, Entries, Entry, Op, SledBackend};
pub use log::{
    Base, LogSummary, Opened, RawRecord, SINK_NAME_LEN_MAX, SNAPSHOT_CHUNK_BYTES,
    STORE_CACHE_BYTES_DEFAULT, Snapshots, Store, StoreError,
};
pub use memory::{Crash, MemoryBackend, MemoryStats};
pub use record::{Batch, CommandIndexEntry, FrameError, IdempotencyRecord, StoredReply};
pub use replicate::{ReplicateError, Replicator};

/// The seq of the last event in a batch record (as the partition log holds it), for tools that show positions.
///
/// # Errors
///
/// A [`FrameError`] when the record fails its checksum or does not decode. It decodes the whole record.
pub fn batch_last_seq(record: &[u8]) -> Result<u64, FrameError> {
    batch_seqs(record).map(|(_, last)| last)
}

/// The seqs of the first and the last event in a batch record (a record holds at least one event).
///
/// # Errors
///
/// A [`FrameError`] when the record fails its checksum or does not decode. It decodes the whole record.
pub fn batch_seqs(record: &[u8]) -> Result<(u64, u64), FrameError> {
    let batch = record::decode_batch(record)?;
    let first = batch.first_seq().unwrap_or(1);
    Ok((first, first + batch.events.len() as u64 - 1))
}
