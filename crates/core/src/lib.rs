//! The cohost rules as pure functions: `decide` turns a command into events or a rejection, and `apply`
//! folds an event into a room's state.
//!
//! This crate is deterministic and does no IO. It never reads a clock, never draws randomness, never
//! allocates ids by itself and is neither async nor thread-aware: time, the actor and the deployment's
//! policy arrive in a [`Context`], and invitation ids follow from the room's state. So a failing property
//! test replays exactly from its seed, and the engine can replay the log into the same state every time.
//! Its dependency list holds no tokio, sled, NATS or LiveKit; `tests/core-is-pure.rs` keeps it that way.
//!
//! It never stores, sequences or publishes: it does not know where the log lives, which command came first or
//! who is listening. Neighbours: the types it reads and emits (ids, [`Command`],
//! [`Event`], [`ErrorCode`](proto::ErrorCode)) are the wire contract's, [`cohost_proto`]'s,
//! re-exported as [`proto`]. `cohost-engine`'s sequencer is the one caller that decides for real, in order,
//! and `cohost-store` keeps the events it emits; `cohost-model` reads the same rules a second time so a
//! property test can hold this crate against it.
//!
//! ```
//! use cohost_core::{Context, Policy, RoomState, apply, decide};
//! use cohost_proto::{Actor, Command, CreateRoom, Invite, RoomId, RoomTarget, UserId};
//!
//! let room_id = RoomId::new("stage-1").unwrap();
//! let alice = Actor::User(UserId::new("alice").unwrap());
//! let mut room = RoomState::default();
//! let ctx = Context::new(&alice, 1_000, Policy::default());
//! let commands = [
//!     Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None }),
//!     Command::GoLive(RoomTarget { room_id: room_id.clone() }),
//!     Command::Invite(Invite { room_id, user_id: UserId::new("bob").unwrap(), seat: None }),
//! ];
//! for command in &commands {
//!     for event in decide(&room, command, &ctx).unwrap() {
//!         apply(&mut room, &event);
//!     }
//! }
//! assert_eq!(room.version(), 3);
//! assert_eq!(room.pending().next().unwrap().invitation_id.to_string(), "stage-1.1");
//! ```

#![warn(missing_docs)]

mod bans;
mod invitation;
mod moderators;
mod policy;
mod rejection;
mod reply;
mod room;
mod seats;
mod stage;
mod state;

/// The wire contract's types, as this crate's callers need them to build commands and read events.
pub use cohost_proto as proto;
pub use policy::{Policy, PolicyError};
pub use rejection::Rejection;
pub use reply::reply;
pub use stage::{Entitlement, entitlement};
pub use state::{
    Ban, ENDED_KEPT_MAX, InvitationFilter, InvitationPage, Liveness, RoomState, apply, stored,
};

use cohost_proto::{Actor, Command, Event, UserId};
use invitation::Outcome;

/// Everything [`decide`] needs besides the state and the command: who asks, when, and under which
/// deployment settings. Copy and cheap: it borrows what it does not own.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Who sends the command: a user, already authenticated by the caller, or the system (timers,
    /// LiveKit's webhooks). Every permission rule reads it.
    pub actor: &'a Actor,
    /// The sequencer's clock when the command is decided, in ms since the Unix epoch. Expiry, bans and the
    /// disconnect grace compare against it, and the events it emits carry it.
    pub now_ms: u64,
    /// The room version the caller last saw; a mismatch is `conflict`.
    pub expected_version: Option<u64>,
    /// The deployment's settings: TTLs, the default seat count, the quotas across rooms.
    pub policy: Policy,
    /// Counts across rooms, for the quotas that span them.
    pub tallies: &'a dyn Tallies,
}

impl<'a> Context<'a> {
    /// A context with no expected version and nothing tallied across rooms ([`NoTallies`]), so the quotas
    /// across rooms never bind; set the fields to change either.
    pub fn new(actor: &'a Actor, now_ms: u64, policy: Policy) -> Self {
        Self {
            actor,
            now_ms,
            expected_version: None,
            policy,
            tallies: &NoTallies,
        }
    }
}

/// What a rule needs to know beyond the room it decides: counts across every room, kept by whoever holds
/// them all (the engine's sequencer). The core only reads them, so it stays pure and per-room.
pub trait Tallies: std::fmt::Debug {
    /// Rooms of `host` that have not ended.
    fn open_rooms(&self, host: &UserId) -> u32;
    /// Pending invitations and requests whose candidate is `user`, across rooms.
    fn pending_offers(&self, user: &UserId) -> u32;
}

/// Nothing tallied: for deciding a room on its own, where no quota across rooms can bind.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTallies;

impl Tallies for NoTallies {
    fn open_rooms(&self, _host: &UserId) -> u32 {
        0
    }

    fn pending_offers(&self, _user: &UserId) -> u32 {
        0
    }
}

impl Context<'_> {
    fn check_version(&self, actual: u64) -> Result<(), Rejection> {
        match self.expected_version {
            Some(expected) if expected != actual => Err(Rejection::Conflict { expected, actual }),
            _ => Ok(()),
        }
    }
}

