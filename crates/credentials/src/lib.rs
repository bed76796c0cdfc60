//! LiveKit for cohost: broadcaster credentials exactly when they are entitled, LiveKit's webhooks fed back as
//! engine commands, revocation of participants who leave the stage, and reconciliation with LiveKit's list of
//! participants.
//!
//! This crate is the only one that knows LiveKit (through `livekit-api`). It decides nothing: who may broadcast
//! is the engine's answer (`Engine::broadcaster_entitlement`), and webhooks become ordinary commands. Tokens are
//! minted per request and never stored, logged or published.
//!
//! - [`Credentials`] wraps the engine: accept's reply and `get_broadcaster_data` carry [`Minter`]'s tokens.
//! - [`Webhooks::handle`] verifies LiveKit's webhooks and turns them into `presence` and `stop_room`.
//! - [`Revoker`] and [`Reconciler`], only with [`LiveKitConfig::admin`] on, call LiveKit's RoomService: the
//!   first removes who left the stage, the second compares who LiveKit has with who the rooms think is there.
//!
//! Neighbours: [`cohost_engine`] is the engine it wraps and follows (the rules behind it are `cohost-core`'s),
//! [`cohost_proto`] the contract's types it answers in, and the daemon, `cohostd`, serves it over HTTP
//! (`GET /v1/rooms/{room_id}/broadcaster-data`, `POST /v1/livekit/webhook`) and reads its settings
//! (`LIVEKIT_URL`, `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`, `COHOST_LIVEKIT_ADMIN`…). Nothing here speaks
//! NATS, and no token ever goes out on a subject.

#![warn(missing_docs)]

mod broadcast;
mod config;
pub mod reconcile;
pub mod revoke;
mod token;
pub mod webhook;

pub use broadcast::Credentials;
pub use config::{LiveKitConfig, TOKEN_TTL_DEFAULT};
pub use reconcile::Reconciler;
pub use revoke::Revoker;
pub use token::{COHOST_SOURCES, MintError, Minter};
pub use webhook::{WebhookOutcome, WebhookRefusal, Webhooks};
