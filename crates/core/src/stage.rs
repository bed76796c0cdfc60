//! Who is on the stage: removal, leaving, presence, and who may have broadcaster credentials.

use cohost_proto::{
    Actor, BroadcasterRole, Event, InvitationId, Presence, PresenceStamp, RemovalReason, Room,
    RoomStatus, Seat, UserId,
};

use crate::{Context, Rejection, RoomState};

pub(crate) fn remove(
    state: &RoomState,
    room: &Room,
    user: &UserId,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if !(crate::moderators::runs_stage(room, ctx.actor) || ctx.actor.acts_as_system()) {
        return Err(Rejection::PermissionDenied(
            "only the host or a moderator may remove a co-host",
        ));
    }
    let reason = match ctx.actor {
        // A service acts with the system's authority; the envelope names it.
        Actor::System | Actor::Service(_) => RemovalReason::System,
        Actor::User(user) if user == &room.host => RemovalReason::Host,
        Actor::User(_) => RemovalReason::Moderator,
    };
    vacate(
        state,
        user,
        "user is not a co-host",
        |user_id, invitation_id| Event::CohostRemoved {
            user_id,
            invitation_id,
            reason,
        },
    )
}

pub(crate) fn leave(state: &RoomState, ctx: &Context) -> Result<Vec<Event>, Rejection> {
    let Actor::User(user) = ctx.actor else {
        return Err(Rejection::PermissionDenied(
            "only a co-host may leave the stage",
        ));
    };
    vacate(
        state,
        user,
        "caller is not a co-host",
        |user_id, invitation_id| Event::CohostLeft {
            user_id,
            invitation_id,
        },
    )
}

/// The one event that frees `user`'s seat, named after the seat it frees.
fn vacate(
    state: &RoomState,
    user: &UserId,
    not_seated: &'static str,
    event: impl FnOnce(UserId, InvitationId) -> Event,
) -> Result<Vec<Event>, Rejection> {
    // An ended room is final. stop_room frees every seat, but a log written before it did may hold an ended
    // room with seats: they stay as they ended.
    if state.is_ended() {
        return Err(Rejection::FailedPrecondition("room has ended"));
    }
    let seat = state.seat(user).ok_or(Rejection::NotFound(not_seated))?;
    Ok(vec![event(
        seat.user_id.clone(),
        seat.invitation_id.clone(),
    )])
}

/// Records a LiveKit join or leave. Reporting what is already known appends nothing, and so does a co-host's
/// report stamped before the last one applied: webhooks arrive out of order, and only LiveKit's clock says
/// which came last.
pub(crate) fn presence(
    state: &RoomState,
    room: &Room,
    report: &Presence,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if *ctx.actor != Actor::System {
        return Err(Rejection::PermissionDenied(
            "only the system reports presence",
        ));
    }
    let (user, online) = (&report.user_id, report.online);
    let seat = match user == &room.host {
        true => None,
        false => Some(state.seat(user).ok_or(Rejection::NotFound(
            "participant is neither host nor co-host",
        ))?),
    };
    let current = seat.map_or(state.host_online(), |seat| seat.online);
    // An ended room is final: only reads follow room_stopped, so the host's comings and goings (LiveKit
    // reports them after room_finished too) change nothing.
    if room.status == RoomStatus::Ended {
        return Ok(Vec::new());
    }
    let last = state.liveness(user).map(|l| l.stamp.as_ref());
    // A report from before the seat was taken is of an earlier seat's session. LiveKit stamps whole seconds,
    // and reconciliation just under them, so only one more than a second before the seat's is.
    let seated_ms = seat.map_or(0, |seat| seat.since_ms / 1_000 * 1_000);
    let news = match (&report.stamp, last) {
        (Some(stamp), Some(last)) => {
            let stale = stamp.at_ms.saturating_add(1_000) < seated_ms
                || last.is_some_and(|last| !supersedes(stamp, online, last));
            // The same state from another session is news too: its stamp is recorded, so a late report of
            // the session before (its join, or its leaving that was missed) is known to be stale.
            let same_session = last.is_some_and(|l| l.participant_sid == stamp.participant_sid);
            !stale && (current != online || !same_session)
        }
        _ => current != online,
    };
    if !news {
        return Ok(Vec::new());
    }
    Ok(vec![Event::PresenceChanged {
        user_id: user.clone(),
        online,
        stamp: report.stamp.clone(),
    }])
}

