//! A store written by an earlier release still opens and replays to the same rooms, events and remembered
//! replies: `vectors/store-v1.txt` holds every key and value a release wrote for one story (log records with
//! idempotency records, an archived room, a snapshot, the command index, the committed mark), and
//! `vectors/store-v1.json` what the engine answered then. Both were written once, by the build that first wrote
//! the log's `V1` layout; a change that stops them from reading back is a format break.
//!
//! To write them again (only for a new layout, kept beside these, never in their place):
//!
//! ```text
//! COHOST_BLESS=1 cargo test -p cohost-engine --test log-compat
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cohost_engine::{Config, Engine, ListRequest, ManualClock, Options};
use cohost_proto::{Command, CommandId, Reply};
use cohost_store::{Backend, Op, SledBackend};
use serde_json::{Value, json};
use support::*;

const RECORDS: &str = "store-v1.txt";
const ANSWERS: &str = "store-v1.json";
const TTL_MS: u64 = 300_000;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn engine_config(dir: &Path, clock: &Arc<ManualClock>) -> Config {
    let mut config = config(dir, clock);
    // A snapshot among the records, and ended rooms archived at once.
    config.snapshot_every_events = 8;
    config.ended_retention_ms = 0;
    config
}

/// The story: a room through every kind of change, with keyed commands; a second room stopped and archived.
async fn story(t: &TestEngine) {
    t.live_room("stage-1", "alice").await;
    t.with_id("alice", invite("stage-1", "bob"), "k-invite-bob")
        .await
        .unwrap();
    t.with_id("bob", accept("stage-1", 1), "k-accept")
        .await
        .unwrap();
    t.ok("alice", invite("stage-1", "carol")).await;
    t.ok("carol", reject("stage-1", 2)).await;
    t.ok("dave", request("stage-1")).await;
    t.ok("dave", cancel("stage-1", 3)).await;
    t.ok("alice", invite("stage-1", "erin")).await;
    t.clock.advance(TTL_MS + 1);
    t.ok("alice", invite("stage-1", "frank")).await;
    t.ok("frank", accept("stage-1", 5)).await;
    t.ok("frank", leave("stage-1")).await;
    let presence = Command::Presence(cohost_proto::Presence {
        room_id: room("stage-1"),
        user_id: user("bob"),
        online: true,
    });
    t.engine
        .execute(cohost_proto::Actor::System, presence, Options::default())
        .await
        .unwrap();
    t.with_id("alice", remove("stage-1", "bob"), "k-remove")
        .await
        .unwrap();
    t.live_room("stage-2", "gina").await;
    t.ok("gina", invite("stage-2", "bob")).await;
    t.ok("gina", stop("stage-2")).await;
    // A turn after the stop archives stage-2.
    t.ok("alice", invite("stage-1", "bob")).await;
    eventually("stage-2 archived", || {
        let (_, rooms) = t.engine.room_states();
        !rooms.iter().any(|(id, _)| id == &room("stage-2"))
    })
    .await;
}

/// What the engine answers about the story: every event, both rooms, the invitation lists, and the replies to
/// retries of the keyed commands.
async fn answers(engine: &Engine) -> Value {
    let events = engine.read_events(1, 1_000).unwrap();
    let mut retries = Vec::new();
    for (by, command, id) in [
        ("alice", invite("stage-1", "bob"), "k-invite-bob"),
        ("bob", accept("stage-1", 1), "k-accept"),
        ("alice", remove("stage-1", "bob"), "k-remove"),
    ] {
        let options = Options {
            command_id: Some(CommandId::new(id).unwrap()),
            expected_version: None,
        };
        let reply = engine.execute(actor(by), command, options).await.unwrap();
        retries.push(reply_json(&reply));
    }
    let rooms: Vec<Value> = ["stage-1", "stage-2"]
        .iter()
        .map(|name| serde_json::to_value(engine.room(&room(name)).unwrap()).unwrap())
        .collect();
    let lists: Vec<Value> = ["stage-1", "stage-2"]
        .iter()
        .map(|name| {
            let page = engine
                .room_invitations(&room(name), &ListRequest::default())
                .unwrap();
            serde_json::to_value(&page.items).unwrap()
        })
        .collect();
    let bob = engine
        .user_invitations(&user("bob"), &ListRequest::default())
        .map(|page| serde_json::to_value(&page.items).unwrap())
        .unwrap();
    json!({
        "last_seq": engine.last_seq(),
        "events": serde_json::to_value(&events).unwrap(),
        "rooms": rooms,
        "invitations": lists,
        "bob": bob,
        "retries": retries,
    })
}

