//! What a cluster fixes when it is first created: its partition count, its log streams and the format of its log. Every node
//! checks its own against them before it takes any partition.

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

/// The KV bucket holding the cluster's fixed configuration.
pub const CLUSTER_BUCKET: &str = "COHOST_CLUSTER";
const CONFIG_KEY: &str = "config";
/// The format and layout of the partition log that this build writes and reads. `/2`: the log spread over
/// `log_streams` streams (`/1` had one stream, `COHOST_LOG`, whose nodes would not see `/2`'s subjects).
pub const LOG_FORMAT: &str = "cohost-log/2";

/// The partition count, log streams and log format of a cluster (or those a node is configured with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fixed {
    /// `COHOST_PARTITIONS`: rooms are split over this many partitions.
    pub partitions: u32,
    /// The streams the partitions' logs are spread over (`log_stream`). Absent from a `/1` configuration,
    /// which is then refused for its format, not as unreadable.
    #[serde(default)]
    pub log_streams: u32,
    /// The log's format and layout, [`LOG_FORMAT`] for this build.
    pub format: String,
}

impl Fixed {
    /// This build's format with `partitions` over `log_streams` streams.
    pub fn new(partitions: u32, log_streams: u32) -> Self {
        Self {
            partitions,
            log_streams,
            format: LOG_FORMAT.to_owned(),
        }
    }
}

/// Why a node may not join: its configuration differs from the cluster's (final: fix the configuration), or
/// the configuration could not be read or written (NATS; worth trying again).
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The partition counts differ.
    #[error(
        "the cluster has {cluster} partitions but this node is configured with {node}: COHOST_PARTITIONS is fixed \
         when the cluster is first created"
    )]
    Partitions {
        /// The cluster's.
        cluster: u32,
        /// This node's.
        node: u32,
    },
    /// The log stream counts differ.
    #[error(
        "the cluster's log has {cluster} streams but this node is configured with {node}: COHOST_LOG_STREAMS is \
         fixed when the cluster is first created"
    )]
    LogStreams {
        /// The cluster's.
        cluster: u32,
        /// This node's.
        node: u32,
    },
    /// The log's formats differ: this build cannot read the cluster's log (or its layout).
    #[error("the cluster's log format is {cluster:?} but this node reads {node:?}")]
    Format {
        /// The cluster's.
        cluster: String,
        /// This build's, [`LOG_FORMAT`].
        node: String,
    },
    /// The stored configuration does not decode; why, for people.
    #[error("the cluster's configuration ({CLUSTER_BUCKET} key {CONFIG_KEY:?}) is unreadable: {0}")]
    Corrupt(String),
    /// NATS did not answer or refused; what it said.
    #[error("the cluster's configuration cannot be read or written: {0}")]
    Nats(String),
}

fn nats(error: impl std::fmt::Display) -> JoinError {
    JoinError::Nats(error.to_string())
}

/// The cluster's fixed configuration, as its first node wrote it; `None` before any node joined.
pub async fn read(js: &jetstream::Context) -> Result<Option<Fixed>, JoinError> {
    let bucket = match js.get_key_value(CLUSTER_BUCKET).await {
        Ok(bucket) => bucket,
        Err(error) if error.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
            return Ok(None);
        }
        Err(error) => return Err(nats(error)),
    };
    let Some(stored) = bucket.get(CONFIG_KEY).await.map_err(nats)? else {
        return Ok(None);
    };
    serde_json::from_slice(&stored)
        .map(Some)
        .map_err(|e| JoinError::Corrupt(e.to_string()))
}

/// Joins the cluster: the first node to get here fixes `node`'s configuration for good (create, one winner);
/// every other node must be configured the same, or is refused, naming both values. Creates the KV bucket
/// [`CLUSTER_BUCKET`] with `replicas` on first use. Returns the cluster's configuration.
///
/// # Errors
///
/// [`JoinError::Partitions`], [`JoinError::LogStreams`] or [`JoinError::Format`] when this node differs;
/// [`JoinError::Corrupt`] or [`JoinError::Nats`] when the configuration cannot be had.
pub async fn join(
    js: &jetstream::Context,
    node: &Fixed,
    replicas: usize,
) -> Result<Fixed, JoinError> {
    let bucket = match js.get_key_value(CLUSTER_BUCKET).await {
        Ok(bucket) => bucket,
        Err(_) => {
            let config = kv::Config {
                bucket: CLUSTER_BUCKET.to_owned(),
                description: "cohost: what the cluster fixed when it was created".to_owned(),
                history: 1,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            };
            match js.create_key_value(config).await {
                Ok(bucket) => bucket,
                // Another node created it first.
                Err(_) => js.get_key_value(CLUSTER_BUCKET).await.map_err(nats)?,
            }
        }
    };
    let value = serde_json::to_vec(node).expect("the configuration serializes");
    match bucket.create(CONFIG_KEY, value.into()).await {
        Ok(_) => return Ok(node.clone()),
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(error) => return Err(nats(error)),
    }
    let stored = bucket
        .get(CONFIG_KEY)
        .await
        .map_err(nats)?
        .ok_or_else(|| JoinError::Corrupt("the key exists but has no value".into()))?;
    let cluster: Fixed =
        serde_json::from_slice(&stored).map_err(|e| JoinError::Corrupt(e.to_string()))?;
    if cluster.format != node.format {
        return Err(JoinError::Format {
            cluster: cluster.format,
            node: node.format.clone(),
        });
    }
    if cluster.partitions != node.partitions {
        return Err(JoinError::Partitions {
            cluster: cluster.partitions,
            node: node.partitions,
        });
    }
    if cluster.log_streams != node.log_streams {
        return Err(JoinError::LogStreams {
            cluster: cluster.log_streams,
            node: node.log_streams,
        });
    }
    Ok(cluster)
}
