//! Cluster mode: the node joins the cluster (its partition count and log format must match the cluster's), then
//! serves every room route: those of the partitions it owns from their engines, the others by forwarding them
//! to their owner (`forward.rs`). Each owned partition runs its followers (the relay, and the revoker with
//! LiveKit admin on, the outgoing webhook deliveries) and answers the requests other nodes forward to it. The
//! cluster's erased users are loaded before any partition is taken and followed from then on (`erase.rs`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cohost_credentials::{LiveKitConfig, Revoker};
use cohost_engine::Engine;
use cohost_nats::cluster::{self, Following, Kind, Limits, Node, Responder, StartFollowing};
use cohost_nats::relay::{Relay, RelayConfig};
use futures::FutureExt;

use crate::config::{ClusterSettings, Settings};
use crate::delivery::{Deliveries, Delivery, DeliverySettings};
use crate::{
    QUOTA_SWEEP_EVERY, auth_secret, authenticator, dev_mode, forward, http, livekit, quota, serve,
};

/// Forwarded requests a node answers at once, over all its partitions; past them it answers 503 at once.
const FORWARDED_IN_FLIGHT_MAX: usize = 1_024;

/// Serves until SIGTERM, then hands the partitions over.
pub async fn serve_cluster(settings: Settings, cluster: ClusterSettings) -> Result<(), String> {
    let (secret, dev_auth) = auth_secret(&settings)?;
    let auth = authenticator(&settings, &secret)?;
    let (livekit, dev_livekit) = livekit(&settings)?;
    dev_mode(&settings, dev_auth, dev_livekit)?;
    let client = cohost_nats::connect(&cluster.nats_url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", cluster.nats_url))?;
    if settings.jetstream {
        ensure_stream(&client, cluster.replicas).await?;
    }
    let owners = Owners::new().await;
    let webhooks = Webhooks::configured(&settings)?;
    let running = webhooks.running.clone();
    let (erasures, revision) = erasures(&client, cluster.replicas, &auth).await?;
    let node = join(
        &settings,
        &cluster,
        &livekit,
        client.clone(),
        &owners,
        webhooks,
        &erasures.erased,
    )
    .await?;
    follow_erasures(&erasures, revision, node.clone());
    let service = cohost_nats::service::serve_cluster(client.clone(), node.clone())
        .await
        .map_err(|e| e.to_string())?;
    let limits = settings.limits();
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.http_addr))?;
    tracing::info!(addr = %settings.http_addr, node = %cluster.node_id, partitions = cluster.partitions, "cohostd listening in cluster mode");
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut state = http::AppState::cluster(node.clone(), livekit.clone(), auth, closing);
    state.body_read_timeout = limits.body_read_timeout;
    state.cors = settings.cors_origins.clone();
    state.console_dir = settings.console_dir.clone();
    state.admin_secret = settings.admin_secret()?;
    state.webhooks = running;
    state.erasures = Some(erasures);
    let connections = state.connections.clone();
    state.quotas = Arc::new(quota::Quotas::new(settings.quotas(limits.connections_max)));
    quota::sweep_every(state.quotas.clone(), QUOTA_SWEEP_EVERY);
    let mut routing = forward::Routing::new(node.clone(), cluster::Forwarder::new(client.clone()));
    routing.feed = settings.jetstream.then_some(client);
    routing.livekit = Some(livekit);
    state.routing = Some(routing);
    let router = owners.router.get_or_init(|| http::router(state)).clone();
    let (_routers_tx, routers) = tokio::sync::watch::channel(router);
    let stopped = serve::serve(listener, routers, limits, connections, async move {
        crate::shutdown_signal().await;
        let _ = closing_tx.send(true);
    })
    .await;
    if let serve::Stopped::Dropped(open) = stopped {
        tracing::warn!(
            open,
            "connections still open after the shutdown grace period were dropped"
        );
    }
    tracing::info!("stopping: handing the partitions off");
    if let Err(error) = service.stop().await {
        tracing::warn!(%error, "NATS service did not stop cleanly");
    }
    node.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Events between a partition's snapshots unless `COHOST_SNAPSHOT_EVERY_EVENTS` says otherwise: each is saved for
