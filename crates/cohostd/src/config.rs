//! Every setting is a flag and an environment variable (the contract's configuration table).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cohost_proto::Encoding;

#[derive(Debug, Parser)]
#[command(
    name = "cohostd",
    version,
    about = "The cohost daemon: co-host flow for livestreams over HTTP and NATS"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Subcommands>,
}

#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Prints a JWT for a user, signed with the deployment's auth secret (in dev mode, the generated one); or,
    /// with `--service`, a service credential, signed with the service secret.
    Token {
        /// The user the token names (`sub`).
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        user: Option<String>,
        /// The backend service a service credential names (`sub`, with `role: service`).
        #[arg(long)]
        service: Option<String>,
        /// Lifetime of the token in seconds: at least 1, at most the deployment's `--jwt-lifetime-max-s`.
        #[arg(long, default_value_t = 3_600)]
        ttl_s: u64,
    },
    /// Copies a running single node's log, up to its last durable seq, into DIR (new or empty), through the
    /// node's `GET /v1/admin/backup` with the admin secret; the node goes on serving.
    Backup {
        /// The backup directory to write.
        #[arg(long)]
        to: PathBuf,
        /// The node's HTTP address; default: `http://` and `--http-addr`.
        #[arg(long)]
        url: Option<String>,
    },
    /// Rebuilds the data directory (`--data-dir`, new or empty) from a backup directory; start the daemon on
    /// it afterwards.
    Restore {
        /// The backup directory to read.
        #[arg(long)]
        from: PathBuf,
    },
    /// Cluster mode's tools (they talk to the cluster's NATS, `--nats-url`, not to a node).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Prints which node owns each partition, the partition's position in the log, and its followers' cursors.
    Status,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where the event log lives.
    #[arg(long, env = "COHOST_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// Where the HTTP API listens.
    #[arg(long, env = "COHOST_HTTP_ADDR", default_value = "127.0.0.1:7480")]
    pub http_addr: SocketAddr,
    /// NATS server URL; unset means in-process fan-out only.
    #[arg(long, env = "COHOST_NATS_URL")]
    pub nats_url: Option<String>,
    /// Publish into the JetStream stream COHOST instead of plain subjects.
    #[arg(long, env = "COHOST_JETSTREAM", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub jetstream: bool,
    /// Encoding of events on NATS: json or postcard.
    #[arg(long, env = "COHOST_WIRE_ENCODING", default_value = "json", value_parser = parse_encoding)]
    pub wire_encoding: Encoding,
    /// HS256 secret for user JWTs, at least 16 characters; unset (and no secret file) means dev mode with a
    /// generated secret.
    #[arg(
        long,
        env = "COHOST_AUTH_SECRET",
        hide_env_values = true,
        global = true,
        conflicts_with = "auth_secret_file"
    )]
    pub auth_secret: Option<String>,
    /// A file holding the HS256 secret for user JWTs (surrounding white space ignored), so the secret need not
    /// be on the command line or in the environment.
    #[arg(long, env = "COHOST_AUTH_SECRET_FILE", global = true)]
    pub auth_secret_file: Option<PathBuf>,
    /// The longest lifetime (`exp` − `iat`, or `exp` − now without `iat`) a user JWT may have.
    #[arg(long, env = "COHOST_JWT_LIFETIME_MAX_S", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=31_536_000), global = true)]
    pub jwt_lifetime_max_s: u64,
    /// When set, user JWTs must carry this `iss`.
    #[arg(long, env = "COHOST_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// When set, user JWTs must carry this `aud`.
    #[arg(long, env = "COHOST_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// How long a stream ticket (`POST /v1/stream-tickets`) opens its live collection, in seconds; never past
    /// the JWT it was made with.
    #[arg(long, env = "COHOST_STREAM_TICKET_TTL_S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=3_600), global = true)]
    pub stream_ticket_ttl_s: u64,
    /// Origins a browser may call the API from: `*`, or a comma-separated list such as
    /// `https://app.example.com,http://localhost:5173`. Unset: none (no CORS).
    #[arg(long, env = "COHOST_CORS_ORIGINS", value_parser = crate::browser::CorsOrigins::parse)]
    pub cors_origins: Option<crate::browser::CorsOrigins>,
    /// Serve the web console from this directory (the build of `clients/console`: `npm ci && npm run build`
    /// there, then `clients/console/dist`) at `/console`. Unset: no console.
    #[arg(long, env = "COHOST_CONSOLE_DIR", value_parser = crate::browser::console_dir)]
    pub console_dir: Option<std::path::PathBuf>,
    /// A JSON file of outgoing webhook endpoints (see the README); each gets every event it asks for, in log
    /// order, signed as Standard Webhooks says. Unset: none.
    #[arg(long, env = "COHOST_WEBHOOKS_FILE")]
    pub webhooks_file: Option<PathBuf>,
    /// The secret that opens the admin routes (`GET /v1/admin/webhooks`), at least 16 characters; never a user
    /// JWT. Unset (and no file): the admin routes answer 401.
    #[arg(
        long,
        env = "COHOST_ADMIN_SECRET",
        hide_env_values = true,
        global = true,
        conflicts_with = "admin_secret_file"
    )]
    pub admin_secret: Option<String>,
    /// The HS256 secret of service credentials (JWTs with `role: service`, for backends acting as themselves:
    /// stop any room, remove any co-host, read any room), at least 16 characters and not the auth secret.
    /// Unset (and no file): no service credential is accepted.
    #[arg(
        long,
        env = "COHOST_SERVICE_SECRET",
        hide_env_values = true,
        global = true,
        conflicts_with = "service_secret_file"
    )]
    pub service_secret: Option<String>,
    /// A file holding the service secret (surrounding white space ignored).
    #[arg(long, env = "COHOST_SERVICE_SECRET_FILE", global = true)]
    pub service_secret_file: Option<PathBuf>,
    /// A file holding the admin secret (surrounding white space ignored).
    #[arg(long, env = "COHOST_ADMIN_SECRET_FILE", global = true)]
    pub admin_secret_file: Option<PathBuf>,
    /// The wait after a webhook delivery's first failure, in ms; it doubles, with jitter, up to the cap.
    #[arg(long, env = "COHOST_WEBHOOK_RETRY_FIRST_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub webhook_retry_first_ms: u64,
    /// The longest wait between two attempts of one webhook delivery, in seconds.
    #[arg(long, env = "COHOST_WEBHOOK_RETRY_MAX_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub webhook_retry_max_s: u64,
    /// How long one event may keep failing before its endpoint pauses at it (until a restart), in seconds.
    #[arg(long, env = "COHOST_WEBHOOK_GIVE_UP_S", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub webhook_give_up_s: u64,
    /// One webhook request's deadline, connection included, in seconds.
    #[arg(long, env = "COHOST_WEBHOOK_TIMEOUT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_s: u64,
    /// What broadcaster.url returns.
    #[arg(long, env = "LIVEKIT_URL", default_value = "ws://localhost:7880")]
    pub livekit_url: String,
    #[arg(long, env = "LIVEKIT_API_KEY")]
    pub livekit_api_key: Option<String>,
    #[arg(long, env = "LIVEKIT_API_SECRET", hide_env_values = true)]
    pub livekit_api_secret: Option<String>,
    /// Prefix of LiveKit room names.
    #[arg(long, env = "COHOST_LIVEKIT_ROOM_PREFIX", default_value = "")]
    pub livekit_room_prefix: String,
    /// Remove participants through LiveKit's RoomService when they leave the stage.
    #[arg(long, env = "COHOST_LIVEKIT_ADMIN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub livekit_admin: bool,
    /// This deployment receives LiveKit's webhooks (at /v1/livekit/webhook), so it knows who is connected:
    /// the disconnect grace applies.
    #[arg(long, env = "COHOST_LIVEKIT_WEBHOOKS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub livekit_webhooks: bool,
    /// With LiveKit webhooks on: seconds a seated co-host may stay away from LiveKit (left, or not joined since
    /// accepting) before the system removes them (reason `disconnected`); 0 never.
    #[arg(long, env = "COHOST_DISCONNECT_GRACE_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub disconnect_grace_s: u64,
    /// With LiveKit webhooks and the reconciliation on (admin on, `COHOST_LIVEKIT_RECONCILE_S` > 0): seconds a
    /// live room's host may stay away from LiveKit (left, or not joined since going live) before the system
    /// stops the room (reason `host_absent`); 0 never.
    #[arg(long, env = "COHOST_HOST_ABSENT_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
    pub host_absent_s: u64,
    /// Seconds a room may stay idle, never live, from its creation before the system ends it (reason
    /// `never_live`); 0 never.
    #[arg(long, env = "COHOST_IDLE_ROOM_S", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub idle_room_s: u64,
    /// With LiveKit admin and webhooks on: seconds between two comparisons of who each room thinks is connected
    /// with LiveKit's list of participants (a lost webhook is caught up at the next); 0 never.
    #[arg(long, env = "COHOST_LIVEKIT_RECONCILE_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub livekit_reconcile_s: u64,
    /// Invitation TTL in seconds (10 to 86400).
    #[arg(long, env = "COHOST_INVITATION_TTL_S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub invitation_ttl_s: u64,
    /// LiveKit token TTL in seconds.
    #[arg(long, env = "COHOST_TOKEN_TTL_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub token_ttl_s: u64,
    /// Seats a room gets when create_room names none (1 to 16).
    #[arg(long, env = "COHOST_MAX_COHOSTS", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub max_cohosts: u8,
    /// A request's headers must arrive within this many seconds; also how long an idle keep-alive connection
    /// waits for its next request.
    #[arg(long, env = "COHOST_HTTP_HEADER_TIMEOUT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub http_header_timeout_s: u64,
    /// A request's body must arrive whole within this many seconds (408 otherwise).
    #[arg(long, env = "COHOST_HTTP_BODY_TIMEOUT_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub http_body_timeout_s: u64,
    /// A write to a client that makes no progress for this many seconds (the client stopped reading) closes
    /// the connection.
    #[arg(long, env = "COHOST_HTTP_WRITE_TIMEOUT_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub http_write_timeout_s: u64,
    /// Open HTTP connections at most; lowered to fit the process's limit on open files.
    #[arg(long, env = "COHOST_HTTP_CONNECTIONS_MAX", default_value_t = 4_096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_connections_max: u64,
    /// On SIGTERM, how long open connections may take to finish before they are dropped and the engine is
    /// drained anyway.
    #[arg(long, env = "COHOST_SHUTDOWN_GRACE_S", default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub shutdown_grace_s: u64,
    /// Rooms one host may hold open (idle or live) at once.
    #[arg(long, env = "COHOST_OPEN_ROOMS_PER_HOST_MAX", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub open_rooms_per_host_max: u32,
    /// Pending invitations and requests one user may hold as candidate, across rooms.
    #[arg(long, env = "COHOST_PENDING_PER_CANDIDATE_MAX", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub pending_per_candidate_max: u32,
    /// Commands one user may send per second over HTTP (twice as many in a burst).
    #[arg(long, env = "COHOST_USER_COMMANDS_PER_S", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub user_commands_per_s: u32,
    /// Invitations and requests to join one user may make per minute over HTTP.
    #[arg(long, env = "COHOST_USER_INVITATIONS_PER_MIN", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub user_invitations_per_min: u32,
    /// Live collections (SSE) one user may hold open.
    #[arg(long, env = "COHOST_USER_STREAMS_MAX", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub user_streams_max: u32,
    /// Live collections (SSE) open in all; at most three quarters of the connection cap, so that streams never
    /// take the connections commands need.
    #[arg(long, env = "COHOST_STREAMS_MAX", default_value_t = 3_072, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub streams_max: u32,
    /// How long an ended room stays in memory before it is archived in the store (reads and commands load it
    /// back on demand).
    #[arg(long, env = "COHOST_ENDED_ROOM_RETENTION_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub ended_room_retention_s: u64,
    /// Events between snapshots of the rooms in memory: opening replays only the log after the last one. In
    /// cluster mode each partition's snapshot is also saved for its next owner. Default: 1,000,000 on one
    /// node, 10,000 per partition in cluster mode.
    #[arg(long, env = "COHOST_SNAPSHOT_EVERY_EVENTS", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub snapshot_every_events: Option<u64>,
    /// The most memory, in MiB, the store's page cache (sled's) may take.
    #[arg(long, env = "COHOST_STORE_CACHE_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub store_cache_mb: u64,
    /// Cluster mode: the log in JetStream (at COHOST_NATS_URL), rooms split into partitions, one writing node
    /// per partition. Off: one node, the log in sled under COHOST_DATA_DIR.
    #[arg(long, env = "COHOST_CLUSTER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub cluster: bool,
    /// This node's name in the cluster: 1 to 32 characters of `[A-Za-z0-9_-]`, unique among the nodes.
    #[arg(long, env = "COHOST_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Where the other nodes reach this node's HTTP API (`http://host:port`), to send it the live collections
    /// of the rooms it owns; by default `http://` and `COHOST_HTTP_ADDR`, unless that address is unspecified.
    #[arg(long, env = "COHOST_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Partitions of the cluster, fixed when the cluster is first created.
    #[arg(long, env = "COHOST_PARTITIONS", default_value_t = cohost_proto::partition::PARTITIONS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=i64::from(cohost_proto::partition::PARTITIONS_MAX)))]
    pub partitions: u32,
    /// Replicas of the partition log and of the cluster's KV buckets: 3 on a 3-server JetStream cluster; 1 is
    /// for development only (one server's disk holds everything).
    #[arg(long, env = "COHOST_LOG_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub log_replicas: u8,
    /// JetStream streams the partition log is spread over, fixed when the cluster is first created: each
    /// stream syncs its writes one after another on its leader, so more streams write side by side and
    /// spread their leaders over the servers (where each server has its own disk and cores).
    #[arg(long, env = "COHOST_LOG_STREAMS", default_value_t = cohost_nats::cluster::LOG_STREAMS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=i64::from(cohost_nats::cluster::LOG_STREAMS_MAX)))]
    pub log_streams: u32,
}

