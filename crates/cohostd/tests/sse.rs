//! Live collections over SSE against the real daemon: snapshot then changes with ids = room versions (or seqs for
//! /v1/me), resume with `Last-Event-ID` without loss or duplicates, 403 for a non-host, 400 for a bad id.
//!
//! The SSE client is a small blocking HTTP/1.1 client over `std::net::TcpStream`; every read has a timeout.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Flow, Step, call, delete, invite, post};

const READ_TIMEOUT: Duration = Duration::from_secs(5);
const ROOM: &str = "/v1/rooms/r1/invitations";
const ME: &str = "/v1/me/invitations";

fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    Ok(stream)
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

    /// The next changes, checked to carry these ids and event types, in order.
    fn changes(&mut self, want: &[(u64, &str)]) -> Vec<Value> {
        (want.iter())
            .map(|(id, kind)| self.change(*id, kind))
            .collect()
    }

    /// The next `change` of a /v1/me stream, checked to have this event type and its seq as its id; returns
    /// the id and the data.
    fn seq_change(&mut self, kind: &str) -> (u64, Value) {
        let event = self.next();
        assert_eq!(event.event, "change", "{event:?}");
        assert_eq!(event.data["type"], kind, "{event:?}");
        let id = event.id.expect("change id");
        assert_eq!(event.data["seq"], id, "the id is the seq");
        (id, event.data)
    }

    /// The next event, checked to be a snapshot; returns its id and data.
    fn snapshot(&mut self) -> (Option<u64>, Value) {
        let event = self.next();
        assert_eq!(event.event, "snapshot", "{event:?}");
        (event.id, event.data)
    }
}

/// A POST without a body (the daemon reads it as `{}`), expected to succeed.
fn post_empty(user: &str, path: &str) -> Step {
    call(Method::POST, user, path)
}

