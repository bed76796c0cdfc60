//! What the relay's tests share: commands one line each, the seed flow, engines and relays, waiting with a
//! deadline, and reading back what the JetStream stream holds.

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_nats::relay::{Relay, RelayConfig};
use cohost_proto::subject::header;
use cohost_proto::{
    Actor, Command, CreateRoom, Envelope, InvitationId, InvitationTarget, RoomId, RoomTarget,
    UserId, UserTarget,
};

pub fn actor(name: &str) -> Actor {
    Actor::User(UserId::new(name).unwrap())
}

pub fn room_id(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

pub fn open_engine(dir: &std::path::Path) -> Engine {
    Engine::open(Config::new(dir).with_clock(Arc::new(ManualClock::new(1_700_000_000_000))))
        .unwrap()
}

/// Runs each (who, command) step in order; every one must succeed.
pub async fn run<'a>(engine: &Engine, steps: impl IntoIterator<Item = (&'a str, Command)>) {
    for (by, command) in steps {
        let name = command.name();
        let executed = engine.execute(actor(by), command, Options::default()).await;
        executed.unwrap_or_else(|e| panic!("{name} by {by}: {e}"));
    }
}

pub fn room_target(room: &str) -> RoomTarget {
    RoomTarget {
        room_id: room_id(room),
    }
}

pub fn user_target(room: &str, user: &str) -> UserTarget {
    UserTarget {
        room_id: room_id(room),
        user_id: UserId::new(user).unwrap(),
    }
}

pub fn invitation(room: &str, n: u64) -> InvitationTarget {
    InvitationTarget {
        invitation_id: InvitationId::new(room_id(room), n).unwrap(),
    }
}

pub fn create(room: &str, title: Option<&str>) -> Command {
    Command::CreateRoom(CreateRoom {
        room_id: room_id(room),
        title: title.map(Into::into),
        max_cohosts: None,
    })
}

/// create, go live, invite, accept, invite another, reject, cancel, remove, stop.
pub async fn seed_flow(engine: &Engine, room: &str) {
    let script = [
        ("alice", create(room, Some("Friday show"))),
        ("alice", Command::GoLive(room_target(room))),
        ("alice", Command::Invite(user_target(room, "bob").into())),
        ("bob", Command::AcceptInvitation(invitation(room, 1))),
        ("alice", Command::Invite(user_target(room, "carol").into())),
        ("carol", Command::RejectInvitation(invitation(room, 2))),
        ("alice", Command::Invite(user_target(room, "dave").into())),
        ("alice", Command::CancelInvitation(invitation(room, 3))),
        ("alice", Command::RemoveCohost(user_target(room, "bob"))),
        ("alice", Command::StopRoom(room_target(room))),
    ];
    run(engine, script).await;
}

pub async fn start_relay(
    engine: &Engine,
    client: &async_nats::Client,
    config: RelayConfig,
) -> Relay {
    Relay::start(engine.clone(), client.clone(), config)
        .await
        .unwrap()
}

/// Waits until `check` holds, up to 10 s; no test waits for a fixed time.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every message in the stream, in stream order: (subject, Nats-Msg-Id, payload seq).
pub async fn stream_contents(url: &str) -> Vec<(String, String, u64)> {
    let client = async_nats::connect(url).await.unwrap();
    let context = jetstream::new(client);
    let mut stream = context.get_stream("COHOST").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let msg_id = message
            .headers
            .get(header::MSG_ID)
            .unwrap()
            .as_str()
            .to_owned();
        let seq: u64 = message
            .headers
            .get(header::SEQ)
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        out.push((message.subject.to_string(), msg_id, seq));
    }
    out
}

/// Checks the stream holds each event's messages exactly once, in seq order.
pub fn assert_exactly_once(contents: &[(String, String, u64)], log: &[Envelope]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, msg_id, _) in contents {
        *seen.entry(msg_id).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "messages stored more than once: {repeated:?}"
    );
    let expected: usize = log
        .iter()
        .map(|e| 1 + usize::from(e.event.candidate().is_some()))
        .sum();
    assert_eq!(
        contents.len(),
        expected,
        "every event's messages, once each"
    );
    assert!(
        contents.windows(2).all(|w| w[0].2 <= w[1].2),
        "stream order follows seq"
    );
}

pub async fn read_all(engine: &Engine) -> Vec<Envelope> {
    let mut log = Vec::new();
    loop {
        let chunk = engine.read_events(log.len() as u64 + 1, 1_000).unwrap();
        if chunk.is_empty() {
            return log;
        }
        log.extend(chunk);
    }
}
