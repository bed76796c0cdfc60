//! Live collections over SSE against the real daemon: snapshot then changes with ids = room versions (or seqs for
//! /v1/me), resume with `Last-Event-ID` without loss or duplicates, 403 for a non-host, 400 for a bad id.
//!
//! The client is a small blocking HTTP/1.1 client over `std::net::TcpStream`; every read has a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cohostd");
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Kills the daemon when the test ends, passing or not.
struct Daemon {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "COHOST_NATS_URL",
        "COHOST_AUTH_SECRET",
        "COHOST_DATA_DIR",
        "COHOST_HTTP_ADDR",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "COHOST_LIVEKIT_ADMIN",
    ] {
        command.env_remove(var);
    }
    command.arg("--data-dir").arg(dir);
    command
}

fn token(dir: &Path, user: &str) -> String {
    let output = command(dir)
        .args(["token", "--user", user])
        .stderr(Stdio::null())
        .output()
        .expect("run cohostd token");
    assert!(output.status.success(), "cohostd token failed");
    String::from_utf8(output.stdout)
        .expect("token is UTF-8")
        .trim()
        .to_owned()
}

fn start(users: &[&str]) -> (Daemon, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Mint first: that creates the dev secret the daemon then reads.
    let tokens = users.iter().map(|u| token(dir.path(), u)).collect();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = command(dir.path())
        .args(["--http-addr", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cohostd");
    let daemon = Daemon {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = try_request(&daemon.addr, "GET", "/healthz", None, None) {
            break;
        }
        assert!(Instant::now() < deadline, "cohostd did not become healthy");
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, tokens)
}

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
}

fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = connect(addr)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let (status, chunked) = read_head(&mut reader)?;
    let mut bytes = Vec::new();
    if chunked {
        let mut body = Chunked::new(reader);
        while let Some(line) = body.line()? {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
    } else {
        reader.read_to_end(&mut bytes)?;
    }
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)?
    };
    Ok((status, value))
}

fn request(addr: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, value) =
        try_request(addr, method, path, Some(token), body.as_ref()).expect("HTTP request");
    assert_eq!(status, 200, "{method} {path}: {value}");
    value
}

/// The status and whether the body is chunked.
fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("headers cut short"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok((status, chunked));
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
}

/// Lines of a chunked body.
struct Chunked {
    reader: BufReader<TcpStream>,
    decoded: Vec<u8>,
    done: bool,
}

impl Chunked {
    fn new(reader: BufReader<TcpStream>) -> Self {
        Self {
            reader,
            decoded: Vec::new(),
            done: false,
        }
    }

    /// The next line without its `\n`; `None` at the end of the body.
    fn line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            if let Some(end) = self.decoded.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.decoded.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]);
                return Ok(Some(text.trim_end_matches('\r').to_owned()));
            }
            if self.done {
                return Ok(None);
            }
            let mut size = String::new();
            self.reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                self.done = true;
                if !self.decoded.is_empty() {
                    self.decoded.push(b'\n');
                }
                continue;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk)?;
            chunk.truncate(size);
            self.decoded.extend_from_slice(&chunk);
        }
    }
}

#[derive(Debug)]
struct SseEvent {
    event: String,
    id: Option<u64>,
    data: Value,
}

struct Sse {
    body: Chunked,
}

