//! Ended rooms leave memory a retention after they end, and everything still answers as before: reads come
//! from the room's archive, the id stays taken (`already_exists`), commands on it get the codes they got while
//! it was in memory, and all of it holds across a restart.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use cohost_core::{Context, Policy, RoomState, apply, decide};
use cohost_engine::sequencer::EVICT_MAX;
use cohost_engine::{Config, Engine, Interest, ListRequest, ManualClock};
use cohost_proto::{Command, Envelope, ErrorCode, Event, InvitationStatus, RoomStatus};
use support::*;

const RETENTION_MS: u64 = 60_000;

fn open_with_retention(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let mut config = Config::new(dir).with_clock(clock.clone());
    config.ended_retention_ms = RETENTION_MS;
    Engine::open(config).unwrap()
}

fn held(engine: &Engine, name: &str) -> bool {
    engine
        .room_states()
        .1
        .iter()
        .any(|(id, _)| id == &room(name))
}

/// alice's room `gone` with bob seated and carol's invitation pending, then stopped; and `stays`, live.
async fn ended_room(t: &TestEngine) {
    t.live_room("gone", "alice").await;
    t.ok("alice", invite("gone", "bob")).await;
    t.ok("bob", accept("gone", 1)).await;
    t.ok("alice", invite("gone", "carol")).await;
    t.ok("alice", stop("gone")).await;
    t.live_room("stays", "dave").await;
}

#[tokio::test]
async fn an_ended_room_leaves_memory_and_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let t = TestEngine {
        engine: open_with_retention(dir.path(), &clock),
        clock: clock.clone(),
        dir,
        log: None,
    };
    ended_room(&t).await;
    let before = answers(&t).await;
    assert!(held(&t.engine, "gone"));
    // Within the retention it stays; past it, the next turn of the engine archives it.
    clock.advance(RETENTION_MS - 1);
    t.ok("dave", invite("stays", "erin")).await;
    assert!(held(&t.engine, "gone"));
    clock.advance(2);
    t.ok("dave", invite("stays", "frank")).await;
    eventually("the ended room leaves memory", || !held(&t.engine, "gone")).await;
    assert!(held(&t.engine, "stays"), "a live room stays");
    assert_eq!(
        answers(&t).await,
        before,
        "the same answers from the archive"
    );
    commands_still_refused(&t).await;
    let t = t.restart().await;
    assert!(
        !held(&t.engine, "gone"),
        "an archived room is not loaded at open"
    );
    assert_eq!(
        answers(&t).await,
        before,
        "the same answers after a restart"
    );
    commands_still_refused(&t).await;
}

/// Everything a reader can ask of the ended room.
async fn answers(t: &TestEngine) -> Vec<String> {
    let engine = &t.engine;
    let room_id = room("gone");
    let list = engine
        .room_invitations(&room_id, &ListRequest::default())
        .unwrap();
    let events = engine.read_room(&room_id, 1, 100).unwrap();
    let watch = engine
        .watch_room_invitations(&room_id, &ListRequest::default())
        .unwrap();
    let mut follow = engine.subscribe(1, Interest::Room(room_id.clone()));
    let mut followed = Vec::new();
    for _ in 0..events.len() {
        followed.push(follow.next().await.unwrap().unwrap());
    }
    assert_eq!(followed, events);
    vec![
        format!("{:?}", engine.room(&room_id).unwrap()),
        format!("{list:?}"),
        format!("{events:?}"),
        format!("{:?} {:?}", watch.snapshot, watch.room_version),
        format!(
            "{:?}",
            engine
                .broadcaster_entitlement(&room_id, &user("bob"))
                .map_err(|e| e.code())
        ),
        format!(
            "{:?}",
            engine
                .broadcaster_entitlement(&room_id, &user("alice"))
                .map_err(|e| e.code())
        ),
    ]
}

