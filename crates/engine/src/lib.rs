//! The embeddable cohost engine: commands in, durable events out.
//!
//! One sequencer owns the rooms. It takes queued commands in batches, decides each in order with
//! `cohost-core`, appends all of the batch's events to the `cohost-store` log in one write with one flush, and
//! only then updates the read model, acks the callers and publishes to subscribers. So an acknowledged command
//! is durable, and readers never see what might still be lost. Queries read the read model and never wait for
//! a batch to be decided or flushed.
//!
//! The sequencer itself ([`sequencer::Sequencer`]) is a deterministic state machine with no IO; a thread
//! drives it with the channel, the clock and the store ([`driver`] holds the IO both it and the simulator
//! use). A failed flush, or a panic in that thread, is fail-stop: [`Engine::health`] says why, every command
//! is answered `unavailable`, reads go on, and reopening the store recovers.
//!
//! This crate knows no transport: no NATS, HTTP or LiveKit. Those edges call [`Engine`].
//!
//! ```
//! use cohost_engine::{Config, Engine, Options};
//! use cohost_proto::{Actor, Command, CreateRoom, Reply, RoomId, Invite, RoomTarget, UserId};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(Config::new(dir.path())).unwrap();
//! let alice = Actor::User(UserId::new("alice").unwrap());
//! let room_id = RoomId::new("stage-1").unwrap();
//! let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
//! engine.execute(alice.clone(), create, Options::default()).await.unwrap();
//! engine.execute(alice.clone(), Command::GoLive(RoomTarget { room_id: room_id.clone() }), Options::default()).await.unwrap();
//! let invite = Command::Invite(Invite { room_id: room_id.clone(), user_id: UserId::new("bob").unwrap(), seat: None });
//! let Reply::Invitation(invitation) = engine.execute(alice, invite, Options::default()).await.unwrap() else { panic!() };
//! assert_eq!(invitation.invitation_id.to_string(), "stage-1.1");
//! assert_eq!(engine.room(&room_id).unwrap().version, 3);
//! engine.shutdown().await;
//! # });
//! ```

mod backoff;
mod base;
mod candidates;
mod clock;
mod config;
pub mod driver;
mod error;
mod follower;
mod idempotency;
mod read_model;
mod recovery;
pub mod sequencer;
mod stats;
mod subscribe;
mod tallies;
mod timers;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use cohost_core::{Entitlement, RoomState, entitlement};
use cohost_proto::{
    Actor, BroadcasterRole, Command, CommandId, Envelope, Invitation, InvitationId, Page, Reply,
    Room, RoomId, UserId,
};
use cohost_store::Store;
use crossbeam_channel::TrySendError;
use tokio::sync::{broadcast, oneshot};

use crate::read_model::RoomEntry;

pub use backoff::Backoff;
pub use base::{Exported, Remembering, export as export_base};
pub use candidates::{RECENT_EVENTS_MAX, USER_ENDED_INVITATIONS_MAX};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cohost_core::InvitationFilter;
pub use config::Config;
pub use error::Error;
pub use follower::{
    FOLLOWER_WARN_EVERY_MS, FollowerError, FollowerSnapshot, FollowerState, FollowerStatus,
};
pub use read_model::{ListRequest, ReadModel};
pub use recovery::{Recovered, recover};
pub use sequencer::{BATCH_MAX_LIMIT, Health};
pub use stats::{FLUSH_BUCKETS_US, StatsSnapshot};
pub use subscribe::{EventStream, Interest, Watch};

/// Batches of envelopes the live feed holds for slow subscribers before they fall back to the log.
const LIVE_FEED_BATCHES: usize = 1_024;

/// Per-command options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Makes the command idempotent: a retry with the same id and command gets the first reply.
    pub command_id: Option<CommandId>,
    /// The room version the caller last saw; another version is `conflict`.
    pub expected_version: Option<u64>,
}

/// A seat's presence, from [`Engine::seated_presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatPresence {
    pub user_id: UserId,
    /// Whether LiveKit last reported the co-host connected.
    pub online: bool,
    /// The LiveKit session of the last stamped report, if any.
    pub participant_sid: Option<String>,
    /// Whether a disconnect grace runs for the co-host: not for one seated before go-live who was never
    /// reported, nor after a report of leaving that had no stamp.
    pub away: bool,
}

