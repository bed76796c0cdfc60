//! cohost over NATS: events out, commands in.
//!
//! - [`relay`]: the outbox relay. It publishes every committed envelope, in seq order, to
//!   `cohost.v1.room.<room_id>` (and invitation events also to `cohost.v1.user.<candidate>`), and advances its
//!   durable cursor only once NATS has confirmed (a flush in core mode, a PubAck in JetStream mode).
//! - [`subscriber`]: a typed subscriber that detects gaps and fills them from the log, and drops duplicates.
//! - [`service`]: the `cohost` NATS service: one endpoint per command and per query, JSON in and out.
//! - [`cluster`]: cluster mode's partition log in JetStream, with its fence, and the cluster's fixed configuration.
//!
//! This crate is the only one that knows NATS: the others get a connection from [`connect`] and hold it as a
//! [`Client`]. It never decides anything: commands go to `cohost-engine`.

pub mod cluster;
pub mod relay;
pub mod round_trip;
pub mod service;
pub mod subscriber;
#[cfg(feature = "test-server")]
pub mod test_server;
pub mod user_feed;

pub use async_nats::Client;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {source}")]
pub struct ConnectError {
    pub url: String,
    #[source]
    pub source: async_nats::ConnectError,
}

/// Connects to the NATS server at `url`, or to any of a comma-separated list of them (a cluster's seed
/// servers). A server that is not up yet is waited for (the client retries in the background), so a daemon
/// started before its NATS server comes up rather than failing.
pub async fn connect(url: &str) -> Result<Client, ConnectError> {
    let error = |source| ConnectError {
        url: url.to_owned(),
        source,
    };
    let servers = url
        .split(',')
        .map(|one| one.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            error(async_nats::ConnectError::with_source(
                async_nats::ConnectErrorKind::ServerParse,
                e,
            ))
        })?;
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(error)
}
