//! The subscriber client: typed envelopes from the event subjects, in order and without duplicates, with gaps
//! filled from the log through the `read_events` query.
//!
//! [`Subscriber::new`] makes one of three streams, one per [`Interest`]:
//! - [`Interest::Room`] reads `cohost.v1.room.<room_id>`. The room's `version` goes up by 1 with every
//!   event, so a message whose version skips ahead is a gap: the stream reads the log from the seq after the
//!   last one it delivered, keeps the room's events, and stops as soon as the missing versions are found (or
//!   at the live message's seq).
//! - [`Interest::All`] reads `cohost.v1.room.>`, where every event appears once. The `seq` goes up by 1,
//!   so a message whose seq skips ahead is a gap, filled from the log.
//! - [`Interest::Candidate`] reads `cohost.v1.user.<user_id>`: the invitation events whose candidate is the user.
//!   Their seqs are sparse, so a lost message cannot be seen from the numbers: a user stream drops
//!   duplicates and keeps seq order, and reads the log only on a reconnect (below) and when it starts from a seq.
//!
//! Every stream drops a message whose seq it has already delivered (or read past in the log). Started with
//! `from_seq`, a stream subscribes first, then reads the log from that seq to its end (the catch-up), then
//! follows the live messages, dropping those the catch-up already delivered.
//!
//! NATS core delivers at most once, and a disconnect loses whatever was published meanwhile. Whenever the client
//! has reconnected, every stream catches up from the log before it takes the next live message, so the
//! events of an outage arrive even when nothing is published after it (it checks at least every
//! [`RECONNECT_POLL`]). That catch-up reads from the stream's covered seq, which for a quiet room or user can
//! lie far back in the log.
//!
//! The log is read through a [`Backfill`]: [`NatsBackfill`] requests `cohost.v1.query.read_events` with
//! `{"from_seq": N, "limit": M}` (and, in cluster mode, the room's `"partition"`: [`NatsBackfill::in_partition`])
//! and reads `{"ok": {"events": [envelopes...], ...}}`; tests pass an in-memory log to
//! [`Subscriber::with_backfill`].
//!
//! Limits: the subscriber's own queue holds at most one page of the log ([`READ_EVENTS_PAGE_MAX`]) and one
//! live envelope. Live messages wait in async-nats's subscription channel, bounded by the client's
//! `subscription_capacity` (65,536 by default). Past it, NATS drops messages (a slow consumer): the room and
//! all streams see that as a gap and read the log; a user stream cannot see it.
//!
//! A live message that does not decode, or does not belong to the stream, is skipped and counted in
//! [`Stats::undecodable`]; it never ends the stream. A failed read of the log is returned as an error, and the
//! next call to [`Subscriber::next`] tries the same read again after a backoff, so nothing is skipped.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, Message, Statistics};
use bytes::Bytes;
use cohost_engine::Backoff;
use cohost_proto::codec::{decode_envelope, to_json};
use cohost_proto::limits::READ_EVENTS_MAX;
use cohost_proto::subject::{self, header};
use cohost_proto::{Encoding, Envelope, ErrorInfo, ServiceReply};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Envelopes the subscriber asks for per `read_events` call. A page of the largest rooms (16 seats, a 200
/// character title) stays well under NATS's default 1 MiB `max_payload`.
pub const READ_EVENTS_PAGE_MAX: usize = 256;
/// How long [`NatsBackfill`] waits for a `read_events` reply.
pub const READ_EVENTS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new stream waits for the server to confirm its subscription.
pub const SUBSCRIBE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting stream checks whether the client has reconnected.
pub const RECONNECT_POLL: Duration = Duration::from_secs(1);
/// Pages of only undecodable envelopes that one [`NatsBackfill::read_events`] call reads past.
const UNDECODABLE_PAGES_MAX: usize = 16;
/// The first wait before a failed log read is tried again; it doubles up to [`RETRY_MS_MAX`].
const RETRY_MS_MIN: u64 = 50;
const RETRY_MS_MAX: u64 = 2_000;
/// The subscriber's own queue: one page of the log and the live envelope that waited for it.
const READY_MAX: usize = READ_EVENTS_PAGE_MAX + 1;

/// Why a stream could not start or continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// NATS refused the subscription.
    #[error("subscribe failed: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The server did not confirm the subscription in time.
    #[error("the server did not confirm the subscription: {0}")]
    Confirm(String),
    /// Reading the log failed. The next call tries the same read again, after a backoff.
    #[error("reading the log failed: {0}")]
    Backfill(#[from] BackfillError),
    /// The log ended before the live event that revealed the gap, so seqs `from_seq..=to_seq` stay missing.
    /// The stream goes on with that live event.
    #[error("the log ended before seq {live_seq}; seqs {from_seq}..={to_seq} stay missing")]
    Unfilled {
        /// The first seq missing.
        from_seq: u64,
        /// The last seq missing.
        to_seq: u64,
        /// The live event's seq, delivered next.
        live_seq: u64,
    },
}

/// Why a [`Backfill`] read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackfillError {
    /// The request got no reply: no responders, a timeout, or a lost connection.
    #[error("read_events request failed: {0}")]
    Request(#[from] async_nats::RequestError),
    /// The service answered with an error.
    #[error("read_events refused: {}: {}", .0.code, .0.message)]
    Refused(ErrorInfo),
    /// The reply is not `{"ok": {"events": [...]}}`, or an envelope in it has no `seq`.
    #[error("read_events reply is malformed: {0}")]
    Malformed(String),
    /// Too many pages in a row held nothing this client can decode.
    #[error("no decodable envelope in {pages} pages of the log from seq {from_seq}")]
    Undecodable {
        /// Where the read started.
        from_seq: u64,
        /// The pages read past (16).
        pages: usize,
    },
    /// Any failure of another [`Backfill`] implementation.
    #[error("read_events failed: {0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads the log: what the `read_events` query answers. [`NatsBackfill`] asks the `cohost` service; tests
/// use an in-memory log.
pub trait Backfill: Send + Sync {
    /// Up to `limit` envelopes with seq ≥ `from_seq`, in seq order; empty when the log holds none.
    fn read_events(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Envelope>, BackfillError>> + Send;
}

/// [`Backfill`] over NATS: requests `cohost.v1.query.read_events`.
#[derive(Debug, Clone)]
pub struct NatsBackfill {
    client: Client,
    undecodable: Arc<AtomicU64>,
    /// Cluster mode: the partition whose log it reads.
    partition: Option<u32>,
}

#[derive(Serialize)]
struct ReadEventsRequest {
    from_seq: u64,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<u32>,
}

/// `{"events": [...], "last_seq": N}`; each envelope is decoded on its own, so one unknown type does not
/// spoil the page.
#[derive(Deserialize)]
struct ReadEventsReply {
    events: Vec<serde_json::Value>,
}

impl NatsBackfill {
    /// Reads a single node's log through `client` (a cluster partition's with [`NatsBackfill::in_partition`]).
    /// Each read is one request, waiting up to [`READ_EVENTS_TIMEOUT`] for the reply.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            undecodable: Arc::default(),
            partition: None,
        }
    }

    /// Reads partition `partition`'s log, for a cluster, whose `read_events` names the partition and whose seqs
    /// count within it. A room's stream reads its room's partition (`cohost_proto::partition::of(room_id,
    /// partitions)`); a stream of every room or of a user spans partitions, whose seqs do not make one order:
    /// in cluster mode follow those through the stream `COHOST` instead. The partition's owner holds its log
    /// from its last snapshot on: a gap from before that is refused (`failed_precondition`) on every try, and
    /// the stream `COHOST` holds those events.
    pub fn in_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Envelopes in replies that did not decode (an event type this client does not know), skipped.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    async fn read_page(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, BackfillError> {
        let body = to_json(&ReadEventsRequest {
            from_seq,
            limit,
            partition: self.partition,
        });
        let request = async_nats::Request::new()
            .payload(Bytes::from(body))
            .timeout(Some(READ_EVENTS_TIMEOUT));
        let reply = self
            .client
            .send_request(subject::query("read_events"), request)
            .await?;
        let reply: ServiceReply<ReadEventsReply> = serde_json::from_slice(&reply.payload)
            .map_err(|error| BackfillError::Malformed(error.to_string()))?;
        match reply {
            ServiceReply::Ok(body) => Ok(body.events),
            ServiceReply::Error(info) => Err(BackfillError::Refused(info)),
        }
    }
}

impl Backfill for NatsBackfill {
    /// Skips the envelopes it cannot decode, and reads on past a page made only of those.
    async fn read_events(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, BackfillError> {
        let limit = limit.clamp(1, READ_EVENTS_MAX);
        let mut from = from_seq;
        for _ in 0..UNDECODABLE_PAGES_MAX {
            let page = self.read_page(from, limit).await?;
            let Some(last) = page.last() else {
                return Ok(Vec::new());
            };
            let last_seq = last.get("seq").and_then(serde_json::Value::as_u64);
            let mut events = Vec::with_capacity(page.len());
            for value in page {
                match serde_json::from_value::<Envelope>(value) {
                    Ok(envelope) => events.push(envelope),
                    Err(_) => _ = self.undecodable.fetch_add(1, Ordering::Relaxed),
                }
            }
            if !events.is_empty() {
                return Ok(events);
            }
            from = last_seq.filter(|&seq| seq >= from).ok_or_else(|| {
                BackfillError::Malformed("an envelope without a valid seq".into())
            })? + 1;
        }
        Err(BackfillError::Undecodable {
            from_seq,
            pages: UNDECODABLE_PAGES_MAX,
        })
    }
}

/// Which envelopes a stream yields: the engine's own interests, each with its subject.
pub use cohost_engine::Interest;

/// The subject a stream of `interest` subscribes to.
fn subject_of(interest: &Interest) -> String {
    match interest {
        Interest::All => subject::ROOM_ALL.to_string(),
        Interest::Room(room_id) => subject::room(room_id),
        Interest::Candidate(user_id) => subject::user(user_id),
    }
}

/// What a stream has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live messages skipped: no known `Content-Type`, bytes that do not decode, or an envelope that does not
    /// belong to the stream.
    pub undecodable: u64,
    /// Live messages dropped because their seq was already delivered.
    pub duplicates: u64,
    /// Gaps seen in the live messages.
    pub gaps: u64,
    /// Envelopes delivered from the log (catch-up and gap fills).
    pub from_log: u64,
    /// Catch-ups started because the client reconnected.
    pub reconnects: u64,
}

/// Where the stream stands.
#[derive(Debug, Default)]
struct Position {
    /// Every matching event with a seq up to this one has been delivered. `None` before the first live message
    /// of a stream that started live: it has no past to be gap-free against.
    covered_seq: Option<u64>,
    /// The version of the last delivered event; room streams only.
    room_version: Option<u64>,
}

enum Phase {
    /// Taking live messages.
    Live,
    /// Reading the log from `next_seq`: up to the `pending` live envelope that revealed a gap, or, without
    /// one, to the log's end (a catch-up).
    Reading {
        next_seq: u64,
        pending: Option<Box<Envelope>>,
    },
}

/// Backoff between failed log reads.
#[derive(Debug)]
struct Retry {
    backoff: Backoff,
    at: Option<tokio::time::Instant>,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            backoff: Backoff::between(
                Duration::from_millis(RETRY_MS_MIN),
                Duration::from_millis(RETRY_MS_MAX),
            ),
            at: None,
        }
    }
}

