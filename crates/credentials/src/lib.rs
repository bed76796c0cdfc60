//! LiveKit for cohost: broadcaster credentials exactly when they are entitled, LiveKit's webhooks fed back as
//! engine commands, and revocation of participants who leave the stage.
//!
//! This crate is the only one that knows LiveKit (through `livekit-api`). It decides nothing: who may broadcast
//! is the engine's answer (`Engine::broadcaster_entitlement`), and webhooks become ordinary commands. Tokens are
//! minted per request and never stored, logged or published.

mod broadcast;
mod config;
pub mod revoke;
mod token;
pub mod webhook;

pub use broadcast::Credentials;
pub use config::{LiveKitConfig, TOKEN_TTL_DEFAULT};
pub use revoke::Revoker;
pub use token::{COHOST_SOURCES, MintError, Minter};
pub use webhook::{WebhookOutcome, WebhookRefusal, Webhooks};
