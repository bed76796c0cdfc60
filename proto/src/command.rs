//! Commands: what a host, a candidate or the system asks of a room.
//!
//! Each argument struct is the contract's JSON arguments for one or more commands (also the HTTP bodies, minus
//! ids taken from the path) and refuses unknown fields. Parsing checks ids and integer types; the other rules (a
//! seat within the room's `max_cohosts`, a ban's length, who may) are `cohost-core`'s, which answers with the
//! contract's error codes.

use serde::{Deserialize, Serialize};

use crate::id::{InvitationId, RoomId, ServiceId, UserId};

/// Who issues a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A user, as the deployment's auth named them (the JWT `sub`, or the service request's `actor`).
    User(UserId),
    /// The engine itself: the expiry timer and LiveKit webhooks.
    System,
    /// A backend service with a service credential: it may do what the system does to a room (stop it,
    /// remove a co-host), and the events it causes name it. Appended: the variant order is stored.
    Service(ServiceId),
}

impl Actor {
    /// The user, or `None` for the system or a service.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Self::User(user) => Some(user),
            Self::System | Self::Service(_) => None,
        }
    }

    /// The service, for a service's command.
    pub fn service(&self) -> Option<&ServiceId> {
        match self {
            Self::Service(service) => Some(service),
            Self::User(_) | Self::System => None,
        }
    }

    /// Whether the actor has the system's authority over rooms: the system itself, or a service.
    pub fn acts_as_system(&self) -> bool {
        matches!(self, Self::System | Self::Service(_))
    }

    /// Whether this is the given user.
    pub fn is(&self, user: &UserId) -> bool {
        self.user() == Some(user)
    }
}

/// `create_room`: the caller becomes the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// The new room's id; never used before in the deployment (else `already_exists`).
    pub room_id: RoomId,
    /// At most 200 characters, no control characters (newlines and tabs included); empty when absent.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")
    )]
    pub title: Option<String>,
    /// 1 to 16; the deployment's default when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 16))]
    pub max_cohosts: Option<u8>,
}

/// Arguments naming only a room: `go_live`, `stop_room`, `leave_stage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomTarget {
    /// The room acted on.
    pub room_id: RoomId,
}

/// Arguments naming a user in a room: `remove_cohost`, `add_moderator`, `remove_moderator`, `unban_user`,
/// `disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTarget {
    /// The room acted on.
    pub room_id: RoomId,
    /// The user acted on, not the caller.
    pub user_id: UserId,
}

/// Arguments naming an invitation: `accept_invitation`, `reject_invitation`, `cancel_invitation`, `expire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvitationTarget {
    /// The invitation; its room is part of the id.
    pub invitation_id: InvitationId,
}

/// `presence`: LiveKit saw a participant join or leave. System only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// The room the participant is in.
    pub room_id: RoomId,
    /// The participant's LiveKit identity: the host or a co-host, else the command is `not_found`.
    pub user_id: UserId,
    /// `true` for `participant_joined`, `false` for `participant_left`.
    pub online: bool,
    /// LiveKit's time and participant for the report, so reports are ordered by LiveKit's clock rather than
    /// by arrival; `null` for a report that has none (it is applied as it arrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<crate::PresenceStamp>,
}

/// `invite`: the host or a moderator offers `user_id` a seat, the numbered one if `seat` names it (accept
/// takes it when it is free and unlocked then, else the lowest free unlocked seat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// The room whose stage is offered.
    pub room_id: RoomId,
    /// The candidate: neither the host nor the moderator inviting.
    pub user_id: UserId,
    /// The seat offered, 1 to the room's `max_cohosts`; `None`: the lowest free unlocked seat on accept.
    #[serde(default)]
    pub seat: Option<u8>,
}

/// `request_to_join`: the caller asks for a seat, the numbered one if `seat` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestToJoin {
    /// The room whose stage the caller asks for; it must take requests (`requests_open`).
    pub room_id: RoomId,
    /// The seat asked for, 1 to the room's `max_cohosts`; `None`: the lowest free unlocked seat on approval.
    #[serde(default)]
    pub seat: Option<u8>,
}

