use std::path::PathBuf;
use std::sync::Arc;

use cohost_core::Policy;

use crate::clock::{Clock, SystemClock};

/// How an engine runs. `Config::new(dir)` gives the defaults.
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub policy: Policy,
    pub clock: Arc<dyn Clock>,
    /// Commands waiting for the sequencer; past this, `execute` fails at once with `unavailable`.
    pub queue_max: usize,
    /// Commands decided per group commit. 1 gives one flush per command (the naive baseline).
    pub batch_max: usize,
    /// Events between room snapshots.
    pub snapshot_every_events: u64,
    /// How long a `command_id` is remembered.
    pub idempotency_ttl_ms: u64,
    /// The most `command_id`s remembered; the oldest are forgotten first.
    pub idempotency_max: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("policy", &self.policy)
            .field("queue_max", &self.queue_max)
            .field("batch_max", &self.batch_max)
            .field("snapshot_every_events", &self.snapshot_every_events)
            .field("idempotency_ttl_ms", &self.idempotency_ttl_ms)
            .field("idempotency_max", &self.idempotency_max)
            .finish_non_exhaustive()
    }
}

/// The largest batch the sequencer takes, whatever the config says.
pub const BATCH_MAX_LIMIT: usize = 1_024;

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            policy: Policy::default(),
            clock: Arc::new(SystemClock),
            queue_max: 65_536,
            batch_max: BATCH_MAX_LIMIT,
            snapshot_every_events: 1_000_000,
            idempotency_ttl_ms: 24 * 3_600_000,
            idempotency_max: 1_000_000,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}