fn parse_node_id(text: &str) -> Result<String, String> {
    let valid = (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("1 to 32 characters of [A-Za-z0-9_-]".into())
    }
}

/// A secret given as a setting or in a file (white space around it ignored), of at least 16 characters;
/// `None` when neither is set.
fn secret_setting(
    what: &str,
    file_setting: &str,
    secret: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, String> {
    let secret = match (secret, file) {
        (Some(secret), _) => secret.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {file_setting} {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if secret.chars().count() < 16 {
        return Err(format!("the {what} secret must be at least 16 characters"));
    }
    Ok(Some(secret))
}

/// Cluster mode's settings, checked.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: String,
    pub nats_url: String,
    pub partitions: u32,
    pub log_streams: u32,
    pub replicas: usize,
    /// Where the other nodes reach this one over HTTP; `None` when it cannot be known.
    pub advertise_url: Option<String>,
}

impl Settings {
    /// The admin secret, from the setting or its file; at least 16 characters.
    pub fn admin_secret(&self) -> Result<Option<String>, String> {
        let (secret, file) = (&self.admin_secret, &self.admin_secret_file);
        secret_setting("admin", "COHOST_ADMIN_SECRET_FILE", secret, file)
    }

    /// The service secret, from the setting or its file; at least 16 characters.
    pub fn service_secret(&self) -> Result<Option<String>, String> {
        let (secret, file) = (&self.service_secret, &self.service_secret_file);
        secret_setting("service", "COHOST_SERVICE_SECRET_FILE", secret, file)
    }

    /// The endpoints of the webhooks file; none when it is unset.
    pub fn webhook_endpoints(&self) -> Result<Vec<crate::outbound::Endpoint>, String> {
        let Some(path) = &self.webhooks_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read COHOST_WEBHOOKS_FILE {}: {e}", path.display()))?;
        crate::outbound::parse_endpoints(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn webhook_delivery(&self) -> crate::delivery::DeliverySettings {
        use std::time::Duration;
        crate::delivery::DeliverySettings {
            retry_first: Duration::from_millis(self.webhook_retry_first_ms),
            retry_max: Duration::from_secs(self.webhook_retry_max_s),
            give_up_after: Duration::from_secs(self.webhook_give_up_s),
            timeout: Duration::from_secs(self.webhook_timeout_s),
        }
    }

    /// The per-user quotas at the HTTP edge, with open streams kept to three quarters of `connections_max`
    /// (the fitted cap of [`Settings::limits`]).
    pub fn quotas(&self, connections_max: usize) -> crate::quota::QuotaLimits {
        let fits = connections_max - connections_max / 4;
        let fits = u32::try_from(fits).unwrap_or(u32::MAX).max(1);
        if self.streams_max > fits {
            tracing::warn!(
                streams_max = self.streams_max,
                connections_max,
                lowered_to = fits,
                "the stream cap is lowered to three quarters of the connection cap"
            );
        }
        crate::quota::QuotaLimits {
            commands_per_s: self.user_commands_per_s,
            invitations_per_min: self.user_invitations_per_min,
            streams_per_user: self.user_streams_max,
            streams_total: self.streams_max.min(fits),
        }
    }

    /// The disconnect grace the rules apply: only where LiveKit's webhooks say who is connected.
    pub fn disconnect_grace_ms(&self) -> u64 {
        if self.livekit_webhooks {
            self.disconnect_grace_s.saturating_mul(1_000)
        } else {
            0
        }
    }

    /// How long a live room's host may be away: only where LiveKit's webhooks say who is connected and the
    /// reconciliation catches a lost one, so a present host is never judged absent.
    pub fn host_absent_ms(&self) -> u64 {
        if self.livekit_webhooks && self.livekit_admin && self.livekit_reconcile_s > 0 {
            self.host_absent_s.saturating_mul(1_000)
        } else {
            0
        }
    }

    /// The engine's configuration: the rules' policy, retention, abandoned rooms and cache.
    pub fn engine(&self) -> Result<cohost_engine::Config, String> {
        let reconciles =
            self.livekit_admin && self.livekit_webhooks && self.livekit_reconcile_s > 0;
        // A lost join is caught up by the next reconciliation: it must come before a wait on presence decides.
        for (name, wait_s) in [
            ("COHOST_DISCONNECT_GRACE_S", self.disconnect_grace_s),
            ("COHOST_HOST_ABSENT_S", self.host_absent_s),
        ] {
            if reconciles && wait_s > 0 && self.livekit_reconcile_s >= wait_s {
                return Err(format!(
                    "COHOST_LIVEKIT_RECONCILE_S ({}) must be shorter than {name} ({wait_s})",
                    self.livekit_reconcile_s
                ));
            }
        }
        let policy = cohost_core::Policy::new(
            self.invitation_ttl_s.saturating_mul(1_000),
            self.max_cohosts,
        )
        .and_then(|policy| {
            policy.with_quotas(self.open_rooms_per_host_max, self.pending_per_candidate_max)
        })
        .and_then(|policy| policy.with_disconnect_grace_ms(self.disconnect_grace_ms()))
        .map_err(|e| format!("the rules' settings: {e}"))?;
        let mut config = cohost_engine::Config::new(&self.data_dir).with_policy(policy);
        config.clock = std::sync::Arc::new(cohost_engine::SystemClock);
        config.ended_retention_ms = self.ended_room_retention_s.saturating_mul(1_000);
        config.idle_room_ms = self.idle_room_s.saturating_mul(1_000);
        config.host_absent_ms = self.host_absent_ms();
        config.store_cache_bytes = self.store_cache_mb.saturating_mul(1 << 20);
        if let Some(every) = self.snapshot_every_events {
            config.snapshot_every_events = every;
        }
        Ok(config)
    }
    /// Cluster mode's settings, when it is on: it needs a node id and a NATS URL.
    pub fn cluster(&self) -> Result<Option<ClusterSettings>, String> {
        if !self.cluster {
            return Ok(None);
        }
        let node_id = self
            .node_id
            .clone()
            .ok_or("cluster mode needs COHOST_NODE_ID, this node's name in the cluster")?;
        let nats_url = self
            .nats_url
            .clone()
            .ok_or("cluster mode needs COHOST_NATS_URL: the log lives in JetStream")?;
        let advertise_url = match &self.advertise_url {
            Some(url)
                if url
                    .strip_prefix("http://")
                    .is_some_and(|host| !host.is_empty() && !host.contains('/')) =>
            {
                Some(url.clone())
            }
            Some(url) => {
                return Err(format!(
                    "COHOST_ADVERTISE_URL must be http://host:port (no path: the nodes talk plain HTTP to \
                     each other), not {url:?}"
                ));
            }
            None if self.http_addr.ip().is_unspecified() => None,
            None => Some(format!("http://{}", self.http_addr)),
        };
        Ok(Some(ClusterSettings {
            node_id,
            nats_url,
            partitions: self.partitions,
            log_streams: self.log_streams,
            replicas: usize::from(self.log_replicas),
            advertise_url,
        }))
    }

    /// The connection loop's limits, with the connection cap fitted to the open-files limit.
    pub fn limits(&self) -> crate::serve::Limits {
        let wanted = usize::try_from(self.http_connections_max).unwrap_or(usize::MAX);
        crate::serve::Limits {
            header_read_timeout: std::time::Duration::from_secs(self.http_header_timeout_s),
            body_read_timeout: std::time::Duration::from_secs(self.http_body_timeout_s),
            write_timeout: std::time::Duration::from_secs(self.http_write_timeout_s),
            connections_max: crate::serve::fit_connections_max(wanted),
            shutdown_grace: std::time::Duration::from_secs(self.shutdown_grace_s),
        }
    }
}

fn parse_encoding(text: &str) -> Result<Encoding, String> {
    text.parse()
        .map_err(|e: cohost_proto::DecodeError| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    fn settings(args: &[&str]) -> super::Settings {
        Cli::try_parse_from(std::iter::once("cohostd").chain(args.iter().copied()))
            .unwrap()
            .settings
    }

    #[test]
    fn streams_leave_a_quarter_of_the_connections_to_commands() {
        let defaults = settings(&[]);
        assert_eq!(
            defaults.quotas(4_096).streams_total,
            3_072,
            "the defaults fit"
        );
        assert_eq!(defaults.quotas(1_000).streams_total, 750);
        let few = settings(&["--streams-max", "10"]);
        assert_eq!(few.quotas(1_000).streams_total, 10, "a lower cap stands");
        assert_eq!(few.quotas(1).streams_total, 1);
        let limits = settings(&["--http-write-timeout-s", "5"]).limits();
        assert_eq!(limits.write_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn cluster_mode_needs_a_node_id_and_nats_and_checks_them() {
        assert!(
            settings(&[]).cluster().unwrap().is_none(),
            "single node by default"
        );
        let no_id = settings(&["--cluster", "--nats-url", "nats://127.0.0.1:4222"]);
        assert!(no_id.cluster().unwrap_err().contains("COHOST_NODE_ID"));
        let no_nats = settings(&["--cluster", "--node-id", "n1"]);
        assert!(no_nats.cluster().unwrap_err().contains("COHOST_NATS_URL"));
        let ok = settings(&[
            "--cluster",
            "--node-id",
            "n-1",
            "--nats-url",
            "nats://h:1",
            "--log-replicas",
            "3",
        ]);
        let cluster = ok.cluster().unwrap().unwrap();
        assert_eq!((cluster.partitions, cluster.replicas), (64, 3));
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("cohostd").chain(args.iter().copied()))
        };
        assert!(parse(&["--node-id", "has.dot"]).is_err());
        assert!(parse(&["--node-id", &"x".repeat(33)]).is_err());
        assert!(parse(&["--partitions", "0"]).is_err());
        assert!(parse(&["--partitions", "1025"]).is_err());
    }
}