impl Retry {
    async fn wait(&self) {
        if let Some(at) = self.at {
            tokio::time::sleep_until(at).await;
        }
    }

    fn failed(&mut self) {
        self.at = Some(tokio::time::Instant::now() + self.backoff.next_wait());
    }

    fn succeeded(&mut self) {
        *self = Self::default();
    }
}

/// A stream of envelopes of one [`Interest`], in seq order, without duplicates; see the module docs for how
/// each interest finds and fills its gaps, and for its limits.
///
/// Call [`Subscriber::next`] in a loop. It never blocks a thread: it waits for NATS, and for the `cohost`
/// service's `read_events` when it reads the log, which must be served somewhere ([`crate::service::serve`]).
/// Without a reply a log read fails with [`Error::Backfill`] and is tried again at the next call.
///
/// # Examples
///
/// A room's events from its first, the past read from the log and the rest live:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = cohost_nats::test_server::TestServer::start(false);
/// # let url = server.url();
/// use cohost_engine::{Config, Engine, Options};
/// use cohost_nats::relay::{Mode, Relay, RelayConfig};
/// use cohost_nats::subscriber::{Interest, Subscriber};
/// use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomTarget, UserId};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(Config::new(dir.path()))?;
/// let client = cohost_nats::connect(&url).await?;
/// let _relay = Relay::start(engine.clone(), client.clone(), RelayConfig::new(Mode::Core)).await?;
/// let _service = cohost_nats::service::serve(client.clone(), engine.clone()).await?; // read_events
///
/// let friday = RoomId::new("friday")?;
/// let alice = Actor::User(UserId::new("alice")?);
/// let create = CreateRoom { room_id: friday.clone(), title: None, max_cohosts: None };
/// engine.execute(alice.clone(), Command::CreateRoom(create), Options::default()).await?;
///
/// // From seq 1: room_created comes from the log, whenever the relay published it.
/// let mut events = Subscriber::new(client, Interest::Room(friday.clone()), Some(1)).await?;
/// let go_live = Command::GoLive(RoomTarget { room_id: friday });
/// engine.execute(alice, go_live, Options::default()).await?;
///
/// let created = events.next().await.expect("the client is open")?;
/// let live = events.next().await.expect("the client is open")?;
/// assert_eq!((created.version, live.version), (1, 2));
/// assert!(events.stats().from_log >= 1);
/// # Ok(())
/// # }
/// ```
pub struct Subscriber<B = NatsBackfill> {
    interest: Interest,
    live: async_nats::Subscriber,
    backfill: B,
    statistics: Arc<Statistics>,
    connects_seen: u64,
    position: Position,
    phase: Phase,
    /// A live envelope that arrived when the client had reconnected: taken after the catch-up.
    held: Option<Box<Envelope>>,
    ready: VecDeque<Envelope>,
    retry: Retry,
    stats: Stats,
}

