//! The outbox relay: the log is the outbox, and this publishes it to NATS.
//!
//! It reads committed envelopes after its durable cursor, publishes each to its room subject (and invitation
//! events also to the candidate's user subject) with the contract's headers, and advances the cursor only once
//! NATS has confirmed the batch: a flush in core mode, every PubAck in JetStream mode. While NATS is down the
//! engine keeps accepting commands. The relay is supervised: every failure (NATS down, a log read that fails, a
//! cursor write) is retried with capped backoff, from the last confirmed seq, until it is stopped; its state,
//! last error, retries and lag are in [`Relay::status`], and a warning is logged at the first failure of a
//! streak and then at most once a minute.
//!
//! Delivery is at least once. JetStream deduplicates by `Nats-Msg-Id` within its window, and on start the relay
//! reads the stream's last message (its `Cohost-Seq` and `Nats-Msg-Id`) to resume exactly after what the stream
//! already holds, so a restart after a long outage republishes nothing. A stream that holds events the log does
//! not ([`RelayError::StreamAhead`]) is refused. In core mode a retry can repeat messages; subscribers drop
//! duplicates by seq.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use cohost_engine::{
    Backoff, Clock, Engine, EventStream, FollowerSnapshot, FollowerStatus, Interest, SystemClock,
};
use cohost_proto::codec::encode_envelope;
use cohost_proto::subject::{self, header};
use cohost_proto::{Encoding, Envelope};
use futures::FutureExt;
use tokio::sync::watch;

/// Envelopes published per confirmation (one flush, or one wait for all PubAcks) and cursor write.
pub const BATCH_MAX: usize = 512;
/// How often the cursor is written while events flow: a sled flush per batch would cost more than the
/// publishing.
const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// How long one confirmation may take before the batch is retried; also how long [`Relay::start`] waits for
/// the stream's answer before leaving it to the relay's retries.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream's deduplication window for the stream the relay creates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The relay's name among the log's followers.
pub const FOLLOWER: &str = "relay";

/// Where events go: plain NATS subjects, or the `COHOST` JetStream stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain subjects: a batch is confirmed by a server round trip, and nothing is kept for subscribers that
    /// were away (they fill gaps from the log). A retry can repeat messages.
    Core,
    /// The stream `COHOST` (created or updated at start): a batch is confirmed by every PubAck, and the
    /// stream drops repeats by `Nats-Msg-Id` within [`DUPLICATE_WINDOW`].
    JetStream,
}

/// How a relay publishes, and where it keeps its cursor. [`RelayConfig::new`] gives the defaults of one node.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Core subjects or the JetStream stream.
    pub mode: Mode,
    /// The payload's encoding, announced by `Content-Type`: JSON (the default) or postcard.
    pub encoding: Encoding,
    /// The cursor's name in the store; one per relay.
    pub sink: String,
    /// The longest wait between retries while NATS is down.
    pub backoff_max: Duration,
    /// In cluster mode, the partition whose engine this relay follows: its events carry `Cohost-Partition`,
    /// and the relay resumes from its cursor alone (the stream's last message may be any partition's).
    pub partition: Option<u32>,
    /// Replicas of the stream `COHOST` when the relay creates it.
    pub replicas: usize,
}

impl RelayConfig {
    /// JSON payloads, the cursor named after the mode (`nats` or `jetstream`, so each mode keeps its own
    /// position), retries backing off up to 5 s, single node, one replica.
    pub fn new(mode: Mode) -> Self {
        let sink = match mode {
            Mode::Core => "nats",
            Mode::JetStream => "jetstream",
        };
        Self {
            mode,
            encoding: Encoding::Json,
            sink: sink.into(),
            backoff_max: Duration::from_secs(5),
            partition: None,
            replicas: 1,
        }
    }
}

