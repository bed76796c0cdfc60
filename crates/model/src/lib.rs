//! The reference model of the cohost rules: the contract's tables read a second time, as plainly as possible,
//! for the core's property test and the simulator's auditor to hold `cohost-core` against.
//!
//! The model's rules know nothing of `cohost-core`: they keep plain vectors, scan them, and state each rule of
//! the contract once, in the documented order of checks. Rooms and users are small indices (`room-0`,
//! `user-3`), so random histories collide often. Only [`compare_room`] looks at the core's `RoomState`, to
//! compare the two readings.
//!
//! It never calls [`decide`](cohost_core::decide) or [`apply`](cohost_core::apply), so a wrong rule in the
//! core cannot hide by being copied here; it counts events rather than building them, and does no IO. It is
//! a test harness, not part of the product: nothing the daemon or the engine ships depends on it, and
//! [`compare_room`] panics on purpose. Its users: `cohost-core`'s state-machine test
//! (`crates/core/tests/state-machine.rs`) and `cohost-sim`'s auditor, and [`Rng`] is the seeded dice of the
//! simulator, the benchmarks and the crash test too. Its neighbours are [`cohost_core`], which it holds to
//! the contract, and [`cohost_proto`], whose commands and error codes it speaks.
//!
//! ```
//! use cohost_core::{Context, RoomState, apply, decide};
//! use cohost_model::{Model, Op, Who, compare_room, model_step, policy, to_command, user_name};
//! use cohost_proto::Actor;
//!
//! // user-0 creates room-0, in the model and in the core, and the two readings agree.
//! let mut model = Model::new();
//! let op = Op::Create { max_cohosts: None, bad_title: false };
//! assert_eq!(model_step(&mut model, 0, Who::User(0), op, None), Ok(1));
//!
//! let mut room = RoomState::default();
//! let actor = Actor::User(user_name(0));
//! for event in decide(&room, &to_command(0, op), &Context::new(&actor, 0, policy())).unwrap() {
//!     apply(&mut room, &event);
//! }
//! compare_room(&room, model.rooms[0].as_ref());
//! ```

#![warn(missing_docs)]

mod rng;

pub use rng::Rng;

use cohost_core::RoomState;
use cohost_proto::{
    Actor, BanUser, CohostMedia, Command, CreateRoom, EndAbandoned, ErrorCode, InvitationId,
    InvitationKind, InvitationStatus, InvitationTarget, Invite, MoveCohost, Presence,
    RequestToJoin, RequestsOpen, RoomId, RoomStatus, RoomTarget, SeatTarget, StopReason, UserId,
    UserTarget,
};

/// Rooms in a history.
pub const ROOMS: usize = 3;
/// Users in a history.
pub const USERS: usize = 5;
/// The invitation TTL the model assumes; the core must run with the same policy.
pub const TTL_MS: u64 = 10_000;
/// Seats when `create_room` names none.
pub const SEATS_DEFAULT: usize = 2;
/// Rooms one host may hold open at once; with [`ROOMS`] rooms, histories reach it.
pub const OPEN_ROOMS_PER_HOST: usize = 2;
/// Pending offers one candidate may hold across rooms; with [`ROOMS`] rooms, histories reach it.
pub const PENDING_PER_CANDIDATE: usize = 2;
/// The contract's bound on moderators (out of the model's reach with its few users: a core case covers it).
pub const MODERATORS_MAX: usize = 8;
/// The contract's bound on bans in a room (out of the model's reach too).
pub const BANS_MAX: usize = 1_024;
/// The longest ban with a duration, in seconds.
pub const BAN_DURATION_MAX_S: u64 = 366 * 24 * 3600;

/// How long a co-host may stay away before the system removes them; a little over the TTL, so histories reach
/// both.
pub const GRACE_MS: u64 = 15_000;

/// The core's policy for the model's histories.
pub fn policy() -> cohost_core::Policy {
    cohost_core::Policy::new(TTL_MS, SEATS_DEFAULT as u8)
        .and_then(|p| p.with_quotas(OPEN_ROOMS_PER_HOST as u32, PENDING_PER_CANDIDATE as u32))
        .and_then(|p| p.with_disconnect_grace_ms(GRACE_MS))
        .expect("the model's policy is in range")
}

/// The id of room index `room`: `room-<room>`.
pub fn room_name(room: usize) -> RoomId {
    RoomId::new(&format!("room-{room}")).unwrap()
}

/// The id of user index `user`: `user-<user>`.
pub fn user_name(user: usize) -> UserId {
    UserId::new(&format!("user-{user}")).unwrap()
}

/// Who sends a command, in the model's small indices: the core's `Actor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// User index `n` (below [`USERS`]), `user-<n>`.
    User(usize),
    /// The engine itself: timers and LiveKit's reports.
    System,
}

/// One command of the contract, its arguments as model indices: users below [`USERS`], invitations by their
/// number in the room (from 1), seats by number (from 1; 0 and past the room's seats are out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// create_room.
    Create {
        /// The seats asked for; `None` for [`SEATS_DEFAULT`].
        max_cohosts: Option<u8>,
        /// Send a title over 200 characters, which must be `invalid_argument`.
        bad_title: bool,
    },
    /// go_live.
    GoLive,
    /// stop_room.
    Stop,
    /// The candidate, and the seat the invitation names.
    Invite(usize, Option<u8>),
    /// request_to_join by the sender, naming a seat or none.
    Request(Option<u8>),
    /// accept_invitation of invitation number n.
    Accept(u64),
    /// reject_invitation of invitation number n.
    Reject(u64),
    /// cancel_invitation of invitation number n.
    Cancel(u64),
    /// The timer's expire of invitation number n.
    Expire(u64),
    /// remove_cohost of the user.
    Remove(usize),
    /// leave_stage by the sender.
    Leave,
    /// LiveKit's report that the user joined (`true`) or left (`false`), unstamped.
    Presence(usize, bool),
    /// add_moderator of the user.
    AddModerator(usize),
    /// remove_moderator of the user.
    RemoveModerator(usize),
    /// set_requests_open.
    SetRequestsOpen(bool),
    /// move_cohost of the user to the seat.
    Move(usize, u8),
    /// lock_seat.
    Lock(u8),
    /// unlock_seat.
    Unlock(u8),
    /// The user, and the ban's duration in seconds.
    Ban(usize, Option<u64>),
    /// unban_user of the user.
    Unban(usize),
    /// set_cohost_media of the user: audio, video, each left alone when `None`.
    Media(usize, Option<bool>, Option<bool>),
    /// The timer's removal of a co-host away past the grace.
    Disconnect(usize),
    /// The timer's ending of an abandoned room, with the reason it names (any reason, to see the others refused).
    EndAbandoned(StopReason),
}

