//! Moderators: users the host appoints to run the stage with them. A moderator does on the stage what the host
//! does (invite, cancel the room's invites, answer requests, remove) but may not stop the room or change
//! moderators.

use cohost_proto::limits::MODERATORS_MAX;
use cohost_proto::{Actor, Event, Room, RoomStatus, UserId};

use crate::{Context, Rejection};

/// Whether `actor` runs the stage: the host or one of the room's moderators.
pub(crate) fn runs_stage(room: &Room, actor: &Actor) -> bool {
    actor
        .user()
        .is_some_and(|user| user == &room.host || room.moderators.contains(user))
}

pub(crate) fn add(room: &Room, user: &UserId, ctx: &Context) -> Result<Vec<Event>, Rejection> {
    only_the_host(room, ctx)?;
    if user == &room.host {
        return Err(Rejection::InvalidArgument(
            "the host cannot be a moderator of their own room",
        ));
    }
    if room.moderators.contains(user) {
        return Err(Rejection::AlreadyExists("user is already a moderator"));
    }
    if room.moderators.len() >= MODERATORS_MAX {
        return Err(Rejection::ResourceExhausted(
            "the room has as many moderators as it may",
        ));
    }
    Ok(vec![Event::ModeratorAdded {
        user_id: user.clone(),
    }])
}

/// The host's, or the system's (a user's erasure ends their roles).
pub(crate) fn remove(room: &Room, user: &UserId, ctx: &Context) -> Result<Vec<Event>, Rejection> {
    if !ctx.actor.acts_as_system() {
        only_the_host(room, ctx)?;
    } else if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has ended"));
    }
    if !room.moderators.contains(user) {
        return Err(Rejection::NotFound("user is not a moderator"));
    }
    Ok(vec![Event::ModeratorRemoved {
        user_id: user.clone(),
    }])
}

fn only_the_host(room: &Room, ctx: &Context) -> Result<(), Rejection> {
    if !ctx.actor.is(&room.host) {
        return Err(Rejection::PermissionDenied(
            "only the host may change moderators",
        ));
    }
    if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has ended"));
    }
    Ok(())
}

/// The stage is the host's or a moderator's to change (else `denied`), and an ended room changes no more.
pub(crate) fn check_stage(
    room: &Room,
    ctx: &Context,
    denied: &'static str,
) -> Result<(), Rejection> {
    if !runs_stage(room, ctx.actor) {
        return Err(Rejection::PermissionDenied(denied));
    }
    if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has ended"));
    }
    Ok(())
}

/// Opens or closes the room to requests; nothing to append when it already is so.
pub(crate) fn set_requests_open(
    room: &Room,
    open: bool,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    check_stage(
        room,
        ctx,
        "only the host or a moderator may open or close requests",
    )?;
    Ok(match (room.requests_open, open) {
        (false, true) => vec![Event::RequestsOpened {}],
        (true, false) => vec![Event::RequestsClosed {}],
        _ => Vec::new(),
    })
}
