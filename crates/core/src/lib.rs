//! The cohost rules as pure functions: `decide` turns a command into events or a rejection, and `apply`
//! folds an event into a room's state.
//!
//! This crate is deterministic and does no IO. It never reads a clock, never draws randomness, never
//! allocates ids by itself and is neither async nor thread-aware: time, the actor and the deployment's
//! policy arrive in a [`Context`], and invitation ids follow from the room's state. So a failing property
//! test replays exactly from its seed, and the engine can replay the log into the same state every time.
//! Its dependency list holds no tokio, sled, NATS or LiveKit; `tests/core-is-pure.rs` keeps it that way.
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

/// Everything `decide` needs besides the state and the command.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub actor: &'a Actor,
    /// The sequencer's clock when the command is decided.
    pub now_ms: u64,
    /// The room version the caller last saw; a mismatch is `conflict`.
    pub expected_version: Option<u64>,
    pub policy: Policy,
    /// Counts across rooms, for the quotas that span them.
    pub tallies: &'a dyn Tallies,
}

impl<'a> Context<'a> {
    /// A context with no expected version and nothing tallied across rooms.
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
/// `state` must be the state of the room the command names (`Command::room_id`); the caller routes.
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
    }
}