/// One step of a history: a command, or the clock moving on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A command on room index `room` (below [`ROOMS`]).
    Command {
        /// The room index.
        room: usize,
        /// Who sends it.
        who: Who,
        /// What it asks.
        op: Op,
        /// The room version the sender expects, if it names one: a mismatch is `conflict`.
        expected_version: Option<u64>,
    },
    /// The clock moves on by this many ms.
    Tick(u64),
}

/// An invitation or request as the model keeps it: what the core's `Invitation` must agree with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOffer {
    /// Invite (the host offers) or request (the candidate asks).
    pub kind: InvitationKind,
    /// The user index offered the seat.
    pub candidate: usize,
    /// Pending, or how it ended.
    pub status: InvitationStatus,
    /// When it may expire: its creation plus [`TTL_MS`].
    pub expires_ms: u64,
    /// The seat it names: asked for, or (once approved) taken.
    pub seat: Option<u8>,
}

/// A held co-host seat as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSeat {
    /// The co-host's user index.
    pub user: usize,
    /// The invitation whose approval gave the seat.
    pub invitation: u64,
    /// Whether LiveKit last reported them connected.
    pub online: bool,
    /// The seat number, from 1 to the room's `max_cohosts`.
    pub seat: u8,
    /// Whether they may publish audio.
    pub audio: bool,
    /// Whether they may publish video.
    pub video: bool,
    /// Since when the co-host has been away: from the accept until a report that they joined.
    pub away_since: Option<u64>,
}

/// A room as the model keeps it: what [`compare_room`] holds the core's `RoomState` to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoom {
    /// The host's user index.
    pub host: usize,
    /// Idle, live or ended.
    pub status: RoomStatus,
    /// How many seats the room has, 1 to 16.
    pub max_cohosts: usize,
    /// In the order seated.
    pub seats: Vec<ModelSeat>,
    /// Invitation number n is `offers[n - 1]`.
    pub offers: Vec<ModelOffer>,
    /// Whether LiveKit last reported the host connected.
    pub host_online: bool,
    /// Events the room has had, as the core's room version counts them.
    pub version: u64,
    /// In appointment order.
    pub moderators: Vec<usize>,
    /// Whether candidates may request to join.
    pub requests_open: bool,
    /// Ascending.
    pub locked: Vec<u8>,
    /// (user, until_ms), in the order banned; an ended ban stays until the next ban prunes it.
    pub bans: Vec<(usize, Option<u64>)>,
}

/// The whole model: the clock and [`ROOMS`] rooms. Plain data, cloned freely by the property test.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The model's clock, in ms from 0; only [`Step::Tick`] moves it.
    pub now_ms: u64,
    /// Room index n is `rooms[n]`; `None` until it is created. `Model::default()` has no slots: use
    /// [`Model::new`].
    pub rooms: Vec<Option<ModelRoom>>,
    /// The outcome the last step must have: `Ok(events emitted)` or the error code.
    pub last: Option<Result<u64, ErrorCode>>,
}

impl Model {
    /// No room exists yet, and the clock reads 0.
    pub fn new() -> Self {
        Self {
            now_ms: 0,
            rooms: vec![None; ROOMS],
            last: None,
        }
    }
}

impl ModelRoom {
    /// Whether the candidate holds a pending offer here.
    pub fn pending(&self, candidate: usize) -> bool {
        self.offers
            .iter()
            .any(|o| o.candidate == candidate && o.status == InvitationStatus::Pending)
    }

    /// How many offers are pending.
    pub fn pending_count(&self) -> usize {
        self.offers
            .iter()
            .filter(|o| o.status == InvitationStatus::Pending)
            .count()
    }

    /// Whether the user holds a seat.
    pub fn seated(&self, user: usize) -> bool {
        self.seats.iter().any(|s| s.user == user)
    }

    /// Whether a ban of the user holds at `now` (ms).
    pub fn banned(&self, user: usize, now: u64) -> bool {
        self.bans
            .iter()
            .any(|&(u, until)| u == user && until.is_none_or(|until| now < until))
    }

    /// Neither taken nor locked.
    pub fn free(&self, seat: u8) -> bool {
        !self.locked.contains(&seat) && !self.seats.iter().any(|s| s.seat == seat)
    }

    /// Whether the room has this seat number: 1 to `max_cohosts`.
    pub fn in_range(&self, seat: u8) -> bool {
        (1..=self.max_cohosts).contains(&usize::from(seat))
    }

    /// The lowest free seat.
    pub fn lowest_free(&self) -> Option<u8> {
        (1..=self.max_cohosts as u8).find(|&n| self.free(n))
    }
}

use ErrorCode as E;

