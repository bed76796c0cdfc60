//! The reference model of the cohost rules: the contract's tables read a second time, as plainly as possible,
//! for the core's property test and the simulator's auditor to hold `cohost-core` against.
//!
//! The model's rules know nothing of `cohost-core`: they keep plain vectors, scan them, and state each rule of
//! the contract once, in the documented order of checks. Rooms and users are small indices (`room-0`,
//! `user-3`), so random histories collide often. Only [`compare_room`] looks at the core's `RoomState`, to
//! compare the two readings.

mod rng;

pub use rng::Rng;

use cohost_core::RoomState;
use cohost_proto::{
    Actor, Command, CreateRoom, ErrorCode, InvitationId, InvitationKind, InvitationStatus,
    InvitationTarget, Presence, RequestsOpen, RoomId, RoomStatus, RoomTarget, UserId, UserTarget,
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

/// The core's policy for the model's histories.
pub fn policy() -> cohost_core::Policy {
    cohost_core::Policy::new(TTL_MS, SEATS_DEFAULT as u8)
        .and_then(|p| p.with_quotas(OPEN_ROOMS_PER_HOST as u32, PENDING_PER_CANDIDATE as u32))
        .expect("the model's policy is in range")
}

pub fn room_name(room: usize) -> RoomId {
    RoomId::new(&format!("room-{room}")).unwrap()
}

pub fn user_name(user: usize) -> UserId {
    UserId::new(&format!("user-{user}")).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    User(usize),
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create {
        max_cohosts: Option<u8>,
        bad_title: bool,
    },
    GoLive,
    Stop,
    Invite(usize),
    Request,
    Accept(u64),
    Reject(u64),
    Cancel(u64),
    Expire(u64),
    Remove(usize),
    Leave,
    Presence(usize, bool),
    AddModerator(usize),
    RemoveModerator(usize),
    SetRequestsOpen(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Command {
        room: usize,
        who: Who,
        op: Op,
        expected_version: Option<u64>,
    },
    Tick(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOffer {
    pub kind: InvitationKind,
    pub candidate: usize,
    pub status: InvitationStatus,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoom {
    pub host: usize,
    pub status: RoomStatus,
    pub max_cohosts: usize,
    /// (user, invitation number, online)
    pub seats: Vec<(usize, u64, bool)>,
    /// Invitation number n is `offers[n - 1]`.
    pub offers: Vec<ModelOffer>,
    pub host_online: bool,
    pub version: u64,
    /// In appointment order.
    pub moderators: Vec<usize>,
    pub requests_open: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub now_ms: u64,
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
    pub fn pending(&self, candidate: usize) -> bool {
        self.offers
            .iter()
            .any(|o| o.candidate == candidate && o.status == InvitationStatus::Pending)
    }

    pub fn pending_count(&self) -> usize {
        self.offers
            .iter()
            .filter(|o| o.status == InvitationStatus::Pending)
            .count()
    }

    pub fn seated(&self, user: usize) -> bool {
        self.seats.iter().any(|s| s.0 == user)
    }
}

use ErrorCode as E;

/// Decides one command the model's way, changing `model` when it succeeds: `Ok(events it appends)` or the
/// contract's error code.
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
        Op::Invite(_) if !runs_stage => Err(E::PermissionDenied),
        Op::Invite(candidate) if candidate == room.host => Err(E::InvalidArgument),
        Op::Invite(candidate) if who == Who::User(candidate) => Err(E::InvalidArgument),
        Op::Invite(candidate) => open_offer(room, candidate, InvitationKind::Invite, now, across),
        Op::Request => match who {
            Who::User(_) if !is_host && !room.requests_open => Err(E::FailedPrecondition),
            Who::User(candidate) if !is_host => {
                open_offer(room, candidate, InvitationKind::Request, now, across)
            }
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
        Op::AddModerator(_) | Op::RemoveModerator(_) if !is_host => Err(E::PermissionDenied),
        Op::AddModerator(_) | Op::RemoveModerator(_) if room.status == RoomStatus::Ended => {
            Err(E::FailedPrecondition)
        }
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
    }
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
        .position(|s| s.0 == user)
        .ok_or(E::NotFound)?;
    room.seats.remove(at);
    Ok(1)
}

fn presence(room: &mut ModelRoom, user: usize, online: bool) -> Result<u64, E> {
    let ended = room.status == RoomStatus::Ended;
    let current = if user == room.host {
        &mut room.host_online
    } else {
        &mut room
            .seats
            .iter_mut()
            .find(|s| s.0 == user)
            .ok_or(E::NotFound)?
            .2
    };
    if ended {
        return Ok(0);
    }
    let changed = *current != online;
    *current = online;
    Ok(u64::from(changed))
}

fn open_offer(
    room: &mut ModelRoom,
    candidate: usize,
    kind: InvitationKind,
    now: u64,
    across: &Across,
) -> Result<u64, E> {
    if room.status == RoomStatus::Ended {
        return Err(E::FailedPrecondition);
    }
    if room.seated(candidate) || room.pending(candidate) {
        return Err(E::AlreadyExists);
    }
    if room.pending_count() >= 32 || room.seats.len() >= room.max_cohosts {
        return Err(E::ResourceExhausted);
    }
    if across.pending[candidate] >= PENDING_PER_CANDIDATE {
        return Err(E::ResourceExhausted);
    }
    room.offers.push(ModelOffer {
        kind,
        candidate,
        status: InvitationStatus::Pending,
        expires_ms: now + TTL_MS,
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
        Op::Cancel(_) => who == Who::User(initiator) || for_host(InvitationKind::Invite),
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
            if room.seats.len() >= room.max_cohosts {
                return Err(E::ResourceExhausted);
            }
            room.seats.push((offer.candidate, n, false));
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
#[derive(Debug, Clone)]
pub struct Dice {
    pub room: usize,
    pub op: u8,
    pub who: u8,
    pub user: usize,
    pub other: usize,
    pub offer: usize,
    pub online: bool,
    pub tick_ms: u64,
    pub version: u8,
    pub max_cohosts: u8,
    pub bad_title: bool,
}

impl Model {
    /// Weights by op, so that most commands reach a room that exists and an offer that is pending.
    const OP_WEIGHTS: [(u8, u8); 15] = [
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
            .then(|| room.seats[d.user % room.seats.len()].0);
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
        let op = match op_ix {
            0 => Self::create(&d),
            1 => Op::GoLive,
            2 => Op::Stop,
            3 => Op::Invite(d.other),
            4 => Op::Request,
            5 => Op::Accept(n),
            6 => Op::Reject(n),
            7 => Op::Cancel(n),
            8 => Op::Expire(n),
            9 => Op::Remove(target),
            10 => Op::Leave,
            12 => Op::AddModerator(d.other),
            14 => Op::SetRequestsOpen(d.online),
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
        };
        let who = match op {
            Op::Expire(_) | Op::Presence(..) if d.who < 8 => Who::System,
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

/// The core's command for a model step.
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
        Op::Invite(user) => Command::Invite(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::Request => Command::RequestToJoin(RoomTarget { room_id }),
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
        }),
        Op::AddModerator(user) => Command::AddModerator(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::RemoveModerator(user) => Command::RemoveModerator(UserTarget {
            room_id,
            user_id: user_name(user),
        }),
        Op::SetRequestsOpen(open) => Command::SetRequestsOpen(RequestsOpen { room_id, open }),
    }
}

/// Panics unless the core's room and the model's agree on everything the model keeps.
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
    let seats: Vec<_> = room
        .cohosts
        .iter()
        .map(|s| (s.user_id.clone(), s.invitation_id.number(), s.online))
        .collect();
    let expected_seats: Vec<_> = expected
        .seats
        .iter()
        .map(|&(u, n, online)| (user_name(u), n, online))
        .collect();
    assert_eq!(seats, expected_seats);
    assert_eq!(live.host_online(), expected.host_online);
    for (index, offer) in expected.offers.iter().enumerate() {
        let id = InvitationId::new(room.room_id.clone(), index as u64 + 1).unwrap();
        let held = live
            .invitation(&id)
            .expect("short histories are never pruned");
        assert_eq!(
            (held.kind, held.status, held.expires_ms),
            (offer.kind, offer.status, offer.expires_ms)
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
/// user outside the model's. The inverse of [`to_command`].
pub fn from_command(actor: &Actor, command: &Command) -> Option<(usize, Who, Op)> {
    let who = match actor {
        Actor::User(user) => Who::User(user_of(user)?),
        Actor::System => Who::System,
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
        Command::Invite(target) => Op::Invite(user_of(&target.user_id)?),
        Command::RequestToJoin(_) => Op::Request,
        Command::AcceptInvitation(t) => Op::Accept(t.invitation_id.number()),
        Command::RejectInvitation(t) => Op::Reject(t.invitation_id.number()),
        Command::CancelInvitation(t) => Op::Cancel(t.invitation_id.number()),
        Command::Expire(t) => Op::Expire(t.invitation_id.number()),
        Command::RemoveCohost(target) => Op::Remove(user_of(&target.user_id)?),
        Command::LeaveStage(_) => Op::Leave,
        Command::Presence(p) => Op::Presence(user_of(&p.user_id)?, p.online),
        Command::AddModerator(t) => Op::AddModerator(user_of(&t.user_id)?),
        Command::RemoveModerator(t) => Op::RemoveModerator(user_of(&t.user_id)?),
        Command::SetRequestsOpen(r) => Op::SetRequestsOpen(r.open),
    };
    Some((room, who, op))
}
