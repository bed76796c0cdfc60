//! cohost's engine against the same rules on PostgreSQL, built the way a competent team would build them, on the
//! engine benchmark's workload (256 clients, 10k live rooms, the same mix and mirrors), in one run: acked
//! commands/s, p50/p99 ack latency, commit-to-subscriber latency, and the ratio.
//!
//! The peer, fixed here and not retuned to move the ratio:
//! - tokio-postgres over a unix socket, a deadpool pool of [`POOL`] connections (the best of several sizes
//!   measured), prepared statements cached per connection;
//! - one transaction per command: `SELECT state FROM rooms WHERE room_id = $1 FOR UPDATE`, the rules on the
//!   room's state (`cohost_core::decide` and `apply`: the very code the engine runs), then one statement that
//!   updates the room row, inserts the command's events into `events` (jsonb, `UNIQUE (room_id, version)`) and
//!   `pg_notify('cohost', 'room:version')`, then `COMMIT`; a refused command rolls back;
//! - a subscriber on its own connection (`LISTEN cohost`);
//! - and beside it, a variant without `NOTIFY` (PostgreSQL serializes the commits of notifying transactions)
//!   whose subscriber polls the events table by `seq`, so the ratio is not read as `NOTIFY`'s cost alone;
//! - PostgreSQL as Debian ships it (15 here), initdb into a temp dir, the settings in [`SERVER_SETTINGS`], which
//!   keep durability on (`fsync`, `synchronous_commit`, `full_page_writes`).
//!
//! Commit-to-subscriber: for one room version in [`SAMPLE`] (by a hash of `room:version`), the time from the committing client getting its
//! answer to the subscriber getting the event (negative when the subscriber had it first).
//!
//! `cargo bench -p cohost-benches --bench postgres`. It needs PostgreSQL's `initdb` and `pg_ctl` (on `PATH` or
//! under `/usr/lib/postgresql/*/bin`); as root it runs them as the `postgres` user (`runuser`), since both
//! refuse root. The test command never needs PostgreSQL. Environment: `COHOST_BENCH_QUICK=1`, `COHOST_BENCH_RUNS`,
//! `COHOST_BENCH_SECS`, `COHOST_BENCH_DIR` (the engine's and PostgreSQL's data directories).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cohost_benches::mix::{self, Client};
use cohost_benches::{Common, median, percentile};
use cohost_core::{Context, Policy, RoomState, apply, decide};
use cohost_engine::{Config, Engine, Interest, Options};
use cohost_proto::codec::{from_postcard, to_postcard};
use cohost_proto::{Actor, Command, UserId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{AsyncMessage, NoTls};

const ROOMS: usize = 10_000;
const CLIENTS: usize = 256;
/// Connections in the peer's pool, chosen once by measuring this workload on this 2-core machine (acked/s over
/// 2 s: pool 2 3.4k, 4 3.9k, 8 3.9k, 16 3.4k, 32 3.1k, 64 2.6k, 128 2.4k): PostgreSQL serializes the commits of
/// transactions that `NOTIFY`, and more backends than cores only add contention. Without `NOTIFY` (the polled
/// variant) the size matters little: 8 6.0k, 16 6.4k, 32 6.0k, 64 5.8k. Fixed here since, for both.
const POOL: usize = 8;
/// Commands sent on purpose by the wrong party, in percent (as in the engine benchmark).
const INVALID_PERCENT: u64 = 2;
/// One room version in this many is timed from commit to subscriber.
const SAMPLE: u64 = 8;

/// The server's settings, as a team would tune PostgreSQL for this OLTP load on this machine (2 cores, 24 GB),
/// durability on.
const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("max_connections", "200"),
    ("shared_buffers", "'2GB'"),
    ("effective_cache_size", "'8GB'"),
    ("work_mem", "'16MB'"),
    ("maintenance_work_mem", "'256MB'"),
    ("wal_buffers", "'64MB'"),
    ("max_wal_size", "'8GB'"),
    ("min_wal_size", "'1GB'"),
    ("checkpoint_timeout", "'15min'"),
    ("checkpoint_completion_target", "0.9"),
    ("random_page_cost", "1.1"),
    ("jit", "off"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
];

const SCHEMA: &str = "
    DROP TABLE IF EXISTS events;
    DROP TABLE IF EXISTS rooms;
    CREATE TABLE rooms (room_id text PRIMARY KEY, version bigint NOT NULL, state bytea NOT NULL);
    CREATE TABLE events (
        seq bigserial PRIMARY KEY,
        room_id text NOT NULL,
        version bigint NOT NULL,
        at_ms bigint NOT NULL,
        actor text,
        body jsonb NOT NULL,
        UNIQUE (room_id, version)
    );";

const SELECT_ROOM: &str = "SELECT state FROM rooms WHERE room_id = $1 FOR UPDATE";

const WRITE_COMMAND: &str = "
    WITH room AS (UPDATE rooms SET state = $2, version = $3 WHERE room_id = $1),
         added AS (
            INSERT INTO events (room_id, version, at_ms, actor, body)
            SELECT $1, e.version, $4, $5, e.body FROM unnest($6::int8[], $7::jsonb[]) AS e(version, body))
    SELECT pg_notify('cohost', $1 || ':' || $3::text)";

/// The same write without `pg_notify`, for the variant whose subscriber polls the events table.
const WRITE_COMMAND_QUIET: &str = "
    WITH room AS (UPDATE rooms SET state = $2, version = $3 WHERE room_id = $1),
         added AS (
            INSERT INTO events (room_id, version, at_ms, actor, body)
            SELECT $1, e.version, $4, $5, e.body FROM unnest($6::int8[], $7::jsonb[]) AS e(version, body))
    SELECT 1";

/// How the peer's subscriber learns of new events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fanout {
    /// `NOTIFY` in the command's transaction, `LISTEN` in the subscriber: the design the comparison is about.
    Notify,
    /// No `NOTIFY` (PostgreSQL serializes the commits of notifying transactions): the subscriber polls the
    /// events table by `seq` every [`POLL_EVERY`]. Shown beside, so the ratio is not read as `NOTIFY`'s alone.
    Poll,
}

