//! Delivers the log's events to one webhook endpoint, in log order (so each room's in version order), one at a
//! time, with a durable cursor of its own (`webhook:<id>`), like the NATS relay. An event the endpoint does not
//! want is passed over; one it wants is posted, signed afresh at each attempt, until a 2xx. A failure is retried
//! with exponential backoff and jitter; once an event has failed for the give-up age, the endpoint pauses at it
//! (never skipping it) until an operator resumes it (`POST /v1/admin/webhooks/{id}/resume`) or the daemon
//! restarts. Delivery reads the log off the write path: a slow or dead endpoint costs its own task and cursor,
//! never a command's latency or another endpoint's progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cohost_engine::{Backoff, Clock, Engine, FollowerStatus, Interest, SystemClock};
use cohost_proto::Envelope;
use tokio::sync::{Notify, watch};

use crate::outbound::Endpoint;

/// Retry and time limits of every endpoint's delivery.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// The wait after a first failure; it doubles (with jitter) up to `retry_max`.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// How long one event may keep failing before the endpoint pauses at it.
    pub give_up_after: Duration,
    /// The whole request, connection included.
    pub timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            retry_first: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            give_up_after: Duration::from_secs(24 * 3_600),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The cursor is written at most this often, and after this long quiet when progress is unwritten: a write is a
/// sled flush, so not one per event. A crash repeats at most what was delivered since (same `webhook-id`).
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// Whether an endpoint is paused at an event it kept failing, and the operator's word to try it again.
#[derive(Debug, Default)]
pub struct Pause {
    paused: AtomicBool,
    resume: Notify,
}

impl Pause {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Wakes a paused endpoint: it tries its event again at once, with a fresh give-up age. `false` (and
    /// nothing changes) when it is not paused.
    pub fn resume(&self) -> bool {
        if !self.paused.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.resume.notify_one();
        true
    }
}

/// The deliveries running on this node, for the admin routes, `/healthz` and `/metrics`: one per endpoint on a
/// single node; on a cluster node one per endpoint and partition it owns, added when it takes the partition and
/// removed when it hands it over (the cursor moves with the partition).
#[derive(Debug, Default)]
pub struct Deliveries {
    running: std::sync::Mutex<Vec<crate::admin::WebhookView>>,
}

impl Deliveries {
    /// Lists a delivery that started.
    pub fn add(&self, view: crate::admin::WebhookView) {
        self.lock().push(view);
    }

    /// Forgets `delivery`, which is stopping (and only it: a newer delivery of the same endpoint and partition
    /// may be listed already).
    pub fn remove(&self, delivery: &Delivery) {
        self.lock()
            .retain(|view| !Arc::ptr_eq(&view.pause, &delivery.view.pause));
    }

    /// The deliveries running now, by endpoint id then partition.
    pub fn views(&self) -> Vec<crate::admin::WebhookView> {
        let mut views = self.lock().clone();
        views.sort_by(|a, b| (&a.id, a.partition).cmp(&(&b.id, b.partition)));
        views
    }

