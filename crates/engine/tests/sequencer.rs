//! The sequencer state machine, driven step by step with no thread or clock: commands and time in, each batch
//! made durable (or failed) on an in-memory disk through the engine's own `driver`, answers out. Each case is
//! a script and the answers it must give.

mod support;

use std::collections::BTreeMap;
use std::sync::RwLock;

use cohost_core::Policy;
use cohost_engine::driver;
use cohost_engine::sequencer::{Health, Sequencer, SequencerConfig, Submission};
use cohost_engine::{Error, Options, ReadModel};
use cohost_proto::{CommandId, ErrorCode, Event, InvitationStatus, Reply, RoomId};
use cohost_store::{MemoryBackend, Store};
use support::{
    START_MS, accept, actor, cancel, create, go_live, invitation, invite, reject, room, stop,
};

const TTL_MS: u64 = 60_000;

/// What happens to the first batch a `Run` makes; later ones in the same run become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Durable,
    FailWrite,
    FailFlush,
}

/// One input. Commands are numbered 1, 2, … in the order they appear; answers are named by that number.
#[derive(Debug, Clone)]
enum In {
    /// A command by a user (or "system").
    Cmd(&'static str, cohost_proto::Command),
    /// The same, with a `command_id`.
    Keyed(&'static str, cohost_proto::Command, &'static str),
    /// The clock reads this many ms after the start.
    At(u64),
    /// One turn of the driver, as `writer.rs` takes it: due expiries, then the commands that came since the
    /// last turn, then every batch until the queue is empty.
    Run(Io),
}

use In::*;

/// What an answer must be: `Ok` or an error code.
type Expect = Result<(), ErrorCode>;
const OK: Expect = Ok(());

struct Harness {
    sequencer: Sequencer<u32>,
    backend: MemoryBackend,
    store: Store,
    read: RwLock<ReadModel>,
    now_ms: u64,
    next: u32,
    /// Commands sent since the last turn, as the channel holds them.
    inbox: Vec<Submission<u32>>,
    answers: BTreeMap<u32, Result<Reply, Error>>,
}

fn config() -> SequencerConfig {
    SequencerConfig {
        policy: Policy::new(TTL_MS, 2).unwrap(),
        ..SequencerConfig::default()
    }
}

impl Harness {
    fn new(config: SequencerConfig) -> Self {
        let backend = MemoryBackend::new();
        let store = Store::with_backend(Box::new(backend.clone())).unwrap();
        Self {
            sequencer: Sequencer::new(config),
            backend,
            store,
            read: RwLock::new(ReadModel::default()),
            now_ms: START_MS,
            next: 1,
            inbox: Vec::new(),
            answers: BTreeMap::new(),
        }
    }

    fn feed(&mut self, input: &In) {
        match input {
            Cmd(by, command) => self.submit(by, command, None),
            Keyed(by, command, id) => self.submit(by, command, Some(id)),
            At(ms) => self.now_ms = START_MS + ms,
            Run(io) => self.run(*io),
        }
    }

    fn submit(&mut self, by: &str, command: &cohost_proto::Command, id: Option<&str>) {
        let options = Options {
            command_id: id.map(|id| CommandId::new(id).unwrap()),
            expected_version: None,
        };
        self.inbox.push(Submission {
            actor: actor(by),
            command: command.clone(),
            options,
            reply_to: self.next,
        });
        self.next += 1;
    }

    fn run(&mut self, io: Io) {
        match io {
            Io::Durable => {}
            Io::FailWrite => self.backend.fail_writes(1),
            Io::FailFlush => self.backend.fail_flushes(1),
        }
        self.sequencer.handle_timeout(self.now_ms);
        for submission in std::mem::take(&mut self.inbox) {
            self.sequencer.handle_command(self.now_ms, submission);
        }
        while let Some(batch) = self.sequencer.poll_batch() {
            let _ = driver::commit(&mut self.sequencer, &batch, &self.store, &self.read);
        }
        self.backend.fail_writes(0);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some((ticket, answer)) = self.sequencer.poll_reply() {
            let outcome = driver::resolve(answer, &self.store);
            assert!(
                self.answers.insert(ticket, outcome).is_none(),
                "one answer per command"
            );
        }
    }