/// The polling subscriber's interval.
const POLL_EVERY: Duration = Duration::from_millis(2);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A private PostgreSQL server: its own data directory and socket, stopped on drop.
struct Server {
    _dir: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

/// The directory of `initdb` and `pg_ctl`: `PATH`, else Debian's `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"));
    on_path
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!("the postgres bench needs PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)")
        })
}

fn is_root() -> bool {
    let out = Process::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// `program` from PostgreSQL's bin directory, as the `postgres` user when this process is root.
fn pg_command(bin: &Path, program: &str) -> Process {
    let path = bin.join(program);
    if is_root() {
        let mut command = Process::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Process::new(path)
    }
}

fn run(mut command: Process, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Gives the temp dir to the `postgres` user, which runs the server when this process is root.
fn hand_over(dir: &Path) {
    if is_root() {
        run(
            {
                let mut chown = Process::new("chown");
                chown.args(["-R", "postgres:postgres"]).arg(dir);
                chown
            },
            "chown the server's directory to postgres",
        );
    }
}

impl Server {
    fn start(common: &Common) -> Self {
        let bin = postgres_bin();
        let dir = common.fresh_dir();
        hand_over(dir.path());
        let data = dir.path().join("data");
        let mut initdb = pg_command(&bin, "initdb");
        initdb.arg("-D").arg(&data);
        initdb.args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
        run(initdb, "initdb");
        let port = free_port();
        let socket_dir = dir.path().to_path_buf();
        let mut conf = format!(
            "\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {port}\n",
            socket_dir.display()
        );
        for (name, value) in SERVER_SETTINGS {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("initdb wrote postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
        let mut start = pg_command(&bin, "pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"));
        start.args(["-w", "-t", "60", "start"]);
        run(start, "pg_ctl start");
        Server {
            _dir: dir,
            data,
            socket_dir,
            port,
            bin,
        }
    }

    fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres");
        config
    }

    fn pool(&self) -> Pool {
        let manager = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = Manager::from_config(self.config(), NoTls, manager);
        Pool::builder(manager)
            .max_size(POOL)
            .build()
            .expect("a pool")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"]);
        let _ = stop.output();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Ack and subscriber times of the sampled room versions.
#[derive(Default)]
struct Samples {
    acked: Mutex<HashMap<String, Instant>>,
    seen: Mutex<HashMap<String, Instant>>,
}

/// Whether the room version `key` (`room:version`) is timed: one in [`SAMPLE`], spread over rooms and versions.
fn sampled(key: &str) -> bool {
    let hash = (key.bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash.is_multiple_of(SAMPLE)
}

impl Samples {
    fn acked(&self, room: &str, version: u64) {
        let key = format!("{room}:{version}");
        if sampled(&key) {
            self.acked
                .lock()
                .expect("samples lock")
                .insert(key, Instant::now());
        }
    }

    fn seen(&self, key: &str) {
        if sampled(key) {
            let mut seen = self.seen.lock().expect("samples lock");
            seen.insert(key.to_owned(), Instant::now());
        }
    }

    /// Waits until the subscriber has seen every sampled version a client saw acknowledged, or 10 s.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let missing = {
                let (acked, seen) = (
                    self.acked.lock().expect("lock"),
                    self.seen.lock().expect("lock"),
                );
                acked.keys().filter(|key| !seen.contains_key(*key)).count()
            };
            if missing == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Commit-to-subscriber delays, in ms, of the versions both sides saw.
    fn delays_ms(&self) -> Vec<f64> {
        let acked = self.acked.lock().expect("samples lock");
        let seen = self.seen.lock().expect("samples lock");
        acked
            .iter()
            .filter_map(|(key, ack)| {
                let seen = seen.get(key)?;
                let ms = if seen >= ack {
                    seen.duration_since(*ack).as_secs_f64()
                } else {
                    -ack.duration_since(*seen).as_secs_f64()
                };
                Some(ms * 1e3)
            })
            .collect()
    }
}

/// What one run's clients saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    rejected: u64,
    /// Answers unlike the mirror's: the two systems would disagree on the rules.
    unlike: u64,
    latency_us: Vec<f64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.unlike += other.unlike;
        self.latency_us.extend(other.latency_us);
    }
}

/// One run's figures.
struct Outcome {
    ok_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    sub_p50_ms: f64,
    sub_p99_ms: f64,
    samples: usize,
    tally: Tally,
}

impl Outcome {
    fn of(mut tally: Tally, elapsed: Duration, samples: &Samples) -> Self {
        let mut delays = samples.delays_ms();
        let pct = |samples: &mut Vec<f64>, p| match samples.is_empty() {
            true => f64::NAN,
            false => percentile(samples, p),
        };
        Outcome {
            ok_per_s: tally.ok as f64 / elapsed.as_secs_f64(),
            p50_ms: pct(&mut tally.latency_us, 50.0) / 1e3,
            p99_ms: pct(&mut tally.latency_us, 99.0) / 1e3,
            sub_p50_ms: pct(&mut delays, 50.0),
            sub_p99_ms: pct(&mut delays, 99.0),
            samples: delays.len(),
            tally,
        }
    }

    fn print(&self, label: &str) {
        let t = &self.tally;
        println!(
            "  {label:<11} {:>8.0} acked/s   ack p50 {:>6.2} ms  p99 {:>6.2} ms   commit-to-subscriber p50 {:>6.2} ms  p99 {:>6.2} ms ({} samples; {} ok, {} rejected, {} unlike the mirror)",
            self.ok_per_s,
            self.p50_ms,
            self.p99_ms,
            self.sub_p50_ms,
            self.sub_p99_ms,
            self.samples,
            t.ok,
            t.rejected,
            t.unlike
        );
        if t.unlike > 0 {
            println!(
                "  WARNING: {label}: {} answers unlike the mirror (a refusal the rules did not call for, or the \
                 reverse): its figures do not measure the same work",
                t.unlike
            );
        }
    }
}

/// Drives every client's closed loop for `length` through `execute` (`true`: the system acknowledged the
/// command), checking each answer against the client's mirror and timing the sampled acks; what they saw and
/// for how long.
async fn drive<F, Fut>(
    mirror: &[RoomState],
    users: &Arc<[UserId]>,
    length: Duration,
    samples: &Arc<Samples>,
    execute: F,
) -> (Tally, Duration)
where
    F: Fn(Actor, Command) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let until = Instant::now() + length;
    let started = Instant::now();
    let tasks: Vec<_> = Client::all(mirror, users, CLIENTS)
        .into_iter()
        .map(|mut client| {
            let (execute, samples) = (execute.clone(), samples.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < until {
                    let room = client.rng.index(client.rooms.len());
                    let wrong_party = client.rng.chance(INVALID_PERCENT);
                    let plan = client.plan_from(room, wrong_party);
                    let room_id = plan.command.room_id().clone();
                    let sent = Instant::now();
                    let ok = execute(plan.actor, plan.command).await;
                    tally.latency_us.push(sent.elapsed().as_secs_f64() * 1e6);
                    match (plan.expected, ok) {
                        (Some(events), true) => {
                            let versions = client.settle(plan.room, &events);
                            samples.acked(room_id.as_str(), *versions.end());
                            tally.ok += 1;
                        }
                        (None, false) => tally.rejected += 1,
                        (Some(_), false) | (None, true) => tally.unlike += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.expect("clients do not panic"));
    }
    (tally, started.elapsed())
}

/// The engine: set up the rooms, reopen, drive the clients for `length` with a subscriber timing the samples.
async fn engine_run(
    common: &Common,
    mirror: &[RoomState],
    users: &Arc<[UserId]>,
    length: Duration,
) -> Outcome {
    let dir = common.fresh_dir();
    let setup = Engine::open(Config::new(dir.path())).expect("a fresh directory opens");
    mix::create_rooms(&setup, "room", ROOMS, CLIENTS).await;
    setup.shutdown().await;
    drop(setup);
    let engine = Engine::open(Config::new(dir.path())).expect("the directory reopens");
    let samples = Arc::new(Samples::default());
    let mut events = engine.subscribe(engine.last_seq() + 1, Interest::All);
    let subscriber = {
        let samples = samples.clone();
        tokio::spawn(async move {
            while let Some(Ok(envelope)) = events.next().await {
                samples.seen(&format!("{}:{}", envelope.room_id, envelope.version));
            }
        })
    };
    let execute = {
        let engine = engine.clone();
        move |actor: Actor, command: Command| {
            let engine = engine.clone();
            async move {
                engine
                    .execute(actor, command, Options::default())
                    .await
                    .is_ok()
            }
        }
    };
    let (tally, elapsed) = drive(mirror, users, length, &samples, execute).await;
    samples.settle().await;
    engine.shutdown().await;
    let _ = subscriber.await;
    Outcome::of(tally, elapsed, &samples)
}

/// One command as the peer runs it: the room row locked, the rules, one write, commit. `true` once committed,
/// `false` when the rules refused it (rolled back).
async fn pg_execute(pool: &Pool, actor: &Actor, command: &Command, fanout: Fanout) -> bool {
    let mut conn = pool.get().await.expect("a pooled connection");
    let tx = conn.transaction().await.expect("BEGIN");
    let room_id = command.room_id().as_str();
    let select = tx.prepare_cached(SELECT_ROOM).await.expect("prepare");
    let row = tx
        .query_opt(&select, &[&room_id])
        .await
        .expect("SELECT FOR UPDATE");
    let mut state: RoomState = match row {
        Some(row) => from_postcard(row.get::<_, &[u8]>(0)).expect("a stored room state"),
        None => RoomState::default(),
    };
    // The context holds no Send counters: decided and dropped before the next await.
    let decided = decide(
        &state,
        command,
        &Context::new(actor, now_ms(), Policy::default()),
    );
    let Ok(events) = decided else {
        tx.rollback().await.expect("ROLLBACK");
        return false;
    };
    events.iter().for_each(|event| apply(&mut state, event));
    let version = state.room().expect("the room exists").version;
    let first = version + 1 - events.len() as u64;
    let versions: Vec<i64> = (first..=version).map(|v| v as i64).collect();
    let bodies: Vec<serde_json::Value> = events
        .iter()
        .map(|event| serde_json::to_value(event).expect("an event encodes"))
        .collect();
    let actor = match actor {
        Actor::User(user) => Some(user.as_str()),
        _ => None,
    };
    let statement = match fanout {
        Fanout::Notify => WRITE_COMMAND,
        Fanout::Poll => WRITE_COMMAND_QUIET,
    };
    let write = tx.prepare_cached(statement).await.expect("prepare");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &room_id,
        &to_postcard(&state),
        &(version as i64),
        &(now_ms() as i64),
        &actor,
        &versions,
        &bodies,
    ];
    tx.query_one(&write, &params)
        .await
        .expect("write the command");
    tx.commit().await.expect("COMMIT");
    true
}

/// Empties the tables and loads the rooms as the mirror has them after their setup.
async fn pg_load(pool: &Pool, mirror: &[RoomState]) {
    let conn = pool.get().await.expect("a pooled connection");
    conn.batch_execute(SCHEMA).await.expect("the schema");
    let ids: Vec<&str> = mirror
        .iter()
        .map(|s| s.room().expect("set up").room_id.as_str())
        .collect();
    let versions: Vec<i64> = mirror
        .iter()
        .map(|s| s.room().expect("set up").version as i64)
        .collect();
    let states: Vec<Vec<u8>> = mirror.iter().map(to_postcard).collect();
    let load = "INSERT INTO rooms SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[])";
    conn.execute(load, &[&ids, &versions, &states])
        .await
        .expect("load the rooms");
    for statement in ["VACUUM ANALYZE rooms", "CHECKPOINT"] {
        conn.batch_execute(statement).await.expect(statement);
    }
}

/// The peer's subscriber: `LISTEN cohost` on a connection of its own, until its client is dropped.
async fn pg_listen(
    server: &Server,
    samples: Arc<Samples>,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, mut connection) =
        (server.config().connect(NoTls).await).expect("the listener connects");
    let task = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notification(note) = message {
                samples.seen(note.payload());
            }
        }
    });
    client.batch_execute("LISTEN cohost").await.expect("LISTEN");
    (client, task)
}