/// Decides one command the model's way, changing `model` when it succeeds: `Ok(events it appends)` or the
/// contract's error code.
///
/// # Errors
///
/// The contract's code for the first check the command fails, in the contract's order of checks: the
/// code the core's [`Rejection::code`](cohost_core::Rejection::code) must give.
///
/// # Panics
///
/// When `room_ix` is not below [`ROOMS`], or the step names a user not below [`USERS`].
pub fn model_step(
    model: &mut Model,
    room_ix: usize,
    who: Who,
    op: Op,
    expected: Option<u64>,
) -> Result<u64, E> {
    let now = model.now_ms;
    let across = Across::count(&model.rooms);
    let slot = &mut model.rooms[room_ix];
    if let Op::Create {
        max_cohosts,
        bad_title,
    } = op
    {
        return create(slot, who, max_cohosts, bad_title, expected, &across);
    }
    let room = slot.as_mut().ok_or(E::NotFound)?;
    if expected.is_some_and(|v| v != room.version) {
        return Err(E::Conflict);
    }
    let events = room_step(room, who, op, now, &across)?;
    room.version += events;
    Ok(events)
}

/// What the quotas across rooms count, by user index.
struct Across {
    open_rooms: [usize; USERS],
    pending: [usize; USERS],
}

impl Across {
    fn count(rooms: &[Option<ModelRoom>]) -> Self {
        let mut across = Across {
            open_rooms: [0; USERS],
            pending: [0; USERS],
        };
        for room in rooms.iter().flatten() {
            if room.status != RoomStatus::Ended {
                across.open_rooms[room.host] += 1;
            }
            for offer in room.offers.iter() {
                if offer.status == InvitationStatus::Pending {
                    across.pending[offer.candidate] += 1;
                }
            }
        }
        across
    }
}

fn create(
    slot: &mut Option<ModelRoom>,
    who: Who,
    max_cohosts: Option<u8>,
    bad_title: bool,
    expected: Option<u64>,
    across: &Across,
) -> Result<u64, E> {
    if bad_title || max_cohosts.is_some_and(|m| m == 0 || m > 16) {
        return Err(E::InvalidArgument);
    }
    if slot.is_some() {
        return Err(E::AlreadyExists);
    }
    if expected.is_some_and(|v| v != 0) {
        return Err(E::Conflict);
    }
    let Who::User(host) = who else {
        return Err(E::PermissionDenied);
    };
    if across.open_rooms[host] >= OPEN_ROOMS_PER_HOST {
        return Err(E::ResourceExhausted);
    }
    *slot = Some(ModelRoom {
        host,
        status: RoomStatus::Idle,
        max_cohosts: max_cohosts.map_or(SEATS_DEFAULT, usize::from),
        seats: vec![],
        offers: vec![],
        host_online: false,
        version: 1,
        moderators: vec![],
        requests_open: true,
        locked: vec![],
        bans: vec![],
    });
    Ok(1)
}

/// A command on an existing room, once its version is checked: the events it appends.
fn room_step(room: &mut ModelRoom, who: Who, op: Op, now: u64, across: &Across) -> Result<u64, E> {
    let is_host = who == Who::User(room.host);
    let runs_stage = is_host || matches!(who, Who::User(u) if room.moderators.contains(&u));
    let host_or_system = is_host || who == Who::System;
    let stage_or_system = runs_stage || who == Who::System;
    match op {
        Op::Create { .. } => unreachable!("model_step creates"),
        Op::GoLive if !is_host => Err(E::PermissionDenied),
        Op::GoLive if room.status != RoomStatus::Idle => Err(E::FailedPrecondition),
        Op::GoLive => {
            room.status = RoomStatus::Live;
            Ok(1)
        }
        Op::Stop if !host_or_system => Err(E::PermissionDenied),
        Op::Stop if room.status == RoomStatus::Ended => Err(E::FailedPrecondition),
        Op::Stop => Ok(stop(room)),
        Op::Invite(..) if !runs_stage => Err(E::PermissionDenied),
        Op::Invite(candidate, _) if candidate == room.host => Err(E::InvalidArgument),
        Op::Invite(candidate, _) if who == Who::User(candidate) => Err(E::InvalidArgument),
        Op::Invite(candidate, seat) => {
            let offer = (InvitationKind::Invite, seat);
            open_offer(room, candidate, offer, now, across)
        }
        Op::Request(seat) => match who {
            Who::User(_) if !is_host && !room.requests_open => Err(E::FailedPrecondition),
            Who::User(candidate) if !is_host => open_offer(
                room,
                candidate,
                (InvitationKind::Request, seat),
                now,
                across,
            ),
            _ => Err(E::PermissionDenied),
        },
        Op::SetRequestsOpen(_) if !runs_stage => Err(E::PermissionDenied),
        Op::SetRequestsOpen(_) if room.status == RoomStatus::Ended => Err(E::FailedPrecondition),
        Op::SetRequestsOpen(open) if open == room.requests_open => Ok(0),
        Op::SetRequestsOpen(open) => {
            room.requests_open = open;
            Ok(1)
        }
        Op::Accept(n) | Op::Reject(n) | Op::Cancel(n) | Op::Expire(n) => {
            settle_offer(room, who, op, n, now)
        }
        Op::Remove(_) if !stage_or_system => Err(E::PermissionDenied),
        Op::Remove(user) => vacate(room, user),
        Op::Leave => match who {
            Who::User(user) => vacate(room, user),
            Who::System => Err(E::PermissionDenied),
        },
        Op::Presence(..) if who != Who::System => Err(E::PermissionDenied),
        Op::Presence(user, online) => presence(room, user, online),
        Op::Disconnect(user) => disconnect(room, who, user, now),
        Op::EndAbandoned(reason) => end_abandoned(room, who, reason),
        Op::AddModerator(_) | Op::RemoveModerator(_) => moderate(room, is_host, who, op),
        _ if !runs_stage => Err(E::PermissionDenied),
        _ if room.status == RoomStatus::Ended => Err(E::FailedPrecondition),
        _ => stage_control(room, who, op, now),
    }
}

