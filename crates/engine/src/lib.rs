//! The embeddable cohost engine: commands in, durable events out.
//!
//! One sequencer owns the rooms. It takes queued commands in batches, decides each in order with
//! `cohost-core`, appends all of the batch's events to the `cohost-store` log in one write with one flush, and
//! only then updates the read model, acks the callers and publishes to subscribers. So an acknowledged command
//! is durable, and readers never see what might still be lost. Queries read the read model and never wait for
//! a batch to be decided or flushed.
//!
//! The sequencer itself (`sequencer::Sequencer`) is a deterministic state machine with no IO; a thread
//! drives it with the channel, the clock and the store (`driver` holds the IO both it and the simulator
//! use). A failed flush, or a panic in that thread, is fail-stop: [`Engine::health`] says why, every command
//! is answered `unavailable`, reads go on, and reopening the store recovers.
//!
//! Limits: the queue holds [`Config::queue_max`] commands (past it, [`Error::QueueFull`] at once, never
//! unbounded growth), a batch at most [`BATCH_MAX_LIMIT`], a page 100 items, a read of the log 1,000 events,
//! the command ids remembered [`Config::idempotency_max`] for [`Config::idempotency_ttl_ms`].
//!
//! It never decides a rule, encodes the log's records or speaks a protocol itself: it orders, makes durable
//! and serves. This crate knows no transport: no NATS, HTTP or LiveKit; those edges call [`Engine`].
//! Neighbours: the rules are [`cohost_core`]'s (`decide`/`apply`), the log and its disk [`cohost_store`]'s,
//! the commands, events and replies [`cohost_proto`]'s. `cohost-nats` relays the log to NATS and serves
//! commands over it (and runs one engine per partition in cluster mode), `cohost-credentials` mints LiveKit
//! tokens from [`Engine::broadcaster_entitlement`] and reports presence, `cohostd` serves HTTP, and
//! `cohost-sim` drives the same sequencer and driver under a simulated clock and disk.
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

#![warn(missing_docs)]

mod abandoned;
mod backoff;
mod backup;
mod base;
mod candidates;
mod clock;
mod config;
// Public for the simulator (crates/sim) and tests/sequencer.rs, which drive the sequencer without the
// engine's thread; not part of the embedding API, so hidden from its docs.
#[doc(hidden)]
pub mod driver;
mod erasure;
mod error;
mod follower;
mod idempotency;
mod read_model;
mod recovery;
mod retention;
// Public for the simulator (crates/sim) and the engine's tests, which drive the state machine themselves;
// an embedder uses `Engine`. `Health` and `BATCH_MAX_LIMIT` are re-exported below for it.
#[doc(hidden)]
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
pub use backup::{
    BACKUP_FORMAT, BACKUP_RECORD_BYTES_MAX, BackupError, BackupWriter, Manifest, read_manifest,
    restore,
};
pub use base::Exported;
pub use cohost_store::RawRecord;
// The simulator exports a base from a store it drives itself; an engine's is `Engine::export_base`.
#[doc(hidden)]
pub use base::{Remembering, export as export_base};
pub use candidates::{RECENT_EVENTS_MAX, USER_ENDED_INVITATIONS_MAX};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cohost_core::InvitationFilter;
pub use config::Config;
pub use erasure::{ErasedUsers, Erasure};
pub use error::Error;
pub use follower::{
    FOLLOWER_WARN_EVERY_MS, FollowerError, FollowerSnapshot, FollowerState, FollowerStatus,
};
pub use read_model::ListRequest;
// The simulator and tests/sequencer.rs build what `Engine::open` builds inside, to drive the sequencer
// without its thread; not part of the embedding API.
#[doc(hidden)]
pub use read_model::ReadModel;
#[doc(hidden)]
pub use recovery::{Recovered, recover};
pub use sequencer::{BATCH_MAX_LIMIT, Health};
pub use stats::{FLUSH_BUCKETS_US, StatsSnapshot};
pub use subscribe::{EventStream, Interest, Watch};

/// Batches of envelopes the live feed holds for slow subscribers before they fall back to the log.
const LIVE_FEED_BATCHES: usize = 1_024;

