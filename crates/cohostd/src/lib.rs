//! cohostd: the cohost daemon. Configuration, the HTTP API with live collections over SSE, LiveKit webhooks,
//! outgoing webhooks, metrics, and, when `COHOST_NATS_URL` is set, the NATS relay and service (or, in cluster
//! mode, the partitions it owns); `/healthz` and `/metrics` show the state of the log's followers (the relay,
//! the LiveKit revoker, each webhook delivery).
//!
//! It decides nothing itself: every command goes to [`cohost_engine`], LiveKit credentials and webhooks are
//! [`cohost_credentials`]'s, NATS and the cluster are [`cohost_nats`]'s, and the wire types are
//! [`cohost_proto`]'s. It is the only crate that serves HTTP (the credentials crate calls LiveKit's API as a
//! client).
//!
//! The binary (`main.rs`) only calls [`main`]. The parts are a library so tests can serve the router in
//! process, over an engine on a disk they control; the modules public for that are hidden from the docs, as
//! they are not an embedding API (embed [`cohost_engine`] instead).

#![warn(missing_docs)]

mod admin;
// Public for the in-process tests (tests/readiness.rs, tests/fail-stop.rs, tests/webhooks-out.rs).
#[doc(hidden)]
pub mod auth;
mod backup;
mod browser;
mod cluster;
mod config;
mod delivery;
mod erase;
mod error;
mod forward;
#[doc(hidden)]
pub mod http;
mod metrics;
mod openapi;
#[doc(hidden)]
pub mod outbound;
mod quota;
#[doc(hidden)]
pub mod serve;
mod sse;
mod stage;
mod ticket;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use cohost_credentials::{LiveKitConfig, Revoker};
use cohost_engine::{Engine, FollowerStatus};
use cohost_nats::relay::{Mode, Relay, RelayConfig};
use cohost_proto::UserId;

use crate::config::{Cli, ClusterCommand, Settings, Subcommands};

