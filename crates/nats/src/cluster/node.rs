//! A cluster node: it beats its heart, takes the partitions it is preferred for among the live nodes, renews
//! their leases, and gives up those it lost or should hand off. Each owned partition is an engine
//! (`owner::take_over`); [`Node::engine_for`] finds the one for a room while its lease is valid.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cohost_engine::{Config, Engine, FollowerStatus, Health};
use cohost_proto::{RoomId, partition};
use futures::StreamExt;
use futures::future::BoxFuture;

use super::cursor::{CursorBook, CursorError, Cursors};
use super::fixed::{Fixed, JoinError, join};
use super::lease::{Lease, LeaseConfig, LeaseError, Leases, preferred};
use super::log::{LogConfig, LogError, PartitionLog};
use super::owner::take_over;
use super::snapshot::{PartitionSnapshot, SnapshotBook};

/// Takeovers in flight at once: enough that a node starting with many partitions to take serves them in a few
/// seconds.
const TAKES_AT_ONCE: usize = 8;
/// Renewals in flight at once in one turn.
const RENEWALS_AT_ONCE: usize = 64;
/// Snapshot saves in flight at once: each reads a partition's whole state.
const SNAPSHOTS_AT_ONCE: usize = 4;
/// The longest a snapshot save may take; past it, it is tried again next turn.
const SNAPSHOT_SAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A partition this node writes.
#[derive(Debug, Clone)]
struct Owned {
    engine: Engine,
    lease: Lease,
    following: Arc<Mutex<Option<Following>>>,
    /// The followers' cursors as last saved in the bucket.
    saved: Cursors,
    /// The seq of the partition's snapshot last saved in the bucket (or taken over from).
    exported: u64,
}

/// The engine settings of a partition whose local store is in the given directory.
pub type EngineConfig = Arc<dyn Fn(PathBuf) -> Config + Send + Sync>;

/// What follows a partition's log while this node owns it (the NATS relay, the LiveKit revoker), started once
/// the partition is taken, from the cursors its last owner saved.
pub struct Following {
    /// Their statuses, for `/healthz` and `/metrics`.
    pub statuses: Vec<Arc<FollowerStatus>>,
    /// The cursors they keep in the partition's store (`Engine::set_cursor` names). A partition snapshot is
    /// saved only once each of them, as last saved in the cursor bucket, has reached it: the next owner starts
    /// from the snapshot and from those cursors, and the log it copies begins after the snapshot, so a cursor
    /// behind it would ask for events it no longer has.
    pub sinks: Vec<String>,
    /// Stops them after what they have in flight, when awaited; dropped, it stops them without waiting.
    pub stop: BoxFuture<'static, ()>,
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let names: Vec<_> = self.statuses.iter().map(|s| s.snapshot().name).collect();
        f.debug_struct("Following").field("names", &names).finish()
    }
}

/// Starts what follows a partition (its number, its engine); an error gives the partition up, to be taken
/// again.
pub type StartFollowing =
    Arc<dyn Fn(u32, Engine) -> BoxFuture<'static, Result<Following, String>> + Send + Sync>;

/// What a node needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    /// The cluster's partition count, as fixed.
    pub partitions: u32,
    /// Each owned partition's local store goes to `<data_dir>/partitions/<n>`.
    pub data_dir: PathBuf,
    /// The engine settings of each owned partition, given its store's directory.
    pub engine: EngineConfig,
    /// What follows each owned partition's log; nothing when `None`.
    pub follow: Option<StartFollowing>,
    /// Where each owned partition's latest snapshot is kept for the next owner; without it every takeover
    /// replays the partition's whole log.
    pub snapshots: Option<SnapshotBook>,
}

