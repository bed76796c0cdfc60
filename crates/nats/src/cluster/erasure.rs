//! Erased users in cluster mode. A partition's store does not move with the partition, so the erasures live in
//! a bucket of the cluster's own (`COHOST_ERASED`, a key per user, its first value kept): every node loads it
//! before it takes a partition, into the [`ErasedUsers`] all its engines share, and follows it from then on,
//! so every node serves an erased user by the same pseudonym whichever node was asked to erase them.

use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use cohost_engine::ErasedUsers;
use cohost_proto::{ServiceId, UserId};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The bucket of erased users: key = user id, value = [`Erased`] as JSON.
pub const ERASED_BUCKET: &str = "COHOST_ERASED";

/// One erasure as the bucket keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    /// What the user is served as.
    pub pseudonym: UserId,
    /// The service that erased them, whose commands end what they hold.
    pub service: ServiceId,
}

/// The bucket could not be opened, read or written, or holds a value that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("erased users: {0}")]
pub struct ErasureError(String);

fn nats(error: impl std::fmt::Display) -> ErasureError {
    ErasureError(error.to_string())
}

/// The cluster's erased users.
#[derive(Clone)]
pub struct ErasureBook {
    js: jetstream::Context,
    kv: kv::Store,
    /// The pseudonym to serve a user by when their stored value does not decode (written by hand, or by a
    /// newer build): the deployment's own, so nobody is served by their id for it.
    fallback: Arc<dyn Fn(&UserId) -> UserId + Send + Sync>,
}

impl std::fmt::Debug for ErasureBook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("ErasureBook").finish_non_exhaustive()
    }
}

impl ErasureBook {
    /// Opens (creating on first use) the bucket, with `replicas` like the log; `fallback` gives the pseudonym
    /// of a user whose stored value does not decode.
    ///
    /// # Errors
    ///
    /// [`ErasureError`] when NATS does not answer.
    pub async fn open(
        client: &crate::Client,
        replicas: usize,
        fallback: Arc<dyn Fn(&UserId) -> UserId + Send + Sync>,
    ) -> Result<Self, ErasureError> {
        let js = jetstream::new(client.clone());
        let kv = super::open_bucket(&js, ERASED_BUCKET, replicas).await;
        let kv = kv.map_err(ErasureError)?;
        Ok(Self { js, kv, fallback })
    }

    /// Records that `user` is erased: the erasure in effect. A user erased before keeps the first pseudonym
    /// (it is stable), and the erasure is announced again (with this service), so every node ends whatever
    /// the user holds again.
    ///
    /// # Errors
    ///
    /// [`ErasureError`] when NATS does not answer or the stored value does not decode.
    pub async fn erase(&self, user: &UserId, erased: &Erased) -> Result<Erased, ErasureError> {
        let value = serde_json::to_vec(erased).expect("an erasure encodes");
        match self.kv.create(user.as_str(), value.into()).await {
            Ok(_) => Ok(erased.clone()),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                let entry = self.kv.entry(user.as_str()).await.map_err(nats)?;
                let entry = entry.ok_or_else(|| ErasureError("an erased user vanished".into()))?;
                let again = Erased {
                    pseudonym: decode(&entry.value)?.pseudonym,
                    service: erased.service.clone(),
                };
                let value = serde_json::to_vec(&again).expect("an erasure encodes");
                self.kv
                    .put(user.as_str(), value.into())
                    .await
                    .map_err(nats)?;
                Ok(again)
            }
            Err(error) => Err(nats(error)),
        }
    }

    /// Every erasure recorded, into `erased`; the revision to follow the bucket after.
    ///
    /// # Errors
    ///
    /// [`ErasureError`] when NATS does not answer or a value does not decode.
    pub async fn load(&self, erased: &ErasedUsers) -> Result<u64, ErasureError> {
        // The bucket's last revision before the listing: whatever comes after it is followed, whatever the
        // listing saw too is taken twice, which changes nothing.
        let mut stream = (self.js)
            .get_stream(format!("KV_{ERASED_BUCKET}"))
            .await
            .map_err(nats)?;
        let last = stream.info().await.map_err(nats)?.state.last_sequence;
        let mut keys = self.kv.keys().await.map_err(nats)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats)?;
            let Some(entry) = self.kv.entry(&key).await.map_err(nats)? else {
                continue;
            };
            if entry.operation == kv::Operation::Put {
                let user = user_of(&key)?;
                erased.insert(user.clone(), self.pseudonym_in(&user, &entry.value));
            }
        }
        Ok(last)
    }

    /// The pseudonym a stored value gives `user`; the fallback's when it does not decode.
    fn pseudonym_in(&self, user: &UserId, value: &[u8]) -> UserId {
        match decode(value) {
            Ok(erased) => erased.pseudonym,
            Err(error) => {
                tracing::warn!(%error, "an erased user's value does not decode; serving the deployment's pseudonym");
                (self.fallback)(user)
            }
        }
    }

    /// Follows the bucket after `revision`, in a task: each new erasure goes into `erased`, then to
    /// `on_erased` (which ends what the user holds in the partitions this node owns). A watch that ends or
    /// fails is started again after the last revision seen. The task ends when the returned handle is
    /// aborted.
    pub fn follow(
        self,
        erased: Arc<ErasedUsers>,
        revision: u64,
        on_erased: impl Fn(UserId, Erased) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut after = revision;
            let mut backoff = cohost_engine::Backoff::new(std::time::Duration::from_secs(10));
            loop {
                let before = after;
                if let Err(error) = self.follow_once(&erased, &mut after, &on_erased).await {
                    tracing::warn!(%error, "following the erased users; trying again");
                }
                if after > before {
                    backoff.reset();
                }
                tokio::time::sleep(backoff.next_wait()).await;
            }
        })
    }

    async fn follow_once(
        &self,
        erased: &ErasedUsers,
        after: &mut u64,
        on_erased: &(impl Fn(UserId, Erased) + Send + Sync),
    ) -> Result<(), ErasureError> {
        let mut watch = (self.kv)
            .watch_all_from_revision(*after + 1)
            .await
            .map_err(nats)?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(nats)?;
            *after = entry.revision;
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let user = user_of(&entry.key)?;
            let pseudonym = self.pseudonym_in(&user, &entry.value);
            erased.insert(user.clone(), pseudonym.clone());
            // A value that does not decode names no service: the sweep at the next takeover ends what it holds.
            if let Ok(value) = decode(&entry.value) {
                on_erased(user, value);
            }
        }
        Ok(())
    }
}

fn user_of(key: &str) -> Result<UserId, ErasureError> {
    UserId::new(key).map_err(|e| ErasureError(format!("key {key:?}: {e}")))
}

fn decode(value: &[u8]) -> Result<Erased, ErasureError> {
    serde_json::from_slice(value).map_err(|e| ErasureError(format!("a stored erasure: {e}")))
}
