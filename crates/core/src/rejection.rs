use std::fmt;

use cohost_proto::ErrorCode;

/// Why `decide` refused a command. A rejection is an answer, not a failure: it appends nothing.
///
/// Each variant maps to exactly one contract error code; the text is a short lowercase reason for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The input breaks a rule: a long title, a seat count out of range, inviting oneself.
    InvalidArgument(&'static str),
    /// The actor is not the party who may do this.
    PermissionDenied(&'static str),
    /// The room, invitation or seat does not exist.
    NotFound(&'static str),
    /// The room exists, or the candidate already has a pending offer or a seat.
    AlreadyExists(&'static str),
    /// The state does not allow it now: not pending, expired, not idle, ended.
    FailedPrecondition(&'static str),
    /// A limit is reached: pending offers, seats, moderators or bans in the room, or a quota across rooms.
    ResourceExhausted(&'static str),
    /// `expected_version` does not match the room's version.
    Conflict {
        /// The version the caller expected.
        expected: u64,
        /// The room's version when the command was decided.
        actual: u64,
    },
}

impl Rejection {
    /// The contract's error code for this rejection, one per variant.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Self::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Self::Conflict { .. } => ErrorCode::Conflict,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::InvalidArgument(reason)
            | Self::PermissionDenied(reason)
            | Self::NotFound(reason)
            | Self::AlreadyExists(reason)
            | Self::FailedPrecondition(reason)
            | Self::ResourceExhausted(reason) => f.write_str(reason),
            Self::Conflict { expected, actual } => {
                write!(f, "expected room version {expected}, but it is {actual}")
            }
        }
    }
}

impl std::error::Error for Rejection {}