/// The rules still see the room: its id is taken, and it has ended.
async fn commands_still_refused(t: &TestEngine) {
    t.check(&[
        ("zoe", create("gone"), Err(ErrorCode::AlreadyExists)),
        ("alice", stop("gone"), Err(ErrorCode::FailedPrecondition)),
        (
            "alice",
            invite("gone", "zoe"),
            Err(ErrorCode::FailedPrecondition),
        ),
        (
            "carol",
            accept("gone", 2),
            Err(ErrorCode::FailedPrecondition),
        ),
        (
            "alice",
            remove("gone", "bob"),
            Err(ErrorCode::FailedPrecondition),
        ),
        ("bob", leave("gone"), Err(ErrorCode::FailedPrecondition)),
    ])
    .await;
    let carol = t
        .engine
        .room_invitations(&room("gone"), &ListRequest::default())
        .unwrap()
        .items
        .into_iter()
        .find(|i| i.user_id == user("carol"))
        .unwrap();
    assert_eq!(carol.status, InvitationStatus::Cancelled);
}

/// A log written before ended rooms were final: `old` stopped with bob still seated, and LiveKit's presence
/// reports after room_stopped were appended, after enough other rooms ended that opening archives `old` before
/// it meets them. It loads the room back for them and archives it again: every event stays readable, and the
/// seat stays as it ended.
#[tokio::test]
async fn opening_an_older_log_keeps_events_after_room_stopped() {
    let mut old = OlderLog::default();
    old.run("old", "alice", create("old"));
    old.run("old", "alice", go_live("old"));
    old.run("old", "alice", invite("old", "bob"));
    old.run("old", "bob", accept("old", 1));
    let mut stopped = old.rooms["old"].room().unwrap().clone();
    stopped.status = RoomStatus::Ended;
    stopped.version += 1;
    old.push(
        "old",
        Event::RoomStopped {
            room: stopped,
            reason: cohost_proto::StopReason::Host,
        },
    );
    for n in 0..EVICT_MAX {
        let name = format!("filler-{n}");
        old.run(&name, "carol", create(&name));
        old.run(&name, "carol", stop(&name));
    }
    for (who, online) in [("alice", false), ("bob", true)] {
        let user_id = user(who);
        old.push(
            "old",
            Event::PresenceChanged {
                user_id,
                online,
                stamp: None,
            },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    cohost_store::Store::open(dir.path())
        .unwrap()
        .append(&old.log, &[])
        .unwrap();
    let events: Vec<Envelope> = old
        .log
        .iter()
        .filter(|e| e.room_id == room("old"))
        .cloned()
        .collect();

    let clock = Arc::new(ManualClock::new(START_MS + 10 * RETENTION_MS));
    let mut t = TestEngine {
        engine: open_with_retention(dir.path(), &clock),
        clock,
        dir,
        log: None,
    };
    for reopened in [false, true] {
        assert!(!held(&t.engine, "old"), "archived at open");
        assert_eq!(
            t.engine.read_room(&room("old"), 1, 100).unwrap(),
            events,
            "every event, reopened {reopened}"
        );
        let ended = t.engine.room(&room("old")).unwrap();
        assert_eq!(ended.status, RoomStatus::Ended);
        assert_eq!(ended.version, events.len() as u64);
        assert_eq!(ended.cohosts.len(), 1, "the seat stays as it ended");
        t.check(&[
            (
                "alice",
                remove("old", "bob"),
                Err(ErrorCode::FailedPrecondition),
            ),
            ("bob", leave("old"), Err(ErrorCode::FailedPrecondition)),
        ])
        .await;
        t = t.restart().await;
    }
}

/// A log built event by event, as an earlier engine may have written it.
#[derive(Default)]
struct OlderLog {
    rooms: HashMap<String, RoomState>,
    log: Vec<Envelope>,
}

impl OlderLog {
    fn run(&mut self, name: &str, by: &str, command: Command) {
        let by = actor(by);
        let ctx = Context::new(&by, START_MS, Policy::default());
        let state = self.rooms.entry(name.to_owned()).or_default();
        for event in decide(state, &command, &ctx).unwrap() {
            self.push(name, event);
        }
    }

    fn push(&mut self, name: &str, event: Event) {
        let state = self.rooms.entry(name.to_owned()).or_default();
        apply(state, &event);
        self.log.push(Envelope {
            seq: self.log.len() as u64 + 1,
            room_id: room(name),
            version: state.version(),
            at_ms: START_MS,
            actor: None,
            service: None,
            command_id: None,
            event,
        });
    }
}
