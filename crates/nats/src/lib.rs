//! cohost over NATS: events out, commands in.
//!
//! The engine ([`cohost_engine`]) commits events to its log; this crate carries them to NATS and carries
//! commands and queries back, on the subjects, headers and encodings of the contract ([`cohost_proto`]).
//!
//! - [`relay`]: the outbox relay. It publishes every committed envelope, in seq order, to
//!   `cohost.v1.room.<room_id>` (and invitation events also to `cohost.v1.user.<candidate>`), and advances its
//!   durable cursor only once NATS has confirmed (a server round trip in core mode, a PubAck in JetStream mode).
//!   Entry point: [`Relay::start`](relay::Relay::start).
//! - [`subscriber`]: a typed subscriber that detects gaps and fills them from the log, and drops duplicates.
//!   Entry point: [`Subscriber`](subscriber::Subscriber).
//! - [`service`]: the `cohost` NATS service: one endpoint per command and per query, JSON in and out.
//!   Entry point: [`service::serve`].
//! - [`cluster`]: cluster mode's partition log in JetStream, with its fence, its leases, and the node that takes,
//!   renews and hands off partitions.
//! - [`user_feed`]: a candidate's invitation events across a cluster's partitions, in the stream `COHOST`'s order.
//! - `test_server` (feature `test-server`): a private `nats-server` for tests and benchmarks.
//!
//! This crate is the only one that knows NATS: the others get a connection from [`connect`] and hold it as a
//! [`Client`]. It never decides anything: commands go to the engine, which alone applies the rules. It never
//! opens a store of its own: the engine keeps the log and the cursors, and a partition taken over in cluster
//! mode is rebuilt through [`cohost_store`]. It never sends a LiveKit token over NATS (`cohost-credentials`
//! mints them, for callers of `cohostd`'s HTTP API), and it never speaks HTTP: `cohostd` wires this crate to
//! its HTTP API, and the HTTP requests a cluster forwards are opaque bytes here.
//!
//! The relay delivers at least once, in seq order: a retry can repeat messages (JetStream drops them by
//! `Nats-Msg-Id`), and subscribers drop what they already delivered and fill from the log what core NATS lost.

#![warn(missing_docs)]

pub mod cluster;
pub mod relay;
// Private: the relay's, the service's and the subscriber's confirmation from the server, no caller's concern.
mod round_trip;
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
    /// The URL (or list) as given to [`connect`].
    pub url: String,
    /// What async-nats said: which URL does not parse, and why.
    #[source]
    pub source: async_nats::ConnectError,
}

/// Connects to the NATS server at `url`, or to any of a comma-separated list of them (a cluster's seed
/// servers). A server that is not up yet is waited for (the client retries in the background), so a daemon
/// started before its NATS server comes up rather than failing. So this returns at once, without waiting for
/// the connection: until it is made, and during any later outage, what the client sends waits in its bounded
/// queue (2,048 operations, async-nats's default), and a request times out after async-nats's 10 s.
///
/// # Errors
///
/// [`ConnectError`] when a URL does not parse; an unreachable server is not an error.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = cohost_nats::test_server::TestServer::start(false);
/// # let url = server.url();
/// // `url` is `nats://host:port`, or several of them separated by commas.
/// let client = cohost_nats::connect(&url).await?;
/// client.publish("greetings", "hello".into()).await?;
/// client.flush().await?; // waits for the connection, then writes
///
/// assert!(cohost_nats::connect("nats://[::1").await.is_err());
/// # Ok(())
/// # }
/// ```
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
