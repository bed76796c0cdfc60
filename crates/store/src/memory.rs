//! An in-memory backend that fails the way a disk does, for tests and the simulator: see [`MemoryBackend`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Backend, BackendError, Entries, Entry, Op};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// How many earlier values of the mark a crash can set it back to.
const MARKS_KEPT: usize = 4;

/// What a crash keeps of the writes that were not flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Nothing: only what was flushed survives.
    LoseUnflushed,
    /// The writes whose flush failed and the oldest `n` unflushed ones survive whole (the page cache reached
    /// the disk in order).
    KeepUnflushed(usize),
    /// Every write survives, but the last one's first value is cut in half mid-record.
    TearLast,
}

/// Where a write stands with respect to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A flush wrote it.
    Durable,
    /// In the page cache; a flush will write it.
    Unflushed,
    /// Its flush failed: in the page cache, marked clean, never written by a later flush.
    Limbo,
}

#[derive(Debug, Default)]
struct Disk {
    /// What reads see: every write, in order (the page cache).
    current: Map,
    /// Every durable write before the first write that is not.
    base: Map,
    /// Every write from the first one that is not durable on, in order, so a crash keeps them in order.
    tail: Vec<(Vec<Op>, Stage)>,
    /// Kept outside the map, like the committed-mark file beside sled's directory; 0 before the first commit.
    committed: u64,
    /// The mark's earlier values, newest last, for a crash to set it back to.
    marks: Vec<u64>,
    /// The flag a failed flush leaves; it survives crashes (it is flushed on its own).
    flush_failed: bool,
    fail_writes: u32,
    fail_flushes: u32,
    /// The process died in a flush: every call fails until `crash` or `restart`.
    down: bool,
    die_at_flush: bool,
    writes: u64,
    flushes: u64,
}

impl Disk {
    /// Folds the leading durable writes of the tail into the base.
    fn settle(&mut self) {
        let settled = self
            .tail
            .iter()
            .take_while(|(_, stage)| *stage == Stage::Durable)
            .count();
        for (ops, _) in self.tail.drain(..settled) {
            apply(&mut self.base, &ops);
        }
    }

    fn clear_faults(&mut self) {
        self.fail_writes = 0;
        self.fail_flushes = 0;
        self.down = false;
        self.die_at_flush = false;
    }
}

/// Counters of what the backend was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Calls to `write` while the process was up, injected failures included.
    pub writes: u64,
    /// Calls to `flush` while the process was up, injected failures included.
    pub flushes: u64,
    /// Writes not yet made durable by a flush.
    pub unflushed: usize,
}

/// A disk in memory that fails on request, for tests and the simulator: hand a clone to the store (or to the
/// engine's `Config::with_backend`) and keep one to arm faults, crash and look.
///
/// It keeps two maps: what reads see (every write so far, as the page cache has it) and what a machine crash
/// leaves (the writes up to the last good flush). Faults are armed by hand: the next writes or flushes fail,
/// the process dies in a flush, [`MemoryBackend::crash`] (a machine crash) throws away what was never flushed,
/// keeps part of it, or tears the last write, and [`MemoryBackend::restart`] (a process restart) keeps the page
/// cache. A failed flush behaves as Linux's page cache does ("fsyncgate"): the writes it should have made
/// durable stay readable, across a process restart too, but a later flush that succeeds does not write them; a
/// crash may keep them or not. The committed mark is a file written without a flush: a crash may set it back.
/// Clones share one disk. `MemoryBackend::default()` is an empty disk with no fault armed.
///
/// Every value is copied in and out, and nothing is ever freed but by deletes: it is for tests, not for data
/// that must fit in memory for long.
///
/// ```
/// use cohost_store::{MemoryBackend, Store, StoreError};
///
/// let disk = MemoryBackend::new();
/// let store = Store::with_backend(Box::new(disk.clone())).unwrap();
/// disk.fail_flushes(1);
/// // The failed flush is fail-stop: this cursor is refused, and so is every write after it.
/// assert!(matches!(store.set_cursor("relay", 0), Err(StoreError::FlushFailed { .. })));
/// assert!(store.flush_failure().is_some());
///
/// // A restart opens the store again and recovers from what the disk really holds.
/// disk.restart();
/// let store = Store::with_backend(Box::new(disk.clone())).unwrap();
/// assert!(store.opened().after_flush_failure);
/// store.set_cursor("relay", 0).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct MemoryBackend {
    disk: Arc<Mutex<Disk>>,
    before_write: Arc<Mutex<Option<WriteHook>>>,
}

