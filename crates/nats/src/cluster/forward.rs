//! Requests forwarded to a partition's owner over NATS request/reply. The owner of partition `p` answers on
//! `cohost.v1.partition.<p>.http` (HTTP requests, which the daemon encodes) and `cohost.v1.partition.<p>.service`
//! (requests to the `cohost` service) while it serves `p`, and only then: a node subscribed there whose lease has
//! run out does not answer at all. So NATS itself routes a request to the owner, the first answer is always the
//! serving owner's, and a partition that is moving has no answer for a moment: the forwarder asks again until
//! its deadline. The payloads are opaque here.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;

/// How long one attempt waits for the owner's answer before the forwarder asks again (with the same request, so
/// a command's key makes that safe).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a forwarded request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An HTTP request, encoded by the daemon: `cohost.v1.partition.<p>.http`.
    Http,
    /// A request to the `cohost` service: `cohost.v1.partition.<p>.service`.
    Service,
}

/// The subject the owner of `partition` answers forwarded requests of `kind` on.
pub fn subject(partition: u32, kind: Kind) -> String {
    let kind = match kind {
        Kind::Http => "http",
        Kind::Service => "service",
    };
    format!("cohost.v1.partition.{partition}.{kind}")
}

/// Why a forwarded request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nobody answered within the deadline: no node served the partition, or its owner was too slow.
    #[error("no owner of partition {partition} answered within {waited:?}")]
    NoAnswer {
        /// The partition asked.
        partition: u32,
        /// How long the forwarder kept asking.
        waited: Duration,
    },
    /// NATS failed otherwise (the connection is closed, say); what it said. Not retried.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Idempotency keys for commands forwarded without one, so that asking again never applies them twice: random
/// per process, then counted (`fwd-` and 32 hex digits, a dash, a number; at most 64 characters).
#[derive(Debug)]
pub struct Keys {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl Default for Keys {
    fn default() -> Self {
        use std::hash::BuildHasher;
        // RandomState is seeded from the operating system's randomness in each process.
        let random = |n: u64| std::collections::hash_map::RandomState::new().hash_one(n);
        Self {
            prefix: format!("fwd-{:016x}{:016x}", random(1), random(2)),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

impl Keys {
    /// A key this process never gave before; its random prefix tells it from other processes' keys.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

/// Sends requests to partition owners.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: async_nats::Client,
}

impl Forwarder {
    /// Forwards over `client`; cheap to clone, one per node is enough.
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }

    /// Sends `payload` to the owner of `partition` and returns its answer, asking again while nobody answers
    /// (the partition is moving, or its owner is slow: each attempt waits up to [`ATTEMPT_TIMEOUT`]) until
    /// `deadline`. Only an owner that serves the partition answers, and its answer is final. Between
    /// attempts it waits 20 ms, doubling up to 250 ms. A request may reach the owner more than once, so a
    /// command must carry a `command_id`.
    ///
    /// # Errors
    ///
    /// [`ForwardError::NoAnswer`] at the deadline, [`ForwardError::Nats`] at once on any other failure.
    pub async fn request(
        &self,
        partition: u32,
        kind: Kind,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Bytes, ForwardError> {
        let started = Instant::now();
        let subject = subject(partition, kind);
        let mut pause = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ForwardError::NoAnswer {
                    partition,
                    waited: started.elapsed(),
                });
            }
            let asked = self.client.request(subject.clone(), payload.clone());
            match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), asked).await {
                Ok(Ok(message)) => return Ok(message.payload),
                Ok(Err(error)) => {
                    use async_nats::RequestErrorKind as Kind;
                    if !matches!(error.kind(), Kind::NoResponders | Kind::TimedOut) {
                        return Err(ForwardError::Nats(error.to_string()));
                    }
                }
                Err(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// Answers one forwarded request; `None` when this node does not serve the partition now (its lease ran out):
/// then it does not answer at all, so the answer a forwarder gets is the serving owner's, never a refusal
/// that raced it.
pub type Handler = Arc<dyn Fn(Bytes) -> BoxFuture<'static, Option<Bytes>> + Send + Sync>;

/// Whether this node serves a partition now (owned, lease valid by its clock).
pub type Serving = Arc<dyn Fn() -> bool + Send + Sync>;

/// What an owner answers by itself: `busy` once `slots` requests are in flight, `failed` when a handler panics.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Forwarded requests in flight on this node, over all its partitions and both kinds.
    pub slots: Arc<Semaphore>,
    /// The answer once every slot is taken (the service's `unavailable`, the daemon's 503).
    pub busy: Bytes,
    /// The answer when a handler panicked (the service's `internal`, the daemon's 500).
    pub failed: Bytes,
}

/// Answers the forwarded requests of one partition until stopped or dropped.
#[derive(Debug)]
pub struct Responder {
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    /// Subscribes to the partition's subject and answers each request with `handler`, within `limits`, while
    /// `serving` says this node serves the partition (otherwise it answers nothing, not even `busy`). Each
    /// request runs in a task of its own, at most as many at once as `limits.slots` holds.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Nats`] when the subscription is refused.
    pub async fn start(
        client: async_nats::Client,
        partition: u32,
        kind: Kind,
        handler: Handler,
        limits: Limits,
        serving: Serving,
    ) -> Result<Self, ForwardError> {
        let mut requests = client
            .subscribe(subject(partition, kind))
            .await
            .map_err(|e| ForwardError::Nats(e.to_string()))?;
        let task = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(reply) = message.reply else { continue };
                if !serving() {
                    continue;
                }
                let Ok(slot) = limits.slots.clone().try_acquire_owned() else {
                    send(&client, reply, limits.busy.clone(), partition).await;
                    continue;
                };
                let (client, handler) = (client.clone(), handler.clone());
                let failed = limits.failed.clone();
                tokio::spawn(async move {
                    let answer = AssertUnwindSafe(handler(message.payload))
                        .catch_unwind()
                        .await;
                    match answer {
                        Ok(Some(answer)) => send(&client, reply, answer, partition).await,
                        Ok(None) => {}
                        Err(_) => {
                            tracing::error!(partition, "a forwarded request's handler panicked");
                            send(&client, reply, failed, partition).await;
                        }
                    }
                    drop(slot);
                });
            }
        });
        Ok(Self { task })
    }

    /// Stops answering. Requests being handled finish on their own; those not yet taken are asked again by
    /// their forwarders after an attempt's timeout.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn send(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    answer: Bytes,
    partition: u32,
) {
    if let Err(error) = client.publish(reply, answer).await {
        tracing::warn!(%error, partition, "a forwarded request's answer was not sent");
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