/// Opens `path` as `user` from `last_id`, or says with which status it was refused.
fn open(flow: &mut Flow, path: &str, user: &str, last_id: Option<&str>) -> Result<Sse, u16> {
    let token = flow.token(user);
    let addr = flow.d.base.strip_prefix("http://").expect("an http base");
    Sse::open(addr, path, &token, last_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn live_collections_snapshot_changes_and_resume() {
    let mut flow = Flow::start().await;
    flow.run([
        post("alice", "/v1/rooms", json!({"room_id": "r1"})).ok(json!({"version": 1})),
        post_empty("alice", "/v1/rooms/r1/live").ok(json!({"version": 2})),
    ])
    .await;

    // Refusals: a non-host, and a malformed Last-Event-ID.
    assert_eq!(open(&mut flow, ROOM, "bob", None).err(), Some(403));
    assert_eq!(open(&mut flow, ROOM, "alice", Some("x")).err(), Some(400));
    assert_eq!(open(&mut flow, ME, "carol", Some("-1")).err(), Some(400));

    // Snapshots: the room's at version 2, carol's at the current seq.
    let mut room_sse = open(&mut flow, ROOM, "alice", None).expect("room SSE");
    let empty = json!({"items": [], "next_cursor": null});
    assert_eq!(room_sse.snapshot(), (Some(2), empty.clone()));
    let mut me_sse = open(&mut flow, ME, "carol", None).expect("me SSE");
    let (id, data) = me_sse.snapshot();
    assert_eq!(data, empty);
    let mut last_seq = id.expect("snapshot id");
    assert!(last_seq >= 2);

    // Changes, live.
    flow.run([
        invite("alice", "r1", "bob").save("/invitation_id", "to_bob"),
        invite("alice", "r1", "carol").save("/invitation_id", "to_carol"),
        post_empty("bob", "/v1/invitations/{to_bob}/accept"),
        post_empty("alice", "/v1/invitations/{to_carol}/cancel"),
    ])
    .await;
    let changes = room_sse.changes(&[
        (3, "invitation_created"),
        (4, "invitation_created"),
        (5, "invitation_approved"),
        (6, "invitation_cancelled"),
    ]);
    assert_eq!(changes[1]["invitation"]["user_id"], "carol");
    assert_eq!(changes[1]["version"], 4);
    for kind in ["invitation_created", "invitation_cancelled"] {
        let (id, data) = me_sse.seq_change(kind);
        assert_eq!(data["invitation"]["user_id"], "carol");
        assert!(id > last_seq);
        last_seq = id;
    }

    // Disconnect; changes happen meanwhile.
    drop(room_sse);
    drop(me_sse);
    flow.run([
        invite("alice", "r1", "dave").save("/invitation_id", "to_dave"),
        post_empty("dave", "/v1/invitations/{to_dave}/reject"),
        invite("alice", "r1", "carol").save("/invitation_id", "to_carol_again"),
    ])
    .await;
    resume(&mut flow, last_seq).await;
}

/// After [`live_collections_snapshot_changes_and_resume`]'s disconnect: a resume gets exactly the missed changes,
/// then live ones; a resume from the head gets only new ones; a fresh snapshot reflects every change.
async fn resume(flow: &mut Flow, last_seq: u64) {
    let mut room_sse = open(flow, ROOM, "alice", Some("6")).expect("room SSE resumed");
    room_sse.changes(&[
        (7, "invitation_created"),
        (8, "invitation_rejected"),
        (9, "invitation_created"),
    ]);
    let mut me_sse = open(flow, ME, "carol", Some(&last_seq.to_string())).expect("me SSE resumed");
    let (missed_seq, missed) = me_sse.seq_change("invitation_created");
    assert_eq!(missed["version"], 9);

    flow.step(post_empty(
        "carol",
        "/v1/invitations/{to_carol_again}/accept",
    ))
    .await;
    room_sse.change(10, "invitation_approved");
    let (live_seq, _) = me_sse.seq_change("invitation_approved");
    assert_eq!(live_seq, missed_seq + 1);

    // An id neither collection has sent (ahead of the room, of the log, or the largest there is) starts over.
    let ahead = [u64::MAX.to_string(), (live_seq + 1_000).to_string()];
    for id in &ahead {
        let mut me_ahead = open(flow, ME, "carol", Some(id)).expect("me SSE from ahead");
        assert!(me_ahead.snapshot().0.unwrap() >= live_seq, "{id}");
        let mut room_ahead = open(flow, ROOM, "alice", Some(id)).expect("room SSE from ahead");
        assert_eq!(room_ahead.snapshot().0, Some(10), "{id}");
    }

    // Resuming from the latest id sends nothing old: the next event is the next change.
    let mut caught_up = open(flow, ROOM, "alice", Some("10")).expect("room SSE at head");
    flow.step(delete("alice", "/v1/rooms/r1/cohosts/bob")).await;
    caught_up.change(11, "cohost_removed");
    room_sse.change(11, "cohost_removed");

    // A fresh snapshot reflects every change, with the room's version as its id.
    let pending = &format!("{ROOM}?status=pending");
    let (id, data) = open(flow, pending, "alice", None)
        .expect("room SSE fresh")
        .snapshot();
    assert_eq!(id, Some(11));
    assert_eq!(data["items"], json!([]));
    let (id, data) = open(flow, ROOM, "alice", None)
        .expect("room SSE all")
        .snapshot();
    assert_eq!(id, Some(11));
    assert_eq!(data["items"].as_array().map(Vec::len), Some(4));
}

/// No connection timeout cuts a live collection: with 1 s header and body deadlines, a stream that stays quiet
/// for longer still delivers the next change.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_collection_outlives_every_timeout() {
    let mut flow =
        Flow::start_with(&["--http-header-timeout-s", "1", "--http-body-timeout-s", "1"]).await;
    flow.run([
        post("alice", "/v1/rooms", json!({"room_id": "r1"})).ok(json!({"version": 1})),
        post_empty("alice", "/v1/rooms/r1/live").ok(json!({"version": 2})),
    ])
    .await;
    let mut room_sse = open(&mut flow, ROOM, "alice", None).expect("room SSE");
    assert_eq!(room_sse.snapshot().0, Some(2));
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    flow.step(invite("alice", "r1", "bob")).await;
    room_sse.change(3, "invitation_created");
}

/// A collection ends when its token does: a last `end` event (not `error`, which a browser's `EventSource`
/// uses for its own failures) with code `unauthenticated`, then the stream closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_collection_ends_when_its_token_expires() {
    let mut flow = Flow::start().await;
    flow.run([
        post("alice", "/v1/rooms", json!({"room_id": "r1"})),
        post_empty("alice", "/v1/rooms/r1/live"),
    ])
    .await;
    let short = support::signed(
        &flow.d.dir,
        &json!({"sub": "alice", "exp": support::now_s() + 2}),
    );
    let addr = flow.d.base.strip_prefix("http://").expect("an http base");
    let started = std::time::Instant::now();
    let mut room_sse = Sse::open(addr, ROOM, &short, None).expect("room SSE");
    room_sse.snapshot();
    flow.step(invite("alice", "r1", "bob")).await;
    room_sse.change(3, "invitation_created");
    let end = room_sse.next();
    assert_eq!(end.event, "end", "{end:?}");
    assert_eq!(end.data["error"]["code"], "unauthenticated", "{end:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        room_sse.body.line().expect("read"),
        None,
        "the stream closed"
    );
}

