//! A store written by an earlier release still opens and replays to the same rooms, events and remembered
//! replies: `vectors/store-vN.txt` holds every key and value a release of layout N wrote for one story (log
//! records with idempotency records, an archived room, a snapshot, the command index, the committed mark), and
//! `vectors/store-vN.json` what the engine answered then. Each pair is written once, by the build that first
//! wrote its layout; a change that stops one from reading back is a format break.
//!
//! To write today's layout's pair (after adding a layout to `LAYOUTS`; earlier pairs are never rewritten):
//!
//! ```text
//! COHOST_BLESS=1 cargo test -p cohost-engine --test log-compat
//! ```

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cohost_engine::{Clock, Config, Engine, ListRequest, ManualClock, Options};
use cohost_proto::{Command, CommandId, Envelope, Invitation, Reply, Room};
use cohost_store::{Backend, Op, SledBackend};
use serde_json::{Value, json};
use support::*;

/// Every layout released so far, oldest first; blessing writes only the last, today's.
const LAYOUTS: [&str; 4] = ["store-v1", "store-v2", "store-v3", "store-v4"];
const TTL_MS: u64 = 300_000;
/// The disconnect grace, from layout 4 on: longer than any stretch an earlier story leaves a co-host away.
const GRACE_MS: u64 = 400_000;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn engine_config(dir: &Path, clock: &Arc<ManualClock>) -> Config {
    let mut config = config(dir, clock);
    config.policy = config.policy.with_disconnect_grace_ms(GRACE_MS).unwrap();
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
        stamp: None,
    });
    t.engine
        .execute(cohost_proto::Actor::System, presence, Options::default())
        .await
        .unwrap();
    t.with_id("alice", remove("stage-1", "bob"), "k-remove")
        .await
        .unwrap();
    stage_controls(t).await;
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

/// The stage controls, from layout 3 on: a moderator, a locked seat, an invitation naming a seat, a move, a
/// mute and a ban with a duration, so the snapshot and the records hold each.
async fn stage_controls(t: &TestEngine) {
    use cohost_proto::{BanUser, CohostMedia, Invite, MoveCohost, SeatTarget, UserTarget};
    let stage = || room("stage-1");
    let target = |name: &str| UserTarget {
        room_id: stage(),
        user_id: user(name),
    };
    t.ok("alice", Command::AddModerator(target("henry"))).await;
    let seat = |seat| SeatTarget {
        room_id: stage(),
        seat,
    };
    t.ok("henry", Command::LockSeat(seat(4))).await;
    let to_seat_3 = Invite {
        room_id: stage(),
        user_id: user("ivy"),
        seat: Some(3),
    };
    t.ok("henry", Command::Invite(to_seat_3)).await;
    t.ok("ivy", accept("stage-1", 6)).await;
    let move_ivy = MoveCohost {
        room_id: stage(),
        user_id: user("ivy"),
        seat: 1,
    };
    t.ok("alice", Command::MoveCohost(move_ivy)).await;
    let mute = CohostMedia {
        room_id: stage(),
        user_id: user("ivy"),
        audio: Some(false),
        video: None,
    };
    t.ok("henry", Command::SetCohostMedia(mute)).await;
    t.ok("judy", request("stage-1")).await;
    let ban = BanUser {
        room_id: stage(),
        user_id: user("judy"),
        duration_s: Some(3_600),
    };
    t.with_id("henry", Command::BanUser(ban), "k-ban")
        .await
        .unwrap();
    t.ok("alice", Command::UnlockSeat(seat(4))).await;
    liveness(t).await;
}

/// From layout 4 on: ivy's presence reported with LiveKit's stamps (a join, then a leave), and the system's
/// removal once she stays away past the grace, so the snapshot holds a seat's liveness.
async fn liveness(t: &TestEngine) {
    let at = t.clock.now_ms();
    for (online, at_ms) in [(true, at), (false, at + 1_000)] {
        let report = cohost_proto::Presence {
            room_id: room("stage-1"),
            user_id: user("ivy"),
            online,
            stamp: Some(cohost_proto::PresenceStamp {
                at_ms,
                participant_sid: "PA_ivy".into(),
            }),
        };
        let system = cohost_proto::Actor::System;
        let reply = t
            .engine
            .execute(system, Command::Presence(report), Options::default());
        reply.await.unwrap();
    }
    t.clock.advance(1_000 + GRACE_MS);
    // A refused command after the clock moved: the engine removes ivy before deciding it.
    t.code("alice", go_live("stage-1")).await;
    let room = t.engine.room(&room("stage-1")).unwrap();
    assert!(room.cohosts.is_empty(), "ivy was removed: {room:?}");
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
    let current = LAYOUTS[LAYOUTS.len() - 1];
    std::fs::write(vectors().join(format!("{current}.txt")), records).unwrap();
    let text = serde_json::to_string_pretty(&answers).unwrap() + "\n";
    std::fs::write(vectors().join(format!("{current}.json")), text).unwrap();
}

#[tokio::test]
async fn a_store_written_by_every_release_opens_and_answers_as_it_did() {
    if std::env::var_os("COHOST_BLESS").is_some() {
        bless().await;
    }
    for layout in LAYOUTS {
        opens_and_answers_as_it_did(layout).await;
    }
}

async fn opens_and_answers_as_it_did(layout: &str) {
    let records = std::fs::read_to_string(vectors().join(format!("{layout}.txt")))
        .expect("the committed store dump (see this file's docs)");
    let text = std::fs::read_to_string(vectors().join(format!("{layout}.json"))).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
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
    // Compared as today's types: the JSON the release answered reads with the fields added since at the
    // values its records upgrade to (proto/README.md, "Versioning").
    assert_eq!(got["last_seq"], expected["last_seq"]);
    same::<Vec<Envelope>>(&got, &expected, "events");
    same::<Vec<Room>>(&got, &expected, "rooms");
    same::<Vec<Vec<Invitation>>>(&got, &expected, "invitations");
    same::<Vec<Invitation>>(&got, &expected, "bob");
    same::<Vec<Reply>>(&got, &expected, "retries");
}

fn same<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    got: &Value,
    expected: &Value,
    key: &str,
) {
    let typed = |value: &Value| -> T {
        serde_json::from_value(value[key].clone())
            .unwrap_or_else(|e| panic!("{key} does not read as today's types: {e}"))
    };
    assert_eq!(
        typed(got),
        typed(expected),
        "{key} differs from what the release answered"
    );
}
