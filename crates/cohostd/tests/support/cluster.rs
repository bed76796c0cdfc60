//! A cluster of real processes for the cluster scenarios: three JetStream servers (R3, every write synced
//! before its ack) and three cohostd nodes, clients that send keyed commands to the owner of their room's
//! partition until acknowledged, and the checks the scenarios share.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohost_nats::test_server::TestCluster;
use cohost_proto::{RoomId, partition};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use super::Daemon;

pub const PARTITIONS: u32 = 8;
pub const CLIENTS: usize = 16;
pub const SECRET: &str = "cluster-test-secret-0123456789abcdef";
/// The limit for a moved partition to be served again.
pub const FAILOVER_LIMIT: Duration = Duration::from_secs(10);
/// A request to a node that does not answer (stopped) is given up after this long and sent again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes by index; `None` once killed.
pub type Nodes = Arc<RwLock<Vec<Option<Daemon>>>>;

pub struct Cluster {
    pub servers: TestCluster,
    pub nodes: Nodes,
    _dirs: Vec<tempfile::TempDir>,
    /// Commands one user may send per second (`--user-commands-per-s`), on every node.
    commands_per_s: u32,
    /// Further flags every node starts with.
    extra: Vec<String>,
}

/// The per-user command rate of the scenarios: high enough that load never meets it.
pub const COMMANDS_PER_S: u32 = 1_000_000;

/// A user JWT signed with the cluster's shared secret.
pub fn token(user: &str) -> String {
    let now = super::now_s();
    let claims = json!({"sub": user, "iat": now, "exp": now + 3_600});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("HS256 signs")
}

impl Cluster {
    /// Starts the servers, waits for their JetStream, starts the nodes, and waits until every partition is
    /// owned.
    pub async fn start() -> Cluster {
        Self::start_with(COMMANDS_PER_S).await
    }

    /// As [`Cluster::start`], each node letting a user send `commands_per_s` commands a second.
    pub async fn start_with(commands_per_s: u32) -> Cluster {
        Self::start_with_flags(commands_per_s, &[]).await
    }