/// Adding a moderator is the host's alone; removing one, the host's or the system's.
fn moderate(room: &mut ModelRoom, is_host: bool, who: Who, op: Op) -> Result<u64, E> {
    let system_removes = who == Who::System && matches!(op, Op::RemoveModerator(_));
    match op {
        _ if !is_host && !system_removes => Err(E::PermissionDenied),
        _ if room.status == RoomStatus::Ended => Err(E::FailedPrecondition),
        Op::AddModerator(user) if user == room.host => Err(E::InvalidArgument),
        Op::AddModerator(user) if room.moderators.contains(&user) => Err(E::AlreadyExists),
        Op::AddModerator(_) if room.moderators.len() >= MODERATORS_MAX => Err(E::ResourceExhausted),
        Op::AddModerator(user) => {
            room.moderators.push(user);
            Ok(1)
        }
        Op::RemoveModerator(user) => {
            let at = room
                .moderators
                .iter()
                .position(|&m| m == user)
                .ok_or(E::NotFound)?;
            room.moderators.remove(at);
            Ok(1)
        }
        _ => unreachable!("room_step passes moderator ops only"),
    }
}

/// Seats, bans and media, once the caller is known to run the stage of a room not ended.
fn stage_control(room: &mut ModelRoom, who: Who, op: Op, now: u64) -> Result<u64, E> {
    match op {
        Op::Move(user, seat) => move_seat(room, user, seat),
        Op::Lock(seat) | Op::Unlock(seat) => lock(room, seat, matches!(op, Op::Lock(_))),
        Op::Ban(user, duration) => ban(room, who, user, duration, now),
        Op::Unban(user) if !room.banned(user, now) => Err(E::NotFound),
        Op::Unban(user) => {
            room.bans.retain(|ban| ban.0 != user);
            Ok(1)
        }
        Op::Media(_, None, None) => Err(E::InvalidArgument),
        Op::Media(user, audio, video) => {
            let seat = room
                .seats
                .iter_mut()
                .find(|s| s.user == user)
                .ok_or(E::NotFound)?;
            let now = (audio.unwrap_or(seat.audio), video.unwrap_or(seat.video));
            let changed = now != (seat.audio, seat.video);
            (seat.audio, seat.video) = now;
            Ok(u64::from(changed))
        }
        _ => unreachable!("room_step passes stage controls only"),
    }
}

fn move_seat(room: &mut ModelRoom, user: usize, to: u8) -> Result<u64, E> {
    if !room.in_range(to) {
        return Err(E::InvalidArgument);
    }
    let from = room
        .seats
        .iter()
        .find(|s| s.user == user)
        .ok_or(E::NotFound)?
        .seat;
    if room.locked.contains(&to) {
        return Err(E::FailedPrecondition);
    }
    for seat in room.seats.iter_mut() {
        if seat.user == user {
            seat.seat = to;
        } else if seat.seat == to {
            seat.seat = from;
        }
    }
    Ok(u64::from(from != to))
}

fn lock(room: &mut ModelRoom, seat: u8, locked: bool) -> Result<u64, E> {
    if !room.in_range(seat) {
        return Err(E::InvalidArgument);
    }
    if room.locked.contains(&seat) == locked {
        return Ok(0);
    }
    if locked && room.seats.iter().any(|s| s.seat == seat) {
        return Err(E::FailedPrecondition);
    }
    if locked {
        room.locked.push(seat);
        room.locked.sort_unstable();
    } else {
        room.locked.retain(|&n| n != seat);
    }
    Ok(1)
}

/// Cancels the user's pending offers, takes their seat and their role, then bans them.
fn ban(
    room: &mut ModelRoom,
    who: Who,
    user: usize,
    duration: Option<u64>,
    now: u64,
) -> Result<u64, E> {
    if duration.is_some_and(|d| d == 0 || d > BAN_DURATION_MAX_S) {
        return Err(E::InvalidArgument);
    }
    let moderator = room.moderators.contains(&user);
    if user == room.host || (moderator && who != Who::User(room.host)) {
        return Err(E::PermissionDenied);
    }
    let holding = room
        .bans
        .iter()
        .filter(|&&(u, _)| u != user && room.banned(u, now))
        .count();
    if holding >= BANS_MAX {
        return Err(E::ResourceExhausted);
    }
    let mut events = 1;
    for offer in room.offers.iter_mut().filter(|o| o.candidate == user) {
        if offer.status == InvitationStatus::Pending {
            offer.status = InvitationStatus::Cancelled;
            events += 1;
        }
    }
    let seats = room.seats.len();
    room.seats.retain(|s| s.user != user);
    room.moderators.retain(|&m| m != user);
    events += (seats - room.seats.len()) as u64 + u64::from(moderator);
    room.bans
        .retain(|&(u, until)| u != user && until.is_none_or(|until| now < until));
    room.bans.push((user, duration.map(|d| now + d * 1_000)));
    Ok(events)
}

/// Cancels every pending offer, ends every seat, then ends the room.
fn stop(room: &mut ModelRoom) -> u64 {
    let mut cancelled = 0;
    for offer in room
        .offers
        .iter_mut()
        .filter(|o| o.status == InvitationStatus::Pending)
    {
        offer.status = InvitationStatus::Cancelled;
        cancelled += 1;
    }
    let seats = room.seats.len() as u64;
    room.seats.clear();
    room.status = RoomStatus::Ended;
    cancelled + seats + 1
}

/// The user's seat ends (removed or left). An ended room is final.
fn vacate(room: &mut ModelRoom, user: usize) -> Result<u64, E> {
    if room.status == RoomStatus::Ended {
        return Err(E::FailedPrecondition);
    }
    let at = room
        .seats
        .iter()
        .position(|s| s.user == user)
        .ok_or(E::NotFound)?;
    room.seats.remove(at);
    Ok(1)
}