impl From<UserTarget> for Invite {
    /// An invitation that names no seat.
    fn from(target: UserTarget) -> Self {
        Self {
            room_id: target.room_id,
            user_id: target.user_id,
            seat: None,
        }
    }
}

impl From<RoomTarget> for RequestToJoin {
    /// A request that names no seat.
    fn from(target: RoomTarget) -> Self {
        Self {
            room_id: target.room_id,
            seat: None,
        }
    }
}

/// `move_cohost`: the co-host takes seat `seat`; whoever sat there takes theirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveCohost {
    /// The room.
    pub room_id: RoomId,
    /// The seated co-host to move (else `not_found`).
    pub user_id: UserId,
    /// The destination, 1 to the room's `max_cohosts`, not locked.
    pub seat: u8,
}

/// Arguments naming a seat of a room: `lock_seat`, `unlock_seat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatTarget {
    /// The room.
    pub room_id: RoomId,
    /// The seat's number, 1 to the room's `max_cohosts`.
    pub seat: u8,
}

/// `ban_user`: for `duration_s` seconds, or for the room's life when it names none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanUser {
    /// The room the ban holds in; bans are per room.
    pub room_id: RoomId,
    /// The user banned: never the host, a moderator only by the host.
    pub user_id: UserId,
    /// Seconds, 1 to [`BAN_DURATION_MAX_S`](crate::limits::BAN_DURATION_MAX_S); `None` bans for the room's
    /// life.
    #[serde(default)]
    pub duration_s: Option<u64>,
}

/// `set_cohost_media`: whether the co-host may publish audio, and video; what it leaves out stays as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohostMedia {
    /// The room.
    pub room_id: RoomId,
    /// The seated co-host (else `not_found`).
    pub user_id: UserId,
    /// May publish the microphone; `None` keeps it. At least one of `audio` and `video` must be given.
    #[serde(default)]
    pub audio: Option<bool>,
    /// May publish the camera; `None` keeps it.
    #[serde(default)]
    pub video: Option<bool>,
}

/// `set_requests_open`: whether `request_to_join` is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsOpen {
    /// The room.
    pub room_id: RoomId,
    /// `true` opens the room to requests, `false` closes it.
    pub open: bool,
}

/// `end_abandoned`: the room ends as `room_stopped` with this reason, `host_absent` or `never_live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndAbandoned {
    /// The room.
    pub room_id: RoomId,
    /// Why: [`StopReason::HostAbsent`](crate::StopReason::HostAbsent) for a live room,
    /// [`StopReason::NeverLive`](crate::StopReason::NeverLive) for an idle one; any other is `invalid_argument`.
    pub reason: crate::StopReason,
}

