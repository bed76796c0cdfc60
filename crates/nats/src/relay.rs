//! The outbox relay: the log is the outbox, and this publishes it to NATS.
//!
//! It reads committed envelopes after its durable cursor, publishes each to its room subject (and invitation
//! events also to the candidate's user subject) with the contract's headers, and advances the cursor only once
//! NATS has confirmed the batch: a flush in core mode, every PubAck in JetStream mode. While NATS is down the
//! engine keeps accepting commands; the relay retries with capped backoff, and its lag is visible in
//! [`RelayStatus`] and in a log line.
//!
//! Delivery is at least once. JetStream deduplicates by `Nats-Msg-Id` within its window, and on start the relay
//! reads the stream's last message (its `Cohost-Seq` and `Nats-Msg-Id`) to resume exactly after what the stream
//! already holds, so a restart after a long outage republishes nothing. In core mode a retry can repeat
//! messages; subscribers drop duplicates by seq.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use cohost_engine::{Backoff, Engine, EventStream, Interest};
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
/// How long one confirmation may take before the batch is retried.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// JetStream's deduplication window for the stream the relay creates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Where events go: plain NATS subjects, or the `COHOST` JetStream stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Core,
    JetStream,
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub mode: Mode,
    pub encoding: Encoding,
    /// The cursor's name in the store; one per relay.
    pub sink: String,
    /// The longest wait between retries while NATS is down.
    pub backoff_max: Duration,
}

impl RelayConfig {
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
        }
    }
}

/// The relay's progress, readable while it runs.
#[derive(Debug, Default)]
pub struct RelayStatus {
    /// The last seq NATS confirmed (and the cursor holds).
    pub confirmed_seq: AtomicU64,
    /// Messages published and confirmed.
    pub published: AtomicU64,
    /// Failed attempts to publish a batch.
    pub failures: AtomicU64,
    /// Whether the last attempt reached NATS.
    pub connected: AtomicBool,
}

/// A running relay. Dropping it stops it as [`Relay::stop`] does, without waiting: the task ends at its next wait,
/// saving its cursor on the way when it is behind.
#[derive(Debug)]
pub struct Relay {
    status: Arc<RelayStatus>,
    engine: Engine,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("engine: {0}")]
    Engine(#[from] cohost_engine::Error),
}

