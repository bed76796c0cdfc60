//! Outgoing webhooks against a real receiver that verifies each delivery with the official `standardwebhooks`
//! Python package (pinned, installed into `target/pypi/` once): every event in log order; the receiver down for
//! a while, then every event exactly once by `webhook-id`, in order; a kill -9 of cohostd mid-delivery, after
//! which nothing is lost and a duplicate has the same `webhook-id`; and a tampered or stale signature refused by
//! the library.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::Daemon;

const PACKAGE: &str = "standardwebhooks==1.3.0";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN: &str = "admin-secret-0123456789";

/// The receiver: 204 for a delivery the library verifies (its `webhook-id` appended to the log), 400 for one it
/// refuses (`BAD` and why), and 503 while the file `down` exists beside the log. While the file `hold` exists,
/// a verified delivery is logged (handled, as far as the receiver knows) but not answered until `hold` goes.
const RECEIVER: &str = r#"
import os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from standardwebhooks.webhooks import Webhook

port, secret, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
down = os.path.join(os.path.dirname(log), "down")
hold = os.path.join(os.path.dirname(log), "hold")
hook = Webhook(secret)

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if os.path.exists(down):
            self.send_response(503)
            self.end_headers()
            return
        try:
            hook.verify(body, {k.lower(): v for k, v in self.headers.items()})
            line = self.headers["webhook-id"]
            status = 204
        except Exception as error:
            line, status = "BAD " + str(error), 400
        with open(log, "a") as out:
            out.write(line + "\n")
        while os.path.exists(hold):
            time.sleep(0.01)
        try:
            self.send_response(status)
            self.end_headers()
        except OSError:
            pass

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start() -> Receiver {
        let tools = support::pip_packages(&PACKAGE.replace("==", "-"), &[PACKAGE]);
        let dir = tempfile::tempdir().expect("a temp dir");
        let script = dir.path().join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let port = support::free_port();
        let child = Command::new("python3")
            .arg(&script)
            .args([&port.to_string(), SECRET])
            .arg(dir.path().join("log"))
            .env("PYTHONPATH", &tools)
            .stdin(Stdio::null())
            .spawn()
            .expect("run the receiver with python3");
        let url = format!("http://127.0.0.1:{port}/hooks");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the receiver did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Receiver { child, dir, url }
    }

    /// What the receiver logged: the `webhook-id`s it verified, in order, and any `BAD` lines.
    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn set_down(&self, down: bool) {
        self.flag("down", down);
    }

    fn set_hold(&self, hold: bool) {
        self.flag("hold", hold);
    }

    fn flag(&self, name: &str, on: bool) {
        let flag = self.dir.path().join(name);
        if on {
            std::fs::write(flag, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// Waits, at most `within`, until every one of `ids` has been delivered; the log then.
    async fn wait_for_all(&self, ids: &[String], within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if ids.iter().all(|id| log.contains(id)) {
                return log;
            }
            assert!(Instant::now() < deadline, "lost: {log:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log holds `count` lines.
    async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.len() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} deliveries: {log:?}",
                log.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn endpoints_file(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("webhooks.json");
    let file = json!({"endpoints": [{"id": "receiver", "url": url, "secret": SECRET}]});
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

async fn daemon(dir: &Path, endpoints: &Path) -> Daemon {
    daemon_with(dir, endpoints, &[]).await
}

async fn daemon_with(dir: &Path, endpoints: &Path, more: &[&str]) -> Daemon {
    let file = endpoints.to_str().unwrap();
    let mut args = vec![
        "--webhooks-file",
        file,
        "--webhook-retry-first-ms",
        "50",
        "--webhook-retry-max-s",
        "1",
        "--admin-secret",
        ADMIN,
    ];
    args.extend_from_slice(more);
    Daemon::start_with(dir, &args).await
}

/// A room's whole life so far: created, live, then `guests` invitations (versions 1 to 2 + guests).
async fn room_with_guests(d: &Daemon, room: &str, guests: usize) -> Vec<String> {
    let host = d.token("host");
    d.live_room(&host, room).await;
    for guest in 0..guests {
        let body = json!({"user_id": format!("guest-{guest}")});
        d.ok_post(&format!("/v1/rooms/{room}/invitations"), &host, &body)
            .await;
    }
    (1..=2 + guests).map(|v| format!("{room}:{v}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_arrives_verified_in_order_and_once_after_the_receiver_comes_back() {
    let receiver = Receiver::start();
    let dir = support::data_dir();
    let endpoints = endpoints_file(dir.path(), &receiver.url);
    let d = daemon(dir.path(), &endpoints).await;
    let first = room_with_guests(&d, "r1", 3).await;
    assert_eq!(receiver.wait_for(first.len()).await, first);

    receiver.set_down(true);
    let second = room_with_guests(&d, "r2", 2).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.log(),
        first,
        "nothing gets through while it is down"
    );
    let health: serde_json::Value = d
        .http
        .get(d.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let follower = &health["followers"][0];
    assert_eq!(follower["name"], "webhook:receiver", "{health}");
    assert!(follower["retries"].as_u64().unwrap() > 0, "{health}");

    receiver.set_down(false);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        receiver.wait_for(all.len()).await,
        all,
        "each event once, in order"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.log(), all, "and nothing after");

    // The operators' view: the admin secret opens it, a user's JWT does not.
    let admin = |token: &str| {
        d.http
            .get(d.url("/v1/admin/webhooks"))
            .bearer_auth(token)
            .send()
    };
    let listed: serde_json::Value = admin(ADMIN).await.unwrap().json().await.unwrap();
    let endpoint = &listed["endpoints"][0];
    assert_eq!(endpoint["id"], "receiver", "{listed}");
    assert_eq!(endpoint["url"], receiver.url.as_str());
    assert_eq!(endpoint["cursor"], all.len(), "{listed}");
    assert_eq!(endpoint["lag"], 0, "{listed}");
    assert!(endpoint.get("secret").is_none());
    assert_eq!(admin(&d.token("host")).await.unwrap().status(), 401);
    assert_eq!(
        admin("admin-secret-012345678X").await.unwrap().status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_mid_delivery_loses_nothing_and_repeats_only_by_webhook_id() {
    let receiver = Receiver::start();
    let dir = support::data_dir();
    let endpoints = endpoints_file(dir.path(), &receiver.url);
    let mut d = daemon(dir.path(), &endpoints).await;
    let first = room_with_guests(&d, "k1", 2).await;
    receiver.wait_for(first.len()).await;
    // The receiver handles k2's first event but holds its answer: the kill comes before cohostd learns of it.
    receiver.set_hold(true);
    let second = room_with_guests(&d, "k2", 3).await;
    let held = receiver.wait_for(first.len() + 1).await;
    assert_eq!(held.last(), Some(&second[0]), "{held:?}");
    // Long enough for the cursor to take what was delivered before (it is written every 100 ms at most).
    tokio::time::sleep(Duration::from_millis(400)).await;
    support::cluster::signal(d.pid(), "KILL");
    d.wait_exit(Duration::from_secs(5));
    receiver.set_hold(false);

    let d = daemon(dir.path(), &endpoints).await;
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let log = receiver.wait_for_all(&all, Duration::from_secs(20)).await;
    assert!(log.iter().all(|line| !line.starts_with("BAD")), "{log:?}");
    assert_eq!(firsts(&log, ""), all, "nothing lost, in order: {log:?}");
    let repeats = |id: &String| log.iter().filter(|line| *line == id).count();
    assert!(
        repeats(&second[0]) >= 2,
        "the held event is delivered again, with the same webhook-id: {log:?}"
    );
    assert!(
        (first.iter().chain(&second[1..])).all(|id| repeats(id) == 1),
        "nothing the kill did not interrupt comes twice: {log:?}"
    );
    drop(d);
}

/// The admin list of the webhook deliveries at `url`, with the admin secret.
async fn admin_list(http: &reqwest::Client, url: String) -> serde_json::Value {
    let response = http.get(url).bearer_auth(ADMIN).send().await.unwrap();
    response.json().await.unwrap()
}

/// The operators' view of the endpoint and the follower's lines in `/healthz` and `/metrics`.
async fn endpoint_state(d: &Daemon) -> (String, String, String) {
    let listed = admin_list(&d.http, d.url("/v1/admin/webhooks")).await;
    let health: serde_json::Value = (d.http.get(d.url("/healthz")).send().await.unwrap())
        .json()
        .await
        .unwrap();
    let metrics = d.http.get(d.url("/metrics")).send().await.unwrap();
    let paused = (metrics.text().await.unwrap().lines())
        .find(|line| line.starts_with("cohost_follower_paused{follower=\"webhook:receiver\"}"))
        .unwrap_or_default()
        .to_owned();
    let state = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (
        state(&listed["endpoints"][0]["state"]),
        state(&health["followers"][0]["state"]),
        paused,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_failing_past_the_give_up_age_pauses_at_its_event_until_resumed() {
    let receiver = Receiver::start();
    receiver.set_down(true);
    let dir = support::data_dir();
    let endpoints = endpoints_file(dir.path(), &receiver.url);
    let d = daemon_with(dir.path(), &endpoints, &["--webhook-give-up-s", "1"]).await;
    let events = room_with_guests(&d, "p1", 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let paused = (
        "paused".to_owned(),
        "paused".to_owned(),
        "cohost_follower_paused{follower=\"webhook:receiver\"} 1".to_owned(),
    );
    while endpoint_state(&d).await != paused {
        assert!(
            Instant::now() < deadline,
            "not paused: {:?}",
            endpoint_state(&d).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Paused, it tries nothing more, even with the receiver back: nothing is skipped, nothing sent.
    receiver.set_down(false);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(receiver.log().is_empty(), "{:?}", receiver.log());
    assert_eq!(endpoint_state(&d).await, paused);

    let resume = |id: &str, token: &str| {
        let path = format!("/v1/admin/webhooks/{id}/resume");
        d.http.post(d.url(&path)).bearer_auth(token).send()
    };
    assert_eq!(
        resume("receiver", &d.token("host")).await.unwrap().status(),
        401
    );
    assert_eq!(resume("nobody", ADMIN).await.unwrap().status(), 404);
    assert_eq!(resume("receiver", ADMIN).await.unwrap().status(), 200);
    assert_eq!(
        receiver.wait_for(events.len()).await,
        events,
        "each event once, in order"
    );
    let (listed, health, metric) = endpoint_state(&d).await;
    assert_eq!(
        (listed.as_str(), health.as_str()),
        ("following", "following")
    );
    assert!(metric.ends_with(" 0"), "{metric}");
    let again = resume("receiver", ADMIN).await.unwrap();
    assert_eq!(again.status(), 409);
}

/// The receiver's library refuses a changed body and a signature from more than its tolerance (5 minutes) ago.
#[test]
fn a_tampered_or_stale_delivery_is_refused_by_the_library() {
    let tools = support::pip_packages(&PACKAGE.replace("==", "-"), &[PACKAGE]);
    let signer = cohostd::outbound::Signer::new(SECRET).unwrap();
    let now = support::now_s();
    let body = r#"{"seq":1}"#;
    let verify = |signed: &cohostd::outbound::Signed, body: &str| {
        let script = format!(
            "from standardwebhooks.webhooks import Webhook\n\
             Webhook({SECRET:?}).verify({body:?}, {{'webhook-id': {:?}, 'webhook-timestamp': {:?}, 'webhook-signature': {:?}}})",
            signed.id, signed.timestamp, signed.signature
        );
        Command::new("python3")
            .args(["-c", &script])
            .env("PYTHONPATH", &tools)
            .stderr(Stdio::null())
            .status()
            .expect("run python3")
            .success()
    };
    let fresh = signer.sign("r1:1", now, body.as_bytes());
    assert!(verify(&fresh, body), "a fresh delivery verifies");
    assert!(!verify(&fresh, r#"{"seq":2}"#), "a changed body does not");
    let stale = signer.sign("r1:1", now - 600, body.as_bytes());
    assert!(!verify(&stale, body), "nor one signed ten minutes ago");
}

/// The log's ids that start with `prefix`, each at its first delivery, in the order delivered.
fn firsts(log: &[String], prefix: &str) -> Vec<String> {
    let mut firsts: Vec<String> = Vec::new();
    for id in log.iter().filter(|id| id.starts_with(prefix)) {
        if !firsts.contains(id) {
            firsts.push(id.clone());
        }
    }
    firsts
}

/// Room `room`'s next `count` invitations, from version `from`: their `webhook-id`s.
async fn invite_in_cluster(
    nodes: &support::cluster::Nodes,
    room: &str,
    p: u32,
    from: u64,
    count: u64,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in from..from + count {
        let path = format!("/v1/rooms/{room}/invitations");
        let body = json!({"user_id": format!("guest-{n}")});
        support::cluster::send(nodes, p, "host", &path, body, &format!("{room}-i{n}")).await;
        ids.push(format!("{room}:{n}"));
    }
    ids
}

/// Waits until each node's admin list shows one delivery per partition it owns (partitions may still be
/// moving just after the nodes started).
async fn wait_for_listed_owners(cluster: &support::cluster::Cluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owners = cluster.owners().await;
        let mut listed = std::collections::BTreeMap::new();
        for (index, node) in cluster.nodes.read().await.iter().enumerate() {
            let node = node.as_ref().expect("running");
            let list = admin_list(&node.http, node.url("/v1/admin/webhooks")).await;
            for entry in list["endpoints"].as_array().unwrap() {
                listed.insert(entry["partition"].as_u64().unwrap() as u32, index);
            }
        }
        if listed == owners {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "listed {listed:?}, owners {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In cluster mode each partition's owner delivers the partition's events; a node killed with SIGKILL hands its
/// partitions, cursors included, to the others, which go on from the saved cursors: every event arrives, each
/// room's in version order, a repeat only with the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_mode_each_partition_s_owner_delivers_and_its_cursor_moves_with_the_partition() {
    use cohost_nats::cluster::CursorBook;
    use support::cluster::{COMMANDS_PER_S, Cluster, create_live, signal, spread_rooms};
    let receiver = Receiver::start();
    let files = tempfile::tempdir().unwrap();
    let endpoints = endpoints_file(files.path(), &receiver.url);
    let flags = [
        "--webhooks-file",
        endpoints.to_str().unwrap(),
        "--webhook-retry-first-ms",
        "50",
        "--webhook-retry-max-s",
        "1",
        "--admin-secret",
        ADMIN,
    ];
    let cluster = Cluster::start_with_flags(COMMANDS_PER_S, &flags).await;
    let rooms = spread_rooms(8, 1);
    let mut expected: Vec<String> = Vec::new();
    for (room, p) in &rooms {
        create_live(&cluster.nodes, room, *p).await;
        expected.extend([format!("{room}:1"), format!("{room}:2")]);
        expected.extend(invite_in_cluster(&cluster.nodes, room, *p, 3, 2).await);
    }
    receiver.wait_for(expected.len()).await;
    wait_for_listed_owners(&cluster).await;
    // Every partition's cursor reaches the cluster's bucket (each partition holds one room: 4 events).
    let nats = async_nats::connect(cluster.servers.addrs()).await.unwrap();
    let book = CursorBook::open(&async_nats::jetstream::new(nats), 3)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (room, p) in &rooms {
        while book.load(*p).await.unwrap().get("webhook:receiver") != Some(&4) {
            assert!(Instant::now() < deadline, "{room}'s cursor not saved");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let victim = 1;
    {
        let mut nodes = cluster.nodes.write().await;
        let mut daemon = nodes[victim].take().expect("running");
        signal(daemon.pid(), "KILL");
        daemon.wait_exit(Duration::from_secs(5));
    }
    for (room, p) in &rooms {
        expected.extend(invite_in_cluster(&cluster.nodes, room, *p, 5, 2).await);
    }
    let log = receiver
        .wait_for_all(&expected, Duration::from_secs(30))
        .await;
    assert!(log.iter().all(|line| !line.starts_with("BAD")), "{log:?}");
    // What was delivered and saved before the kill is not delivered again: the new owners started from the
    // moved partitions' cursors, not from the beginning of their logs.
    for (room, _) in &rooms {
        for v in 1..=4 {
            let id = format!("{room}:{v}");
            let times = log.iter().filter(|line| **line == id).count();
            assert_eq!(times, 1, "{id} delivered {times} times: {log:?}");
        }
    }
    for (room, _) in &rooms {
        let want: Vec<String> = (1..=6).map(|v| format!("{room}:{v}")).collect();
        let firsts = firsts(&log, &format!("{room}:"));
        assert_eq!(firsts, want, "{room} in order: {log:?}");
    }
}
