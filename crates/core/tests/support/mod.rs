//! Builders shared by the core's tests: commands as one-liners, and a room driven through decide/apply.

#![allow(dead_code)]

use cohost_core::{Context, Policy, Rejection, RoomState, Tallies, apply, decide};
use cohost_proto::ErrorCode;
use cohost_proto::{
    Actor, Command, CreateRoom, Event, InvitationId, InvitationTarget, Invite, Presence, RoomId,
    RoomTarget, UserId, UserTarget,
};

pub const ROOM: &str = "stage-1";
pub const TTL_MS: u64 = 60_000;

/// The disconnect grace of the cases' deployment.
pub const GRACE_MS: u64 = 30_000;

pub fn policy() -> Policy {
    Policy::new(TTL_MS, 2)
        .and_then(|p| p.with_disconnect_grace_ms(GRACE_MS))
        .unwrap()
}

pub fn room_id() -> RoomId {
    RoomId::new(ROOM).unwrap()
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

pub fn actor(name: &str) -> Actor {
    if name == "system" {
        Actor::System
    } else {
        Actor::User(user(name))
    }
}

pub fn invitation_id(n: u64) -> InvitationId {
    InvitationId::new(room_id(), n).unwrap()
}

/// One command, by whom, when, with which expected version, and what other rooms hold.
#[derive(Debug, Clone)]
pub struct Step {
    pub actor: Actor,
    pub command: Command,
    pub now_ms: u64,
    pub expected_version: Option<u64>,
    pub across: Across,
}

/// The same counts across rooms for every user: what the quotas that span rooms see.
#[derive(Debug, Clone, Copy, Default)]
pub struct Across {
    pub open_rooms: u32,
    pub pending_offers: u32,
}

impl Tallies for Across {
    fn open_rooms(&self, _host: &UserId) -> u32 {
        self.open_rooms
    }

    fn pending_offers(&self, _user: &UserId) -> u32 {
        self.pending_offers
    }
}

impl Step {
    pub fn at(mut self, now_ms: u64) -> Self {
        self.now_ms = now_ms;
        self
    }

    pub fn expecting(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Other rooms hold this many open rooms and pending offers for every user.
    pub fn across(mut self, open_rooms: u32, pending_offers: u32) -> Self {
        self.across = Across {
            open_rooms,
            pending_offers,
        };
        self
    }

    pub fn decide(&self, state: &RoomState) -> Result<Vec<Event>, Rejection> {
        let ctx = Context {
            expected_version: self.expected_version,
            tallies: &self.across,
            ..Context::new(&self.actor, self.now_ms, policy())
        };
        decide(state, &self.command, &ctx)
    }
}

fn step(by: &str, command: Command) -> Step {
    Step {
        actor: actor(by),
        command,
        now_ms: 0,
        expected_version: None,
        across: Across::default(),
    }
}

pub fn create(by: &str) -> Step {
    step(
        by,
        Command::CreateRoom(CreateRoom {
            room_id: room_id(),
            title: Some("Friday show".into()),
            max_cohosts: None,
        }),
    )
}

pub fn create_with(by: &str, title: &str, max_cohosts: Option<u8>) -> Step {
    step(
        by,
        Command::CreateRoom(CreateRoom {
            room_id: room_id(),
            title: Some(title.into()),
            max_cohosts,
        }),
    )
}

fn room_target() -> RoomTarget {
    RoomTarget { room_id: room_id() }
}

pub fn go_live(by: &str) -> Step {
    step(by, Command::GoLive(room_target()))
}

pub fn stop(by: &str) -> Step {
    step(by, Command::StopRoom(room_target()))
}

pub fn invite(by: &str, candidate: &str) -> Step {
    step(
        by,
        Command::Invite(Invite {
            room_id: room_id(),
            user_id: user(candidate),
            seat: None,
        }),
    )
}

pub fn request(by: &str) -> Step {
    step(by, Command::RequestToJoin(room_target().into()))
}

fn on_invitation(n: u64) -> InvitationTarget {
    InvitationTarget {
        invitation_id: invitation_id(n),
    }
}

pub fn accept(by: &str, n: u64) -> Step {
    step(by, Command::AcceptInvitation(on_invitation(n)))
}

pub fn reject(by: &str, n: u64) -> Step {
    step(by, Command::RejectInvitation(on_invitation(n)))
}

pub fn cancel(by: &str, n: u64) -> Step {
    step(by, Command::CancelInvitation(on_invitation(n)))
}

pub fn expire(by: &str, n: u64) -> Step {
    step(by, Command::Expire(on_invitation(n)))
}

pub fn remove(by: &str, candidate: &str) -> Step {
    step(
        by,
        Command::RemoveCohost(UserTarget {
            room_id: room_id(),
            user_id: user(candidate),
        }),
    )
}

pub fn add_moderator(by: &str, user_name: &str) -> Step {
    step(
        by,
        Command::AddModerator(UserTarget {
            room_id: room_id(),
            user_id: user(user_name),
        }),
    )
}

pub fn remove_moderator(by: &str, user_name: &str) -> Step {
    step(
        by,
        Command::RemoveModerator(UserTarget {
            room_id: room_id(),
            user_id: user(user_name),
        }),
    )
}

pub fn requests_open(by: &str, open: bool) -> Step {
    step(
        by,
        Command::SetRequestsOpen(cohost_proto::RequestsOpen {
            room_id: room_id(),
            open,
        }),
    )
}

pub fn invite_to(by: &str, candidate: &str, seat: u8) -> Step {
    step(
        by,
        Command::Invite(Invite {
            room_id: room_id(),
            user_id: user(candidate),
            seat: Some(seat),
        }),
    )
}

pub fn request_seat(by: &str, seat: u8) -> Step {
    step(
        by,
        Command::RequestToJoin(cohost_proto::RequestToJoin {
            room_id: room_id(),
            seat: Some(seat),
        }),
    )
}

pub fn move_cohost(by: &str, candidate: &str, seat: u8) -> Step {
    step(
        by,
        Command::MoveCohost(cohost_proto::MoveCohost {
            room_id: room_id(),
            user_id: user(candidate),
            seat,
        }),
    )
}

pub fn lock(by: &str, seat: u8) -> Step {
    let target = cohost_proto::SeatTarget {
        room_id: room_id(),
        seat,
    };
    step(by, Command::LockSeat(target))
}

pub fn unlock(by: &str, seat: u8) -> Step {
    let target = cohost_proto::SeatTarget {
        room_id: room_id(),
        seat,
    };
    step(by, Command::UnlockSeat(target))
}

pub fn ban(by: &str, user_name: &str, duration_s: Option<u64>) -> Step {
    step(
        by,
        Command::BanUser(cohost_proto::BanUser {
            room_id: room_id(),
            user_id: user(user_name),
            duration_s,
        }),
    )
}

pub fn unban(by: &str, user_name: &str) -> Step {
    step(
        by,
        Command::UnbanUser(UserTarget {
            room_id: room_id(),
            user_id: user(user_name),
        }),
    )
}

pub fn media(by: &str, candidate: &str, audio: Option<bool>, video: Option<bool>) -> Step {
    step(
        by,
        Command::SetCohostMedia(cohost_proto::CohostMedia {
            room_id: room_id(),
            user_id: user(candidate),
            audio,
            video,
        }),
    )
}

pub fn leave(by: &str) -> Step {
    step(by, Command::LeaveStage(room_target()))
}

pub fn presence(candidate: &str, online: bool) -> Step {
    report(candidate, online, None)
}

/// A report as a LiveKit webhook makes it: stamped with LiveKit's time (in ms) and the participant's sid.
pub fn presence_at(candidate: &str, online: bool, at_ms: u64, sid: &str) -> Step {
    let stamp = cohost_proto::PresenceStamp {
        at_ms,
        participant_sid: sid.into(),
    };
    report(candidate, online, Some(stamp))
}

fn report(candidate: &str, online: bool, stamp: Option<cohost_proto::PresenceStamp>) -> Step {
    step(
        "system",
        Command::Presence(Presence {
            room_id: room_id(),
            user_id: user(candidate),
            online,
            stamp,
        }),
    )
}

pub fn disconnect(by: &str, candidate: &str) -> Step {
    step(
        by,
        Command::Disconnect(UserTarget {
            room_id: room_id(),
            user_id: user(candidate),
        }),
    )
}

pub fn end_abandoned(by: &str, reason: cohost_proto::StopReason) -> Step {
    step(
        by,
        Command::EndAbandoned(cohost_proto::EndAbandoned {
            room_id: room_id(),
            reason,
        }),
    )
}

/// Runs `history` through decide and apply; each step must succeed.
pub fn given(history: &[Step]) -> (RoomState, Vec<Event>) {
    let mut state = RoomState::default();
    let mut log = Vec::new();
    for step in history {
        let events = step
            .decide(&state)
            .unwrap_or_else(|r| panic!("given step {step:?} was rejected: {r}"));
        for event in &events {
            apply(&mut state, event);
        }
        log.extend(events);
    }
    (state, log)
}

/// Alice hosts a live room; the given steps follow.
pub fn live_room_then(steps: &[Step]) -> Vec<Step> {
    let mut history = vec![create("alice"), go_live("alice")];
    history.extend_from_slice(steps);
    history
}

/// What a case expects: the event types emitted, or the error code.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    Events(&'static [&'static str]),
    Error(ErrorCode),
}

pub use Then::{Error, Events};

/// `decide` takes the state by shared reference, so it cannot change it: a rejection appends nothing by
/// construction, and the events of a success are what must fold in gap-free.
pub fn check(history: &[Step], when: Step, then: Then) {
    let (state, _) = given(history);
    let outcome = when.decide(&state);
    match (&then, &outcome) {
        (Events(types), Ok(events)) => {
            let got: Vec<&str> = events.iter().map(|e| e.type_name()).collect();
            assert_eq!(&got, types, "when {when:?}");
            let mut after = state.clone();
            for event in events {
                apply(&mut after, event);
            }
            assert_eq!(
                after.version(),
                state.version() + events.len() as u64,
                "versions are gap-free"
            );
        }
        (Error(code), Err(rejection)) => {
            assert_eq!(rejection.code(), *code, "when {when:?}: {rejection}");
            assert!(!rejection.to_string().is_empty());
        }
        _ => panic!("when {when:?}: expected {then:?}, got {outcome:?}"),
    }
}
