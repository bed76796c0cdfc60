//! Revocation against a local stand-in for LiveKit's Twirp RoomService that records what it receives
//! (`support::stand_in`). The stand-in fails calls on purpose, so the retry is tested. Between two removals the
//! revoker is killed and the engine restarted: each removal still succeeds exactly once, and nothing already
//! done is sent again.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use cohost_credentials::Revoker;
use cohost_credentials::revoke::SINK;
use cohost_engine::{Config, Engine, ManualClock};
use cohost_proto::{Command, Envelope, InvitationTarget, Reply};
use support::stand_in::{Answer, LIVEKIT_ROOM, Seen, StandIn, WAIT_MAX, eventually, livekit, seen};
use support::{create, go_live, invite, leave, remove, run, stop};

const START_MS: u64 = 1_700_000_000_000;

/// Successful calls per (room, identity, revoke_token_ts).
fn successes(seen: &[Seen]) -> HashMap<(String, String, i64), usize> {
    let mut counts = HashMap::new();
    for (room, identity, ts, answer) in seen {
        if *answer == Answer::Removed {
            *counts
                .entry((room.clone(), identity.clone(), *ts))
                .or_default() += 1;
        }
    }
    counts
}

fn success(identity: &str, revoke_token_ts: i64) -> ((String, String, i64), usize) {
    (
        (
            LIVEKIT_ROOM.to_owned(),
            identity.to_owned(),
            revoke_token_ts,
        ),
        1,
    )
}

/// The `revoke_token_ts` the revoker sends for an event: the event's `at_ms`, as `revoke.rs` passes it.
/// LiveKit compares it with a token's `nbf`, in seconds; rounded up to revoke tokens of the same second.
fn revoke_token_ts(envelope: &Envelope) -> i64 {
    envelope.at_ms.div_ceil(1_000) as i64
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    Engine::open(Config::new(dir).with_clock(clock.clone())).expect("the engine opens")
}

/// Alice invites `user`, who accepts.
async fn seat(engine: &Engine, user: &str) {
    let Reply::Invitation(invitation) = run(engine, "alice", invite(user)).await else {
        panic!("invite answers with the invitation");
    };
    let accept = Command::AcceptInvitation(InvitationTarget {
        invitation_id: invitation.invitation_id,
    });
    run(engine, user, accept).await;
}

async fn done(revoker: &Revoker, envelope: &Envelope) {
    let what = format!("the revoker to finish seq {}", envelope.seq);
    eventually(&what, || revoker.done_seq() >= envelope.seq).await;
}

/// Stops the revoker, after which it calls nothing, and checks that it called nothing more since `seen` was
/// taken: no removal is sent again once it succeeded.
async fn stop_quietly(revoker: Revoker, stand_in: &StandIn, seen: &[Seen]) {
    revoker.stop().await;
    assert_eq!(
        stand_in.seen(),
        seen,
        "unexpected calls after the last removal"
    );
}

/// A step of a revocation script: who runs which command; the calls LiveKit must then get, each an identity
/// and the stand-in's answer to it; and the stand-in's answer to any call after those.
type Step<'a> = (&'a str, Command, &'a [(&'a str, Answer)], Answer);

/// The stand-in, and an engine on a temporary directory with a manual clock.
struct Harness {
    stand_in: StandIn,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Engine,
}

