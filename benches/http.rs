//! cohostd over HTTP against the engine in process, in the same run, on the same workload.
//!
//! The clients are hyper's own HTTP/1.1 client connections (no pool, no URL parsing), as lean as a client gets:
//! client and daemon share the machine, so every microsecond the client spends is one the daemon cannot.
//!
//! The bench builds and spawns the real daemon (`cargo build --release -p cohostd`, then
//! `target/release/cohostd` on a fresh data dir and a free port, with a known `COHOST_AUTH_SECRET` so it can sign
//! HS256 user JWTs itself). 64 clients, each with one keep-alive HTTP/1.1 connection, drive 10k live rooms
//! with a realistic command mix (invite, accept, reject, cancel, remove_cohost; `cohost_benches::mix`): each
//! client owns its rooms and mirrors them with `cohost-core`, so it sends the right party's command with that
//! party's JWT. Room setup (create + go_live, over HTTP too) happens before the clock starts. Then the same
//! workload runs through `cohost_engine::Engine` directly from 64 tasks, and the bench prints both rates, their
//! latencies and the ratio HTTP / in-process.
//!
//! Then, in the same run, the same workload over HTTP through a cluster: three JetStream servers (R3) and three
//! cohostd nodes in cluster mode, each client keeping its connection to one node (spread over all three), so
//! about two thirds of the commands go to a node that forwards them to the room's owner. It prints the cluster's
//! rate beside the single node's, the share of forwarded commands, and the latency of forwarded and local ones.
//!
//! `cargo bench -p cohost-benches --bench http`. Environment:
//! - `COHOST_BENCH_QUICK=1`: a smoke run (short phases, 1 run);
//! - `COHOST_BENCH_SECS`, `COHOST_BENCH_RUNS`: override one setting;
//! - `COHOST_BENCH_ONLY=cluster` (or a list without it): run only the named phases (`single`, `cluster`);
//! - `COHOST_BENCH_DIR`: where data directories go (default: the system temp dir; it must be a real disk);
//! - `COHOSTD_BIN`: use this cohostd binary instead of building one.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cohost_benches::mix::{self, Client};
use cohost_benches::{Common, Goal, median, percentile};
use cohost_engine::{Config, Engine, Options};
use cohost_proto::{Actor, Command, UserId};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::{Method, header};
use hyper_util::rt::TokioIo;

const ROOMS: usize = 10_000;
const CLIENTS: usize = 64;
const GOAL_HTTP: Goal = Goal::at_least("commands over HTTP", 30_000.0, "/s");
const GOAL_RATIO: Goal = Goal::at_least("HTTP / in-process, same run", 0.5, "x");
const SECRET: &str = "cohost-bench-secret-0123456789abcdef";
/// The cluster phase's partitions: the default.
const CLUSTER_PARTITIONS: u32 = 64;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ sits in the workspace")
        .to_path_buf()
}

