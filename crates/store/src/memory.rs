//! An in-memory backend that fails the way a disk does, for tests and the simulator.
//!
//! It keeps two maps: what reads see (every write so far) and what a crash leaves (the writes up to the last
//! good flush). Faults are armed by hand: the next writes or flushes fail, and [`MemoryBackend::crash`] throws
//! away what was never flushed, keeps part of it, or tears the last write. A failed flush behaves as Linux's
//! page cache does ("fsyncgate"): the writes it should have made durable stay readable until the crash, but are
//! lost at it, even if a later flush succeeds. Clones share one disk, so a test keeps a handle to damage what
//! the store wrote.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{Backend, BackendError, Entries, Entry, Op};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// What a crash keeps of the writes that were not flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Nothing: only what was flushed survives.
    LoseUnflushed,
    /// The oldest `n` unflushed writes survive whole (the page cache reached the disk in order).
    KeepUnflushed(usize),
    /// Every unflushed write survives, but the last one's first value is cut in half mid-record.
    TearLast,
}

#[derive(Debug, Default)]
struct Disk {
    current: Map,
    durable: Map,
    /// Writes since the last good flush, oldest first.
    unflushed: Vec<Vec<Op>>,
    /// Kept outside the map, like the committed-mark file beside sled's directory; 0 before the first commit.
    committed: u64,
    fail_writes: u32,
    fail_flushes: u32,
    /// The process died in a flush: every call fails until `crash` brings the disk back.
    down: bool,
    die_at_flush: bool,
    writes: u64,
    flushes: u64,
}

/// Counters of what the backend was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub writes: u64,
    pub flushes: u64,
    /// Writes not yet made durable by a flush.
    pub unflushed: usize,
}

/// See the module docs. `MemoryBackend::default()` is an empty disk with no fault armed.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    disk: Arc<Mutex<Disk>>,
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
    pub fn new() -> Self {
        Self::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // The disk's invariants hold between calls, so a panic elsewhere leaves nothing half-done here.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The process dies: reads now see what the disk kept. Armed faults are cleared.
    pub fn crash(&self, how: Crash) {
        let mut disk = self.disk();
        let mut kept = std::mem::take(&mut disk.unflushed);
        match how {
            Crash::LoseUnflushed => kept.clear(),
            Crash::KeepUnflushed(n) => kept.truncate(n),
            Crash::TearLast => {
                if let Some(Op::Put(_, value)) = kept.last_mut().and_then(|ops| ops.first_mut()) {
                    value.truncate(value.len() / 2);
                }
            }
        }
        let mut after = disk.durable.clone();
        for ops in &kept {
            apply(&mut after, ops);
        }
        disk.current = after.clone();
        disk.durable = after;
        disk.fail_writes = 0;
        disk.fail_flushes = 0;
        disk.down = false;
        disk.die_at_flush = false;
    }

    /// Changes one stored value in place, as bit rot would; `false` when the key is absent.
    pub fn damage(&self, key: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut disk = self.disk();
        let Disk {
            current, durable, ..
        } = &mut *disk;
        match (current.get_mut(key), durable.get_mut(key)) {
            (Some(now), durable) => {
                change(now);
                if let Some(durable) = durable {
                    durable.clone_from(now);
                }
                true
            }
            _ => false,
        }
    }

    /// Removes one stored key, as a lost record would; `false` when it is absent.
    pub fn delete(&self, key: &[u8]) -> bool {
        let mut disk = self.disk();
        disk.durable.remove(key);
        disk.current.remove(key).is_some()
    }

    pub fn stats(&self) -> MemoryStats {
        let disk = self.disk();
        MemoryStats {
            writes: disk.writes,
            flushes: disk.flushes,
            unflushed: disk.unflushed.len(),
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
        disk.unflushed.push(ops);
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        let mut disk = self.disk();
        if disk.down || disk.die_at_flush {
            disk.down = true;
            return Err(down());
        }
        disk.flushes += 1;
        let unflushed = std::mem::take(&mut disk.unflushed);
        if disk.fail_flushes > 0 {
            disk.fail_flushes -= 1;
            // The pages are dropped: readable now, gone after a crash.
            return Err(BackendError::Io("injected flush failure".into()));
        }
        for ops in &unflushed {
            apply(&mut disk.durable, ops);
        }
        Ok(())
    }

    fn committed(&self) -> Option<u64> {
        Some(self.disk().committed)
    }

    fn set_committed(&self, seq: u64) -> Result<(), BackendError> {
        self.disk().committed = seq;
        Ok(())
    }
}
