//! Events and the envelope they travel in.
//!
//! Text formats (JSON) use the contract's shape: the envelope's fields, then `type` and the payload's fields
//! at the same level. Compact formats (postcard) index variants by position, so the order of `Event`'s
//! variants is part of the stored format: append new variants, never reorder.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::id::{CommandId, EventId, InvitationId, RoomId, UserId};
use crate::invitation::Invitation;
use crate::room::Room;

/// Declares [`Event`] once, and from that one list its two serde shapes (`EventTagged` for JSON, `EventIndexed`
/// for postcard) and its `type` names, so a variant cannot be added to one and missed in another.
macro_rules! events {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal {
        $($(#[$field_attr:meta])* $field:ident: $ty:ty),* $(,)?
    }),* $(,)?) => {
        /// What happened to a room. Each variant carries enough to apply it without looking anything up.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $($(#[doc = $doc])* $variant { $($field: $ty),* },)*
        }

        /// JSON: internally tagged by `type`, as the contract shows it.
        #[derive(Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Event))]
        // `rename_all` changes nothing serde writes (each variant is renamed); the schema's derive reads it,
        // where it cannot read a rename passed through this macro. A test holds the two to the same names.
        #[serde(remote = "Event", tag = "type", rename_all = "snake_case")]
        enum EventTagged {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant { $($(#[$field_attr])* $field: $ty),* },)*
        }

        /// postcard: a variant index, then the fields in order.
        #[derive(Serialize, Deserialize)]
        #[serde(remote = "Event")]
        enum EventIndexed {
            $($variant { $($(#[$field_attr])* $field: $ty),* },)*
        }

        impl Event {
            /// Every `type` tag, in the stored variant order.
            pub const TYPES: [&'static str; [$($name),*].len()] = [$($name),*];

            /// The contract's `type` tag.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $name,)*
                }
            }
        }
    };
}

// The order is the stored format: append, never reorder.
events! {
    RoomCreated = "room_created" { room: Room },
    RoomLive = "room_live" { room: Room },
    RoomStopped = "room_stopped" { room: Room },
    InvitationCreated = "invitation_created" { invitation: Invitation },
    InvitationApproved = "invitation_approved" { invitation: Invitation },
    InvitationRejected = "invitation_rejected" { invitation: Invitation },
    InvitationCancelled = "invitation_cancelled" { invitation: Invitation },
    InvitationExpired = "invitation_expired" { invitation: Invitation },
    CohostRemoved = "cohost_removed" {
        user_id: UserId,
        invitation_id: InvitationId,
        // JSON from before removals carried a reason: a user removed the co-host (the host, then).
        #[serde(default = "RemovalReason::host")]
        reason: RemovalReason,
    },
    CohostLeft = "cohost_left" { user_id: UserId, invitation_id: InvitationId },
    PresenceChanged = "presence_changed" {
        user_id: UserId,
        online: bool,
        /// LiveKit's own time and participant of the webhook, which orders presence (not arrival).
        #[serde(default)]
        stamp: Option<PresenceStamp>,
    },
    // The stage controls, from layout V2 on.
    ModeratorAdded = "moderator_added" { user_id: UserId },
    ModeratorRemoved = "moderator_removed" { user_id: UserId },
    RequestsOpened = "requests_opened" {},
    RequestsClosed = "requests_closed" {},
    /// The co-host now sits on `seat`; `swapped_with`, who sat there, now sits on `from_seat`.
    CohostMoved = "cohost_moved" {
        user_id: UserId,
        seat: u8,
        from_seat: u8,
        swapped_with: Option<UserId>,
    },
    SeatLocked = "seat_locked" { seat: u8 },
    SeatUnlocked = "seat_unlocked" { seat: u8 },
    /// Banned from `since_ms` until `until_ms`, or for the room's life when that is null.
    UserBanned = "user_banned" { user_id: UserId, since_ms: u64, until_ms: Option<u64> },
    UserUnbanned = "user_unbanned" { user_id: UserId },
    /// What the co-host may publish now.
    CohostMediaChanged = "cohost_media_changed" { user_id: UserId, audio: bool, video: bool },
}

/// Why a co-host lost their seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    Host,
    Moderator,
    Ban,
    Disconnected,
    RoomStopped,
    System,
}

impl RemovalReason {
    fn host() -> Self {
        Self::Host
    }
}

/// Where a presence change comes from in LiveKit: the webhook's `created_at` (in ms) and the participant's sid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceStamp {
    pub at_ms: u64,
    pub participant_sid: String,
}

impl Event {
    /// The invitation after the change, for the five invitation events.
    pub fn invitation(&self) -> Option<&Invitation> {
        match self {
            Self::InvitationCreated { invitation }
            | Self::InvitationApproved { invitation }
            | Self::InvitationRejected { invitation }
            | Self::InvitationCancelled { invitation }
            | Self::InvitationExpired { invitation } => Some(invitation),
            _ => None,
        }
    }

    /// The room after the change, for the three room events.
    pub fn room(&self) -> Option<&Room> {
        match self {
            Self::RoomCreated { room } | Self::RoomLive { room } | Self::RoomStopped { room } => {
                Some(room)
            }
            _ => None,
        }
    }

    /// The user whose subject (`cohost.v1.user.<id>`) also receives this event: an invitation's candidate.
    pub fn candidate(&self) -> Option<&UserId> {
        self.invitation().map(|invitation| &invitation.user_id)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            EventTagged::serialize(self, s)
        } else {
            EventIndexed::serialize(self, s)
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            EventTagged::deserialize(d)
        } else {
            EventIndexed::deserialize(d)
        }
    }
}

/// One committed event with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Position in the deployment's log: gap-free, from 1.
    pub seq: u64,
    pub room_id: RoomId,
    /// Position in the room: gap-free, from 1.
    pub version: u64,
    pub at_ms: u64,
    /// The user whose command caused it; `None` for the system (timers, LiveKit).
    pub actor: Option<UserId>,
    pub command_id: Option<CommandId>,
    pub event: Event,
}

impl Envelope {
    /// `"{room_id}:{version}"`, the event's stable name (and its NATS `Msg-Id`).
    pub fn event_id(&self) -> EventId {
        EventId {
            room_id: self.room_id.clone(),
            version: self.version,
        }
    }
}

/// Formats `{room_id}:{version}` straight into the serializer.
struct EventIdRef<'a>(&'a RoomId, u64);