impl Sse {
    /// Opens a live collection; `Err(status)` if it was refused.
    fn open(addr: &str, path: &str, token: &str, last_id: Option<&str>) -> Result<Self, u16> {
        let mut stream = connect(addr).expect("connect");
        let last = last_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\n{last}\r\n"
        )
        .expect("write request");
        let mut reader = BufReader::new(stream);
        let (status, chunked) = read_head(&mut reader).expect("response head");
        if status != 200 {
            return Err(status);
        }
        assert!(chunked, "an SSE body is chunked");
        Ok(Self {
            body: Chunked::new(reader),
        })
    }

    /// The next event (keep-alive comments skipped); panics after the read timeout.
    fn next(&mut self) -> SseEvent {
        let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
        let mut fields = false;
        loop {
            let line = self
                .body
                .line()
                .expect("read an SSE line in time")
                .expect("the stream is still open");
            if line.is_empty() {
                if fields {
                    return SseEvent {
                        event,
                        id,
                        data: serde_json::from_str(&data).expect("event data is JSON"),
                    };
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            fields = true;
            match field {
                "event" => event = value.to_owned(),
                "id" => id = Some(value.parse().expect("numeric id")),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
    }

    /// The next `change`, checked to carry the given id and event type.
    fn change(&mut self, id: u64, kind: &str) -> Value {
        let event = self.next();
        assert_eq!(event.event, "change", "{event:?}");
        assert_eq!(event.id, Some(id), "{event:?}");
        assert_eq!(event.data["type"], kind, "{event:?}");
        event.data
    }
}

#[test]
fn live_collections_snapshot_changes_and_resume() {
    let (daemon, tokens) = start(&["alice", "bob", "carol", "dave"]);
    let [alice, bob, carol, dave] = [&tokens[0], &tokens[1], &tokens[2], &tokens[3]];
    let addr = daemon.addr.as_str();
    let room_path = "/v1/rooms/r1/invitations";
    let me_path = "/v1/me/invitations";

    let room = request(
        addr,
        "POST",
        "/v1/rooms",
        alice,
        Some(json!({"room_id": "r1"})),
    );
    assert_eq!(room["version"], 1);
    let room = request(addr, "POST", "/v1/rooms/r1/live", alice, None);
    assert_eq!(room["version"], 2);

    // Refusals: a non-host, and a malformed Last-Event-ID.
    assert_eq!(Sse::open(addr, room_path, bob, None).err(), Some(403));
    assert_eq!(
        Sse::open(addr, room_path, alice, Some("x")).err(),
        Some(400)
    );
    assert_eq!(Sse::open(addr, me_path, carol, Some("-1")).err(), Some(400));

    // Snapshots: the room's at version 2, carol's at the current seq.
    let mut room_sse = Sse::open(addr, room_path, alice, None).expect("room SSE");
    let snapshot = room_sse.next();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.id, Some(2));
    assert_eq!(snapshot.data, json!({"items": [], "next_cursor": null}));
    let mut me_sse = Sse::open(addr, me_path, carol, None).expect("me SSE");
    let snapshot = me_sse.next();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data, json!({"items": [], "next_cursor": null}));
    let mut last_seq = snapshot.id.expect("snapshot id");
    assert!(last_seq >= 2);

    // Changes, live.
    let invite = |user: &str| {
        request(
            addr,
            "POST",
            "/v1/rooms/r1/invitations",
            alice,
            Some(json!({"user_id": user})),
        )["invitation_id"]
            .as_str()
            .expect("invitation_id")
            .to_owned()
    };
    let to_bob = invite("bob");
    let to_carol = invite("carol");
    request(
        addr,
        "POST",
        &format!("/v1/invitations/{to_bob}/accept"),
        bob,
        None,
    );
    request(
        addr,
        "POST",
        &format!("/v1/invitations/{to_carol}/cancel"),
        alice,
        None,
    );

    room_sse.change(3, "invitation_created");
    let created = room_sse.change(4, "invitation_created");
    assert_eq!(created["invitation"]["user_id"], "carol");
    assert_eq!(created["version"], 4);
    room_sse.change(5, "invitation_approved");
    room_sse.change(6, "invitation_cancelled");

    for kind in ["invitation_created", "invitation_cancelled"] {
        let event = me_sse.next();
        assert_eq!(event.event, "change");
        assert_eq!(event.data["type"], kind);
        assert_eq!(event.data["invitation"]["user_id"], "carol");
        let id = event.id.expect("change id");
        assert_eq!(event.data["seq"], id, "the id is the seq");
        assert!(id > last_seq);
        last_seq = id;
    }

    // Disconnect; changes happen meanwhile.
    drop(room_sse);
    drop(me_sse);
    let to_dave = invite("dave");
    request(
        addr,
        "POST",
        &format!("/v1/invitations/{to_dave}/reject"),
        dave,
        None,
    );
    let to_carol = invite("carol");

    // Resume: exactly the missed changes, then live ones.
    let mut room_sse = Sse::open(addr, room_path, alice, Some("6")).expect("room SSE resumed");
    room_sse.change(7, "invitation_created");
    room_sse.change(8, "invitation_rejected");
    room_sse.change(9, "invitation_created");
    let mut me_sse =
        Sse::open(addr, me_path, carol, Some(&last_seq.to_string())).expect("me SSE resumed");
    let missed = me_sse.next();
    assert_eq!(missed.event, "change");
    assert_eq!(missed.data["type"], "invitation_created");
    assert_eq!(missed.data["version"], 9);
    let missed_seq = missed.id.expect("id");
    assert_eq!(missed.data["seq"], missed_seq);

    request(
        addr,
        "POST",
        &format!("/v1/invitations/{to_carol}/accept"),
        carol,
        None,
    );
    room_sse.change(10, "invitation_approved");
    let live = me_sse.next();
    assert_eq!(live.data["type"], "invitation_approved");
    assert_eq!(live.id, Some(missed_seq + 1));
    assert_eq!(live.data["seq"], missed_seq + 1);

    // Resuming from the latest id sends nothing old: the next event is the next change.
    let mut caught_up = Sse::open(addr, room_path, alice, Some("10")).expect("room SSE at head");
    request(addr, "DELETE", "/v1/rooms/r1/cohosts/bob", alice, None);
    caught_up.change(11, "cohost_removed");
    room_sse.change(11, "cohost_removed");

    // A fresh snapshot reflects every change, with the room's version as its id.
    let mut fresh = Sse::open(addr, &format!("{room_path}?status=pending"), alice, None)
        .expect("room SSE fresh");
    let snapshot = fresh.next();
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.id, Some(11));
    assert_eq!(snapshot.data["items"], json!([]));
    let mut all = Sse::open(addr, room_path, alice, None).expect("room SSE all");
    let snapshot = all.next();
    assert_eq!(snapshot.id, Some(11));
    assert_eq!(snapshot.data["items"].as_array().map(Vec::len), Some(4));
}