/// Declares [`Command`] once, and from that one list its names and its parsing from a name and JSON arguments.
macro_rules! commands {
    ($($(#[doc = $doc:literal])* $variant:ident($args:ty) = $name:literal),* $(,)?) => {
        /// Every command of the contract's table. The variant names the command; its arguments are the
        /// contract's.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub enum Command {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant($args),)*
        }

        impl Command {
            /// Every command name, as in `cohost.v1.cmd.<name>`.
            pub const NAMES: [&'static str; [$($name),*].len()] = [$($name),*];

            /// The command's contract name, one of [`Command::NAMES`].
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }

            /// Parses a command from its name and its JSON arguments, refusing unknown fields. The arguments
            /// carry no `actor`, `command_id` or `expected_version`: the caller takes those off first.
            pub fn from_json(name: &str, args: &[u8]) -> Result<Self, CommandParseError> {
                fn parse<'a, T: Deserialize<'a>>(args: &'a [u8]) -> Result<T, CommandParseError> {
                    serde_json::from_slice(args)
                        .map_err(|e| CommandParseError::Arguments(e.to_string()))
                }
                match name {
                    $($name => Ok(Self::$variant(parse(args)?)),)*
                    _ => Err(CommandParseError::UnknownCommand(name.chars().take(64).collect())),
                }
            }
        }
    };
}

commands! {
    /// The caller becomes the host of a new, idle room.
    CreateRoom(CreateRoom) = "create_room",
    /// The host takes an idle room live.
    GoLive(RoomTarget) = "go_live",
    /// The host (or the system) ends the room: pending offers cancelled, seats emptied, then `room_stopped`.
    StopRoom(RoomTarget) = "stop_room",
    /// The host or a moderator offers a user a seat.
    Invite(Invite) = "invite",
    /// Any user but the host asks for a seat ("raises a hand").
    RequestToJoin(RequestToJoin) = "request_to_join",
    /// The responder accepts: the candidate takes a seat.
    AcceptInvitation(InvitationTarget) = "accept_invitation",
    /// The responder declines.
    RejectInvitation(InvitationTarget) = "reject_invitation",
    /// The initiator withdraws a pending offer.
    CancelInvitation(InvitationTarget) = "cancel_invitation",
    /// The host, a moderator or the system takes a co-host's seat away.
    RemoveCohost(UserTarget) = "remove_cohost",
    /// A co-host gives up their own seat.
    LeaveStage(RoomTarget) = "leave_stage",
    /// System only: the timer saw `expires_ms` pass.
    Expire(InvitationTarget) = "expire",
    /// System only: a LiveKit webhook.
    Presence(Presence) = "presence",
    /// The host appoints a moderator (at most 8).
    AddModerator(UserTarget) = "add_moderator",
    /// The host removes a moderator.
    RemoveModerator(UserTarget) = "remove_moderator",
    /// The host or a moderator opens or closes the room to requests.
    SetRequestsOpen(RequestsOpen) = "set_requests_open",
    /// The host or a moderator moves a co-host to another seat, swapping with whoever sat there.
    MoveCohost(MoveCohost) = "move_cohost",
    /// The host or a moderator locks an empty seat: no one may take it.
    LockSeat(SeatTarget) = "lock_seat",
    /// The host or a moderator unlocks a seat.
    UnlockSeat(SeatTarget) = "unlock_seat",
    /// The host or a moderator bans a user from the room, ending their offers, seat and moderator role.
    BanUser(BanUser) = "ban_user",
    /// The host or a moderator lifts a ban early.
    UnbanUser(UserTarget) = "unban_user",
    /// The host or a moderator sets what a co-host may publish.
    SetCohostMedia(CohostMedia) = "set_cohost_media",
    /// System only: the timer saw a co-host's disconnect grace pass.
    Disconnect(UserTarget) = "disconnect",
    /// System only: a timer saw a room abandoned (its host away too long, or never live) and ends it.
    EndAbandoned(EndAbandoned) = "end_abandoned",
}

impl Command {
    /// The room the command acts on; an invitation's room is part of its id.
    pub fn room_id(&self) -> &RoomId {
        match self {
            Self::CreateRoom(c) => &c.room_id,
            Self::GoLive(t) | Self::StopRoom(t) | Self::LeaveStage(t) => &t.room_id,
            Self::RequestToJoin(r) => &r.room_id,
            Self::Invite(i) => &i.room_id,
            Self::RemoveCohost(t)
            | Self::AddModerator(t)
            | Self::RemoveModerator(t)
            | Self::UnbanUser(t)
            | Self::Disconnect(t) => &t.room_id,
            Self::MoveCohost(m) => &m.room_id,
            Self::LockSeat(s) | Self::UnlockSeat(s) => &s.room_id,
            Self::BanUser(b) => &b.room_id,
            Self::SetCohostMedia(m) => &m.room_id,
            Self::AcceptInvitation(t)
            | Self::RejectInvitation(t)
            | Self::CancelInvitation(t)
            | Self::Expire(t) => t.invitation_id.room_id(),
            Self::Presence(p) => &p.room_id,
            Self::SetRequestsOpen(r) => &r.room_id,
            Self::EndAbandoned(e) => &e.room_id,
        }
    }
}

/// Why bytes are not a command. Both are the contract's `invalid_argument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandParseError {
    /// No command has this name; holds at most the name's first 64 characters.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The arguments are not the command's JSON: malformed, an unknown or missing field, a bad id, or an integer
    /// out of its type's range. Holds serde's message, for people.
    #[error("bad arguments: {0}")]
    Arguments(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_command() {
        let samples: [(&str, &str); 23] = [
            (
                "create_room",
                r#"{"room_id":"r","title":"t","max_cohosts":3}"#,
            ),
            ("go_live", r#"{"room_id":"r"}"#),
            ("stop_room", r#"{"room_id":"r"}"#),
            ("invite", r#"{"room_id":"r","user_id":"u"}"#),
            ("request_to_join", r#"{"room_id":"r"}"#),
            ("accept_invitation", r#"{"invitation_id":"r.1"}"#),
            ("reject_invitation", r#"{"invitation_id":"r.1"}"#),
            ("cancel_invitation", r#"{"invitation_id":"r.1"}"#),
            ("remove_cohost", r#"{"room_id":"r","user_id":"u"}"#),
            ("leave_stage", r#"{"room_id":"r"}"#),
            ("expire", r#"{"invitation_id":"r.1"}"#),
            ("presence", r#"{"room_id":"r","user_id":"u","online":true}"#),
            ("add_moderator", r#"{"room_id":"r","user_id":"u"}"#),
            ("remove_moderator", r#"{"room_id":"r","user_id":"u"}"#),
            ("set_requests_open", r#"{"room_id":"r","open":false}"#),
            ("move_cohost", r#"{"room_id":"r","user_id":"u","seat":2}"#),
            ("lock_seat", r#"{"room_id":"r","seat":3}"#),
            ("unlock_seat", r#"{"room_id":"r","seat":3}"#),
            (
                "ban_user",
                r#"{"room_id":"r","user_id":"u","duration_s":60}"#,
            ),
            ("unban_user", r#"{"room_id":"r","user_id":"u"}"#),
            (
                "set_cohost_media",
                r#"{"room_id":"r","user_id":"u","audio":false}"#,
            ),
            ("disconnect", r#"{"room_id":"r","user_id":"u"}"#),
            ("end_abandoned", r#"{"room_id":"r","reason":"never_live"}"#),
        ];
        for ((name, args), expected) in samples.iter().zip(Command::NAMES) {
            assert_eq!(*name, expected);
            let command = Command::from_json(name, args.as_bytes()).unwrap();
            assert_eq!(command.name(), *name);
            assert_eq!(command.room_id().as_str(), "r");
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        let cases: [(&str, &str); 9] = [
            ("go_live", r#"{"room_id":"r","extra":1}"#),
            ("go_live", r#"{"room_id":"bad id"}"#),
            ("create_room", r#"{"room_id":"r","max_cohosts":300}"#),
            ("accept_invitation", r#"{"invitation_id":"r.0"}"#),
            ("invite", r#"{"room_id":"r"}"#),
            ("invite", r#"not json"#),
            ("move_cohost", r#"{"room_id":"r","user_id":"u","seat":256}"#),
            ("lock_seat", r#"{"room_id":"r","seat":-1}"#),
            (
                "ban_user",
                r#"{"room_id":"r","user_id":"u","duration_s":"1h"}"#,
            ),
        ];
        for (name, args) in cases {
            let err = Command::from_json(name, args.as_bytes()).unwrap_err();
            assert!(
                matches!(err, CommandParseError::Arguments(_)),
                "{name} {args}: {err:?}"
            );
        }
        assert_eq!(
            Command::from_json("drop_tables", b"{}").unwrap_err(),
            CommandParseError::UnknownCommand("drop_tables".into())
        );
    }
}
