//! Subscriptions: catch-up from any seq then live, with no gaps or duplicates; live collections give a
//! snapshot and then every change after it.

mod support;

use std::time::Duration;

use cohost_engine::{EventStream, Interest, ListRequest};
use cohost_proto::{Envelope, Event, InvitationStatus};
use support::*;

async fn take(stream: &mut EventStream, n: usize) -> Vec<Envelope> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an envelope in time");
        out.push(next.expect("stream open").expect("no error"));
    }
    out
}

fn seqs(envelopes: &[Envelope]) -> Vec<u64> {
    envelopes.iter().map(|e| e.seq).collect()
}

#[tokio::test]
async fn a_stream_catches_up_from_the_log_then_follows_live() {
    let t = live(&[("stage", "alice")]).await;
    t.ok("alice", invite("stage", "bob")).await;
    let mut stream = t.engine.subscribe(2, Interest::All);
    assert_eq!(seqs(&take(&mut stream, 2).await), [2, 3]);
    t.ok("bob", accept("stage", 1)).await;
    t.live_room("other", "carol").await;
    assert_eq!(seqs(&take(&mut stream, 3).await), [4, 5, 6]);
    t.engine.shutdown().await;
    assert!(
        stream.next().await.is_none(),
        "the stream ends after shutdown"
    );
}

#[tokio::test]
async fn concurrent_writers_reach_a_subscriber_without_gaps_or_duplicates() {
    let t = open();
    let mut stream = t.engine.subscribe(1, Interest::All);
    let mut late = t.engine.subscribe(1, Interest::All);
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let engine = t.engine.clone();
            tokio::spawn(async move {
                let room_name = format!("room-{i}");
                let host = format!("host-{i}");
                for command in [create(&room_name), go_live(&room_name)] {
                    engine
                        .execute(actor(&host), command, Default::default())
                        .await
                        .unwrap();
                }
                for n in 0..20 {
                    let candidate = format!("user-{n}");
                    engine
                        .execute(
                            actor(&host),
                            invite(&room_name, &candidate),
                            Default::default(),
                        )
                        .await
                        .unwrap();
                    engine
                        .execute(actor(&host), cancel(&room_name, n + 1), Default::default())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let total = 16 * (2 + 40);
    let got = take(&mut stream, total).await;
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(seqs(&got), (1..=total as u64).collect::<Vec<_>>());
    // A subscriber that read nothing while all this happened still gets every envelope, from the log.
    assert_eq!(seqs(&take(&mut late, total).await), seqs(&got));
    t.engine.shutdown().await;
}

#[tokio::test]
async fn room_and_candidate_interests_filter() {
    let t = live(&[("one", "alice"), ("two", "carol")]).await;
    let mut one = t.engine.subscribe(1, Interest::Room(room("one")));
    let mut bob = t.engine.subscribe(1, Interest::Candidate(user("bob")));
    t.ok("carol", invite("two", "bob")).await;
    t.ok("alice", invite("one", "dave")).await;
    t.ok("bob", accept("two", 1)).await;
    let room_events = take(&mut one, 3).await;
    assert!(room_events.iter().all(|e| e.room_id == room("one")));
    assert_eq!(
        room_events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let bobs = take(&mut bob, 2).await;
    assert!(matches!(bobs[0].event, Event::InvitationCreated { .. }));
    assert!(matches!(bobs[1].event, Event::InvitationApproved { .. }));
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_live_collection_is_a_snapshot_then_every_change() {
    let t = live(&[("stage", "alice")]).await;
    t.ok("alice", invite("stage", "bob")).await;
    let mut watch = t
        .engine
        .watch_room_invitations(
            &room("stage"),
            &ListRequest {
                limit: 50,
                ..ListRequest::default()
            },
        )
        .unwrap();
    assert_eq!(watch.seq, 3);
    assert_eq!(watch.snapshot.items.len(), 1);
    assert_eq!(watch.snapshot.items[0].status, InvitationStatus::Pending);
    t.ok("bob", accept("stage", 1)).await;
    let change = take(&mut watch.changes, 1).await.remove(0);
    assert_eq!(change.seq, 4);
    let Event::InvitationApproved { invitation } = change.event else {
        panic!("approved next")
    };
    assert_eq!(invitation.status, InvitationStatus::Approved);

    let mut mine = t
        .engine
        .watch_user_invitations(
            &user("carol"),
            &ListRequest {
                limit: 50,
                ..ListRequest::default()
            },
        )
        .unwrap();
    assert!(mine.snapshot.items.is_empty());
    t.ok("alice", invite("stage", "carol")).await;
    t.ok("alice", invite("stage", "dave")).await;
    t.ok("alice", cancel("stage", 2)).await;
    let changes = take(&mut mine.changes, 2).await;
    assert_eq!(
        changes
            .iter()
            .map(|e| e.event.type_name())
            .collect::<Vec<_>>(),
        ["invitation_created", "invitation_cancelled"]
    );
    t.engine.shutdown().await;
}