/// The release cohostd, built if need be (cargo is a no-op when it is up to date).
fn cohostd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COHOSTD_BIN") {
        return PathBuf::from(path);
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Process::new(cargo)
        .args(["build", "--release", "-p", "cohostd"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "`cargo build --release -p cohostd` failed"
    );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("release").join("cohostd")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running cohostd, stopped with SIGTERM on drop.
struct Daemon {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    async fn start(binary: &PathBuf, dir: tempfile::TempDir) -> Self {
        Self::start_with(binary, dir, &[]).await
    }

    async fn start_with(binary: &PathBuf, dir: tempfile::TempDir, args: &[String]) -> Self {
        let port = free_port();
        let child = Process::new(binary)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .env("COHOST_AUTH_SECRET", SECRET)
            // The per-user quotas stay out of the way: one host here sends a command or two a second, and
            // invites well over the default 30 a minute.
            .env("COHOST_USER_COMMANDS_PER_S", "1000000")
            .env("COHOST_USER_INVITATIONS_PER_MIN", "1000000")
            // Outside dev mode the daemon wants real LiveKit keys; these only sign the tokens accept returns.
            .env("LIVEKIT_API_KEY", "bench-key")
            .env(
                "LIVEKIT_API_SECRET",
                "a bench LiveKit secret of some length",
            )
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("cohostd starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(&base).await {
            assert!(Instant::now() < deadline, "cohostd did not answer /readyz");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            base,
            _dir: dir,
        }
    }

    fn stop(mut self) {
        let _ = Process::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Whether the daemon at `base` answers `/readyz` with 200.
async fn ready(base: &str) -> bool {
    let host = base.trim_start_matches("http://");
    let Ok(stream) = tokio::net::TcpStream::connect(host).await else {
        return false;
    };
    let Ok((mut sender, connection)) = http1::handshake(TokioIo::new(stream)).await else {
        return false;
    };
    tokio::spawn(connection);
    let request = hyper::Request::get("/readyz")
        .header(header::HOST, host)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    sender
        .send_request(request)
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// HS256 JWTs for every user the workload uses, minted before the clock starts.
fn tokens(users: &[UserId]) -> HashMap<UserId, header::HeaderValue> {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3_600;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let hosts = (0..ROOMS).filter_map(|i| mix::host("room", i).user().cloned());
    users
        .iter()
        .cloned()
        .chain(hosts)
        .map(|user| {
            let claims = serde_json::json!({"sub": user.to_string(), "exp": exp});
            let token = jsonwebtoken::encode(&header, &claims, &key).expect("HS256 signs");
            let value = header::HeaderValue::from_str(&format!("Bearer {token}"));
            (user, value.expect("a JWT is a header value"))
        })
        .collect()
}

/// What one driver saw.
#[derive(Default)]
struct Tally {
    latency_us: Vec<f64>,
    /// In a cluster: the latencies of the commands sent to a node that does not own the room, and of those sent
    /// to its owner.
    forwarded_us: Vec<f64>,
    local_us: Vec<f64>,
    ok: u64,
    rejected: u64,
    /// Answers that differ from the mirror's (an accept the mirror expected to fail, say).
    surprises: u64,
    mix: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latency_us.extend(other.latency_us);
        self.forwarded_us.extend(other.forwarded_us);
        self.local_us.extend(other.local_us);
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.surprises += other.surprises;
        for (name, n) in other.mix {
            *self.mix.entry(name).or_default() += n;
        }
    }
}

/// One command as an HTTP request: method, path, JSON body.
fn request(command: &Command) -> (Method, String, Option<String>) {
    let post = |path: String| (Method::POST, path, None);
    match command {
        Command::CreateRoom(create) => (
            Method::POST,
            "/v1/rooms".into(),
            Some(serde_json::to_string(create).expect("serializes")),
        ),
        Command::GoLive(t) => post(format!("/v1/rooms/{}/live", t.room_id)),
        Command::Invite(t) => (
            Method::POST,
            format!("/v1/rooms/{}/invitations", t.room_id),
            Some(format!(r#"{{"user_id":"{}"}}"#, t.user_id)),
        ),
        Command::AcceptInvitation(t) => post(format!("/v1/invitations/{}/accept", t.invitation_id)),
        Command::RejectInvitation(t) => post(format!("/v1/invitations/{}/reject", t.invitation_id)),
        Command::CancelInvitation(t) => post(format!("/v1/invitations/{}/cancel", t.invitation_id)),
        Command::RemoveCohost(t) => (
            Method::DELETE,
            format!("/v1/rooms/{}/cohosts/{}", t.room_id, t.user_id),
            None,
        ),
        other => panic!("the mix sends no {}", other.name()),
    }
}

/// One keep-alive HTTP/1.1 connection, hyper's own client on it: the client shares the machine with the
/// daemon, so the leaner it is, the more of the machine measures the daemon.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(base: &str) -> Self {
        let host = base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&host)
            .await
            .expect("cohostd accepts");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 connection");
        tokio::spawn(connection);
        Self { sender, host }
    }

    /// Sends one command; whether it succeeded.
    async fn send(
        &mut self,
        tokens: &HashMap<UserId, header::HeaderValue>,
        actor: &Actor,
        command: &Command,
    ) -> bool {
        let user = actor.user().expect("the mix acts as users");
        let (method, path, body) = request(command);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, &tokens[user]);
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let body = Full::new(body.map(Bytes::from).unwrap_or_default());
        let request = builder.body(body).expect("a request");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("cohostd answers");
        let status = response.status();
        let _ = response.into_body().collect().await.expect("a whole body");
        assert!(
            status.as_u16() != 401 && status.as_u16() < 500,
            "unexpected HTTP {status} for {}",
            command.name()
        );
        status.is_success()
    }
}

/// The two ways in: over HTTP to the daemon (or to the nodes of a cluster, client `c` to node `c mod n`), or
/// straight to an engine.
#[derive(Clone)]
enum Target {
    Http {
        bases: Arc<[String]>,
        tokens: Arc<HashMap<UserId, header::HeaderValue>>,
        /// In a cluster: the node index that owns each partition.
        owners: Option<Arc<[usize]>>,
    },
    Engine(Engine),
}

async fn setup(target: &Target, client: usize) {
    let mut http = connection(target, client).await;
    for i in (client..ROOMS).step_by(CLIENTS) {
        let (host, commands) = mix::setup("room", i);
        for command in commands {
            let ok = match target {
                Target::Http { tokens, .. } => {
                    let http = http.as_mut().expect("a connection");
                    http.send(tokens, &host, &command).await
                }
                Target::Engine(engine) => engine
                    .execute(host.clone(), command, Options::default())
                    .await
                    .is_ok(),
            };
            assert!(ok, "setup commands succeed");
        }
    }
}

/// A connection for a target over HTTP: client `c` talks to node `c mod n`.
async fn connection(target: &Target, client: usize) -> Option<Connection> {
    match target {
        Target::Http { bases, .. } => Some(Connection::open(&bases[client % bases.len()]).await),
        Target::Engine(_) => None,
    }
}

/// In a cluster, whether `client`'s command on room `room` (its index in the mirror) goes to a node that does
/// not own it.
fn forwarded(target: &Target, client: usize, room: usize) -> Option<bool> {
    let Target::Http {
        bases,
        owners: Some(owners),
        ..
    } = target
    else {
        return None;
    };
    let room = mix::room_id("room", room);
    let partition = cohost_proto::partition::of(&room, owners.len() as u32) as usize;
    Some(owners[partition] != client % bases.len())
}

async fn drive(target: Target, mut client: Client, until: Instant) -> Tally {
    let mut http = connection(&target, client.index).await;
    let mut tally = Tally::default();
    while Instant::now() < until {
        let room = client.rng.index(client.rooms.len());
        let plan = client.plan(room);
        *tally.mix.entry(plan.command.name()).or_default() += 1;
        let sent = Instant::now();
        let ok = match &target {
            Target::Http { tokens, .. } => {
                let http = http.as_mut().expect("a connection");
                http.send(tokens, &plan.actor, &plan.command).await
            }
            Target::Engine(engine) => engine
                .execute(plan.actor, plan.command, Options::default())
                .await
                .is_ok(),
        };
        let latency_us = sent.elapsed().as_secs_f64() * 1e6;
        tally.latency_us.push(latency_us);
        match forwarded(&target, client.index, client.global_room(plan.room)) {
            Some(true) => tally.forwarded_us.push(latency_us),
            Some(false) => tally.local_us.push(latency_us),
            None => {}
        }
        if ok {
            tally.ok += 1;
        } else {
            tally.rejected += 1;
        }
        match (ok, plan.expected) {
            (true, Some(events)) => {
                client.settle(plan.room, &events);
            }
            (false, None) => {}
            _ => tally.surprises += 1,
        }
    }
    tally
}

struct Outcome {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    tally: Tally,
}

/// Sets up the rooms, then runs the mix from `CLIENTS` drivers for `secs`.
async fn run(
    target: Target,
    users: &Arc<[UserId]>,
    mirror: &[cohost_core::RoomState],
    secs: f64,
) -> Outcome {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let target = target.clone();
            tokio::spawn(async move { setup(&target, c).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("setup does not panic");
    }
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = Client::all(mirror, users, CLIENTS)
        .into_iter()
        .map(|client| tokio::spawn(drive(target.clone(), client, until)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("drivers do not panic"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = tally.latency_us.len() as f64;
    let p50_ms = percentile(&mut tally.latency_us, 50.0) / 1e3;
    let p99_ms = percentile(&mut tally.latency_us, 99.0) / 1e3;
    Outcome {
        per_s: count / elapsed,
        p50_ms,
        p99_ms,
        tally,
    }
}

fn print(label: &str, outcome: &Outcome) {
    let total = outcome.tally.ok + outcome.tally.rejected;
    println!(
        "  {label:<11} {:>9.0} commands/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({total} commands, {} rejected, {} unlike the mirror)",
        outcome.per_s,
        outcome.p50_ms,
        outcome.p99_ms,
        outcome.tally.rejected,
        outcome.tally.surprises
    );
}

/// One phase's figures over the runs.
#[derive(Default)]
struct Figures {
    rates: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Figures {
    fn push(&mut self, outcome: &Outcome) {
        self.rates.push(outcome.per_s);
        self.p50.push(outcome.p50_ms);
        self.p99.push(outcome.p99_ms);
    }

    /// Prints the medians; the median rate.
    fn print(&mut self, label: &str) -> f64 {
        let rate = median(&mut self.rates);
        println!(
            "  {label:<11} {rate:>9.0} commands/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            median(&mut self.p50),
            median(&mut self.p99)
        );
        rate
    }
}

/// Three JetStream servers (R3) and three cohostd nodes in cluster mode, every partition owned.
struct ClusterUnderTest {
    nodes: Vec<Daemon>,
    _servers: cohost_nats::test_server::TestCluster,
}

impl ClusterUnderTest {
    async fn start(binary: &PathBuf, fresh: impl Fn() -> tempfile::TempDir) -> Self {
        let servers = cohost_nats::test_server::TestCluster::start(3);
        let client = async_nats::connect(servers.addrs())
            .await
            .expect("connects");
        servers.wait_ready(&client).await;
        let urls: Vec<String> = servers.servers.iter().map(|s| s.url()).collect();
        let mut nodes = Vec::new();
        for n in 0..3 {
            let args: Vec<String> = [
                "--cluster",
                "true",
                "--node-id",
                &format!("node-{n}"),
                "--nats-url",
                &urls.join(","),
                "--partitions",
                &CLUSTER_PARTITIONS.to_string(),
                "--log-replicas",
                "3",
            ]
            .map(String::from)
            .to_vec();
            nodes.push(Daemon::start_with(binary, fresh(), &args).await);
        }
        Self {
            nodes,
            _servers: servers,
        }
    }

    /// The node index owning each partition, once every partition is owned by a node preferred for it.
    async fn owners(&self) -> Vec<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut owners = vec![usize::MAX; CLUSTER_PARTITIONS as usize];
            let mut counts = [0; 3];
            for (n, node) in self.nodes.iter().enumerate() {
                for p in served(&node.base).await {
                    owners[p as usize] = n;
                    counts[n] += 1;
                }
            }
            if owners.iter().all(|o| *o != usize::MAX) && counts.iter().all(|c| *c > 0) {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return owners;
            }
            assert!(
                Instant::now() < deadline,
                "the partitions were never shared"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(self) {
        for node in self.nodes {
            node.stop();
        }
    }
}

/// The partitions a node serves, from its `/healthz`.
async fn served(base: &str) -> Vec<u32> {
    let host = base.trim_start_matches("http://");
    let Ok(stream) = tokio::net::TcpStream::connect(host).await else {
        return Vec::new();
    };
    let Ok((mut sender, connection)) = http1::handshake(TokioIo::new(stream)).await else {
        return Vec::new();
    };
    tokio::spawn(connection);
    let request = hyper::Request::get("/healthz")
        .header(header::HOST, host)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let Ok(response) = sender.send_request(request).await else {
        return Vec::new();
    };
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    health["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let common = Common::from_env(3, 3.0, 1, 1.0);
    let (secs, runs) = (common.secs, common.runs);
    let fresh = || common.fresh_dir();

    let binary = cohostd_binary();
    let users = mix::users();
    let tokens = Arc::new(tokens(&users));
    let mirror = mix::mirror_rooms("room", ROOMS);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "http: {CLIENTS} keep-alive clients over {ROOMS} live rooms, {secs} s per phase, {runs} run(s), {cpus} CPUs (client and daemon share them)"
    );
    let (mut http, mut engine, mut cluster) =
        (Figures::default(), Figures::default(), Figures::default());
    let mut forwarded = Figures::default();
    let mut mix_counts = BTreeMap::new();
    for run_no in 1..=runs {
        println!("run {run_no}:");
        if common.runs_phase("single") {
            let daemon = Daemon::start(&binary, fresh()).await;
            let bases: Arc<[String]> = vec![daemon.base.clone()].into();
            let target = Target::Http {
                bases,
                tokens: tokens.clone(),
                owners: None,
            };
            let outcome = run(target, &users, &mirror, secs).await;
            daemon.stop();
            print("HTTP", &outcome);
            http.push(&outcome);
            mix_counts = outcome.tally.mix;

            let engine_dir = fresh();
            let opened =
                Engine::open(Config::new(engine_dir.path())).expect("a fresh engine opens");
            let outcome = run(Target::Engine(opened.clone()), &users, &mirror, secs).await;
            opened.shutdown().await;
            print("in-process", &outcome);
            engine.push(&outcome);
        }
        if common.runs_phase("cluster") {
            let (outcome, of_forwarded) =
                cluster_run(&binary, &fresh, &tokens, &users, &mirror, secs).await;
            cluster.push(&outcome);
            forwarded.push(&of_forwarded);
        }
    }
    report(
        &mut http,
        &mut engine,
        &mut cluster,
        &mut forwarded,
        &mix_counts,
    );
}

/// One run of the workload through the three nodes of a cluster: its outcome, and that of the forwarded
/// commands alone.
async fn cluster_run(
    binary: &PathBuf,
    fresh: &impl Fn() -> tempfile::TempDir,
    tokens: &Arc<HashMap<UserId, header::HeaderValue>>,
    users: &Arc<[UserId]>,
    mirror: &[cohost_core::RoomState],
    secs: f64,
) -> (Outcome, Outcome) {
    let under_test = ClusterUnderTest::start(binary, fresh).await;
    let owners: Arc<[usize]> = under_test.owners().await.into();
    let bases: Arc<[String]> = under_test.nodes.iter().map(|n| n.base.clone()).collect();
    let target = Target::Http {
        bases,
        tokens: tokens.clone(),
        owners: Some(owners),
    };
    let mut outcome = run(target, users, mirror, secs).await;
    under_test.stop();
    print("HTTP, 3 nodes", &outcome);
    let count = outcome.tally.forwarded_us.len();
    let share = count as f64 / outcome.tally.latency_us.len().max(1) as f64;
    let forwarded = Outcome {
        per_s: count as f64 / secs,
        p50_ms: percentile(&mut outcome.tally.forwarded_us, 50.0) / 1e3,
        p99_ms: percentile(&mut outcome.tally.forwarded_us, 99.0) / 1e3,
        tally: Tally::default(),
    };
    let local = &mut outcome.tally.local_us;
    println!(
        "    forwarded {:.0}% of the commands: p50 {:.2} ms, p99 {:.2} ms; sent to the owner: p50 {:.2} ms, p99 {:.2} ms",
        share * 100.0,
        forwarded.p50_ms,
        forwarded.p99_ms,
        percentile(local, 50.0) / 1e3,
        percentile(local, 99.0) / 1e3
    );
    (outcome, forwarded)
}

fn report(
    http: &mut Figures,
    engine: &mut Figures,
    cluster: &mut Figures,
    forwarded: &mut Figures,
    mix_counts: &BTreeMap<&'static str, u64>,
) {
    let total: u64 = mix_counts.values().sum();
    let mix_text: Vec<String> = mix_counts
        .iter()
        .map(|(name, n)| format!("{name} {:.0}%", *n as f64 * 100.0 / total.max(1) as f64))
        .collect();
    println!("medians; mix: {}", mix_text.join(", "));
    if !http.rates.is_empty() {
        let http_rate = http.print("HTTP");
        let engine_rate = engine.print("in-process");
        println!("  ratio HTTP / in-process: {:.2}", http_rate / engine_rate);
        GOAL_HTTP.report(http_rate);
        GOAL_RATIO.report(http_rate / engine_rate);
        if !cluster.rates.is_empty() {
            let cluster_rate = cluster.print("HTTP, 3 nodes");
            forwarded.print("  forwarded");
            println!(
                "  ratio 3 nodes / one node, over HTTP: {:.2}",
                cluster_rate / http_rate
            );
        }
    } else if !cluster.rates.is_empty() {
        cluster.print("HTTP, 3 nodes");
        forwarded.print("  forwarded");
    }
}