/// The timer's removal of a co-host away for the grace or longer.
fn disconnect(room: &mut ModelRoom, who: Who, user: usize, now: u64) -> Result<u64, E> {
    if who != Who::System {
        return Err(E::PermissionDenied);
    }
    if room.status == RoomStatus::Ended {
        return Err(E::FailedPrecondition);
    }
    let seat = room
        .seats
        .iter()
        .find(|s| s.user == user)
        .ok_or(E::NotFound)?;
    match seat.away_since {
        Some(since) if now >= since + GRACE_MS => vacate(room, user),
        _ => Err(E::FailedPrecondition),
    }
}

/// The timer's ending of a room idle too long, or live with its host away too long. The time is the
/// engine's to judge; the rule checks that the room is as the reason says.
fn end_abandoned(room: &mut ModelRoom, who: Who, reason: StopReason) -> Result<u64, E> {
    if who != Who::System {
        return Err(E::PermissionDenied);
    }
    let holds = match reason {
        StopReason::HostAbsent => room.status == RoomStatus::Live && !room.host_online,
        StopReason::NeverLive => room.status == RoomStatus::Idle,
        StopReason::Host | StopReason::System => return Err(E::InvalidArgument),
    };
    if !holds {
        return Err(E::FailedPrecondition);
    }
    Ok(stop(room))
}

fn presence(room: &mut ModelRoom, user: usize, online: bool) -> Result<u64, E> {
    let ended = room.status == RoomStatus::Ended;
    let current = if user == room.host {
        &mut room.host_online
    } else {
        &mut room
            .seats
            .iter_mut()
            .find(|s| s.user == user)
            .ok_or(E::NotFound)?
            .online
    };
    if ended {
        return Ok(0);
    }
    let changed = *current != online;
    *current = online;
    // An unstamped report that they left says not since when: the grace keeps the start it had.
    if let Some(seat) = room.seats.iter_mut().find(|s| s.user == user && online) {
        seat.away_since = None;
    }
    Ok(u64::from(changed))
}

fn open_offer(
    room: &mut ModelRoom,
    candidate: usize,
    (kind, seat): (InvitationKind, Option<u8>),
    now: u64,
    across: &Across,
) -> Result<u64, E> {
    if seat.is_some_and(|n| !room.in_range(n)) {
        return Err(E::InvalidArgument);
    }
    if room.status == RoomStatus::Ended {
        return Err(E::FailedPrecondition);
    }
    if room.banned(candidate, now) {
        return Err(E::PermissionDenied);
    }
    if room.seated(candidate) || room.pending(candidate) {
        return Err(E::AlreadyExists);
    }
    if room.pending_count() >= 32 || room.lowest_free().is_none() {
        return Err(E::ResourceExhausted);
    }
    if seat.is_some_and(|n| room.locked.contains(&n)) {
        return Err(E::FailedPrecondition);
    }
    if across.pending[candidate] >= PENDING_PER_CANDIDATE {
        return Err(E::ResourceExhausted);
    }
    room.offers.push(ModelOffer {
        kind,
        candidate,
        status: InvitationStatus::Pending,
        expires_ms: now + TTL_MS,
        seat,
    });
    Ok(1)
}

fn settle_offer(room: &mut ModelRoom, who: Who, op: Op, n: u64, now: u64) -> Result<u64, E> {
    let index = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .filter(|&i| i < room.offers.len());
    let index = index.ok_or(E::NotFound)?;
    let host = room.host;
    let offer = &room.offers[index];
    let (initiator, responder) = match offer.kind {
        InvitationKind::Invite => (host, offer.candidate),
        InvitationKind::Request => (offer.candidate, host),
    };
    // A moderator acts for the host, never on an offer to themselves.
    let for_host = |kind| {
        offer.kind == kind
            && matches!(who, Who::User(u) if room.moderators.contains(&u) && u != offer.candidate)
    };
    let allowed = match op {
        Op::Accept(_) | Op::Reject(_) => {
            who == Who::User(responder) || for_host(InvitationKind::Request)
        }
        Op::Cancel(_) => {
            who == Who::User(initiator) || for_host(InvitationKind::Invite) || who == Who::System
        }
        _ => who == Who::System,
    };
    if !allowed {
        return Err(E::PermissionDenied);
    }
    if offer.status != InvitationStatus::Pending {
        return Err(E::FailedPrecondition);
    }
    let due = now >= offer.expires_ms;
    let status = match op {
        Op::Accept(_) => {
            if due || room.status == RoomStatus::Ended {
                return Err(E::FailedPrecondition);
            }
            let Some(lowest) = room.lowest_free() else {
                return Err(E::ResourceExhausted);
            };
            let seat = offer.seat.filter(|&s| room.in_range(s) && room.free(s));
            let seat = seat.unwrap_or(lowest);
            room.seats.push(ModelSeat {
                user: offer.candidate,
                invitation: n,
                online: false,
                seat,
                audio: true,
                video: true,
                away_since: (room.status == RoomStatus::Live).then_some(now),
            });
            room.offers[index].seat = Some(seat);
            InvitationStatus::Approved
        }
        Op::Reject(_) => InvitationStatus::Rejected,
        Op::Cancel(_) => InvitationStatus::Cancelled,
        _ if !due => return Err(E::FailedPrecondition),
        _ => InvitationStatus::Expired,
    };
    room.offers[index].status = status;
    Ok(1)
}

/// Random choices, read against the current model so that most commands come from a plausible actor.
///
/// Any values will do within the stated ranges; the test or simulator draws them and [`Model::roll`] makes a
/// [`Step`] of them.
#[derive(Debug, Clone)]
pub struct Dice {
    /// The room index, below [`ROOMS`].
    pub room: usize,
    /// Which op, by weight; about a fifth of the values mean a tick instead. Any `u8`.
    pub op: u8,
    /// The sender: 0–3 the host, 4–6 the offer's candidate, 7 the target user, 8 the system, 9 a
    /// moderator, else `other`.
    pub who: u8,
    /// The target user index (below [`USERS`]), or a pick among the room's seats, moderators or bans.
    pub user: usize,
    /// A second user index, below [`USERS`]: the invitee, the new moderator, an outsider sender.
    pub other: usize,
    /// Picks the invitation (mostly a pending one) and the seat; any value.
    pub offer: usize,
    /// The presence or open-requests flag, and a coin for a few other picks.
    pub online: bool,
    /// How far a tick moves the clock, in ms; also a source of small coins.
    pub tick_ms: u64,
    /// 18 sends the room's version as expected, 19 a wrong one, else none; also picks a ban duration.
    pub version: u8,
    /// create_room's seats: 0 and 4 ask out of range, 1–3 and 5–8 a few, others the default.
    pub max_cohosts: u8,
    /// With a fifth of the ticks, asks create_room for a title too long.
    pub bad_title: bool,
}