    /// Whether a delivery whose follower is named `name` (`webhook:<id>`) is paused.
    pub fn paused(&self, name: &str) -> bool {
        (self.lock().iter()).any(|view| view.pause.is_paused() && view.follower.name() == name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<crate::admin::WebhookView>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The name of endpoint `id`'s cursor in the store: `webhook:<id>`.
pub fn sink(id: &str) -> String {
    format!("webhook:{id}")
}

/// `webhook:<id>` as a name for the life of the process: a cluster node starts an endpoint's delivery at every
/// takeover, and the names are as few as the endpoints.
fn follower_name(sink: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = names.iter().find(|name| **name == sink) {
        return name;
    }
    let name: &'static str = Box::leak(sink.to_owned().into_boxed_str());
    names.push(name);
    name
}

/// One endpoint's delivery task.
#[derive(Debug)]
pub struct Delivery {
    /// What it is and how it goes: the task writes the follower status and reads the pause.
    view: crate::admin::WebhookView,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Delivery {
    /// Starts delivering `engine`'s events (those of `partition`, on a cluster node) to `endpoint`, after its
    /// cursor in that engine's store.
    pub fn start(
        engine: Engine,
        partition: Option<u32>,
        endpoint: Endpoint,
        settings: DeliverySettings,
    ) -> Result<Delivery, String> {
        let sink = sink(&endpoint.id);
        let cursor = engine
            .cursor(&sink)
            .map_err(|e| format!("reading the cursor of {sink}: {e}"))?;
        let follower = Arc::new(FollowerStatus::new(follower_name(&sink), cursor));
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the HTTP client for {sink}: {e}"))?;
        let (stop, stopped) = watch::channel(false);
        let view = crate::admin::WebhookView {
            partition,
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            follower: follower.clone(),
            pause: Arc::default(),
        };
        let task = tokio::spawn(
            Task {
                engine,
                endpoint,
                client,
                settings,
                sink,
                follower,
                pause: view.pause.clone(),
                stopped,
                saved: Saved {
                    seq: cursor,
                    at: Instant::now(),
                    failed: false,
                },
            }
            .run(),
        );
        Ok(Delivery { view, stop, task })
    }

    /// The endpoint as the admin route shows it.
    pub fn view(&self) -> crate::admin::WebhookView {
        self.view.clone()
    }

    /// The status the task writes, for `/healthz` and `/metrics`.
    pub fn follower(&self) -> Arc<FollowerStatus> {
        self.view.follower.clone()
    }

    /// Stops the task; its cursor stays where the last delivered event put it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Task {
    engine: Engine,
    endpoint: Endpoint,
    client: reqwest::Client,
    settings: DeliverySettings,
    sink: String,
    follower: Arc<FollowerStatus>,
    pause: Arc<Pause>,
    stopped: watch::Receiver<bool>,
    /// The cursor as last written, across the task's runs: what was handled past it is written at most every
    /// [`SAVE_EVERY`], and on every way out.
    saved: Saved,
}

/// The cursor's last write: its seq, when it was written or last tried, and whether that try failed.
struct Saved {
    seq: u64,
    at: Instant,
    failed: bool,
}

/// What became of one event.
enum Outcome {
    Delivered,
    /// Stopped: the task ends without moving past the event.
    Halted,
}

impl Task {
    /// Follows the log until stopped or paused; a failed read of the log is retried with backoff. Whatever
    /// way a run ends, what it handled goes to the cursor.
    async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        loop {
            let before = self.follower.handled_seq();
            let failed = self.follow().await;
            self.save_if_stale().await;
            let Some(error) = failed else {
                break;
            };
            self.follower
                .failed(format!("reading the log: {error}"), SystemClock.now_ms());
            if self.follower.handled_seq() > before {
                backoff.reset();
            }
            if *self.stopped.borrow() || !backoff.sleep_unless_stopped(&mut self.stopped).await {
                break;
            }
        }
        self.follower.stopped();
    }

    /// Handles every event after the last one handled; `None` once stopped, else a log read's error.
    async fn follow(&mut self) -> Option<String> {
        let mut events = self
            .engine
            .subscribe(self.follower.handled_seq() + 1, Interest::All);
        loop {
            let stale = self.follower.handled_seq() > self.saved.seq;
            let next = tokio::select! {
                next = events.next() => Some(next),
                _ = self.stopped.changed() => None,
                _ = tokio::time::sleep(SAVE_EVERY), if stale => {
                    self.save().await;
                    continue;
                }
            };
            // Stopped, or the log closed.
            let next = next.flatten()?;
            let envelope = match next {
                Ok(envelope) => envelope,
                // The log no longer holds the events after the cursor: retrying cannot bring them back.
                Err(error @ cohost_engine::Error::HistoryGone { .. }) => {
                    let message =
                        format!("the log no longer holds what follows the cursor: {error}");
                    tracing::error!(endpoint = %self.endpoint.id, %message, "webhook delivery stopped");
                    self.follower.failed(message, SystemClock.now_ms());
                    return None;
                }
                Err(error) => return Some(error.to_string()),
            };
            if (self.endpoint).wants(envelope.event.type_name(), &envelope.room_id) {
                if let Outcome::Halted = self.deliver(&envelope).await {
                    return None;
                }
                self.follower.recovered();
            }
            self.follower.handled(envelope.seq);
            if self.saved.at.elapsed() >= SAVE_EVERY {
                self.save().await;
            }
        }
    }

    async fn save_if_stale(&mut self) {
        if self.follower.handled_seq() > self.saved.seq {
            self.save().await;
        }
    }

    /// Writes what was handled to the cursor, off the async workers. A failure is recorded (and logged as the
    /// follower's failures are) and tried again at the next save; meanwhile a restart delivers the events
    /// after the written cursor again, with the same `webhook-id`s, which receivers drop as duplicates.
    async fn save(&mut self) {
        let seq = self.follower.handled_seq();
        let (engine, sink) = (self.engine.clone(), self.sink.clone());
        let written = tokio::task::spawn_blocking(move || engine.set_cursor(&sink, seq)).await;
        let error = match written {
            Ok(Ok(())) => {
                if self.saved.failed {
                    self.follower.recovered();
                }
                self.saved = Saved {
                    seq,
                    at: Instant::now(),
                    failed: false,
                };
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(error) => format!("the write did not finish: {error}"),
        };
        (self.saved.at, self.saved.failed) = (Instant::now(), true);
        let what = format!("writing the cursor of {} at seq {seq}", self.sink);
        self.follower.retrying(&what, &error, SystemClock.now_ms());
    }

    /// Posts one event until the endpoint takes it or the task stops; pauses at it when it kept failing for the
    /// give-up age, until resumed.
    async fn deliver(&mut self, envelope: &Envelope) -> Outcome {
        let id = envelope.event_id().to_string();
        let mut backoff = Backoff::between(self.settings.retry_first, self.settings.retry_max);
        let mut failing_since: Option<Instant> = None;
        loop {
            // Encoded at each attempt: a user erased while it is retried is named by the pseudonym from then on.
            let served = self.engine.serve(envelope.clone());
            let body = serde_json::to_vec(&served).expect("an envelope encodes");
            let signed = (self.endpoint.signer()).sign(&id, SystemClock.now_ms() / 1_000, &body);
            let request = self
                .client
                .post(&self.endpoint.url)
                .header("content-type", "application/json")
                .header("webhook-id", &signed.id)
                .header("webhook-timestamp", &signed.timestamp)
                .header("webhook-signature", &signed.signature)
                .body(body);
            // While the endpoint takes its time, what was handled before is written as in quiet moments.
            let send = request.send();
            tokio::pin!(send);
            let answer = loop {
                let stale = self.follower.handled_seq() > self.saved.seq;
                tokio::select! {
                    answer = &mut send => break answer,
                    _ = self.stopped.changed() => return Outcome::Halted,
                    _ = tokio::time::sleep(SAVE_EVERY), if stale => self.save().await,
                }
            };
            let why = match answer {
                Ok(response) if response.status().is_success() => return Outcome::Delivered,
                Ok(response) => format!("answered {}", response.status()),
                Err(error) => error.to_string(),
            };
            let since = *failing_since.get_or_insert_with(Instant::now);
            let message = format!(
                "delivering {id} (seq {}) to {}: {why}",
                envelope.seq, self.endpoint.url
            );
            self.follower.failed(message.clone(), SystemClock.now_ms());
            // The events before this one are done: their progress is written before any wait.
            self.save_if_stale().await;
            if since.elapsed() >= self.settings.give_up_after {
                if !self.paused(&message).await {
                    return Outcome::Halted;
                }
                failing_since = None;
                backoff = Backoff::between(self.settings.retry_first, self.settings.retry_max);
                continue;
            }
            let wait = spread(backoff.next_wait());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stopped.changed() => return Outcome::Halted,
            }
        }
    }
}

impl Task {
    /// Pauses at the event that kept failing until an operator resumes the endpoint (`true`) or the task stops.
    async fn paused(&mut self, message: &str) -> bool {
        let id = &self.endpoint.id;
        tracing::error!(endpoint = %id, %message, "webhook endpoint paused: it kept failing for the give-up age; POST /v1/admin/webhooks/{id}/resume (or a restart) resumes it");
        self.pause.paused.store(true, Ordering::SeqCst);
        let resumed = tokio::select! {
            _ = self.pause.resume.notified() => true,
            _ = self.stopped.changed() => false,
        };
        if resumed {
            tracing::info!(endpoint = %id, "webhook endpoint resumed");
        } else {
            self.pause.paused.store(false, Ordering::SeqCst);
        }
        resumed
    }
}

/// A wait between half of `wait` and all of it, so endpoints that failed together do not retry together.
fn spread(wait: Duration) -> Duration {
    wait.mul_f64(0.5 + fastrand::f64() / 2.0)
}
