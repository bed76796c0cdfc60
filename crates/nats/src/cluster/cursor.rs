//! The cursors of a partition's followers (the relay, the revoker), kept in a KV bucket so they move with the
//! partition: a new owner resumes each follower where the old one saved it, not from the start of the log.
//!
//! One key per partition (`p<n>`), holding every sink's seq and the lease epoch of the owner that wrote it. Only
//! the owner writes it, while its lease is valid, each time a turn finds a cursor moved, so it trails the local
//! store by up to a turn; a follower resumed from a trailing cursor repeats a few events, which the stream
//! `COHOST` drops by `Nats-Msg-Id` (within its 2-minute window) and the revoker treats as done. A write is a
//! compare-and-set that never replaces a later epoch's cursors, so an old owner's late write cannot move the
//! new owner's cursors back.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The KV bucket of follower cursors.
pub const CURSOR_BUCKET: &str = "COHOST_CURSORS";

/// Sink name to the last seq it handled.
pub type Cursors = BTreeMap<String, u64>;

/// What a key holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    epoch: u64,
    cursors: Cursors,
}

/// What a key may hold: earlier builds wrote the cursors alone, read as epoch 0.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stored {
    Saved(Saved),
    Bare(Cursors),
}

/// How many times a save reads the key again after losing a compare-and-set to another write.
const SAVE_ATTEMPTS: usize = 3;

/// The cursor bucket.
#[derive(Debug, Clone)]
pub struct CursorBook {
    kv: kv::Store,
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

/// The cursor bucket could not be opened, read or written (NATS did not answer, or a key does not decode), or a
/// save kept losing its compare-and-set. The message is for people.
#[derive(Debug, thiserror::Error)]
#[error("follower cursors: {0}")]
pub struct CursorError(String);

fn nats(error: impl std::fmt::Display) -> CursorError {
    CursorError(error.to_string())
}

impl CursorBook {
    /// Opens (creating on first use) the bucket, with `replicas` like the log it points into.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, CursorError> {
        let kv = super::open_bucket(js, CURSOR_BUCKET, replicas).await;
        Ok(Self {
            kv: kv.map_err(CursorError)?,
        })
    }

    /// The bucket if it exists; nothing is created (for tools that only read).
    pub async fn existing(js: &jetstream::Context) -> Result<Option<Self>, CursorError> {
        match js.get_key_value(CURSOR_BUCKET).await {
            Ok(kv) => Ok(Some(Self { kv })),
            Err(error) if error.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
                Ok(None)
            }
            Err(error) => Err(nats(error)),
        }
    }

    /// The partition's saved cursors; none before its first save.
    pub async fn load(&self, partition: u32) -> Result<Cursors, CursorError> {
        Ok(self
            .read(partition)
            .await?
            .map(|(saved, _)| saved.cursors)
            .unwrap_or_default())
    }

    /// The key's value and revision.
    async fn read(&self, partition: u32) -> Result<Option<(Saved, u64)>, CursorError> {
        let Some(entry) = self.kv.entry(key(partition)).await.map_err(nats)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let stored: Stored = serde_json::from_slice(&entry.value).map_err(|e| {
            CursorError(format!(
                "the cursors of partition {partition} cannot be read: {e}"
            ))
        })?;
        let saved = match stored {
            Stored::Saved(saved) => saved,
            Stored::Bare(cursors) => Saved { epoch: 0, cursors },
        };
        Ok(Some((saved, entry.revision)))
    }

    /// Saves the cursors of the owner of lease `epoch`, unless a later epoch's are there already (then this
    /// owner was deposed, and its cursors are stale). Within one epoch a cursor only moves forward, whichever of
    /// two saves lands last.
    pub async fn save(
        &self,
        partition: u32,
        epoch: u64,
        cursors: &Cursors,
    ) -> Result<(), CursorError> {
        for _ in 0..SAVE_ATTEMPTS {
            let current = self.read(partition).await?;
            let mut merged = cursors.clone();
            if let Some((current, _)) = &current {
                if current.epoch > epoch {
                    return Ok(());
                }
                if current.epoch == epoch {
                    for (sink, seq) in &current.cursors {
                        let mine = merged.entry(sink.clone()).or_default();
                        *mine = (*mine).max(*seq);
                    }
                }
            }
            let saved = Saved {
                epoch,
                cursors: merged,
            };
            let value = Bytes::from(serde_json::to_vec(&saved).expect("cursors serialize"));
            let written = match current {
                Some((_, revision)) => self
                    .kv
                    .update(key(partition), value, revision)
                    .await
                    .is_ok(),
                None => self.kv.create(key(partition), value).await.is_ok(),
            };
            if written {
                return Ok(());
            }
        }
        Err(CursorError(format!(
            "the cursors of partition {partition} kept changing under this write"
        )))
    }
}
