//! The log's layouts, frozen: each version's types exactly as its records were written, kept apart from the
//! wire types, so the wire can change without a log written earlier ceasing to decode.
//!
//! A record decodes into its version's types and converts into the wire types; each conversion is total and
//! fixed, so replaying an old log gives the same result on every build. See "Versioning" in proto/README.md.

/// The layout of `StoredEvent::V1`: the contract's types as first released. Its fields, variants and their order
/// are never edited: they are the bytes of every `V1` record.
///
/// Each type converts into today's namesake with `From` (`crate::Envelope::from`, `crate::Room::from`, ...),
/// whose docs say more of each field; the docs here note what this layout lacks.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::id::{CommandId, InvitationId, RoomId, UserId};

    /// A `V1` record's envelope; the fields of [`crate::Envelope`], in the same order.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Envelope {
        /// Position in the log: gap-free, from 1.
        pub seq: u64,
        /// The room the event happened to.
        pub room_id: RoomId,
        /// Position in the room: gap-free, from 1.
        pub version: u64,
        /// When the event was committed, in ms since the Unix epoch.
        pub at_ms: u64,
        /// The user whose command caused it; `None` for the system.
        pub actor: Option<UserId>,
        /// The idempotency key of the command that caused it, if it had one.
        pub command_id: Option<CommandId>,
        /// What happened.
        pub event: Event,
    }

    /// The eleven events before the stage controls, with today's variant indexes 0 to 10.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Event {
        /// `room_created`.
        RoomCreated {
            /// The room after the change.
            room: Room,
        },
        /// `room_live`.
        RoomLive {
            /// The room after the change.
            room: Room,
        },
        /// `room_stopped`.
        RoomStopped {
            /// The room after the change.
            room: Room,
        },
        /// `invitation_created`.
        InvitationCreated {
            /// The invitation after the change.
            invitation: Invitation,
        },
        /// `invitation_approved`.
        InvitationApproved {
            /// The invitation after the change.
            invitation: Invitation,
        },
        /// `invitation_rejected`.
        InvitationRejected {
            /// The invitation after the change.
            invitation: Invitation,
        },
        /// `invitation_cancelled`.
        InvitationCancelled {
            /// The invitation after the change.
            invitation: Invitation,
        },
        /// `invitation_expired`.
        InvitationExpired {
            /// The invitation after the change.
            invitation: Invitation,
        },
        /// `cohost_removed`, without a reason: it converts to `host` when a user caused it, else `system`.
        CohostRemoved {
            /// The co-host removed.
            user_id: UserId,
            /// The invitation whose approval gave the seat.
            invitation_id: InvitationId,
        },
        /// `cohost_left`.
        CohostLeft {
            /// The co-host who left.
            user_id: UserId,
            /// The invitation whose approval gave the seat.
            invitation_id: InvitationId,
        },
        /// `presence_changed`, without a stamp.
        PresenceChanged {
            /// The participant.
            user_id: UserId,
            /// Whether they are connected now.
            online: bool,
        },
    }

    /// A room before the stage controls: no moderators, locked seats or `requests_open`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Room {
        /// The room's id.
        pub room_id: RoomId,
        /// The user who created the room.
        pub host: UserId,
        /// At most 200 characters.
        pub title: String,
        /// `idle` → `live` → `ended`.
        pub status: RoomStatus,
        /// How many seats the room has.
        pub max_cohosts: u8,
        /// Seated co-hosts, in the order they were seated; unnumbered.
        pub cohosts: Vec<Seat>,
        /// The number of events applied to the room.
        pub version: u64,
    }

    /// A room's status, with today's variant indexes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum RoomStatus {
        /// Created, not yet live.
        Idle,
        /// Broadcasting.
        Live,
        /// Stopped, for good.
        Ended,
    }

    /// A seat before numbers and media controls: it converts to seat 0 with audio and video allowed.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Seat {
        /// The co-host.
        pub user_id: UserId,
        /// The invitation whose approval gave the seat.
        pub invitation_id: InvitationId,
        /// When the seat was taken, in ms since the Unix epoch.
        pub since_ms: u64,
        /// Whether LiveKit last reported the co-host as connected.
        pub online: bool,
    }

    /// An invitation before seats could be named: it converts with no `seat`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Invitation {
        /// `{room_id}.{n}`.
        pub invitation_id: InvitationId,
        /// The room whose stage is offered.
        pub room_id: RoomId,
        /// Who offered.
        pub kind: InvitationKind,
        /// The room's host.
        pub host: UserId,
        /// The candidate.
        pub user_id: UserId,
        /// Where the offer stands.
        pub status: InvitationStatus,
        /// When it was made, in ms since the Unix epoch.
        pub created_ms: u64,
        /// When its status last changed, in ms since the Unix epoch.
        pub updated_ms: u64,
        /// When a pending offer expires, in ms since the Unix epoch.
        pub expires_ms: u64,
    }

    /// Which way an offer goes, with today's variant indexes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum InvitationKind {
        /// The host offers; the candidate responds.
        Invite,
        /// The candidate asks; the host responds.
        Request,
    }

    /// Where an invitation stands, with today's variant indexes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum InvitationStatus {
        /// Waiting for an answer.
        Pending,
        /// Accepted: the candidate took a seat.
        Approved,
        /// Declined by the responder.
        Rejected,
        /// Withdrawn by the initiator, or ended by `stop_room`.
        Cancelled,
        /// Nobody answered in time.
        Expired,
    }
}