impl Serialize for EventIdRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}:{}", self.0, self.1))
    }
}

#[derive(Serialize)]
struct EnvelopeJsonOut<'a> {
    seq: u64,
    room_id: &'a RoomId,
    version: u64,
    event_id: EventIdRef<'a>,
    at_ms: u64,
    actor: &'a Option<UserId>,
    command_id: &'a Option<CommandId>,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Deserialize)]
struct EnvelopeJsonIn {
    seq: u64,
    room_id: RoomId,
    version: u64,
    event_id: String,
    at_ms: u64,
    actor: Option<UserId>,
    #[serde(default)]
    command_id: Option<CommandId>,
    #[serde(flatten)]
    event: Event,
}

/// postcard: the fields in order; `event_id` is derived, so it is not stored.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Envelope")]
struct EnvelopeCompact {
    seq: u64,
    room_id: RoomId,
    version: u64,
    at_ms: u64,
    actor: Option<UserId>,
    command_id: Option<CommandId>,
    event: Event,
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return EnvelopeCompact::serialize(self, s);
        }
        EnvelopeJsonOut {
            seq: self.seq,
            room_id: &self.room_id,
            version: self.version,
            event_id: EventIdRef(&self.room_id, self.version),
            at_ms: self.at_ms,
            actor: &self.actor,
            command_id: &self.command_id,
            event: &self.event,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return EnvelopeCompact::deserialize(d);
        }
        let raw = EnvelopeJsonIn::deserialize(d)?;
        let envelope = Envelope {
            seq: raw.seq,
            room_id: raw.room_id,
            version: raw.version,
            at_ms: raw.at_ms,
            actor: raw.actor,
            command_id: raw.command_id,
            event: raw.event,
        };
        if raw.event_id != envelope.event_id().to_string() {
            return Err(de::Error::custom(format_args!(
                "event_id {:?} does not match room_id and version",
                raw.event_id
            )));
        }
        Ok(envelope)
    }
}

/// The log's record format. Each variant's layout is frozen once released, in types of its own
/// ([`crate::stored`]), apart from the wire types: a schema change adds a variant, and every variant still
/// decodes, into today's [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredEvent {
    V1(crate::stored::v1::Envelope),
    /// Today's wire types' layout. When they change next, this layout is first copied into `stored::v2`.
    V2(Envelope),
}

/// Serializes as the variant writers write (`V2`), without cloning the envelope; `V1` is never written again.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "StoredEvent")]
pub enum StoredEventRef<'a> {
    V1(()),
    V2(&'a Envelope),
}

impl<'a> StoredEventRef<'a> {
    /// The current variant.
    pub fn new(envelope: &'a Envelope) -> Self {
        Self::V2(envelope)
    }
}

impl StoredEvent {
    /// The record as today's wire types.
    pub fn into_envelope(self) -> Envelope {
        match self {
            Self::V1(envelope) => envelope.into(),
            Self::V2(envelope) => envelope,
        }
    }

    /// The layout's version: 1 for `V1`, 2 for `V2`.
    pub fn layout(&self) -> u8 {
        match self {
            Self::V1(_) => 1,
            Self::V2(_) => 2,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

/// The envelope's JSON schema: its own fields, then the event's `type` and fields at the same level.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Envelope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
        use utoipa::openapi::{Ref, RefOr};
        let integer = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .description(Some(description))
        };
        let nullable = |name: &str| {
            RefOr::from(
                utoipa::openapi::schema::OneOfBuilder::new()
                    .item(Ref::from_schema_name(name))
                    .item(ObjectBuilder::new().schema_type(Type::Null)),
            )
        };
        let fields = ObjectBuilder::new()
            .property(
                "seq",
                integer("Position in the deployment's log: gap-free, from 1."),
            )
            .property("room_id", Ref::from_schema_name("RoomId"))
            .property(
                "version",
                integer("Position in the room: gap-free, from 1."),
            )
            .property(
                "event_id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("{room_id}:{version}, the event's stable name")),
            )
            .property(
                "at_ms",
                integer("When the event was committed, ms since the epoch."),
            )
            .property("actor", nullable("UserId"))
            .property("command_id", nullable("CommandId"))
            .required("seq")
            .required("room_id")
            .required("version")
            .required("event_id")
            .required("at_ms")
            .required("actor");
        AllOfBuilder::new()
            .item(fields)
            .item(Ref::from_schema_name("Event"))
            .description(Some(
                "One committed event with its place in the log: the envelope's fields, then the event's \
                 `type` and its fields at the same level.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Envelope {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push((EventTagged::name().into(), EventTagged::schema()));
        EventTagged::schemas(schemas);
        for (name, schema) in [
            (RoomId::name(), RoomId::schema()),
            (UserId::name(), UserId::schema()),
            (CommandId::name(), CommandId::schema()),
        ] {
            schemas.push((name.into(), schema));
        }
    }
}