/// What the loop, the takeovers and the drains share.
struct Ctx {
    leases: Leases,
    log: PartitionLog,
    cursors: CursorBook,
    config: NodeConfig,
    owned: Mutex<BTreeMap<u32, Owned>>,
    stats: NodeStats,
    /// Partitions being given up, beside the turns (a drain waits on the relay and NATS, which must not delay
    /// the other partitions' renewals). `stop` waits for them; a crash aborts them.
    draining: Mutex<tokio::task::JoinSet<()>>,
    /// The cursor save in flight, beside the turns for the same reason; a turn starts none while one runs.
    saving: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The snapshot saves in flight, in a task of their own: a slow object store must not hold up the cursors.
    snapshotting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What a node counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Lease renewals that succeeded.
    pub renewals: AtomicU64,
    /// Renewals that failed on the way (the partition is kept until its lease runs out).
    pub renewals_failed: AtomicU64,
    /// Leases found taken by another node.
    pub leases_lost: AtomicU64,
    /// Partitions taken over and served.
    pub takeovers: AtomicU64,
    /// Takeovers that failed (tried again while the lease is held).
    pub takeovers_failed: AtomicU64,
    /// Time from a lease taken to the partition served, summed over the takeovers, in microseconds.
    pub takeover_us: AtomicU64,
    /// Partitions given up (lost, handed off, or their engine stopped).
    pub given_up: AtomicU64,
    /// Takeovers that started from the partition's snapshot (the rest replayed its whole log).
    pub takeovers_from_snapshot: AtomicU64,
    /// Partition snapshots saved to the object store.
    pub snapshots_saved: AtomicU64,
    /// Snapshot saves that failed (tried again next turn).
    pub snapshots_failed: AtomicU64,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("partitions", &self.partitions)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A running node. Dropping it stops its loop without giving anything up, as a crash would: its leases age
/// out and the other nodes take its partitions. [`Node::stop`] hands them off at once.
pub struct Node {
    ctx: Arc<Ctx>,
    /// The loop; taken by `stop` (which waits for it to end) or aborted on drop.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The takeovers in flight, run beside the loop's turns; `stop` waits for them to end too.
    taking: Takes,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.ctx.leases.node())
            .field("owned", &self.owned())
            .finish_non_exhaustive()
    }
}

type Takes = Arc<Mutex<tokio::task::JoinSet<Result<(), LeaseError>>>>;

/// What a daemon needs to join a cluster.
#[derive(Clone)]
pub struct Joining {
    /// `COHOST_NATS_URL`: one server, or a comma-separated list of seeds.
    pub nats_url: String,
    /// `COHOST_NODE_ID`: unique in the cluster, the name in leases, heartbeats and markers.
    pub node_id: String,
    /// `COHOST_PARTITIONS`; must be the cluster's.
    pub partitions: u32,
    /// The streams the log is spread over (`LOG_STREAMS_DEFAULT`); fixed when the cluster is created.
    pub log_streams: u32,
    /// Of the log and the KV buckets.
    pub replicas: usize,
    /// `COHOST_DATA_DIR`: the partitions' local stores go under it.
    pub data_dir: PathBuf,
    /// The engine settings of each owned partition.
    pub engine: EngineConfig,
    /// What follows each owned partition's log; nothing when `None`.
    pub follow: Option<StartFollowing>,
    /// Where this node serves HTTP, said in its heartbeat (`http://host:port`).
    pub advertise: Option<String>,
}

impl std::fmt::Debug for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Joining")
            .field("nats_url", &self.nats_url)
            .field("node_id", &self.node_id)
            .field("partitions", &self.partitions)
            .field("log_streams", &self.log_streams)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

