//! Validated identifiers. Every constructor, including serde's, checks the contract's rules, so a value of
//! one of these types is always safe as a NATS subject token and as a LiveKit identity.
//!
//! Cloning one never allocates: `SmolStr` keeps up to 23 bytes inline and shares longer ones. Display gives the
//! contract's string; Debug wraps it in the type's name, so logs read as the wire does.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use smol_str::SmolStr;

use crate::limits::COMMAND_ID_LEN_MAX;
use crate::limits::NAME_LEN_MAX;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct IdError {
    /// The field, as the contract names it.
    pub what: &'static str,
    /// What rule the input broke.
    pub reason: &'static str,
}

fn check_name(s: &str, what: &'static str) -> Result<(), IdError> {
    let reason = if s.is_empty() {
        "must not be empty"
    } else if s.len() > NAME_LEN_MAX {
        "must be at most 64 characters"
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "must contain only A-Z, a-z, 0-9, '_' and '-'"
    } else {
        return Ok(());
    };
    Err(IdError { what, reason })
}

fn check_command_id(s: &str) -> Result<(), IdError> {
    let reason = if s.is_empty() {
        "must not be empty"
    } else if s.len() > COMMAND_ID_LEN_MAX {
        "must be at most 64 characters"
    } else if !s.bytes().all(|b| b.is_ascii_graphic()) {
        "must contain only printable ASCII without spaces"
    } else {
        return Ok(());
    };
    Err(IdError {
        what: "command_id",
        reason,
    })
}

/// Deserializes any string-like id through its checked constructor.
struct CheckedStr<T>(fn(&str) -> Result<T, IdError>, &'static str);

impl<T> Visitor<'_> for CheckedStr<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a valid {}", self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

/// An id's OpenAPI schema: a string, with the contract's rule as its pattern.
#[cfg(feature = "openapi")]
fn id_schema(
    description: &str,
    pattern: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .into()
}

/// Implements the OpenAPI schema of a string id.
macro_rules! id_schema {
    ($name:ident, $description:literal, $pattern:literal) => {
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema($description, $pattern)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

id_schema!(
    RoomId,
    "A room: 1 to 64 characters of [A-Za-z0-9_-], chosen by the host.",
    "^[A-Za-z0-9_-]{1,64}$"
);
id_schema!(
    UserId,
    "A user: 1 to 64 characters of [A-Za-z0-9_-], as the deployment's auth names it.",
    "^[A-Za-z0-9_-]{1,64}$"
);
id_schema!(
    ServiceId,
    "A backend service: 1 to 64 characters of [A-Za-z0-9_-], the service credential's sub.",
    "^[A-Za-z0-9_-]{1,64}$"
);
id_schema!(
    CommandId,
    "A client's idempotency key: 1 to 64 printable ASCII characters.",
    "^[!-~]{1,64}$"
);
id_schema!(
    InvitationId,
    "An invitation, {room_id}.{n}, n counting the room's invitations from 1.",
    "^[A-Za-z0-9_-]{1,64}\\.[1-9][0-9]*$"
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SmolStr);

        impl $name {
            /// Checks `s` against the contract's rules for this id; [`IdError`] says which rule it broke.
            pub fn new(s: &str) -> Result<Self, IdError> {
                $check(s)?;
                Ok(Self(SmolStr::new(s)))
            }

            /// The id as on the wire.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(CheckedStr(Self::new, $what))
            }
        }
    };
}

string_id!(
    /// A room: 1 to 64 characters of `[A-Za-z0-9_-]`, chosen by the host. Case-sensitive, and never reused
    /// in a deployment.
    RoomId,
    "room_id",
    |s| check_name(s, "room_id")
);
string_id!(
    /// A user: 1 to 64 characters of `[A-Za-z0-9_-]`, as the deployment's auth names it (the JWT `sub`).
    /// Case-sensitive.
    UserId,
    "user_id",
    |s| check_name(s, "user_id")
);
string_id!(
    /// A backend service acting with a service credential: 1 to 64 characters of `[A-Za-z0-9_-]` (the service
    /// JWT's `sub`). Events it caused name it in the envelope's `service`.
    ServiceId,
    "service",
    |s| check_name(s, "service")
);
string_id!(
    /// A client's idempotency key: 1 to 64 printable ASCII characters, `!` to `~` (no spaces, no control
    /// characters). The same key with the same command gets the first result again.
    CommandId,
    "command_id",
    check_command_id
);

/// An invitation, `{room_id}.{n}` with `n` counting the room's invitations from 1.
///
/// The room is part of the id so a command on an invitation routes to its room without a global index; the
/// `.` cannot occur in a room id, so the split is unambiguous. Room ids are never reused, so the id is unique
/// across the deployment.
///
/// Parse one with `str::parse`, which takes canonical forms only: `stage-1.1`, but not `stage-1.01`, `stage-1.0`
/// or `stage-1.+1`. JSON carries the string; postcard the pair `(room_id, n)`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvitationId {
    room_id: RoomId,
    number: u64,
}