/// `GET /v1/rooms/{room_id}` as a live collection: the room as its snapshot, then each event of the room, so a
/// co-host learns over HTTP that they were moved, muted or removed; resumable with `Last-Event-ID`.
#[tokio::test(flavor = "multi_thread")]
async fn the_room_itself_is_a_live_collection() {
    const STAGE: &str = "/v1/rooms/r1";
    let mut flow = Flow::start().await;
    flow.run([
        post("alice", "/v1/rooms", json!({"room_id": "r1"})).ok(json!({"version": 1})),
        post_empty("alice", "/v1/rooms/r1/live").ok(json!({"version": 2})),
        invite("alice", "r1", "bob").save("/invitation_id", "to_bob"),
        post_empty("bob", "/v1/invitations/{to_bob}/accept"),
    ])
    .await;
    assert_eq!(
        open(&mut flow, "/v1/rooms/r2", "bob", None).err(),
        Some(404)
    );
    assert_eq!(open(&mut flow, STAGE, "bob", Some("x")).err(), Some(400));

    // Anyone the room is visible to follows it: bob, a co-host, does.
    let mut stage = open(&mut flow, STAGE, "bob", None).expect("room SSE");
    let (id, room) = stage.snapshot();
    assert_eq!(id, Some(4));
    assert_eq!(room["version"], 4);
    assert_eq!(room["cohosts"][0]["user_id"], "bob");
    flow.run([
        post(
            "alice",
            "/v1/rooms/r1/cohosts/bob/media",
            json!({"video": false}),
        ),
        post("alice", "/v1/rooms/r1/cohosts/bob/move", json!({"seat": 3})),
    ])
    .await;
    let changes = stage.changes(&[(5, "cohost_media_changed"), (6, "cohost_moved")]);
    assert_eq!(changes[0]["video"], false);
    assert_eq!(
        (changes[1]["seat"].clone(), changes[1]["from_seat"].clone()),
        (json!(3), json!(1))
    );

    // Gone for a while; resumed, it gets exactly what it missed, then live changes.
    drop(stage);
    flow.step(delete("alice", "/v1/rooms/r1/cohosts/bob")).await;
    let mut stage = open(&mut flow, STAGE, "bob", Some("6")).expect("room SSE resumed");
    let removed = stage.change(7, "cohost_removed");
    assert_eq!(
        (removed["user_id"].clone(), removed["reason"].clone()),
        (json!("bob"), json!("host"))
    );
    flow.step(post_empty("alice", "/v1/rooms/r1/stop")).await;
    stage.change(8, "room_stopped");
    // A fresh one shows the room as it is now.
    let (id, room) = open(&mut flow, STAGE, "carol", None)
        .expect("room SSE")
        .snapshot();
    assert_eq!((id, room["status"].clone()), (Some(8), json!("ended")));
}