/// the next owner, who replays only the log after
/// it, so this bounds a takeover's replay (about 4 µs an event) at the cost of writing the partition's rooms.
const PARTITION_SNAPSHOT_EVERY_EVENTS: u64 = 10_000;

/// Joins the cluster with each partition's engine settings (`COHOST_STORE_CACHE_MB` is the node's: each
/// partition's local store gets its share) and what follows each partition.
async fn join(
    settings: &Settings,
    cluster: &ClusterSettings,
    livekit: &LiveKitConfig,
    client: cohost_nats::Client,
    owners: &Owners,
    webhooks: Webhooks,
    erased: &Arc<cohost_engine::ErasedUsers>,
) -> Result<Arc<Node>, String> {
    let template = settings.engine()?;
    let cache = (template.store_cache_bytes / u64::from(cluster.partitions)).max(1 << 20);
    let snapshot_every = settings
        .snapshot_every_events
        .unwrap_or(PARTITION_SNAPSHOT_EVERY_EVENTS);
    let erased = erased.clone();
    let engine = Arc::new(move |dir: std::path::PathBuf| {
        let mut config = template.clone();
        config.erased_users = Some(erased.clone());
        config.data_dir = dir;
        config.store_cache_bytes = cache;
        config.snapshot_every_events = snapshot_every;
        config
    });
    let joining = cluster::Joining {
        nats_url: cluster.nats_url.clone(),
        node_id: cluster.node_id.clone(),
        partitions: cluster.partitions,
        log_streams: cluster.log_streams,
        replicas: cluster.replicas,
        data_dir: settings.data_dir.clone(),
        engine,
        follow: Some(follow_partitions(
            client,
            settings,
            cluster,
            livekit,
            owners.clone(),
            webhooks,
        )),
        advertise: cluster.advertise_url.clone(),
    };
    if cluster.advertise_url.is_none() {
        tracing::warn!(
            "COHOST_HTTP_ADDR is unspecified and COHOST_ADVERTISE_URL unset: other nodes cannot send this one \
             the live collections of its rooms"
        );
    }
    let node = Arc::new(Node::join(joining).await.map_err(|e| e.to_string())?);
    let _ = owners.node.set(node.clone());
    Ok(node)
}

/// Opens the cluster's erased users and loads them, before any partition is taken (so no engine serves an
/// erased user by their id), trying for a while (a cluster that is starting has no JetStream leader yet); the
/// revision to follow them after.
async fn erasures(
    client: &cohost_nats::Client,
    replicas: usize,
    auth: &crate::auth::Auth,
) -> Result<(crate::erase::ClusterErasures, u64), String> {
    let auth = auth.clone();
    let fallback: Arc<dyn Fn(&cohost_proto::UserId) -> cohost_proto::UserId + Send + Sync> =
        Arc::new(move |user| auth.pseudonym(user));
    patiently("load the erased users", || async {
        let book = cluster::ErasureBook::open(client, replicas, fallback.clone()).await?;
        let erased = Arc::new(cohost_engine::ErasedUsers::new());
        let revision = book.load(&erased).await?;
        Ok::<_, cluster::ErasureError>((crate::erase::ClusterErasures { book, erased }, revision))
    })
    .await
}

/// Follows the cluster's erasures for the life of the process (once the node stops it serves no partition,
/// so the task ends nothing more): each new one is served at once, and ends what the user holds in every
/// partition this node serves then. A partition changing owner meanwhile is swept when taken
/// ([`sweep_after_takeover`]).
fn follow_erasures(erasures: &crate::erase::ClusterErasures, revision: u64, node: Arc<Node>) {
    let on_erased = move |user: cohost_proto::UserId, erased: cluster::Erased| {
        let serving = node.serving().into_iter();
        for (partition, engine) in serving.filter_map(|p| Some((p, node.engine_of(p)?))) {
            let (user, service, node) = (user.clone(), erased.service.clone(), node.clone());
            tokio::spawn(async move {
                let end = || engine.end_holdings(service.clone(), &user);
                end_while_served(&node, partition, &engine, end).await;
            });
        }
    };
    (erasures.book.clone()).follow(erasures.erased.clone(), revision, on_erased);
}

