use cohost_core::Rejection;
use cohost_proto::{CommandParseError, ErrorCode, IdError};

/// A failed call: one contract error code and a short message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        Self::new(rejection.code(), rejection.to_string())
    }
}

impl From<IdError> for Error {
    fn from(error: IdError) -> Self {
        Self::invalid_argument(error.to_string())
    }
}

impl From<CommandParseError> for Error {
    fn from(error: CommandParseError) -> Self {
        Self::invalid_argument(error.to_string())
    }
}

impl From<cohost_store::StoreError> for Error {
    fn from(error: cohost_store::StoreError) -> Self {
        match error {
            cohost_store::StoreError::InvalidArgument(reason) => Self::invalid_argument(reason),
            other => Self::unavailable(format!("storage: {other}")),
        }
    }
}
