//! Counters the sequencer keeps for metrics: cheap atomics, read without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cohost_proto::Reply;

use crate::Error;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    commands_ok: AtomicU64,
    commands_rejected: AtomicU64,
    queue_full: AtomicU64,
    batches: AtomicU64,
    events: AtomicU64,
    batch_commands: AtomicU64,
    flush_us_total: AtomicU64,
    flush_us_max: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub commands_ok: u64,
    pub commands_rejected: u64,
    pub queue_full: u64,
    /// Durable writes (group commits).
    pub batches: u64,
    pub events: u64,
    /// Commands decided in those batches.
    pub batch_commands: u64,
    pub flush_us_total: u64,
    pub flush_us_max: u64,
}

impl Stats {
    pub fn record_batch(&self, events: usize, commands: usize, write: Duration) {
        let us = write.as_micros() as u64;
        self.batches.fetch_add(1, Relaxed);
        self.events.fetch_add(events as u64, Relaxed);
        self.batch_commands.fetch_add(commands as u64, Relaxed);
        self.flush_us_total.fetch_add(us, Relaxed);
        self.flush_us_max.fetch_max(us, Relaxed);
    }

    pub fn record_outcome(&self, outcome: &Result<Reply, Error>) {
        let counter = if outcome.is_ok() {
            &self.commands_ok
        } else {
            &self.commands_rejected
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn record_queue_full(&self) {
        self.queue_full.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            commands_ok: self.commands_ok.load(Relaxed),
            commands_rejected: self.commands_rejected.load(Relaxed),
            queue_full: self.queue_full.load(Relaxed),
            batches: self.batches.load(Relaxed),
            events: self.events.load(Relaxed),
            batch_commands: self.batch_commands.load(Relaxed),
            flush_us_total: self.flush_us_total.load(Relaxed),
            flush_us_max: self.flush_us_max.load(Relaxed),
        }
    }
}
