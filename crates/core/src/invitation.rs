//! The offer of a seat: invite and request_to_join open one; accept, reject, cancel and expire end it.

use cohost_proto::limits::PENDING_PER_ROOM_MAX;
use cohost_proto::{
    Actor, Event, Invitation, InvitationId, InvitationKind, InvitationStatus, Room, RoomStatus,
    UserId,
};

use crate::moderators::runs_stage;
use crate::seats;
use crate::{Context, Rejection, RoomState};

pub(crate) fn invite(
    state: &RoomState,
    room: &Room,
    candidate: &UserId,
    seat: Option<u8>,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if !runs_stage(room, ctx.actor) {
        return Err(Rejection::PermissionDenied(
            "only the host or a moderator may invite",
        ));
    }
    if candidate == &room.host {
        return Err(Rejection::InvalidArgument(
            "the host cannot invite themselves",
        ));
    }
    if ctx.actor.is(candidate) {
        return Err(Rejection::InvalidArgument(
            "a moderator cannot invite themselves",
        ));
    }
    open(state, room, candidate, (InvitationKind::Invite, seat), ctx)
}

pub(crate) fn request(
    state: &RoomState,
    room: &Room,
    seat: Option<u8>,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    let Actor::User(candidate) = ctx.actor else {
        return Err(Rejection::PermissionDenied(
            "only a user may request to join",
        ));
    };
    if candidate == &room.host {
        return Err(Rejection::PermissionDenied(
            "the host cannot request to join their own room",
        ));
    }
    if !room.requests_open {
        return Err(Rejection::FailedPrecondition(
            "the room takes no requests now",
        ));
    }
    open(state, room, candidate, (InvitationKind::Request, seat), ctx)
}

/// Opens an offer of a seat (the numbered one, if `seat` names it) to `candidate`.
fn open(
    state: &RoomState,
    room: &Room,
    candidate: &UserId,
    (kind, seat): (InvitationKind, Option<u8>),
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if let Some(seat) = seat {
        seats::check_in_range(room, seat)?;
    }
    if room.status == RoomStatus::Ended {
        return Err(Rejection::FailedPrecondition("room has ended"));
    }
    if state.ban(candidate, ctx.now_ms).is_some() {
        return Err(Rejection::PermissionDenied("user is banned from this room"));
    }
    if state.is_cohost(candidate) {
        return Err(Rejection::AlreadyExists("user is already a co-host"));
    }
    if state.pending_for(candidate).is_some() {
        return Err(Rejection::AlreadyExists(
            "user already has a pending invitation or request in this room",
        ));
    }
    if state.pending_count() >= PENDING_PER_ROOM_MAX {
        return Err(Rejection::ResourceExhausted(
            "room already has 32 pending invitations and requests",
        ));
    }
    if !seats::any_free(room) {
        return Err(Rejection::ResourceExhausted(
            "every co-host seat is taken or locked",
        ));
    }
    if seat.is_some_and(|n| room.locked_seats.contains(&n)) {
        return Err(Rejection::FailedPrecondition("seat is locked"));
    }
    if ctx.tallies.pending_offers(candidate) >= ctx.policy.pending_per_candidate_max() {
        return Err(Rejection::ResourceExhausted(
            "the candidate already holds as many pending offers across rooms as this deployment allows",
        ));
    }
    let invitation_id = InvitationId::new(room.room_id.clone(), state.next_invitation_number())
        .expect("invitation numbers start at 1");
    let invitation = Invitation {
        invitation_id,
        room_id: room.room_id.clone(),
        kind,
        host: room.host.clone(),
        user_id: candidate.clone(),
        status: InvitationStatus::Pending,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
        expires_ms: ctx.now_ms.saturating_add(ctx.policy.invitation_ttl_ms()),
        seat,
    };
    Ok(vec![Event::InvitationCreated { invitation }])
}

/// The answers to a pending offer, and the timer's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Accept,
    Reject,
    Cancel,
    Expire,
}

pub(crate) fn settle(
    state: &RoomState,
    room: &Room,
    id: &InvitationId,
    outcome: Outcome,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    let invitation = state
        .invitation(id)
        .ok_or(Rejection::NotFound("invitation not found"))?;
    check_party(invitation, room, outcome, ctx)?;
    if !invitation.status.is_pending() {
        return Err(Rejection::FailedPrecondition("invitation is not pending"));
    }
    let due = ctx.now_ms >= invitation.expires_ms;
    let status = match outcome {
        Outcome::Accept if due => {
            return Err(Rejection::FailedPrecondition("invitation has expired"));
        }
        Outcome::Accept if room.status == RoomStatus::Ended => {
            return Err(Rejection::FailedPrecondition("room has ended"));
        }
        Outcome::Accept if !seats::any_free(room) => {
            return Err(Rejection::ResourceExhausted(
                "every co-host seat is taken or locked",
            ));
        }
        Outcome::Expire if !due => {
            return Err(Rejection::FailedPrecondition(
                "invitation has not expired yet",
            ));
        }
        Outcome::Accept => InvitationStatus::Approved,
        Outcome::Reject => InvitationStatus::Rejected,
        Outcome::Cancel => InvitationStatus::Cancelled,
        Outcome::Expire => InvitationStatus::Expired,
    };
    // An approved invitation names the seat it took: the one asked for when free, else the lowest free.
    let seat = match outcome {
        Outcome::Accept => Some(seats::seat_for(room, invitation.seat)),
        _ => invitation.seat,
    };
    let invitation = Invitation {
        status,
        updated_ms: ctx.now_ms,
        seat,
        ..invitation.clone()
    };
    Ok(vec![match outcome {
        Outcome::Accept => Event::InvitationApproved { invitation },
        Outcome::Reject => Event::InvitationRejected { invitation },
        Outcome::Cancel => Event::InvitationCancelled { invitation },
        Outcome::Expire => Event::InvitationExpired { invitation },
    }])
}

/// Whether the caller is the party who may settle the offer this way.
fn check_party(
    invitation: &Invitation,
    room: &Room,
    outcome: Outcome,
    ctx: &Context,
) -> Result<(), Rejection> {
    // A moderator acts for the host (answers requests, cancels the room's invites), never on their own offer.
    let for_host = |kind| {
        invitation.kind == kind && runs_stage(room, ctx.actor) && !ctx.actor.is(&invitation.user_id)
    };
    let allowed = match outcome {
        Outcome::Accept | Outcome::Reject => {
            ctx.actor.is(invitation.responder()) || for_host(InvitationKind::Request)
        }
        // The system (or a service acting as it) withdraws any offer: a user's erasure ends all of theirs.
        Outcome::Cancel => {
            ctx.actor.is(invitation.initiator())
                || for_host(InvitationKind::Invite)
                || ctx.actor.acts_as_system()
        }
        Outcome::Expire => *ctx.actor == Actor::System,
    };
    if allowed {
        return Ok(());
    }
    Err(Rejection::PermissionDenied(match outcome {
        Outcome::Accept | Outcome::Reject => "only the invitation's responder may answer it",
        Outcome::Cancel => "only the invitation's initiator (or the system) may cancel it",
        Outcome::Expire => "only the system expires invitations",
    }))
}