/// The layout of `StoredEvent::V2`: the stage controls' events, in an envelope without `service`, and
/// `room_stopped` without a reason. Its fields, variants and their order are never edited: they are the bytes
/// of every `V2` record. The payload types it names (`Room`, `Invitation`, ...) have not changed since; when one
/// does, its `V2` shape is first copied here.
pub mod v2 {
    use serde::{Deserialize, Serialize};

    use crate::id::{CommandId, InvitationId, RoomId, UserId};
    use crate::{Invitation, PresenceStamp, RemovalReason, Room};

    /// A `V2` record's envelope: [`crate::Envelope`] without `service`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Envelope {
        /// Position in the log: gap-free, from 1.
        pub seq: u64,
        /// The room the event happened to.
        pub room_id: RoomId,
        /// Position in the room: gap-free, from 1.
        pub version: u64,
        /// When the event was committed, in ms since the Unix epoch.
        pub at_ms: u64,
        /// The user whose command caused it; `None` for the system.
        pub actor: Option<UserId>,
        /// The idempotency key of the command that caused it, if it had one.
        pub command_id: Option<CommandId>,
        /// What happened.
        pub event: Event,
    }

    /// The events of `V2`, with today's variant indexes 0 to 20; the docs of today's namesakes apply.
    #[allow(missing_docs)]
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Event {
        RoomCreated {
            room: Room,
        },
        RoomLive {
            room: Room,
        },
        /// `room_stopped`, without a reason: it converts to `host` when a user caused it, else `system`.
        RoomStopped {
            room: Room,
        },
        InvitationCreated {
            invitation: Invitation,
        },
        InvitationApproved {
            invitation: Invitation,
        },
        InvitationRejected {
            invitation: Invitation,
        },
        InvitationCancelled {
            invitation: Invitation,
        },
        InvitationExpired {
            invitation: Invitation,
        },
        CohostRemoved {
            user_id: UserId,
            invitation_id: InvitationId,
            reason: RemovalReason,
        },
        CohostLeft {
            user_id: UserId,
            invitation_id: InvitationId,
        },
        PresenceChanged {
            user_id: UserId,
            online: bool,
            stamp: Option<PresenceStamp>,
        },
        ModeratorAdded {
            user_id: UserId,
        },
        ModeratorRemoved {
            user_id: UserId,
        },
        RequestsOpened {},
        RequestsClosed {},
        CohostMoved {
            user_id: UserId,
            seat: u8,
            from_seat: u8,
            swapped_with: Option<UserId>,
        },
        SeatLocked {
            seat: u8,
        },
        SeatUnlocked {
            seat: u8,
        },
        UserBanned {
            user_id: UserId,
            since_ms: u64,
            until_ms: Option<u64>,
        },
        UserUnbanned {
            user_id: UserId,
        },
        CohostMediaChanged {
            user_id: UserId,
            audio: bool,
            video: bool,
        },
    }

    /// `v2` → the wire types: no service caused it (none could act then); a stop a user caused has reason
    /// `host` (only the host could stop), one the system caused `system`.
    impl From<Envelope> for crate::Envelope {
        fn from(old: Envelope) -> Self {
            let by_user = old.actor.is_some();
            Self {
                seq: old.seq,
                room_id: old.room_id,
                version: old.version,
                at_ms: old.at_ms,
                actor: old.actor,
                service: None,
                command_id: old.command_id,
                event: event(old.event, by_user),
            }
        }
    }

    fn event(old: Event, by_user: bool) -> crate::Event {
        use crate::Event as New;
        match old {
            Event::RoomCreated { room } => New::RoomCreated { room },
            Event::RoomLive { room } => New::RoomLive { room },
            Event::RoomStopped { room } => New::RoomStopped {
                room,
                reason: super::upgrade_stop_reason(by_user),
            },
            Event::InvitationCreated { invitation } => New::InvitationCreated { invitation },
            Event::InvitationApproved { invitation } => New::InvitationApproved { invitation },
            Event::InvitationRejected { invitation } => New::InvitationRejected { invitation },
            Event::InvitationCancelled { invitation } => New::InvitationCancelled { invitation },
            Event::InvitationExpired { invitation } => New::InvitationExpired { invitation },
            Event::CohostRemoved {
                user_id,
                invitation_id,
                reason,
            } => New::CohostRemoved {
                user_id,
                invitation_id,
                reason,
            },
            Event::CohostLeft {
                user_id,
                invitation_id,
            } => New::CohostLeft {
                user_id,
                invitation_id,
            },
            Event::PresenceChanged {
                user_id,
                online,
                stamp,
            } => New::PresenceChanged {
                user_id,
                online,
                stamp,
            },
            stage => stage_event(stage),
        }
    }

    /// The stage controls' events, unchanged since `V2`.
    fn stage_event(old: Event) -> crate::Event {
        use crate::Event as New;
        match old {
            Event::ModeratorAdded { user_id } => New::ModeratorAdded { user_id },
            Event::ModeratorRemoved { user_id } => New::ModeratorRemoved { user_id },
            Event::RequestsOpened {} => New::RequestsOpened {},
            Event::RequestsClosed {} => New::RequestsClosed {},
            Event::CohostMoved {
                user_id,
                seat,
                from_seat,
                swapped_with,
            } => New::CohostMoved {
                user_id,
                seat,
                from_seat,
                swapped_with,
            },
            Event::SeatLocked { seat } => New::SeatLocked { seat },
            Event::SeatUnlocked { seat } => New::SeatUnlocked { seat },
            Event::UserBanned {
                user_id,
                since_ms,
                until_ms,
            } => New::UserBanned {
                user_id,
                since_ms,
                until_ms,
            },
            Event::UserUnbanned { user_id } => New::UserUnbanned { user_id },
            Event::CohostMediaChanged {
                user_id,
                audio,
                video,
            } => New::CohostMediaChanged {
                user_id,
                audio,
                video,
            },
            before => unreachable!("{before:?} is converted by event()"),
        }
    }
}