/// A running relay. Dropping it stops it as [`Relay::stop`] does, without waiting: the task ends at its next wait,
/// saving its cursor on the way when it is behind.
#[derive(Debug)]
pub struct Relay {
    follower: Arc<FollowerStatus>,
    published: Arc<AtomicU64>,
    engine: Engine,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a relay could not start. Once started, a relay never fails: it retries, and shows why in its status.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The engine could not read the relay's cursor (a store failure).
    #[error("engine: {0}")]
    Engine(#[from] cohost_engine::Error),
    /// The JetStream stream holds events past the end of the log: it was written from another data directory
    /// (this one was wiped, or restored from a backup). Publishing would give old seqs new meanings, and waiting
    /// for the log to reach the stream would wait for events that may never come.
    #[error(
        "the JetStream stream {stream} holds events up to seq {stream_seq} but the log ends at seq {log_seq}: \
         the stream is ahead of the log (a wiped data directory or a restored backup); restore the data \
         directory that wrote the stream, or purge the stream if the log is the truth",
        stream = subject::STREAM
    )]
    StreamAhead {
        /// The `Cohost-Seq` of the stream's last message.
        stream_seq: u64,
        /// The log's last seq.
        log_seq: u64,
    },
}

impl Relay {
    /// Starts relaying from the sink's durable cursor. In JetStream mode it first creates or updates the stream
    /// and reads its last message, waiting up to 5 s for NATS to answer (if it does not, the relay goes on
    /// retrying in the background), and refuses a stream ahead of the log with [`RelayError::StreamAhead`].
    /// In core mode it returns at once. Either way NATS being down is not an error: the relay publishes once
    /// it is back, and the engine accepts commands meanwhile.
    ///
    /// It spawns one task on the current tokio runtime (so it must be called within one), which reads up to
    /// [`BATCH_MAX`] envelopes at a time from the log and writes the cursor (a store flush) on the blocking
    /// pool, at most every 100 ms. One relay per sink: two relays sharing a cursor publish each event twice.
    ///
    /// # Errors
    ///
    /// [`RelayError::Engine`] when the cursor cannot be read, [`RelayError::StreamAhead`] when the stream holds
    /// seqs the log does not.
    ///
    /// # Examples
    ///
    /// Every committed event reaches its room subject, with the contract's headers:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = cohost_nats::test_server::TestServer::start(false);
    /// # let url = server.url();
    /// use cohost_engine::{Config, Engine, Options};
    /// use cohost_nats::relay::{Mode, Relay, RelayConfig};
    /// use cohost_proto::{Actor, Command, CreateRoom, RoomId, UserId};
    /// use futures::StreamExt;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let engine = Engine::open(Config::new(dir.path()))?;
    /// let client = cohost_nats::connect(&url).await?;
    /// let mut room = client.subscribe("cohost.v1.room.friday").await?;
    /// let relay = Relay::start(engine.clone(), client, RelayConfig::new(Mode::Core)).await?;
    ///
    /// let create = CreateRoom { room_id: RoomId::new("friday")?, title: None, max_cohosts: None };
    /// let alice = Actor::User(UserId::new("alice")?);
    /// engine.execute(alice, Command::CreateRoom(create), Options::default()).await?;
    ///
    /// let message = room.next().await.expect("room_created is published");
    /// let headers = message.headers.expect("the contract's headers");
    /// assert_eq!(headers.get("Cohost-Seq").map(|v| v.as_str()), Some("1"));
    /// assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some("friday:1"));
    /// relay.stop().await; // saves the cursor: a restart publishes nothing twice
    /// assert_eq!(engine.cursor("nats")?, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(
        engine: Engine,
        client: async_nats::Client,
        config: RelayConfig,
    ) -> Result<Relay, RelayError> {
        let cursor = engine.cursor(&config.sink)?;
        let follower = Arc::new(FollowerStatus::new(FOLLOWER, cursor));
        let published = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let retrier = Retrier {
            follower: follower.clone(),
            stopped,
            backoff_max: config.backoff_max,
        };
        let worker = Worker {
            engine: engine.clone(),
            client,
            config,
            published: published.clone(),
            retrier,
            saved_seq: cursor,
            saved_at: Instant::now(),
        };
        let ready = worker.first_look().await?;
        let task = tokio::spawn(worker.run(ready));
        Ok(Relay {
            follower,
            published,
            engine,
            stop,
            task,
        })
    }

    /// The relay's state, last error, retries and confirmed seq (its `handled_seq`). Cheap: a copy of the
    /// status under a lock, never a wait on NATS.
    pub fn status(&self) -> FollowerSnapshot {
        self.follower.snapshot()
    }

    /// The status the relay writes, for readers that outlive a borrow of the relay (`/healthz`, `/metrics`).
    pub fn follower(&self) -> Arc<FollowerStatus> {
        self.follower.clone()
    }

    /// Messages published and confirmed since the relay started.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events committed but not yet confirmed by NATS.
    pub fn lag(&self) -> u64 {
        self.status().lag(self.engine.last_seq())
    }

    /// Stops after the batch in flight and saves the cursor; what was confirmed stays confirmed. Waits for the
    /// relay's task to end: at once when it is idle, a few seconds at most when NATS or the store is failing
    /// (a confirmation's 5 s timeout, one backoff).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Where to resume: after `after`, and, when the stream holds the room message of `after + 1` but not its user