impl Model {
    /// Weights by op, so that most commands reach a room that exists and an offer that is pending.
    const OP_WEIGHTS: [(u8, u8); 23] = [
        (0, 1),
        (1, 2),
        (2, 1),
        (3, 6),
        (4, 4),
        (5, 6),
        (6, 3),
        (7, 3),
        (8, 2),
        (9, 2),
        (10, 2),
        (11, 3),
        (12, 2),
        (13, 1),
        (14, 2),
        (15, 2),
        (16, 1),
        (17, 1),
        (18, 2),
        (19, 1),
        (20, 2),
        (21, 2),
        (22, 1),
    ];

    /// A step read off the dice against the current model, so most commands come from a plausible party.
    pub fn roll(&self, d: Dice) -> Step {
        let Some(room) = self.rooms[d.room].as_ref() else {
            return self.roll_missing_room(d);
        };
        let Some(mut op_ix) = Self::weighted_op(d.op) else {
            return Step::Tick(d.tick_ms);
        };
        let n = Self::offer_number(room, d.offer);
        let offer = room.offers.get(n as usize - 1);
        let seated = (!room.seats.is_empty() && !d.user.is_multiple_of(3))
            .then(|| room.seats[d.user % room.seats.len()].user);
        let target = seated.unwrap_or(d.user);
        let who = match d.who {
            0..=3 => Who::User(room.host),
            4..=6 => Who::User(offer.map_or(target, |o| o.candidate)),
            7 => Who::User(target),
            8 => Who::System,
            9 if !room.moderators.is_empty() => {
                Who::User(room.moderators[d.other % room.moderators.len()])
            }
            _ => Who::User(d.other),
        };
        if room.offers.is_empty() && (5..=8).contains(&op_ix) {
            op_ix = 3;
        }
        if !room.seats.is_empty() && (op_ix == 3 || op_ix == 4) && d.offer.is_multiple_of(2) {
            op_ix = 9 + (d.offer % 4 / 2) as u8;
        }
        let op = Self::roll_op(room, &d, op_ix, n, target);
        let who = match op {
            Op::Expire(_) | Op::Presence(..) | Op::Disconnect(_) | Op::EndAbandoned(_)
                if d.who < 8 =>
            {
                Who::System
            }
            Op::Leave if d.who < 7 => Who::User(target),
            _ => who,
        };
        let expected_version = match d.version {
            18 => Some(room.version),
            19 => Some(room.version + 1),
            _ => None,
        };
        Step::Command {
            room: d.room,
            who,
            op,
            expected_version,
        }
    }

    /// The op numbered `op_ix`, its target and arguments read off the dice.
    fn roll_op(room: &ModelRoom, d: &Dice, op_ix: u8, n: u64, target: usize) -> Op {
        // Mostly a seat of the room, sometimes none (0) or one past its last.
        let seat = (d.offer % (room.max_cohosts + 2)) as u8;
        let asked = d.tick_ms.is_multiple_of(3).then_some(seat);
        match op_ix {
            0 => Self::create(d),
            1 => Op::GoLive,
            2 => Op::Stop,
            3 => Op::Invite(d.other, asked),
            4 => Op::Request(asked),
            5 => Op::Accept(n),
            6 => Op::Reject(n),
            7 => Op::Cancel(n),
            8 => Op::Expire(n),
            9 => Op::Remove(target),
            10 => Op::Leave,
            12 => Op::AddModerator(d.other),
            14 => Op::SetRequestsOpen(d.online),
            15 => Op::Move(target, seat),
            16 => Op::Lock(seat),
            17 => Op::Unlock(seat),
            21 => Op::Disconnect(target),
            22 => Op::EndAbandoned(
                [
                    StopReason::HostAbsent,
                    StopReason::NeverLive,
                    StopReason::Host,
                    StopReason::System,
                ][d.version as usize % 4],
            ),
            18 => Op::Ban(
                if d.online { target } else { d.other },
                [None, Some(0), Some(5), Some(30)][d.version as usize % 4],
            ),
            19 => Op::Unban(
                room.bans
                    .get(d.user % room.bans.len().max(1))
                    .map_or(d.other, |ban| ban.0),
            ),
            20 => Op::Media(
                target,
                (!d.offer.is_multiple_of(3)).then_some(d.online),
                (d.offer % 3 != 1).then(|| d.tick_ms.is_multiple_of(2)),
            ),
            13 => Op::RemoveModerator(
                room.moderators
                    .get(d.user % room.moderators.len().max(1))
                    .copied()
                    .unwrap_or(d.other),
            ),
            _ => Op::Presence(
                if d.online { target } else { room.host },
                d.tick_ms.is_multiple_of(2),
            ),
        }
    }

    /// An op index by [`Model::OP_WEIGHTS`]; `None` (a fifth of the rolls) means a tick instead.
    fn weighted_op(roll: u8) -> Option<u8> {
        let total: u8 = Self::OP_WEIGHTS.iter().map(|w| w.1).sum();
        let mut pick = roll.checked_rem(total + total / 4).filter(|&p| p < total)?;
        for (ix, weight) in Self::OP_WEIGHTS {
            if pick < weight {
                return Some(ix);
            }
            pick -= weight;
        }
        Some(0)
    }

