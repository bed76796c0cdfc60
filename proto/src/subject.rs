//! NATS subjects and headers. Ids are validated to `[A-Za-z0-9_-]`, so they are always one subject token.

use crate::event::Envelope;
use crate::id::{RoomId, UserId};

/// Every event of every room.
pub const ROOM_ALL: &str = "cohost.v1.room.>";
/// Every invitation event, by candidate.
pub const USER_ALL: &str = "cohost.v1.user.>";
/// The JetStream stream that captures [`ROOM_ALL`] and [`USER_ALL`], never the service subjects.
pub const STREAM: &str = "COHOST";
/// The NATS service's name and queue group.
pub const SERVICE: &str = "cohost";

/// `cohost.v1.room.<room_id>`: every event of the room, in version order.
pub fn room(room_id: &RoomId) -> String {
    format!("cohost.v1.room.{room_id}")
}

/// `cohost.v1.user.<user_id>`: the invitation events whose candidate is that user.
pub fn user(user_id: &UserId) -> String {
    format!("cohost.v1.user.{user_id}")
}

/// `cohost.v1.cmd.<name>`: where the service takes the command `name`, one of
/// [`Command::NAMES`](crate::Command::NAMES). `name` is not checked: pass a known one.
pub fn command(name: &str) -> String {
    format!("cohost.v1.cmd.{name}")
}

/// `cohost.v1.query.<name>`: where the service answers the query `name` (`room`, `read_events`, ...). `name` is
/// not checked: pass a known one.
pub fn query(name: &str) -> String {
    format!("cohost.v1.query.{name}")
}

/// Header names on every published event.
pub mod header {
    /// JetStream's deduplication key: `{event_id}` on room subjects, `{event_id}:user` on user subjects.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The envelope's `seq`, in decimal, readable without decoding the body.
    pub const SEQ: &str = "Cohost-Seq";
    /// The envelope's `version`, in decimal: a subscriber that sees a gap fills it from the log.
    pub const VERSION: &str = "Cohost-Version";
    /// The body's encoding, as [`Encoding::content_type`](crate::Encoding::content_type) writes it.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// In cluster mode only: the partition whose log holds the event, in decimal; `Cohost-Seq` counts within it.
    pub const PARTITION: &str = "Cohost-Partition";
}

/// `Nats-Msg-Id` of an event on its room subject.
pub fn room_msg_id(envelope: &Envelope) -> String {
    envelope.event_id().to_string()
}

/// `Nats-Msg-Id` of an event on its candidate's user subject.
pub fn user_msg_id(envelope: &Envelope) -> String {
    format!("{}:user", envelope.event_id())
}
