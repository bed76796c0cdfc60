//! What the credentials tests share: room `stage-1`, its commands one line each, and running them.

#![allow(dead_code)] // each test file uses its own part

pub mod stand_in;

use cohost_engine::{Engine, Options};
use cohost_proto::{
    Actor, Command, CreateRoom, InvitationId, InvitationTarget, Reply, RoomId, RoomTarget, UserId,
    UserTarget,
};

/// The room every scenario plays in.
pub const ROOM: &str = "stage-1";

pub fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

pub fn actor(id: &str) -> Actor {
    Actor::User(user(id))
}

pub fn room_id() -> RoomId {
    RoomId::new(ROOM).unwrap()
}

/// Creates the room, with no title and the default number of seats.
pub fn create() -> Command {
    Command::CreateRoom(CreateRoom {
        room_id: room_id(),
        title: None,
        max_cohosts: None,
    })
}

fn room() -> RoomTarget {
    RoomTarget { room_id: room_id() }
}

pub fn go_live() -> Command {
    Command::GoLive(room())
}

pub fn stop() -> Command {
    Command::StopRoom(room())
}

pub fn request() -> Command {
    Command::RequestToJoin(room().into())
}

pub fn leave() -> Command {
    Command::LeaveStage(room())
}

fn of_user(who: &str) -> UserTarget {
    UserTarget {
        room_id: room_id(),
        user_id: user(who),
    }
}

pub fn invite(who: &str) -> Command {
    Command::Invite(of_user(who).into())
}

pub fn remove(who: &str) -> Command {
    Command::RemoveCohost(of_user(who))
}

/// The invitation numbered `number` in the room.
pub fn invitation(number: u64) -> InvitationTarget {
    InvitationTarget {
        invitation_id: InvitationId::new(room_id(), number).unwrap(),
    }
}

pub fn accept(number: u64) -> Command {
    Command::AcceptInvitation(invitation(number))
}

pub fn reject(number: u64) -> Command {
    Command::RejectInvitation(invitation(number))
}

/// `by` runs `command` on the engine, which must accept it.
pub async fn run(engine: &Engine, by: &str, command: Command) -> Reply {
    let name = command.name();
    engine
        .execute(actor(by), command, Options::default())
        .await
        .unwrap_or_else(|e| panic!("{name} by {by} failed: {e}"))
}
