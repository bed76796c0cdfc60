//! Cluster mode's takeover from a base: a new owner that starts from the last owner's snapshot and replays only
//! the log after it holds the same rooms as one that replays the whole log, answers a retry of a command from
//! before the base with its first reply, and refuses reads from before the base by name.

mod support;

use cohost_engine::Error;
use support::cluster::live;
use support::*;

/// Every room's state by room, and the last seq.
fn states(
    engine: &cohost_engine::Engine,
) -> (u64, Vec<(cohost_proto::RoomId, cohost_core::RoomState)>) {
    let (last, mut rooms) = engine.room_states();
    rooms.sort_by(|a, b| a.0.cmp(&b.0));
    (last, rooms)
}

#[tokio::test]
async fn a_takeover_from_a_base_equals_one_from_the_whole_log() {
    let t = live(&[("stage", "alice"), ("other", "carol")]).await;
    let mut replies = Vec::new();
    for (n, guest) in ["bob", "dave", "erin", "frank"].iter().enumerate() {
        let id = format!("invite-{n}");
        replies.push((
            id.clone(),
            guest.to_string(),
            t.with_id("alice", invite("stage", guest), &id)
                .await
                .unwrap(),
        ));
    }
    t.ok("bob", accept("stage", 1)).await;
    t.ok("carol", stop("other")).await;
    let log = t.log.clone().expect("a cluster engine");
    log.save_base(&t.engine);
    let base = log.base_seq().expect("snapshots were taken");
    assert!(base > 4, "the base covers the invitations (at seq {base})");
    // Written after the base: replayed from the log.
    t.ok("alice", invite("stage", "gina")).await;
    t.ok("dave", reject("stage", 2)).await;
    let (last, before) = states(&t.engine);
    let t = t.restart().await;
    assert!(log.base_seq().unwrap() >= base);
    let base = log.base_seq().unwrap();

    assert_eq!(states(&t.engine), (last, before.clone()));
    match t.engine.read_events(1, 10) {
        Err(Error::HistoryGone { covered_from }) => assert_eq!(covered_from, base + 1),
        other => panic!("a read from before the base: {other:?}"),
    }
    if base < last {
        assert_eq!(
            t.engine.read_events(base + 1, 100).unwrap().len() as u64,
            last - base
        );
    }
    for (id, guest, first) in &replies {
        let again = t
            .with_id("alice", invite("stage", guest), id)
            .await
            .unwrap();
        assert_eq!(&again, first, "a retry of {id} gets its first reply");
    }
    assert_eq!(t.engine.last_seq(), last, "no retry appended anything");
    assert_eq!(
        t.with_id("alice", invite("stage", "zed"), "invite-0")
            .await
            .unwrap_err()
            .code(),
        cohost_proto::ErrorCode::Conflict
    );

    // The same log replayed whole gives the same rooms.
    log.replay_whole();
    let t = t.restart().await;
    assert_eq!(states(&t.engine), (last, before));
    assert_eq!(t.engine.read_events(1, 1).unwrap().len(), 1);
    t.engine.shutdown().await;
}
