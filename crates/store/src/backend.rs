//! The storage engine behind the log, kept to a few calls so another engine is a new module, not a rewrite.

use std::path::Path;

use crate::mark::{CommittedMark, FlushFailedFlag};
use crate::record::FrameError;

/// One key-value pair read from a backend.
pub type Entry = (Vec<u8>, Vec<u8>);
/// Entries in key order (or reverse), each of which may fail to read.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<Entry, BackendError>> + 'a>;

/// A change in an atomic write ([`Backend::write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets the key (first) to the value (second), replacing any value it had.
    Put(Vec<u8>, Vec<u8>),
    /// Removes the key; removing an absent key is no change, not an error.
    Delete(Vec<u8>),
}

impl Op {
    fn key(&self) -> &[u8] {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }
}

/// The storage engine failed; the message is the engine's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Another process holds the data directory (named here): one directory serves one process. The engine
    /// answers it as `DirectoryInUse`.
    #[error("the data directory {0} is in use by another process")]
    Locked(String),
    /// Any other failure to open, read, write or flush, with the storage engine's own message. Whether a
    /// retry can help depends on the cause; a failed flush is fail-stop in the [`Store`](crate::Store)
    /// whatever the cause.
    #[error("storage error: {0}")]
    Io(String),
}

/// An ordered key-value store with atomic multi-key writes and an explicit durability point.
///
/// What the [`Store`](crate::Store) needs of a storage engine, and no more: implement it to put the log
/// somewhere else. Every call may block on IO; the store calls them from one writer thread and any number of
/// readers, so an implementation is shared (`Send + Sync`). The provided methods describe a backend that keeps
/// no committed mark and no failed-flush flag: the checks at open that rely on them are then skipped.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`, or `None` when absent. Sees every write so far, flushed or not.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;
    /// Keys in `[from, to)`, ascending, read lazily. The store asks only for ranges within one kind of key
    /// (one first byte), and [`SledBackend`] relies on that.
    fn range(&self, from: &[u8], to: &[u8]) -> Entries<'_>;
    /// Keys in `[from, to)`, descending.
    fn range_rev(&self, from: &[u8], to: &[u8]) -> Entries<'_>;
    /// Applies every op or none, in order; readers see all of them or none. Not durable until
    /// [`Backend::flush`].
    fn write(&self, ops: Vec<Op>) -> Result<(), BackendError>;
    /// Returns once everything written so far is on disk (an fsync, about 0.2 to 0.4 ms). After an error,
    /// what the writes since the last good flush left on disk is unknown.
    fn flush(&self) -> Result<(), BackendError>;
    /// The last seq [`Backend::set_committed`] recorded, kept outside the backend's own log, as read when the
    /// backend was opened; `None` when nothing was recorded (or the backend keeps no mark).
    fn committed(&self) -> Option<u64> {
        None
    }
    /// Records that every batch up to `seq` is durable, after the flush that made it so. Never flushed itself:
    /// after a crash the mark holds this or an earlier seq, so it is never ahead of the log.
    fn set_committed(&self, _seq: u64) -> Result<(), BackendError> {
        Ok(())
    }
    /// Whether a crash can leave a write half done. sled's batches are atomic and checksummed by sled, so a
    /// record that fails our checksum there is damage, never a torn write.
    fn writes_can_tear(&self) -> bool {
        false
    }
    /// Durably records that a flush failed, where the next open will find it.
    fn set_flush_failed(&self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Whether a flush failed since the flag was last cleared.
    fn flush_failed_before(&self) -> bool {
        false
    }
    /// Clears the flag, once opening has made durable again whatever the failed flush may have lost.
    fn clear_flush_failed(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A shared backend, so a test or the simulator can keep a handle to the one an engine writes to.
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        (**self).get(key)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        (**self).range(from, to)
    }
    fn range_rev(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        (**self).range_rev(from, to)
    }
    fn write(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        (**self).write(ops)
    }
    fn flush(&self) -> Result<(), BackendError> {
        (**self).flush()
    }
    fn committed(&self) -> Option<u64> {
        (**self).committed()
    }
    fn set_committed(&self, seq: u64) -> Result<(), BackendError> {
        (**self).set_committed(seq)
    }
    fn writes_can_tear(&self) -> bool {
        (**self).writes_can_tear()
    }
    fn set_flush_failed(&self) -> Result<(), BackendError> {
        (**self).set_flush_failed()
    }
    fn flush_failed_before(&self) -> bool {
        (**self).flush_failed_before()
    }
    fn clear_flush_failed(&self) -> Result<(), BackendError> {
        (**self).clear_flush_failed()
    }
}

