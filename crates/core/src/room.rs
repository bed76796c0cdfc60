//! create_room, go_live and stop_room.

use cohost_proto::limits::{MAX_COHOSTS_LIMIT, TITLE_LEN_MAX};
use cohost_proto::{
    Actor, CreateRoom, Event, InvitationStatus, RemovalReason, Room, RoomStatus, StopReason,
};

use crate::{Context, Rejection, RoomState};

pub(crate) fn create(
    state: &RoomState,
    command: &CreateRoom,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    let title = command.title.as_deref().unwrap_or("");
    if title.chars().count() > TITLE_LEN_MAX {
        return Err(Rejection::InvalidArgument(
            "title must be at most 200 characters",
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(Rejection::InvalidArgument(
            "title must not contain control characters",
        ));
    }
    let max_cohosts = command
        .max_cohosts
        .unwrap_or(ctx.policy.max_cohosts_default());
    if !(1..=MAX_COHOSTS_LIMIT).contains(&max_cohosts) {
        return Err(Rejection::InvalidArgument(
            "max_cohosts must be from 1 to 16",
        ));
    }
    if state.room().is_some() {
        return Err(Rejection::AlreadyExists("room already exists"));
    }
    ctx.check_version(0)?;
    let Actor::User(host) = ctx.actor else {
        return Err(Rejection::PermissionDenied("only a user can host a room"));
    };
    if ctx.tallies.open_rooms(host) >= ctx.policy.open_rooms_per_host_max() {
        return Err(Rejection::ResourceExhausted(
            "the host already holds as many open rooms as this deployment allows",
        ));
    }
    let room = Room {
        room_id: command.room_id.clone(),
        host: host.clone(),
        title: title.to_owned(),
        status: RoomStatus::Idle,
        max_cohosts,
        cohosts: Vec::new(),
        version: 1,
        moderators: Vec::new(),
        locked_seats: Vec::new(),
        requests_open: true,
    };
    Ok(vec![Event::RoomCreated { room }])
}

pub(crate) fn go_live(room: &Room, ctx: &Context) -> Result<Vec<Event>, Rejection> {
    if !ctx.actor.is(&room.host) {
        return Err(Rejection::PermissionDenied("only the host may go live"));
    }
    if room.status != RoomStatus::Idle {
        return Err(Rejection::FailedPrecondition("room is not idle"));
    }
    let room = Room {
        status: RoomStatus::Live,
        version: room.version + 1,
        ..room.clone()
    };
    Ok(vec![Event::RoomLive { room }])
}

/// Cancels every pending invitation first, so no one can accept a seat in an ended room.
pub(crate) fn stop(state: &RoomState, room: &Room, ctx: &Context) -> Result<Vec<Event>, Rejection> {
    if !(ctx.actor.is(&room.host) || ctx.actor.acts_as_system()) {
        return Err(Rejection::PermissionDenied(
            "only the host may stop the room",
        ));
    }
    if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has already ended"));
    }
    // Only the host or the system's authority (the system, a service) gets this far.
    let reason = match ctx.actor.user() {
        Some(_) => StopReason::Host,
        None => StopReason::System,
    };
    Ok(end(state, room, reason, ctx))
}

/// The system's ending of an abandoned room. The engine sends it once its timer has seen the time pass; the
/// rule checks what the state shows, so the reason recorded is true when the room ends. It grants the system
/// nothing `stop_room` does not: only the reason differs.
pub(crate) fn end_abandoned(
    state: &RoomState,
    room: &Room,
    reason: StopReason,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if *ctx.actor != Actor::System {
        return Err(Rejection::PermissionDenied(
            "only the system ends abandoned rooms",
        ));
    }
    let holds = match reason {
        StopReason::HostAbsent => room.status == RoomStatus::Live && !state.host_online(),
        StopReason::NeverLive => room.status == RoomStatus::Idle,
        StopReason::Host | StopReason::System => {
            return Err(Rejection::InvalidArgument(
                "reason must be host_absent or never_live",
            ));
        }
    };
    if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has already ended"));
    }
    if !holds {
        return Err(Rejection::FailedPrecondition(match reason {
            StopReason::NeverLive => "room has gone live",
            _ => "room is not live, or its host is connected",
        }));
    }
    Ok(end(state, room, reason, ctx))
}

/// The room's ending: every pending offer cancelled and every seat emptied, then `room_stopped`.
fn end(state: &RoomState, room: &Room, reason: StopReason, ctx: &Context) -> Vec<Event> {
    let mut events: Vec<Event> = state
        .pending()
        .map(|pending| {
            let mut invitation = pending.clone();
            invitation.status = InvitationStatus::Cancelled;
            invitation.updated_ms = ctx.now_ms;
            Event::InvitationCancelled { invitation }
        })
        .collect();
    // Every seat ends with the room, so nothing of an ended room can change any more.
    events.extend(room.cohosts.iter().map(|seat| Event::CohostRemoved {
        user_id: seat.user_id.clone(),
        invitation_id: seat.invitation_id.clone(),
        reason: RemovalReason::RoomStopped,
    }));
    let version = room.version + events.len() as u64 + 1;
    let room = Room {
        status: RoomStatus::Ended,
        cohosts: Vec::new(),
        version,
        ..room.clone()
    };
    events.push(Event::RoomStopped { room, reason });
    events
}