impl<B> fmt::Debug for Subscriber<B> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("interest", &self.interest)
            .field("position", &self.position)
            .field("ready", &self.ready.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Subscriber<NatsBackfill> {
    /// The events of `interest`; from `from_seq` (catch-up, then live) or from the next live message. The log
    /// is read with the `read_events` query ([`NatsBackfill`]). Waits up to [`SUBSCRIBE_CONFIRM_TIMEOUT`] for
    /// the server to confirm the subscription, as [`Subscriber::with_backfill`] does.
    ///
    /// # Errors
    ///
    /// [`Error::Subscribe`] when the client refuses the subscription (it is closed), [`Error::Confirm`] when
    /// the server does not confirm it in time (NATS is down).
    pub async fn new(
        client: Client,
        interest: Interest,
        from_seq: Option<u64>,
    ) -> Result<Self, Error> {
        let backfill = NatsBackfill::new(client.clone());
        Self::with_backfill(client, backfill, interest, from_seq).await
    }
}

impl<B: Backfill> Subscriber<B> {
    /// A stream that reads the log through `backfill`, from `from_seq` on (0 reads as 1), or, without it,
    /// from the first live message on. It subscribes, and waits until the server has the
    /// subscription, before it reads anything: no event falls between the log and the live messages, and
    /// every event published after this returns reaches the stream. Nothing is read from the log before the
    /// first call to [`Subscriber::next`].
    ///
    /// # Errors
    ///
    /// As [`Subscriber::new`]: [`Error::Subscribe`] or [`Error::Confirm`].
    pub async fn with_backfill(
        client: Client,
        backfill: B,
        interest: Interest,
        from_seq: Option<u64>,
    ) -> Result<Self, Error> {
        let live = client.subscribe(subject_of(&interest)).await?;
        confirm_subscriptions(&client).await?;
        let statistics = client.statistics();
        let connects_seen = statistics.connects.load(Ordering::Relaxed);
        let mut subscriber = Self {
            interest,
            live,
            backfill,
            statistics,
            connects_seen,
            position: Position::default(),
            phase: Phase::Live,
            held: None,
            ready: VecDeque::new(),
            retry: Retry::default(),
            stats: Stats::default(),
        };
        if let Some(from_seq) = from_seq {
            let from_seq = from_seq.max(1);
            subscriber.position.covered_seq = Some(from_seq - 1);
            subscriber.phase = Phase::Reading {
                next_seq: from_seq,
                pending: None,
            };
        }
        Ok(subscriber)
    }

    /// What the stream follows.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// What the stream has done so far: skipped, dropped, gaps, log reads, reconnects.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The log reader, for its own counters ([`NatsBackfill::undecodable`]).
    pub fn backfill(&self) -> &B {
        &self.backfill
    }

    /// The next envelope; `None` once the subscription has ended (the client closed). An error leaves the
    /// stream usable: call again to go on. Cancel-safe: dropping the future loses nothing. It waits for a
    /// live message (checking for a reconnect every [`RECONNECT_POLL`]) or for a page of the log, up to
    /// [`READ_EVENTS_PAGE_MAX`] envelopes held at once.
    ///
    /// # Errors
    ///
    /// [`Error::Backfill`] when a read of the log failed: the next call tries it again after a backoff (50 ms
    /// doubling up to 2 s). [`Error::Unfilled`] when the log ended short of a gap: the seqs it names stay
    /// missing, and the next call goes on with the live event.
    pub async fn next(&mut self) -> Option<Result<Envelope, Error>> {
        loop {
            if let Some(envelope) = self.ready.pop_front() {
                return Some(Ok(envelope));
            }
            if let Phase::Reading { .. } = self.phase {
                if let Err(error) = self.read_page().await {
                    return Some(Err(error));
                }
                continue;
            }
            if let Some(envelope) = self.held.take() {
                self.accept(*envelope);
                continue;
            }
            if self.reconnected() {
                self.catch_up();
                continue;
            }
            tokio::select! {
                message = self.live.next() => match message {
                    Some(message) => self.receive(&message),
                    None => return None,
                },
                () = tokio::time::sleep(RECONNECT_POLL) => {}
            }
        }
    }

    /// Decodes one live message. When the client has reconnected since the last look, the messages of the
    /// outage are lost, and this one may come from before or after it: the stream catches up to the log's
    /// end first, then takes this one (most likely as a duplicate).
    fn receive(&mut self, message: &Message) {
        let Some(envelope) = decode(message).filter(|envelope| self.interest.matches(envelope))
        else {
            self.stats.undecodable += 1;
            return;
        };
        if self.reconnected() {
            self.catch_up();
            self.held = Some(Box::new(envelope));
        } else {
            self.accept(envelope);
        }
    }

    /// Whether the client has connected again since the last look.
    fn reconnected(&mut self) -> bool {
        let connects = self.statistics.connects.load(Ordering::Relaxed);
        let changed = connects != self.connects_seen;
        self.connects_seen = connects;
        changed
    }

    /// Reads the log from the covered seq to its end. Without a covered seq the stream has no past yet, and
    /// nothing to catch up.
    fn catch_up(&mut self) {
        if let Some(covered_seq) = self.position.covered_seq {
            self.stats.reconnects += 1;
            self.phase = Phase::Reading {
                next_seq: covered_seq + 1,
                pending: None,
            };
        }
    }

    /// Takes one live envelope: delivers it, drops it, or starts a gap fill before it.
    fn accept(&mut self, envelope: Envelope) {
        if self.is_duplicate(&envelope) {
            self.stats.duplicates += 1;
            return;
        }
        match self.gap_before(&envelope) {
            None => self.deliver(envelope),
            Some(next_seq) => {
                self.stats.gaps += 1;
                self.phase = Phase::Reading {
                    next_seq,
                    pending: Some(Box::new(envelope)),
                };
            }
        }
    }

    fn is_duplicate(&self, envelope: &Envelope) -> bool {
        let position = &self.position;
        position.covered_seq.is_some_and(|seq| envelope.seq <= seq)
            || position
                .room_version
                .is_some_and(|version| envelope.version <= version)
    }

    /// The seq to read the log from when `envelope` does not come right after what was delivered, as far
    /// as the stream can tell; `None` when it does.
    fn gap_before(&self, envelope: &Envelope) -> Option<u64> {
        // Without a covered seq the stream started live and has no past to be gap-free against.
        let next_seq = self.position.covered_seq? + 1;
        let follows = envelope.seq == next_seq
            || match self.interest {
                Interest::All => false,
                Interest::Room(_) => match self.position.room_version {
                    Some(version) => envelope.version == version + 1,
                    None => envelope.version == 1,
                },
                // Seqs are sparse on a user subject: a gap cannot be seen from the numbers.
                Interest::Candidate(_) => true,
            };
        (!follows).then_some(next_seq)
    }

    fn deliver(&mut self, envelope: Envelope) {
        let position = &mut self.position;
        position.covered_seq = Some(
            position
                .covered_seq
                .map_or(envelope.seq, |seq| seq.max(envelope.seq)),
        );
        if let Interest::Room(_) = self.interest {
            position.room_version = Some(envelope.version);
        }
        self.ready.push_back(envelope);
        assert!(
            self.ready.len() <= READY_MAX,
            "the subscriber's queue is bounded"
        );
    }

    /// Reads one page of the log and delivers its matching envelopes; ends the reading when it has reached the
    /// pending live envelope, the room's missing versions, or the log's end.
    async fn read_page(&mut self) -> Result<(), Error> {
        let Phase::Reading { next_seq, pending } = &self.phase else {
            return Ok(());
        };
        let next_seq = *next_seq;
        let until_seq = pending.as_ref().map(|envelope| envelope.seq);
        let limit = until_seq.map_or(READ_EVENTS_PAGE_MAX, |until| {
            usize::try_from(until.saturating_sub(next_seq))
                .map_or(READ_EVENTS_PAGE_MAX, |n| n.min(READ_EVENTS_PAGE_MAX))
        });
        if limit == 0 || self.room_gap_closed() {
            return self.end_reading(next_seq, false);
        }
        self.retry.wait().await;
        let page = match self.backfill.read_events(next_seq, limit).await {
            Ok(page) => page,
            Err(error) => {
                self.retry.failed();
                return Err(Error::Backfill(error));
            }
        };
        self.retry.succeeded();
        if page.is_empty() {
            return self.end_reading(next_seq, true);
        }
        let mut reached = next_seq;
        for envelope in page {
            // Defensive: skip what is behind, and stop at the live envelope.
            if envelope.seq < reached {
                continue;
            }
            if until_seq.is_some_and(|until| envelope.seq >= until) {
                break;
            }
            reached = envelope.seq + 1;
            if self.interest.matches(&envelope) && !self.is_duplicate(&envelope) {
                self.stats.from_log += 1;
                self.deliver(envelope);
            } else {
                self.position.covered_seq = Some(envelope.seq);
            }
        }
        if reached == next_seq {
            // Nothing usable in the page: treat it as the log's end rather than asking again forever.
            return self.end_reading(next_seq, true);
        }
        if let Phase::Reading { next_seq, .. } = &mut self.phase {
            *next_seq = reached;
        }
        Ok(())
    }

    /// Whether a room stream has found every version before its pending live envelope.
    fn room_gap_closed(&self) -> bool {
        let Phase::Reading {
            pending: Some(pending),
            ..
        } = &self.phase
        else {
            return false;
        };
        matches!(self.interest, Interest::Room(_))
            && self
                .position
                .room_version
                .is_some_and(|version| version + 1 == pending.version)
    }

    /// Goes live again, delivering the pending envelope. `log_ended` says the log had nothing from `next_seq` on.
    fn end_reading(&mut self, next_seq: u64, log_ended: bool) -> Result<(), Error> {
        let closed = self.room_gap_closed();
        let Phase::Reading { pending, .. } = std::mem::replace(&mut self.phase, Phase::Live) else {
            return Ok(());
        };
        let Some(pending) = pending else {
            // A catch-up: everything up to the log's end has been read.
            let covered = next_seq - 1;
            self.position.covered_seq = Some(
                self.position
                    .covered_seq
                    .map_or(covered, |seq| seq.max(covered)),
            );
            return Ok(());
        };
        let live_seq = pending.seq;
        self.deliver(*pending);
        if log_ended && !closed && next_seq < live_seq {
            return Err(Error::Unfilled {
                from_seq: next_seq,
                to_seq: live_seq - 1,
                live_seq,
            });
        }
        Ok(())
    }
}

/// Returns once the server has read every subscription the client sent so far (see `round_trip.rs`).
async fn confirm_subscriptions(client: &Client) -> Result<(), Error> {
    crate::round_trip::round_trip(client, SUBSCRIBE_CONFIRM_TIMEOUT)
        .await
        .map_err(Error::Confirm)
}

/// The envelope of a live message, by its `Content-Type` (JSON when it has none, the wire's default).
pub(crate) fn decode(message: &Message) -> Option<Envelope> {
    let content_type = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(header::CONTENT_TYPE));
    let encoding = match content_type {
        Some(value) => Encoding::from_content_type(value.as_str())?,
        None => Encoding::Json,
    };
    decode_envelope(encoding, &message.payload).ok()
}