impl Harness {
    async fn start() -> Self {
        let stand_in = StandIn::start().await;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START_MS));
        let engine = open(dir.path(), &clock);
        Self {
            stand_in,
            dir,
            clock,
            engine,
        }
    }

    fn revoker(&self) -> Revoker {
        Revoker::start(self.engine.clone(), livekit(self.stand_in.port)).unwrap()
    }

    /// Alice's live room with bob and carol seated.
    async fn live_room_with_bob_and_carol(&self) {
        run(&self.engine, "alice", create()).await;
        run(&self.engine, "alice", go_live()).await;
        seat(&self.engine, "bob").await;
        seat(&self.engine, "carol").await;
    }

    /// The clock moves a second, then `by` runs `command`; returns the last envelope it wrote.
    async fn step(&self, by: &str, command: Command) -> Envelope {
        self.clock.advance(1_000);
        run(&self.engine, by, command).await;
        let last_seq = self.engine.last_seq();
        self.engine
            .read_events(last_seq, 1)
            .unwrap()
            .pop()
            .expect("the command wrote an event")
    }

    /// Runs each step with the stand-in answering as it says, and checks that once the revoker is done with
    /// the step's event, LiveKit got exactly the step's calls, each for the event's `revoke_token_ts`, and
    /// the revoker's cursor is at the event. Returns the events.
    async fn check(&self, revoker: &Revoker, script: Vec<Step<'_>>) -> Vec<Envelope> {
        let mut events = Vec::new();
        for (by, command, calls, otherwise) in script {
            let answers: Vec<Answer> = calls.iter().map(|&(_, answer)| answer).collect();
            self.stand_in.plan(&answers, otherwise);
            let before = self.stand_in.seen().len();
            let event = self.step(by, command).await;
            done(revoker, &event).await;
            let ts = revoke_token_ts(&event);
            let want: Vec<Seen> = calls
                .iter()
                .map(|&(identity, answer)| seen(identity, ts, answer))
                .collect();
            assert_eq!(self.stand_in.seen()[before..], want, "{by}'s {event:?}");
            assert_eq!(self.engine.cursor(SINK).unwrap(), event.seq);
            events.push(event);
        }
        events
    }
}