type WriteHook = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("disk", &self.disk)
            .finish_non_exhaustive()
    }
}

fn apply(map: &mut Map, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Put(key, value) => map.insert(key.clone(), value.clone()),
            Op::Delete(key) => map.remove(key),
        };
    }
}

impl MemoryBackend {
    /// An empty disk with no fault armed.
    pub fn new() -> Self {
        Self::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // The disk's invariants hold between calls, so a panic elsewhere leaves nothing half-done here.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `hook` at the start of every write, outside the disk's lock: a test makes a write wait (to hold
    /// the sequencer inside a batch) or panic (a broken invariant, as far as the caller can tell).
    pub fn before_write(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.before_write.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// The next `n` writes fail, changing nothing.
    pub fn fail_writes(&self, n: u32) {
        self.disk().fail_writes = n;
    }

    /// The next `n` flushes fail; what they should have made durable is lost at the next crash.
    pub fn fail_flushes(&self, n: u32) {
        self.disk().fail_flushes = n;
    }

    /// The process dies in the middle of the next flush, before anything reached the disk: the flush fails,
    /// and so does every call after it, until [`MemoryBackend::crash`] says what the disk kept.
    pub fn die_at_next_flush(&self) {
        self.disk().die_at_flush = true;
    }

    /// Whether the process died in a flush and the disk awaits `crash`.
    pub fn is_down(&self) -> bool {
        self.disk().down
    }

    /// The process dies and starts again, the machine does not: the page cache, and so everything readable,
    /// stays as it was; what was not durable is still not. Armed faults are cleared.
    pub fn restart(&self) {
        self.disk().clear_faults();
    }

    /// The mark file lost its last `n` writes (it is never flushed): it reads an earlier seq, or 0.
    pub fn set_mark_back(&self, n: usize) {
        let mut disk = self.disk();
        let keep = disk.marks.len().saturating_sub(n);
        disk.marks.truncate(keep);
        disk.committed = disk.marks.last().copied().unwrap_or(0);
    }

    /// The machine crashes: reads now see what the disk kept, every kept write in its order. Writes whose
    /// flush failed are kept unless `LoseUnflushed`. Armed faults are cleared.
    pub fn crash(&self, how: Crash) {
        let mut disk = self.disk();
        let mut unflushed_seen = 0;
        let mut kept: Vec<(Vec<Op>, Stage)> = Vec::new();
        for (ops, stage) in std::mem::take(&mut disk.tail) {
            let keep = match (stage, how) {
                (Stage::Durable, _) => true,
                (_, Crash::LoseUnflushed) => false,
                (Stage::Limbo, _) | (Stage::Unflushed, Crash::TearLast) => true,
                (Stage::Unflushed, Crash::KeepUnflushed(n)) => {
                    unflushed_seen += 1;
                    unflushed_seen <= n
                }
            };
            if keep {
                kept.push((ops, stage));
            }
        }
        if how == Crash::TearLast
            && let Some((ops, _)) = kept
                .iter_mut()
                .rev()
                .find(|(_, stage)| *stage != Stage::Durable)
            && let Some(Op::Put(_, value)) = ops.first_mut()
        {
            value.truncate(value.len() / 2);
        }
        let mut after = std::mem::take(&mut disk.base);
        for (ops, _) in &kept {
            apply(&mut after, ops);
        }
        disk.current = after.clone();
        disk.base = after;
        disk.clear_faults();
    }

    /// Changes one stored value in place, as bit rot would; `false` when the key is absent. Meant for a disk
    /// at rest: what is not durable yet is not damaged.
    pub fn damage(&self, key: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut disk = self.disk();
        let Some(value) = disk.current.get_mut(key) else {
            return false;
        };
        change(value);
        let value = value.clone();
        if let Some(stored) = disk.base.get_mut(key) {
            *stored = value;
        }
        true
    }

    /// Removes one stored key, as a lost record would; `false` when it is absent. Meant for a disk at rest.
    pub fn delete(&self, key: &[u8]) -> bool {
        let mut disk = self.disk();
        disk.base.remove(key);
        disk.current.remove(key).is_some()
    }

    /// What the backend was asked to do so far, and what a crash now would lose.
    pub fn stats(&self) -> MemoryStats {
        let disk = self.disk();
        MemoryStats {
            writes: disk.writes,
            flushes: disk.flushes,
            unflushed: disk
                .tail
                .iter()
                .filter(|(_, stage)| *stage == Stage::Unflushed)
                .count(),
        }
    }

    fn entries_in(&self, from: &[u8], to: &[u8]) -> Vec<Result<Entry, BackendError>> {
        let disk = self.disk();
        if disk.down {
            return vec![Err(down())];
        }
        if from >= to {
            return Vec::new();
        }
        disk.current
            .range(from.to_vec()..to.to_vec())
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect()
    }
}

fn down() -> BackendError {
    BackendError::Io("the process died".into())
}

impl Backend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let disk = self.disk();
        if disk.down {
            return Err(down());
        }
        Ok(disk.current.get(key).cloned())
    }

