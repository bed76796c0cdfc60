//! The outbox relay over NATS: end-to-end latency from a command's ack to a subscriber's receipt, and relay
//! throughput against a plain async-nats publish loop of the same messages, all in one process.
//!
//! Every NATS server is a private `nats-server` on a free loopback port (`TestServer`), never the machine's
//! shared one. Engines run on a `ManualClock` at the clients' mirror time, so the mirrors match the engine
//! exactly and no invitation expires during a run.
//!
//! - Latency (core mode): 64 client tasks send an open-loop, paced command mix over their own live rooms. Each
//!   knows from its `cohost-core` mirror which room versions an acked command took and records the ack instant
//!   per (room, version). A plain async-nats subscriber on `cohost.v1.room.>`, on its own thread and runtime,
//!   records the receipt instant per (room, `Cohost-Version`). The two are joined after the run.
//! - Throughput: an engine is pre-filled with the command mix while no relay runs. Then, per mode, the relay
//!   starts from cursor 0 and is timed until its lag is 0; the ceiling is the same messages (subjects,
//!   headers, payloads; the JSON encoded beforehand) published by a plain loop: core publishes all then
//!   flushes; JetStream awaits its PubAcks per batch of `BATCH_MAX` events as the relay does, and, as a
//!   second ceiling, keeps a window of PubAcks in flight instead. Every run gets a fresh server.
//!
//! `cargo bench -p cohost-benches --bench nats`. Environment:
//! - `COHOST_BENCH_QUICK=1`: a smoke run (1 s latency runs, 50k pre-filled events, 1 throughput run per mode);
//! - `COHOST_BENCH_DIR`: where data directories go (default: the system temp dir; it must be a real disk);
//! - `COHOST_BENCH_SECS` (per latency run), `COHOST_BENCH_RUNS` (throughput runs per mode),
//!   `COHOST_BENCH_PREFILL_EVENTS`: override one setting;
//! - `COHOST_BENCH_ONLY=latency,core,jetstream`: run only those phases (for profiling one).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use cohost_benches::mix::{self, Client, MIRROR_NOW_MS};
use cohost_benches::{Common, Goal, median, percentile};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_nats::relay::{BATCH_MAX, DUPLICATE_WINDOW, Mode, Relay, RelayConfig};
use cohost_nats::test_server::TestServer;
use cohost_proto::codec::encode_envelope;
use cohost_proto::subject::{self, header};
use cohost_proto::{Encoding, Envelope, Event, RoomId, UserId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;

const ROOMS: usize = 4_096;
/// Paced clients in the latency runs; each keeps any number of commands in flight, one per room at most.
const CLIENTS: usize = 64;
/// Closed-loop clients that pre-fill the log for the throughput runs.
const PREFILL_CLIENTS: usize = 256;
const ROOM_PREFIX: &str = "room";
/// Paced rates of the latency runs, in commands per second.
const RATES_PER_S: [f64; 2] = [10_000.0, 50_000.0];
/// The longest the relay may take to catch up before the bench gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the subscriber keeps listening after the relay confirmed everything.
const DRAIN: Duration = Duration::from_millis(300);
/// PubAcks the pipelined JetStream ceiling keeps in flight (async-nats allows 5000 by default).
const PIPELINE_WINDOW: usize = 4_096;
/// Envelopes read from the log per call when preparing the ceiling's events (the engine's page limit).
const READ_PAGE: usize = 1_000;

const GOAL_P99: Goal = Goal::at_most("p99 from ack to subscriber at 10k commands/s", 2.0, "ms");
const GOAL_AT_RATE_PER_S: f64 = 10_000.0;

struct Settings {
    common: Common,
    latency: Duration,
    prefill_events: u64,
}

impl Settings {
    fn from_env() -> Self {
        let common = Common::from_env(3, 5.0, 1, 1.0);
        Self {
            latency: Duration::from_secs_f64(common.secs),
            prefill_events: common.setting("COHOST_BENCH_PREFILL_EVENTS", 200_000, 50_000),
            common,
        }
    }
}

fn open(dir: &Path) -> Engine {
    let clock = Arc::new(ManualClock::new(MIRROR_NOW_MS));
    Engine::open(Config::new(dir).with_clock(clock)).expect("a fresh data directory opens")
}

async fn connect(server: &TestServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("the private nats-server accepts connections")
}

/// Polls until the relay has confirmed everything committed; how long that took from `since`.
async fn caught_up(relay: &Relay, since: Instant) -> Duration {
    while relay.lag() > 0 {
        assert!(
            since.elapsed() < CATCH_UP_TIMEOUT,
            "the relay did not catch up in {CATCH_UP_TIMEOUT:?} (lag {})",
            relay.lag()
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    since.elapsed()
}

/// When a subscriber received one room event.
struct Receipt {
    room: usize,
    version: u64,
    at: Instant,
}

/// Which of our rooms a message is about, and its room version.
fn receipt_key(message: &async_nats::Message) -> Option<(usize, u64)> {
    let prefix = format!("cohost.v1.room.{ROOM_PREFIX}-");
    let room = message
        .subject
        .as_str()
        .strip_prefix(&prefix)?
        .parse()
        .ok()?;
    let version = message.headers.as_ref()?.get(header::VERSION)?;
    Some((room, version.as_str().parse().ok()?))
}

/// A plain subscriber on `cohost.v1.room.>` on its own thread and runtime, as another process would be.
/// Returns once the server knows the subscription; send on the returned stop to collect the receipts.
async fn start_subscriber(
    url: String,
) -> (oneshot::Sender<()>, std::thread::JoinHandle<Vec<Receipt>>) {
    let (ready, subscribed) = oneshot::channel();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the subscriber");
        runtime.block_on(async move {
            let client = async_nats::connect(url).await.expect("subscriber connects");
            let mut messages = client
                .subscribe(subject::ROOM_ALL)
                .await
                .expect("subscribes");
            client
                .flush()
                .await
                .expect("the subscription reaches the server");
            let _ = ready.send(());
            let mut receipts = Vec::new();
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let at = Instant::now();
                        let Some(message) = message else { break };
                        if let Some((room, version)) = receipt_key(&message) {
                            receipts.push(Receipt { room, version, at });
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
            receipts
        })
    });
    subscribed.await.expect("the subscriber starts");
    (stop, thread)
}

/// What one paced client saw.
#[derive(Default)]
struct Acks {
    /// (mirror room, version, ack instant) of every acked event.
    events: Vec<(usize, u64, Instant)>,
    ack_latency_us: Vec<f64>,
    sent: u64,
    /// Rejections the mirror foresaw (it found no valid command for the room, e.g. every seat taken).
    rejected_expected: u64,
    rejected_unexpected: u64,
    /// Acked although the mirror expected a rejection: that room's versions are unknown from then on.
    diverged: u64,
    /// Ticks with every room of the client already in flight.
    skipped: u64,
}

impl Acks {
    fn merge(&mut self, other: Acks) {
        self.events.extend(other.events);
        self.ack_latency_us.extend(other.ack_latency_us);
        self.sent += other.sent;
        self.rejected_expected += other.rejected_expected;
        self.rejected_unexpected += other.rejected_unexpected;
        self.diverged += other.diverged;
        self.skipped += other.skipped;
    }
}

/// A free room of the client, tried at random a few times, then in order.
fn free_room(client: &mut Client, busy: &[bool]) -> Option<usize> {
    (0..4)
        .map(|_| client.rng.index(busy.len()))
        .find(|&room| !busy[room])
        .or_else(|| busy.iter().position(|b| !b))
}

/// A command's outcome: its room (of the client), the events the mirror expected, whether the engine accepted
/// it, when it was sent and when the client saw the ack.
type Answer = (usize, Option<Vec<Event>>, bool, Instant, Instant);

async fn send(engine: Engine, plan: mix::Plan) -> Answer {
    let sent = Instant::now();
    let outcome = engine.execute(plan.actor, plan.command, Options::default());
    let ok = outcome.await.is_ok();
    (plan.room, plan.expected, ok, sent, Instant::now())
}

/// Folds an answer into the client's mirror and what it saw.
fn record(client: &mut Client, acks: &mut Acks, answer: Answer) {
    let (room, expected, ok, sent, at) = answer;
    acks.ack_latency_us
        .push(at.duration_since(sent).as_secs_f64() * 1e6);
    match (expected, ok) {
        (Some(events), true) => {
            let global = client.global_room(room);
            let versions = client.settle(room, &events);
            assert_eq!(
                versions.clone().count(),
                events.len(),
                "one version per event"
            );
            for version in versions {
                acks.events.push((global, version, at));
            }
        }
        (None, true) => acks.diverged += 1,
        (None, false) => acks.rejected_expected += 1,
        (Some(_), false) => acks.rejected_unexpected += 1,
    }
}

/// One client, open loop: a command every `every` on schedule until `until`, whatever is still in flight.
async fn drive_paced(engine: Engine, mut client: Client, every: Duration, until: Instant) -> Acks {
    let mut acks = Acks::default();
    let mut busy = vec![false; client.rooms.len()];
    let mut in_flight = FuturesUnordered::new();
    let phase = every.mul_f64(client.rng.index(1_000) as f64 / 1_000.0);
    let until = tokio::time::Instant::from_std(until);
    let mut next_at = tokio::time::Instant::now() + phase;
    loop {
        tokio::select! {
            biased;
            Some(answer) = in_flight.next() => {
                let answer: Answer = answer;
                busy[answer.0] = false;
                record(&mut client, &mut acks, answer);
            }
            _ = tokio::time::sleep_until(next_at), if next_at < until => {
                next_at += every;
                let Some(room) = free_room(&mut client, &busy) else {
                    acks.skipped += 1;
                    continue;
                };
                busy[room] = true;
                acks.sent += 1;
                in_flight.push(send(engine.clone(), client.plan(room)));
            }
            else => break,
        }
    }
    acks
}

/// Latencies from ack to receipt, in µs, and how many acked events no receipt matched.
fn join(acks: &Acks, receipts: &[Receipt]) -> (Vec<f64>, usize, usize) {
    let mut received: HashMap<(usize, u64), Instant> = HashMap::with_capacity(receipts.len());
    for receipt in receipts {
        // A repeat (a core-mode retry) counts from its first arrival.
        received
            .entry((receipt.room, receipt.version))
            .or_insert(receipt.at);
    }
    let mut latency_us = Vec::with_capacity(acks.events.len());
    let (mut missing, mut early) = (0, 0);
    for &(room, version, acked) in &acks.events {
        match received.get(&(room, version)) {
            Some(&at) => {
                // The relay may publish before the client task sees its ack: that counts as 0.
                if at < acked {
                    early += 1;
                }
                latency_us.push(at.saturating_duration_since(acked).as_secs_f64() * 1e6);
            }
            None => missing += 1,
        }
    }
    (latency_us, missing, early)
}

/// One paced run on a fresh engine and server; returns the p99 from ack to receipt, in ms.
async fn latency_run(settings: &Settings, users: &Arc<[UserId]>, rate_per_s: f64) -> f64 {
    let dir = settings.common.fresh_dir();
    let engine = open(dir.path());
    mix::create_rooms(&engine, ROOM_PREFIX, ROOMS, PREFILL_CLIENTS).await;
    let server = TestServer::start(false);
    let (stop, subscriber) = start_subscriber(server.url()).await;
    let relay = Relay::start(
        engine.clone(),
        connect(&server).await,
        RelayConfig::new(Mode::Core),
    )
    .await
    .expect("the relay starts");
    caught_up(&relay, Instant::now()).await;

    let every = Duration::from_secs_f64(CLIENTS as f64 / rate_per_s);
    let started = Instant::now();
    let until = started + settings.latency;
    let mirror = mix::mirror_rooms(ROOM_PREFIX, ROOMS);
    let tasks: Vec<_> = Client::all(&mirror, users, CLIENTS)
        .into_iter()
        .map(|client| tokio::spawn(drive_paced(engine.clone(), client, every, until)))
        .collect();
    let mut acks = Acks::default();
    for task in tasks {
        acks.merge(task.await.expect("client tasks do not panic"));
    }
    let elapsed = started.elapsed();
    caught_up(&relay, Instant::now()).await;
    tokio::time::sleep(DRAIN).await;
    let _ = stop.send(());
    let receipts = subscriber.join().expect("the subscriber does not panic");
    let failures = relay.status().retries;
    relay.stop().await;
    engine.shutdown().await;

    let (mut latency_us, missing, early) = join(&acks, &receipts);
    println!(
        "  target {rate_per_s:.0} commands/s: sent {:.0}/s, {:.0} events/s acked; rejected {} expected + {} unexpected, {} diverged, {} ticks skipped; relay failures {failures}",
        acks.sent as f64 / elapsed.as_secs_f64(),
        acks.events.len() as f64 / elapsed.as_secs_f64(),
        acks.rejected_expected,
        acks.rejected_unexpected,
        acks.diverged,
        acks.skipped,
    );
    let ack = &mut acks.ack_latency_us;
    println!(
        "    send -> ack (context): p50 {:.2} ms, p99 {:.2} ms",
        percentile(ack, 50.0) / 1e3,
        percentile(ack, 99.0) / 1e3,
    );
    assert!(
        !latency_us.is_empty(),
        "no acked event reached the subscriber"
    );
    let p50 = percentile(&mut latency_us, 50.0) / 1e3;
    let p99 = percentile(&mut latency_us, 99.0) / 1e3;
    let p999 = percentile(&mut latency_us, 99.9) / 1e3;
    let max = percentile(&mut latency_us, 100.0) / 1e3;
    println!(
        "    ack -> subscriber: p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.2} ms ({} matched, {missing} missing, {early} received before the ack was seen)",
        latency_us.len(),
    );
    p99
}

async fn latency(settings: &Settings, users: &Arc<[UserId]>) {
    println!(
        "latency, core mode (ack -> receipt by a plain subscriber on {}; {CLIENTS} paced open-loop clients over {ROOMS} live rooms, {:.1} s per rate):",
        subject::ROOM_ALL,
        settings.latency.as_secs_f64()
    );
    for rate in RATES_PER_S {
        let p99 = latency_run(settings, users, rate).await;
        if rate == GOAL_AT_RATE_PER_S {
            GOAL_P99.report(p99);
        }
    }
}

/// One event as the ceiling publishes it: the JSON payload encoded beforehand (so the ceiling spends nothing
/// on the log or on JSON), and what its subjects and headers are made of. Small and contiguous, with the
/// headers built in the loop: with every header map built beforehand, each ceiling after the first in a
/// process ran about half as fast, its time going to malloc and to walking scattered header maps.
struct Prepared {
    room_id: RoomId,
    candidate: Option<UserId>,
    seq: u64,
    version: u64,
    payload: Bytes,
}

impl Prepared {
    fn new(envelope: &Envelope) -> Self {
        Self {
            room_id: envelope.room_id.clone(),
            candidate: envelope.event.candidate().cloned(),
            seq: envelope.seq,
            version: envelope.version,
            payload: Bytes::from(encode_envelope(Encoding::Json, envelope)),
        }
    }

    fn headers(&self, msg_id: String) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, msg_id);
        headers.insert(header::SEQ, self.seq.to_string());
        headers.insert(header::VERSION, self.version.to_string());
        headers.insert(header::CONTENT_TYPE, Encoding::Json.content_type());
        headers
    }

    /// The relay's messages for this event: its room subject, then its candidate's user subject, with the
    /// headers `relay.rs` sets.
    fn messages(&self) -> impl Iterator<Item = (String, HeaderMap, Bytes)> + '_ {
        let room_msg_id = format!("{}:{}", self.room_id, self.version);
        let user = self.candidate.as_ref().map(|candidate| {
            let headers = self.headers(format!("{room_msg_id}:user"));
            (subject::user(candidate), headers, self.payload.clone())
        });
        let room = (
            subject::room(&self.room_id),
            self.headers(room_msg_id),
            self.payload.clone(),
        );
        std::iter::once(room).chain(user)
    }
}