/// Whether a report stamped `new` (`online` or not) comes after the last one applied, `last`. LiveKit stamps
/// whole seconds, so within one: a session's leaving follows its joining, and a new session's joining follows
/// an old session's leaving.
fn supersedes(new: &PresenceStamp, online: bool, last: &PresenceStamp) -> bool {
    match new.at_ms.cmp(&last.at_ms) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal if new.participant_sid == last.participant_sid => !online,
        std::cmp::Ordering::Equal => online,
    }
}

/// The timer's removal of a co-host away longer than the deployment's disconnect grace.
pub(crate) fn disconnect(
    state: &RoomState,
    room: &Room,
    user: &UserId,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if *ctx.actor != Actor::System {
        return Err(Rejection::PermissionDenied(
            "only the system disconnects co-hosts",
        ));
    }
    if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has ended"));
    }
    let seat = state
        .seat(user)
        .ok_or(Rejection::NotFound("user is not a co-host"))?;
    let deadline = state
        .liveness(user)
        .and_then(|l| l.deadline_ms(ctx.policy.disconnect_grace_ms()));
    if deadline.is_none_or(|deadline| ctx.now_ms < deadline) {
        return Err(Rejection::FailedPrecondition(
            "co-host is connected, or still within the disconnect grace",
        ));
    }
    Ok(vec![Event::CohostRemoved {
        user_id: seat.user_id.clone(),
        invitation_id: seat.invitation_id.clone(),
        reason: RemovalReason::Disconnected,
    }])
}

/// Who may have broadcaster credentials for this room, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement<'a> {
    /// The room's host: a host token (with room_admin).
    Host,
    /// A seated co-host: a co-host token, publishing only the media the seat allows.
    Cohost(&'a Seat),
}

impl Entitlement<'_> {
    /// The role the broadcaster data names: `host` or `cohost`.
    pub fn role(&self) -> BroadcasterRole {
        match self {
            Self::Host => BroadcasterRole::Host,
            Self::Cohost(_) => BroadcasterRole::Cohost,
        }
    }
}

/// The rule of `get_broadcaster_data`: the host, or a seated co-host, of a live room.
///
/// A user with only a pending, rejected or ended offer gets `failed_precondition`, so a client can tell
/// "not yet" or "no longer" from "never".
///
/// It only reads the state, and neither blocks nor allocates.
///
/// # Errors
///
/// - [`NotFound`](Rejection::NotFound): the room does not exist.
/// - [`FailedPrecondition`](Rejection::FailedPrecondition): the user's offer is not (or no longer) a
///   seat, or the room is not live.
/// - [`PermissionDenied`](Rejection::PermissionDenied): the user is neither the host nor was ever a
///   candidate the room still remembers.
pub fn entitlement<'a>(state: &'a RoomState, user: &UserId) -> Result<Entitlement<'a>, Rejection> {
    let room = state.room().ok_or(Rejection::NotFound("room not found"))?;
    let entitlement = if user == &room.host {
        Entitlement::Host
    } else if let Some(seat) = state.seat(user) {
        Entitlement::Cohost(seat)
    } else if state.has_offer_history(user) {
        return Err(Rejection::FailedPrecondition(
            "user holds no approved seat in this room",
        ));
    } else {
        return Err(Rejection::PermissionDenied(
            "only the host and co-hosts may broadcast",
        ));
    };
    if room.status != RoomStatus::Live {
        return Err(Rejection::FailedPrecondition("room is not live"));
    }
    Ok(entitlement)
}