/// Per-command options. `Options::default()` is neither idempotent nor conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Makes the command idempotent: a retry with the same id and command gets the first reply, and appends
    /// nothing; the same id with another command (or another `expected_version`) is
    /// [`Error::CommandIdReused`]. Scoped by actor and room, remembered for [`Config::idempotency_ttl_ms`] (up
    /// to [`Config::idempotency_max`] ids). Only a command that appended events is remembered: a retry of a
    /// refused one, or of one that changed nothing, is decided again.
    pub command_id: Option<CommandId>,
    /// The room version the caller last saw; another version is `conflict`
    /// ([`Rejection::Conflict`](cohost_core::Rejection::Conflict)) and appends nothing.
    pub expected_version: Option<u64>,
}

/// A seat's presence, or a host's believed away, from [`Engine::seated_presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatPresence {
    /// The seated co-host, or the room's host (then `online` is false and `away` true).
    pub user_id: UserId,
    /// Whether LiveKit last reported the co-host connected.
    pub online: bool,
    /// The LiveKit session of the last stamped report, if any.
    pub participant_sid: Option<String>,
    /// Whether a disconnect grace runs for the co-host: not for one seated before go-live who was never
    /// reported, nor after a report of leaving that had no stamp.
    pub away: bool,
}

/// Who may broadcast, from [`Engine::broadcaster_entitlement`]: what a LiveKit token is minted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcaster {
    /// `host` or `cohost`: a host token adds room_admin.
    pub role: BroadcasterRole,
    /// The seat's invitation, for a co-host.
    pub invitation_id: Option<InvitationId>,
    /// Whether the seat may publish its microphone (`set_cohost_media`); always for the host.
    pub audio: bool,
    /// Whether the seat may publish its camera (`set_cohost_media`); always for the host.
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
    /// Log retention is on: a room's history before the log's start was removed, not held elsewhere.
    retains: bool,
    /// The erased users, whose ids everything served names by a pseudonym.
    pseudonyms: Arc<ErasedUsers>,
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
///
/// Commands ([`Engine::execute`]) go through one sequencer thread, in order; queries read the read model
/// under a shared lock and never wait for a batch. Call [`Engine::shutdown`] to stop: dropping every clone
/// also stops the sequencer once it has committed what was queued, but nobody waits for it, so the data
/// directory may stay locked a little longer.
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
    ///
    /// It blocks while it reads: every record's checksum is checked, the snapshot loaded and the log after it
    /// replayed, so opening costs a read of the whole log (the rooms in memory and the remembered command ids
    /// are rebuilt; their size is bounded by the config). It creates the directory if needed and spawns one
    /// thread, `cohost-sequencer`. It needs no async runtime, but [`Engine::shutdown`] does.
    ///
    /// # Errors
    ///
    /// - [`Error::DirectoryInUse`]: another process (or another engine in this one) has the directory open.
    /// - [`Error::Corrupt`]: a log record fails its checksum, the log has a gap or ends before the last seq
    ///   it had committed (the message names the seq), or the directory holds another format. Nothing is
    ///   repaired: an operator decides.
    /// - [`Error::Storage`]: the directory cannot be created or read.
    /// - [`Error::Stopped`]: writing back the tail a crash left unconfirmed failed to flush.
    /// - [`Error::Internal`]: the sequencer's thread cannot be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohost_engine::{Config, Engine, Options};
    /// use cohost_proto::{Actor, Command, CreateRoom, RoomId, UserId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// let alice = Actor::User(UserId::new("alice").unwrap());
    /// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
    /// engine.execute(alice, create, Options::default()).await.unwrap();
    /// engine.shutdown().await;
    ///
    /// // Opened again, the engine rebuilds the room from the log.
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// assert_eq!(engine.room(&room_id).unwrap().host.as_str(), "alice");
    /// assert_eq!(engine.last_seq(), 1);
    /// engine.shutdown().await;
    /// # }
    /// ```
    pub fn open(config: Config) -> Result<Self, Error> {
        let store = Arc::new(open_store(&config)?);
        let now = config.clock.now_ms();
        let recovered = recover(&store, now, config.sequencer())?;
        let (events, _) = broadcast::channel(LIVE_FEED_BATCHES);
        // A cluster node's engines share theirs; the store's go in either way.
        let pseudonyms = config.erased_users.clone().unwrap_or_default();
        for (user, pseudonym) in store.erased()? {
            pseudonyms.insert(user, pseudonym);
        }
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
            retains: config.retain_ended_ms > 0,
            pseudonyms,
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
    ///
    /// The command waits in a bounded queue ([`Config::queue_max`]) for the sequencer, which decides it in
    /// order with the others of its batch, writes the batch in one write with one flush, and only then
    /// answers every command decided in it, rejections included: the future resolves after that flush (about
    /// 0.2 to 0.4 ms on a local disk, shared by the whole batch). A command that appends nothing, decided
    /// while no batch is in flight, was decided against durable state and is answered at once. It never
    /// blocks the async worker. The reply is the contract's body for the command (the room, the invitation,
    /// or the accepted invitation); readers see its events before the caller hears back. Dropping the future
    /// does not take the command back: once queued, it is decided.
    ///
    /// `actor` is trusted: the caller has authenticated it (a JWT in `cohostd`, NATS permissions in
    /// `cohost-nats`). [`Actor::System`] is for the engine's own timers and LiveKit's webhooks.
    ///
    /// # Errors
    ///
    /// - [`Error::Rejected`]: the rules refused it (the rejection names the contract's code); nothing appended.
    /// - [`Error::RoomNotFound`]: the room the command names does not exist.
    /// - [`Error::CommandIdReused`]: its `command_id` was used for another command.
    /// - [`Error::QueueFull`]: the queue is full; nothing happened, retry shortly.
    /// - [`Error::ShuttingDown`]: [`Engine::shutdown`] has begun.
    /// - [`Error::NotStored`]: its batch's write failed and was taken back; retry with the same `command_id`.
    /// - [`Error::Stopped`]: the engine is fail-stopped (a failed flush, a panic in the sequencer); it may
    ///   have landed if it was in the batch whose flush failed.
    /// - [`Error::Corrupt`], [`Error::Storage`]: a retried command's first reply, or its ended room's archive,
    ///   could not be read back from the store.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohost_core::Rejection;
    /// use cohost_engine::{Config, Engine, Error, Options};
    /// use cohost_proto::{Actor, Command, CommandId, CreateRoom, Reply, RoomId, RoomTarget, UserId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// let alice = Actor::User(UserId::new("alice").unwrap());
    /// let bob = Actor::User(UserId::new("bob").unwrap());
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
    ///
    /// // A command with a command_id, retried: the first reply again, and nothing more appended.
    /// let once = Options { command_id: Some(CommandId::new("create-1").unwrap()), expected_version: None };
    /// let first = engine.execute(alice.clone(), create.clone(), once.clone()).await.unwrap();
    /// let again = engine.execute(alice.clone(), create, once).await.unwrap();
    /// assert_eq!(first, again);
    /// assert_eq!(engine.last_seq(), 1);
    ///
    /// // Only the host may go live: bob is refused by the rules, and the room is untouched.
    /// let go_live = Command::GoLive(RoomTarget { room_id: room_id.clone() });
    /// let refused = engine.execute(bob, go_live.clone(), Options::default()).await.unwrap_err();
    /// assert!(matches!(refused, Error::Rejected(Rejection::PermissionDenied(_))));
    /// let Reply::Room(room) = engine.execute(alice, go_live, Options::default()).await.unwrap() else {
    ///     unreachable!("go_live replies with the room")
    /// };
    /// assert_eq!(room.version, 2);
    /// engine.shutdown().await;
    /// # }
    /// ```
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
            Ok(outcome) => outcome.map(|reply| self.serve(reply)),
            Err(_) => Err(self.shared.lost_answer().await),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ReadModel> {
        read_model::read(&self.shared.read)
    }

    /// `value` with every erased user named by their pseudonym, as of now: what every value leaving the
    /// engine passes through, and what a value served once and sent again later (a webhook delivery retried
    /// for hours) passes through again, since an erasure may have overtaken it.
    pub fn serve<T: cohost_proto::MapUsers>(&self, value: T) -> T {
        self.shared.pseudonyms.serve(value)
    }

    /// The room as of the last durable event. It never waits for the sequencer: it reads the read model under
    /// its shared lock and clones the room; an ended room that left memory is read from its archive in the
    /// store (blocking IO).
    ///
    /// # Errors
    ///
    /// [`Error::RoomNotFound`]; for an archived room, [`Error::Corrupt`] or [`Error::Storage`] when its archive
    /// does not read back, and [`Error::ShuttingDown`] once the store is closed.
    pub fn room(&self, room_id: &RoomId) -> Result<Room, Error> {
        let room = self.with_entry(room_id, |entry| {
            let room = entry.state.room();
            Ok(room.expect("entries are of existing rooms").clone())
        })?;
        Ok(self.serve(room))
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

    /// The room's invitations in creation order, filtered and paged (at most 100 per page). The room keeps
    /// every pending one, the seated ones and its newest 64 that ended; older ones are in the log only
    /// ([`Engine::read_room`]). Reads as [`Engine::room`] does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a cursor this list did not give; otherwise as [`Engine::room`].
    pub fn room_invitations(
        &self,
        room_id: &RoomId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        let after = read_model::room_cursor(list)?;
        let page = self.with_entry(room_id, |entry| Ok(entry.invitations(list, after)))?;
        Ok(self.serve(page))
    }

    /// The user's invitations and requests as candidate, across rooms, oldest first: every pending one, and
    /// the newest [`USER_ENDED_INVITATIONS_MAX`] that have ended, of rooms still in memory (an ended room's
    /// invitations leave the list when the room is archived, a retention after it ended). A user with none
    /// gets an empty page. In memory only: it never reads the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a cursor this list did not give.
    pub fn user_invitations(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<Page<Invitation>, Error> {
        let page = self.read().user_invitations(user, list)?;
        Ok(self.serve(page))
    }

    /// Whether `user` may have broadcaster credentials for the room now, and as what: the host, or a seated
    /// co-host, of a live room (a ban removes the seat). It mints nothing (`cohost-credentials` does, from
    /// this). Reads as [`Engine::room`] does.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`], as [`cohost_core::entitlement`] decides: `failed_precondition` when the room is not
    /// live or the user's offer is not (or no longer) a seat, `permission_denied` for a user who is neither
    /// the host nor a candidate the room remembers; otherwise as [`Engine::room`].
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
    /// participant stay. `now_ms` (ms since the Unix epoch) decides whether a ban with a duration still holds.
    /// Errors as [`Engine::room`].
    pub fn is_banned(&self, room_id: &RoomId, user: &UserId, now_ms: u64) -> Result<bool, Error> {
        self.with_entry(room_id, |entry| Ok(entry.state.ban(user, now_ms).is_some()))
    }

    /// Up to `limit` (at most 1000) committed envelopes from `from_seq` on, in seq order: only durable ones,
    /// never a shorter answer for a hole (that is an error). It reads and decodes log records, blocking on IO:
    /// call it off the async workers (`spawn_blocking`).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a damaged record or a gap, [`Error::Storage`] for a failed read,
    /// [`Error::HistoryGone`] before the log's first seq (cluster mode), [`Error::ShuttingDown`] once the store
    /// is closed.
    pub fn read_events(&self, from_seq: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        // The store can hold a batch that is written but not yet flushed; serve only what is durable.
        let durable = self.last_seq();
        let mut events = self.shared.store()?.read_events(from_seq, limit)?;
        events.retain(|e| e.seq <= durable);
        Ok(self.serve(events))
    }

    /// Up to `limit` (at most 1000) envelopes of one room from `from_version` on, reading only the log
    /// records that hold them. It reads the store: call it off the async workers. Versions past the room's
    /// last durable one give a shorter (or empty) answer.
    ///
    /// # Errors
    ///
    /// [`Error::RoomNotFound`]; [`Error::EventsRemoved`] for events log retention removed; and each error of
    /// [`Engine::read_events`].
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
        match self.shared.store()?.read_seqs(&seqs) {
            Err(cohost_store::StoreError::Before { first, .. }) if self.shared.retains => {
                Err(Error::EventsRemoved { kept_from: first })
            }
            read => Ok(self.serve(read?)),
        }
    }

    /// The last durable seq; 0 for an empty log. What every query answers as of.
    pub fn last_seq(&self) -> u64 {
        self.read().last_seq
    }

    /// Each live room with co-hosts seated or its host believed away, and the presence of each seat (and of
    /// such a host) as the room knows it: what reconciling with LiveKit's own list of participants compares,
    /// so a lost webhook neither leaks a seat nor has a present host judged absent. Scans every room in memory
    /// under the read lock, so call it now and then, not per request. The ids are as stored, erased users'
    /// too (LiveKit knows participants by them): never serve them.
    pub fn seated_presence(&self) -> Vec<(RoomId, Vec<SeatPresence>)> {
        let read = self.read();
        let live = (read.rooms.iter()).filter_map(|(id, entry)| {
            let room = entry.state.room()?;
            let host_away = !entry.state.host_online();
            let checked = !room.cohosts.is_empty() || host_away;
            let seats = room.cohosts.iter().map(|seat| SeatPresence {
                user_id: seat.user_id.clone(),
                online: seat.online,
                participant_sid: (entry.state.liveness(&seat.user_id))
                    .and_then(|l| l.stamp.as_ref())
                    .map(|stamp| stamp.participant_sid.clone()),
                away: (entry.state.liveness(&seat.user_id))
                    .is_some_and(|l| l.offline_since_ms.is_some()),
            });
            // Only a host believed away is checked: one believed present and gone costs nothing.
            let host = host_away.then(|| SeatPresence {
                user_id: room.host.clone(),
                online: false,
                participant_sid: None,
                away: true,
            });
            let seats = seats.chain(host).collect();
            (room.status == cohost_proto::RoomStatus::Live && checked).then(|| (id.clone(), seats))
        });
        live.collect()
    }

    // For tests and benchmarks that compare the engine's state across restarts and nodes: it clones every room
    // in memory under the read lock, which no server path should do.
    /// Every room's state in memory as of the returned seq (`last_seq`), cloned.
    #[doc(hidden)]
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
    ///
    /// The stream yields every durable envelope of interest with a seq at or past `from_seq`, in seq order,
    /// each once, with no gap: it catches up from the log (off the async workers, reading only the records
    /// that hold a room's or a candidate's events), then follows the live feed, and falls back to the log
    /// whenever it lags more than the feed holds, so a slow subscriber never slows the engine. It never sees
    /// an event that might still be lost. It ends (`None`) after [`Engine::shutdown`], once everything
    /// committed was delivered. Creating it does no IO and cannot fail; errors come from the stream (see
    /// [`EventStream::next`]). To resume, pass the last seq handled plus one.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohost_engine::{Config, Engine, Interest, Options};
    /// use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomTarget, UserId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// let alice = Actor::User(UserId::new("alice").unwrap());
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
    /// engine.execute(alice.clone(), create, Options::default()).await.unwrap();
    ///
    /// // From seq 1: the room's creation comes from the log, then its going live from the live feed.
    /// let mut events = engine.subscribe(1, Interest::Room(room_id.clone()));
    /// let go_live = Command::GoLive(RoomTarget { room_id });
    /// engine.execute(alice, go_live, Options::default()).await.unwrap();
    /// let first = events.next().await.unwrap().unwrap();
    /// let second = events.next().await.unwrap().unwrap();
    /// assert_eq!((first.seq, first.event.type_name()), (1, "room_created"));
    /// assert_eq!((second.seq, second.event.type_name()), (2, "room_live"));
    ///
    /// // After shutdown the stream ends, having delivered everything committed.
    /// engine.shutdown().await;
    /// assert!(events.next().await.is_none());
    /// # }
    /// ```
    pub fn subscribe(&self, from_seq: u64, interest: Interest) -> EventStream {
        EventStream::new(self.shared.clone(), from_seq, interest)
    }

    /// [`Engine::subscribe`] with user ids as the log holds them, erased users' too: for a follower that acts
    /// on them outside (the LiveKit revoker removes the participant LiveKit knows). Never serve what it gives.
    #[doc(hidden)]
    pub fn subscribe_as_stored(&self, from_seq: u64, interest: Interest) -> EventStream {
        EventStream::new(self.shared.clone(), from_seq, interest).with_stored_ids()
    }

    /// A room's invitations as a live collection: the page asked for, then every event of the room after it.
    ///
    /// The page and the stream join without a gap or an overlap: the page is as of [`Watch::seq`] (the room
    /// at [`Watch::room_version`]), and [`Watch::changes`] starts right after it. This is what an SSE `snapshot`
    /// then `change` events are made of. Reads as [`Engine::room_invitations`] does; the stream as
    /// [`Engine::subscribe`].
    ///
    /// # Errors
    ///
    /// As [`Engine::room_invitations`]: [`Error::RoomNotFound`], [`Error::InvalidArgument`] for a cursor this
    /// list did not give, and for an archived room the errors of reading its archive.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohost_engine::{Config, Engine, ListRequest, Options, Watch};
    /// use cohost_proto::{
    ///     Actor, Command, CreateRoom, InvitationTarget, Invite, Reply, RoomId, RoomTarget, UserId,
    /// };
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let host = Actor::User(alice);
    /// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
    /// engine.execute(host.clone(), create, Options::default()).await.unwrap();
    /// let go_live = Command::GoLive(RoomTarget { room_id: room_id.clone() });
    /// engine.execute(host.clone(), go_live, Options::default()).await.unwrap();
    /// let invite = Command::Invite(Invite { room_id: room_id.clone(), user_id: bob.clone(), seat: None });
    /// let Reply::Invitation(invitation) = engine.execute(host, invite, Options::default()).await.unwrap() else {
    ///     unreachable!("invite replies with the invitation")
    /// };
    ///
    /// let Watch { snapshot, seq, room_version, mut changes } =
    ///     engine.watch_room_invitations(&room_id, &ListRequest::default()).unwrap();
    /// assert_eq!(snapshot.items, [invitation.clone()]);
    /// assert_eq!((seq, room_version), (3, Some(3)));
    ///
    /// // Bob accepts: the change arrives right after the page.
    /// let accept = Command::AcceptInvitation(InvitationTarget { invitation_id: invitation.invitation_id });
    /// engine.execute(Actor::User(bob), accept, Options::default()).await.unwrap();
    /// let change = changes.next().await.unwrap().unwrap();
    /// assert_eq!((change.seq, change.version), (4, 4));
    /// assert_eq!(change.event.type_name(), "invitation_approved");
    /// engine.shutdown().await;
    /// # }
    /// ```
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
            snapshot: self.serve(entry.invitations(list, after)),
            seq,
            room_version: Some(entry.state.version()),
            changes: self.subscribe(seq + 1, interest),
        })
    }

    /// The room as a live collection: the room, then every event of the room after it, joined as in
    /// [`Engine::watch_room_invitations`]. Errors as [`Engine::room`].
    ///
    /// # Examples
    ///
    /// ```
    /// use cohost_engine::{Config, Engine, Options, Watch};
    /// use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomStatus, RoomTarget, UserId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// let host = Actor::User(UserId::new("alice").unwrap());
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
    /// engine.execute(host.clone(), create, Options::default()).await.unwrap();
    ///
    /// let Watch { snapshot, seq, room_version, mut changes } = engine.watch_room(&room_id).unwrap();
    /// assert_eq!((snapshot.status, seq, room_version), (RoomStatus::Idle, 1, Some(1)));
    ///
    /// // The host goes live: the event arrives right after the room as it was.
    /// let go_live = Command::GoLive(RoomTarget { room_id });
    /// engine.execute(host, go_live, Options::default()).await.unwrap();
    /// let change = changes.next().await.unwrap().unwrap();
    /// assert_eq!((change.seq, change.version), (2, 2));
    /// assert_eq!(change.event.type_name(), "room_live");
    /// engine.shutdown().await;
    /// # }
    /// ```
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
            snapshot: self.serve(room),
            seq,
            changes: self.subscribe(seq + 1, interest),
        })
    }

    /// A candidate's invitations as a live collection: the page asked for, then every invitation event for
    /// them.
    ///
    /// The page (as [`Engine::user_invitations`]) is as of [`Watch::seq`] and [`Watch::changes`] starts right
    /// after it; the events are those whose candidate is `user`, across rooms (invites to them and their own
    /// requests). [`Watch::room_version`] is `None`. In memory only: creating it never reads the store. A
    /// stream resumed from a seq the engine no longer indexes yields [`Error::HistoryGone`]
    /// ([`Engine::candidate_resumable`] tells beforehand).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a cursor this list did not give.
    ///
    /// # Examples
    ///
    /// ```
    /// use cohost_engine::{Config, Engine, ListRequest, Options};
    /// use cohost_proto::{Actor, Command, CreateRoom, Invite, RoomId, RoomTarget, UserId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = Engine::open(Config::new(dir.path())).unwrap();
    /// let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    /// let room_id = RoomId::new("stage-1").unwrap();
    /// let host = Actor::User(alice);
    /// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
    /// engine.execute(host.clone(), create, Options::default()).await.unwrap();
    /// let go_live = Command::GoLive(RoomTarget { room_id: room_id.clone() });
    /// engine.execute(host.clone(), go_live, Options::default()).await.unwrap();
    ///
    /// // Bob has nothing yet; the invite reaches him as a change.
    /// let mut watch = engine.watch_user_invitations(&bob, &ListRequest::default()).unwrap();
    /// assert!(watch.snapshot.items.is_empty());
    /// assert_eq!(watch.seq, 2);
    /// let invite = Command::Invite(Invite { room_id, user_id: bob.clone(), seat: None });
    /// engine.execute(host, invite, Options::default()).await.unwrap();
    /// let change = watch.changes.next().await.unwrap().unwrap();
    /// assert_eq!(change.event.type_name(), "invitation_created");
    /// assert_eq!(change.event.candidate(), Some(&bob));
    /// engine.shutdown().await;
    /// # }
    /// ```
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
    /// changes each already reflects). In memory only; a bad cursor is [`Error::InvalidArgument`].
    pub fn user_invitations_at(
        &self,
        user: &UserId,
        list: &ListRequest,
    ) -> Result<(Page<Invitation>, u64), Error> {
        let read = self.read();
        let page = read.user_invitations(user, list)?;
        Ok((self.serve(page), read.last_seq))
    }

    /// A page as of one seq (with the room's version then, for a room's page), and the events of
    /// `interest` from right after it.
    fn watch<T: cohost_proto::MapUsers>(
        &self,
        page: impl FnOnce(&ReadModel) -> Result<(T, Option<u64>), Error>,
        interest: Interest,
    ) -> Result<Watch<T>, Error> {
        let read = self.read();
        let (snapshot, room_version) = page(&read)?;
        let seq = read.last_seq;
        drop(read);
        Ok(Watch {
            snapshot: self.serve(snapshot),
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

    /// The seq a named outbox sink has durably handled; 0 before its first [`Engine::set_cursor`] (or the
    /// seq before the log's first, past a base). Reads the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty name or one over 64 bytes; [`Error::Corrupt`] for a damaged
    /// cursor; [`Error::Storage`], [`Error::ShuttingDown`].
    pub fn cursor(&self, sink: &str) -> Result<u64, Error> {
        Ok(self.shared.store()?.cursor(sink)?)
    }

    /// Every sink's cursor, by name, in name order (what moves with a partition in cluster mode). Errors as
    /// [`Engine::cursor`].
    pub fn cursors(&self) -> Result<Vec<(String, u64)>, Error> {
        Ok(self.shared.store()?.cursors()?)
    }

    /// Durably records that `sink` handled every event up to `seq` (at most the last durable seq): one write
    /// and one flush on the calling thread, so call it off the async workers. A cursor may move back.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for `seq` past the last durable seq or a bad name; [`Error::Stopped`] when
    /// the flush fails, which is fail-stop for the whole engine as a batch's would be; [`Error::Storage`],
    /// [`Error::ShuttingDown`].
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

    /// The seq of the store's latest snapshot; 0 before the first. Reads the store; a damaged mark is
    /// [`Error::Corrupt`].
    pub fn snapshot_seq(&self) -> Result<u64, Error> {
        Ok(self.shared.store()?.snapshots_seq()?)
    }

    /// The first seq the store's log holds: 1, or the seq after the base it started from (cluster mode).
    pub fn log_from(&self) -> u64 {
        self.shared.store().map_or(1, |store| store.log_from())
    }

    /// The store's latest snapshot as a base for another node to start from (cluster mode), with the replicated
    /// log's position at it; `None` until a snapshot with a position was taken. It reads the store: call it
    /// off the async workers. It holds the whole snapshot and the archived rooms in memory.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the snapshot, an archive or a remembered record does not read back;
    /// [`Error::Storage`], [`Error::ShuttingDown`].
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

    /// Counters for metrics: commands, batches, events and flush latency since the engine opened. Lock-free.
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
    ///
    /// Once it returns, the sequencer's thread has ended and the store is closed as soon as in-flight reads
    /// let go of it, so the directory can be opened again. It waits for the queue to drain (on the blocking
    /// pool, never on the async worker) and needs a tokio runtime. Calling it again, or from another clone,
    /// returns at once, without waiting for the first call. Later commands get [`Error::ShuttingDown`]; reads
    /// of the read model go on.
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