/// Decides what `command` does to the room in `state`: the events to append, in order, or why nothing
/// happens. A rejected command emits nothing; an accepted one may emit nothing when it changes nothing
/// (a presence report the room already knows).
///
/// It only reads: the state changes when the caller [`apply`]s the events, after storing them. The same
/// state, command and context always give the same answer. It never blocks; it allocates the returned
/// events, one for most commands and at most 49 (32 pending offers, 16 seats, the stop) for `stop_room`.
///
/// `state` must be the state of the room the command names (`Command::room_id`); the caller routes.
///
/// # Errors
///
/// A [`Rejection`], whose variant is the contract's error code:
/// - [`InvalidArgument`](Rejection::InvalidArgument): the command itself is wrong whatever the state: a
///   title over 200 characters, a seat count or seat number out of range, inviting oneself.
/// - [`PermissionDenied`](Rejection::PermissionDenied): the actor is not the party the rule names, or is
///   banned from the room.
/// - [`NotFound`](Rejection::NotFound): no such room, invitation, co-host, moderator or ban.
/// - [`AlreadyExists`](Rejection::AlreadyExists): the room exists, or the candidate already holds a seat,
///   a pending offer here, or the moderator role.
/// - [`FailedPrecondition`](Rejection::FailedPrecondition): the state forbids it now: the invitation is
///   no longer pending or has expired, the room is not idle, not live or has ended, the seat is locked.
/// - [`ResourceExhausted`](Rejection::ResourceExhausted): a limit is reached: 32 pending offers in the
///   room, every seat taken or locked, 8 moderators, the bans a room holds, or a quota across rooms from
///   [`Context::tallies`].
/// - [`Conflict`](Rejection::Conflict): [`Context::expected_version`] differs from the room's version.
///
/// # Panics
///
/// When `state` holds another room than the one the command names: the caller routed wrongly, a bug.
///
/// # Examples
///
/// ```
/// use cohost_core::{Context, Policy, Rejection, RoomState, apply, decide};
/// use cohost_proto::{Actor, Command, CreateRoom, ErrorCode, RoomId, RoomTarget, UserId};
///
/// let room_id = RoomId::new("stage-1").unwrap();
/// let alice = Actor::User(UserId::new("alice").unwrap());
/// let bob = Actor::User(UserId::new("bob").unwrap());
/// let mut room = RoomState::default();
/// let create = Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None });
/// for event in decide(&room, &create, &Context::new(&alice, 1_000, Policy::default())).unwrap() {
///     apply(&mut room, &event);
/// }
///
/// // Only the host may go live: bob is refused, and the room is untouched.
/// let go_live = Command::GoLive(RoomTarget { room_id });
/// let refused = decide(&room, &go_live, &Context::new(&bob, 2_000, Policy::default())).unwrap_err();
/// assert_eq!(refused.code(), ErrorCode::PermissionDenied);
/// assert_eq!(room.version(), 1);
///
/// // The host, expecting a version the room is past, gets `conflict`.
/// let mut ctx = Context::new(&alice, 2_000, Policy::default());
/// ctx.expected_version = Some(0);
/// assert_eq!(decide(&room, &go_live, &ctx), Err(Rejection::Conflict { expected: 0, actual: 1 }));
/// ```
pub fn decide(
    state: &RoomState,
    command: &Command,
    ctx: &Context,
) -> Result<Vec<Event>, Rejection> {
    if let Command::CreateRoom(create) = command {
        return room::create(state, create, ctx);
    }
    let room = state.room().ok_or(Rejection::NotFound("room not found"))?;
    assert_eq!(
        &room.room_id,
        command.room_id(),
        "decide got the state of another room"
    );
    ctx.check_version(room.version)?;
    match command {
        Command::CreateRoom(_) => unreachable!("handled above"),
        Command::GoLive(_) => room::go_live(room, ctx),
        Command::StopRoom(_) => room::stop(state, room, ctx),
        Command::Invite(i) => invitation::invite(state, room, &i.user_id, i.seat, ctx),
        Command::RequestToJoin(r) => invitation::request(state, room, r.seat, ctx),
        Command::AcceptInvitation(t) => {
            invitation::settle(state, room, &t.invitation_id, Outcome::Accept, ctx)
        }
        Command::RejectInvitation(t) => {
            invitation::settle(state, room, &t.invitation_id, Outcome::Reject, ctx)
        }
        Command::CancelInvitation(t) => {
            invitation::settle(state, room, &t.invitation_id, Outcome::Cancel, ctx)
        }
        Command::Expire(t) => {
            invitation::settle(state, room, &t.invitation_id, Outcome::Expire, ctx)
        }
        Command::RemoveCohost(target) => stage::remove(state, room, &target.user_id, ctx),
        Command::LeaveStage(_) => stage::leave(state, ctx),
        Command::Presence(p) => stage::presence(state, room, p, ctx),
        Command::AddModerator(target) => moderators::add(room, &target.user_id, ctx),
        Command::RemoveModerator(target) => moderators::remove(room, &target.user_id, ctx),
        Command::SetRequestsOpen(r) => moderators::set_requests_open(room, r.open, ctx),
        Command::MoveCohost(m) => seats::move_cohost(room, &m.user_id, m.seat, ctx),
        Command::LockSeat(s) => seats::lock(room, s.seat, true, ctx),
        Command::UnlockSeat(s) => seats::lock(room, s.seat, false, ctx),
        Command::SetCohostMedia(m) => seats::set_media(room, &m.user_id, m.audio, m.video, ctx),
        Command::BanUser(b) => bans::ban(state, room, &b.user_id, b.duration_s, ctx),
        Command::UnbanUser(t) => bans::unban(state, room, &t.user_id, ctx),
        Command::Disconnect(t) => stage::disconnect(state, room, &t.user_id, ctx),
        Command::EndAbandoned(e) => room::end_abandoned(state, room, e.reason, ctx),
    }
}
