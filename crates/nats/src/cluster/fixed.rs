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
    pub partitions: u32,
    /// The streams the partitions' logs are spread over (`log_stream`). Absent from a `/1` configuration,
    /// which is then refused for its format, not as unreadable.
    #[serde(default)]
    pub log_streams: u32,
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

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "the cluster has {cluster} partitions but this node is configured with {node}: COHOST_PARTITIONS is fixed \
         when the cluster is first created"
    )]
    Partitions { cluster: u32, node: u32 },
    #[error(
        "the cluster's log has {cluster} streams but this node is configured with {node}: COHOST_LOG_STREAMS is \
         fixed when the cluster is first created"
    )]
    LogStreams { cluster: u32, node: u32 },
    #[error("the cluster's log format is {cluster:?} but this node reads {node:?}")]
    Format { cluster: String, node: String },
    #[error("the cluster's configuration ({CLUSTER_BUCKET} key {CONFIG_KEY:?}) is unreadable: {0}")]
    Corrupt(String),
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
/// every other node must be configured the same, or is refused, naming both values.
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