/// A stop recorded before stops carried a reason: only the host or the system could stop a room then.
fn upgrade_stop_reason(by_user: bool) -> crate::StopReason {
    if by_user {
        crate::StopReason::Host
    } else {
        crate::StopReason::System
    }
}

mod upgrade_v1 {
    //! `v1` → the wire types: seats unnumbered (0; the room's state numbers them as it replays: the lowest
    //! seat free when each was taken), media allowed, no moderators or locked seats, requests open, no seat named
    //! on an invitation; a removal a user caused has reason `host` (only the host could remove, or stop), one the
    //! system caused `system`.

    use super::v1;
    use crate::{
        Envelope, Event, Invitation, InvitationKind, InvitationStatus, RemovalReason, Room,
        RoomStatus, Seat,
    };

    impl From<v1::Envelope> for Envelope {
        fn from(old: v1::Envelope) -> Self {
            let by_user = old.actor.is_some();
            Self {
                seq: old.seq,
                room_id: old.room_id,
                version: old.version,
                at_ms: old.at_ms,
                actor: old.actor,
                service: None,
                command_id: old.command_id,
                event: event(old.event, by_user),
            }
        }
    }

    fn event(old: v1::Event, by_user: bool) -> Event {
        use v1::Event as Old;
        type New = Event;
        {
            match old {
                Old::RoomCreated { room } => New::RoomCreated { room: room.into() },
                Old::RoomLive { room } => New::RoomLive { room: room.into() },
                Old::RoomStopped { room } => New::RoomStopped {
                    room: room.into(),
                    reason: super::upgrade_stop_reason(by_user),
                },
                Old::InvitationCreated { invitation } => New::InvitationCreated {
                    invitation: invitation.into(),
                },
                Old::InvitationApproved { invitation } => New::InvitationApproved {
                    invitation: invitation.into(),
                },
                Old::InvitationRejected { invitation } => New::InvitationRejected {
                    invitation: invitation.into(),
                },
                Old::InvitationCancelled { invitation } => New::InvitationCancelled {
                    invitation: invitation.into(),
                },
                Old::InvitationExpired { invitation } => New::InvitationExpired {
                    invitation: invitation.into(),
                },
                Old::CohostRemoved {
                    user_id,
                    invitation_id,
                } => New::CohostRemoved {
                    user_id,
                    invitation_id,
                    reason: if by_user {
                        RemovalReason::Host
                    } else {
                        RemovalReason::System
                    },
                },
                Old::CohostLeft {
                    user_id,
                    invitation_id,
                } => New::CohostLeft {
                    user_id,
                    invitation_id,
                },
                Old::PresenceChanged { user_id, online } => New::PresenceChanged {
                    user_id,
                    online,
                    stamp: None,
                },
            }
        }
    }

