//! The seats themselves: numbered `1..=max_cohosts`, each free, taken or locked. The host or a moderator moves
//! co-hosts between them, locks and unlocks empty ones, and sets what a co-host may publish.

use cohost_proto::{Event, Room, Seat, UserId};

use crate::moderators::check_stage;
use crate::{Context, Rejection};

/// Whether seat `n` is neither taken nor locked.
pub(crate) fn is_free(room: &Room, n: u8) -> bool {
    !room.cohosts.iter().any(|seat| seat.seat == n) && !room.locked_seats.contains(&n)
}

/// Whether any seat is free: what opening and accepting an offer need.
pub(crate) fn any_free(room: &Room) -> bool {
    (1..=room.max_cohosts).any(|n| is_free(room, n))
}

/// The seat an accept takes: `wanted` when it is in range and free, else the lowest free one. The caller has
/// checked that one is free.
pub(crate) fn seat_for(room: &Room, wanted: Option<u8>) -> u8 {
    wanted
        .filter(|&n| (1..=room.max_cohosts).contains(&n) && is_free(room, n))
        .or_else(|| (1..=room.max_cohosts).find(|&n| is_free(room, n)))
        .expect("a seat is free")
}

/// `seat` names one of the room's seats (else `invalid_argument`).
pub(crate) fn check_in_range(room: &Room, seat: u8) -> Result<(), Rejection> {
    if !(1..=room.max_cohosts).contains(&seat) {
        return Err(Rejection::InvalidArgument(
            "seat is not one of the room's seats",
        ));
    }
    Ok(())
}

fn seated<'a>(room: &'a Room, user: &UserId) -> Result<&'a Seat, Rejection> {
    room.cohosts
        .iter()
        .find(|seat| &seat.user_id == user)
        .ok_or(Rejection::NotFound("user is not a co-host"))
}

/// Moves a co-host to `to`; whoever sits there takes the mover's seat. Moving to one's own seat is nothing.
pub(crate) fn move_cohost(
    room: &Room,
    user: &UserId,
    to: u8,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    check_stage(room, ctx, "only the host or a moderator may move co-hosts")?;
    check_in_range(room, to)?;
    let seat = seated(room, user)?;
    if room.locked_seats.contains(&to) {
        return Err(Rejection::FailedPrecondition("seat is locked"));
    }
    if seat.seat == to {
        return Ok(Vec::new());
    }
    let swapped_with = room
        .cohosts
        .iter()
        .find(|other| other.seat == to)
        .map(|other| other.user_id.clone());
    Ok(vec![Event::CohostMoved {
        user_id: user.clone(),
        seat: to,
        from_seat: seat.seat,
        swapped_with,
    }])
}

/// Locks an empty seat, or unlocks a locked one; asking for what already is appends nothing.
pub(crate) fn lock(
    room: &Room,
    seat: u8,
    locked: bool,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    check_stage(room, ctx, "only the host or a moderator may lock seats")?;
    check_in_range(room, seat)?;
    if room.locked_seats.contains(&seat) == locked {
        return Ok(Vec::new());
    }
    if !locked {
        return Ok(vec![Event::SeatUnlocked { seat }]);
    }
    if room.cohosts.iter().any(|taken| taken.seat == seat) {
        return Err(Rejection::FailedPrecondition("seat is taken"));
    }
    Ok(vec![Event::SeatLocked { seat }])
}

/// Sets what a co-host may publish; what the command leaves out stays, and no change appends nothing.
pub(crate) fn set_media(
    room: &Room,
    user: &UserId,
    audio: Option<bool>,
    video: Option<bool>,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    check_stage(
        room,
        ctx,
        "only the host or a moderator may set a co-host's media",
    )?;
    if audio.is_none() && video.is_none() {
        return Err(Rejection::InvalidArgument("name audio, video or both"));
    }
    let seat = seated(room, user)?;
    let (audio, video) = (audio.unwrap_or(seat.audio), video.unwrap_or(seat.video));
    if (audio, video) == (seat.audio, seat.video) {
        return Ok(Vec::new());
    }
    Ok(vec![Event::CohostMediaChanged {
        user_id: user.clone(),
        audio,
        video,
    }])
}
