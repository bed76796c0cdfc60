//! Events and the envelope they travel in.
//!
//! Text formats (JSON) use the contract's shape: the envelope's fields, then `type` and the payload's fields
//! at the same level. Compact formats (postcard) index variants by position, so the order of `Event`'s
//! variants is part of the stored format: append new variants, never reorder.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::id::{CommandId, EventId, InvitationId, RoomId, ServiceId, UserId};
use crate::invitation::Invitation;
use crate::room::Room;

/// Declares [`Event`] once, and from that one list its two serde shapes (`EventTagged` for JSON, `EventIndexed`
/// for postcard) and its `type` names, so a variant cannot be added to one and missed in another. A field's doc
/// comments come first, then its `serde` attributes, which only the two shapes get.
macro_rules! events {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal {
        $($(#[doc = $field_doc:literal])* $(#[serde($($field_serde:tt)*)])* $field:ident: $ty:ty),* $(,)?
    }),* $(,)?) => {
        /// What happened to a room. Each variant carries enough to apply it without looking anything up.
        ///
        /// In JSON the variant is the envelope's `type` and its fields sit beside the envelope's; in postcard it
        /// is a variant index, its position here.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $($(#[doc = $doc])* $variant { $($(#[doc = $field_doc])* $field: $ty),* },)*
        }

        /// JSON: internally tagged by `type`, as the contract shows it.
        #[derive(Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Event))]
        // `rename_all` changes nothing serde writes (each variant is renamed); the schema's derive reads it,
        // where it cannot read a rename passed through this macro. A test holds the two to the same names.
        #[serde(remote = "Event", tag = "type", rename_all = "snake_case")]
        enum EventTagged {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant {
                $($(#[doc = $field_doc])* $(#[serde($($field_serde)*)])* $field: $ty),*
            },)*
        }

        /// postcard: a variant index, then the fields in order.
        #[derive(Serialize, Deserialize)]
        #[serde(remote = "Event")]
        enum EventIndexed {
            $($variant { $($(#[serde($($field_serde)*)])* $field: $ty),* },)*
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
    /// `create_room` made the room; it is idle, at version 1.
    RoomCreated = "room_created" {
        /// The room after the change.
        room: Room,
    },
    /// `go_live`: the room is live.
    RoomLive = "room_live" {
        /// The room after the change.
        room: Room,
    },
    /// `stop_room`: the room has ended, the last event of its life. Its offers and seats ended in the events just
    /// before.
    RoomStopped = "room_stopped" {
        /// The room after the change: ended, with no co-hosts.
        room: Room,
        /// Why; `host` in JSON written before stops carried a reason.
        #[serde(default = "StopReason::host")]
        reason: StopReason,
    },
    /// `invite` or `request_to_join` made a pending invitation.
    InvitationCreated = "invitation_created" {
        /// The invitation after the change, `kind` included.
        invitation: Invitation,
    },
    /// `accept_invitation`: the candidate took a seat, which the room gains.
    InvitationApproved = "invitation_approved" {
        /// The invitation after the change; its `seat` is the one taken.
        invitation: Invitation,
    },
    /// `reject_invitation`: the responder declined.
    InvitationRejected = "invitation_rejected" {
        /// The invitation after the change.
        invitation: Invitation,
    },
    /// `cancel_invitation`, or a pending offer ended by `stop_room` or `ban_user`.
    InvitationCancelled = "invitation_cancelled" {
        /// The invitation after the change.
        invitation: Invitation,
    },
    /// The engine's timer saw `expires_ms` pass on a pending invitation.
    InvitationExpired = "invitation_expired" {
        /// The invitation after the change.
        invitation: Invitation,
    },
    /// A co-host's seat was taken from them: `remove_cohost`, a ban, the disconnect grace or `stop_room`.
    CohostRemoved = "cohost_removed" {
        /// The co-host removed.
        user_id: UserId,
        /// The invitation whose approval gave the seat.
        invitation_id: InvitationId,
        /// Why; `host` in JSON written before removals carried a reason.
        // JSON from before removals carried a reason: a user removed the co-host (the host, then).
        #[serde(default = "RemovalReason::host")]
        reason: RemovalReason,
    },
    /// `leave_stage`: a co-host gave up their own seat.
    CohostLeft = "cohost_left" {
        /// The co-host who left.
        user_id: UserId,
        /// The invitation whose approval gave the seat.
        invitation_id: InvitationId,
    },
    /// LiveKit reported the host or a co-host connected or gone.
    PresenceChanged = "presence_changed" {
        /// The participant: the host or a seated co-host.
        user_id: UserId,
        /// Whether they are connected now.
        online: bool,
        /// LiveKit's own time and participant of the webhook, which orders presence (not arrival); `None` for a
        /// report without one, and in events recorded before stamps.
        #[serde(default)]
        stamp: Option<PresenceStamp>,
    },
    // The stage controls, from layout V2 on.
    /// `add_moderator`: the user now runs the stage with the host.
    ModeratorAdded = "moderator_added" {
        /// The new moderator.
        user_id: UserId,
    },
    /// `remove_moderator`, or a ban of a moderator.
    ModeratorRemoved = "moderator_removed" {
        /// The user who is no longer a moderator.
        user_id: UserId,
    },
    /// `set_requests_open` with `open: true`: `request_to_join` is taken again.
    RequestsOpened = "requests_opened" {},
    /// `set_requests_open` with `open: false`: `request_to_join` is refused.
    RequestsClosed = "requests_closed" {},
    /// The co-host now sits on `seat`; `swapped_with`, who sat there, now sits on `from_seat`.
    CohostMoved = "cohost_moved" {
        /// The co-host moved.
        user_id: UserId,
        /// Their new seat's number.
        seat: u8,
        /// The seat they left.
        from_seat: u8,
        /// Who sat on `seat` and now sits on `from_seat`; `None` if `seat` was empty.
        swapped_with: Option<UserId>,
    },
    /// `lock_seat`: no one may take the seat or be moved to it.
    SeatLocked = "seat_locked" {
        /// The seat's number.
        seat: u8,
    },
    /// `unlock_seat`: the seat may be taken again.
    SeatUnlocked = "seat_unlocked" {
        /// The seat's number.
        seat: u8,
    },
    /// Banned from `since_ms` until `until_ms`, or for the room's life when that is null.
    UserBanned = "user_banned" {
        /// The user banned.
        user_id: UserId,
        /// When the ban began, ms since the Unix epoch: the command's time.
        since_ms: u64,
        /// When it ends (`since_ms` plus the duration); `None` for the room's life.
        until_ms: Option<u64>,
    },
    /// `unban_user`: the ban was lifted before it ended.
    UserUnbanned = "user_unbanned" {
        /// The user no longer banned.
        user_id: UserId,
    },
    /// What the co-host may publish now.
    CohostMediaChanged = "cohost_media_changed" {
        /// The co-host.
        user_id: UserId,
        /// May publish the microphone, after the change.
        audio: bool,
        /// May publish the camera, after the change.
        video: bool,
    },
}

/// Why a co-host lost their seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// The host removed them. JSON written before removals carried a reason reads as this.
    Host,
    /// A moderator removed them.
    Moderator,
    /// They were banned from the room.
    Ban,
    /// They stayed offline past the deployment's disconnect grace.
    Disconnected,
    /// The room was stopped.
    RoomStopped,
    /// The system removed them: `remove_cohost` with no actor, or a `V1` record of a removal the system made.
    System,
}

impl RemovalReason {
    fn host() -> Self {
        Self::Host
    }
}

/// Why a room ended. Appended to, never reordered: the variant order is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The host stopped it. JSON written before stops carried a reason reads as this.
    Host,
    /// The system stopped it: `stop_room` with no actor, or by a service (the envelope names it), or a record
    /// from before stops carried a reason that no user caused.
    System,
    /// The system stopped a live room whose host LiveKit reported away for longer than the deployment allows.
    HostAbsent,
    /// The system ended a room that stayed idle, never live, for longer than the deployment allows.
    NeverLive,
}

impl StopReason {
    fn host() -> Self {
        Self::Host
    }
}

/// Where a presence change comes from in LiveKit: the webhook's `created_at` (in ms) and the participant's sid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceStamp {
    /// The webhook's `createdAt`, in ms since the Unix epoch: LiveKit's clock, not the engine's.
    pub at_ms: u64,
    /// LiveKit's session id of the participant (`PA_...`); a new connection has a new one.
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
            Self::RoomCreated { room }
            | Self::RoomLive { room }
            | Self::RoomStopped { room, .. } => Some(room),
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
    /// Position in the deployment's log: gap-free, from 1. In cluster mode, in the partition's log.
    pub seq: u64,
    /// The room the event happened to.
    pub room_id: RoomId,
    /// Position in the room: gap-free, from 1; equals the room's `version` after the event.
    pub version: u64,
    /// When the event was committed, in ms since the Unix epoch (the engine's clock).
    pub at_ms: u64,
    /// The user whose command caused it; `None` for the system (timers, LiveKit) and for a service.
    pub actor: Option<UserId>,
    /// The backend service whose command caused it (a service credential's); `None` otherwise. In JSON only
    /// when set.
    pub service: Option<ServiceId>,
    /// The idempotency key of the command that caused it, if it had one.
    pub command_id: Option<CommandId>,
    /// What happened; in JSON, `type` and the payload's fields.
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
    #[serde(skip_serializing_if = "Option::is_none")]
    service: &'a Option<ServiceId>,
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
    service: Option<ServiceId>,
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
    service: Option<ServiceId>,
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
            service: &self.service,
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
            service: raw.service,
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
    /// The layout before the stage controls: read, never written.
    V1(crate::stored::v1::Envelope),
    /// The layout before service credentials (no `service` in the envelope): read, never written.
    V2(crate::stored::v2::Envelope),
    /// Today's wire types' layout. When they change next, this layout is first copied into `stored::v3`.
    V3(Envelope),
}

/// Serializes as the variant writers write (`V3`), without cloning the envelope; earlier layouts are never
/// written again.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "StoredEvent")]
pub enum StoredEventRef<'a> {
    /// Never made: it holds `V1`'s place.
    V1(()),
    /// Never made: it holds `V2`'s place, so that `V3` is written with variant index 2.
    V2(()),
    /// Today's layout, borrowing the envelope.
    V3(&'a Envelope),
}

impl<'a> StoredEventRef<'a> {
    /// The current variant.
    pub fn new(envelope: &'a Envelope) -> Self {
        Self::V3(envelope)
    }
}

impl StoredEvent {
    /// The record as today's wire types.
    pub fn into_envelope(self) -> Envelope {
        match self {
            Self::V1(envelope) => envelope.into(),
            Self::V2(envelope) => envelope.into(),
            Self::V3(envelope) => envelope,
        }
    }

    /// The layout's version: 1 for `V1`, 2 for `V2`, 3 for `V3`.
    // Hidden: public only for the golden vectors' and property tests, which check each record's layout; a
    // caller matches on the variant.
    #[doc(hidden)]
    pub fn layout(&self) -> u8 {
        match self {
            Self::V1(_) => 1,
            Self::V2(_) => 2,
            Self::V3(_) => 3,
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
            .property("service", Ref::from_schema_name("ServiceId"))
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
            (ServiceId::name(), ServiceId::schema()),
            (CommandId::name(), CommandId::schema()),
        ] {
            schemas.push((name.into(), schema));
        }
    }
}
