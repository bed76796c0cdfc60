//! Reconciliation against the Twirp stand-in's `ListParticipants`: a co-host LiveKit has but whose join was never
//! reported is seen as connected (and the grace spares them); one LiveKit no longer has is seen as away (and the
//! grace removes them); a room LiveKit does not know means no one is connected; a LiveKit that does not answer
//! changes nothing and is tried again next pass.

mod support;

use std::sync::Arc;

use cohost_credentials::reconcile::{Pass, reconcile};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_proto::{Actor, Event, RemovalReason};
use livekit_api::services::room::RoomClient;
use support::stand_in::{LIVEKIT_ROOM, StandIn, livekit};
use support::{accept, create, go_live, invite, room_id, run, user};

const NOW_MS: u64 = 1_700_000_000_000;
const GRACE_MS: u64 = 60_000;

/// (online, the sid of the last stamped report) of each seat, by user.
fn seats(engine: &Engine) -> Vec<(String, bool, Option<String>)> {
    let (_, rooms) = engine.room_states();
    let state = &rooms.iter().find(|(id, _)| id == &room_id()).unwrap().1;
    let room = state.room().unwrap();
    (room.cohosts.iter())
        .map(|seat| {
            let sid = state.liveness(&seat.user_id).and_then(|l| l.stamp.clone());
            (
                seat.user_id.to_string(),
                seat.online,
                sid.map(|s| s.participant_sid),
            )
        })
        .collect()
}

/// An engine on `dir` with a manual clock at [`NOW_MS`] and a disconnect grace of [`GRACE_MS`].
fn open(dir: &std::path::Path) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let policy = cohost_core::Policy::default()
        .with_disconnect_grace_ms(GRACE_MS)
        .unwrap();
    let config = Config::new(dir)
        .with_clock(clock.clone())
        .with_policy(policy);
    (Engine::open(config).unwrap(), clock)
}

