//! Helpers for the engine's tests: an engine on a temp dir with a manual clock, and one-line commands. An engine
//! may also write as cluster mode does ([`open_replicated`]): every batch to a partition log first, the local
//! store a cache of it, and every restart a takeover that rebuilds the store from the log.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use cohost_engine::{Config, Engine, Error, ManualClock, Options};
use cohost_proto::{
    Actor, Command, CommandId, CreateRoom, ErrorCode, InvitationId, InvitationTarget, Invite,
    Reply, RoomId, RoomTarget, UserId, UserTarget,
};

pub const START_MS: u64 = 1_700_000_000_000;
/// A step of `TestEngine::check` that must succeed.
pub const OK: Result<(), ErrorCode> = Ok(());

pub struct TestEngine {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    /// Cluster mode's partition log, when the engine writes through one.
    pub log: Option<Arc<MemoryLog>>,
}

/// A partition log in memory: the batch records every owner appended, in order, with their first seqs; and the
/// base an owner last saved, as cluster mode keeps one in JetStream.
#[derive(Default)]
pub struct MemoryLog {
    records: std::sync::Mutex<Vec<(u64, Vec<u8>)>>,
    base: std::sync::Mutex<Option<cohost_engine::Exported>>,
    /// Set: no base is kept, and every takeover replays the whole log.
    whole: std::sync::atomic::AtomicBool,
}

/// Events between snapshots for an engine writing as cluster mode does: few, so that most restarts start from
/// a base and replay only the log after it.
pub const CLUSTER_SNAPSHOT_EVERY: u64 = 3;

impl cohost_store::Replicator for MemoryLog {
    fn replicate(&self, first_seq: u64, record: &[u8]) -> Result<(), cohost_store::ReplicateError> {
        let mut records = self.records.lock().unwrap();
        let after = records.last().map_or(0, |(first, _)| *first);
        assert!(
            first_seq > after && (after > 0 || first_seq == 1),
            "a batch at seq {first_seq} after one at {after}: each continues the log"
        );
        records.push((first_seq, record.to_vec()));
        Ok(())
    }

    /// A position is the count of records appended so far.
    fn position(&self) -> Option<u64> {
        Some(self.records.lock().unwrap().len() as u64)
    }
}

impl MemoryLog {
    /// Keeps `engine`'s base, as an owner saves one beside the log.
    pub fn save_base(&self, engine: &Engine) {
        if self.whole.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Some(exported) = engine.export_base().expect("a base exports") {
            *self.base.lock().unwrap() = Some(exported);
        }
    }

    /// The seq of the base last saved.
    pub fn base_seq(&self) -> Option<u64> {
        self.base.lock().unwrap().as_ref().map(|e| e.base.seq)
    }

    /// Forgets the base saved and keeps none from now on: every takeover replays the whole log.
    pub fn replay_whole(&self) {
        self.whole.store(true, std::sync::atomic::Ordering::Relaxed);
        *self.base.lock().unwrap() = None;
    }

    /// Takes the partition over in a fresh directory: the local store rebuilt from the last base saved and the
    /// log after it (the whole log without one), then the engine opened on it, appending to the log.
    pub fn take_over(self: &Arc<Self>, clock: &Arc<ManualClock>) -> (Engine, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = cohost_store::Store::open(dir.path()).expect("a fresh store opens");
            let base = self.base.lock().unwrap().clone();
            let records = self.records.lock().unwrap();
            let after = match &base {
                Some(exported) => {
                    store.install_base(&exported.base).expect("a base installs");
                    let after = &records[exported.position as usize..];
                    if let Some((first, _)) = after.first() {
                        assert_eq!(
                            *first,
                            exported.base.seq + 1,
                            "the log after the base continues it"
                        );
                    }
                    after
                }
                None => &records[..],
            };
            for (_, record) in after {
                store
                    .append_replicated(record)
                    .expect("the log's records continue each other");
            }
            store.flush_replicated().expect("the catch-up flushes");
        }
        let mut config = config(dir.path(), clock);
        config.replicator = Some(self.clone());
        config.snapshot_every_events = CLUSTER_SNAPSHOT_EVERY;
        (Engine::open(config).expect("engine opens"), dir)
    }
}

/// `open` and `live` for engines that write as cluster mode does; a test root imports them by name, which
/// shadows the single-node ones its glob import brings.
pub mod cluster {
    use super::TestEngine;

    pub fn open() -> TestEngine {
        super::open_replicated()
    }

    pub async fn live(rooms: &[(&str, &str)]) -> TestEngine {
        super::with_live_rooms(open(), rooms).await
    }
}

/// An engine that writes as cluster mode does: every batch to a partition log first.
pub fn open_replicated() -> TestEngine {
    let clock = Arc::new(ManualClock::new(START_MS));
    let log = Arc::new(MemoryLog::default());
    let (engine, dir) = log.take_over(&clock);
    TestEngine {
        engine,
        clock,
        dir,
        log: Some(log),
    }
}

pub fn config(dir: &Path, clock: &Arc<ManualClock>) -> Config {
    Config::new(dir).with_clock(clock.clone())
}

/// An engine in `dir` on `clock`, its config as `tweak` leaves the default one.
pub fn open_configured(
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut Config),
) -> TestEngine {
    let mut config = config(dir.path(), &clock);
    tweak(&mut config);
    TestEngine {
        engine: Engine::open(config).expect("engine opens"),
        clock,
        dir,
        log: None,
    }
}

