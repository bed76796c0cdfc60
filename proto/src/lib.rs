//! The cohost wire contract as Rust types: validated ids, commands, events and their envelope, replies and
//! error codes, NATS subjects and headers, and the JSON and postcard codecs.
//!
//! This crate only describes data. It never performs IO, never reads a clock and never decides anything; the
//! rules live in `cohost-core`. Its human-readable twin is `proto/README.md`, and the golden vectors in
//! `proto/vectors/` pin its bytes.

pub mod codec;
pub mod command;
pub mod error;
pub mod event;
pub mod id;
pub mod invitation;
pub mod limits;
pub mod partition;
pub mod reply;
pub mod room;
pub mod stored;
pub mod subject;

pub use codec::{DecodeError, Encoding};
pub use command::{
    Actor, BanUser, CohostMedia, Command, CommandParseError, CreateRoom, InvitationTarget, Invite,
    MoveCohost, Presence, RequestToJoin, RequestsOpen, RoomTarget, SeatTarget, UserTarget,
};
pub use error::{ErrorBody, ErrorCode, ErrorInfo};
pub use event::{Envelope, Event, PresenceStamp, RemovalReason, StoredEvent, StoredEventRef};
pub use id::{CommandId, EventId, IdError, InvitationId, RoomId, UserId};
pub use invitation::{Invitation, InvitationKind, InvitationStatus};
pub use reply::{Accepted, BroadcasterData, BroadcasterRole, Page, Reply, ServiceReply};
pub use room::{Room, RoomStatus, Seat};
