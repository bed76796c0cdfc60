//! Leases: which node writes which partition. One KV key per partition, taken with create and renewed with
//! compare-and-set on its revision, in a bucket whose entries age out after the TTL, so a dead owner's lease
//! disappears by itself. Live nodes heartbeat in a second bucket, and a partition's preferred owner among them
//! is chosen by rendezvous hashing, so live nodes share partitions evenly and a node's death moves only its own.
//!
//! A lease never fences writes (the log's expected sequence does that); it tells a node when to take a
//! partition, and bounds how long an owner may answer owner-only reads and mint credentials without appending:
//! see [`Lease::is_valid`].

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

/// The KV bucket of partition leases.
pub const LEASE_BUCKET: &str = "COHOST_LEASES";
/// The KV bucket of node heartbeats.
pub const NODE_BUCKET: &str = "COHOST_NODES";

/// How leases are timed. `renew_every` is well inside `ttl`, and `margin` covers the rate at which two clocks
/// may drift apart over one `ttl`, plus the time a renewal takes to reach the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a lease or heartbeat lives unrenewed (the buckets' max age): about the failover time.
    pub ttl: Duration,
    /// How often the node renews its leases and heartbeat.
    pub renew_every: Duration,
    /// How much earlier than the bucket the holder takes its lease as ended.
    pub margin: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        // A dead owner's partitions are taken about a TTL after its last renewal: failover in 2 to 3 s. Five
        // renewals per TTL ride out a loaded machine's stalls.
        Self {
            ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(400),
            margin: Duration::from_millis(300),
        }
    }
}

/// Who holds a partition, as stored in its lease key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node's id (`COHOST_NODE_ID`).
    pub node: String,
    /// The revision that created the lease: it only grows, so a later owner always has a larger epoch.
    pub epoch: u64,
}

/// A lease this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The partition it is of.
    pub partition: u32,
    /// The revision that created it: this ownership's number, larger than any earlier owner's.
    pub epoch: u64,
    revision: u64,
    valid_until: Instant,
}

impl Lease {
    /// Whether the owner may still act on the lease alone (owner-only reads, credentials): until the TTL, minus
    /// the margin, after the moment the last renewal was *sent*. The bucket starts its TTL when the renewal
    /// arrives, later, so the holder's view can only be shorter than the bucket's, provided the two clocks run
    /// at rates that differ by less than the margin over one TTL. No agreement between clocks is assumed.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.valid_until
    }

    /// When [`Lease::is_valid`] turns false unless the lease is renewed.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// The lease key's revision this holder wrote last: its next renewal expects it.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease was renewed or taken by someone else since this node last wrote it.
    #[error("partition {partition}: the lease of epoch {epoch} is lost")]
    Lost {
        /// The partition.
        partition: u32,
        /// The epoch this node held.
        epoch: u64,
    },
    /// NATS did not answer within the TTL, or refused; what it said. The lease may still be this node's.
    #[error("leases: {0}")]
    Nats(String),
}

fn nats(error: impl std::fmt::Display) -> LeaseError {
    LeaseError::Nats(error.to_string())
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

/// One node's handle on the lease and heartbeat buckets.
#[derive(Debug, Clone)]
pub struct Leases {
    leases: kv::Store,
    nodes: kv::Store,
    node: String,
    config: LeaseConfig,
    /// What the heartbeat says of this node: where it serves HTTP, so others can send it what only its
    /// router can serve (live collections); the node id when it does not say.
    advertised: String,
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    ttl: Duration,
) -> Result<kv::Store, LeaseError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age: ttl,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another node created it first.
        Err(_) => js.get_key_value(name).await.map_err(nats),
    }
}

impl Leases {
    /// Opens (creating on first use) both buckets, with entries that age out after `config.ttl`.
    pub async fn open(
        js: &jetstream::Context,
        node: &str,
        replicas: usize,
        config: LeaseConfig,
    ) -> Result<Self, LeaseError> {
        Ok(Self {
            leases: bucket(js, LEASE_BUCKET, replicas, config.ttl).await?,
            nodes: bucket(js, NODE_BUCKET, replicas, config.ttl).await?,
            node: node.to_owned(),
            config,
            advertised: node.to_owned(),
        })
    }

