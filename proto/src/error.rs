//! The contract's error codes and the bodies that carry them.
//!
//! A caller matches on [`ErrorCode`]; [`ErrorInfo::message`] is for people, and its wording is not part of the
//! contract.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The contract's error codes. Every failure a caller sees carries exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The input breaks a rule of the contract: a bad id, a long title, a malformed body.
    InvalidArgument,
    /// No valid credentials.
    Unauthenticated,
    /// The caller is not the party who may do this.
    PermissionDenied,
    /// No such room, invitation or seat.
    NotFound,
    /// The room, the pending invitation or the seat already exists.
    AlreadyExists,
    /// The state does not allow it now: not pending, not live, already ended.
    FailedPrecondition,
    /// A limit is reached: pending invitations, seats, queue space.
    ResourceExhausted,
    /// `expected_version` differs, or a `command_id` was reused for another command.
    Conflict,
    /// The engine cannot take the command now; retrying later may succeed.
    Unavailable,
    /// A bug or an unexpected failure inside the engine.
    Internal,
}

impl ErrorCode {
    /// Every code, in the contract's order; for metrics and tests that must cover each one.
    pub const ALL: [ErrorCode; 10] = [
        Self::InvalidArgument,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::NotFound,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::ResourceExhausted,
        Self::Conflict,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The code as on the wire, snake_case: `invalid_argument`, `not_found`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status of the contract's table. A body over the size limit is `invalid_argument` sent as 413,
    /// which the HTTP layer decides, not the code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::AlreadyExists | Self::Conflict | Self::FailedPrecondition => 409,
            Self::ResourceExhausted => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code", "message"}`: what went wrong, for a program and for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    /// What a program matches on.
    pub code: ErrorCode,
    /// A short explanation for people, such as `invitation stage-1.1 is not pending`; its wording may change, so
    /// never match on it.
    pub message: String,
}

/// The HTTP error body, `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The failure.
    pub error: ErrorInfo,
}

impl ErrorBody {
    /// The body for `code`, with `message` for people.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorInfo {
                code,
                message: message.into(),
            },
        }
    }
}
