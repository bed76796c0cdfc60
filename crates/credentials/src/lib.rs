//! LiveKit for cohost: broadcaster credentials exactly when they are entitled, LiveKit's webhooks fed back as
//! engine commands, revocation of participants who leave the stage, and reconciliation with LiveKit's list of
//! participants.
//!
//! This crate is the only one that knows LiveKit (through `livekit-api`). It decides nothing: who may broadcast
//! is the engine's answer (`Engine::broadcaster_entitlement`), and webhooks become ordinary commands. Tokens are
//! minted per request and never stored, logged or published.

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