/// Who may broadcast, from `broadcaster_entitlement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcaster {
    pub role: BroadcasterRole,
    /// The seat's invitation, for a co-host.
    pub invitation_id: Option<InvitationId>,
    /// What the seat may publish (`set_cohost_media`); always both for the host.
    pub audio: bool,
    pub video: bool,
}

pub(crate) struct Shared {
    read: RwLock<ReadModel>,
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Envelope>>>>>,
    /// Taken at shutdown, so the store closes (and its directory lock is released) once in-flight reads end.
    store: Mutex<Option<Arc<Store>>>,
    stats: stats::Stats,
    /// What a base keeps of the remembered replies (see [`Engine::export_base`]).
    remembering: (Arc<dyn Clock>, u64, usize),
    /// The sequencer thread's state, watched by a caller whose answer never came.
    writer_state: tokio::sync::watch::Sender<WriterState>,
    failed: AtomicBool,
}

/// What the sequencer thread reports of itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriterState {
    /// Set once, at fail-stop, with its cause.
    failure: Option<String>,
    /// The thread has ended.
    finished: bool,
}

/// A lock that a panic elsewhere cannot turn into a panic here: what it guards is replaced whole or not at all.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn store(&self) -> Result<Arc<Store>, Error> {
        let store = lock(&self.store).clone();
        store.ok_or(Error::ShuttingDown)
    }

    /// Fail-stop: the first cause is kept.
    fn fail(&self, cause: String) {
        self.failed.store(true, Ordering::Release);
        self.writer_state.send_if_modified(|state| {
            let first = state.failure.is_none();
            if first {
                state.failure = Some(cause);
            }
            first
        });
    }

    fn finished(&self) {
        self.writer_state.send_modify(|state| state.finished = true);
    }

    /// Failed once the sequencer stopped, or once any flush of the store failed (a cursor's too: the store
    /// then takes no writes, so the next batch would stop the sequencer anyway).
    fn health(&self) -> Health {
        if let Some(cause) = self.writer_state.borrow().failure.clone() {
            return Health::Failed { cause };
        }
        let store = lock(&self.store).clone();
        match store.as_deref().and_then(Store::flush_failure) {
            Some(cause) => Health::Failed {
                cause: format!("a flush failed: {cause}"),
            },
            None => Health::Serving,
        }
    }

    /// A caller's answer never came: the sequencer thread died in a panic (it reports so right after) or
    /// ended. Waits for that report, so the caller never finds the engine still serving.
    async fn lost_answer(&self) -> Error {
        let mut state = self.writer_state.subscribe();
        let _ = state
            .wait_for(|state| state.failure.is_some() || state.finished)
            .await;
        let failure = state.borrow().failure.clone();
        match failure {
            Some(cause) => Error::Stopped { cause },
            None => Error::ShuttingDown,
        }
    }
}