/// The first byte of the keys a [`SledBackend`] keeps in a tree of their own: the store's snapshot chunks.
pub(crate) const BULKY: u8 = b'S';
/// That tree's name.
const BULKY_TREE: &[u8] = b"bulky";

/// sled 0.34: one tree, whose `apply_batch` is atomic, and whose `flush` fsyncs; plus the committed mark and
/// the failed-flush flag beside it, small files in the same directory. The only code in the workspace that
/// knows sled.
///
/// Keys that start with `S` (the snapshot's chunks, values of up to a mebibyte) live in a second tree, and a
/// write to both trees is one sled transaction. sled rewrites a whole leaf, up to 16 keys and their values,
/// each time it folds that leaf's updates together; in one tree a snapshot chunk would share the leaf at the
/// log's tail, and be written out again every few appends.
pub struct SledBackend {
    db: sled::Db,
    bulky: sled::Tree,
    mark: CommittedMark,
    committed: Option<u64>,
    flush_failed: FlushFailedFlag,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("SledBackend").finish_non_exhaustive()
    }
}

impl SledBackend {
    /// Opens the tree and the committed mark in `dir`. sled releases its directory lock only when its last IO
    /// thread lets go of the files, shortly after the previous owner dropped it, so a held lock is retried
    /// briefly before it is reported as another process's. The mark's value comes back apart: a damaged mark
    /// is the caller's to report. sled keeps at most `cache_bytes` of the tree in memory. A store of an
    /// earlier version has its `S` keys moved to their own tree here, in one transaction.
    ///
    /// # Errors
    ///
    /// [`BackendError::Locked`] when another process holds `dir` (after up to 2 s of retries);
    /// [`BackendError::Io`] when sled or the mark's file cannot be opened.
    pub fn open(
        dir: &Path,
        cache_bytes: u64,
    ) -> Result<(Self, Result<(), FrameError>), BackendError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match Self::try_open(dir, cache_bytes) {
                Err(BackendError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other?,
            }
        };
        let bulky = db.open_tree(BULKY_TREE).map_err(io)?;
        move_bulky_keys(&db, &bulky)?;
        let (mark, committed) =
            CommittedMark::open(dir).map_err(|e| BackendError::Io(e.to_string()))?;
        // An empty mark means nothing was ever committed through it (a new directory): 0.
        let (committed, damage) = match committed {
            Ok(seq) => (Some(seq.unwrap_or(0)), Ok(())),
            Err(reason) => (None, Err(reason)),
        };
        Ok((
            Self {
                db,
                bulky,
                mark,
                committed,
                flush_failed: FlushFailedFlag::new(dir),
            },
            damage,
        ))
    }

    fn try_open(dir: &Path, cache_bytes: u64) -> Result<sled::Db, BackendError> {
        sled::Config::new()
            .path(dir)
            // We flush explicitly after every batch; a background flusher would only add fsyncs.
            .flush_every_ms(None)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| open_error(dir, e))
    }
}

/// How long `open` waits for a lock that a closing handle of this process may still hold.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn open_error(dir: &Path, error: sled::Error) -> BackendError {
    let text = error.to_string();
    // sled reports a held file lock as an IO error: `could not acquire lock on "<dir>/db": ... WouldBlock`.
    let locked = text.contains("could not acquire lock");
    if locked {
        BackendError::Locked(dir.display().to_string())
    } else {
        BackendError::Io(text)
    }
}

fn io(error: sled::Error) -> BackendError {
    BackendError::Io(error.to_string())
}

/// Moves [`BULKY`] keys a store of an earlier version kept in the main tree into their own, in one
/// transaction.
fn move_bulky_keys(main: &sled::Tree, bulky: &sled::Tree) -> Result<(), BackendError> {
    let (mut from_main, mut into_bulky) = (Vec::new(), Vec::new());
    for entry in main.range([BULKY]..[BULKY + 1]) {
        let (key, value) = entry.map_err(io)?;
        from_main.push(Op::Delete(key.to_vec()));
        into_bulky.push(Op::Put(key.to_vec(), value.to_vec()));
    }
    if from_main.is_empty() {
        return Ok(());
    }
    apply_both(main, &batch(from_main), bulky, &batch(into_bulky))?;
    main.flush().map(drop).map_err(io)
}