/// The daemon: parses the command line and the environment, then serves until SIGTERM, or runs a subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cohostd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Some(Subcommands::Token {
            user,
            service,
            ttl_s,
        }) => token(&cli.settings, user.as_deref(), service.as_deref(), ttl_s),
        Some(Subcommands::Backup { to, url }) => {
            let url = url.unwrap_or_else(|| format!("http://{}", cli.settings.http_addr));
            match cli.settings.admin_secret() {
                Ok(Some(secret)) => runtime
                    .block_on(backup::run_backup(&url, &secret, &to))
                    .map(|done| eprintln!("cohostd: {done}")),
                Ok(None) => {
                    Err("a backup needs the admin secret (COHOST_ADMIN_SECRET or its file)".into())
                }
                Err(error) => Err(error),
            }
        }
        Some(Subcommands::Restore { from }) => backup::run_restore(&from, &cli.settings.data_dir)
            .map(|done| eprintln!("cohostd: {done}")),
        Some(Subcommands::Cluster(ClusterCommand::Status)) => {
            runtime.block_on(cluster::cluster_status(&cli.settings))
        }
        None => runtime.block_on(serve(cli.settings)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cohostd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The deployment's auth secret (from the setting or its file), or the dev one (generated once, kept in the
/// data dir); and whether it is the dev one.
pub(crate) fn auth_secret(settings: &Settings) -> Result<(String, bool), String> {
    let configured = match (&settings.auth_secret, &settings.auth_secret_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "cannot read COHOST_AUTH_SECRET_FILE {}: {e}",
                        path.display()
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    if let Some(secret) = configured {
        if secret.chars().count() < 16 {
            return Err("the auth secret must be at least 16 characters".into());
        }
        return Ok((secret, false));
    }
    let path = auth::dev_secret_path(&settings.data_dir);
    let (secret, created) = auth::dev_secret(&settings.data_dir)
        .map_err(|e| format!("cannot keep the dev auth secret in {}: {e}", path.display()))?;
    if created {
        // The secret itself is never printed: logs outlive it.
        eprintln!(
            "cohostd: dev mode: generated an auth secret into {} (mode 0600)",
            path.display()
        );
    }
    Ok((secret, true))
}

/// The deployment's token checks: user JWTs signed with `secret`, and service credentials when a service
/// secret is set. The service secret may be neither the users' (a user token would then pass for a service's)
/// nor the admin secret (holding one would be holding both).
pub(crate) fn authenticator(settings: &Settings, secret: &str) -> Result<auth::Auth, String> {
    let rules = auth::TokenRules {
        lifetime_max: Duration::from_secs(settings.jwt_lifetime_max_s),
        issuer: settings.jwt_issuer.clone(),
        audience: settings.jwt_audience.clone(),
        stream_ticket_ttl: Duration::from_secs(settings.stream_ticket_ttl_s),
    };
    let auth = auth::Auth::with_rules(secret, rules);
    match settings.service_secret()? {
        Some(service) if service == secret => {
            Err("the service secret must differ from the auth secret".into())
        }
        Some(service) if settings.admin_secret()?.as_deref() == Some(service.as_str()) => {
            Err("the service secret must differ from the admin secret".into())
        }
        Some(service) => Ok(auth.with_service_secret(&service)),
        None => Ok(auth),
    }
}

fn token(
    settings: &Settings,
    user: Option<&str>,
    service: Option<&str>,
    ttl_s: u64,
) -> Result<(), String> {
    if ttl_s == 0 || ttl_s > settings.jwt_lifetime_max_s {
        return Err(format!(
            "--ttl-s must be from 1 to {} (the deployment's --jwt-lifetime-max-s)",
            settings.jwt_lifetime_max_s
        ));
    }
    let (secret, _) = auth_secret(settings)?;
    let auth = authenticator(settings, &secret)?;
    let token = match (user, service) {
        (Some(user), _) => auth.mint(&UserId::new(user).map_err(|e| e.to_string())?, ttl_s),
        (None, Some(service)) => {
            let service = cohost_proto::ServiceId::new(service).map_err(|e| e.to_string())?;
            (auth.mint_service(&service, ttl_s))
                .ok_or("a service credential needs the service secret (COHOST_SERVICE_SECRET)")?
        }
        (None, None) => return Err("name a --user or a --service".into()),
    };
    println!("{token}");
    Ok(())
}

pub(crate) fn livekit(settings: &Settings) -> Result<(LiveKitConfig, bool), String> {
    let dev = LiveKitConfig::dev();
    let (api_key, api_secret, dev_mode) =
        match (&settings.livekit_api_key, &settings.livekit_api_secret) {
            // The public dev pair counts as dev mode however it was given.
            (Some(key), Some(secret)) => {
                let dev_pair = *key == dev.api_key && *secret == dev.api_secret;
                (key.clone(), secret.clone(), dev_pair)
            }
            (None, None) => (dev.api_key, dev.api_secret, true),
            _ => return Err("set both LIVEKIT_API_KEY and LIVEKIT_API_SECRET, or neither".into()),
        };
    let config = LiveKitConfig {
        url: settings.livekit_url.clone(),
        api_key,
        api_secret,
        room_prefix: settings.livekit_room_prefix.clone(),
        token_ttl: Duration::from_secs(settings.token_ttl_s),
        admin: settings.livekit_admin,
    };
    Ok((config, dev_mode))
}

/// How often the quotas forget users whose buckets have refilled.
pub(crate) const QUOTA_SWEEP_EVERY: Duration = Duration::from_secs(60);

async fn serve(settings: Settings) -> Result<(), String> {
    if let Some(cluster) = settings.cluster()? {
        return cluster::serve_cluster(settings, cluster).await;
    }
    let config = settings.engine()?;
    let (secret, dev_auth) = auth_secret(&settings)?;
    let auth = authenticator(&settings, &secret)?;
    let (livekit, dev_livekit) = livekit(&settings)?;
    dev_mode(&settings, dev_auth, dev_livekit)?;
    let limits = settings.limits();
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.http_addr))?;
    tracing::info!(addr = %settings.http_addr, data_dir = %settings.data_dir.display(), ?limits, "cohostd listening");
    // Serve at once: while the engine recovers, /healthz says so, /readyz answers 503 and the API 503.
    let (routers_tx, routers) = tokio::sync::watch::channel(http::starting_router());
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let connections = Arc::new(serve::ConnectionStats::default());
    let server = tokio::spawn(serve::serve(
        listener,
        routers,
        limits,
        connections.clone(),
        async move {
            shutdown_signal().await;
            let _ = closing_tx.send(true);
        },
    ));
    let engine = tokio::task::spawn_blocking(move || Engine::open(config))
        .await
        .map_err(|e| format!("opening the engine panicked: {e}"))?
        .map_err(|e| e.to_string())?;
    let tasks = Tasks::start(&engine, &settings, &livekit).await?;
    let mut state = http::AppState::new(engine.clone(), livekit, auth, closing);
    state.followers = tasks.followers().into();
    state.body_read_timeout = limits.body_read_timeout;
    state.connections = connections;
    state.cors = settings.cors_origins.clone();
    state.console_dir = settings.console_dir.clone();
    state.admin_secret = settings.admin_secret()?;
    state.webhooks = tasks.webhooks();
    state.quotas = Arc::new(quota::Quotas::new(settings.quotas(limits.connections_max)));
    quota::sweep_every(state.quotas.clone(), QUOTA_SWEEP_EVERY);
    let _ = routers_tx.send(http::router(state));
    tracing::info!("cohostd ready");
    match server.await {
        Ok(serve::Stopped::Gracefully) => {}
        Ok(serve::Stopped::Dropped(open)) => tracing::warn!(
            open,
            grace_s = limits.shutdown_grace.as_secs(),
            "connections still open after the shutdown grace period were dropped"
        ),
        Err(error) => tracing::error!(%error, "the HTTP server task failed"),
    }
    tracing::info!("stopping: draining the engine");
    tasks.stop().await;
    engine.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Refuses LiveKit's public dev pair beside a real auth secret, and warns about each dev-mode setting.
pub(crate) fn dev_mode(
    settings: &Settings,
    dev_auth: bool,
    dev_livekit: bool,
) -> Result<(), String> {
    if !dev_auth && dev_livekit {
        // Anyone can sign a webhook with LiveKit's public dev pair, and so stop any room.
        return Err("an auth secret is set (not dev mode), so LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set too, \
                    and not to LiveKit's public dev pair"
            .into());
    }
    if dev_auth {
        tracing::warn!(
            secret_file = %settings.data_dir.join("dev-auth-secret").display(),
            "DEV MODE: no COHOST_AUTH_SECRET; user tokens are signed with a generated secret. \
             Get one with `cohostd token --user <id>`. Never run this in production."
        );
    }
    if dev_livekit {
        tracing::warn!(
            "DEV MODE: no LIVEKIT_API_KEY/SECRET; LiveKit tokens use the dev key pair devkey/secret"
        );
    }
    Ok(())
}

/// What runs beside the HTTP server: the NATS relay and service (with `COHOST_NATS_URL`), the revoker (with
/// LiveKit admin on) and the reconciler (with LiveKit admin and webhooks on).
struct Tasks {
    nats: Option<(Relay, cohost_nats::service::ServiceHandle)>,
    revoker: Option<Revoker>,
    reconciler: Option<cohost_credentials::Reconciler>,
    /// One per webhook endpoint of `COHOST_WEBHOOKS_FILE`.
    webhooks: Vec<delivery::Delivery>,
    /// The same, listed for the admin routes.
    deliveries: Arc<delivery::Deliveries>,
}

impl Tasks {
    async fn start(
        engine: &Engine,
        settings: &Settings,
        livekit: &LiveKitConfig,
    ) -> Result<Tasks, String> {
        let revoker = if livekit.admin {
            Some(Revoker::start(engine.clone(), livekit.clone()).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let reconciler = (livekit.admin
            && settings.livekit_webhooks
            && settings.livekit_reconcile_s > 0)
            .then(|| {
                let every = std::time::Duration::from_secs(settings.livekit_reconcile_s);
                let clock = Arc::new(cohost_engine::SystemClock);
                cohost_credentials::Reconciler::start(engine.clone(), livekit.clone(), clock, every)
            });
        let nats = match &settings.nats_url {
            Some(url) => Some(start_nats(engine, url, settings).await?),
            None => None,
        };
        let webhooks: Vec<_> = (settings.webhook_endpoints()?.into_iter())
            .map(|endpoint| {
                let settings = settings.webhook_delivery();
                delivery::Delivery::start(engine.clone(), None, endpoint, settings)
            })
            .collect::<Result<_, _>>()?;
        let deliveries = Arc::new(delivery::Deliveries::default());
        webhooks.iter().for_each(|d| deliveries.add(d.view()));
        Ok(Tasks {
            nats,
            revoker,
            reconciler,
            webhooks,
            deliveries,
        })
    }

    /// The webhook deliveries, for the admin routes.
    fn webhooks(&self) -> Arc<delivery::Deliveries> {
        self.deliveries.clone()
    }

    /// The statuses of the log's followers that run, for `/healthz` and `/metrics`.
    fn followers(&self) -> Vec<Arc<FollowerStatus>> {
        let relay = self.nats.iter().map(|(relay, _)| relay.follower());
        relay
            .chain(self.revoker.iter().map(Revoker::follower))
            .chain(self.webhooks.iter().map(delivery::Delivery::follower))
            .collect()
    }

    async fn stop(self) {
        if let Some((relay, service)) = self.nats {
            if let Err(error) = service.stop().await {
                tracing::warn!(%error, "NATS service did not stop cleanly");
            }
            relay.stop().await;
        }
        if let Some(revoker) = self.revoker {
            revoker.stop().await;
        }
        for delivery in self.webhooks {
            delivery.stop().await;
        }
        if let Some(reconciler) = self.reconciler {
            reconciler.stop().await;
        }
    }
}

/// The relay's settings: into the stream `COHOST` with `COHOST_JETSTREAM`, else plain subjects.
pub(crate) fn relay_config(settings: &Settings) -> RelayConfig {
    let mode = if settings.jetstream {
        Mode::JetStream
    } else {
        Mode::Core
    };
    RelayConfig {
        encoding: settings.wire_encoding,
        ..RelayConfig::new(mode)
    }
}

async fn start_nats(
    engine: &Engine,
    url: &str,
    settings: &Settings,
) -> Result<(Relay, cohost_nats::service::ServiceHandle), String> {
    let client = cohost_nats::connect(url).await.map_err(|e| e.to_string())?;
    let relay_config = relay_config(settings);
    let mode = relay_config.mode;
    let relay = Relay::start(engine.clone(), client.clone(), relay_config)
        .await
        .map_err(|e| e.to_string())?;
    let service = cohost_nats::service::serve(client, engine.clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%url, ?mode, "NATS relay and service started");
    Ok((relay, service))
}

/// SIGTERM or Ctrl-C: stop accepting connections, finish the requests in flight, then drain and flush.
pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