/// The service that a takeover's sweep of erased users' holdings names in its events.
const ERASURE_SWEEP_SERVICE: &str = "cohost-erasure";

/// Once this node serves `partition` (it is taken when its followers have started), ends what every erased
/// user still holds there: an erasure that came while the partition changed owner was carried out by
/// neither node. The erasure's own follower sees the partition from then on, so one of the two always does.
async fn sweep_after_takeover(node: Arc<OnceLock<Arc<Node>>>, partition: u32, engine: Engine) {
    let node = loop {
        if let Some(node) = node
            .get()
            .filter(|node| node.serving().contains(&partition))
        {
            break node.clone();
        }
        // Given up before it was served: its next owner sweeps it.
        if engine.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let service = cohost_proto::ServiceId::new(ERASURE_SWEEP_SERVICE).expect("a valid service id");
    let end = || engine.end_erased_holdings(service.clone());
    end_while_served(&node, partition, &engine, end).await;
}

/// Runs `end` (ending erased users' holdings in `partition`) until it succeeds, backing off, for as long as
/// this node serves the partition: a full queue or a failed batch is tried again, and a partition given up
/// meanwhile is its next owner's to sweep.
async fn end_while_served<F, Fut>(node: &Node, partition: u32, engine: &Engine, end: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(usize, usize), cohost_engine::Error>>,
{
    let mut backoff = cohost_engine::Backoff::new(Duration::from_secs(10));
    loop {
        match end().await {
            Ok((rooms, commands)) => {
                if commands > 0 {
                    tracing::info!(partition, rooms, commands, "erased users' holdings ended");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(partition, %error, "ending erased users' holdings failed; trying again");
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
        if engine.is_closed() || !node.serving().contains(&partition) {
            return;
        }
    }
}

/// Makes the stream `COHOST` ready before any partition's relay publishes into it, trying for a while: a
/// cluster that is starting has no JetStream leader yet.
async fn ensure_stream(client: &cohost_nats::Client, replicas: usize) -> Result<(), String> {
    patiently("prepare the stream COHOST", || {
        cohost_nats::relay::ensure_stream(client, replicas)
    })
    .await
}

/// Runs `attempt` until it succeeds, again every 500 ms for 30 s: a cluster that is starting has no JetStream
/// leader yet. The last error, naming `what` could not be done, once the 30 s are over.
async fn patiently<T, E, Fut>(what: &str, attempt: impl Fn() -> Fut) -> Result<T, String>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                tracing::warn!(%error, "cannot {what} yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(format!("cannot {what}: {error}")),
        }
    }
}

/// What a partition's owner answers forwarded requests with. The router and the node are set once the node
/// has joined; until then a forwarded request finds no engine and gets no answer (it is asked again).
#[derive(Clone)]
struct Owners {
    router: Arc<OnceLock<axum::Router>>,
    node: Arc<OnceLock<Arc<Node>>>,
    http: Limits,
    service: Limits,
}

impl Owners {
    async fn new() -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(FORWARDED_IN_FLIGHT_MAX));
        Self {
            router: Arc::default(),
            node: Arc::default(),
            http: forward::limits(slots.clone()).await,
            service: cohost_nats::service::owner_limits(slots),
        }
    }

    /// The partition's engine while this node serves it.
    fn engine(&self, partition: u32) -> impl Fn() -> Option<Engine> + Send + Sync + 'static {
        let node = self.node.clone();
        move || node.get()?.engine_of(partition)
    }

    /// Starts answering the partition's forwarded requests, over HTTP and to the service.
    async fn respond(
        &self,
        client: &cohost_nats::Client,
        partition: u32,
        partitions: u32,
    ) -> Result<[Responder; 2], String> {
        let engine = self.engine(partition);
        let serving: cluster::Serving = Arc::new(move || engine().is_some());
        let http = forward::handler(self.router.clone(), serving.clone());
        let service = cohost_nats::service::owner_handler(
            client.clone(),
            (partition, partitions),
            Arc::new(self.engine(partition)),
        );
        let (client, limits) = (client.clone(), self.http.clone());
        let http = Responder::start(
            client.clone(),
            partition,
            Kind::Http,
            http,
            limits,
            serving.clone(),
        );
        let limits = self.service.clone();
        let service = Responder::start(client, partition, Kind::Service, service, limits, serving);
        let (http, service) = tokio::join!(http, service);
        Ok([
            http.map_err(|e| e.to_string())?,
            service.map_err(|e| e.to_string())?,
        ])
    }
}