/// Applies two batches, one to each tree, atomically.
fn apply_both(
    main: &sled::Tree,
    main_batch: &sled::Batch,
    bulky: &sled::Tree,
    bulky_batch: &sled::Batch,
) -> Result<(), BackendError> {
    use sled::Transactional;
    (main, bulky)
        .transaction(|(main, bulky)| {
            main.apply_batch(main_batch)?;
            bulky.apply_batch(bulky_batch)?;
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(|error| match error {
            sled::transaction::TransactionError::Storage(error) => io(error),
            sled::transaction::TransactionError::Abort(()) => {
                unreachable!("the transaction never aborts")
            }
        })
}

fn batch(ops: Vec<Op>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for op in ops {
        match op {
            Op::Put(key, value) => batch.insert(key, value),
            Op::Delete(key) => batch.remove(key),
        }
    }
    batch
}

/// The tree a key or a range starting at it lives in.
fn is_bulky(key: &[u8]) -> bool {
    key.first() == Some(&BULKY)
}

fn entries<'a>(
    iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
) -> Entries<'a> {
    Box::new(iter.map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io)))
}

impl SledBackend {
    fn tree(&self, key: &[u8]) -> &sled::Tree {
        if is_bulky(key) { &self.bulky } else { &self.db }
    }

    /// The tree of a range, which lies within one of them.
    fn range_tree(&self, from: &[u8], to: &[u8]) -> &sled::Tree {
        debug_assert!(
            is_bulky(from) || to <= [BULKY].as_slice(),
            "a range of the main tree stops before the bulky keys"
        );
        self.tree(from)
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.tree(key).get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        entries(self.range_tree(from, to).range(from.to_vec()..to.to_vec()))
    }

    fn range_rev(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        entries(
            self.range_tree(from, to)
                .range(from.to_vec()..to.to_vec())
                .rev(),
        )
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        let (bulky, main): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| is_bulky(op.key()));
        match (main.is_empty(), bulky.is_empty()) {
            (false, false) => apply_both(&self.db, &batch(main), &self.bulky, &batch(bulky)),
            (true, false) => self.bulky.apply_batch(batch(bulky)).map_err(io),
            _ => self.db.apply_batch(batch(main)).map_err(io),
        }
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.db.flush().map(drop).map_err(io)
    }

    fn committed(&self) -> Option<u64> {
        self.committed
    }

    fn set_committed(&self, seq: u64) -> Result<(), BackendError> {
        self.mark
            .record(seq)
            .map_err(|e| BackendError::Io(e.to_string()))
    }

    fn set_flush_failed(&self) -> Result<(), BackendError> {
        self.flush_failed
            .set()
            .map_err(|e| BackendError::Io(e.to_string()))
    }

    fn flush_failed_before(&self) -> bool {
        self.flush_failed.is_set()
    }

    fn clear_flush_failed(&self) -> Result<(), BackendError> {
        self.flush_failed
            .clear()
            .map_err(|e| BackendError::Io(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulky_keys_an_earlier_version_kept_in_the_main_tree_move_to_their_own_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(b"Schunk", b"a snapshot".as_slice()).unwrap();
            db.insert(b"L1", b"a record".as_slice()).unwrap();
            db.flush().unwrap();
        }
        let (backend, _) = SledBackend::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(backend.get(b"Schunk").unwrap().unwrap(), b"a snapshot");
        assert_eq!(backend.get(b"L1").unwrap().unwrap(), b"a record");
        assert!(
            backend.db.get(b"Schunk").unwrap().is_none(),
            "gone from the main tree"
        );
        let snapshot: Vec<_> = backend.range(b"S", b"T").map(Result::unwrap).collect();
        assert_eq!(snapshot, vec![(b"Schunk".to_vec(), b"a snapshot".to_vec())]);

        // A write to both trees is one batch.
        let ops = vec![
            Op::Delete(b"Schunk".to_vec()),
            Op::Put(b"Mmark".to_vec(), b"1".to_vec()),
        ];
        backend.write(ops).unwrap();
        assert!(backend.get(b"Schunk").unwrap().is_none());
        assert_eq!(backend.get(b"Mmark").unwrap().unwrap(), b"1");
    }
}
