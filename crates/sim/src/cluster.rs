//! Cluster mode in the simulator: a partition log shared by every node that takes the partition, standing for
//! the JetStream subject, with its fence (an append names the log length it expects, as
//! `Nats-Expected-Last-Subject-Sequence` does), and the faults the real one has: an append refused outright, an
//! ack lost with the batch committed or not, and another writer claiming the partition. A node's local store
//! is a cache: every death or restart is a takeover on a fresh disk, replaying the log and appending a marker.
//!
//! A lost ack here is one the writer could not resolve (NATS unreachable): the engine fails-stop, answers its
//! batch `unavailable`, and the next owner finds out from the log whether the batch landed.

use std::sync::{Arc, Mutex};

use cohost_engine::sequencer::SequencerConfig;
use cohost_engine::{Exported, recover};
use cohost_store::{MemoryBackend, ReplicateError, Replicator, Store};

/// What the next append does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Append {
    #[default]
    Take,
    /// Refused outright (too large): nothing kept.
    Refuse,
    /// The ack never comes and cannot be resolved; `committed` says whether the log holds the batch.
    LoseAck { committed: bool },
}

/// One message of the log: a batch record, or an owner's marker.
#[derive(Debug, Clone)]
enum Entry {
    Batch(Vec<u8>),
    Marker,
}

#[derive(Debug, Default)]
struct Log {
    entries: Vec<Entry>,
    /// The last base an owner saved, with the log's length when its snapshot was taken.
    base: Option<Exported>,
    next: Append,
    /// Appends refused because another writer had appended.
    fenced: u64,
}

/// The partition log, shared by the nodes.
#[derive(Debug, Clone, Default)]
pub struct SharedLog(Arc<Mutex<Log>>);

impl SharedLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms what the next append does.
    pub fn arm(&self, next: Append) {
        self.lock().next = next;
    }

    /// Another node claims the partition: its marker moves the tail past what the owner expects.
    pub fn claim(&self) {
        self.lock().entries.push(Entry::Marker);
    }

    /// Keeps an owner's base for the next takeover, as the snapshot bucket does.
    pub fn save_base(&self, exported: Exported) {
        self.lock().base = Some(exported);
    }

    /// How many appends the fence refused.
    pub fn fenced(&self) -> u64 {
        self.lock().fenced
    }

    /// Takes the partition over on a fresh disk: copies the last base saved (when `from_base`; a taker that
    /// cannot read it replays the whole log) and every batch after it into a new local store, appends this
    /// owner's marker right after the tail it read, and recovers the engine from the store.
    pub fn take_over<T>(
        &self,
        now_ms: u64,
        config: SequencerConfig,
        from_base: bool,
    ) -> (MemoryBackend, Store, cohost_engine::Recovered<T>) {
        let disk = MemoryBackend::new();
        let mut store = Store::with_backend(Box::new(disk.clone())).expect("a fresh store opens");
        let expected = {
            let mut log = self.lock();
            let mut after = 0;
            if let Some(exported) = log.base.as_ref().filter(|_| from_base) {
                store.install_base(&exported.base).expect("a base installs");
                after = exported.position as usize;
            }
            for entry in &log.entries[after..] {
                if let Entry::Batch(record) = entry {
                    store
                        .append_replicated(record)
                        .expect("the log's batches continue each other");
                }
            }
            log.entries.push(Entry::Marker);
            log.entries.len()
        };
        store
            .flush_replicated()
            .expect("a fresh disk with no fault armed flushes");
        store.replicate_to(Arc::new(Writer {
            log: self.clone(),
            expected: Mutex::new(expected),
        }));
        let recovered = recover(&store, now_ms, config).expect("the engine recovers from the log");
        (disk, store, recovered)
    }
}

/// One owner's appends: each expects the log's length as this owner last left it.
#[derive(Debug)]
struct Writer {
    log: SharedLog,
    expected: Mutex<usize>,
}

impl Replicator for Writer {
    fn replicate(&self, _first_seq: u64, record: &[u8]) -> Result<(), ReplicateError> {
        let mut log = self.log.lock();
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        if log.entries.len() != *expected {
            log.fenced += 1;
            return Err(ReplicateError::Stopped(
                "another writer appended: this one is deposed".into(),
            ));
        }
        match std::mem::take(&mut log.next) {
            Append::Take => {
                log.entries.push(Entry::Batch(record.to_vec()));
                *expected = log.entries.len();
                Ok(())
            }
            Append::Refuse => Err(ReplicateError::Refused("the batch is too large".into())),
            Append::LoseAck { committed } => {
                if committed {
                    log.entries.push(Entry::Batch(record.to_vec()));
                }
                Err(ReplicateError::Stopped(
                    "the ack was lost, unresolved".into(),
                ))
            }
        }
    }

    /// The log's length as this owner last left it: a snapshot taken now is continued by what comes after.
    fn position(&self) -> Option<u64> {
        Some(*self.expected.lock().unwrap_or_else(|e| e.into_inner()) as u64)
    }
}