/// message, skipping that room message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume {
    after: u64,
    skip_room_of: Option<u64>,
}

/// What the relay starts from: the stream (JetStream mode), and where the stream says to resume (`None` for an
/// empty stream, or in core mode).
struct Ready {
    jetstream: Option<jetstream::Context>,
    found: Option<Resume>,
}

/// Why the stream's position is not known.
#[derive(Debug, thiserror::Error)]
enum Unready {
    /// NATS did not answer, or the log could not be read.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Ahead(RelayError),
}

struct Worker {
    engine: Engine,
    client: async_nats::Client,
    config: RelayConfig,
    published: Arc<AtomicU64>,
    retrier: Retrier,
    /// What the durable cursor holds, and when it was written.
    saved_seq: u64,
    saved_at: Instant,
}

/// Retries with capped backoff until success or stop, and records every failure and recovery.
struct Retrier {
    follower: Arc<FollowerStatus>,
    stopped: watch::Receiver<bool>,
    backoff_max: Duration,
}

/// What reading the next batch gave.
enum Next {
    Batch(Vec<Envelope>),
    /// The log could not be read.
    Failed(String),
    /// Stopped, or the engine shut down.
    Ended,
}

impl Worker {
    /// Core mode: ready at once. JetStream mode: one try, up to `CONFIRM_TIMEOUT`, at preparing the stream and
    /// reading where it ends. A stream ahead of the log is an error; no answer is left to [`Worker::run`]'s
    /// retries (`None`).
    async fn first_look(&self) -> Result<Option<Ready>, RelayError> {
        if self.config.mode == Mode::Core {
            return Ok(Some(Ready {
                jetstream: None,
                found: None,
            }));
        }
        let context = jetstream::new(self.client.clone());
        if self.config.partition.is_some() {
            // A partition's relay: the daemon made the stream ready once ([`ensure_stream`]); a takeover waits
            // for no stream update.
            return Ok(Some(Ready {
                jetstream: Some(context),
                found: None,
            }));
        }
        let looked = tokio::time::timeout(
            CONFIRM_TIMEOUT,
            stream_resume(&context, &self.engine, &self.config),
        )
        .await;
        let error = match looked {
            Ok(Ok(found)) => {
                let jetstream = Some(context);
                return Ok(Some(Ready { jetstream, found }));
            }
            Ok(Err(Unready::Ahead(error))) => return Err(error),
            Ok(Err(Unready::Failed(error))) => error,
            Err(_) => "no answer in time".to_owned(),
        };
        self.retrier.failed("preparing the stream", &error);
        Ok(None)
    }

    /// Prepares (unless `ready`), then follows the log until stopped.
    async fn run(mut self, ready: Option<Ready>) {
        let ready = match ready {
            Some(ready) => Some(ready),
            None => self.prepare().await,
        };
        if let Some(Ready { jetstream, found }) = ready
            && let Some(resume) = self.resume(found).await
        {
            self.supervise(jetstream, resume).await;
        }
        self.retrier.follower.stopped();
    }