    fn range(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        Box::new(self.entries_in(from, to).into_iter())
    }

    fn range_rev(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        Box::new(self.entries_in(from, to).into_iter().rev())
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        let hook = self
            .before_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
        let mut disk = self.disk();
        if disk.down {
            return Err(down());
        }
        disk.writes += 1;
        if disk.fail_writes > 0 {
            disk.fail_writes -= 1;
            return Err(BackendError::Io("injected write failure".into()));
        }
        apply(&mut disk.current, &ops);
        disk.tail.push((ops, Stage::Unflushed));
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        let mut disk = self.disk();
        if disk.down || disk.die_at_flush {
            disk.down = true;
            return Err(down());
        }
        disk.flushes += 1;
        let (from, to) = if disk.fail_flushes > 0 {
            disk.fail_flushes -= 1;
            (Stage::Unflushed, Stage::Limbo)
        } else {
            (Stage::Unflushed, Stage::Durable)
        };
        for (_, stage) in disk.tail.iter_mut().filter(|(_, stage)| *stage == from) {
            *stage = to;
        }
        if to == Stage::Limbo {
            // The pages are marked clean without being written: readable now, never flushed again.
            return Err(BackendError::Io("injected flush failure".into()));
        }
        disk.settle();
        Ok(())
    }

    fn committed(&self) -> Option<u64> {
        Some(self.disk().committed)
    }

    fn set_committed(&self, seq: u64) -> Result<(), BackendError> {
        let mut disk = self.disk();
        disk.committed = seq;
        disk.marks.push(seq);
        if disk.marks.len() > MARKS_KEPT {
            disk.marks.remove(0);
        }
        Ok(())
    }

    fn writes_can_tear(&self) -> bool {
        true
    }

    fn set_flush_failed(&self) -> Result<(), BackendError> {
        self.disk().flush_failed = true;
        Ok(())
    }

    fn flush_failed_before(&self) -> bool {
        self.disk().flush_failed
    }

    fn clear_flush_failed(&self) -> Result<(), BackendError> {
        self.disk().flush_failed = false;
        Ok(())
    }
}
