//! A retried accept mints only for the seat its own invitation gave: after a removal and a new seat through
//! another invitation, the old accept's retry carries no token.

use std::sync::Arc;

use cohost_credentials::{Credentials, LiveKitConfig, Minter};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_proto::{
    Actor, Command, CommandId, CreateRoom, InvitationId, InvitationTarget, Reply, RoomId,
    RoomTarget, UserId, UserTarget,
};

fn alice() -> Actor {
    Actor::User(UserId::new("alice").unwrap())
}

fn bob() -> Actor {
    Actor::User(UserId::new("bob").unwrap())
}

fn room() -> RoomId {
    RoomId::new("stage-1").unwrap()
}

fn accept(n: u64) -> Command {
    Command::AcceptInvitation(InvitationTarget {
        invitation_id: InvitationId::new(room(), n).unwrap(),
    })
}

fn invite_bob() -> Command {
    Command::Invite(UserTarget {
        room_id: room(),
        user_id: UserId::new("bob").unwrap(),
    })
}

#[tokio::test]
async fn a_retried_accept_after_a_new_seat_gets_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(Config::new(dir.path()).with_clock(Arc::new(ManualClock::new(1_000))))
            .unwrap();
    let credentials = Credentials::new(engine.clone(), Minter::new(LiveKitConfig::dev()));
    let none = Options::default;
    let create = CreateRoom {
        room_id: room(),
        title: None,
        max_cohosts: None,
    };
    credentials
        .execute(alice(), Command::CreateRoom(create), none())
        .await
        .unwrap();
    credentials
        .execute(
            alice(),
            Command::GoLive(RoomTarget { room_id: room() }),
            none(),
        )
        .await
        .unwrap();
    credentials
        .execute(alice(), invite_bob(), none())
        .await
        .unwrap();
    let keyed = || Options {
        command_id: Some(CommandId::new("bob-accept-1").unwrap()),
        expected_version: None,
    };
    let Reply::Accepted(first) = credentials
        .execute(bob(), accept(1), keyed())
        .await
        .unwrap()
    else {
        panic!("accept replies accepted")
    };
    assert!(
        first.broadcaster.is_some(),
        "the new co-host gets credentials"
    );
    let remove = UserTarget {
        room_id: room(),
        user_id: UserId::new("bob").unwrap(),
    };
    credentials
        .execute(alice(), Command::RemoveCohost(remove), none())
        .await
        .unwrap();
    credentials
        .execute(alice(), invite_bob(), none())
        .await
        .unwrap();
    credentials.execute(bob(), accept(2), none()).await.unwrap();
    let Reply::Accepted(retried) = credentials
        .execute(bob(), accept(1), keyed())
        .await
        .unwrap()
    else {
        panic!("a retry replies accepted")
    };
    assert_eq!(
        retried.invitation, first.invitation,
        "the retry replays the first reply"
    );
    assert!(
        retried.broadcaster.is_none(),
        "the seat is invitation 2's, not the retried invitation 1's"
    );
    engine.shutdown().await;
}