impl InvitationId {
    /// The `number`th invitation of `room_id`; numbers start at 1, so 0 is an [`IdError`].
    pub fn new(room_id: RoomId, number: u64) -> Result<Self, IdError> {
        if number == 0 {
            return Err(IdError {
                what: "invitation_id",
                reason: "number must be at least 1",
            });
        }
        Ok(Self { room_id, number })
    }

    /// The room the invitation belongs to, which routes any command on it.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The invitation's place among its room's invitations, from 1.
    pub fn number(&self) -> u64 {
        self.number
    }

    fn parse(s: &str) -> Result<Self, IdError> {
        let bad = |reason| IdError {
            what: "invitation_id",
            reason,
        };
        let (room, number) = s
            .rsplit_once('.')
            .ok_or(bad("must look like {room_id}.{n}"))?;
        let room_id = RoomId::new(room).map_err(|_| bad("must start with a valid room_id"))?;
        let canonical = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit())
            && !number.starts_with('0');
        let number = canonical
            .then(|| number.parse::<u64>().ok())
            .flatten()
            .ok_or(bad(
                "must end in a decimal number from 1 without leading zeros",
            ))?;
        Self::new(room_id, number)
    }
}

impl FromStr for InvitationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

/// Ids made of a room and a number: shown as the contract's string, in Debug too, so logs read as the wire does.
macro_rules! room_and_number {
    ($name:ident, $sep:literal, $number:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, concat!("{}", $sep, "{}"), self.room_id, self.$number)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(\"{}\")"), self)
            }
        }
    };
}

room_and_number!(InvitationId, ".", number);

/// Text formats carry the contract's string; compact formats carry `(room_id, n)`, which is smaller and
/// needs no parsing.
impl Serialize for InvitationId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            (&self.room_id, self.number).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for InvitationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_str(CheckedStr(Self::parse, "invitation_id"))
        } else {
            let (room_id, number) = <(RoomId, u64)>::deserialize(d)?;
            Self::new(room_id, number).map_err(de::Error::custom)
        }
    }
}

/// `"{room_id}:{version}"`: names one event of one room. Derived from an envelope ([`crate::Envelope::event_id`]),
/// never chosen; Display gives the string, which is also the event's `Nats-Msg-Id` on its room subject.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The room.
    pub room_id: RoomId,
    /// The event's position in the room, from 1.
    pub version: u64,
}

room_and_number!(EventId, ":", version);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert!(RoomId::new("a").is_ok());
        assert!(RoomId::new("Room_1-x").is_ok());
        assert!(RoomId::new(&"x".repeat(64)).is_ok());
        for bad in ["", "a.b", "a b", "a>", "a*", "é", "a\n", &"x".repeat(65)] {
            assert!(RoomId::new(bad).is_err(), "{bad:?} must be refused");
            assert!(UserId::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn serde_goes_through_the_constructor() {
        assert!(serde_json::from_str::<RoomId>("\"ok-room\"").is_ok());
        let err = serde_json::from_str::<RoomId>("\"bad.room\"").unwrap_err();
        assert!(err.to_string().contains("room_id"), "{err}");
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
        assert!(serde_json::from_str::<UserId>("17").is_err());
        let bytes = postcard::to_stdvec("bad room").unwrap();
        assert!(postcard::from_bytes::<RoomId>(&bytes).is_err());
    }

    #[test]
    fn invitation_ids_parse_only_canonical_forms() {
        let id: InvitationId = "room-1.12".parse().unwrap();
        assert_eq!(id.room_id().as_str(), "room-1");
        assert_eq!(id.number(), 12);
        assert_eq!(id.to_string(), "room-1.12");
        for bad in [
            "room",
            "room.",
            ".1",
            "room.0",
            "room.01",
            "room.+1",
            "a.b.1",
            "room.1x",
            "room.99999999999999999999",
        ] {
            assert!(
                bad.parse::<InvitationId>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn invitation_ids_round_trip_in_both_formats() {
        let id: InvitationId = "r.7".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"r.7\"");
        assert_eq!(serde_json::from_str::<InvitationId>("\"r.7\"").unwrap(), id);
        let bytes = postcard::to_stdvec(&id).unwrap();
        assert_eq!(postcard::from_bytes::<InvitationId>(&bytes).unwrap(), id);
        let zero = postcard::to_stdvec(&("r", 0u64)).unwrap();
        assert!(postcard::from_bytes::<InvitationId>(&zero).is_err());
    }

    #[test]
    fn command_ids_are_printable_ascii() {
        assert!(CommandId::new("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert!(CommandId::new("key:1/2").is_ok());
        for bad in ["", "a b", "tab\t", "ü", &"k".repeat(65)] {
            assert!(CommandId::new(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