/// A refused command decided after whatever the clock made due.
async fn barrier(engine: &Engine) {
    let refused = engine.execute(Actor::User(user("alice")), go_live(), Options::default());
    assert!(refused.await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_turns_each_difference_with_livekit_into_a_presence_report() {
    let stand_in = StandIn::start().await;
    let config = livekit(stand_in.port);
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = open(dir.path());
    run(&engine, "alice", create()).await;
    run(&engine, "alice", go_live()).await;
    for (n, who) in [(1, "bob"), (2, "carol")] {
        run(&engine, "alice", invite(who)).await;
        run(&engine, who, accept(n)).await;
    }
    let client = RoomClient::with_api_key(&config.http_url(), &config.api_key, &config.api_secret);

    // Neither join was reported; LiveKit has bob.
    stand_in.set_participants(LIVEKIT_ROOM, Some(&[("bob", "PA_b"), ("viewer", "PA_v")]));
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!(
        pass,
        Pass {
            rooms: 1,
            reports: 1,
            failed: vec![]
        }
    );
    assert_eq!(stand_in.listed(), [LIVEKIT_ROOM]);
    let want = [
        ("bob".into(), true, Some("PA_b".into())),
        ("carol".into(), false, None),
    ];
    assert_eq!(seats(&engine), want);
    // Nothing differs now: nothing is reported.
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!(pass.reports, 0);

    // The grace passes: carol, never connected, is removed; bob, connected, stays.
    clock.advance(GRACE_MS);
    barrier(&engine).await;
    assert_eq!(seats(&engine), [("bob".into(), true, Some("PA_b".into()))]);

    // bob's leaving is lost; LiveKit no longer has him: away from this pass, in his last session.
    clock.advance(1_000);
    // As of just before the pass, in whole seconds less a millisecond.
    let gone_at = NOW_MS + GRACE_MS + 1_000 - 1;
    stand_in.set_participants(LIVEKIT_ROOM, Some(&[]));
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!(pass.reports, 1);
    assert_eq!(seats(&engine), [("bob".into(), false, Some("PA_b".into()))]);
    let (_, rooms) = engine.room_states();
    let state = &rooms.iter().find(|(id, _)| id == &room_id()).unwrap().1;
    assert_eq!(
        state.liveness(&user("bob")).unwrap().offline_since_ms,
        Some(gone_at)
    );
    // No LiveKit room at all: no one connected, as the room already knows.
    stand_in.set_participants(LIVEKIT_ROOM, None);
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!((pass.rooms, pass.reports), (1, 0));
    // A LiveKit that does not answer: the room is named, nothing changes.
    let nowhere =
        RoomClient::with_api_key("http://127.0.0.1:9", &config.api_key, &config.api_secret);
    let before = engine.last_seq();
    let pass = reconcile(&engine, &nowhere, &config, clock.as_ref()).await;
    assert_eq!((pass.rooms, pass.reports, pass.failed.len()), (0, 0, 1));
    assert_eq!(engine.last_seq(), before);

    // A grace after he went, bob is removed.
    clock.set(gone_at + GRACE_MS);
    barrier(&engine).await;
    assert!(seats(&engine).is_empty());
    let last = engine.read_events(engine.last_seq(), 1).unwrap().remove(0);
    assert!(
        matches!(
            last.event,
            Event::CohostRemoved {
                reason: RemovalReason::Disconnected,
                ..
            }
        ),
        "{last:?}"
    );
    engine.shutdown().await;
}

/// A co-host seated before go-live runs no grace until LiveKit is heard from: reconciliation finding them
/// absent starts it, as of its pass (in whole seconds, just before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_starts_the_grace_of_a_cohost_seated_before_go_live() {
    let stand_in = StandIn::start().await;
    let config = livekit(stand_in.port);
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = open(dir.path());
    run(&engine, "alice", create()).await;
    run(&engine, "alice", invite("bob")).await;
    run(&engine, "bob", accept(1)).await;
    run(&engine, "alice", go_live()).await;
    clock.advance(10 * GRACE_MS + 500);
    barrier(&engine).await;
    assert_eq!(
        seats(&engine),
        [("bob".into(), false, None)],
        "no grace ran"
    );
    let client = RoomClient::with_api_key(&config.http_url(), &config.api_key, &config.api_secret);
    stand_in.set_participants(LIVEKIT_ROOM, Some(&[]));
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!(pass.reports, 1);
    let (_, rooms) = engine.room_states();
    let state = &rooms.iter().find(|(id, _)| id == &room_id()).unwrap().1;
    let since = NOW_MS + 10 * GRACE_MS - 1;
    assert_eq!(
        state.liveness(&user("bob")).unwrap().offline_since_ms,
        Some(since)
    );
    clock.set(since + GRACE_MS);
    barrier(&engine).await;
    assert!(seats(&engine).is_empty(), "removed a grace after the pass");
    engine.shutdown().await;
}

/// A host believed away (their join was lost) whom LiveKit lists is reported connected, even in a room with no
/// co-host, so a lost webhook never has a present host's room stopped as abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_finds_a_host_whose_join_was_lost() {
    let stand_in = StandIn::start().await;
    let config = livekit(stand_in.port);
    let dir = tempfile::tempdir().unwrap();
    let (engine, clock) = open(dir.path());
    run(&engine, "alice", create()).await;
    run(&engine, "alice", go_live()).await;
    let host_online = |engine: &Engine| {
        let (_, rooms) = engine.room_states();
        rooms
            .iter()
            .find(|(id, _)| id == &room_id())
            .unwrap()
            .1
            .host_online()
    };
    assert!(!host_online(&engine));
    let client = RoomClient::with_api_key(&config.http_url(), &config.api_key, &config.api_secret);
    stand_in.set_participants(LIVEKIT_ROOM, Some(&[("alice", "PA_a")]));
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!((pass.rooms, pass.reports), (1, 1));
    assert!(host_online(&engine), "the host is connected");
    // A host believed connected is not checked: nothing to list.
    let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
    assert_eq!((pass.rooms, pass.reports), (0, 0));
    engine.shutdown().await;
}
