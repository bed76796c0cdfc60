//! Bans and media controls reaching LiveKit through the revoker, against the Twirp stand-in: a ban removes the
//! user (seated or not) and revokes their tokens; a media change replaces the participant's whole permission
//! set; a change handled late never overwrites a later one.

mod support;

use cohost_credentials::Revoker;
use cohost_credentials::revoke::cohost_permission;
use cohost_engine::{Config, Engine};
use cohost_proto::{BanUser, CohostMedia, Command, Envelope, InvitationTarget, Reply};
use livekit_protocol::{ParticipantPermission, TrackSource};
use support::stand_in::{Answer, LIVEKIT_ROOM, StandIn, Update, eventually, livekit};
use support::{create, go_live, invite, room_id, run, user};

fn ban(who: &str) -> Command {
    Command::BanUser(BanUser {
        room_id: room_id(),
        user_id: user(who),
        duration_s: None,
    })
}

fn media(who: &str, audio: Option<bool>, video: Option<bool>) -> Command {
    Command::SetCohostMedia(CohostMedia {
        room_id: room_id(),
        user_id: user(who),
        audio,
        video,
    })
}

/// Alice's live room with bob seated.
async fn live_room_with_bob(engine: &Engine) {
    run(engine, "alice", create()).await;
    run(engine, "alice", go_live()).await;
    let Reply::Invitation(invitation) = run(engine, "alice", invite("bob")).await else {
        panic!("invite answers with the invitation");
    };
    let accept = Command::AcceptInvitation(InvitationTarget {
        invitation_id: invitation.invitation_id,
    });
    run(engine, "bob", accept).await;
}

fn last(engine: &Engine) -> Envelope {
    let seq = engine.last_seq();
    engine.read_events(seq, 1).unwrap().pop().unwrap()
}

async fn done(revoker: &Revoker, seq: u64) {
    eventually(&format!("the revoker to finish seq {seq}"), || {
        revoker.done_seq() >= seq
    })
    .await;
}

fn update(identity: &str, permission: ParticipantPermission) -> Update {
    let room = LIVEKIT_ROOM.to_owned();
    (room, identity.to_owned(), Some(permission), Answer::Removed)
}

#[test]
fn the_permission_set_matches_what_the_token_grants() {
    let both = cohost_permission(true, true);
    assert!(both.can_subscribe && both.can_publish && both.can_publish_data);
    let camera = TrackSource::Camera as i32;
    let microphone = TrackSource::Microphone as i32;
    assert_eq!(both.can_publish_sources, [camera, microphone]);
    assert_eq!(cohost_permission(false, true).can_publish_sources, [camera]);
    assert_eq!(
        cohost_permission(true, false).can_publish_sources,
        [microphone]
    );
    // No sources would read as any source: publishing is off instead.
    let none = cohost_permission(false, false);
    assert!(!none.can_publish && none.can_publish_sources.is_empty() && none.can_subscribe);
    assert!(!both.hidden && !both.can_update_metadata && !both.can_subscribe_metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_removes_the_user_and_media_reaches_livekit_as_whole_permissions() {
    let stand_in = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(Config::new(dir.path())).unwrap();
    live_room_with_bob(&engine).await;
    let revoker = Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap();

    // A viewer with no seat is removed all the same, and their tokens revoked.
    run(&engine, "alice", ban("erin")).await;
    let banned = last(&engine);
    done(&revoker, banned.seq).await;
    let ts = banned.at_ms.div_ceil(1_000) as i64;
    let erin = (
        LIVEKIT_ROOM.to_owned(),
        "erin".to_owned(),
        ts,
        Answer::Removed,
    );
    assert_eq!(stand_in.seen(), std::slice::from_ref(&erin));

    // Mute, then stop video: each sends the whole set, the unchanged parts included.
    stand_in.plan(&[Answer::Unavailable], Answer::Removed);
    run(&engine, "alice", media("bob", Some(false), None)).await;
    done(&revoker, last(&engine).seq).await;
    run(&engine, "alice", media("bob", None, Some(false))).await;
    done(&revoker, last(&engine).seq).await;
    let muted = cohost_permission(false, true);
    let mut unavailable = update("bob", muted.clone());
    unavailable.3 = Answer::Unavailable;
    let want = [
        unavailable,
        update("bob", muted),
        update("bob", cohost_permission(false, false)),
    ];
    assert_eq!(stand_in.updates(), want);
    assert_eq!(stand_in.seen(), [erin], "no removal for a media change");
    revoker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_change_handled_late_never_overwrites_a_later_one() {
    let stand_in = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(Config::new(dir.path())).unwrap();
    live_room_with_bob(&engine).await;
    // The revoker starts behind both changes: only the last reaches LiveKit.
    run(&engine, "alice", media("bob", Some(false), None)).await;
    run(&engine, "alice", media("bob", Some(true), Some(false))).await;
    let revoker = Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap();
    done(&revoker, last(&engine).seq).await;
    assert_eq!(
        stand_in.updates(),
        [update("bob", cohost_permission(true, false))]
    );
    // Removed since: no update reaches a participant who holds no seat.
    revoker.stop().await;
    run(&engine, "alice", media("bob", None, Some(true))).await;
    run(&engine, "alice", ban("bob")).await;
    let revoker = Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap();
    done(&revoker, last(&engine).seq).await;
    assert_eq!(stand_in.updates().len(), 1, "{:?}", stand_in.updates());
    let removed: Vec<String> = stand_in.seen().into_iter().map(|s| s.1).collect();
    assert_eq!(removed, ["bob", "bob"], "cohost_removed, then user_banned");
    revoker.stop().await;
}
