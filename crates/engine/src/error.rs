use cohost_core::Rejection;
use cohost_proto::{CommandParseError, ErrorCode, IdError};
use cohost_store::{BackendError, StoreError};

/// Why the engine did not do what was asked. A caller matches on the variant; each maps to one of the
/// contract's error codes ([`Error::code`]), and its text is a short message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The rules refused the command; the rejection's own code is the answer's (`permission_denied`,
    /// `not_found`, `already_exists`, `failed_precondition`, `resource_exhausted`, `conflict`,
    /// `invalid_argument`). The command appended nothing.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// The input cannot be a command or a query: a malformed id or argument, an unknown command, a cursor this
    /// list did not give, a cursor past the log. `invalid_argument`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The room named does not exist. `not_found`.
    #[error("room not found")]
    RoomNotFound,
    /// The same actor used this `command_id` before for a different command. `conflict`.
    #[error("command_id was already used for a different command")]
    CommandIdReused,
    /// The command queue is full; nothing happened, retry shortly. `unavailable`.
    #[error("the command queue is full; retry shortly")]
    QueueFull,
    /// The engine is shutting down, or has: it takes nothing more. `unavailable`.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The batch the command was decided in was not stored (its write failed and was taken back). A retry with
    /// the same `command_id` lands at most once. `unavailable`.
    #[error("the batch was not stored ({cause}); retry with the same command_id")]
    NotStored {
        /// Why the write failed, from the store.
        cause: String,
    },
    /// The engine stopped taking writes after a failed flush or a panic in the sequencer (fail-stop). The
    /// command may have landed if it was in the batch whose flush failed; restart the process to recover.
    /// `unavailable`.
    #[error("the engine stopped taking writes ({cause}); it recovers when restarted")]
    Stopped {
        /// The first failure that stopped it: a flush's error, or the sequencer's panic message.
        cause: String,
    },
    /// The data directory is open in another process; one directory serves one process. `unavailable`.
    #[error(
        "the data directory {dir} is already open in another engine process; one directory serves one process"
    )]
    DirectoryInUse {
        /// The data directory, as given.
        dir: String,
    },
    /// A read or a stream was asked to start before what the engine still holds: a candidate's events before
    /// the engine last opened (or older than their newest indexed ones), or, in cluster mode, events before
    /// the base the partition's owner started from. Start over from a snapshot. `failed_precondition`.
    #[error(
        "events before seq {covered_from} are no longer held here; start again from a snapshot"
    )]
    HistoryGone {
        /// The first seq still held here (for a candidate's stream, the first its index covers).
        covered_from: u64,
    },
    /// A room's events asked for were removed by log retention (the room ended longer ago than it keeps);
    /// the room's final state still reads. `not_found`.
    #[error("the room's events before seq {kept_from} were removed by log retention")]
    EventsRemoved {
        /// The first seq the log still holds.
        kept_from: u64,
    },
    /// The store failed to read or write outside the write path (a read of the log, a cursor). `unavailable`.
    #[error("storage: {0}")]
    Storage(String),
    /// The log or a record in it is damaged, or does not continue; the message names the seq. `internal`.
    #[error("the log is damaged: {0}")]
    Corrupt(String),
    /// A broken invariant or a failure the engine did not expect. `internal`.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The contract's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected(rejection) => rejection.code(),
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::RoomNotFound => ErrorCode::NotFound,
            Self::CommandIdReused => ErrorCode::Conflict,
            Self::HistoryGone { .. } => ErrorCode::FailedPrecondition,
            Self::EventsRemoved { .. } => ErrorCode::NotFound,
            Self::QueueFull
            | Self::ShuttingDown
            | Self::NotStored { .. }
            | Self::Stopped { .. }
            | Self::DirectoryInUse { .. }
            | Self::Storage(_) => ErrorCode::Unavailable,
            Self::Corrupt(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

impl From<IdError> for Error {
    fn from(error: IdError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl From<CommandParseError> for Error {
    fn from(error: CommandParseError) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidArgument(reason) => Self::InvalidArgument(reason.into()),
            StoreError::Before { first, .. } => Self::HistoryGone {
                covered_from: first,
            },
            StoreError::Backend(BackendError::Locked(dir)) => Self::DirectoryInUse { dir },
            StoreError::FlushFailed { cause } | StoreError::ReplicationStopped { cause } => {
                Self::Stopped { cause }
            }
            StoreError::Backend(BackendError::Io(reason)) => Self::Storage(reason),
            refused @ StoreError::ReplicationRefused { .. } => Self::Storage(refused.to_string()),
            damaged @ (StoreError::Corrupt { .. }
            | StoreError::Gap { .. }
            | StoreError::CorruptValue { .. }
            | StoreError::Format { .. }
            | StoreError::Truncated { .. }) => Self::Corrupt(damaged.to_string()),
        }
    }
}