impl Relay {
    /// Starts relaying from the sink's durable cursor. In JetStream mode it first creates or updates the stream
    /// (retrying until NATS answers).
    pub async fn start(
        engine: Engine,
        client: async_nats::Client,
        config: RelayConfig,
    ) -> Result<Relay, RelayError> {
        let cursor = engine.cursor(&config.sink)?;
        let status = Arc::new(RelayStatus::default());
        status.confirmed_seq.store(cursor, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let retrier = Retrier {
            status: status.clone(),
            stopped,
            backoff_max: config.backoff_max,
        };
        let worker = Worker {
            engine: engine.clone(),
            client,
            config,
            status: status.clone(),
            retrier,
        };
        let task = tokio::spawn(worker.run());
        Ok(Relay {
            status,
            engine,
            stop,
            task,
        })
    }

    /// A function that reads the relay's lag, for metrics that outlive a borrow of the relay.
    pub fn lag_probe(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let (engine, status) = (self.engine.clone(), self.status.clone());
        move || {
            engine
                .last_seq()
                .saturating_sub(status.confirmed_seq.load(Ordering::Relaxed))
        }
    }

    pub fn status(&self) -> &RelayStatus {
        &self.status
    }

    /// Events committed but not yet confirmed by NATS.
    pub fn lag(&self) -> u64 {
        self.engine
            .last_seq()
            .saturating_sub(self.status.confirmed_seq.load(Ordering::Relaxed))
    }

    /// Stops after the batch in flight; what was confirmed stays confirmed.
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

struct Worker {
    engine: Engine,
    client: async_nats::Client,
    config: RelayConfig,
    status: Arc<RelayStatus>,
    retrier: Retrier,
}

/// Retries with capped backoff until success or stop, and keeps the connection status.
struct Retrier {
    status: Arc<RelayStatus>,
    stopped: watch::Receiver<bool>,
    backoff_max: Duration,
}

impl Worker {
    async fn run(mut self) {
        let Some((jetstream, resume)) = self.start().await else {
            return;
        };
        self.follow(jetstream, resume).await;
    }

    /// Prepares the stream (JetStream mode) and decides where to resume; `None` once stopped.
    async fn start(&mut self) -> Option<(Option<jetstream::Context>, Resume)> {
        let jetstream = match self.config.mode {
            Mode::Core => None,
            Mode::JetStream => Some(self.prepare_stream().await?),
        };
        let mut resume = Resume {
            after: self.status.confirmed_seq.load(Ordering::Relaxed),
            skip_room_of: None,
        };
        if let Some(context) = &jetstream {
            match self
                .retrier
                .retry("reading the stream's last message", || {
                    stream_resume(context, &self.engine)
                })
                .await
            {
                Some(Some(found)) if found.after >= resume.after => {
                    // The stream is ahead of the cursor (a crash between PubAck and cursor write): adopt it.
                    if !self.save_cursor(found.after).await {
                        return None;
                    }
                    self.status
                        .confirmed_seq
                        .store(found.after, Ordering::Relaxed);
                    resume = found;
                }
                Some(_) => {}
                None => return None,
            }
        }
        Some((jetstream, resume))
    }

    /// Publishes every envelope after `resume`, batch by batch, until stopped.
    async fn follow(&mut self, jetstream: Option<jetstream::Context>, mut resume: Resume) {
        let mut events = self.engine.subscribe(resume.after + 1, Interest::All);
        let mut lag_logged = Instant::now();
        let mut saved_seq = self.status.confirmed_seq.load(Ordering::Relaxed);
        let mut saved_at = Instant::now();
        loop {
            let confirmed = self.status.confirmed_seq.load(Ordering::Relaxed);
            let stale = confirmed > saved_seq;
            let next = tokio::select! {
                batch = self.next_batch(&mut events) => batch,
                // Quiet for a while with a stale cursor: save it now rather than with the next batch.
                _ = tokio::time::sleep(CURSOR_EVERY), if stale => {
                    if !self.save_cursor(confirmed).await {
                        return;
                    }
                    (saved_seq, saved_at) = (confirmed, Instant::now());
                    continue;
                }
            };
            let Some(batch) = next else {
                if stale {
                    self.save_cursor(confirmed).await;
                }
                return;
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
                    publish(client, jetstream.as_ref(), config, &batch, skip)
                })
                .await;
            let Some(count) = published else {
                self.save_cursor(confirmed).await;
                return;
            };
            self.status.published.fetch_add(count, Ordering::Relaxed);
            self.status.confirmed_seq.store(last, Ordering::Relaxed);
            if saved_at.elapsed() >= CURSOR_EVERY {
                if !self.save_cursor(last).await {
                    return;
                }
                (saved_seq, saved_at) = (last, Instant::now());
            }
            let lag = self.engine.last_seq().saturating_sub(last);
            if lag > 10 * BATCH_MAX as u64 && lag_logged.elapsed() > Duration::from_secs(5) {
                tracing::info!(lag, confirmed = last, "relay catching up");
                lag_logged = Instant::now();
            }
        }
    }

    /// Writes the cursor (a sled write and flush, so off the async workers), retrying store failures; false if
    /// stopped first. A cursor behind what NATS confirmed only means republishing after a crash.
    async fn save_cursor(&mut self, seq: u64) -> bool {
        let mut backoff = Backoff::new(self.config.backoff_max);
        loop {
            let (engine, sink) = (self.engine.clone(), self.config.sink.clone());
            let saved = tokio::task::spawn_blocking(move || engine.set_cursor(&sink, seq)).await;
            match saved {
                Ok(Ok(())) => return true,
                Ok(Err(error)) => {
                    tracing::warn!(%error, seq, "relay cannot save its cursor; retrying")
                }
                Err(error) => {
                    tracing::warn!(%error, seq, "relay cursor write did not finish; retrying")
                }
            }
            if !backoff
                .sleep_unless_stopped(&mut self.retrier.stopped)
                .await
            {
                return false;
            }
        }
    }

    /// The next envelopes: waits for one, then takes what is already there, up to `BATCH_MAX`.
    async fn next_batch(&mut self, events: &mut EventStream) -> Option<Vec<Envelope>> {
        let first = tokio::select! {
            next = events.next() => next?,
            _ = self.retrier.stopped.changed() => return None,
        };
        let mut batch = vec![
            first
                .map_err(|e| tracing::error!(error = %e, "relay cannot read the log"))
                .ok()?,
        ];
        while batch.len() < BATCH_MAX {
            // `EventStream::next` is cancel-safe: an unready poll loses nothing.
            match events.next().now_or_never() {
                Some(Some(Ok(envelope))) => batch.push(envelope),
                _ => break,
            }
        }
        Some(batch)
    }

    async fn prepare_stream(&mut self) -> Option<jetstream::Context> {
        let context = jetstream::new(self.client.clone());
        let config = stream::Config {
            name: subject::STREAM.into(),
            subjects: vec![subject::ROOM_ALL.into(), subject::USER_ALL.into()],
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let created = self
            .retrier
            .retry("creating the stream", || {
                context.create_or_update_stream(config.clone())
            })
            .await;
        created.map(|_| context)
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
                    self.status.connected.store(true, Ordering::Relaxed);
                    return Some(value);
                }
                Err(error) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    if self.status.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, what, "relay cannot reach NATS; commands are still accepted, retrying");
                    }
                    if !backoff.sleep_unless_stopped(&mut self.stopped).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// What the stream already holds, from its last message.
async fn stream_resume(
    context: &jetstream::Context,
    engine: &Engine,
) -> Result<Option<Resume>, String> {
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
    let has_candidate = engine
        .read_events(seq, 1)
        .map_err(|e| e.to_string())?
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

fn headers(envelope: &Envelope, msg_id: String, encoding: Encoding) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, msg_id);
    headers.insert(header::SEQ, envelope.seq.to_string());
    headers.insert(header::VERSION, envelope.version.to_string());
    headers.insert(header::CONTENT_TYPE, encoding.content_type());
    headers
}

/// The messages of one envelope: its room subject, then its candidate's user subject.
fn messages(
    envelope: &Envelope,
    encoding: Encoding,
    skip_room: bool,
) -> Vec<(String, HeaderMap, Bytes)> {
    let payload = Bytes::from(encode_envelope(encoding, envelope));
    let mut out = Vec::with_capacity(2);
    if !skip_room {
        let room = headers(envelope, subject::room_msg_id(envelope), encoding);
        out.push((subject::room(&envelope.room_id), room, payload.clone()));
    }
    if let Some(candidate) = envelope.event.candidate() {
        let user = headers(envelope, subject::user_msg_id(envelope), encoding);
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
        for (subject, headers, payload) in messages(
            envelope,
            config.encoding,
            skip_room_of == Some(envelope.seq),
        ) {
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
