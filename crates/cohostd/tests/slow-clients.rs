//! Clients that are slow, silent or greedy cannot hold the daemon: headers and bodies have deadlines, idle
//! keep-alive connections are closed, a declared oversized body is refused before it is read, open connections
//! are capped, and SIGTERM stops the daemon within its grace period whatever the clients are doing.
//!
//! The clients are raw TCP sockets, so each test controls exactly what is sent and when.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::Daemon;

/// How long a test waits for the daemon to do something it should do within about a second.
const PATIENCE: Duration = Duration::from_secs(10);
/// Short limits, so the tests are quick: headers 1 s, bodies 2 s, 8 connections.
const LIMITS: [&str; 6] = [
    "--http-header-timeout-s",
    "1",
    "--http-body-timeout-s",
    "2",
    "--http-connections-max",
    "8",
];

fn addr(daemon: &Daemon) -> String {
    daemon.base.trim_start_matches("http://").to_owned()
}

fn connect(daemon: &Daemon) -> TcpStream {
    let stream = TcpStream::connect(addr(daemon)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// Reads until the daemon closes the connection; what it sent, and how long that took. Panics if it is still
/// open after [`PATIENCE`].
fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the daemon kept the connection open for {PATIENCE:?}: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// The status of the first response in `text`.
fn status(text: &str) -> Option<u16> {
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn slow_silent_and_idle_connections_are_closed() {
    let dir = support::data_dir();
    let daemon = Daemon::start_with(dir.path(), &LIMITS).await;
    // Headers that never end.
    let mut slow = connect(&daemon);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Nothing at all.
    let mut silent = connect(&daemon);
    // A keep-alive connection after one full request.
    let mut idle = connect(&daemon);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for (what, stream) in [("slow", &mut slow), ("silent", &mut silent)] {
        let (text, took) = until_closed(stream);
        assert!(
            took < Duration::from_secs(5),
            "{what}: closed after {took:?}"
        );
        assert!(status(&text) != Some(200), "{what}: {text}");
    }
    let (text, took) = until_closed(&mut idle);
    assert_eq!(status(&text), Some(200), "the request was answered: {text}");
    assert!(took < Duration::from_secs(5), "idle: closed after {took:?}");
}

#[tokio::test]
async fn bodies_have_a_deadline_and_a_declared_oversized_one_is_refused_at_once() {
    let dir = support::data_dir();
    let daemon = Daemon::start_with(dir.path(), &LIMITS).await;
    let token = daemon.token("alice");
    let head = |length: u64| {
        format!(
            "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // A gigabyte is announced and never sent: 413 before the body deadline (2 s) could pass.
    let mut huge = connect(&daemon);
    huge.write_all(head(1 << 30).as_bytes()).unwrap();
    let (text, took) = until_closed(&mut huge);
    assert_eq!(status(&text), Some(413), "{text}");
    assert!(text.contains("invalid_argument"), "{text}");
    assert!(
        text.contains("connection: close"),
        "the unread body closes the connection: {text}"
    );
    assert!(took < Duration::from_millis(1_500), "413 took {took:?}");
    // 100 bytes announced, 10 sent: 408 once the body deadline passes.
    let mut trickle = connect(&daemon);
    trickle.write_all(head(100).as_bytes()).unwrap();
    trickle.write_all(br#"{"room_id""#).unwrap();
    let (text, took) = until_closed(&mut trickle);
    assert_eq!(status(&text), Some(408), "{text}");
    assert!(text.contains("invalid_argument"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        (Duration::from_millis(1_500)..Duration::from_secs(6)).contains(&took),
        "408 after {took:?}"
    );
    // Nothing was created, and the daemon still serves.
    let (code, _) = daemon
        .call(reqwest::Method::GET, "/v1/rooms/r1", Some(&token), None)
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn open_connections_are_capped_and_the_cap_frees_up() {
    let dir = support::data_dir();
    let daemon = Daemon::start_with(dir.path(), &LIMITS).await;
    // Eight silent connections take every slot; the ninth waits in the backlog until the header deadline
    // closes them (1 s), then it is served.
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(&daemon)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut ninth = connect(&daemon);
    ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (text, took) = until_closed(&mut ninth);
    assert_eq!(status(&text), Some(200), "{text}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && took < Duration::from_secs(6),
        "the ninth connection waited {waited:?} for a slot"
    );
    drop(silent);
    let at_cap = daemon.metric("cohost_http_connections_at_cap_total").await;
    assert!(at_cap >= 1, "the cap was reached {at_cap} times");
}

#[tokio::test]
async fn sigterm_stops_within_the_grace_period_whatever_a_client_is_sending() {
    let dir = support::data_dir();
    let args = ["--http-body-timeout-s", "600", "--shutdown-grace-s", "1"];
    let mut daemon = Daemon::start_with(dir.path(), &args).await;
    let token = daemon.token("alice");
    daemon
        .ok_post("/v1/rooms", &token, &serde_json::json!({"room_id": "r1"}))
        .await;
    // Half a request: the headers and 10 of 100 bytes of body, then nothing.
    let mut half = connect(&daemon);
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
    );
    half.write_all(head.as_bytes()).unwrap();
    half.write_all(br#"{"room_id""#).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = daemon.terminate(PATIENCE);
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        started.elapsed()
    );
    // The engine was drained and flushed: the room is there after a restart.
    let daemon = Daemon::start(dir.path()).await;
    assert_eq!(daemon.ok_get("/v1/rooms/r1", &token).await["version"], 1);
}
