//! `Store`: the append-only event log and what is kept beside it.

use std::path::Path;

use cohost_proto::codec::{from_postcard, to_postcard};
use cohost_proto::{Envelope, RoomId, UserId};

use crate::backend::{Backend, BackendError, Op, SledBackend};
use crate::record::{self, Batch, CommandIndexEntry, FrameError, IdempotencyRecord};

mod base;
pub use base::Base;
use cohost_proto::limits::READ_EVENTS_MAX;

const LOG: u8 = b'L';
/// Snapshot chunks are large: sled keeps them apart from the log (see [`SledBackend`]).
const SNAPSHOT: u8 = crate::backend::BULKY;
const META: u8 = b'M';
const CURSOR: u8 = b'C';
const COMMAND_INDEX: u8 = b'I';
const ARCHIVE: u8 = b'A';
const ERASED: u8 = b'E';
const FORMAT_KEY: &[u8] = b"Mformat";
const FORMAT: &[u8] = b"cohost-store/2";
/// A format this build opens and upgrades: `/1`'s command index entries do not name their room (it is read
/// from the batch). Marked `/2` at open, so an older build then refuses the store rather than misreading it.
const FORMAT_OLDER: &[u8] = b"cohost-store/1";
const SNAPSHOT_SEQ_KEY: &[u8] = b"Msnapshot_seq";
/// Where the replicated log stood when the snapshot was taken (cluster mode): what a taker reads after.
const SNAPSHOT_POSITION_KEY: &[u8] = b"Msnapshot_position";
/// The first seq the log holds, when a base stands for the seqs before it; 1 when absent.
const LOG_FROM_KEY: &[u8] = b"Mlog_from";
/// What the engine keeps beside the snapshot, as of its mark (retention's rooms ended by hour): opaque here.
const SNAPSHOT_EXTRA_KEY: &[u8] = b"Msnapshot_extra";
/// The idempotency records of a batch before the log's base, `R{first_seq:be64}`.
const BASE_RECORDS: u8 = b'R';
/// sled's page cache unless the caller sets another size (sled's own default is 1 GiB).
pub const STORE_CACHE_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// The size a snapshot's values grow to before the next one starts: a chunk holds whole rooms, so one ends
/// at most one room's bytes past this.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Longest outbox sink name, in bytes; an empty or longer name is [`StoreError::InvalidArgument`].
pub const SINK_NAME_LEN_MAX: usize = 64;

/// Why the store did not do what was asked. The variant says what a caller can do about it: a damaged log
/// (`Corrupt`, `Gap`, `CorruptValue`, `Format`, `Truncated`) needs an operator, never a retry; `FlushFailed`
/// and `ReplicationStopped` need a reopen; the rest are the caller's or the storage engine's to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed: a directory lock another process holds, an IO error. A failed write wrote
    /// nothing (writes are atomic).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The log record whose first seq is `seq` fails its checksum or does not decode: bit rot, or a torn
    /// write at or before the committed mark. Never served, never skipped.
    #[error("log record at seq {seq} is corrupt: {reason}")]
    Corrupt {
        /// The first seq of the damaged record.
        seq: u64,
        /// What is wrong with its bytes.
        reason: FrameError,
    },
    /// The log has a hole: no record holds `expected`. Also a read of a seq the log does not hold yet, and a
    /// replicated record that does not continue the log.
    #[error("log is not gap-free: expected a record at seq {expected}, found seq {found}")]
    Gap {
        /// The seq that should have come next.
        expected: u64,
        /// The seq found in its place; 0 when there was none.
        found: u64,
    },
    /// A value beside the log (a snapshot chunk, a mark, a cursor, an archive, a command index) fails its
    /// checksum or does not decode. Derived data: the engine rebuilds what it can from the log.
    #[error("stored {what} is corrupt: {reason}")]
    CorruptValue {
        /// Which value, for people: the snapshot mark, a snapshot chunk, a sink's cursor, a room's archive.
        what: String,
        /// What is wrong with its bytes, or why it cannot be used.
        reason: FrameError,
    },
    /// The directory holds another format than this build reads (a newer build's store, or not a cohost
    /// store at all). Nothing was changed.
    #[error("the data directory holds {found:?}, not a cohost store ({expected:?})")]
    Format {
        /// The format name found in the store.
        found: String,
        /// The format name this build writes.
        expected: String,
    },
    /// The log ends before the committed mark: records an append had made durable are gone. Opening refuses
    /// rather than serve a log that lost acknowledged events.
    #[error("log ends at seq {found} but seq {committed} was committed: records from seq {} on are missing or corrupt", .found + 1)]
    Truncated {
        /// The last seq an append made durable, by the mark.
        committed: u64,
        /// The last seq the log holds.
        found: u64,
    },
    /// The call itself is wrong whatever the store holds (an empty batch, a sink name out of range, a base
    /// into a store that is not empty); nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A read from before the first seq the log holds: a base stands for what came before (cluster mode).
    #[error("the log here holds seqs from {first} on, not {from}")]
    Before {
        /// The seq asked for.
        from: u64,
        /// The first seq the log holds ([`Store::log_from`]).
        first: u64,
    },
    /// A flush failed. What it should have made durable may be gone even if a later flush succeeds (the page
    /// cache can drop the dirty pages), so the store refuses every write from then on; reopening it (a
    /// restart) recovers from what is really on disk.
    #[error("a flush failed, so the store takes no more writes until it is reopened: {cause}")]
    FlushFailed {
        /// The storage engine's message for the first failed flush.
        cause: String,
    },
    /// The replicated log stopped taking this store's batches (see [`crate::Replicator`]); nothing is written
    /// from then on.
    #[error("the replicated log takes no more batches from this writer: {cause}")]
    ReplicationStopped {
        /// Why, from the [`Replicator`](crate::Replicator) or the local write that failed after it.
        cause: String,
    },
    /// The replicated log refused this one batch outright
    /// ([`ReplicateError::Refused`](crate::ReplicateError::Refused)): nothing was written anywhere, and the
    /// store goes on taking writes.
    #[error("the replicated log refused the batch: {cause}")]
    ReplicationRefused {
        /// The [`Replicator`](crate::Replicator)'s reason.
        cause: String,
    },
}

