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
    flush_us_buckets: [AtomicU64; FLUSH_BUCKETS_US.len()],
}

/// Upper bounds (µs) of the write-latency histogram's buckets; slower batches count only in the total.
pub const FLUSH_BUCKETS_US: [u64; 9] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000];

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Commands answered with a reply (retries of remembered ones included).
    pub commands_ok: u64,
    /// Commands the sequencer answered with an error, whatever it was (a rejection, `unavailable`...); one
    /// `execute` refused for a full queue counts only in `queue_full`.
    pub commands_rejected: u64,
    /// Commands refused at once because the queue was full ([`crate::Error::QueueFull`]).
    pub queue_full: u64,
    /// Durable writes (group commits).
    pub batches: u64,
    /// Events those batches appended.
    pub events: u64,
    /// Commands decided in those batches.
    pub batch_commands: u64,
    /// Time spent writing and flushing those batches, in µs: divided by `batches`, the mean.
    pub flush_us_total: u64,
    /// The slowest of those writes, in µs.
    pub flush_us_max: u64,
    /// `(upper bound µs, batches in this bucket and not a lower one)`.
    pub flush_us_buckets: [(u64, u64); FLUSH_BUCKETS_US.len()],
}

impl Default for StatsSnapshot {
    /// No counts, in the buckets every engine uses.
    fn default() -> Self {
        Stats::default().snapshot()
    }
}

impl StatsSnapshot {
    /// Adds another engine's counters to these (a cluster node's partitions, one engine each).
    pub fn add(&mut self, other: &StatsSnapshot) {
        self.commands_ok += other.commands_ok;
        self.commands_rejected += other.commands_rejected;
        self.queue_full += other.queue_full;
        self.batches += other.batches;
        self.events += other.events;
        self.batch_commands += other.batch_commands;
        self.flush_us_total += other.flush_us_total;
        self.flush_us_max = self.flush_us_max.max(other.flush_us_max);
        for (mine, theirs) in self.flush_us_buckets.iter_mut().zip(other.flush_us_buckets) {
            assert_eq!(mine.0, theirs.0, "the same buckets in every engine");
            mine.1 += theirs.1;
        }
    }
}

impl Stats {
    pub fn record_batch(&self, events: usize, commands: usize, write: Duration) {
        let us = write.as_micros() as u64;
        self.batches.fetch_add(1, Relaxed);
        self.events.fetch_add(events as u64, Relaxed);
        self.batch_commands.fetch_add(commands as u64, Relaxed);
        self.flush_us_total.fetch_add(us, Relaxed);
        self.flush_us_max.fetch_max(us, Relaxed);
        if let Some(bucket) = FLUSH_BUCKETS_US.iter().position(|&le| us <= le) {
            self.flush_us_buckets[bucket].fetch_add(1, Relaxed);
        }
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
            flush_us_buckets: std::array::from_fn(|i| {
                (FLUSH_BUCKETS_US[i], self.flush_us_buckets[i].load(Relaxed))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshots_add_up_counter_by_counter() {
        let stats = super::Stats::default();
        stats.record_batch(3, 2, std::time::Duration::from_micros(150));
        let one = stats.snapshot();
        let mut sum = super::StatsSnapshot::default();
        sum.add(&one);
        sum.add(&one);
        assert_eq!((sum.batches, sum.events, sum.batch_commands), (2, 6, 4));
        assert_eq!(sum.flush_us_max, one.flush_us_max);
        let counted: u64 = sum.flush_us_buckets.iter().map(|(_, n)| n).sum();
        assert_eq!(counted, 2);
    }
}
