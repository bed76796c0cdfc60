//! A backend service acts with the system's authority over rooms, and no more: it may stop any room and
//! remove any co-host, not act on the stage as a user; every event it causes names it, and no user.

mod support;

use cohost_engine::Options;
use cohost_proto::{Actor, ErrorCode, Event, RemovalReason, ServiceId};
use support::*;

fn service() -> Actor {
    Actor::Service(ServiceId::new("moderation-bot").unwrap())
}

#[tokio::test]
async fn a_service_removes_and_stops_as_the_system_and_is_named_in_the_events() {
    let t = live(&[("one", "alice"), ("two", "carol")]).await;
    t.ok("alice", invite("one", "bob")).await;
    t.ok("bob", accept("one", 1)).await;
    let before = t.engine.last_seq();
    let run = |command| t.engine.execute(service(), command, Options::default());

    run(remove("one", "bob")).await.unwrap();
    run(stop("two")).await.unwrap();
    let events = t.engine.read_events(before + 1, 100).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!(event.actor, None);
        assert_eq!(
            event.service.as_ref().map(|s| s.as_str()),
            Some("moderation-bot")
        );
    }
    assert!(matches!(
        &events[0].event,
        Event::CohostRemoved {
            reason: RemovalReason::System,
            ..
        }
    ));
    assert!(matches!(&events[1].event, Event::RoomStopped { .. }));
    // A user's events still name the user and no service.
    t.ok("alice", invite("one", "dave")).await;
    let last = t.engine.read_events(t.engine.last_seq(), 1).unwrap();
    assert_eq!(
        (last[0].actor.as_ref().map(|u| u.as_str()), &last[0].service),
        (Some("alice"), &None)
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_service_cannot_act_on_the_stage_as_a_user_or_report_presence() {
    let t = live(&[("one", "alice")]).await;
    t.ok("alice", invite("one", "bob")).await;
    let code = |result: Result<_, cohost_engine::Error>| result.unwrap_err().code();
    let run = |command| t.engine.execute(service(), command, Options::default());
    assert_eq!(
        code(run(invite("one", "carol")).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(run(accept("one", 1)).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(code(run(create("mine")).await), ErrorCode::PermissionDenied);
    assert_eq!(code(run(go_live("one")).await), ErrorCode::PermissionDenied);
    let presence = cohost_proto::Command::Presence(cohost_proto::Presence {
        room_id: room("one"),
        user_id: user("alice"),
        online: false,
        stamp: None,
    });
    assert_eq!(code(run(presence).await), ErrorCode::PermissionDenied);
    t.engine.shutdown().await;
}