    impl From<v1::Room> for Room {
        fn from(old: v1::Room) -> Self {
            Self {
                room_id: old.room_id,
                host: old.host,
                title: old.title,
                status: match old.status {
                    v1::RoomStatus::Idle => RoomStatus::Idle,
                    v1::RoomStatus::Live => RoomStatus::Live,
                    v1::RoomStatus::Ended => RoomStatus::Ended,
                },
                max_cohosts: old.max_cohosts,
                // Unnumbered (0): a room event of that time lists its seats; the room's state numbers them.
                cohosts: old.cohosts.into_iter().map(Seat::from).collect(),
                version: old.version,
                moderators: Vec::new(),
                locked_seats: Vec::new(),
                requests_open: true,
            }
        }
    }

    impl From<v1::Seat> for Seat {
        fn from(old: v1::Seat) -> Self {
            Self {
                user_id: old.user_id,
                invitation_id: old.invitation_id,
                since_ms: old.since_ms,
                online: old.online,
                seat: 0,
                audio: true,
                video: true,
            }
        }
    }

    impl From<v1::Invitation> for Invitation {
        fn from(old: v1::Invitation) -> Self {
            Self {
                invitation_id: old.invitation_id,
                room_id: old.room_id,
                kind: match old.kind {
                    v1::InvitationKind::Invite => InvitationKind::Invite,
                    v1::InvitationKind::Request => InvitationKind::Request,
                },
                host: old.host,
                user_id: old.user_id,
                status: match old.status {
                    v1::InvitationStatus::Pending => InvitationStatus::Pending,
                    v1::InvitationStatus::Approved => InvitationStatus::Approved,
                    v1::InvitationStatus::Rejected => InvitationStatus::Rejected,
                    v1::InvitationStatus::Cancelled => InvitationStatus::Cancelled,
                    v1::InvitationStatus::Expired => InvitationStatus::Expired,
                },
                created_ms: old.created_ms,
                updated_ms: old.updated_ms,
                expires_ms: old.expires_ms,
                seat: None,
            }
        }
    }
}