fn type_names(events: &[Envelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.type_name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_removal_reaches_livekit_once_through_failures() {
    use Answer::{NotFound, ProxyError, Removed, Unavailable};
    let h = Harness::start().await;
    let revoker = h.revoker();
    h.live_room_with_bob_and_carol().await;
    assert_eq!(h.stand_in.calls().len(), 0, "no one left the stage yet");

    // The host removes bob: two failures, then LiveKit accepts. Carol leaves: a failure that is not even a
    // Twirp error, then LiveKit accepts.
    let bob = [("bob", Unavailable), ("bob", Unavailable), ("bob", Removed)];
    let carol = [("carol", ProxyError), ("carol", Removed)];
    let mut events = h
        .check(
            &revoker,
            vec![
                ("alice", remove("bob"), &bob, Removed),
                ("carol", leave(), &carol, Removed),
            ],
        )
        .await;
    // Dave is seated when the room stops: the stop removes its co-hosts, then its host. LiveKit no longer
    // has alice; not_found counts as removed and is not retried.
    seat(&h.engine, "dave").await;
    let stopped = [("dave", Removed), ("alice", NotFound)];
    events.extend(
        h.check(&revoker, vec![("alice", stop(), &stopped, Unavailable)])
            .await,
    );
    assert_eq!(
        type_names(&events),
        ["cohost_removed", "cohost_left", "room_stopped"]
    );
    let [bob, carol, stop_ts] = [0, 1, 2].map(|i| revoke_token_ts(&events[i]));
    assert_eq!(
        successes(&h.stand_in.seen()),
        HashMap::from([
            success("bob", bob),
            success("carol", carol),
            success("dave", stop_ts)
        ])
    );

    stop_quietly(revoker, &h.stand_in, &h.stand_in.seen()).await;
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_retrying_neither_loses_nor_repeats_a_removal() {
    use Answer::{Removed, Unavailable};
    let mut h = Harness::start().await;
    // The first revoker runs on a runtime of its own, so it can be killed mid-retry without a goodbye.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let first = {
        let _runtime = doomed.enter();
        h.revoker()
    };
    h.live_room_with_bob_and_carol().await;

    let script = vec![("alice", remove("bob"), &[("bob", Removed)][..], Removed)];
    let removed = h.check(&first, script).await.remove(0);
    let bob = revoke_token_ts(&removed);

    // LiveKit is down when carol leaves; the revoker is killed while it retries, then the engine stops. After
    // the fourth failure the revoker backs off for 400 ms, so the kill lands between calls, not during one.
    h.stand_in.plan(&[], Unavailable);
    let left = h.step("carol", leave()).await;
    let carol = revoke_token_ts(&left);
    h.stand_in
        .until("four failed calls for carol", |seen| seen.len() >= 5)
        .await;
    // The handle stays alive: dropping it would stop a revoker that outlived the kill. Once the runtime's
    // threads have stopped, the killed revoker can call nothing more.
    tokio::task::spawn_blocking(move || doomed.shutdown_timeout(WAIT_MAX))
        .await
        .unwrap();
    h.engine.shutdown().await;
    let before_restart = h.stand_in.seen();
    assert!(
        before_restart[1..]
            .iter()
            .all(|call| *call == seen("carol", carol, Unavailable)),
        "only failed calls for carol after bob's removal: {before_restart:?}"
    );

    // Restart: bob's removal is behind the cursor, carol's is not.
    h.engine = open(h.dir.path(), &h.clock);
    assert_eq!(h.engine.cursor(SINK).unwrap(), removed.seq);
    h.stand_in.plan(&[], Removed);
    let second = h.revoker();
    done(&second, &left).await;
    assert_eq!(h.engine.cursor(SINK).unwrap(), left.seq);
    let all = h.stand_in.seen();
    stop_quietly(second, &h.stand_in, &all).await;

    assert_eq!(
        all[before_restart.len()..],
        [seen("carol", carol, Removed)],
        "after the restart only carol's removal is sent, once"
    );
    assert_eq!(
        successes(&all),
        HashMap::from([success("bob", bob), success("carol", carol)])
    );

    drop(first);
    h.engine.shutdown().await;
}

/// A removal handled late (a revoker far behind, or one that a new owner of the partition resumes from a
/// cursor saved a little earlier) does not cut a seat taken again since: bob, removed and then seated again
/// before the revoker starts, is not removed from LiveKit; carol, removed for good, is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_removal_spares_a_seat_taken_again_since() {
    use Answer::Removed;
    let h = Harness::start().await;
    h.live_room_with_bob_and_carol().await;
    h.step("alice", remove("bob")).await;
    h.step("alice", remove("carol")).await;
    seat(&h.engine, "bob").await;
    h.stand_in.plan(&[], Removed);
    let revoker = h.revoker();
    let last = h
        .engine
        .read_events(h.engine.last_seq(), 1)
        .unwrap()
        .remove(0);
    done(&revoker, &last).await;
    let identities: Vec<String> = h
        .stand_in
        .seen()
        .into_iter()
        .map(|(_, identity, _, _)| identity)
        .collect();
    assert_eq!(identities, ["carol"], "bob holds a seat again");
    revoker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_co_host_is_removed_from_livekit_by_the_id_livekit_knows() {
    let h = Harness::start().await;
    let revoker = h.revoker();
    h.live_room_with_bob_and_carol().await;
    h.stand_in.plan(&[Answer::Removed], Answer::Removed);
    let pseudonym = cohost_proto::UserId::new("erased-b0b").unwrap();
    let service = cohost_proto::ServiceId::new("privacy").unwrap();
    let bob = cohost_proto::UserId::new("bob").unwrap();
    let erased = (h.engine)
        .erase_user(service, &bob, pseudonym)
        .await
        .unwrap();
    assert_eq!(erased.commands, 1);
    let removal = h
        .engine
        .read_events(h.engine.last_seq(), 1)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(removal.event.type_name(), "cohost_removed");
    done(&revoker, &removal).await;
    let identities: Vec<String> = (h.stand_in.seen().into_iter())
        .map(|(_, identity, _, _)| identity)
        .collect();
    assert_eq!(
        identities,
        ["bob"],
        "the served event names erased-b0b, LiveKit knows bob"
    );
    revoker.stop().await;
}