    /// Mostly a pending offer, sometimes any offer or one past the last.
    fn offer_number(room: &ModelRoom, roll: usize) -> u64 {
        let pending: Vec<u64> = (1..=room.offers.len() as u64)
            .filter(|&n| room.offers[n as usize - 1].status == InvitationStatus::Pending)
            .collect();
        match pending.len() {
            len if len > 0 && !roll.is_multiple_of(4) => pending[roll % len],
            _ => (roll % (room.offers.len() + 1)) as u64 + 1,
        }
    }

    fn roll_missing_room(&self, d: Dice) -> Step {
        let op = if d.op.is_multiple_of(5) {
            Op::GoLive
        } else {
            Self::create(&d)
        };
        let who = if d.who == 9 {
            Who::System
        } else {
            Who::User(d.other)
        };
        let expected_version = (d.version >= 18).then(|| u64::from(d.version) - 18);
        Step::Command {
            room: d.room,
            who,
            op,
            expected_version,
        }
    }

    fn create(d: &Dice) -> Op {
        let max_cohosts = match d.max_cohosts {
            0 => Some(0),
            1..=3 => Some(d.max_cohosts),
            5..=8 => Some(1),
            4 => Some(17),
            _ => None,
        };
        Op::Create {
            max_cohosts,
            bad_title: d.bad_title && d.tick_ms.is_multiple_of(5),
        }
    }
}

