//! The cohost wire contract as Rust types: validated ids, commands, events and their envelope, replies and
//! error codes, NATS subjects and headers, and the JSON and postcard codecs.
//!
//! This crate only describes data. It never performs IO, never reads a clock, never blocks and never decides
//! anything; the rules live in `cohost-core`. Its human-readable twin, and the normative text, is
//! `proto/README.md`; the golden vectors in `proto/vectors/` pin its bytes.
//!
//! Every constructor checks the contract, serde's included, so a value of these types is valid: an id breaks no
//! rule, and an envelope's `event_id` matches its room and version. Bad bytes are an error, never a panic.
//! Encoding returns a new `Vec` and cannot fail.
//!
//! Every other crate of the workspace builds on this one: `cohost-core` decides commands and applies events
//! over these types; `cohost-store` writes [`StoredEvent`] records to the sled log; `cohost-engine` runs the
//! command pipeline and the embedding API; `cohost-nats` publishes envelopes on the [`subject`]s and serves
//! commands there; `cohost-credentials` mints the LiveKit tokens of [`BroadcasterData`]; and `cohostd` serves
//! HTTP and Server-Sent Events, and builds its OpenAPI document from the `openapi` feature's schemas.
//!
//! ```
//! use cohost_proto::codec::{decode_envelope, encode_envelope};
//! use cohost_proto::{Command, Encoding, Envelope, Event, InvitationId, RoomId, UserId};
//!
//! // Ids are checked where they are made: a room id can never hold a `.`.
//! let room = RoomId::new("stage-1")?;
//! assert!(RoomId::new("stage.1").is_err());
//! let invitation: InvitationId = "stage-1.3".parse()?;
//! assert_eq!(invitation.room_id(), &room);
//!
//! // A command from its name and JSON arguments, as the NATS service gets it on `cohost.v1.cmd.<name>`.
//! let command = Command::from_json("accept_invitation", br#"{"invitation_id":"stage-1.3"}"#)?;
//! assert_eq!(command.room_id(), &room);
//!
//! // An envelope, in both encodings.
//! let envelope = Envelope {
//!     seq: 251,
//!     room_id: room,
//!     version: 12,
//!     at_ms: 1_767_231_600_000,
//!     actor: Some(UserId::new("alice")?),
//!     service: None,
//!     command_id: None,
//!     event: Event::RequestsClosed {},
//! };
//! let json = encode_envelope(Encoding::Json, &envelope);
//! assert!(std::str::from_utf8(&json)?.contains(r#""event_id":"stage-1:12","#));
//! for encoding in [Encoding::Json, Encoding::Postcard] {
//!     let bytes = encode_envelope(encoding, &envelope);
//!     assert_eq!(decode_envelope(encoding, &bytes)?, envelope);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod codec;
pub mod command;
pub mod error;
pub mod event;
pub mod id;
pub mod invitation;
pub mod limits;
pub mod partition;
pub mod pseudonym;
pub mod reply;
pub mod room;
pub mod stored;
pub mod subject;

pub use codec::{DecodeError, Encoding};
pub use command::{
    Actor, BanUser, CohostMedia, Command, CommandParseError, CreateRoom, EndAbandoned,
    InvitationTarget, Invite, MoveCohost, Presence, RequestToJoin, RequestsOpen, RoomTarget,
    SeatTarget, UserTarget,
};
pub use error::{ErrorBody, ErrorCode, ErrorInfo};
pub use event::{
    Envelope, Event, PresenceStamp, RemovalReason, StopReason, StoredEvent, StoredEventRef,
};
pub use id::{CommandId, EventId, IdError, InvitationId, RoomId, ServiceId, UserId};
pub use invitation::{Invitation, InvitationKind, InvitationStatus};
pub use pseudonym::MapUsers;
pub use reply::{Accepted, BroadcasterData, BroadcasterRole, Page, Reply, ServiceReply};
pub use room::{Room, RoomStatus, Seat};