    /// Prepares the stream and reads where it ends, retrying until NATS answers and the stream is not ahead of
    /// the log; `None` once stopped.
    async fn prepare(&mut self) -> Option<Ready> {
        let context = jetstream::new(self.client.clone());
        let (engine, config) = (&self.engine, &self.config);
        let found = self
            .retrier
            .retry("preparing the stream", || {
                stream_resume(&context, engine, config)
            })
            .await?;
        let jetstream = Some(context);
        Some(Ready { jetstream, found })
    }

    /// Where to resume: after what the stream holds when that is at or past the cursor (a crash between PubAck
    /// and cursor write leaves the cursor behind: the stream's position is adopted, as confirmed, and saved),
    /// else after the cursor. `None` once stopped.
    async fn resume(&mut self, found: Option<Resume>) -> Option<Resume> {
        let cursor = self.retrier.follower.handled_seq();
        match found {
            Some(found) if found.after >= cursor => {
                if found.after > cursor {
                    self.retrier.follower.handled(found.after);
                    if !self.save_cursor(found.after).await {
                        return None;
                    }
                }
                Some(found)
            }
            _ => Some(Resume {
                after: cursor,
                skip_room_of: None,
            }),
        }
    }

    /// Follows the log until stopped. A read of the log that fails is recorded and retried with backoff,
    /// subscribing again after the last confirmed seq.
    async fn supervise(&mut self, jetstream: Option<jetstream::Context>, mut resume: Resume) {
        let mut backoff = Backoff::new(self.config.backoff_max);
        loop {
            let before = self.retrier.follower.handled_seq();
            let Some(error) = self.follow(jetstream.as_ref(), &mut resume).await else {
                return;
            };
            self.retrier.failed("reading the log", &error);
            if self.retrier.follower.handled_seq() > before {
                backoff.reset();
            }
            let stopped = *self.retrier.stopped.borrow();
            if stopped
                || !backoff
                    .sleep_unless_stopped(&mut self.retrier.stopped)
                    .await
            {
                self.save_if_stale().await;
                return;
            }
            resume.after = self.retrier.follower.handled_seq();
        }
    }

    /// Publishes every envelope after `resume`, batch by batch, until stopped (`None`) or a read of the log
    /// fails (its error).
    async fn follow(
        &mut self,
        jetstream: Option<&jetstream::Context>,
        resume: &mut Resume,
    ) -> Option<String> {
        let mut events = self.engine.subscribe(resume.after + 1, Interest::All);
        let mut lag_logged = Instant::now();
        loop {
            let confirmed = self.retrier.follower.handled_seq();
            let stale = confirmed > self.saved_seq;
            let next = tokio::select! {
                next = self.next_batch(&mut events) => next,
                // Quiet for a while with a stale cursor: save it now rather than with the next batch.
                _ = tokio::time::sleep(CURSOR_EVERY), if stale => {
                    if !self.save_cursor(confirmed).await {
                        return None;
                    }
                    continue;
                }
            };
            let batch = match next {
                Next::Batch(batch) => batch,
                Next::Failed(error) => return Some(error),
                Next::Ended => {
                    self.save_if_stale().await;
                    return None;
                }
            };
            let last = batch
                .last()
                .map(|e| e.seq)
                .expect("batches are never empty");
            let skip = resume.skip_room_of.take();
            let (client, config) = (&self.client, &self.config);
            let published = self
                .retrier
                .retry("publishing", || {
                    publish(client, jetstream, config, &batch, skip)
                })
                .await;
            let Some(count) = published else {
                self.save_if_stale().await;
                return None;
            };
            self.published.fetch_add(count, Ordering::Relaxed);
            self.retrier.follower.handled(last);
            if self.saved_at.elapsed() >= CURSOR_EVERY && !self.save_cursor(last).await {
                return None;
            }
            self.log_lag(last, &mut lag_logged);
        }
    }

