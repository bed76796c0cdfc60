use std::path::PathBuf;
use std::sync::Arc;

use cohost_core::Policy;
use cohost_store::Backend;

use crate::clock::{Clock, SystemClock};
use crate::sequencer::{BATCH_MAX_LIMIT, SequencerConfig};

/// How an engine runs. `Config::new(dir)` gives the defaults; set fields or use the `with_` methods to
/// change them. Values out of range are clamped where the engine reads them, never refused.
#[derive(Clone)]
pub struct Config {
    /// Where sled keeps the log, created if missing; one directory serves one process. Unused with
    /// [`Config::backend`].
    pub data_dir: PathBuf,
    /// The deployment's rules settings: invitation TTL, default seat count, quotas across rooms.
    pub policy: Policy,
    /// Where the engine reads the time: decisions, expiry and retention. [`SystemClock`] by default.
    pub clock: Arc<dyn Clock>,
    /// Commands waiting for the sequencer; past this, `execute` fails at once with `unavailable`. Default
    /// 65,536; at least 1.
    pub queue_max: usize,
    /// Commands decided per group commit, 1 to [`BATCH_MAX_LIMIT`] (default the limit). 1 gives one flush per
    /// command (the naive baseline).
    pub batch_max: usize,
    /// Events between room snapshots (default 1,000,000): fewer make opening replay less and cost a snapshot
    /// write (every room in memory) more often.
    pub snapshot_every_events: u64,
    /// How long a `command_id` is remembered, in ms (default 24 h).
    pub idempotency_ttl_ms: u64,
    /// The most `command_id`s remembered; the oldest are forgotten first (default 1,000,000).
    pub idempotency_max: usize,
    /// How long an ended room stays in memory; then its final state is archived in the store and it leaves
    /// (reads and commands load it back on demand). Default 10 minutes.
    pub ended_retention_ms: u64,
    /// How long a room may stay idle, never live, from its creation; then the system ends it with reason
    /// `never_live`. Default 0, never: an embedder opts in (cohostd sets a day), since on the first opening
    /// with it set every room idle longer is ended at once.
    pub idle_room_ms: u64,
    /// How long a live room's host may be away, as `presence` reports say, before the system stops the room
    /// with reason `host_absent`. Default 0 (never): only a deployment that reports presence (LiveKit webhooks)
    /// knows when a host is away.
    pub host_absent_ms: u64,
    /// Experimental, not for production yet: how long the log keeps the events of an ended room, in ms; after
    /// each snapshot, the log's prefix that only rooms ended longer ago hold is removed. Default 0: keep
    /// everything. A store whose log no longer starts at seq 1 cannot rebuild its snapshot, so a failed flush,
    /// an unreadable snapshot or a snapshot layout change then leaves it unable to open; see ARCHITECTURE.md,
    /// "Day-2 operations".
    #[doc(hidden)]
    pub retain_ended_ms: u64,
    /// The most bytes sled keeps of the store in memory (its page cache); default
    /// [`STORE_CACHE_BYTES_DEFAULT`](cohost_store::STORE_CACHE_BYTES_DEFAULT).
    pub store_cache_bytes: u64,
    /// Where the log lives instead of sled in `data_dir`: an in-memory [`cohost_store::MemoryBackend`] with
    /// faults for tests, or any other [`Backend`].
    pub backend: Option<Arc<dyn Backend>>,
    /// Where every batch is made durable before the local store, in cluster mode: the partition's log. The
    /// local store is then a cache of it, and the engine stops for good once the replicator stops taking
    /// batches (another node took the partition).
    pub replicator: Option<Arc<dyn cohost_store::Replicator>>,
    /// The erased users, shared by every engine of a cluster node (fed from the cluster's bucket, since a
    /// partition's store does not carry them); `None` for an engine of its own, which keeps them in its store.
    pub erased_users: Option<Arc<crate::ErasedUsers>>,
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
            .field("ended_retention_ms", &self.ended_retention_ms)
            .field("idle_room_ms", &self.idle_room_ms)
            .field("host_absent_ms", &self.host_absent_ms)
            .field("retain_ended_ms", &self.retain_ended_ms)
            .field("store_cache_bytes", &self.store_cache_bytes)
            .field("backend", &self.backend.as_ref().map(|_| "injected"))
            .field("replicator", &self.replicator.as_ref().map(|_| "set"))
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults, with the log in sled under `data_dir`: the system clock, the default policy, and each
    /// field's documented default. Does no IO: [`Engine::open`](crate::Engine::open) creates the directory.
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
            ended_retention_ms: crate::sequencer::ENDED_RETENTION_MS_DEFAULT,
            idle_room_ms: 0,
            host_absent_ms: 0,
            retain_ended_ms: 0,
            store_cache_bytes: cohost_store::STORE_CACHE_BYTES_DEFAULT,
            backend: None,
            replicator: None,
            erased_users: None,
        }
    }

    /// The log in `backend` rather than in sled under `data_dir`.
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    pub(crate) fn sequencer(&self) -> SequencerConfig {
        SequencerConfig {
            policy: self.policy,
            batch_max: self.batch_max.clamp(1, BATCH_MAX_LIMIT),
            // The channel holds the queue; the sequencer gets at most a turn's worth of it at a time.
            queue_max: self.queue_max.saturating_add(BATCH_MAX_LIMIT + 1),
            snapshot_every_events: self.snapshot_every_events.max(1),
            idempotency_ttl_ms: self.idempotency_ttl_ms,
            idempotency_max: self.idempotency_max,
            ended_retention_ms: self.ended_retention_ms,
            idle_room_ms: self.idle_room_ms,
            host_absent_ms: self.host_absent_ms,
            // Everything removed is older than any remembered command id.
            retain_ended_ms: match self.retain_ended_ms {
                0 => 0,
                set => set.max(self.idempotency_ttl_ms),
            },
            trace: false,
        }
    }

    /// The engine reads the time from `clock`: a [`ManualClock`](crate::ManualClock) makes expiry a test's
    /// to drive.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The rules run under `policy` (TTLs, seat count, quotas).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }
}