/// The core's command for a model step on room index `room`. The inverse of [`from_command`].
///
/// # Panics
///
/// On invitation number 0, which names no invitation (the model's dice never roll it).
pub fn to_command(room: usize, op: Op) -> Command {
    let room_id = room_name(room);
    let on = |n: u64| InvitationTarget {
        invitation_id: InvitationId::new(room_id.clone(), n).unwrap(),
    };
    match op {
        Op::Create {
            max_cohosts,
            bad_title,
        } => Command::CreateRoom(CreateRoom {
            room_id,
            title: Some(if bad_title {
                "t".repeat(201)
            } else {
                "show".into()
            }),
            max_cohosts,
        }),
        Op::GoLive => Command::GoLive(RoomTarget { room_id }),
        Op::Stop => Command::StopRoom(RoomTarget { room_id }),
        Op::Invite(user, seat) => Command::Invite(Invite {
            room_id,
            user_id: user_name(user),
            seat,
        }),
        Op::Request(seat) => Command::RequestToJoin(RequestToJoin { room_id, seat }),
        Op::Accept(n) => Command::AcceptInvitation(on(n)),
        Op::Reject(n) => Command::RejectInvitation(on(n)),
        Op::Cancel(n) => Command::CancelInvitation(on(n)),
        Op::Expire(n) => Command::Expire(on(n)),
        Op::Remove(user) => Command::RemoveCohost(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::Leave => Command::LeaveStage(RoomTarget { room_id }),
        Op::Presence(user, online) => Command::Presence(Presence {
            room_id,
            user_id: user_name(user),
            online,
            stamp: None,
        }),
        Op::Disconnect(user) => Command::Disconnect(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::EndAbandoned(reason) => Command::EndAbandoned(EndAbandoned { room_id, reason }),
        Op::AddModerator(user) => Command::AddModerator(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::RemoveModerator(user) => Command::RemoveModerator(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::SetRequestsOpen(open) => Command::SetRequestsOpen(RequestsOpen { room_id, open }),
        _ => stage_command(room_id, op),
    }
}

/// The core's command for a seat, ban or media op.
fn stage_command(room_id: RoomId, op: Op) -> Command {
    match op {
        Op::Move(user, seat) => Command::MoveCohost(MoveCohost {
            room_id,
            user_id: user_name(user),
            seat,
        }),
        Op::Lock(seat) => Command::LockSeat(SeatTarget { room_id, seat }),
        Op::Unlock(seat) => Command::UnlockSeat(SeatTarget { room_id, seat }),
        Op::Ban(user, duration_s) => Command::BanUser(BanUser {
            room_id,
            user_id: user_name(user),
            duration_s,
        }),
        Op::Unban(user) => Command::UnbanUser(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::Media(user, audio, video) => Command::SetCohostMedia(CohostMedia {
            room_id,
            user_id: user_name(user),
            audio,
            video,
        }),
        _ => unreachable!("to_command maps the other ops"),
    }
}

/// Panics unless the core's room and the model's agree on everything the model keeps: the room's fields,
/// every seat with its media and away time, locked seats, bans, and every invitation by number. It also
/// asserts what must hold whatever happened: no two co-hosts on one seat, none on a locked one, and no seat
/// or pending offer for a user banned for the room's life.
///
/// # Panics
///
/// On the first difference, naming it: that is its purpose, inside a test.
pub fn compare_room(live: &RoomState, expected: Option<&ModelRoom>) {
    let (Some(room), Some(expected)) = (live.room(), expected) else {
        assert!(
            live.room().is_none() && expected.is_none(),
            "room existence differs"
        );
        return;
    };
    assert_eq!(room.version, expected.version);
    assert_eq!(room.status, expected.status);
    assert_eq!(room.host, user_name(expected.host));
    let moderators: Vec<UserId> = expected.moderators.iter().map(|&m| user_name(m)).collect();
    assert_eq!(room.moderators, moderators, "moderators differ");
    assert_eq!(
        room.requests_open, expected.requests_open,
        "requests_open differs"
    );
    assert_eq!(usize::from(room.max_cohosts), expected.max_cohosts);
    assert!(
        room.cohosts.len() <= usize::from(room.max_cohosts),
        "co-hosts never exceed max_cohosts"
    );
    compare_stage(live, expected);
    check_stage_invariants(live);
    assert_eq!(live.host_online(), expected.host_online);
    for (index, offer) in expected.offers.iter().enumerate() {
        let id = InvitationId::new(room.room_id.clone(), index as u64 + 1).unwrap();
        let held = live
            .invitation(&id)
            .expect("short histories are never pruned");
        assert_eq!(
            (held.kind, held.status, held.expires_ms, held.seat),
            (offer.kind, offer.status, offer.expires_ms, offer.seat)
        );
        assert_eq!(held.user_id, user_name(offer.candidate));
    }
    let mut pending: Vec<&UserId> = live.pending().map(|i| &i.user_id).collect();
    let count = pending.len();
    pending.sort();
    pending.dedup();
    assert_eq!(
        pending.len(),
        count,
        "at most one pending offer per candidate"
    );
}

/// Seats, their media, locked seats and bans.
fn compare_stage(live: &RoomState, expected: &ModelRoom) {
    let room = live.room().expect("compare_room checked the room exists");
    let seats: Vec<_> = room
        .cohosts
        .iter()
        .map(|s| {
            let id = (s.user_id.clone(), s.invitation_id.number(), s.online);
            let away = live.liveness(&s.user_id).and_then(|l| l.offline_since_ms);
            (id, s.seat, s.audio, s.video, away)
        })
        .collect();
    let expected_seats: Vec<_> = expected
        .seats
        .iter()
        .map(|s| {
            let id = (user_name(s.user), s.invitation, s.online);
            (id, s.seat, s.audio, s.video, s.away_since)
        })
        .collect();
    assert_eq!(seats, expected_seats);
    assert_eq!(room.locked_seats, expected.locked, "locked seats differ");
    let bans: Vec<_> = live
        .bans()
        .iter()
        .map(|b| (b.user_id.clone(), b.until_ms))
        .collect();
    let expected_bans: Vec<_> = expected
        .bans
        .iter()
        .map(|&(u, until)| (user_name(u), until))
        .collect();
    assert_eq!(bans, expected_bans, "bans differ");
}

/// What must hold of any room whatever happened: no two co-hosts on one seat, none on a locked seat or out of
/// range, and a user banned for the room's life holds no seat and no pending offer.
fn check_stage_invariants(live: &RoomState) {
    let Some(room) = live.room() else { return };
    let mut taken: Vec<u8> = room.cohosts.iter().map(|s| s.seat).collect();
    taken.sort_unstable();
    taken.dedup();
    assert_eq!(taken.len(), room.cohosts.len(), "two co-hosts on one seat");
    for seat in &room.cohosts {
        assert!(
            (1..=room.max_cohosts).contains(&seat.seat) && !room.locked_seats.contains(&seat.seat),
            "a co-host on seat {} (out of range or locked)",
            seat.seat
        );
    }
    for ban in live.bans().iter().filter(|ban| ban.until_ms.is_none()) {
        assert!(
            !live.is_cohost(&ban.user_id) && live.pending_for(&ban.user_id).is_none(),
            "a banned user holds a seat or a pending offer"
        );
    }
}

fn index_of(name: &str, prefix: &str, count: usize) -> Option<usize> {
    let index: usize = name.strip_prefix(prefix)?.parse().ok()?;
    (index < count && format!("{prefix}{index}") == name).then_some(index)
}

fn room_of(room_id: &RoomId) -> Option<usize> {
    index_of(room_id.as_str(), "room-", ROOMS)
}

fn user_of(user_id: &UserId) -> Option<usize> {
    index_of(user_id.as_str(), "user-", USERS)
}

/// The model's reading of a core command: its room, its party and its step; `None` when it names a room or
/// user outside the model's, or comes from a service (the model has none). The inverse of [`to_command`].
pub fn from_command(actor: &Actor, command: &Command) -> Option<(usize, Who, Op)> {
    let who = match actor {
        Actor::User(user) => Who::User(user_of(user)?),
        Actor::System => Who::System,
        Actor::Service(_) => return None,
    };
    let room = room_of(command.room_id())?;
    let op = match command {
        Command::CreateRoom(create) => Op::Create {
            max_cohosts: create.max_cohosts,
            bad_title: create
                .title
                .as_ref()
                .is_some_and(|t| t.chars().count() > 200 || t.chars().any(char::is_control)),
        },
        Command::GoLive(_) => Op::GoLive,
        Command::StopRoom(_) => Op::Stop,
        Command::Invite(i) => Op::Invite(user_of(&i.user_id)?, i.seat),
        Command::RequestToJoin(r) => Op::Request(r.seat),
        Command::AcceptInvitation(t) => Op::Accept(t.invitation_id.number()),
        Command::RejectInvitation(t) => Op::Reject(t.invitation_id.number()),
        Command::CancelInvitation(t) => Op::Cancel(t.invitation_id.number()),
        Command::Expire(t) => Op::Expire(t.invitation_id.number()),
        Command::RemoveCohost(target) => Op::Remove(user_of(&target.user_id)?),
        Command::LeaveStage(_) => Op::Leave,
        Command::Presence(p) => Op::Presence(user_of(&p.user_id)?, p.online),
        Command::Disconnect(t) => Op::Disconnect(user_of(&t.user_id)?),
        Command::EndAbandoned(e) => Op::EndAbandoned(e.reason),
        Command::AddModerator(t) => Op::AddModerator(user_of(&t.user_id)?),
        Command::RemoveModerator(t) => Op::RemoveModerator(user_of(&t.user_id)?),
        Command::SetRequestsOpen(r) => Op::SetRequestsOpen(r.open),
        Command::MoveCohost(m) => Op::Move(user_of(&m.user_id)?, m.seat),
        Command::LockSeat(s) => Op::Lock(s.seat),
        Command::UnlockSeat(s) => Op::Unlock(s.seat),
        Command::BanUser(b) => Op::Ban(user_of(&b.user_id)?, b.duration_s),
        Command::UnbanUser(t) => Op::Unban(user_of(&t.user_id)?),
        Command::SetCohostMedia(m) => Op::Media(user_of(&m.user_id)?, m.audio, m.video),
    };
    Some((room, who, op))
}