    /// As [`Cluster::start_with`], every node also started with `extra` flags.
    pub async fn start_with_flags(commands_per_s: u32, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let servers = TestCluster::start(3);
        let client = async_nats::connect(servers.addrs())
            .await
            .expect("connects");
        servers.wait_ready(&client).await;
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| super::data_dir()).collect();
        let mut nodes = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            nodes.push(Some(
                start_node(
                    &servers,
                    &format!("node-{i}"),
                    dir.path(),
                    commands_per_s,
                    &extra,
                )
                .await,
            ));
        }
        let cluster = Cluster {
            servers,
            nodes: Arc::new(RwLock::new(nodes)),
            _dirs: dirs,
            commands_per_s,
            extra,
        };
        cluster.settle().await;
        cluster
    }

    pub async fn owners(&self) -> BTreeMap<u32, usize> {
        owners(&self.nodes.read().await).await
    }

    /// Polls the owners until `done` holds for them, at most `limit` from `since`; returns them.
    pub async fn wait_owners(
        &self,
        since: Instant,
        limit: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<u32, usize>) -> bool,
    ) -> BTreeMap<u32, usize> {
        loop {
            let owners = self.owners().await;
            if done(&owners) {
                return owners;
            }
            assert!(since.elapsed() < limit, "{what}: {owners:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every partition is owned and every node owns some: the first node up takes them all, and
    /// hands the others' share over as they join.
    async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let owners = self.owners().await;
            let nodes = self
                .nodes
                .read()
                .await
                .iter()
                .filter(|n| n.is_some())
                .count();
            let owning: std::collections::BTreeSet<usize> = owners.values().copied().collect();
            if owners.len() == PARTITIONS as usize && owning.len() == nodes {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the partitions were never shared: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every process down: the nodes stopped (SIGTERM), then the servers killed (SIGKILL).
    pub async fn down(&mut self) {
        let mut nodes = self.nodes.write().await;
        for node in nodes.iter_mut() {
            if let Some(mut daemon) = node.take() {
                let status = daemon.terminate(Duration::from_secs(30));
                assert!(status.success(), "a node exited with {status}");
            }
        }
        for server in &mut self.servers.servers {
            server.kill();
        }
    }

    /// Stops node `i` with SIGTERM (it hands its partitions over), starts it again on its directory, and waits
    /// until every partition is owned and the node owns some again.
    pub async fn restart_node(&self, i: usize) {
        self.terminate(i).await;
        let node = start_node(
            &self.servers,
            &format!("node-{i}"),
            self._dirs[i].path(),
            self.commands_per_s,
            &self.extra,
        )
        .await;
        self.nodes.write().await[i] = Some(node);
        self.settle().await;
    }

    /// A new node (`node-<n>`, on a fresh directory) joins the running cluster; returns its index once every
    /// partition is owned and every running node owns some.
    pub async fn join_node(&mut self) -> usize {
        let dir = super::data_dir();
        let index = self._dirs.len();
        let node = start_node(
            &self.servers,
            &format!("node-{index}"),
            dir.path(),
            self.commands_per_s,
            &self.extra,
        )
        .await;
        self._dirs.push(dir);
        self.nodes.write().await.push(Some(node));
        self.settle().await;
        index
    }

    /// Stops node `i` with SIGTERM (it hands its partitions over before it exits) and waits until the others
    /// own every partition.
    pub async fn stop_node(&self, i: usize) {
        self.terminate(i).await;
        self.settle().await;
    }

    /// Stops node `i` with SIGTERM and waits for it to exit cleanly.
    async fn terminate(&self, i: usize) {
        let daemon = self.nodes.write().await[i].take();
        if let Some(mut daemon) = daemon {
            let status =
                tokio::task::spawn_blocking(move || daemon.terminate(Duration::from_secs(30)))
                    .await
                    .expect("waits");
            assert!(status.success(), "node-{i} exited with {status}");
        }
    }

    /// Every process up again on the same ports and directories, and every partition owned.
    pub async fn up(&mut self) {
        for server in &mut self.servers.servers {
            server.restart();
        }
        let client = async_nats::connect(self.servers.addrs())
            .await
            .expect("connects");
        self.servers.wait_ready(&client).await;
        let mut started = Vec::new();
        for (i, dir) in self._dirs.iter().enumerate() {
            started.push(Some(
                start_node(
                    &self.servers,
                    &format!("node-{i}"),
                    dir.path(),
                    self.commands_per_s,
                    &self.extra,
                )
                .await,
            ));
        }
        *self.nodes.write().await = started;
        self.settle().await;
    }

    /// A room as its owner serves it, retried while its partition is being taken.
    pub async fn room(&self, room: &str, partition: u32) -> Value {
        let deadline = Instant::now() + FAILOVER_LIMIT;
        loop {
            let nodes = self.nodes.read().await;
            let owners = owners(&nodes).await;
            if let Some(node) = owners.get(&partition).and_then(|i| nodes[*i].as_ref()) {
                let (status, body) = node
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/rooms/{room}"),
                        Some(&token("host")),
                        None,
                    )
                    .await;
                if status == StatusCode::OK {
                    return body;
                }
            }
            assert!(Instant::now() < deadline, "room {room} not served");
            drop(nodes);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node index of a process, to signal it.
    pub async fn pid(&self, node: usize) -> u32 {
        self.nodes.read().await[node]
            .as_ref()
            .expect("running")
            .pid()
    }
}

async fn start_node(
    cluster: &TestCluster,
    name: &str,
    dir: &std::path::Path,
    commands_per_s: u32,
    extra: &[String],
) -> Daemon {
    let commands_per_s = commands_per_s.to_string();
    let urls: Vec<String> = cluster.servers.iter().map(|s| s.url()).collect();
    let urls = urls.join(",");
    let partitions = PARTITIONS.to_string();
    let args = [
        "--cluster",
        "true",
        "--node-id",
        name,
        "--nats-url",
        &urls,
        "--partitions",
        &partitions,
        "--log-replicas",
        "3",
        // Each partition's relay publishes into the stream COHOST (R3, like the log).
        "--jetstream",
        "true",
        "--auth-secret",
        SECRET,
        "--livekit-api-key",
        "cluster-test-key",
        "--livekit-api-secret",
        "cluster-test-livekit-secret-0123456789",
        "--user-commands-per-s",
        &commands_per_s,
        "--user-invitations-per-min",
        "1000000",
        // Snapshots often, so takeovers start from one and replay only the log after it.
        "--snapshot-every-events",
        "100",
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(extra.iter().map(String::as_str));
    Daemon::start_with(dir, &args).await
}

/// Which node owns which partition, from each node's /healthz; a node that does not answer at once (stopped,
/// killed) counts for nothing.
pub async fn owners(nodes: &[Option<Daemon>]) -> BTreeMap<u32, usize> {
    let mut owners = BTreeMap::new();
    for (index, node) in nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        let reply = node
            .http
            .get(node.url("/healthz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        let Ok(reply) = reply else { continue };
        if reply.status() != StatusCode::OK {
            continue;
        }
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        for p in body["partitions"].as_array().into_iter().flatten() {
            owners.insert(p.as_u64().expect("a partition number") as u32, index);
        }
    }
    owners
}

/// Rooms spread over the partitions, `per` in each.
pub fn spread_rooms(count: usize, per: usize) -> Vec<(String, u32)> {
    let mut taken = BTreeMap::<u32, usize>::new();
    (0..)
        .map(|n| format!("room-{n}"))
        .filter_map(|room| {
            let p = partition::of(&RoomId::new(&room).unwrap(), PARTITIONS);
            let count = taken.entry(p).or_default();
            *count += 1;
            (*count <= per).then_some((room, p))
        })
        .take(count)
        .collect()
}

/// One client's room and what it saw acknowledged.
pub struct Client {
    pub room: String,
    pub partition: u32,
    pub acked: u64,
    /// When each acknowledged command was first sent, and when it was acknowledged.
    pub acks: Vec<(Instant, Instant)>,
}

/// Sends one keyed command as `user` to whichever node owns the room's partition, again and again (the same
/// key) until it is acknowledged. Only 200 and 503 are expected.
pub async fn send(
    nodes: &Nodes,
    partition: u32,
    user: &str,
    path: &str,
    body: Value,
    key: &str,
) -> Value {
    let started = Instant::now();
    let token = token(user);
    loop {
        let owner = {
            let nodes = nodes.read().await;
            let owners = owners(&nodes).await;
            owners
                .get(&partition)
                .and_then(|i| nodes[*i].as_ref().map(|d| (d.http.clone(), d.url(path))))
        };
        if let Some((http, url)) = owner {
            let reply = http
                .post(url)
                .bearer_auth(&token)
                .header("idempotency-key", key)
                .timeout(REQUEST_TIMEOUT)
                .json(&body)
                .send()
                .await;
            if let Ok(reply) = reply {
                let status = reply.status();
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                if status == StatusCode::OK {
                    return body;
                }
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            }
        }
        assert!(
            started.elapsed() < FAILOVER_LIMIT * 2,
            "{path} not acknowledged in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `host` creates `room` (in partition `p`) and takes it live, each command keyed by the room's name.
pub async fn create_live(nodes: &Nodes, room: &str, p: u32) {
    let create = json!({"room_id": room});
    send(
        nodes,
        p,
        "host",
        "/v1/rooms",
        create,
        &format!("{room}-create"),
    )
    .await;
    let live = format!("/v1/rooms/{room}/live");
    send(nodes, p, "host", &live, json!({}), &format!("{room}-live")).await;
}

/// Creates the client's room, takes it live, then invites and cancels in turn until `stop` turns true.
pub async fn drive(
    nodes: Nodes,
    mut client: Client,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Client {
    let (room, p) = (client.room.clone(), client.partition);
    create_live(&nodes, &room, p).await;
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        let sent = Instant::now();
        let invite = format!("/v1/rooms/{room}/invitations");
        let reply = send(
            &nodes,
            p,
            "host",
            &invite,
            json!({"user_id": "guest"}),
            &format!("{room}-i{n}"),
        )
        .await;
        client.acked += 1;
        client.acks.push((sent, Instant::now()));
        let id = reply["invitation_id"]
            .as_str()
            .expect("an invitation id")
            .to_owned();
        let sent = Instant::now();
        let cancel = format!("/v1/invitations/{id}/cancel");
        send(
            &nodes,
            p,
            "host",
            &cancel,
            json!({}),
            &format!("{room}-c{n}"),
        )
        .await;
        client.acked += 1;
        client.acks.push((sent, Instant::now()));
    }
    client
}

/// Starts one client per room; they run until the returned sender sends `true`.
pub fn start_load(
    nodes: &Nodes,
    rooms: Vec<(String, u32)>,
) -> (
    tokio::sync::watch::Sender<bool>,
    Vec<tokio::task::JoinHandle<Client>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = rooms
        .into_iter()
        .map(|(room, partition)| {
            let client = Client {
                room,
                partition,
                acked: 0,
                acks: Vec::new(),
            };
            tokio::spawn(drive(nodes.clone(), client, stop_rx.clone()))
        })
        .collect();
    (stop_tx, tasks)
}

/// Stops the clients and returns what each saw.
pub async fn stop_load(
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Client>>,
) -> Vec<Client> {
    stop.send(true).expect("the clients listen");
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.expect("a client finishes"));
    }
    clients
}

/// Exactly once: each room's version is create + go_live + every command acknowledged in it.
pub async fn assert_exactly_once(cluster: &Cluster, clients: &[Client]) {
    let nodes = cluster.nodes.read().await;
    let owners = owners(&nodes).await;
    for client in clients {
        let node = nodes[owners[&client.partition]]
            .as_ref()
            .expect("the owner runs");
        let room = node
            .ok_get(&format!("/v1/rooms/{}", client.room), &token("host"))
            .await;
        assert_eq!(
            room["version"],
            2 + client.acked,
            "room {}: {room}",
            client.room
        );
    }
}

/// The relays published every event of every client's room into the stream `COHOST` exactly once: each room
/// subject holds as many messages as the room has versions (so none missing, none doubled, across the
/// partitions' moves), waiting up to 10 s for the relays to catch up.
pub async fn assert_relayed_exactly_once(cluster: &Cluster, clients: &[Client]) {
    use futures::TryStreamExt;
    let client = async_nats::connect(cluster.servers.addrs())
        .await
        .expect("connects");
    let stream = async_nats::jetstream::new(client)
        .get_stream("COHOST")
        .await
        .expect("the relays created the stream");
    let want: BTreeMap<String, usize> = clients
        .iter()
        .map(|c| (format!("cohost.v1.room.{}", c.room), 2 + c.acked as usize))
        .collect();
    let started = Instant::now();
    loop {
        let held: BTreeMap<String, usize> = stream
            .info_with_subjects("cohost.v1.room.>")
            .await
            .expect("the stream answers")
            .try_collect()
            .await
            .expect("the stream answers");
        let off: Vec<_> = want
            .iter()
            .filter(|(subject, n)| held.get(*subject) != Some(*n))
            .map(|(subject, n)| (subject, *n, held.get(subject).copied()))
            .collect();
        assert!(
            off.iter().all(|(_, n, held)| held.is_none_or(|h| h <= *n)),
            "events stored more than once in COHOST (subject, versions, messages): {off:?}"
        );
        if off.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the relays never published every event (subject, versions, messages): {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The time from `at` to the first acknowledged command, first sent after `at`, on each of `partitions`.
pub fn first_acks_after(at: Instant, partitions: &[u32], clients: &[Client]) -> Vec<Duration> {
    let mut times: Vec<Duration> = partitions
        .iter()
        .map(|p| {
            clients
                .iter()
                .filter(|c| c.partition == *p)
                .filter_map(|c| {
                    c.acks
                        .iter()
                        .find(|(sent, _)| *sent > at)
                        .map(|(_, acked)| *acked - at)
                })
                .min()
                .expect("the partition acknowledged commands afterwards")
        })
        .collect();
    times.sort();
    times
}

/// Sends a signal to a process.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
    assert!(status.expect("run kill").success(), "kill -{name} {pid}");
}

/// A live collection read over HTTP: its events as `(event, id, data)`.
pub struct Live {
    response: reqwest::Response,
    buffer: String,
    /// The `id:` of the last event, as sent.
    pub raw_id: String,
}

impl Live {
    pub async fn open(base: &str, path: &str, last_id: Option<u64>) -> Live {
        Self::open_as(base, path, "host", last_id.map(|id| id.to_string())).await
    }

    pub async fn open_as(base: &str, path: &str, user: &str, last_id: Option<String>) -> Live {
        let mut request = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token(user))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("the node answers");
        assert_eq!(response.status(), 200, "{path} on {base}");
        Live {
            response,
            buffer: String::new(),
            raw_id: String::new(),
        }
    }

    /// Opens a collection as a browser's `EventSource` does: a stream ticket in the query, no `Authorization`.
    pub async fn open_with_ticket(base: &str, path: &str, ticket: &str) -> Live {
        let response = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .query(&[("ticket", ticket)])
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("the node answers");
        assert_eq!(response.status(), 200, "{path} on {base} with a ticket");
        Live::from_response(response)
    }

    /// Reads the events of a stream already opened (and checked) by the caller.
    pub fn from_response(response: reqwest::Response) -> Live {
        Live {
            response,
            buffer: String::new(),
            raw_id: String::new(),
        }
    }

    /// The next event, skipping keep-alive comments; `None` once the stream ends (or fails).
    pub async fn next(&mut self) -> Option<(String, u64, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), 0, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().unwrap_or(0);
                        self.raw_id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue;
                }
                return Some((
                    event,
                    id,
                    serde_json::from_str(&data).unwrap_or(Value::Null),
                ));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("an event or the end within 20 s");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}