/// One log record as the store holds it (a batch: what one group commit appended), checksum checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// The seq of its first event, which names it.
    pub first_seq: u64,
    /// The seq of its last event.
    pub last_seq: u64,
    /// Its bytes, checksum included: what [`Store::append_replicated`] takes.
    pub bytes: Vec<u8>,
}

/// What [`Store::verify_log`] found: the log is whole, and ends here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSummary {
    /// The seq of the log's last event; 0 for an empty log (or the seq before the first, past a [`Base`]).
    pub last_seq: u64,
    /// Batch records read, one per group commit.
    pub records: u64,
}

/// A snapshot taken at one seq: each room's state as of `seq`, as the engine encoded it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshots {
    /// The snapshot mark: the rooms are as of this seq, and a replay continues after it. 0 when no snapshot
    /// was taken.
    pub seq: u64,
    /// Every room the engine held in memory then, with its bytes, opaque here.
    pub rooms: Vec<(RoomId, Vec<u8>)>,
}

/// The event log, snapshots, idempotency records and outbox cursors of one deployment (one partition, in
/// cluster mode).
///
/// One writer, any number of readers: appends come from one thread (the engine's sequencer), while reads may
/// come from any thread at the same time and see every write so far, flushed or not (the engine serves only
/// what it knows is durable). Every call may block on IO; none spawns a thread. Reads decode and checksum
/// every record they serve, and are bounded ([`READ_EVENTS_MAX`] events).
pub struct Store {
    backend: Box<dyn Backend>,
    /// Set by the first failed flush; every write is refused after it.
    flush_failed: std::sync::OnceLock<String>,
    opened: Opened,
    /// Log records decoded for readers (not for opening), so a read's cost is visible.
    records_read: std::sync::atomic::AtomicU64,
    /// Where each batch goes first, in cluster mode.
    replicator: Option<std::sync::Arc<dyn crate::Replicator>>,
    /// Set when the replicator stopped taking batches; every write is refused after it.
    replication_stopped: std::sync::OnceLock<String>,
    /// The first seq the log holds (see [`Store::install_base`]).
    log_from: std::sync::atomic::AtomicU64,
}