fn reply_json(reply: &Reply) -> Value {
    serde_json::to_value(reply).unwrap()
}

/// Every key and value of the store in `dir`, hex, one pair a line, after the committed mark.
fn dump(dir: &Path) -> String {
    let (backend, mark) = SledBackend::open(dir, 1 << 20).unwrap();
    mark.unwrap();
    let mut out = format!("committed {}\n", backend.committed().unwrap_or(0));
    let ranges: [(&[u8], &[u8]); 2] = [(&[0], b"S"), (b"S", b"T")];
    for (from, to) in ranges {
        for entry in backend.range(from, to) {
            let (key, value) = entry.unwrap();
            out.push_str(&format!("{} {}\n", hex(&key), hex(&value)));
        }
    }
    out
}

/// A store in `dir` holding exactly the pairs of a dump.
fn restore(text: &str, dir: &Path) {
    let (backend, mark) = SledBackend::open(dir, 1 << 20).unwrap();
    mark.unwrap();
    let mut lines = text.lines();
    let committed: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("committed "))
        .expect("a dump starts with the committed mark")
        .parse()
        .unwrap();
    let ops = lines
        .map(|line| {
            let (key, value) = line.split_once(' ').expect("key and value");
            Op::Put(unhex(key), unhex(value))
        })
        .collect();
    backend.write(ops).unwrap();
    backend.flush().unwrap();
    backend.set_committed(committed).unwrap();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

async fn bless() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = Engine::open(engine_config(dir.path(), &clock)).unwrap();
    let t = TestEngine {
        engine,
        clock,
        dir,
        log: None,
    };
    story(&t).await;
    t.engine.shutdown().await;
    let clock = t.clock.clone();
    let records = dump(t.dir.path());
    // What the engine answers once it has opened the store again, as every later build must.
    let engine = Engine::open(engine_config(t.dir.path(), &clock)).unwrap();
    let answers = answers(&engine).await;
    engine.shutdown().await;
    std::fs::create_dir_all(vectors()).unwrap();
    std::fs::write(vectors().join(RECORDS), records).unwrap();
    let text = serde_json::to_string_pretty(&answers).unwrap() + "\n";
    std::fs::write(vectors().join(ANSWERS), text).unwrap();
}

#[tokio::test]
async fn a_store_written_by_the_first_release_opens_and_answers_as_it_did() {
    if std::env::var_os("COHOST_BLESS").is_some() {
        bless().await;
    }
    let records = std::fs::read_to_string(vectors().join(RECORDS))
        .expect("the committed store dump (see this file's docs)");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors().join(ANSWERS)).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    restore(&records, dir.path());
    let at_ms = expected["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["at_ms"].as_u64())
        .expect("events with times");
    let clock = Arc::new(ManualClock::new(at_ms));
    let engine = Engine::open(engine_config(dir.path(), &clock)).unwrap();
    let got = answers(&engine).await;
    engine.shutdown().await;
    for key in [
        "last_seq",
        "events",
        "rooms",
        "invitations",
        "bob",
        "retries",
    ] {
        assert_eq!(
            got[key], expected[key],
            "{key} differs from what the release answered"
        );
    }
}