    /// Heartbeats that say this node serves HTTP at `url` (`http://host:port`).
    pub fn advertising(mut self, url: &str) -> Self {
        url.clone_into(&mut self.advertised);
        self
    }

    /// Where a live node serves HTTP, if its heartbeat says.
    pub async fn advertised(&self, node: &str) -> Result<Option<String>, LeaseError> {
        let read = async { self.nodes.get(node).await.map_err(nats) };
        let value = self.within_ttl("reading a node's heartbeat", read).await?;
        Ok(value
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .filter(|v| v.starts_with("http://") || v.starts_with("https://")))
    }

    /// This node's id, as its leases and heartbeat name it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How the leases are timed.
    pub fn config(&self) -> LeaseConfig {
        self.config
    }

    /// Takes the partition's lease if nobody holds it; `None` if somebody does.
    pub async fn acquire(&self, partition: u32) -> Result<Option<Lease>, LeaseError> {
        let sent = Instant::now();
        // The epoch is the revision of the creating write, unknown until it is made: the value written first
        // names the node, and the renewal that follows at once records the epoch.
        let claim = Holder {
            node: self.node.clone(),
            epoch: 0,
        };
        let value = serde_json::to_vec(&claim).expect("a holder serializes");
        let revision = match self.leases.create(key(partition), value.into()).await {
            Ok(revision) => revision,
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
            Err(error) => return Err(nats(error)),
        };
        let lease = Lease {
            partition,
            epoch: revision,
            revision,
            valid_until: sent + self.config.ttl.saturating_sub(self.config.margin),
        };
        self.renew(&lease).await.map(Some)
    }