/// Every event of the log, in seq order, prepared for the ceiling.
fn prepare_all(engine: &Engine) -> Vec<Prepared> {
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let page = engine
            .read_events(next, READ_PAGE)
            .expect("the log is readable");
        let Some(last) = page.last() else { break };
        if next == 1 {
            let first = Prepared::new(&page[0]);
            let (_, headers, _) = first.messages().next().expect("a room message");
            let msg_id = headers.get(header::MSG_ID).expect("set").as_str();
            assert_eq!(
                msg_id,
                subject::room_msg_id(&page[0]),
                "msg ids as the relay's"
            );
        }
        next = last.seq + 1;
        out.extend(page.iter().map(Prepared::new));
    }
    out
}

/// Fills a fresh engine with the closed-loop command mix until its log holds `events` events.
async fn prefill(engine: &Engine, users: &Arc<[UserId]>, events: u64) {
    mix::create_rooms(engine, ROOM_PREFIX, ROOMS, PREFILL_CLIENTS).await;
    let mirror = mix::mirror_rooms(ROOM_PREFIX, ROOMS);
    let tasks: Vec<_> = Client::all(&mirror, users, PREFILL_CLIENTS)
        .into_iter()
        .map(|mut client| {
            let engine = engine.clone();
            tokio::spawn(async move {
                while engine.last_seq() < events {
                    let room = client.rng.index(client.rooms.len());
                    let plan = client.plan(room);
                    let ok = engine.execute(plan.actor, plan.command, Options::default());
                    if let (Ok(_), Some(events)) = (ok.await, plan.expected) {
                        client.settle(room, &events);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("pre-fill tasks do not panic");
    }
}

/// Starts a relay on `sink` (cursor 0) and times it until it has confirmed the whole log.
async fn relay_run(
    engine: &Engine,
    client: async_nats::Client,
    mode: Mode,
    sink: String,
) -> (Duration, u64) {
    let mut config = RelayConfig::new(mode);
    config.sink = sink;
    let started = Instant::now();
    let relay = Relay::start(engine.clone(), client, config)
        .await
        .expect("the relay starts");
    let took = caught_up(&relay, started).await;
    let failures = relay.status().retries;
    assert_eq!(failures, 0, "the relay failed to publish {failures} times");
    let published = relay.published();
    relay.stop().await;
    (took, published)
}

/// A plain loop: publish every message, then one flush.
async fn core_ceiling(client: async_nats::Client, events: &[Prepared]) -> Duration {
    let started = Instant::now();
    for (subject, headers, payload) in events.iter().flat_map(Prepared::messages) {
        client
            .publish_with_headers(subject, headers, payload)
            .await
            .expect("publishes");
    }
    client.flush().await.expect("flushes");
    started.elapsed()
}

fn stream_config() -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: subject::STREAM.into(),
        subjects: vec![subject::ROOM_ALL.into(), subject::USER_ALL.into()],
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// A plain loop on a fresh stream. Without a window: publishes the messages of `BATCH_MAX` events, awaits
/// their PubAcks, repeats (the relay's batches). With one: keeps up to `window` PubAcks in flight.
async fn jetstream_ceiling(
    client: async_nats::Client,
    events: &[Prepared],
    window: Option<usize>,
) -> Duration {
    let context = async_nats::jetstream::new(client);
    context
        .create_or_update_stream(stream_config())
        .await
        .expect("the stream is created");
    let started = Instant::now();
    let mut acks = VecDeque::new();
    for batch in events.chunks(BATCH_MAX) {
        for (subject, headers, payload) in batch.iter().flat_map(Prepared::messages) {
            let ack = context
                .publish_with_headers(subject, headers, payload)
                .await;
            acks.push_back(ack.expect("publishes"));
            if let Some(window) = window
                && acks.len() >= window
            {
                let oldest = acks.pop_front().expect("the window is not empty");
                oldest.await.expect("the stream acks");
            }
        }
        if window.is_none() {
            for ack in acks.drain(..) {
                ack.await.expect("the stream acks");
            }
        }
    }
    for ack in acks {
        ack.await.expect("the stream acks");
    }
    started.elapsed()
}

/// A log pre-filled while no relay ran, and its events prepared for the ceiling.
struct Prefilled {
    engine: Engine,
    events: u64,
    /// NATS messages per run: one per event, and one more per invitation event.
    messages: u64,
    prepared: Arc<Vec<Prepared>>,
    _dir: tempfile::TempDir,
}

async fn prefilled(settings: &Settings, users: &Arc<[UserId]>) -> Prefilled {
    let dir = settings.common.fresh_dir();
    let engine = open(dir.path());
    let started = Instant::now();
    prefill(&engine, users, settings.prefill_events).await;
    let events = engine.last_seq();
    let prepared = prepare_all(&engine);
    let count = prepared
        .iter()
        .map(|p| 1 + p.candidate.is_some() as usize)
        .sum::<usize>();
    let user_count = count - prepared.len();
    let bytes: usize = prepared.iter().map(|p| p.payload.len()).sum();
    println!(
        "throughput (log pre-filled with {events} events over {ROOMS} rooms in {:.1} s, no relay running; {count} messages, {user_count} of them on user subjects, JSON payload avg {:.0} bytes; {} runs, each relay from cursor 0):",
        started.elapsed().as_secs_f64(),
        bytes as f64 / prepared.len() as f64,
        settings.common.runs,
    );
    Prefilled {
        engine,
        events,
        messages: count as u64,
        prepared: Arc::new(prepared),
        _dir: dir,
    }
}

/// Relay and ceiling rates of the runs, in events per second; prints each run and the medians.
struct Rates {
    relay: Vec<f64>,
    /// Each ceiling's name and rates.
    ceilings: Vec<(&'static str, Vec<f64>)>,
}

impl Rates {
    fn new(ceilings: &[&'static str]) -> Self {
        Self {
            relay: Vec::new(),
            ceilings: ceilings.iter().map(|&name| (name, Vec::new())).collect(),
        }
    }

    /// One run: the relay's time and messages published, then each ceiling's time.
    fn run(&mut self, prefilled: &Prefilled, relay: (Duration, u64), ceilings: &[Duration]) {
        let (took, published) = relay;
        let count = prefilled.messages;
        assert_eq!(published, count, "the relay publishes every message once");
        let events = prefilled.events as f64;
        let relay = events / took.as_secs_f64();
        let mut line = format!(
            "    run {}: relay {relay:.0} events/s ({:.0} messages/s, {:.3} s)",
            self.relay.len() + 1,
            count as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
        );
        for ((name, rates), took) in self.ceilings.iter_mut().zip(ceilings) {
            let ceiling = events / took.as_secs_f64();
            line += &format!(
                "; {name} ceiling {ceiling:.0} events/s ({:.3} s), relay/ceiling {:.2}",
                took.as_secs_f64(),
                relay / ceiling
            );
            rates.push(ceiling);
        }
        println!("{line}");
        self.relay.push(relay);
    }

    fn print_median(mut self) {
        let relay = median(&mut self.relay);
        let mut line = format!("    median: relay {relay:.0} events/s");
        for (name, rates) in &mut self.ceilings {
            let ceiling = median(rates);
            line += &format!(
                "; {name} ceiling {ceiling:.0} events/s, relay/ceiling {:.2}",
                relay / ceiling
            );
        }
        println!("{line}");
    }
}

async fn throughput_core(settings: &Settings, prefilled: &Prefilled) {
    println!(
        "  core (relay: batches of <= {BATCH_MAX} envelopes, each confirmed by NATS, then a cursor write; ceiling: publish all, then one flush; fresh server per run):"
    );
    let mut rates = Rates::new(&["plain"]);
    for run in 0..settings.common.runs {
        let server = TestServer::start(false);
        let client = connect(&server).await;
        let sink = format!("bench-core-{run}");
        let relay = relay_run(&prefilled.engine, client, Mode::Core, sink).await;
        // On a runtime worker, as the relay runs: from the main thread every publish is a cross-thread
        // hand-off, and the ceiling measured about a third lower.
        let (client, prepared) = (connect(&server).await, prefilled.prepared.clone());
        let ceiling = tokio::spawn(async move { core_ceiling(client, &prepared).await });
        let ceiling = ceiling.await.expect("the ceiling does not panic");
        rates.run(prefilled, relay, &[ceiling]);
    }
    rates.print_median();
}

async fn throughput_jetstream(settings: &Settings, prefilled: &Prefilled) {
    println!(
        "  JetStream (file storage, fresh server per relay and per ceiling; relay: PubAcks awaited per batch of <= {BATCH_MAX} envelopes + cursor write; batched ceiling: the same batches; pipelined ceiling: up to {PIPELINE_WINDOW} PubAcks in flight):"
    );
    let mut rates = Rates::new(&["batched", "pipelined"]);
    for run in 0..settings.common.runs {
        let server = TestServer::start(true);
        let client = connect(&server).await;
        let sink = format!("bench-jetstream-{run}");
        let relay = relay_run(&prefilled.engine, client, Mode::JetStream, sink).await;
        drop(server);
        let mut ceilings = Vec::new();
        for window in [None, Some(PIPELINE_WINDOW)] {
            let server = TestServer::start(true);
            let client = connect(&server).await;
            let prepared = prefilled.prepared.clone();
            let ceiling =
                tokio::spawn(async move { jetstream_ceiling(client, &prepared, window).await });
            ceilings.push(ceiling.await.expect("the ceiling does not panic"));
        }
        rates.run(prefilled, relay, &ceilings);
    }
    rates.print_median();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = Settings::from_env();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "nats: private nats-server per run, {cpus} CPUs, data under {}",
        settings.common.dir.display()
    );
    let users = mix::users();
    if settings.common.runs_phase("latency") {
        latency(&settings, &users).await;
    }
    if settings.common.runs_phase("core") || settings.common.runs_phase("jetstream") {
        let prefilled = prefilled(&settings, &users).await;
        if settings.common.runs_phase("core") {
            throughput_core(&settings, &prefilled).await;
        }
        if settings.common.runs_phase("jetstream") {
            throughput_jetstream(&settings, &prefilled).await;
        }
        prefilled.engine.shutdown().await;
    }
}
