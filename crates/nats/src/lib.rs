//! cohost over NATS: events out, commands in.
//!
//! - [`relay`]: the outbox relay. It publishes every committed envelope, in seq order, to
//!   `cohost.v1.room.<room_id>` (and invitation events also to `cohost.v1.user.<candidate>`), and advances its
//!   durable cursor only once NATS has confirmed (a flush in core mode, a PubAck in JetStream mode).
//! - [`subscriber`]: a typed subscriber that detects gaps and fills them from the log, and drops duplicates.
//! - [`service`]: the `cohost` NATS service: one endpoint per command and per query, JSON in and out.
//!
//! This crate is the only one that knows NATS. It never decides anything: commands go to `cohost-engine`.

pub mod relay;
pub mod round_trip;
pub mod service;
pub mod subscriber;
#[cfg(feature = "test-server")]
pub mod test_server;