    /// Writes the lease again (compare-and-set on its revision), moving its expiry a TTL on. An answer later
    /// than the TTL is an error: the lease may have run out meanwhile.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Lost`] when another node wrote the key since; [`LeaseError::Nats`] when NATS was slow or
    /// unreachable, and the lease may still be this node's until it runs out.
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.within_ttl("the renewal", self.renew_once(lease)).await
    }

    /// Waits for `call` no longer than the TTL: past it, whatever it was for has aged out.
    async fn within_ttl<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        tokio::time::timeout(self.config.ttl, call)
            .await
            .unwrap_or_else(|_| Err(LeaseError::Nats(format!("{what} timed out"))))
    }

    async fn renew_once(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let sent = Instant::now();
        let holder = Holder {
            node: self.node.clone(),
            epoch: lease.epoch,
        };
        let value: bytes::Bytes = serde_json::to_vec(&holder)
            .expect("a holder serializes")
            .into();
        let key = key(lease.partition);
        let mut revision = lease.revision;
        for _ in 0..2 {
            match self.leases.update(&key, value.clone(), revision).await {
                Ok(revision) => {
                    return Ok(Lease {
                        revision,
                        valid_until: sent + self.config.ttl.saturating_sub(self.config.margin),
                        ..lease.clone()
                    });
                }
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // A renewal whose answer was lost may have landed: the key still names this holder
                    // (an epoch is never reused), so the lease is still ours at that revision.
                    match self.latest(&key).await? {
                        Some((latest, stored)) if stored == value && latest != revision => {
                            revision = latest;
                        }
                        _ => break,
                    }
                }
                Err(error) => return Err(nats(error)),
            }
        }
        Err(LeaseError::Lost {
            partition: lease.partition,
            epoch: lease.epoch,
        })
    }

    /// The key's latest revision and value, read from the bucket's leader (a direct get may be answered by a
    /// replica that lags); `None` when it has none, or was deleted.
    async fn latest(&self, key: &str) -> Result<Option<(u64, bytes::Bytes)>, LeaseError> {
        let found = self
            .leases
            .stream
            .raw_message_builder()
            .last_by_subject(format!("{}{key}", self.leases.prefix))
            .send()
            .await;
        match found {
            Ok(message) => Ok(Some((message.sequence, message.payload))),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(error) => Err(nats(error)),
        }
    }

    /// Gives the partition up at once (a handoff), unless someone else holds it by now.
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        let delete = async {
            self.leases
                .delete_expect_revision(key(lease.partition), Some(lease.revision))
                .await
                .map_err(nats)
        };
        self.within_ttl("the release", delete).await
    }

    /// Who holds the partition now, if anyone.
    pub async fn holder(&self, partition: u32) -> Result<Option<Holder>, LeaseError> {
        let Some(value) = self.leases.get(key(partition)).await.map_err(nats)? else {
            return Ok(None);
        };
        serde_json::from_slice(&value).map(Some).map_err(nats)
    }

    /// Tells the others this node is alive for another TTL.
    pub async fn heartbeat(&self) -> Result<(), LeaseError> {
        let put = async {
            self.nodes
                .put(&self.node, self.advertised.clone().into())
                .await
                .map(drop)
                .map_err(nats)
        };
        self.within_ttl("the heartbeat", put).await
    }

    /// Leaves the live nodes at once (a clean stop), rather than when the heartbeat ages out, so the others
    /// take this node's partitions without waiting for it. A stream purge rather than a key delete: a delete
    /// leaves a marker, and the marker would keep the node's subject, and so the node, in [`Self::live_nodes`]
    /// until it aged out.
    pub async fn leave(&self) -> Result<(), LeaseError> {
        let subject = format!("{}{}", self.nodes.prefix, self.node);
        let purge = async {
            self.nodes
                .stream
                .purge()
                .filter(subject)
                .await
                .map(drop)
                .map_err(nats)
        };
        self.within_ttl("leaving", purge).await
    }

    /// The nodes that sent a heartbeat within the TTL, sorted. One stream-info request naming the subjects
    /// that still hold a message, not a key listing: a listing counts the keys when it starts, and a heartbeat
    /// that ages out before it is delivered leaves the listing waiting, past the TTL, for a key that is gone.
    pub async fn live_nodes(&self) -> Result<Vec<String>, LeaseError> {
        let prefix = &self.nodes.prefix;
        let read = async {
            let subjects = self
                .nodes
                .stream
                .info_with_subjects(format!("{prefix}>"))
                .await
                .map_err(nats)?;
            let mut nodes: Vec<String> = subjects
                .map_ok(|(subject, _count)| subject[prefix.len()..].to_owned())
                .try_collect()
                .await
                .map_err(nats)?;
            nodes.sort();
            Ok(nodes)
        };
        self.within_ttl("reading the live nodes", read).await
    }
}

/// The live node that should own `partition`: the one with the highest rendezvous weight. Each partition picks
/// independently, so shares are even on average, and a node leaving moves only the partitions it was preferred
/// for.
pub fn preferred(partition: u32, live: &[String]) -> Option<&str> {
    live.iter()
        .max_by_key(|node| weight(node, partition))
        .map(String::as_str)
}

fn weight(node: &str, partition: u32) -> u64 {
    // FNV-1a over the node id and the partition, then a 64-bit finalizer (splitmix64) so that nearby inputs
    // give unrelated weights.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain(partition.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn live_nodes_share_partitions_evenly() {
        let live = nodes(&["node-a", "node-b", "node-c"]);
        let mut shares = std::collections::HashMap::new();
        for partition in 0..64 {
            *shares
                .entry(preferred(partition, &live).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(shares.len(), 3, "{shares:?}");
        assert!(
            shares.values().all(|&n| (12..=30).contains(&n)),
            "{shares:?}"
        );
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_partitions() {
        let before = nodes(&["node-a", "node-b", "node-c"]);
        let after = nodes(&["node-a", "node-c"]);
        for partition in 0..64 {
            let was = preferred(partition, &before).unwrap();
            let now = preferred(partition, &after).unwrap();
            if was != "node-b" {
                assert_eq!(was, now, "partition {partition}");
            }
        }
        assert_eq!(preferred(0, &[]), None);
    }
}