/// The polling subscriber: the events committed since the last poll, by `seq`, until `stop`. (A row whose
/// `seq` was taken before a row already seen but committed after it is missed: a sample lost, no more.)
async fn pg_poll(
    server: &Server,
    samples: Arc<Samples>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (client, connection) = (server.config().connect(NoTls).await).expect("the poller connects");
    tokio::spawn(connection);
    tokio::spawn(async move {
        let query =
            "SELECT seq, room_id, version FROM events WHERE seq > $1 ORDER BY seq LIMIT 10000";
        let query = client.prepare(query).await.expect("prepare");
        let mut last: i64 = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let rows = client.query(&query, &[&last]).await.expect("poll");
            for row in &rows {
                last = last.max(row.get::<_, i64>(0));
                let (room, version): (&str, i64) = (row.get(1), row.get(2));
                samples.seen(&format!("{room}:{version}"));
            }
            if rows.is_empty() {
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    })
}

async fn pg_run(
    server: &Server,
    mirror: &[RoomState],
    users: &Arc<[UserId]>,
    length: Duration,
    fanout: Fanout,
) -> Outcome {
    let pool = server.pool();
    pg_load(&pool, mirror).await;
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (listening, subscriber) = match fanout {
        Fanout::Notify => {
            let (client, task) = pg_listen(server, samples.clone()).await;
            (Some(client), task)
        }
        Fanout::Poll => (None, pg_poll(server, samples.clone(), stop.clone()).await),
    };
    let execute = {
        let pool = pool.clone();
        move |actor: Actor, command: Command| {
            let pool = pool.clone();
            async move { pg_execute(&pool, &actor, &command, fanout).await }
        }
    };
    let (tally, elapsed) = drive(mirror, users, length, &samples, execute).await;
    samples.settle().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(listening);
    let _ = subscriber.await;
    // Nothing of this run is left for autovacuum to work on during the next.
    let conn = pool.get().await.expect("a pooled connection");
    conn.batch_execute("DROP TABLE events; DROP TABLE rooms")
        .await
        .expect("drop the tables");
    Outcome::of(tally, elapsed, &samples)
}

fn medians(label: &str, runs: &[Outcome]) -> f64 {
    let pick = |f: fn(&Outcome) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let ok = pick(|o| o.ok_per_s);
    println!(
        "  {label:<11} {ok:>8.0} acked/s   ack p50 {:>6.2} ms  p99 {:>6.2} ms   commit-to-subscriber p50 {:>6.2} ms  p99 {:>6.2} ms",
        pick(|o| o.p50_ms),
        pick(|o| o.p99_ms),
        pick(|o| o.sub_p50_ms),
        pick(|o| o.sub_p99_ms),
    );
    ok
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let common = Common::from_env(3, 3.0, 1, 1.0);
    let length = Duration::from_secs_f64(common.secs);
    let server = Server::start(&common);
    let users = mix::users();
    let mirror = mix::mirror_rooms("room", ROOMS);
    println!(
        "postgres: {CLIENTS} clients, {ROOMS} live rooms, {:.1} s a run, {} runs; pool {POOL}; server settings: {}",
        common.secs,
        common.runs,
        SERVER_SETTINGS
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (mut engine_runs, mut pg_runs, mut polled_runs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=common.runs {
        println!("run {run}:");
        let engine = engine_run(&common, &mirror, &users, length).await;
        engine.print("cohost");
        engine_runs.push(engine);
        let pg = pg_run(&server, &mirror, &users, length, Fanout::Notify).await;
        pg.print("PostgreSQL");
        pg_runs.push(pg);
        let polled = pg_run(&server, &mirror, &users, length, Fanout::Poll).await;
        polled.print("PG, polled");
        polled_runs.push(polled);
    }
    println!(
        "medians (PostgreSQL: NOTIFY/LISTEN fan-out; PG, polled: no NOTIFY, the subscriber polls every {POLL_EVERY:?}):"
    );
    let engine = medians("cohost", &engine_runs);
    let pg = medians("PostgreSQL", &pg_runs);
    let polled = medians("PG, polled", &polled_runs);
    println!(
        "  ratio cohost / PostgreSQL, acked commands/s: {:.1}x (against PG, polled: {:.1}x)",
        engine / pg,
        engine / polled
    );
}
