//! The log's layouts, frozen: each version's types exactly as its records were written, kept apart from the
//! wire types, so the wire can change without a log written earlier ceasing to decode.
//!
//! A record decodes into its version's types and converts into the wire types; each conversion is total and
//! fixed, so replaying an old log gives the same result on every build. See "Versioning" in proto/README.md.

/// The layout of `StoredEvent::V1`: the contract's types as first released. Never edited.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::id::{CommandId, InvitationId, RoomId, UserId};

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Envelope {
        pub seq: u64,
        pub room_id: RoomId,
        pub version: u64,
        pub at_ms: u64,
        pub actor: Option<UserId>,
        pub command_id: Option<CommandId>,
        pub event: Event,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Event {
        RoomCreated {
            room: Room,
        },
        RoomLive {
            room: Room,
        },
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
        },
        CohostLeft {
            user_id: UserId,
            invitation_id: InvitationId,
        },
        PresenceChanged {
            user_id: UserId,
            online: bool,
        },
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Room {
        pub room_id: RoomId,
        pub host: UserId,
        pub title: String,
        pub status: RoomStatus,
        pub max_cohosts: u8,
        pub cohosts: Vec<Seat>,
        pub version: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum RoomStatus {
        Idle,
        Live,
        Ended,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Seat {
        pub user_id: UserId,
        pub invitation_id: InvitationId,
        pub since_ms: u64,
        pub online: bool,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Invitation {
        pub invitation_id: InvitationId,
        pub room_id: RoomId,
        pub kind: InvitationKind,
        pub host: UserId,
        pub user_id: UserId,
        pub status: InvitationStatus,
        pub created_ms: u64,
        pub updated_ms: u64,
        pub expires_ms: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum InvitationKind {
        Invite,
        Request,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub enum InvitationStatus {
        Pending,
        Approved,
        Rejected,
        Cancelled,
        Expired,
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
                Old::RoomStopped { room } => New::RoomStopped { room: room.into() },
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
