//! Bans: one command ends everything a user has in the room (pending offers, seat, moderator role), and
//! until the ban ends they cannot be invited, request to join, or hold a seat, so credentials never reach them.

use cohost_proto::limits::{BAN_DURATION_MAX_S, BANS_PER_ROOM_MAX};
use cohost_proto::{Event, Invitation, InvitationStatus, RemovalReason, Room, UserId};

use crate::moderators::check_stage;
use crate::{Context, Rejection, RoomState};

pub(crate) fn ban(
    state: &RoomState,
    room: &Room,
    user: &UserId,
    duration_s: Option<u64>,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    check_stage(room, ctx, "only the host or a moderator may ban")?;
    if duration_s.is_some_and(|d| d == 0 || d > BAN_DURATION_MAX_S) {
        return Err(Rejection::InvalidArgument(
            "duration_s must be 1 to 31622400 (a year), or left out for the room's life",
        ));
    }
    if user == &room.host {
        return Err(Rejection::PermissionDenied("the host cannot be banned"));
    }
    if room.moderators.contains(user) && !ctx.actor.is(&room.host) {
        return Err(Rejection::PermissionDenied(
            "only the host may ban a moderator",
        ));
    }
    let holding = state
        .bans()
        .iter()
        .filter(|ban| &ban.user_id != user && ban.holds_at(ctx.now_ms))
        .count();
    if holding >= BANS_PER_ROOM_MAX {
        return Err(Rejection::ResourceExhausted(
            "the room holds as many bans as it may",
        ));
    }
    let mut events: Vec<Event> = state
        .pending()
        .filter(|offer| &offer.user_id == user)
        .map(|offer| Event::InvitationCancelled {
            invitation: Invitation {
                status: InvitationStatus::Cancelled,
                updated_ms: ctx.now_ms,
                ..offer.clone()
            },
        })
        .collect();
    if let Some(seat) = state.seat(user) {
        events.push(Event::CohostRemoved {
            user_id: user.clone(),
            invitation_id: seat.invitation_id.clone(),
            reason: RemovalReason::Ban,
        });
    }
    if room.moderators.contains(user) {
        events.push(Event::ModeratorRemoved {
            user_id: user.clone(),
        });
    }
    events.push(Event::UserBanned {
        user_id: user.clone(),
        since_ms: ctx.now_ms,
        until_ms: duration_s.map(|d| ctx.now_ms.saturating_add(d.saturating_mul(1_000))),
    });
    Ok(events)
}

pub(crate) fn unban(
    state: &RoomState,
    room: &Room,
    user: &UserId,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    check_stage(room, ctx, "only the host or a moderator may unban")?;
    if state.ban(user, ctx.now_ms).is_none() {
        return Err(Rejection::NotFound("user is not banned"));
    }
    Ok(vec![Event::UserUnbanned {
        user_id: user.clone(),
    }])
}