/// What opening did to the log before serving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opened {
    /// The seq of a torn record past the committed mark that was taken back.
    pub torn_dropped: Option<u64>,
    /// Records past the committed mark written again and flushed (see [`Store::with_backend`]).
    pub confirmed: u64,
    /// A flush had failed before: the snapshots were dropped, so the engine replays the whole log.
    pub after_flush_failure: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn log_key(seq: u64) -> [u8; 9] {
    let mut key = [LOG; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn command_index_key(seq: u64) -> [u8; 9] {
    let mut key = [COMMAND_INDEX; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The writes of one batch record: the record, and its command index when it has commands.
fn batch_ops(first_seq: u64, commands: &[IdempotencyRecord], record: Vec<u8>) -> Vec<Op> {
    let mut ops = vec![Op::Put(log_key(first_seq).to_vec(), record)];
    if !commands.is_empty() {
        let index: Vec<CommandIndexEntry> = commands.iter().map(CommandIndexEntry::from).collect();
        ops.push(Op::Put(
            command_index_key(first_seq).to_vec(),
            record::encode_command_index(&index),
        ));
    }
    ops
}

/// How many events the record at `seq` holds, checksum checked; an empty batch is damage.
fn events_in(seq: u64, record: &[u8]) -> Result<u32, StoreError> {
    match record::batch_count(record) {
        Ok(0) => Err(StoreError::Corrupt {
            seq,
            reason: FrameError::Decode("empty batch".into()),
        }),
        Ok(count) => Ok(count),
        Err(reason) => Err(StoreError::Corrupt { seq, reason }),
    }
}

fn key_seq(key: &[u8]) -> u64 {
    // Log keys are written only by `log_key`.
    u64::from_be_bytes(key[1..9].try_into().expect("log keys are 9 bytes"))
}

fn snapshot_key(seq: u64, chunk: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(SNAPSHOT);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

fn snapshot_chunk(seq: u64, index: u32, rooms: &[(&str, &[u8])]) -> Op {
    Op::Put(
        snapshot_key(seq, index),
        record::frame(&to_postcard(&rooms)),
    )
}

fn prefixed(prefix: u8, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(prefix);
    key.extend_from_slice(name);
    key
}

impl Store {
    /// Opens (or creates) the sled store in `dir`, with sled's page cache at [`STORE_CACHE_BYTES_DEFAULT`]. A
    /// second process on the same dir gets `BackendError::Locked`.
    ///
    /// It blocks on IO, and up to 2 s on a directory lock this process's previous handle may still hold; it
    /// reads the newest record, not the whole log (that is [`Store::verify_log`]'s job). See
    /// [`Store::with_backend`] for what opening checks and repairs.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the directory is locked ([`BackendError::Locked`]) or cannot be opened;
    /// [`StoreError::CorruptValue`] when the committed mark is damaged; and each error of
    /// [`Store::with_backend`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, STORE_CACHE_BYTES_DEFAULT)
    }

    /// As [`Store::open`], with sled keeping at most `cache_bytes` of the store in memory. A smaller cache
    /// costs reads, never correctness.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let (backend, mark) = SledBackend::open(dir, cache_bytes)?;
        mark.map_err(|reason| StoreError::CorruptValue {
            what: "committed mark".into(),
            reason,
        })?;
        Self::with_backend(Box::new(backend))
    }

    /// The last seq of the newest record, checking only that record.
    fn last_seq(&self) -> Result<u64, StoreError> {
        let mut newest = self.backend.range_rev(&log_key(0), &log_key(u64::MAX));
        let Some((key, value)) = newest.next().transpose()? else {
            return Ok(self.log_from() - 1);
        };
        let seq = key_seq(&key);
        let count =
            record::batch_count(&value).map_err(|reason| StoreError::Corrupt { seq, reason })?;
        Ok(seq + u64::from(count) - 1)
    }

    /// A store over any backend. Opening checks the format; takes back a torn newest record that was never
    /// committed (only on a backend whose writes can tear); refuses a log that ends before its committed mark;
    /// and writes every record past the mark again, with a flush. A record past the mark may have been read
    /// back from the operating system's cache after a flush of it failed (a restart after fail-stop): the
    /// kernel may have dropped its pages while still serving them, so only writing it again makes it durable.
    /// When a flush failed before (the backend keeps a flag for it), the snapshots are dropped as well, since
    /// any of them may be such an illusion, and the engine rebuilds them from the log. [`Store::opened`] says
    /// what was done.
    ///
    /// # Errors
    ///
    /// - [`StoreError::Format`]: the backend holds another format; nothing was changed.
    /// - [`StoreError::Truncated`]: the log ends before the committed mark.
    /// - [`StoreError::Corrupt`]: the newest record is damaged, and is not a torn write it may take back.
    /// - [`StoreError::CorruptValue`]: the log's first seq is damaged, or a flush had failed in a store that
    ///   starts from a [`Base`] (its snapshot could not be rebuilt).
    /// - [`StoreError::Backend`], [`StoreError::FlushFailed`]: the backend failed to read, write or flush.
    pub fn with_backend(backend: Box<dyn Backend>) -> Result<Self, StoreError> {
        let mut store = Self {
            backend,
            flush_failed: std::sync::OnceLock::new(),
            opened: Opened::default(),
            records_read: std::sync::atomic::AtomicU64::new(0),
            replicator: None,
            replication_stopped: std::sync::OnceLock::new(),
            log_from: std::sync::atomic::AtomicU64::new(1),
        };
        match store.backend.get(FORMAT_KEY)? {
            Some(found) if found == FORMAT => {}
            Some(found) if found != FORMAT_OLDER => {
                return Err(StoreError::Format {
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: String::from_utf8_lossy(FORMAT).into_owned(),
                });
            }
            _ => store.write_and_flush(vec![Op::Put(FORMAT_KEY.to_vec(), FORMAT.to_vec())])?,
        }
        store.load_log_from()?;
        let Some(committed) = store.backend.committed() else {
            return Ok(store);
        };
        if store.backend.writes_can_tear() {
            store.opened.torn_dropped = store.drop_torn_tail(committed)?;
        }
        let found = store.last_seq()?;
        if found < committed {
            return Err(StoreError::Truncated { committed, found });
        }
        store.opened.confirmed = store.confirm_tail(committed, found)?;
        if store.backend.flush_failed_before() {
            store.check_no_base("a flush had failed, and the snapshot it may have lost")?;
            store.drop_snapshots()?;
            store.backend.clear_flush_failed()?;
            store.opened.after_flush_failure = true;
            tracing::warn!(
                "a flush had failed: records past the committed mark were written again, snapshots dropped"
            );
        }
        Ok(store)
    }

    /// Removes every room snapshot and the snapshot mark, with a flush.
    fn drop_snapshots(&self) -> Result<(), StoreError> {
        let mut ops = vec![
            Op::Delete(SNAPSHOT_SEQ_KEY.to_vec()),
            Op::Delete(SNAPSHOT_POSITION_KEY.to_vec()),
            Op::Delete(SNAPSHOT_EXTRA_KEY.to_vec()),
        ];
        // Archived rooms are derived state too, and as doubtful: the replay from seq 1 archives them again.
        for prefix in [SNAPSHOT, ARCHIVE] {
            for entry in self.backend.range(&[prefix], &[prefix + 1]) {
                ops.push(Op::Delete(entry?.0));
            }
        }
        self.write_and_flush(ops)
    }

    /// What opening did: a torn record taken back, records written again, snapshots dropped.
    pub fn opened(&self) -> Opened {
        self.opened
    }

    /// A newest record that fails its checksum and lies past the committed mark is a write torn by a crash
    /// before its flush: nobody was told it committed, so it is removed. At or before the mark it is
    /// corruption, left for `verify_log` to report.
    fn drop_torn_tail(&self, committed: u64) -> Result<Option<u64>, StoreError> {
        let mut newest = self.backend.range_rev(&log_key(0), &log_key(u64::MAX));
        let Some((key, value)) = newest.next().transpose()? else {
            return Ok(None);
        };
        drop(newest);
        let seq = key_seq(&key);
        if seq <= committed || record::batch_count(&value).is_ok() {
            return Ok(None);
        }
        self.write_and_flush(vec![
            Op::Delete(key),
            Op::Delete(command_index_key(seq).to_vec()),
        ])?;
        tracing::warn!(
            seq,
            committed,
            "removed a torn log record past the committed mark: it was never acknowledged"
        );
        Ok(Some(seq))
    }

    /// Writes every record past the committed mark again, with its command index, flushes, and moves the
    /// mark to the log's end. After a clean stop there is none; after a crash, usually the last batch.
    fn confirm_tail(&self, committed: u64, last_seq: u64) -> Result<u64, StoreError> {
        if last_seq <= committed {
            return Ok(0);
        }
        let start = self.batch_start(committed + 1)?.unwrap_or(committed + 1);
        let mut ops = Vec::new();
        for entry in self.backend.range(&log_key(start), &log_key(u64::MAX)) {
            let (key, value) = entry?;
            let index_key = command_index_key(key_seq(&key)).to_vec();
            if let Some(index) = self.backend.get(&index_key)? {
                ops.push(Op::Put(index_key, index));
            }
            ops.push(Op::Put(key, value));
        }
        let records = ops
            .iter()
            .filter(|op| matches!(op, Op::Put(k, _) if k[0] == LOG))
            .count();
        self.write_and_flush(ops)?;
        if let Err(error) = self.backend.set_committed(last_seq) {
            tracing::warn!(%error, seq = last_seq, "committed mark not advanced");
        }
        Ok(records as u64)
    }

    /// Sends every batch to `replicator` before writing it here (cluster mode): a batch is written locally only
    /// once the replicated log holds it. The local store is then a cache of that log: appends are no longer
    /// flushed here, and the committed mark no longer moves.
    pub fn replicate_to(&mut self, replicator: std::sync::Arc<dyn crate::Replicator>) {
        self.replicator = Some(replicator);
    }

    /// Refuses once a flush has failed: nothing written after it could be trusted to reach the disk.
    fn check_writable(&self) -> Result<(), StoreError> {
        if let Some(cause) = self.replication_stopped.get() {
            return Err(StoreError::ReplicationStopped {
                cause: cause.clone(),
            });
        }
        match self.flush_failed.get() {
            Some(cause) => Err(StoreError::FlushFailed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.check_writable()?;
        Ok(self.backend.write(ops)?)
    }

    fn flush_backend(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        self.backend.flush().map_err(|error| {
            let cause = error.to_string();
            let _ = self.flush_failed.set(cause.clone());
            if let Err(flag) = self.backend.set_flush_failed() {
                tracing::error!(%flag, "could not record the failed flush for the next open");
            }
            StoreError::FlushFailed { cause }
        })
    }

    fn write_and_flush(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.write(ops)?;
        self.flush_backend()
    }

    /// Why the store takes no more writes, once a flush has failed; `None` while it takes them.
    pub fn flush_failure(&self) -> Option<&str> {
        self.flush_failed.get().map(String::as_str)
    }

    /// Appends one batch of events (seqs consecutive, continuing the log) with its idempotency records, as one
    /// atomic write, then flushes. When this returns `Ok`, the batch is durable. A failed write changes
    /// nothing and is `Backend`; a failed flush is `FlushFailed`, and the store takes no writes after it. With a
    /// replicator, the batch goes there first: `ReplicationRefused` changes nothing, `ReplicationStopped` stops
    /// every later write as a failed flush does.
    ///
    /// It blocks for one write and one flush (or the replicator's round trip), and allocates the encoded
    /// record.
    ///
    /// # Errors
    ///
    /// - [`StoreError::InvalidArgument`]: `events` is empty.
    /// - [`StoreError::Backend`]: the write failed; nothing of it is readable (writes are atomic).
    /// - [`StoreError::FlushFailed`]: this flush or an earlier one failed; refused from then on.
    /// - [`StoreError::ReplicationRefused`], [`StoreError::ReplicationStopped`]: see above.
    ///
    /// # Panics
    ///
    /// When the seqs in `events` are not consecutive: the sequencer numbers them, so that is a bug. Whether
    /// they continue the log is not checked here (the next open's [`Store::verify_log`] would find a gap).
    pub fn append(
        &self,
        events: &[Envelope],
        commands: &[IdempotencyRecord],
    ) -> Result<(), StoreError> {
        let first = events.first().ok_or(StoreError::InvalidArgument(
            "a batch needs at least one event",
        ))?;
        assert!(
            events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
            "seqs in a batch are consecutive"
        );
        let value = record::encode_batch(events, commands);
        self.replicate(first.seq, &value)?;
        self.write_batch(first.seq, events.len(), commands, value)
    }

    /// Appends a batch record taken from the replicated log (a node catching up on a partition it takes), as
    /// it is, without sending it back there. It must continue the local log. Returns its last seq. Not flushed:
    /// [`Store::flush_replicated`] makes a whole catch-up durable with one flush.
    ///
    /// # Errors
    ///
    /// [`StoreError::CorruptValue`] when the record does not decode, [`StoreError::Gap`] when it does not
    /// continue the local log, [`StoreError::InvalidArgument`] when it holds no event, and the write's own.
    pub fn append_replicated(&self, record: &[u8]) -> Result<u64, StoreError> {
        let batch = record::decode_batch(record).map_err(|reason| StoreError::CorruptValue {
            what: "a batch record from the replicated log".into(),
            reason,
        })?;
        let first = batch.first_seq().ok_or(StoreError::InvalidArgument(
            "a batch needs at least one event",
        ))?;
        let expected = self.last_seq()? + 1;
        if first != expected {
            return Err(StoreError::Gap {
                expected,
                found: first,
            });
        }
        self.write(batch_ops(first, &batch.commands, record.to_vec()))?;
        Ok(first + batch.events.len() as u64 - 1)
    }

    /// Flushes what [`Store::append_replicated`] wrote and marks it committed, so opening the store finds no
    /// unconfirmed tail to write again.
    pub fn flush_replicated(&self) -> Result<(), StoreError> {
        self.flush_backend()?;
        let last = self.last_seq()?;
        self.backend.set_committed(last)?;
        Ok(())
    }

    fn write_batch(
        &self,
        first_seq: u64,
        events: usize,
        commands: &[IdempotencyRecord],
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let ops = batch_ops(first_seq, commands, value);
        if self.replicator.is_some() {
            // The replicated log holds the batch already; this store is its cache, rebuilt from it when the
            // partition is taken again, so a flush here would buy nothing, and no committed mark may claim a
            // durability this store does not have. A cache that failed to take a batch the log holds no longer
            // matches the log: taking it back would reuse seqs the log has spent, so the store stops.
            return self.write(ops).map_err(|error| match error {
                StoreError::Backend(cause) => {
                    let cause = format!(
                        "the local copy could not take batch {first_seq}, which the replicated log holds: {cause}"
                    );
                    let _ = self.replication_stopped.set(cause.clone());
                    StoreError::ReplicationStopped { cause }
                }
                other => other,
            });
        }
        self.write_and_flush(ops)?;
        let last = first_seq + events as u64 - 1;
        // The batch is durable already; a mark left behind only weakens the check at the next open.
        if let Err(error) = self.backend.set_committed(last) {
            tracing::warn!(%error, seq = last, "committed mark not advanced");
        }
        Ok(())
    }

    fn replicate(&self, first_seq: u64, record: &[u8]) -> Result<(), StoreError> {
        let Some(replicator) = &self.replicator else {
            return Ok(());
        };
        self.check_writable()?;
        match replicator.replicate(first_seq, record) {
            Ok(()) => Ok(()),
            Err(crate::ReplicateError::Refused(cause)) => {
                Err(StoreError::ReplicationRefused { cause })
            }
            Err(crate::ReplicateError::Stopped(cause)) => {
                let _ = self.replication_stopped.set(cause.clone());
                Err(StoreError::ReplicationStopped { cause })
            }
        }
    }

    /// Removes a batch whose write failed, in case any of it was kept, so its seqs can be written again.
    /// Flushed; fails as any write does, and a failure here leaves the log's end unknown (the engine stops).
    pub fn discard(&self, first_seq: u64) -> Result<(), StoreError> {
        self.write_and_flush(vec![
            Op::Delete(log_key(first_seq).to_vec()),
            Op::Delete(command_index_key(first_seq).to_vec()),
        ])
    }

    /// Reads every record once: checks each checksum and that seqs run from the log's first (1, or past its
    /// base) without gaps. Blocks for a read of the whole log, holding one record at a time.
    ///
    /// # Errors
    ///
    /// The first damage found, naming its seq: [`StoreError::Corrupt`] (a checksum, an empty batch) or
    /// [`StoreError::Gap`]; or the backend's read error.
    pub fn verify_log(&self) -> Result<LogSummary, StoreError> {
        self.replay(u64::MAX, |_| {})
    }

    /// Reads the whole log once, as `verify_log` does, and hands every batch holding seqs after `after_seq` to
    /// `on_batch`, decoded, in order. Opening uses this to check and replay in one pass. On an error,
    /// `on_batch` has seen every batch before the damage, and no more.
    pub fn replay(
        &self,
        after_seq: u64,
        mut on_batch: impl FnMut(Batch),
    ) -> Result<LogSummary, StoreError> {
        let mut expected = self.log_from();
        let mut records = 0;
        for entry in self.backend.range(&log_key(0), &log_key(u64::MAX)) {
            let (key, value) = entry?;
            let seq = key_seq(&key);
            if seq != expected {
                return Err(StoreError::Gap {
                    expected,
                    found: seq,
                });
            }
            let count = events_in(seq, &value)?;
            expected = seq + u64::from(count);
            records += 1;
            if expected - 1 > after_seq {
                let batch = record::decode_batch(&value)
                    .map_err(|reason| StoreError::Corrupt { seq, reason })?;
                on_batch(batch);
            }
        }
        Ok(LogSummary {
            last_seq: expected - 1,
            records,
        })
    }

    /// The command index entries of each batch, newest batch first, with the batch's first seq. The entry at
    /// position `i` describes the `i`th idempotency record of that batch. Lazy: each item reads one small
    /// value (an index from an earlier format also reads its batch). A damaged index is
    /// [`StoreError::CorruptValue`].
    pub fn command_index_rev(
        &self,
    ) -> impl Iterator<Item = Result<(u64, Vec<CommandIndexEntry>), StoreError>> + '_ {
        let entries = self
            .backend
            .range_rev(&command_index_key(0), &command_index_key(u64::MAX));
        entries.map(|entry| {
            let (key, value) = entry?;
            let seq = key_seq(&key);
            let corrupt = |reason| StoreError::CorruptValue {
                what: format!("command index of batch {seq}"),
                reason,
            };
            match record::decode_command_index(&value).map_err(corrupt)? {
                record::CommandIndex::Current(index) => Ok((seq, index)),
                record::CommandIndex::Older(count) => {
                    // Written before entries named their room: the batch's own records do.
                    let batch = self.batches_from(seq).next().transpose()?;
                    let index: Vec<CommandIndexEntry> = batch
                        .filter(|batch| batch.events.first().map(|e| e.seq) == Some(seq))
                        .map(|batch| batch.commands.iter().map(CommandIndexEntry::from).collect())
                        .unwrap_or_default();
                    if index.len() != count {
                        return Err(corrupt(FrameError::Decode(format!(
                            "{count} entries, but the batch holds {} idempotency records",
                            index.len()
                        ))));
                    }
                    Ok((seq, index))
                }
            }
        })
    }

    /// Batches in seq order, starting with the one that holds `from_seq`. Lazy, one record decoded per item;
    /// each item is a damaged record's [`StoreError::Corrupt`] or a read error. It does not check for gaps
    /// ([`Store::read_events`] does).
    pub fn batches_from(
        &self,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<Batch, StoreError>> + '_ {
        // A failed seek is reported as itself, not as the gap a read from the wrong place would show.
        let (start, seek_error) = match self.batch_start(from_seq) {
            Ok(start) => (start.unwrap_or(from_seq), None),
            Err(error) => (u64::MAX, Some(error)),
        };
        let batches = self.decode_entries(self.backend.range(&log_key(start), &log_key(u64::MAX)));
        seek_error.map(Err).into_iter().chain(batches)
    }

    /// The log's records as stored, from the one that starts at `from_seq` through the last one that starts at
    /// or before `to_seq`: what a backup copies. Lazy, one record in memory per item; each is checked against
    /// its checksum, and a record not starting where the previous one ended is a [`StoreError::Gap`].
    pub fn raw_records(
        &self,
        from_seq: u64,
        to_seq: u64,
    ) -> impl Iterator<Item = Result<RawRecord, StoreError>> + '_ {
        let mut expected = from_seq;
        let entries = self
            .backend
            .range(&log_key(from_seq), &log_key(to_seq.saturating_add(1)));
        entries.map(move |entry| {
            let (key, bytes) = entry?;
            let first_seq = key_seq(&key);
            if first_seq != expected {
                return Err(StoreError::Gap {
                    expected,
                    found: first_seq,
                });
            }
            let count = events_in(first_seq, &bytes)?;
            expected = first_seq + u64::from(count);
            Ok(RawRecord {
                first_seq,
                last_seq: expected - 1,
                bytes,
            })
        })
    }

    /// Batches from the newest back, lazily, one record decoded per item, as [`Store::batches_from`].
    pub fn batches_rev(&self) -> impl Iterator<Item = Result<Batch, StoreError>> + '_ {
        self.decode_entries(self.backend.range_rev(&log_key(0), &log_key(u64::MAX)))
    }

    fn decode_entries<'a>(
        &'a self,
        entries: crate::backend::Entries<'a>,
    ) -> impl Iterator<Item = Result<Batch, StoreError>> + 'a {
        entries.map(|entry| {
            let (key, value) = entry?;
            self.decode_record(key_seq(&key), &value)
        })
    }

    fn decode_record(&self, seq: u64, value: &[u8]) -> Result<Batch, StoreError> {
        self.records_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        record::decode_batch(value).map_err(|reason| StoreError::Corrupt { seq, reason })
    }

    /// Log records decoded for readers since the store was opened (not opening's replay): what reads cost, for
    /// metrics and for tests that a read decodes only what it needs.
    pub fn records_read(&self) -> u64 {
        self.records_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The envelopes with these seqs (ascending), reading only the records that hold them, each once. A seq the
    /// log does not hold is a `Gap` error, never a shorter answer; a seq before the log's base is `Before`.
    /// At most [`READ_EVENTS_MAX`] seqs are read, the rest ignored. Blocks on IO.
    pub fn read_seqs(&self, seqs: &[u64]) -> Result<Vec<Envelope>, StoreError> {
        let mut found = Vec::with_capacity(seqs.len());
        let mut record: Option<(u64, Vec<Envelope>)> = None;
        for &seq in seqs.iter().take(READ_EVENTS_MAX) {
            self.check_held(seq)?;
            let held = record.as_ref().is_some_and(|(first, events)| {
                (*first..*first + events.len() as u64).contains(&seq)
            });
            if !held {
                let mut below = self
                    .backend
                    .range_rev(&log_key(0), &log_key(seq.saturating_add(1)));
                let (key, value) = below.next().transpose()?.ok_or(StoreError::Gap {
                    expected: seq,
                    found: 0,
                })?;
                let first = key_seq(&key);
                record = Some((first, self.decode_record(first, &value)?.events));
            }
            let (first, events) = record.as_ref().expect("read above");
            let envelope = events
                .get((seq - first) as usize)
                .filter(|e| e.seq == seq)
                .ok_or(StoreError::Gap {
                    expected: seq,
                    found: first + events.len() as u64,
                })?;
            found.push(envelope.clone());
        }
        Ok(found)
    }

    /// The first seq of the record that holds `seq`.
    fn batch_start(&self, seq: u64) -> Result<Option<u64>, StoreError> {
        let mut below = self
            .backend
            .range_rev(&log_key(0), &log_key(seq.saturating_add(1)));
        Ok(below.next().transpose()?.map(|(key, _)| key_seq(&key)))
    }

    /// Up to `limit` (at most [`READ_EVENTS_MAX`]) events from `from_seq` on, in seq order. A hole in the
    /// log is a `Gap` error, never a shorter answer; no record past the window is decoded. A shorter answer
    /// means the log ends. `from_seq` before the log's base is `Before`. Blocks on IO.
    pub fn read_events(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        self.envelopes_from(from_seq)
            .take(limit.min(READ_EVENTS_MAX))
            .collect()
    }

    /// Every envelope from `from_seq` on, in seq order, decoding one record at a time as it goes. A hole in
    /// the log is a `Gap` error, after which nothing more comes.
    fn envelopes_from(&self, from_seq: u64) -> Envelopes<'_> {
        let expected = from_seq.max(1);
        let batches: Box<dyn Iterator<Item = _>> = match self.check_held(expected) {
            Ok(()) => Box::new(self.batches_from(expected)),
            Err(before) => Box::new(std::iter::once(Err(before))),
        };
        Envelopes {
            batches,
            current: Vec::new().into_iter(),
            expected,
            done: false,
        }
    }

    /// The seq a named sink (an outbox relay) has durably handled; 0 before its first advance. Never before
    /// the log's base: a sink starts where the log here starts.
    pub fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        let key = Self::cursor_key(sink)?;
        let stored = match self.backend.get(&key)? {
            Some(value) => Self::decode_cursor(sink, &value)?,
            None => 0,
        };
        Ok(stored.max(self.log_from() - 1))
    }

    /// Every sink's cursor, by name: what moves with a partition in cluster mode.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.backend.range(&[CURSOR], &[CURSOR + 1]) {
            let (key, value) = entry?;
            let sink = String::from_utf8_lossy(&key[1..]).into_owned();
            let seq = Self::decode_cursor(&sink, &value)?;
            out.push((sink, seq));
        }
        Ok(out)
    }

    fn decode_cursor(sink: &str, value: &[u8]) -> Result<u64, StoreError> {
        base::read_u64(&format!("cursor {sink:?}"), value)
    }

    /// Durably records that `sink` has handled every event up to `seq`: one write and one flush. It does not
    /// check `seq` against the log (the engine does). An empty or too long name is `InvalidArgument`; a
    /// failed flush is `FlushFailed`, and fail-stop as any other.
    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let key = Self::cursor_key(sink)?;
        self.write_and_flush(vec![Op::Put(key, record::frame(&seq.to_le_bytes()))])
    }

    fn cursor_key(sink: &str) -> Result<Vec<u8>, StoreError> {
        if sink.is_empty() || sink.len() > SINK_NAME_LEN_MAX {
            return Err(StoreError::InvalidArgument("a sink name is 1 to 64 bytes"));
        }
        Ok(prefixed(CURSOR, sink.as_bytes()))
    }

    /// Durably records that `user` is erased, to be served as `pseudonym` from now on: one write and one
    /// flush. A user recorded before keeps the first pseudonym (they are stable), which is returned; the
    /// caller serializes erasures. A failed flush is `FlushFailed`, and fail-stop as any other.
    pub fn set_erased(&self, user: &UserId, pseudonym: &UserId) -> Result<UserId, StoreError> {
        let key = prefixed(ERASED, user.as_str().as_bytes());
        if let Some(value) = self.backend.get(&key)? {
            return Self::decode_erased(&value);
        }
        let value = record::frame(pseudonym.as_str().as_bytes());
        self.write_and_flush(vec![Op::Put(key, value)])?;
        Ok(pseudonym.clone())
    }

    /// A pseudonym as stored; the error names no user, as it may be shown.
    fn decode_erased(value: &[u8]) -> Result<UserId, StoreError> {
        let corrupt = |reason: FrameError| StoreError::CorruptValue {
            what: "an erased user's pseudonym".into(),
            reason,
        };
        let payload = record::unframe(value).map_err(corrupt)?;
        let pseudonym = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| UserId::new(s).ok());
        pseudonym.ok_or_else(|| corrupt(FrameError::Decode("not a user id".into())))
    }

    /// Every erased user with their pseudonym, by user id.
    pub fn erased(&self) -> Result<Vec<(UserId, UserId)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.backend.range(&[ERASED], &[ERASED + 1]) {
            let (key, value) = entry?;
            let user = std::str::from_utf8(&key[1..])
                .ok()
                .and_then(|s| UserId::new(s).ok());
            let user = user.ok_or_else(|| StoreError::CorruptValue {
                what: "an erased user's id".into(),
                reason: FrameError::Decode("not a user id".into()),
            })?;
            out.push((user, Self::decode_erased(&value)?));
        }
        Ok(out)
    }

    /// Writes a snapshot of every room in memory, taken at `seq`, and moves the snapshot mark to it, atomically,
    /// deleting the previous snapshot. The rooms go in a few large values of about [`SNAPSHOT_CHUNK_BYTES`]
    /// (`S{seq}{chunk}`), not a key per room: sled keeps memory for every key a batch writes or deletes, so a
    /// key per room would cost memory with every room that ever lived. Not flushed: the next append's flush
    /// makes it durable, and a lost snapshot is rebuilt from the log. Allocates the whole snapshot's encoding
    /// before the write.
    pub fn write_snapshot(&self, seq: u64, rooms: &[(RoomId, Vec<u8>)]) -> Result<(), StoreError> {
        self.write_snapshot_with(seq, rooms, None)
    }

    /// [`Store::write_snapshot`], with `extra` (the caller's, as of the same seq) in the same write; `None`
    /// removes an earlier one. [`Store::snapshot_extra`] reads it back.
    pub fn write_snapshot_with(
        &self,
        seq: u64,
        rooms: &[(RoomId, Vec<u8>)],
        extra: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut ops = self.snapshot_ops(seq, rooms)?;
        ops.push(match extra {
            Some(bytes) => Op::Put(SNAPSHOT_EXTRA_KEY.to_vec(), record::frame(bytes)),
            None => Op::Delete(SNAPSHOT_EXTRA_KEY.to_vec()),
        });
        // The snapshot and the replicated log's position are one write: a taker reads the log after it.
        match self.replicator.as_ref().and_then(|r| r.position()) {
            Some(position) => ops.push(Op::Put(
                SNAPSHOT_POSITION_KEY.to_vec(),
                record::frame(&position.to_le_bytes()),
            )),
            None => ops.push(Op::Delete(SNAPSHOT_POSITION_KEY.to_vec())),
        }
        self.write(ops)
    }

    /// The writes that replace the snapshot with `rooms` at `seq`.
    fn snapshot_ops(&self, seq: u64, rooms: &[(RoomId, Vec<u8>)]) -> Result<Vec<Op>, StoreError> {
        let mut ops = Vec::new();
        for entry in self.backend.range(&[SNAPSHOT], &[SNAPSHOT + 1]) {
            ops.push(Op::Delete(entry?.0));
        }
        let mut chunk: Vec<(&str, &[u8])> = Vec::new();
        let (mut size, mut index) = (0, 0u32);
        for (room_id, bytes) in rooms {
            chunk.push((room_id.as_str(), bytes));
            size += bytes.len() + room_id.as_str().len();
            if size >= SNAPSHOT_CHUNK_BYTES {
                ops.push(snapshot_chunk(seq, index, &chunk));
                (chunk, size, index) = (Vec::new(), 0, index + 1);
            }
        }
        if !chunk.is_empty() {
            ops.push(snapshot_chunk(seq, index, &chunk));
        }
        ops.push(Op::Put(
            SNAPSHOT_SEQ_KEY.to_vec(),
            record::frame(&seq.to_le_bytes()),
        ));
        Ok(ops)
    }

    /// Deletes the snapshot and the mark, flushed: for a snapshot that cannot be read, so that none of it
    /// outlives the replay from seq 1 that replaces it.
    pub fn clear_snapshots(&self) -> Result<(), StoreError> {
        self.check_no_base("an unreadable snapshot")?;
        let mut ops = vec![
            Op::Delete(SNAPSHOT_SEQ_KEY.to_vec()),
            Op::Delete(SNAPSHOT_POSITION_KEY.to_vec()),
        ];
        for entry in self.backend.range(&[SNAPSHOT], &[SNAPSHOT + 1]) {
            ops.push(Op::Delete(entry?.0));
        }
        self.write_and_flush(ops)
    }

    /// What [`Store::write_snapshot_with`] kept beside the snapshot at the mark, if anything.
    pub fn snapshot_extra(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(value) = self.backend.get(SNAPSHOT_EXTRA_KEY)? else {
            return Ok(None);
        };
        let corrupt = |reason| StoreError::CorruptValue {
            what: "what the snapshot keeps beside its rooms".into(),
            reason,
        };
        record::unframe(&value)
            .map(<[u8]>::to_vec)
            .map(Some)
            .map_err(corrupt)
    }

    /// The rooms of the snapshot at the mark, and the mark; `seq` 0 and no rooms when none was taken. Reads
    /// and holds every room of it. Any damaged chunk, or a key of another snapshot, is
    /// [`StoreError::CorruptValue`] for the whole: a snapshot missing a room is never served.
    pub fn snapshots(&self) -> Result<Snapshots, StoreError> {
        let Some(mark) = self.backend.get(SNAPSHOT_SEQ_KEY)? else {
            return Ok(Snapshots::default());
        };
        let corrupt = |what: String| {
            move |reason| StoreError::CorruptValue {
                what: what.clone(),
                reason,
            }
        };
        let payload = record::unframe(&mark).map_err(corrupt("snapshot mark".into()))?;
        let seq_bytes: [u8; 8] = payload.try_into().map_err(|_| StoreError::CorruptValue {
            what: "snapshot mark".into(),
            reason: FrameError::Truncated(payload.len()),
        })?;
        let seq = u64::from_le_bytes(seq_bytes);
        let mut rooms = Vec::new();
        for entry in self.backend.range(&[SNAPSHOT], &[SNAPSHOT + 1]) {
            let (key, value) = entry?;
            // A key of the earlier layout (one per room) or of another snapshot is not part of this one: the
            // snapshot cannot be trusted to hold every room, so it is refused and opening replays the log.
            if key.len() != 13 || key[1..9] != seq.to_be_bytes() {
                let name = String::from_utf8_lossy(&key[1..]).into_owned();
                return Err(corrupt("snapshot".into())(FrameError::Decode(format!(
                    "a key of another snapshot or layout: {name:?}"
                ))));
            }
            let what = format!("snapshot chunk {:?}", &key[9..]);
            let payload = record::unframe(&value).map_err(corrupt(what.clone()))?;
            let chunk: Vec<(String, Vec<u8>)> = from_postcard(payload)
                .map_err(|e| corrupt(what.clone())(FrameError::Decode(e.to_string())))?;
            for (name, bytes) in chunk {
                let room_id = RoomId::new(&name)
                    .map_err(|e| corrupt(what.clone())(FrameError::Decode(e.to_string())))?;
                rooms.push((room_id, bytes));
            }
        }
        Ok(Snapshots { seq, rooms })
    }

    /// Keeps the final state of ended rooms (opaque engine bytes, checksummed) so they can leave memory; written
    /// and, when `flush`, flushed before the caller forgets them. An ended room never changes again, so its
    /// archive stays true; the log still holds every event.
    pub fn archive_rooms(
        &self,
        rooms: &[(RoomId, Vec<u8>)],
        flush: bool,
    ) -> Result<(), StoreError> {
        let ops = rooms
            .iter()
            .map(|(room_id, bytes)| {
                Op::Put(
                    prefixed(ARCHIVE, room_id.as_str().as_bytes()),
                    record::frame(bytes),
                )
            })
            .collect();
        if flush {
            self.write_and_flush(ops)
        } else {
            self.write(ops)
        }
    }

    /// The archived state of an ended room that left memory, if it did. A damaged archive is
    /// [`StoreError::CorruptValue`].
    pub fn archived(&self, room_id: &RoomId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(value) = self
            .backend
            .get(&prefixed(ARCHIVE, room_id.as_str().as_bytes()))?
        else {
            return Ok(None);
        };
        let bytes = record::unframe(&value).map_err(|reason| StoreError::CorruptValue {
            what: format!("archive of room {room_id}"),
            reason,
        })?;
        Ok(Some(bytes.to_vec()))
    }

    /// Every archived room, in key order, with its bytes or why they do not read back (a write torn by a crash
    /// before a flush made it durable). For checks and tooling; the daemon never lists them.
    pub fn archived_rooms(
        &self,
    ) -> impl Iterator<Item = Result<(RoomId, Result<Vec<u8>, StoreError>), StoreError>> + '_ {
        self.backend.range(&[ARCHIVE], &[ARCHIVE + 1]).map(|entry| {
            let (key, value) = entry?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            let corrupt = |reason| StoreError::CorruptValue {
                what: format!("archive of room {name}"),
                reason,
            };
            let room_id =
                RoomId::new(&name).map_err(|e| corrupt(FrameError::Decode(e.to_string())))?;
            let bytes = record::unframe(&value).map(<[u8]>::to_vec).map_err(corrupt);
            Ok((room_id, bytes))
        })
    }

    /// Makes every earlier write durable. A failure is [`StoreError::FlushFailed`], and fail-stop.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flush_backend()
    }
}

const _: () = assert!(
    META == b'M'
        && FORMAT_KEY[0] == META
        && SNAPSHOT_SEQ_KEY[0] == META
        && SNAPSHOT_POSITION_KEY[0] == META
        && LOG_FROM_KEY[0] == META
        && SNAPSHOT_EXTRA_KEY[0] == META
);

/// See [`Store::envelopes_from`].
struct Envelopes<'a> {
    batches: Box<dyn Iterator<Item = Result<Batch, StoreError>> + 'a>,
    current: std::vec::IntoIter<Envelope>,
    expected: u64,
    done: bool,
}

impl Iterator for Envelopes<'_> {
    type Item = Result<Envelope, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let Some(envelope) = self.current.next() else {
                match self.batches.next()? {
                    Ok(batch) => self.current = batch.events.into_iter(),
                    Err(error) => {
                        self.done = true;
                        return Some(Err(error));
                    }
                }
                continue;
            };
            if envelope.seq < self.expected {
                continue;
            }
            if envelope.seq != self.expected {
                self.done = true;
                return Some(Err(StoreError::Gap {
                    expected: self.expected,
                    found: envelope.seq,
                }));
            }
            self.expected += 1;
            return Some(Ok(envelope));
        }
        None
    }
}