/// The outgoing webhook endpoints, delivered by each partition's owner from the partition's log.
struct Webhooks {
    endpoints: Vec<crate::outbound::Endpoint>,
    settings: DeliverySettings,
    /// The deliveries running on this node, for the admin routes.
    running: Arc<Deliveries>,
}

impl Webhooks {
    /// The endpoints of `COHOST_WEBHOOKS_FILE` (a bad file stops startup), none running yet.
    fn configured(settings: &Settings) -> Result<Self, String> {
        Ok(Self {
            endpoints: settings.webhook_endpoints()?,
            settings: settings.webhook_delivery(),
            running: Arc::default(),
        })
    }

    /// Starts one delivery per endpoint for `partition`, each from its cursor in the partition's store (which
    /// a takeover copied from the cluster's cursor bucket), and lists them.
    fn start(&self, partition: u32, engine: &Engine) -> Result<Vec<Delivery>, String> {
        let deliveries = (self.endpoints.iter())
            .map(|endpoint| {
                Delivery::start(
                    engine.clone(),
                    Some(partition),
                    endpoint.clone(),
                    self.settings,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        deliveries.iter().for_each(|d| self.running.add(d.view()));
        Ok(deliveries)
    }

    /// Their cursors' names in the partition's store.
    fn sinks(&self) -> impl Iterator<Item = String> + '_ {
        (self.endpoints.iter()).map(|endpoint| crate::delivery::sink(&endpoint.id))
    }

    /// Unlists a partition's deliveries, then stops them (before its engine, at a handoff).
    async fn stop(running: &Deliveries, deliveries: Vec<Delivery>) {
        deliveries
            .iter()
            .for_each(|delivery| running.remove(delivery));
        for delivery in deliveries {
            delivery.stop().await;
        }
    }
}

/// What a node needs to start the followers of each partition it takes.
struct Followers {
    client: cohost_nats::Client,
    relay_config: RelayConfig,
    livekit: LiveKitConfig,
    owners: Owners,
    webhooks: Webhooks,
    partitions: u32,
    /// Reconciliation belongs to the partition, like its revoker: it moves with it.
    reconcile_every: Option<std::time::Duration>,
}

/// What follows each partition a cluster node owns: the answers to requests other nodes forward to it, the
/// relay into NATS (the stream `COHOST` when `COHOST_JETSTREAM` is on, with the log's replicas), the revoker
/// when LiveKit admin is on, and one delivery per outgoing webhook endpoint.
fn follow_partitions(
    client: cohost_nats::Client,
    settings: &Settings,
    cluster: &ClusterSettings,
    livekit: &LiveKitConfig,
    owners: Owners,
    webhooks: Webhooks,
) -> StartFollowing {
    let followers = Arc::new(Followers {
        client,
        relay_config: RelayConfig {
            replicas: cluster.replicas,
            ..crate::relay_config(settings)
        },
        livekit: livekit.clone(),
        owners,
        webhooks,
        partitions: cluster.partitions,
        reconcile_every: (livekit.admin
            && settings.livekit_webhooks
            && settings.livekit_reconcile_s > 0)
            .then(|| std::time::Duration::from_secs(settings.livekit_reconcile_s)),
    });
    Arc::new(move |partition, engine: Engine| followers.clone().start(partition, engine).boxed())
}

impl Followers {
    /// Starts `partition`'s followers over its engine; a failure stops those already started.
    async fn start(self: Arc<Self>, partition: u32, engine: Engine) -> Result<Following, String> {
        let relay_config = RelayConfig {
            partition: Some(partition),
            ..self.relay_config.clone()
        };
        let reconciler = self.reconcile_every.map(|every| {
            let clock = Arc::new(cohost_engine::SystemClock);
            cohost_credentials::Reconciler::start(
                engine.clone(),
                self.livekit.clone(),
                clock,
                every,
            )
        });
        let revoker = match self.livekit.admin {
            true => Some(
                Revoker::start(engine.clone(), self.livekit.clone()).map_err(|e| e.to_string())?,
            ),
            false => None,
        };
        tokio::spawn(sweep_after_takeover(
            self.owners.node.clone(),
            partition,
            engine.clone(),
        ));
        let mut sinks = vec![relay_config.sink.clone()];
        let revoker_sink = cohost_credentials::revoke::SINK.to_owned();
        sinks.extend(revoker.iter().map(|_| revoker_sink.clone()));
        sinks.extend(self.webhooks.sinks());
        let relay = Relay::start(engine.clone(), self.client.clone(), relay_config)
            .await
            .map_err(|e| e.to_string())?;
        let mut statuses = vec![relay.follower()];
        statuses.extend(revoker.iter().map(Revoker::follower));
        let responders = (self.owners)
            .respond(&self.client, partition, self.partitions)
            .await?;
        let stop = async move {
            for responder in responders {
                responder.stop();
            }
            relay.stop().await;
            if let Some(revoker) = revoker {
                revoker.stop().await;
            }
            if let Some(reconciler) = reconciler {
                reconciler.stop().await;
            }
        };
        // Last, so a delivery that cannot start stops what started before it.
        let deliveries = match self.webhooks.start(partition, &engine) {
            Ok(deliveries) => deliveries,
            Err(error) => {
                stop.await;
                return Err(error);
            }
        };
        statuses.extend(deliveries.iter().map(Delivery::follower));
        let running = self.webhooks.running.clone();
        let stop = async move {
            stop.await;
            Webhooks::stop(&running, deliveries).await;
        }
        .boxed();
        Ok(Following {
            statuses,
            sinks,
            stop,
        })
    }
}

/// `cohostd cluster status`: one line per partition, from the cluster's buckets and log.
pub async fn cluster_status(settings: &Settings) -> Result<(), String> {
    use cohost_nats::cluster::Last;
    let url = settings
        .nats_url
        .as_deref()
        .ok_or("cluster status needs --nats-url (or COHOST_NATS_URL): the cluster's servers")?;
    let client = cohost_nats::connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    let (fixed, partitions) = cohost_nats::cluster::status(&client).await?;
    println!(
        "{} partitions, log over {} stream(s), format {}",
        fixed.partitions, fixed.log_streams, fixed.format
    );
    println!("partition  owner             epoch  last_seq  log_seq  cursors");
    for p in partitions {
        let (owner, epoch) = p.owner.map_or(("-".to_owned(), "-".to_owned()), |h| {
            (h.node, h.epoch.to_string())
        });
        let last = match p.last {
            Last::Nothing => "-".to_owned(),
            Last::Batch { last_seq } => last_seq.to_string(),
            Last::Marker(marker) => format!("(marker {})", marker.epoch),
        };
        let cursors: Vec<String> = p.cursors.iter().map(|(s, n)| format!("{s}={n}")).collect();
        println!(
            "{:>9}  {owner:<16} {epoch:>6}  {last:>8}  {:>7}  {}",
            p.partition,
            p.log_seq,
            cursors.join(" ")
        );
    }
    Ok(())
}