    fn log_lag(&self, confirmed: u64, logged: &mut Instant) {
        let lag = self.engine.last_seq().saturating_sub(confirmed);
        if lag > 10 * BATCH_MAX as u64 && logged.elapsed() > Duration::from_secs(5) {
            tracing::info!(lag, confirmed, "relay catching up");
            *logged = Instant::now();
        }
    }

    /// Writes the cursor (a sled write and flush, so off the async workers), retrying store failures; false if
    /// stopped first. A cursor behind what NATS confirmed only means republishing after a crash.
    async fn save_cursor(&mut self, seq: u64) -> bool {
        let mut backoff = Backoff::new(self.config.backoff_max);
        loop {
            let (engine, sink) = (self.engine.clone(), self.config.sink.clone());
            let saved = tokio::task::spawn_blocking(move || engine.set_cursor(&sink, seq)).await;
            let error = match saved {
                Ok(Ok(())) => {
                    (self.saved_seq, self.saved_at) = (seq, Instant::now());
                    self.retrier.recovered();
                    return true;
                }
                Ok(Err(error)) => error.to_string(),
                Err(error) => format!("the write did not finish: {error}"),
            };
            self.retrier.failed("saving the cursor", &error);
            if !backoff
                .sleep_unless_stopped(&mut self.retrier.stopped)
                .await
            {
                return false;
            }
        }
    }

    /// Saves the cursor if it is behind what NATS confirmed.
    async fn save_if_stale(&mut self) {
        let confirmed = self.retrier.follower.handled_seq();
        if confirmed > self.saved_seq {
            self.save_cursor(confirmed).await;
        }
    }

    /// The next envelopes: waits for one, then takes what is already there, up to `BATCH_MAX`.
    async fn next_batch(&mut self, events: &mut EventStream) -> Next {
        let first = tokio::select! {
            next = events.next() => next,
            _ = self.retrier.stopped.changed() => return Next::Ended,
        };
        let mut batch = match first {
            Some(Ok(envelope)) => vec![envelope],
            Some(Err(error)) => return Next::Failed(error.to_string()),
            None => return Next::Ended,
        };
        while batch.len() < BATCH_MAX {
            // `EventStream::next` is cancel-safe: an unready poll loses nothing. A read that fails here fails
            // again at the next call, which reports it.
            match events.next().now_or_never() {
                Some(Some(Ok(envelope))) => batch.push(envelope),
                _ => break,
            }
        }
        Next::Batch(batch)
    }
}

