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
    /// Prints a JWT for a user, signed with the deployment's auth secret (in dev mode, the generated one).
    Token {
        #[arg(long)]
        user: String,
        /// Lifetime of the token in seconds.
        #[arg(long, default_value_t = 3_600)]
        ttl_s: u64,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where the event log lives.
    #[arg(long, env = "COHOST_DATA_DIR", default_value = "./data")]
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
    /// HS256 secret for user JWTs; unset means dev mode with a generated secret.
    #[arg(long, env = "COHOST_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
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
    /// Invitation TTL in seconds (10 to 86400).
    #[arg(long, env = "COHOST_INVITATION_TTL_S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub invitation_ttl_s: u64,
    /// LiveKit token TTL in seconds.
    #[arg(long, env = "COHOST_TOKEN_TTL_S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub token_ttl_s: u64,
    /// Seats a room gets when create_room names none (1 to 16).
    #[arg(long, env = "COHOST_MAX_COHOSTS", default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub max_cohosts: u8,
}

fn parse_encoding(text: &str) -> Result<Encoding, String> {
    text.parse()
        .map_err(|e: cohost_proto::DecodeError| e.to_string())
}