pub fn open() -> TestEngine {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = Engine::open(config(dir.path(), &clock)).expect("engine opens");
    TestEngine {
        engine,
        clock,
        dir,
        log: None,
    }
}

/// An engine with each `(room, host)` created and live.
pub async fn live(rooms: &[(&str, &str)]) -> TestEngine {
    with_live_rooms(open(), rooms).await
}

/// `t` with each `(room, host)` created and live.
pub async fn with_live_rooms(t: TestEngine, rooms: &[(&str, &str)]) -> TestEngine {
    for (room, host) in rooms {
        t.live_room(room, host).await;
    }
    t
}

impl TestEngine {
    /// Shuts down and opens the same directory again, keeping the clock; in cluster mode, takes the
    /// partition over in a fresh directory.
    pub async fn restart(self) -> TestEngine {
        if let Some(log) = &self.log {
            log.save_base(&self.engine);
        }
        self.engine.shutdown().await;
        if let Some(log) = self.log {
            let (engine, dir) = log.take_over(&self.clock);
            return TestEngine {
                engine,
                clock: self.clock,
                dir,
                log: Some(log),
            };
        }
        let engine = Engine::open(config(self.dir.path(), &self.clock)).expect("engine reopens");
        TestEngine {
            engine,
            clock: self.clock,
            dir: self.dir,
            log: None,
        }
    }

    pub async fn run(&self, by: &str, command: Command) -> Result<Reply, Error> {
        self.engine
            .execute(actor(by), command, Options::default())
            .await
    }

    pub async fn ok(&self, by: &str, command: Command) -> Reply {
        let name = command.name();
        self.run(by, command)
            .await
            .unwrap_or_else(|e| panic!("{name} by {by} failed: {e}"))
    }

    pub async fn code(&self, by: &str, command: Command) -> ErrorCode {
        let name = command.name();
        match self.run(by, command).await {
            Ok(reply) => panic!("{name} by {by} should fail, got {reply:?}"),
            Err(error) => error.code(),
        }
    }

    pub async fn with_id(&self, by: &str, command: Command, id: &str) -> Result<Reply, Error> {
        self.run_with(by, command, Some(id), None).await
    }

    pub async fn run_with(
        &self,
        by: &str,
        command: Command,
        command_id: Option<&str>,
        expected_version: Option<u64>,
    ) -> Result<Reply, Error> {
        let options = Options {
            command_id: command_id.map(|id| CommandId::new(id).unwrap()),
            expected_version,
        };
        self.engine.execute(actor(by), command, options).await
    }

    /// Runs each step in order; each must succeed (`OK`) or fail with the code given.
    pub async fn check(&self, steps: &[(&str, Command, Result<(), ErrorCode>)]) {
        for (by, command, want) in steps {
            let got = self.run(by, command.clone()).await;
            assert_eq!(
                got.as_ref().map(drop).map_err(|e| e.code()),
                *want,
                "{} by {by}: {got:?}",
                command.name()
            );
        }
    }

    /// A live room hosted by `host`.
    pub async fn live_room(&self, room: &str, host: &str) {
        self.ok(host, create(room)).await;
        self.ok(host, go_live(room)).await;
    }
}

pub fn actor(name: &str) -> Actor {
    if name == "system" {
        Actor::System
    } else {
        Actor::User(user(name))
    }
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

pub fn room(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

pub fn invitation(room_name: &str, n: u64) -> InvitationId {
    InvitationId::new(room(room_name), n).unwrap()
}

pub fn create(room_name: &str) -> Command {
    Command::CreateRoom(CreateRoom {
        room_id: room(room_name),
        title: Some("show".into()),
        max_cohosts: None,
    })
}

pub fn go_live(room_name: &str) -> Command {
    Command::GoLive(RoomTarget {
        room_id: room(room_name),
    })
}

pub fn stop(room_name: &str) -> Command {
    Command::StopRoom(RoomTarget {
        room_id: room(room_name),
    })
}

pub fn invite(room_name: &str, candidate: &str) -> Command {
    Command::Invite(Invite {
        room_id: room(room_name),
        user_id: user(candidate),
        seat: None,
    })
}

pub fn request(room_name: &str) -> Command {
    Command::RequestToJoin(
        RoomTarget {
            room_id: room(room_name),
        }
        .into(),
    )
}

fn target(room_name: &str, n: u64) -> InvitationTarget {
    InvitationTarget {
        invitation_id: invitation(room_name, n),
    }
}

pub fn accept(room_name: &str, n: u64) -> Command {
    Command::AcceptInvitation(target(room_name, n))
}

pub fn reject(room_name: &str, n: u64) -> Command {
    Command::RejectInvitation(target(room_name, n))
}

pub fn cancel(room_name: &str, n: u64) -> Command {
    Command::CancelInvitation(target(room_name, n))
}

pub fn remove(room_name: &str, candidate: &str) -> Command {
    Command::RemoveCohost(UserTarget {
        room_id: room(room_name),
        user_id: user(candidate),
    })
}

pub fn leave(room_name: &str) -> Command {
    Command::LeaveStage(RoomTarget {
        room_id: room(room_name),
    })
}

/// Waits (in real time, bounded) until `check` holds.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