impl Retrier {
    /// Runs `attempt` until it succeeds, backing off up to `backoff_max`; `None` once stopped.
    async fn retry<T, E, F, Fut>(&mut self, what: &str, mut attempt: F) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut backoff = Backoff::new(self.backoff_max);
        loop {
            if *self.stopped.borrow() {
                return None;
            }
            match attempt().await {
                Ok(value) => {
                    self.recovered();
                    return Some(value);
                }
                Err(error) => {
                    self.failed(what, &error);
                    if !backoff.sleep_unless_stopped(&mut self.stopped).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Records a failure that will be retried (commands are still accepted meanwhile).
    fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.follower.retrying(what, error, SystemClock.now_ms());
    }

    fn recovered(&self) {
        self.follower.recovered();
    }
}

/// The stream the relay publishes into.
fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: subject::STREAM.into(),
        subjects: vec![subject::ROOM_ALL.into(), subject::USER_ALL.into()],
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates or updates the stream `COHOST` with `replicas`: what a cluster node does once at start, before its
/// partitions' relays publish into it.
pub async fn ensure_stream(client: &async_nats::Client, replicas: usize) -> Result<(), String> {
    jetstream::new(client.clone())
        .create_or_update_stream(stream_config(replicas))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Creates or updates the stream, then resumes after what it already holds, from its last message (`None` for
/// an empty stream). A stream ahead of the log is [`Unready::Ahead`]. (A partition's relay in cluster mode
/// skips this: the stream's last message says nothing of one partition, and what the relay repeats after its
/// cursor the stream drops by `Nats-Msg-Id`.)
async fn stream_resume(
    context: &jetstream::Context,
    engine: &Engine,
    config: &RelayConfig,
) -> Result<Option<Resume>, Unready> {
    let Some((seq, on_user_subject)) = stream_end(context, config.replicas)
        .await
        .map_err(Unready::Failed)?
    else {
        return Ok(None);
    };
    let log_seq = engine.last_seq();
    if seq > log_seq {
        let stream_seq = seq;
        return Err(Unready::Ahead(RelayError::StreamAhead {
            stream_seq,
            log_seq,
        }));
    }
    let has_candidate = engine
        .read_events(seq, 1)
        .map_err(|e| Unready::Failed(format!("reading the log: {e}")))?
        .first()
        .is_some_and(|envelope| envelope.event.candidate().is_some());
    if on_user_subject || !has_candidate {
        return Ok(Some(Resume {
            after: seq,
            skip_room_of: None,
        }));
    }
    Ok(Some(Resume {
        after: seq - 1,
        skip_room_of: Some(seq),
    }))
}

/// Creates or updates the stream; then its last message's `Cohost-Seq`, and whether that message is an event's
/// `:user` copy. `None` for an empty stream.
async fn stream_end(
    context: &jetstream::Context,
    replicas: usize,
) -> Result<Option<(u64, bool)>, String> {
    context
        .create_or_update_stream(stream_config(replicas))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = context
        .get_stream(subject::STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let last = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    if last == 0 {
        return Ok(None);
    }
    let message = stream
        .get_raw_message(last)
        .await
        .map_err(|e| e.to_string())?;
    let read = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    let Some(seq) = read(header::SEQ).and_then(|v| v.parse::<u64>().ok()) else {
        return Err(format!(
            "the stream's last message (stream seq {last}) has no {} header",
            header::SEQ
        ));
    };
    let on_user_subject = read(header::MSG_ID).is_some_and(|id| id.ends_with(":user"));
    Ok(Some((seq, on_user_subject)))
}

fn headers(envelope: &Envelope, msg_id: String, config: &RelayConfig) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, msg_id);
    headers.insert(header::SEQ, envelope.seq.to_string());
    headers.insert(header::VERSION, envelope.version.to_string());
    headers.insert(header::CONTENT_TYPE, config.encoding.content_type());
    if let Some(partition) = config.partition {
        headers.insert(header::PARTITION, partition.to_string());
    }
    headers
}

/// The messages of one envelope: its room subject, then its candidate's user subject.
fn messages(
    envelope: &Envelope,
    config: &RelayConfig,
    skip_room: bool,
) -> Vec<(String, HeaderMap, Bytes)> {
    let payload = Bytes::from(encode_envelope(config.encoding, envelope));
    let mut out = Vec::with_capacity(2);
    if !skip_room {
        let room = headers(envelope, subject::room_msg_id(envelope), config);
        out.push((subject::room(&envelope.room_id), room, payload.clone()));
    }
    if let Some(candidate) = envelope.event.candidate() {
        let user = headers(envelope, subject::user_msg_id(envelope), config);
        out.push((subject::user(candidate), user, payload));
    }
    out
}

/// Publishes a batch and waits for NATS to confirm it; the number of messages confirmed.
async fn publish(
    client: &async_nats::Client,
    jetstream: Option<&jetstream::Context>,
    config: &RelayConfig,
    batch: &[Envelope],
    skip_room_of: Option<u64>,
) -> Result<u64, String> {
    let mut count = 0;
    let mut acks = Vec::new();
    for envelope in batch {
        for (subject, headers, payload) in
            messages(envelope, config, skip_room_of == Some(envelope.seq))
        {
            count += 1;
            match jetstream {
                None => client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| e.to_string())?,
                Some(context) => acks.push(
                    context
                        .publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            }
        }
    }
    let confirm = async {
        if jetstream.is_none() {
            // `flush` only writes the socket; the round trip is the server's confirmation.
            client.flush().await.map_err(|e| e.to_string())?;
            return crate::round_trip::round_trip(client, CONFIRM_TIMEOUT).await;
        }
        for ack in acks {
            ack.await.map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| "no confirmation in time".to_string())??;
    Ok(count)
}
