//! The cursors of a partition's followers (the relay, the revoker), kept in a KV bucket so they move with the
//! partition: a new owner resumes each follower where the old one saved it, not from the start of the log.
//!
//! One key per partition (`p<n>`), holding every sink's seq. Only the owner writes it, each time a turn finds a
//! cursor moved, so it trails the local store by up to a turn; a follower resumed from a trailing cursor
//! repeats a few events, which the stream `COHOST` drops by `Nats-Msg-Id` and the revoker treats as done. An
//! old owner's late write can only move a cursor back, with the same effect.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// The KV bucket of follower cursors.
pub const CURSOR_BUCKET: &str = "COHOST_CURSORS";

/// Sink name to the last seq it handled.
pub type Cursors = BTreeMap<String, u64>;

/// The cursor bucket.
#[derive(Debug, Clone)]
pub struct CursorBook {
    kv: kv::Store,
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

#[derive(Debug, thiserror::Error)]
#[error("follower cursors: {0}")]
pub struct CursorError(String);

fn nats(error: impl std::fmt::Display) -> CursorError {
    CursorError(error.to_string())
}

impl CursorBook {
    /// Opens (creating on first use) the bucket, with `replicas` like the log it points into.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, CursorError> {
        if let Ok(kv) = js.get_key_value(CURSOR_BUCKET).await {
            return Ok(Self { kv });
        }
        let config = kv::Config {
            bucket: CURSOR_BUCKET.to_owned(),
            history: 1,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let kv = match js.create_key_value(config).await {
            Ok(kv) => kv,
            // Another node created it first.
            Err(_) => js.get_key_value(CURSOR_BUCKET).await.map_err(nats)?,
        };
        Ok(Self { kv })
    }

    /// The partition's saved cursors; none before its first save.
    pub async fn load(&self, partition: u32) -> Result<Cursors, CursorError> {
        let Some(value) = self.kv.get(key(partition)).await.map_err(nats)? else {
            return Ok(Cursors::new());
        };
        serde_json::from_slice(&value).map_err(|e| {
            CursorError(format!(
                "the cursors of partition {partition} cannot be read: {e}"
            ))
        })
    }

    pub async fn save(&self, partition: u32, cursors: &Cursors) -> Result<(), CursorError> {
        let value = serde_json::to_vec(cursors).expect("a map of strings to numbers serializes");
        self.kv
            .put(key(partition), Bytes::from(value))
            .await
            .map_err(nats)?;
        Ok(())
    }
}