/// A handle to a running engine. Cheap to clone; every clone drives the same engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Sender<writer::Job>,
    closed: Arc<AtomicBool>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("last_seq", &self.last_seq())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the store in `config.data_dir` (or `config.backend`), rebuilds state from snapshots and the log,
    /// and starts the sequencer. Fails with a clear error if the directory is in use or a log record is
    /// corrupt.
    pub fn open(config: Config) -> Result<Self, Error> {
        let store = Arc::new(open_store(&config)?);
        let now = config.clock.now_ms();
        let recovered = recover(&store, now, config.sequencer())?;
        let (events, _) = broadcast::channel(LIVE_FEED_BATCHES);
        let shared = Arc::new(Shared {
            read: RwLock::new(recovered.read),
            events: Mutex::new(Some(events.clone())),
            store: Mutex::new(Some(store.clone())),
            stats: stats::Stats::default(),
            remembering: (
                config.clock.clone(),
                config.idempotency_ttl_ms,
                config.idempotency_max,
            ),
            writer_state: tokio::sync::watch::Sender::new(WriterState::default()),
            failed: AtomicBool::new(false),
        });
        let (jobs, queue) = crossbeam_channel::bounded(config.queue_max.max(1));
        let writer = writer::Writer {
            sequencer: recovered.sequencer,
            shared: shared.clone(),
            events,
            store,
            clock: config.clock.clone(),
            take_max: config.batch_max.clamp(1, BATCH_MAX_LIMIT),
        };
        let handle = std::thread::Builder::new()
            .name("cohost-sequencer".into())
            .spawn(move || writer::run(writer, queue))
            .map_err(|e| Error::Internal(format!("cannot start the sequencer: {e}")))?;
        Ok(Self {
            shared,
            jobs,
            closed: Arc::new(AtomicBool::new(false)),
            writer: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Runs one command. `Ok` means its events are durable. A full queue or a stopped engine is
    /// `unavailable` at once.
    pub async fn execute(
        &self,
        actor: Actor,
        command: Command,
        options: Options,
    ) -> Result<Reply, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if self.shared.failed.load(Ordering::Acquire)
            && let Health::Failed { cause } = self.health()
        {
            return Err(Error::Stopped { cause });
        }
        let (reply, answer) = oneshot::channel();
        match self
            .jobs
            .try_send(writer::Job::Command(sequencer::Submission {
                actor,
                command,
                options,
                reply_to: reply,
            })) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.stats.record_queue_full();
                return Err(Error::QueueFull);
            }
            Err(TrySendError::Disconnected(_)) => return Err(Error::ShuttingDown),
        }
        match answer.await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.shared.lost_answer().await),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ReadModel> {
        read_model::read(&self.shared.read)
    }

    /// The room as of the last durable event.
    pub fn room(&self, room_id: &RoomId) -> Result<Room, Error> {
        self.with_entry(room_id, |entry| {
            let room = entry.state.room();
            Ok(room.expect("entries are of existing rooms").clone())
        })
    }

    /// Runs `read` on the room's entry: in memory, or, for an ended room that left memory, from its archive
    /// (which the sequencer writes before the room leaves the read model).
    fn with_entry<R>(
        &self,
        room_id: &RoomId,
        read: impl FnOnce(&RoomEntry) -> Result<R, Error>,
    ) -> Result<R, Error> {
        {
            let model = self.read();
            if let Ok(entry) = model.room(room_id) {
                return read(entry);
            }
        }
        let store = self.shared.store()?;
        match driver::archived_entry(&store, room_id)? {
            Some(entry) => read(&entry),
            None => Err(Error::RoomNotFound),
        }
    }

    /// The room's invitations in creation order, filtered and paged (at most 100 per page).
    pub fn room_invitations(
        &self,
        room_id: &RoomId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        let after = read_model::room_cursor(list)?;
        self.with_entry(room_id, |entry| Ok(entry.invitations(list, after)))
    }

    /// The user's invitations and requests as candidate, across rooms, oldest first: every pending one, and
    /// the newest [`USER_ENDED_INVITATIONS_MAX`] that have ended, of rooms still in memory (an ended room's
    /// invitations leave the list when the room is archived, a retention after it ended).
    pub fn user_invitations(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        self.read().user_invitations(user, list)
    }

    /// Whether `user` may have broadcaster credentials for the room now, and as what.
    pub fn broadcaster_entitlement(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Broadcaster, Error> {
        self.with_entry(room_id, |entry| {
            let found = entitlement(&entry.state, user)?;
            Ok(match found {
                Entitlement::Host => Broadcaster {
                    role: found.role(),
                    invitation_id: None,
                    audio: true,
                    video: true,
                },
                Entitlement::Cohost(seat) => Broadcaster {
                    role: found.role(),
                    invitation_id: Some(seat.invitation_id.clone()),
                    audio: seat.audio,
                    video: seat.video,
                },
            })
        })
    }

    /// Whether `user` is banned from the room at `now_ms`: what LiveKit webhooks check before letting a
    /// participant stay.
    pub fn is_banned(&self, room_id: &RoomId, user: &UserId, now_ms: u64) -> Result<bool, Error> {
        self.with_entry(room_id, |entry| Ok(entry.state.ban(user, now_ms).is_some()))
    }

    /// Up to `limit` (at most 1000) committed envelopes from `from_seq` on.
    pub fn read_events(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        // The store can hold a batch that is written but not yet flushed; serve only what is durable.
        let durable = self.last_seq();
        let mut events = self.shared.store()?.read_events(from_seq, limit)?;
        events.retain(|e| e.seq <= durable);
        Ok(events)
    }

    /// Up to `limit` (at most 1000) envelopes of one room from `from_version` on, reading only the log
    /// records that hold them. It reads the store: call it off the async workers.
    pub fn read_room(
        &self,
        room_id: &RoomId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, Error> {
        let limit = limit.min(cohost_proto::limits::READ_EVENTS_MAX);
        let seqs = self.with_entry(room_id, |entry| {
            Ok(entry.seqs_from(from_version, limit).to_vec())
        })?;
        // Only the records holding the room's events are read.
        Ok(self.shared.store()?.read_seqs(&seqs)?)
    }

    /// The last durable seq; 0 for an empty log.
    pub fn last_seq(&self) -> u64 {
        self.read().last_seq
    }

    /// Every room's state as of `last_seq`, for checks and tooling.
    /// Each live room with co-hosts seated, and each seat's presence as the room knows it: what reconciling
    /// with LiveKit's own list of participants compares.
    pub fn seated_presence(&self) -> Vec<(RoomId, Vec<SeatPresence>)> {
        let read = self.read();
        let live = (read.rooms.iter()).filter_map(|(id, entry)| {
            let room = entry.state.room()?;
            let seated = room.status == cohost_proto::RoomStatus::Live && !room.cohosts.is_empty();
            let seats = room.cohosts.iter().map(|seat| SeatPresence {
                user_id: seat.user_id.clone(),
                online: seat.online,
                participant_sid: (entry.state.liveness(&seat.user_id))
                    .and_then(|l| l.stamp.as_ref())
                    .map(|stamp| stamp.participant_sid.clone()),
                away: (entry.state.liveness(&seat.user_id))
                    .is_some_and(|l| l.offline_since_ms.is_some()),
            });
            seated.then(|| (id.clone(), seats.collect()))
        });
        live.collect()
    }

    pub fn room_states(&self) -> (u64, Vec<(RoomId, RoomState)>) {
        let read = self.read();
        let rooms = read
            .rooms
            .iter()
            .map(|(id, entry)| (id.clone(), entry.state.clone()))
            .collect();
        (read.last_seq, rooms)
    }

    /// Envelopes matching `interest` from `from_seq` on: the log first, then live.
    pub fn subscribe(&self, from_seq: u64, interest: Interest) -> EventStream {
        EventStream::new(self.shared.clone(), from_seq, interest)
    }

    /// A room's invitations as a live collection: the page asked for, then every event of the room after it.
    pub fn watch_room_invitations(
        &self,
        room_id: &RoomId,
        list: &ListRequest,
    ) -> Result<Watch, Error> {
        let interest = Interest::Room(room_id.clone());
        let after = read_model::room_cursor(list)?;
        let in_memory = self.watch(
            |read| {
                let entry = read.room(room_id)?;
                Ok((entry.invitations(list, after), Some(entry.state.version())))
            },
            interest.clone(),
        );
        if !matches!(in_memory, Err(Error::RoomNotFound)) {
            return in_memory;
        }
        // An ended room that left memory: its archive is final, true as of any seq after it ended.
        let seq = self.last_seq();
        let store = self.shared.store()?;
        let entry = driver::archived_entry(&store, room_id)?.ok_or(Error::RoomNotFound)?;
        Ok(Watch {
            snapshot: entry.invitations(list, after),
            seq,
            room_version: Some(entry.state.version()),
            changes: self.subscribe(seq + 1, interest),
        })
    }

    /// The room as a live collection: the room, then every event of the room after it.
    pub fn watch_room(&self, room_id: &RoomId) -> Result<Watch<Room>, Error> {
        let interest = Interest::Room(room_id.clone());
        let in_memory = self.watch(
            |read| {
                let entry = read.room(room_id)?;
                let room = entry.state.room().ok_or(Error::RoomNotFound)?.clone();
                let version = room.version;
                Ok((room, Some(version)))
            },
            interest.clone(),
        );
        if !matches!(in_memory, Err(Error::RoomNotFound)) {
            return in_memory;
        }
        // An ended room that left memory: its archive is final, true as of any seq after it ended.
        let seq = self.last_seq();
        let store = self.shared.store()?;
        let entry = driver::archived_entry(&store, room_id)?.ok_or(Error::RoomNotFound)?;
        let room = entry.state.room().ok_or(Error::RoomNotFound)?.clone();
        Ok(Watch {
            room_version: Some(room.version),
            snapshot: room,
            seq,
            changes: self.subscribe(seq + 1, interest),
        })
    }

    /// A candidate's invitations as a live collection: the page asked for, then every invitation event for
    /// them.
    pub fn watch_user_invitations(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<Watch, Error> {
        let interest = Interest::Candidate(user.clone());
        self.watch(
            |read| Ok((read.user_invitations(user, list)?, None)),
            interest,
        )
    }

    /// A candidate's page and the last seq it reflects (cluster mode merges partitions' pages, and drops the
    /// changes each already reflects).
    pub fn user_invitations_at(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<(Page<Invitation>, u64), Error> {
        let read = self.read();
        Ok((read.user_invitations(user, list)?, read.last_seq))
    }

    /// A page as of one seq (with the room's version then, for a room's page), and the events of
    /// `interest` from right after it.
    fn watch<T>(
        &self,
        page: impl FnOnce(&ReadModel) -> Result<(T, Option<u64>), Error>,
        interest: Interest,
    ) -> Result<Watch<T>, Error> {
        let read = self.read();
        let (snapshot, room_version) = page(&read)?;
        let seq = read.last_seq;
        drop(read);
        Ok(Watch {
            snapshot,
            seq,
            room_version,
            changes: self.subscribe(seq + 1, interest),
        })
    }

    /// Whether a candidate's stream can resume right after `seq` from what the engine indexes, and `seq` is
    /// one the log has reached (else it must start over from a snapshot; see [`Error::HistoryGone`]).
    pub fn candidate_resumable(&self, user: &UserId, seq: u64) -> bool {
        let read = self.read();
        seq <= read.last_seq && read.candidates.events_after(user, seq, 0).is_ok()
    }

    /// The seq a named outbox sink has durably handled.
    pub fn cursor(&self, sink: &str) -> Result<u64, Error> {
        Ok(self.shared.store()?.cursor(sink)?)
    }

    /// Every sink's cursor, by name.
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.shared.store()?.cursors()?)
    }

    /// Durably records that `sink` handled every event up to `seq` (at most the last durable seq).
    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<(), Error> {
        if seq > self.last_seq() {
            return Err(Error::invalid_argument(
                "a cursor cannot pass the last durable seq",
            ));
        }
        let store = self.shared.store()?;
        store.set_cursor(sink, seq).map_err(|error| {
            if let Some(cause) = store.flush_failure() {
                self.shared.fail(format!("a flush failed: {cause}"));
            }
            error.into()
        })
    }

    /// The seq of the store's latest snapshot; 0 before the first.
    pub fn snapshot_seq(&self) -> Result<u64, Error> {
        Ok(self.shared.store()?.snapshots_seq()?)
    }

    /// The first seq the store's log holds: 1, or the seq after the base it started from (cluster mode).
    pub fn log_from(&self) -> u64 {
        self.shared.store().map_or(1, |store| store.log_from())
    }

    /// The store's latest snapshot as a base for another node to start from (cluster mode), with the replicated
    /// log's position at it; `None` until a snapshot with a position was taken. It reads the store: call it
    /// off the async workers.
    pub fn export_base(&self) -> Result<Option<Exported>, Error> {
        let (clock, ttl_ms, max) = &self.shared.remembering;
        let remembering = base::Remembering {
            now_ms: clock.now_ms(),
            ttl_ms: *ttl_ms,
            max: *max,
        };
        base::export(&*self.shared.store()?, remembering)
    }

    /// Log records decoded for readers since the engine opened (catch-ups, room and event reads): what reads
    /// cost, for metrics.
    pub fn records_read(&self) -> u64 {
        self.shared.store().map_or(0, |store| store.records_read())
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Whether the engine takes writes: `Failed`, with its cause, after a failed flush or a panic in the
    /// sequencer (fail-stop). Reads are served either way; a restart recovers from the store.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Stops taking commands, drains the queue, commits it, snapshots, flushes and stops the sequencer.
    /// Subscriptions end after delivering everything committed.
    pub async fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The queue may be full; the stop must wait for room rather than be dropped.
        let jobs = self.jobs.clone();
        let _ = tokio::task::spawn_blocking(move || jobs.send(writer::Job::Stop).is_ok()).await;
        let handle = lock(&self.writer).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        lock(&self.shared.store).take();
        lock(&self.shared.events).take();
    }

    /// Whether `shutdown` has begun.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The store in the configured backend, or sled in the data directory.
fn open_store(config: &Config) -> Result<Store, Error> {
    let mut store = if let Some(backend) = &config.backend {
        Store::with_backend(Box::new(backend.clone()))?
    } else {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        Store::open_with_cache(&config.data_dir, config.store_cache_bytes)?
    };
    if let Some(replicator) = &config.replicator {
        store.replicate_to(replicator.clone());
    }
    Ok(store)
}
