// The cases of `rules.rs`, run by it in single-node mode and by `rules-cluster.rs` through a partition log.

use cohost_engine::{InvitationFilter, ListRequest};
use cohost_proto::{
    BroadcasterRole, ErrorCode, InvitationKind, InvitationStatus, Reply, RoomStatus,
};

#[tokio::test]
async fn the_seed_flow_through_the_engine() {
    let t = open();
    let Reply::Room(created) = t.ok("alice", create("stage")).await else {
        panic!("create replies the room")
    };
    assert_eq!(
        (created.status, created.version, created.host.as_str()),
        (RoomStatus::Idle, 1, "alice")
    );
    t.ok("alice", go_live("stage")).await;
    let Reply::Invitation(first) = t.ok("alice", invite("stage", "bob")).await else {
        panic!("invite replies")
    };
    assert_eq!(first.invitation_id, invitation("stage", 1));
    assert_eq!(first.expires_ms, START_MS + 300_000);
    let Reply::Accepted(accepted) = t.ok("bob", accept("stage", 1)).await else {
        panic!("accept replies")
    };
    assert_eq!(accepted.invitation.status, InvitationStatus::Approved);
    assert!(
        accepted.broadcaster.is_none(),
        "credentials are minted outside the engine"
    );
    t.ok("alice", invite("stage", "carol")).await;
    t.ok("carol", reject("stage", 2)).await;
    t.ok("alice", invite("stage", "dave")).await;
    t.ok("alice", cancel("stage", 3)).await;
    let broadcaster = t
        .engine
        .broadcaster_entitlement(&room("stage"), &user("bob"))
        .unwrap();
    assert_eq!(broadcaster.role, BroadcasterRole::Cohost);
    assert_eq!(broadcaster.invitation_id, Some(invitation("stage", 1)));
    let Reply::Room(after_remove) = t.ok("alice", remove("stage", "bob")).await else {
        panic!("room reply")
    };
    assert!(after_remove.cohosts.is_empty());
    let err = t
        .engine
        .broadcaster_entitlement(&room("stage"), &user("bob"))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    t.ok("alice", stop("stage")).await;
    let room_now = t.engine.room(&room("stage")).unwrap();
    assert_eq!((room_now.status, room_now.version), (RoomStatus::Ended, 10));
    assert_eq!(t.engine.last_seq(), 10);
    let statuses: Vec<InvitationStatus> = t
        .engine
        .room_invitations(&room("stage"), &ListRequest::default())
        .unwrap()
        .items
        .iter()
        .map(|i| i.status)
        .collect();
    assert_eq!(
        statuses,
        [
            InvitationStatus::Approved,
            InvitationStatus::Rejected,
            InvitationStatus::Cancelled
        ]
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn every_rejection_carries_the_contract_code() {
    use ErrorCode::*;
    let t = open();
    t.check(&[
        ("alice", go_live("nowhere"), Err(NotFound)),
        ("alice", create("stage"), OK),
        ("alice", go_live("stage"), OK),
        ("bob", create("stage"), Err(AlreadyExists)),
        ("bob", go_live("stage"), Err(PermissionDenied)),
        ("alice", go_live("stage"), Err(FailedPrecondition)),
        ("bob", invite("stage", "carol"), Err(PermissionDenied)),
        ("alice", invite("stage", "alice"), Err(InvalidArgument)),
        ("alice", request("stage"), Err(PermissionDenied)),
        ("alice", invite("stage", "bob"), OK),
        ("alice", invite("stage", "bob"), Err(AlreadyExists)),
        ("bob", request("stage"), Err(AlreadyExists)),
        ("carol", accept("stage", 1), Err(PermissionDenied)),
        ("bob", accept("stage", 9), Err(NotFound)),
        ("bob", cancel("stage", 1), Err(PermissionDenied)),
        ("alice", cancel("stage", 1), OK),
        ("bob", accept("stage", 1), Err(FailedPrecondition)),
        ("alice", remove("stage", "bob"), Err(NotFound)),
        ("bob", leave("stage"), Err(NotFound)),
    ])
    .await;
    let Reply::Invitation(raised) = t.ok("bob", request("stage")).await else {
        panic!("request replies")
    };
    assert_eq!(
        (raised.kind, raised.invitation_id.number()),
        (InvitationKind::Request, 2)
    );
    t.check(&[
        ("bob", accept("stage", 2), Err(PermissionDenied)),
        ("alice", accept("stage", 2), OK),
        ("alice", invite("stage", "bob"), Err(AlreadyExists)),
        ("bob", leave("stage"), OK),
        ("alice", stop("stage"), OK),
        ("alice", stop("stage"), Err(FailedPrecondition)),
        ("alice", invite("stage", "carol"), Err(FailedPrecondition)),
    ])
    .await;
    assert_eq!(t.engine.last_seq(), 8, "rejections append nothing");
    t.engine.shutdown().await;
}

#[tokio::test]
async fn expected_version_mismatch_is_conflict() {
    let t = live(&[("stage", "alice")]).await;
    let stale = t.run_with("alice", invite("stage", "bob"), None, Some(1));
    assert_eq!(stale.await.unwrap_err().code(), ErrorCode::Conflict);
    let current = t.run_with("alice", invite("stage", "bob"), None, Some(2));
    current.await.unwrap();
    assert_eq!(t.engine.room(&room("stage")).unwrap().version, 3);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn cancel_and_accept_racing_have_one_winner() {
    let t = live(&[("stage", "alice")]).await;
    for n in 1..=20u64 {
        let candidate = format!("user-{n}");
        t.ok("alice", invite("stage", &candidate)).await;
        let (accepted, cancelled) = tokio::join!(
            t.run(&candidate, accept("stage", n)),
            t.run("alice", cancel("stage", n))
        );
        match (accepted, cancelled) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                assert_eq!(e.code(), ErrorCode::FailedPrecondition)
            }
            other => panic!("exactly one must win, got {other:?}"),
        }
        if t.engine.room(&room("stage")).unwrap().cohosts.len() == 4 {
            for seat in t.engine.room(&room("stage")).unwrap().cohosts {
                t.ok("alice", remove("stage", seat.user_id.as_str())).await;
            }
        }
    }
    t.engine.shutdown().await;
}

#[tokio::test]
async fn candidates_see_their_invitations_across_rooms() {
    let t = live(&[("one", "alice"), ("two", "carol")]).await;
    t.ok("alice", invite("one", "bob")).await;
    t.ok("bob", request("two")).await;
    t.ok("alice", invite("one", "dave")).await;
    let mine = t
        .engine
        .user_invitations(&user("bob"), &ListRequest::default())
        .unwrap();
    let ids: Vec<String> = mine
        .items
        .iter()
        .map(|i| i.invitation_id.to_string())
        .collect();
    assert_eq!(ids, ["one.1", "two.1"]);
    let list = |filter, cursor: Option<&str>, limit| ListRequest {
        filter,
        cursor: cursor.map(str::to_owned),
        limit,
    };
    let requests = InvitationFilter {
        status: None,
        kind: Some(InvitationKind::Request),
    };
    let only_requests = t
        .engine
        .user_invitations(&user("bob"), &list(requests, None, 100));
    assert_eq!(only_requests.unwrap().items.len(), 1);
    let all = InvitationFilter::default();
    let first = t
        .engine
        .user_invitations(&user("bob"), &list(all, None, 1))
        .unwrap();
    assert_eq!(first.items.len(), 1);
    let cursor = first.next_cursor.expect("a second page");
    let second = t
        .engine
        .user_invitations(&user("bob"), &list(all, Some(&cursor), 1))
        .unwrap();
    assert_eq!(second.items[0].invitation_id.to_string(), "two.1");
    assert_eq!(second.next_cursor, None);
    let bad = t
        .engine
        .user_invitations(&user("bob"), &list(all, Some("garbage"), 1))
        .unwrap_err();
    assert_eq!(bad.code(), ErrorCode::InvalidArgument);
    t.engine.shutdown().await;
}
