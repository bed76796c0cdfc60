//! Requests forwarded to a partition's owner over NATS request/reply. The owner of partition `p` answers on
//! `cohost.v1.partition.<p>.http` (HTTP requests, which the daemon encodes) and `cohost.v1.partition.<p>.service`
//! (requests to the `cohost` service) while it owns `p`, and only then, so NATS itself routes a request to the
//! owner, and a partition that is moving has no responder for a moment: the forwarder tries again until its
//! deadline. The payloads are opaque here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;

/// Requests one owner handles at once for one partition; more wait in the subscription's buffer.
pub const IN_FLIGHT_MAX: usize = 256;

/// What a forwarded request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
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
    /// Nobody answered within the deadline: no node owned the partition, or its owner was too slow.
    #[error("no owner of partition {partition} answered within {waited:?}")]
    NoAnswer { partition: u32, waited: Duration },
    #[error("NATS: {0}")]
    Nats(String),
}

/// Sends requests to partition owners.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: async_nats::Client,
}

impl Forwarder {
    pub fn new(client: async_nats::Client) -> Self {
        Self { client }
    }

    /// Sends `payload` to the owner of `partition`, trying again while nobody answers (the partition is moving)
    /// until `deadline`; `retry` says whether an answer is one to try again (the owner found it does not own
    /// the partition any more, say), as long as time is left.
    pub async fn request(
        &self,
        partition: u32,
        kind: Kind,
        payload: Bytes,
        deadline: Instant,
        retry: impl Fn(&Bytes) -> bool,
    ) -> Result<Bytes, ForwardError> {
        let started = Instant::now();
        let subject = subject(partition, kind);
        let mut pause = Duration::from_millis(20);
        let mut last_answer = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return last_answer.ok_or(ForwardError::NoAnswer {
                    partition,
                    waited: started.elapsed(),
                });
            }
            let asked = self.client.request(subject.clone(), payload.clone());
            match tokio::time::timeout(left, asked).await {
                Ok(Ok(message)) if !retry(&message.payload) => return Ok(message.payload),
                Ok(Ok(message)) => last_answer = Some(message.payload),
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

/// Answers one forwarded request.
pub type Handler = Arc<dyn Fn(Bytes) -> BoxFuture<'static, Bytes> + Send + Sync>;

/// Answers the forwarded requests of one partition until stopped or dropped.
#[derive(Debug)]
pub struct Responder {
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    /// Subscribes to the partition's subject and answers each request with `handler`, at most
    /// [`IN_FLIGHT_MAX`] at once.
    pub async fn start(
        client: async_nats::Client,
        partition: u32,
        kind: Kind,
        handler: Handler,
    ) -> Result<Self, ForwardError> {
        let mut requests = client
            .subscribe(subject(partition, kind))
            .await
            .map_err(|e| ForwardError::Nats(e.to_string()))?;
        let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
        let task = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let Some(reply) = message.reply else { continue };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (client, handler) = (client.clone(), handler.clone());
                tokio::spawn(async move {
                    let answer = handler(message.payload).await;
                    if let Err(error) = client.publish(reply, answer).await {
                        tracing::warn!(%error, partition, "a forwarded request's answer was not sent");
                    }
                    drop(slot);
                });
            }
        });
        Ok(Self { task })
    }

    /// Stops answering (requests being handled finish on their own).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
