//! Erasure: the user loses what they hold in every open room (the room they host stops; elsewhere their
//! pending offers, seat and moderator role end, by the service's commands), and everything served afterwards
//! names them by a stable pseudonym: replies, reads, pages, the audit, and event streams from any seq, also
//! after a restart. The log keeps its bytes, gap-free.

mod support;

use cohost_engine::{Interest, ListRequest};
use cohost_proto::{
    Command, Envelope, Event, RoomStatus, ServiceId, StopReason, UserId, UserTarget,
};
use support::*;

const RAW: &str = "erin";

fn pseudonym() -> UserId {
    UserId::new("erased-0a1b2c").unwrap()
}

fn service() -> ServiceId {
    ServiceId::new("privacy").unwrap()
}

fn add_moderator(room_name: &str, name: &str) -> Command {
    Command::AddModerator(UserTarget {
        room_id: room(room_name),
        user_id: user(name),
    })
}

/// Whether `value`, as JSON, names the raw id anywhere.
fn names_raw(value: &impl serde::Serialize) -> bool {
    let json = serde_json::to_string(value).unwrap();
    json.contains(&format!("\"{RAW}\""))
}

/// Every room erin touches: she hosts `own`; holds a seat in `seated`; has a pending invite in `invited`
/// and a pending request in `requested`; moderates `moderated`. `bystander` never knew her.
async fn erin_everywhere() -> TestEngine {
    let t = live(&[
        ("own", RAW),
        ("seated", "alice"),
        ("invited", "bob"),
        ("requested", "carol"),
        ("moderated", "dave"),
        ("bystander", "frank"),
    ])
    .await;
    t.ok("alice", invite("seated", RAW)).await;
    t.ok(RAW, accept("seated", 1)).await;
    t.ok("bob", invite("invited", RAW)).await;
    t.ok(RAW, request("requested")).await;
    t.ok("dave", add_moderator("moderated", RAW)).await;
    t.ok(RAW, invite("own", "gus")).await;
    t
}

#[tokio::test]
async fn an_erased_user_loses_every_seat_offer_role_and_hosted_room() {
    let t = erin_everywhere().await;
    let before = t.engine.last_seq();
    let erased = (t.engine)
        .erase_user(service(), &user(RAW), pseudonym())
        .await
        .unwrap();
    assert_eq!(erased.pseudonym, pseudonym());
    assert_eq!((erased.rooms, erased.commands), (5, 5));

    let own = t.engine.room(&room("own")).unwrap();
    assert_eq!(own.status, RoomStatus::Ended);
    assert_eq!(own.host, pseudonym(), "served under the pseudonym");
    assert!(t.engine.room(&room("seated")).unwrap().cohosts.is_empty());
    assert!(
        t.engine
            .room(&room("moderated"))
            .unwrap()
            .moderators
            .is_empty()
    );
    for name in ["invited", "requested"] {
        let page = (t.engine)
            .room_invitations(&room(name), &ListRequest::default())
            .unwrap();
        assert!(
            page.items
                .iter()
                .all(|i| i.status != cohost_proto::InvitationStatus::Pending)
        );
        assert!(
            page.items.iter().all(|i| i.user_id == pseudonym()),
            "{name}"
        );
    }

    // Each ending is the service's command, and the log stays gap-free.
    let events = t.engine.read_events(before + 1, 100).unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event.type_name()).collect();
    // Room by room in id order: invited, moderated, own (gus's invite, then the stop), requested, seated.
    assert_eq!(
        types,
        [
            "invitation_cancelled",
            "moderator_removed",
            "invitation_cancelled",
            "room_stopped",
            "invitation_cancelled",
            "cohost_removed",
        ]
    );
    assert!(
        events.iter().all(|e| e.service == Some(service())),
        "{events:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (before + 1..=before + 6).collect::<Vec<_>>());
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::RoomStopped {
            reason: StopReason::System,
            ..
        }
    )));
    // The bystander's room saw nothing.
    assert_eq!(t.engine.room(&room("bystander")).unwrap().version, 2);
}

#[tokio::test]
async fn everything_served_afterwards_names_the_pseudonym_even_after_a_restart() {
    let t = erin_everywhere().await;
    (t.engine)
        .erase_user(service(), &user(RAW), pseudonym())
        .await
        .unwrap();
    let t = t.restart().await;
    let everything = t.engine.read_events(1, 1_000).unwrap();
    assert!(!everything.is_empty());
    assert!(!names_raw(&everything), "the log as served");
    let json = serde_json::to_string(&everything).unwrap();
    assert!(
        json.contains("\"erased-0a1b2c\""),
        "and the pseudonym in her place"
    );
    for name in ["own", "seated", "invited", "requested", "moderated"] {
        assert!(!names_raw(&t.engine.room(&room(name)).unwrap()), "{name}");
        assert!(
            !names_raw(&t.engine.read_room(&room(name), 0, 100).unwrap()),
            "{name}"
        );
        let watch = t.engine.watch_room(&room(name)).unwrap();
        assert!(!names_raw(&watch.snapshot), "{name}");
    }
    let mine = (t.engine)
        .user_invitations(&user(RAW), &ListRequest::default())
        .unwrap();
    assert!(!mine.items.is_empty() && !names_raw(&mine));

    // A stream from the start, and a command's reply, name her by the pseudonym too.
    let mut stream = t.engine.subscribe(1, Interest::All);
    let mut seen: Vec<Envelope> = Vec::new();
    while seen.len() < everything.len() {
        seen.push(stream.next().await.unwrap().unwrap());
    }
    assert!(!names_raw(&seen));
    t.ok("alice", invite("seated", RAW)).await;
    let reply = t.ok(RAW, accept("seated", 2)).await;
    assert!(!names_raw(&reply), "{reply:?}");
    let live = stream.next().await.unwrap().unwrap();
    assert!(!names_raw(&live) && !names_raw(&stream.next().await.unwrap().unwrap()));

    // Erasing again keeps the first pseudonym.
    let again = (t.engine)
        .erase_user(service(), &user(RAW), UserId::new("erased-other").unwrap())
        .await
        .unwrap();
    assert_eq!(
        (again.pseudonym, again.commands),
        (pseudonym(), 1),
        "her new seat ends too"
    );
}

#[tokio::test]
async fn a_pseudonym_must_differ_from_the_id() {
    let t = erin_everywhere().await;
    let refused = (t.engine)
        .erase_user(service(), &user(RAW), user(RAW))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), cohost_proto::ErrorCode::InvalidArgument);
    assert_eq!(t.engine.room(&room("own")).unwrap().host, user(RAW));
}