    fn durable_events(&self) -> Vec<Event> {
        self.store
            .read_events(1, 1_000)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    /// How many durable events `wanted` picks.
    fn durable_count(&self, wanted: impl Fn(&Event) -> bool) -> usize {
        self.durable_events().iter().filter(|e| wanted(e)).count()
    }

    fn status(&self, n: u64) -> InvitationStatus {
        let read = self.read.read().unwrap();
        let state = read.room_state(&room("stage")).expect("the room exists");
        state
            .invitation(&invitation("stage", n))
            .expect("held")
            .status
    }
}

/// Alice's live room "stage" with bob invited (invitation 1), all durable; command numbers start after it.
fn live_room_with_bob(config: SequencerConfig) -> Harness {
    let mut h = Harness::new(config);
    for input in [
        Cmd("alice", create("stage")),
        Cmd("alice", go_live("stage")),
        Cmd("alice", invite("stage", "bob")),
        Run(Io::Durable),
    ] {
        h.feed(&input);
    }
    assert!(h.answers.values().all(Result::is_ok), "{:?}", h.answers);
    h.answers.clear();
    h.next = 1;
    h
}

fn check(script: &[In], then: &[(u32, Expect)]) -> Harness {
    check_with(config(), script, then)
}

fn check_with(config: SequencerConfig, script: &[In], then: &[(u32, Expect)]) -> Harness {
    let mut h = live_room_with_bob(config);
    for input in script {
        h.feed(input);
    }
    let got: Vec<(u32, Expect)> = h
        .answers
        .iter()
        .map(|(n, outcome)| (*n, outcome.as_ref().map(drop).map_err(|e| e.code())))
        .collect();
    assert_eq!(got, then, "script {script:?}");
    h
}

/// A cancel and an accept of bob's invitation in one batch (the first wins), then `more`.
fn cancel_and_accept<const N: usize>(more: [In; N]) -> Vec<In> {
    let race = [
        Cmd("alice", cancel("stage", 1)),
        Cmd("bob", accept("stage", 1)),
    ];
    race.into_iter().chain(more).collect()
}

const UNAVAILABLE: Expect = Err(ErrorCode::Unavailable);

#[test]
fn a_cancel_and_an_accept_in_one_batch_the_first_wins() {
    let h = check(
        &cancel_and_accept([Run(Io::Durable)]),
        &[(1, OK), (2, Err(ErrorCode::FailedPrecondition))],
    );
    assert_eq!(h.status(1), InvitationStatus::Cancelled);
}

#[test]
fn a_failed_write_answers_every_command_unavailable_rejections_included() {
    let h = check(
        &cancel_and_accept([
            Run(Io::FailWrite),
            // The state went back to what is durable: the invitation is pending, and an accept now wins.
            Cmd("bob", accept("stage", 1)),
            Run(Io::Durable),
        ]),
        &[(1, UNAVAILABLE), (2, UNAVAILABLE), (3, OK)],
    );
    assert_eq!(h.status(1), InvitationStatus::Approved);
    assert_eq!(*h.sequencer.health(), Health::Serving);
}

#[test]
fn a_failed_flush_stops_the_sequencer() {
    let mut h = check(
        &cancel_and_accept([
            Run(Io::FailFlush),
            // Refused at once from now on.
            Cmd("bob", accept("stage", 1)),
            Cmd("alice", invite("stage", "carol")),
            Run(Io::Durable),
        ]),
        &[
            (1, UNAVAILABLE),
            (2, UNAVAILABLE),
            (3, UNAVAILABLE),
            (4, UNAVAILABLE),
        ],
    );
    let Health::Failed { cause } = h.sequencer.health().clone() else {
        panic!("a failed flush is fail-stop");
    };
    assert!(cause.contains("injected flush failure"), "{cause}");
    assert_eq!(h.sequencer.poll_batch(), None);
    assert_eq!(h.sequencer.poll_timeout(), None, "no timer runs either");
    assert_eq!(
        h.status(1),
        InvitationStatus::Pending,
        "readers keep the durable state"
    );
}

#[test]
fn commands_that_append_nothing_are_answered_without_a_batch() {
    let h = check(
        &[
            Cmd("carol", cancel("stage", 1)),
            Cmd("alice", go_live("stage")),
            Cmd("alice", reject("stage", 1)),
            Run(Io::FailWrite),
        ],
        &[
            (1, Err(ErrorCode::PermissionDenied)),
            (2, Err(ErrorCode::FailedPrecondition)),
            (3, Err(ErrorCode::PermissionDenied)),
        ],
    );
    assert_eq!(
        h.backend.stats().writes,
        2,
        "the format and the set-up batch; nothing more"
    );
}

#[test]
fn a_failed_batch_takes_back_the_room_it_created() {
    check(
        &[
            Cmd("dave", create("other")),
            Run(Io::FailWrite),
            Cmd("dave", go_live("other")),
            Run(Io::Durable),
            Cmd("dave", create("other")),
            Run(Io::Durable),
        ],
        &[(1, UNAVAILABLE), (2, Err(ErrorCode::NotFound)), (3, OK)],
    );
}

#[test]
fn a_retry_after_unavailable_lands_once_and_then_repeats_its_first_reply() {
    let h = check(
        &[
            Keyed("alice", invite("stage", "carol"), "k1"),
            Run(Io::FailWrite),
            Keyed("alice", invite("stage", "carol"), "k1"),
            Run(Io::Durable),
            Keyed("alice", invite("stage", "carol"), "k1"),
            Run(Io::Durable),
            Keyed("alice", invite("stage", "dave"), "k1"),
            Run(Io::Durable),
        ],
        &[
            (1, UNAVAILABLE),
            (2, OK),
            (3, OK),
            (4, Err(ErrorCode::Conflict)),
        ],
    );
    assert_eq!(
        h.answers[&2], h.answers[&3],
        "the first reply, read back from the log"
    );
    let created = h.durable_count(|e| matches!(e, Event::InvitationCreated { .. }));
    assert_eq!(created, 2, "bob's and carol's invitations, carol's once");
}

#[test]
fn a_retry_in_the_same_batch_appends_nothing_more() {
    let h = check(
        &[
            Keyed("alice", invite("stage", "carol"), "k1"),
            Keyed("alice", invite("stage", "carol"), "k1"),
            Run(Io::Durable),
        ],
        &[(1, OK), (2, OK)],
    );
    assert_eq!(h.answers[&1], h.answers[&2]);
    assert_eq!(h.durable_events().len(), 4);
}

#[test]
fn due_expiries_are_decided_before_the_commands_of_their_turn() {
    let h = check(
        &[
            At(TTL_MS),
            Cmd("alice", cancel("stage", 1)),
            Run(Io::Durable),
        ],
        &[(1, Err(ErrorCode::FailedPrecondition))],
    );
    assert_eq!(h.status(1), InvitationStatus::Expired);
}

#[test]
fn an_answer_taken_back_by_a_failed_batch_keeps_its_invitation_expiring() {
    let h = check(
        &[
            At(1_000),
            Cmd("alice", cancel("stage", 1)),
            Run(Io::FailWrite),
            At(TTL_MS - 1),
            Run(Io::Durable),
            At(TTL_MS),
            Run(Io::Durable),
        ],
        &[(1, UNAVAILABLE)],
    );
    assert_eq!(
        h.status(1),
        InvitationStatus::Expired,
        "the timer was armed again"
    );
    let expired = h.durable_count(|e| matches!(e, Event::InvitationExpired { .. }));
    assert_eq!(
        expired, 1,
        "expired once, however often the timer was armed"
    );
}

#[test]
fn batches_hold_at_most_batch_max_commands() {
    let config = SequencerConfig {
        batch_max: 2,
        ..config()
    };
    let h = check_with(
        config,
        &[
            Cmd("alice", invite("stage", "carol")),
            Cmd("alice", invite("stage", "dave")),
            Cmd("alice", invite("stage", "erin")),
            Run(Io::FailWrite),
        ],
        &[(1, UNAVAILABLE), (2, UNAVAILABLE), (3, OK)],
    );
    // Only the first batch failed; the second was decided against the state it left behind.
    assert_eq!(h.durable_events().len(), 4);
    assert_eq!(h.status(2), InvitationStatus::Pending, "erin's is number 2");
}

#[test]
fn a_full_queue_answers_unavailable_at_once() {
    let config = SequencerConfig {
        queue_max: 3,
        ..config()
    };
    check_with(
        config,
        &[
            Cmd("alice", invite("stage", "carol")),
            Cmd("alice", invite("stage", "dave")),
            Cmd("alice", invite("stage", "erin")),
            Cmd("alice", invite("stage", "frank")),
            Run(Io::Durable),
        ],
        &[(1, OK), (2, OK), (3, OK), (4, UNAVAILABLE)],
    );
}

#[test]
fn snapshots_come_due_by_events_and_never_while_a_batch_is_in_flight() {
    let config = SequencerConfig {
        snapshot_every_events: 4,
        ..config()
    };
    let mut h = live_room_with_bob(config);
    assert_eq!(h.sequencer.poll_snapshot(), None, "3 events so far");
    h.feed(&Cmd("alice", invite("stage", "carol")));
    let submission = h.inbox.pop().unwrap();
    h.sequencer.handle_command(h.now_ms, submission);
    let batch = h.sequencer.poll_batch().expect("a batch");
    assert_eq!(h.sequencer.poll_snapshot(), None, "in flight");
    driver::commit(&mut h.sequencer, &batch, &h.store, &h.read).unwrap();
    let request = h.sequencer.poll_snapshot().expect("4 events: due");
    assert_eq!(request.seq, 4);
    driver::snapshot(&mut h.sequencer, request, &h.store, &h.read);
    assert_eq!(h.sequencer.snapshot_seq(), 4);
    let stored = h.store.snapshots().unwrap();
    assert_eq!(stored.seq, 4);
    let rooms: Vec<&RoomId> = stored.rooms.iter().map(|(id, _)| id).collect();
    assert_eq!(
        rooms,
        [&RoomId::new("stage").unwrap()],
        "every room in memory"
    );
    assert_eq!(h.sequencer.poll_snapshot(), None, "nothing changed since");
}

#[test]
fn a_failed_expiry_is_tried_again_after_the_retry_interval_not_at_once() {
    use cohost_engine::sequencer::RETRY_AFTER_FAILURE_MS;
    let mut h = live_room_with_bob(config());
    h.feed(&At(TTL_MS));
    // The batch's write fails; taking it back succeeds, so the sequencer goes on.
    h.backend.fail_writes(1);
    h.sequencer.handle_timeout(h.now_ms);
    let mut tries = 0;
    while let Some(batch) = h.sequencer.poll_batch() {
        tries += 1;
        assert!(driver::commit(&mut h.sequencer, &batch, &h.store, &h.read).is_err());
        assert!(
            tries < 10,
            "the failed expiry is retried at once, again and again"
        );
    }
    assert_eq!(tries, 1);
    assert_eq!(
        h.sequencer.poll_timeout(),
        Some(START_MS + TTL_MS + RETRY_AFTER_FAILURE_MS),
        "the expiry waits for the retry interval"
    );
    assert_eq!(h.status(1), InvitationStatus::Pending);
    h.backend.fail_writes(0);
    h.feed(&At(TTL_MS + RETRY_AFTER_FAILURE_MS));
    h.feed(&Run(Io::Durable));
    assert_eq!(h.status(1), InvitationStatus::Expired);
}

#[test]
fn a_failed_archive_is_tried_again_after_the_retry_interval_ahead_of_rooms_due_later() {
    use cohost_engine::sequencer::RETRY_AFTER_FAILURE_MS;
    const RETENTION_MS: u64 = 60_000;
    let mut h = Harness::new(SequencerConfig {
        ended_retention_ms: RETENTION_MS,
        ..config()
    });
    for (at, name) in [(0, "early"), (RETENTION_MS / 2, "later")] {
        h.feed(&At(at));
        h.feed(&Cmd("alice", create(name)));
        h.feed(&Cmd("alice", stop(name)));
        h.feed(&Run(Io::Durable));
    }
    assert!(h.answers.values().all(Result::is_ok), "{:?}", h.answers);
    let held = |h: &Harness, name: &str| h.sequencer.holds(&room(name));
    h.feed(&At(RETENTION_MS));
    h.sequencer.handle_timeout(h.now_ms);
    h.backend.fail_writes(1);
    driver::evict(&mut h.sequencer, &h.store, &h.read);
    h.backend.fail_writes(0);
    assert!(held(&h, "early"), "its archive was not written");
    driver::evict(&mut h.sequencer, &h.store, &h.read);
    assert!(held(&h, "early"), "not tried again at once");
    h.feed(&At(RETENTION_MS + RETRY_AFTER_FAILURE_MS));
    h.sequencer.handle_timeout(h.now_ms);
    driver::evict(&mut h.sequencer, &h.store, &h.read);
    assert!(!held(&h, "early"), "archived at the retry");
    assert!(held(&h, "later"), "due later");
}

#[test]
fn ended_rooms_leave_memory_while_the_sequencer_stays_busy_but_not_a_room_a_queued_command_names() {
    const RETENTION_MS: u64 = 60_000;
    let mut h = Harness::new(SequencerConfig {
        ended_retention_ms: RETENTION_MS,
        ..config()
    });
    for input in [
        Cmd("alice", create("ended")),
        Cmd("alice", stop("ended")),
        Cmd("alice", create("named")),
        Cmd("alice", stop("named")),
        Cmd("alice", create("stage")),
        Cmd("alice", go_live("stage")),
        Run(Io::Durable),
    ] {
        h.feed(&input);
    }
    assert!(h.answers.values().all(Result::is_ok), "{:?}", h.answers);
    let held = |h: &Harness, name: &str| h.sequencer.holds(&room(name));
    h.feed(&At(RETENTION_MS));
    h.sequencer.handle_timeout(h.now_ms);
    // A batch in flight and a command queued behind it: under load the sequencer is never idle.
    h.feed(&Cmd("alice", invite("stage", "bob")));
    for submission in std::mem::take(&mut h.inbox) {
        h.sequencer.handle_command(h.now_ms, submission);
    }
    let in_flight = h.sequencer.poll_batch().expect("the invite's batch");
    h.feed(&Cmd("alice", stop("named")));
    for submission in std::mem::take(&mut h.inbox) {
        h.sequencer.handle_command(h.now_ms, submission);
    }
    driver::evict(&mut h.sequencer, &h.store, &h.read);
    assert!(!held(&h, "ended"), "evicted while a batch is in flight");
    assert!(held(&h, "named"), "a queued command names it");
    let _ = driver::commit(&mut h.sequencer, &in_flight, &h.store, &h.read);
    while let Some(batch) = h.sequencer.poll_batch() {
        let _ = driver::commit(&mut h.sequencer, &batch, &h.store, &h.read);
    }
    h.collect();
    driver::evict(&mut h.sequencer, &h.store, &h.read);
    assert!(!held(&h, "named"), "evicted once its command was answered");
    assert!(held(&h, "stage"), "live rooms stay");
    let read = h.read.read().unwrap();
    assert!(read.room_state(&room("ended")).is_none() && read.room_state(&room("named")).is_none());
}

#[test]
fn a_failed_ending_of_an_abandoned_room_is_tried_again_after_the_retry_interval_not_a_day_later() {
    use cohost_engine::sequencer::RETRY_AFTER_FAILURE_MS;
    const IDLE_MS: u64 = 3_600_000;
    let mut h = Harness::new(SequencerConfig {
        idle_room_ms: IDLE_MS,
        ..config()
    });
    h.feed(&Cmd("alice", create("stage")));
    h.feed(&Run(Io::Durable));
    let status = |h: &Harness| {
        let read = h.read.read().unwrap();
        read.room_state(&room("stage"))
            .unwrap()
            .room()
            .unwrap()
            .status
    };
    h.feed(&At(IDLE_MS));
    h.backend.fail_writes(1);
    h.sequencer.handle_timeout(h.now_ms);
    let batch = h.sequencer.poll_batch().expect("the timer's ending");
    assert!(driver::commit(&mut h.sequencer, &batch, &h.store, &h.read).is_err());
    assert_eq!(status(&h), cohost_proto::RoomStatus::Idle);
    assert_eq!(
        h.sequencer.poll_timeout(),
        Some(START_MS + IDLE_MS + RETRY_AFTER_FAILURE_MS),
        "the room's creation still counts, and the retry waits its interval"
    );
    h.backend.fail_writes(0);
    h.feed(&At(IDLE_MS + RETRY_AFTER_FAILURE_MS));
    h.feed(&Run(Io::Durable));
    assert_eq!(status(&h), cohost_proto::RoomStatus::Ended);
}