/// How long joining keeps trying while the cluster's JetStream is not ready.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Checks the fixed configuration, then opens the log and the buckets.
async fn open_all(
    js: &async_nats::jetstream::Context,
    joining: &Joining,
) -> Result<(PartitionLog, Leases, CursorBook, SnapshotBook), JoinNodeError> {
    let fixed = Fixed::new(joining.partitions, joining.log_streams);
    join(js, &fixed, joining.replicas).await?;
    let log_config = LogConfig {
        replicas: joining.replicas,
        streams: joining.log_streams,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(js.clone(), log_config).await?;
    let mut leases = Leases::open(
        js,
        &joining.node_id,
        joining.replicas,
        LeaseConfig::default(),
    )
    .await?;
    if let Some(url) = &joining.advertise {
        leases = leases.advertising(url);
    }
    let cursors = CursorBook::open(js, joining.replicas).await?;
    let snapshots = SnapshotBook::open(js, joining.replicas).await?;
    Ok((log, leases, cursors, snapshots))
}

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinNodeError {
    /// The NATS URL does not parse.
    #[error("cannot connect to NATS at {url}: {cause}")]
    Connect {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        cause: String,
    },
    /// This node's configuration is not the cluster's (final), or it could not be read.
    #[error(transparent)]
    Fixed(#[from] JoinError),
    /// The partition log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The lease or heartbeat bucket could not be opened.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The cursor bucket could not be opened.
    #[error(transparent)]
    Cursors(#[from] CursorError),
    /// The snapshot object store could not be opened.
    #[error(transparent)]
    Snapshots(#[from] super::snapshot::SnapshotError),
}

impl Node {
    /// Connects, checks that the cluster's fixed configuration is this node's (the first node fixes it),
    /// opens the partition log and the buckets with `replicas`, and starts the node. While the cluster's
    /// JetStream is not ready it tries again every 500 ms for up to 30 s; a configuration that differs from
    /// the cluster's fails at once. The node's loop runs in a task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`JoinNodeError`]: a URL that does not parse, a configuration not the cluster's, or a log or bucket
    /// that could not be opened within the 30 s.
    pub async fn join(joining: Joining) -> Result<Self, JoinNodeError> {
        let client =
            crate::connect(&joining.nats_url)
                .await
                .map_err(|e| JoinNodeError::Connect {
                    url: joining.nats_url.clone(),
                    cause: e.to_string(),
                })?;
        let js = async_nats::jetstream::new(client);
        // A cluster starting up answers "no responders" until its streams have leaders: tried again for a
        // while. A configuration that differs from the cluster's is final.
        let started = Instant::now();
        let (log, leases, cursors, snapshots) = loop {
            match open_all(&js, &joining).await {
                Ok(opened) => break opened,
                Err(
                    error @ JoinNodeError::Fixed(
                        JoinError::Partitions { .. }
                        | JoinError::LogStreams { .. }
                        | JoinError::Format { .. },
                    ),
                ) => {
                    return Err(error);
                }
                Err(error) if started.elapsed() < JOIN_PATIENCE => {
                    tracing::warn!(%error, "joining the cluster; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let config = NodeConfig {
            partitions: joining.partitions,
            data_dir: joining.data_dir,
            engine: joining.engine,
            follow: joining.follow,
            snapshots: Some(snapshots),
        };
        Ok(Self::start(leases, log, cursors, config))
    }

    /// Starts the node's loop on parts opened beforehand; it takes partitions from its first turn on.
    // Hidden: only the tests start a node this way, on buckets opened with their own lease timing; a daemon
    // joins with `Node::join`, which checks the cluster's fixed configuration first.
    #[doc(hidden)]
    pub fn start(
        leases: Leases,
        log: PartitionLog,
        cursors: CursorBook,
        config: NodeConfig,
    ) -> Self {
        let ctx = Arc::new(Ctx {
            leases,
            log,
            cursors,
            config,
            owned: Mutex::new(BTreeMap::new()),
            stats: NodeStats::default(),
            draining: Mutex::default(),
            saving: Mutex::default(),
            snapshotting: Mutex::default(),
        });
        let taking = Takes::default();
        let task = Mutex::new(Some(tokio::spawn(run(ctx.clone(), taking.clone()))));
        Self { ctx, task, taking }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.ctx.leases.node()
    }

    /// The cluster's partition count.
    pub fn partitions(&self) -> u32 {
        self.ctx.config.partitions
    }

    /// The partition that holds `room_id`.
    pub fn partition_of(&self, room_id: &RoomId) -> u32 {
        partition::of(room_id, self.ctx.config.partitions)
    }

    /// The engine of `room_id`'s partition, if this node owns it and its lease is valid by this node's clock.
    pub fn engine_for(&self, room_id: &RoomId) -> Option<Engine> {
        self.engine_of(self.partition_of(room_id))
    }

    /// The engine of `partition`, if this node owns it and its lease is valid by this node's clock.
    pub fn engine_of(&self, partition: u32) -> Option<Engine> {
        let owned = self.ctx.owned();
        let entry = owned.get(&partition)?;
        entry
            .lease
            .is_valid(Instant::now())
            .then(|| entry.engine.clone())
    }

    /// The engines of the partitions this node owns now, by partition.
    pub fn engines(&self) -> Vec<(u32, Engine)> {
        let owned = self.ctx.owned();
        owned
            .iter()
            .map(|(partition, entry)| (*partition, entry.engine.clone()))
            .collect()
    }

    /// What the node counted since it started.
    pub fn stats(&self) -> &NodeStats {
        &self.ctx.stats
    }

    /// The statuses of what follows each owned partition's log, by partition.
    pub fn followers(&self) -> Vec<(u32, Vec<Arc<FollowerStatus>>)> {
        let owned = self.ctx.owned();
        owned
            .iter()
            .map(|(partition, entry)| {
                let following = entry.following.lock().unwrap_or_else(|e| e.into_inner());
                let statuses = following
                    .as_ref()
                    .map(|f| f.statuses.clone())
                    .unwrap_or_default();
                (*partition, statuses)
            })
            .collect()
    }

    /// Where the owner of `partition` serves HTTP, as its heartbeat says; `None` while nobody holds the
    /// partition or its owner does not say.
    pub async fn owner_url(&self, partition: u32) -> Option<String> {
        let holder = self.ctx.leases.holder(partition).await.ok()??;
        self.owner_url_of(&holder.node).await
    }

    /// Where `node` serves HTTP, as its heartbeat says.
    pub async fn owner_url_of(&self, node: &str) -> Option<String> {
        self.ctx.leases.advertised(node).await.ok()?
    }

    /// The partitions this node serves now: owned, with a lease valid by this node's clock.
    pub fn serving(&self) -> Vec<u32> {
        let now = Instant::now();
        let owned = self.ctx.owned();
        owned
            .iter()
            .filter(|(_, entry)| entry.lease.is_valid(now))
            .map(|(partition, _)| *partition)
            .collect()
    }

    /// The partitions this node owns now, served or not (a lease it could not renew is kept until it is
    /// lost, but not served once it runs out).
    pub fn owned(&self) -> Vec<u32> {
        self.ctx.owned().keys().copied().collect()
    }

    /// Kills the loop and drops every engine without giving a lease up (a crash, for tests).
    // Hidden: only the failover tests and the cluster benchmark crash a node on purpose; a daemon stops with
    // `stop` or dies.
    #[doc(hidden)]
    pub fn crash(self) {
        drop(self);
    }

    /// Aborts the loop and the takeovers in flight and waits until they have ended, so no turn is still on
    /// the way and no takeover adds a partition after this. (A takeover cut off leaves its lease to age out.)
    async fn end_loop(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let mut taking =
            std::mem::take(&mut *self.taking.lock().unwrap_or_else(|e| e.into_inner()));
        taking.shutdown().await;
    }

    /// Stops the loop, drains every partition (its followers, their cursors, its engine) and gives its lease
    /// up, so others take over at once. The partitions drain side by side, each step bounded, so with NATS
    /// unreachable a stop still ends in a few seconds.
    pub async fn stop(&self) {
        // A heartbeat of a turn still on the way would bring this node back to life after it left.
        self.end_loop().await;
        let leases = &self.ctx.leases;
        if let Err(error) = leases.leave().await {
            tracing::warn!(%error, node = leases.node(), "could not leave the live nodes; its heartbeat will age out");
        }
        // No periodic cursor or snapshot save lands after the drains' final ones.
        for slot in [&self.ctx.saving, &self.ctx.snapshotting] {
            let task = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
        // The drains under way finish; the rest run side by side, each step bounded, so with NATS unreachable
        // a stop still ends in a few seconds.
        let mut draining = std::mem::take(&mut *self.ctx.draining());
        while draining.join_next().await.is_some() {}
        let owned = std::mem::take(&mut *self.ctx.owned());
        futures::stream::iter(owned)
            .for_each_concurrent(RENEWALS_AT_ONCE, |(partition, entry)| {
                self.ctx.drain(partition, entry, false)
            })
            .await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
        }
        // Dropping the set aborts the takeovers in flight.
        drop(std::mem::take(
            &mut *self.taking.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        // A crash: what follows the partitions stops with them, saving nothing.
        self.ctx.owned().clear();
        drop(std::mem::take(&mut *self.ctx.draining()));
        for slot in [&self.ctx.saving, &self.ctx.snapshotting] {
            if let Some(task) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }
}

impl Ctx {
    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Owned>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn draining(&self) -> std::sync::MutexGuard<'_, tokio::task::JoinSet<()>> {
        self.draining.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a partition here: stops its followers, saves their cursors (unless its lease was `lost`: they are
    /// the new owner's to save), shuts its engine down and releases its lease (only the lease this node wrote
    /// last is deleted: a lost one belongs to someone else by now).
    async fn drain(&self, partition: u32, entry: Owned, lost: bool) {
        let following = entry
            .following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(following) = following {
            following.stop.await;
        }
        if !lost {
            let ttl = self.leases.config().ttl;
            let saved =
                tokio::time::timeout(ttl, save_cursors(&self.cursors, partition, &entry, true))
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".to_owned()));
            if let Err(error) = saved {
                tracing::warn!(%error, node = self.leases.node(), partition, "the followers' cursors were not saved; the next owner repeats a few events");
            }
        }
        entry.engine.shutdown().await;
        let _ = self.leases.release(entry.lease).await;
    }

    /// Takes the partition out of those served now, and drains it beside the turns.
    fn give_up(self: &Arc<Self>, partition: u32, reason: &str, lost: bool) {
        let entry = self.owned().remove(&partition);
        let Some(entry) = entry else { return };
        self.stats.given_up.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            node = self.leases.node(),
            partition,
            reason,
            "giving the partition up"
        );
        let ctx = self.clone();
        let mut draining = self.draining();
        while draining.try_join_next().is_some() {}
        draining.spawn(async move { ctx.drain(partition, entry, lost).await });
    }
}

/// Saves the partition's cursors if they moved since last saved (or `always`); the cursors saved.
async fn save_cursors(
    book: &CursorBook,
    partition: u32,
    entry: &Owned,
    always: bool,
) -> Result<Cursors, String> {
    let now: Cursors = entry
        .engine
        .cursors()
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    if always || now != entry.saved {
        book.save(partition, entry.lease.epoch, &now)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(now)
}

async fn run(ctx: Arc<Ctx>, taking: Takes) {
    let leases = &ctx.leases;
    let mut tick = tokio::time::interval(leases.config().renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Takeovers run beside the turns, so a long one (a long history to replay) never holds up the renewals of
    // the partitions already held.
    let mut in_flight: BTreeMap<tokio::task::Id, u32> = BTreeMap::new();
    loop {
        tick.tick().await;
        reap(&taking, &mut in_flight, leases.node());
        let wanted = match turn(&ctx).await {
            Ok(wanted) => wanted,
            Err(error) => {
                tracing::warn!(%error, node = leases.node(), "cluster turn failed; trying again");
                continue;
            }
        };
        let mut taking = taking.lock().unwrap_or_else(|e| e.into_inner());
        for partition in wanted {
            if in_flight.len() >= TAKES_AT_ONCE {
                break;
            }
            if in_flight.values().any(|p| *p == partition) {
                continue;
            }
            let ctx = ctx.clone();
            let handle = taking.spawn(async move { take(&ctx, partition).await });
            in_flight.insert(handle.id(), partition);
        }
    }
}

/// Collects the takeovers that ended, freeing their places.
fn reap(taking: &Takes, in_flight: &mut BTreeMap<tokio::task::Id, u32>, node: &str) {
    let mut taking = taking.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(done) = taking.try_join_next_with_id() {
        let (id, result) = match done {
            Ok((id, result)) => (id, result),
            Err(error) => (error.id(), Err(LeaseError::Nats(error.to_string()))),
        };
        let partition = in_flight.remove(&id);
        if let Err(error) = result {
            tracing::warn!(%error, node, ?partition, "taking a partition failed");
        }
    }
}

/// One turn: heartbeat, renew what is held, give up what was lost or failed, hand off what another live
/// node is preferred for, and start saving the followers' cursors that moved. Returns the partitions this node
/// is preferred for and does not hold, to take. A NATS error skips only its own step: renewing matters most,
/// and a lease that could not be renewed fences its engine by its own expiry. Nothing else waits in a turn:
/// drains and cursor saves run beside it.
async fn turn(ctx: &Arc<Ctx>) -> Result<Vec<u32>, LeaseError> {
    let leases = &ctx.leases;
    if let Err(error) = leases.heartbeat().await {
        tracing::warn!(%error, node = leases.node(), "heartbeat failed");
    }
    let live = leases.live_nodes().await;
    renew_held(ctx, live.as_deref().ok()).await;
    start_unless_running(&ctx.saving, {
        let ctx = ctx.clone();
        async move { save_moved_cursors(&ctx).await }
    });
    start_unless_running(&ctx.snapshotting, {
        let ctx = ctx.clone();
        async move { save_new_snapshots(&ctx).await }
    });
    let live = live?;
    let held = ctx.owned();
    Ok((0..ctx.config.partitions)
        .filter(|p| preferred(*p, &live) == Some(leases.node()) && !held.contains_key(p))
        .collect())
}

/// Spawns `task` into `slot` unless the one there is still running (then `task` is dropped unstarted).
fn start_unless_running(
    slot: &Mutex<Option<tokio::task::JoinHandle<()>>>,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if slot
        .as_ref()
        .is_none_or(tokio::task::JoinHandle::is_finished)
    {
        *slot = Some(tokio::spawn(task));
    }
}

/// Runs `save` for each partition served now (a partition whose lease ran out may have a new owner, whose state
/// these saves must not replace), `at_once` at a time, each bounded by `limit`; the results by partition.
async fn for_each_served<'a, T, F>(
    ctx: &'a Ctx,
    at_once: usize,
    limit: std::time::Duration,
    save: impl Fn(u32, Owned) -> F,
) -> Vec<(u32, Result<T, String>)>
where
    F: std::future::Future<Output = Result<T, String>> + 'a,
{
    let now = Instant::now();
    let held: Vec<(u32, Owned)> = ctx
        .owned()
        .iter()
        .filter(|(_, o)| o.lease.is_valid(now))
        .map(|(p, o)| (*p, o.clone()))
        .collect();
    futures::stream::iter(held)
        .map(|(partition, entry)| {
            let saving = save(partition, entry);
            async move {
                let saved = tokio::time::timeout(limit, saving)
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".to_owned()));
                (partition, saved)
            }
        })
        .buffer_unordered(at_once)
        .collect()
        .await
}

/// Saves, side by side, the cursors that moved since the last save of each partition served now.
async fn save_moved_cursors(ctx: &Ctx) {
    let ttl = ctx.leases.config().ttl;
    let saves = for_each_served(ctx, RENEWALS_AT_ONCE, ttl, |partition, entry| async move {
        save_cursors(&ctx.cursors, partition, &entry, false).await
    })
    .await;
    let mut owned = ctx.owned();
    for (partition, saved) in saves {
        match saved {
            Ok(cursors) => {
                if let Some(slot) = owned.get_mut(&partition) {
                    slot.saved = cursors;
                }
            }
            Err(error) => {
                tracing::warn!(%error, node = ctx.leases.node(), partition, "saving the followers' cursors failed; trying again next turn");
            }
        }
    }
}

/// Saves, a few at a time, the snapshot of each partition served now whose engine has taken a newer one that
/// every follower has handled (a taker's followers then need nothing from before it). Each save is bounded; one
/// that fails is tried again next turn.
async fn save_new_snapshots(ctx: &Ctx) {
    let Some(book) = &ctx.config.snapshots else {
        return;
    };
    let saves = for_each_served(
        ctx,
        SNAPSHOTS_AT_ONCE,
        SNAPSHOT_SAVE_TIMEOUT,
        |partition, entry| async move { save_snapshot(ctx, book, partition, &entry).await },
    )
    .await;
    let mut owned = ctx.owned();
    for (partition, saved) in saves {
        match saved {
            Ok(None) => {}
            Ok(Some(seq)) => {
                ctx.stats.snapshots_saved.fetch_add(1, Ordering::Relaxed);
                if let Some(slot) = owned.get_mut(&partition) {
                    slot.exported = seq;
                }
            }
            Err(error) => {
                ctx.stats.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, node = ctx.leases.node(), partition, "saving the partition's snapshot failed; trying again next turn");
            }
        }
    }
}

/// Saves the partition's snapshot if its engine took one newer than the last saved that every follower has
/// handled; the seq saved.
async fn save_snapshot(
    ctx: &Ctx,
    book: &SnapshotBook,
    partition: u32,
    entry: &Owned,
) -> Result<Option<u64>, String> {
    let engine = entry.engine.clone();
    let seq = engine.snapshot_seq().map_err(|e| e.to_string())?;
    let handled = {
        let following = entry.following.lock().unwrap_or_else(|e| e.into_inner());
        match following.as_ref() {
            Some(f) => {
                let handled = f.statuses.iter().map(|s| s.handled_seq()).min();
                let saved = (f.sinks.iter())
                    .map(|sink| entry.saved.get(sink).copied().unwrap_or(0))
                    .min();
                handled.into_iter().chain(saved).min().unwrap_or(u64::MAX)
            }
            // Nothing follows the partition here.
            None if ctx.config.follow.is_none() => u64::MAX,
            // Its followers are not started yet, or were taken away to be stopped (the partition is being
            // given up): what they handled is not known, so nothing may be saved past it.
            None => 0,
        }
    };
    if seq <= entry.exported || handled < seq {
        return Ok(None);
    }
    let exported = tokio::task::spawn_blocking(move || engine.export_base())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(exported) = exported.filter(|e| e.base.seq <= handled) else {
        return Ok(None);
    };
    let seq = exported.base.seq;
    // Still this owner's, under the same lease: a partition given up meanwhile saves nothing more.
    let still_held = ctx.owned().get(&partition).is_some_and(|held| {
        held.lease.epoch == entry.lease.epoch && held.lease.is_valid(Instant::now())
    });
    if !still_held {
        return Ok(None);
    }
    let snapshot =
        PartitionSnapshot::new(partition, ctx.leases.node(), entry.lease.epoch, exported);
    book.save(&snapshot).await.map_err(|e| e.to_string())?;
    Ok(Some(seq))
}

/// Renews every held lease, giving up a partition whose lease is lost, whose engine stopped, or that another
/// live node is preferred for (`live`, when it could be read). A renewal that fails on the way, or takes longer
/// than the TTL, keeps the partition: the next turn tries again, and meanwhile the lease's own expiry stops the
/// engine being served. Renewals run side by side, so one slow answer does not age the others out.
async fn renew_held(ctx: &Arc<Ctx>, live: Option<&[String]>) {
    let leases = &ctx.leases;
    let held: Vec<(u32, Owned)> = ctx.owned().iter().map(|(p, o)| (*p, o.clone())).collect();
    let mut renewing = Vec::new();
    for (partition, entry) in held {
        let handoff = if live.is_some_and(|live| preferred(partition, live) != Some(leases.node()))
        {
            Some("another live node is preferred for it")
        } else if entry.engine.health() != Health::Serving {
            Some("its engine stopped")
        } else {
            None
        };
        match handoff {
            Some(reason) => ctx.give_up(partition, reason, false),
            None => renewing.push((partition, entry.lease)),
        }
    }
    let renewed: Vec<(u32, Result<Lease, LeaseError>)> = futures::stream::iter(renewing)
        .map(|(partition, lease)| async move { (partition, leases.renew(&lease).await) })
        .buffer_unordered(RENEWALS_AT_ONCE)
        .collect()
        .await;
    let stats = &ctx.stats;
    for (partition, renewed) in renewed {
        let counted = match &renewed {
            Ok(_) => &stats.renewals,
            Err(LeaseError::Lost { .. }) => &stats.leases_lost,
            Err(_) => &stats.renewals_failed,
        };
        counted.fetch_add(1, Ordering::Relaxed);
        match renewed {
            Ok(lease) => {
                if let Some(slot) = ctx.owned().get_mut(&partition) {
                    slot.lease = lease;
                }
            }
            Err(reason @ LeaseError::Lost { .. }) => {
                ctx.give_up(partition, &reason.to_string(), true);
            }
            Err(error) => {
                tracing::warn!(%error, node = leases.node(), partition, "renewal failed; kept until the lease expires");
            }
        }
    }
}

/// Takes the partition over while renewing its lease: replaying a long history can take longer than the TTL,
/// and a lease that aged out meanwhile would make every takeover fail and start again. A lease lost on the way
/// (another node took the partition) fails the takeover once it has finished: its claim was fenced, or the
/// other node's will be, and the engine is shut down. A failure comes with the lease as last renewed, to be
/// released (`None` once lost).
async fn take_over_renewing(
    ctx: &Ctx,
    lease: Lease,
    engine: Config,
) -> Result<(Engine, Lease), (String, Option<Lease>)> {
    let leases = &ctx.leases;
    let claimed = lease.clone();
    let partition = lease.partition;
    let takeover = async {
        // Bounded: a cursor bucket that does not answer fails the takeover (tried again next turn) rather than
        // start the followers from the beginning of the log.
        let ttl = leases.config().ttl;
        let cursors = match tokio::time::timeout(ttl, ctx.cursors.load(partition)).await {
            Ok(Ok(cursors)) => cursors,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => {
                return Err(format!(
                    "partition {partition}: the followers' cursors did not load in time"
                ));
            }
        };
        let snapshot = load_snapshot(ctx, partition).await;
        take_over(&ctx.log, leases.node(), &claimed, engine, cursors, snapshot)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::pin!(takeover);
    let (mut current, mut lost) = (lease, None);
    let mut tick = tokio::time::interval(leases.config().renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let taken = loop {
        tokio::select! {
            taken = &mut takeover => break taken,
            _ = tick.tick(), if lost.is_none() => match leases.renew(&current).await {
                Ok(renewed) => current = renewed,
                Err(error @ LeaseError::Lost { .. }) => lost = Some(error.to_string()),
                // Passing: the lease's own expiry fences what was taken, and the next tick tries again.
                Err(_) => {}
            },
        }
    };
    let engine = match taken {
        Ok(engine) => engine,
        Err(error) => return Err((error.to_string(), lost.is_none().then_some(current))),
    };
    if let Some(lost) = lost {
        engine.shutdown().await;
        return Err((lost, None));
    }
    Ok((engine, current))
}

/// The partition's snapshot, if the bucket has one and answers in time; else `None`, and the takeover replays
/// the whole log (slower, never wrong).
async fn load_snapshot(ctx: &Ctx, partition: u32) -> Option<PartitionSnapshot> {
    let book = ctx.config.snapshots.as_ref()?;
    let node = ctx.leases.node();
    match tokio::time::timeout(SNAPSHOT_SAVE_TIMEOUT, book.load(partition)).await {
        Ok(Ok(snapshot)) => snapshot,
        Ok(Err(error)) => {
            tracing::warn!(%error, node, partition, "the partition's snapshot cannot be read; replaying its whole log");
            None
        }
        Err(_) => {
            tracing::warn!(
                node,
                partition,
                "the partition's snapshot did not load in time; replaying its whole log"
            );
            None
        }
    }
}

/// Takes the partition if its lease is free: replays its log, claims it, starts its followers from the
/// cursors its last owner saved, and only then serves it.
async fn take(ctx: &Ctx, partition: u32) -> Result<(), LeaseError> {
    let leases = &ctx.leases;
    let Some(lease) = leases.acquire(partition).await? else {
        return Ok(());
    };
    let started = Instant::now();
    let dir = ctx
        .config
        .data_dir
        .join("partitions")
        .join(partition.to_string());
    let taken = take_over_renewing(ctx, lease, (ctx.config.engine)(dir)).await;
    let (engine, lease) = match taken {
        Ok(taken) => taken,
        Err((error, lease)) => {
            ctx.stats.takeovers_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, node = leases.node(), partition, "takeover failed; trying again");
            if let Some(lease) = lease {
                let _ = leases.release(lease).await;
            }
            return Ok(());
        }
    };
    // Started from a snapshot: the store's log begins after it.
    let from_snapshot = engine.log_from() - 1;
    if from_snapshot > 0 {
        ctx.stats
            .takeovers_from_snapshot
            .fetch_add(1, Ordering::Relaxed);
    }
    let entry = Owned {
        exported: from_snapshot,
        saved: engine
            .cursors()
            .map(|c| c.into_iter().collect())
            .unwrap_or_default(),
        engine,
        lease,
        following: Arc::default(),
    };
    let following = match &ctx.config.follow {
        Some(follow) => match follow(partition, entry.engine.clone()).await {
            Ok(following) => Some(following),
            Err(error) => {
                ctx.stats.takeovers_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, node = leases.node(), partition, "its followers did not start; giving the partition up");
                ctx.drain(partition, entry, false).await;
                return Ok(());
            }
        },
        None => None,
    };
    *entry.following.lock().unwrap_or_else(|e| e.into_inner()) = following;
    let stats = &ctx.stats;
    stats.takeovers.fetch_add(1, Ordering::Relaxed);
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    stats.takeover_us.fetch_add(us, Ordering::Relaxed);
    tracing::info!(
        node = leases.node(),
        partition,
        epoch = entry.lease.epoch,
        "partition taken"
    );
    ctx.owned().insert(partition, entry);
    Ok(())
}
