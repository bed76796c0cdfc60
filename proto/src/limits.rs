//! Every limit of the contract, in one place: how long a name may be, what a room, a request, a page and a
//! read of the log may hold. Past a limit a caller gets `invalid_argument` or `resource_exhausted`, never
//! unbounded growth; proto/README.md lists the same numbers.

/// The longest `room_id` or `user_id`, in characters of `[A-Za-z0-9_-]`.
pub const NAME_LEN_MAX: usize = 64;
/// The longest `command_id`.
pub const COMMAND_ID_LEN_MAX: usize = 64;
/// The longest room title, in characters.
pub const TITLE_LEN_MAX: usize = 200;
/// Seats of a room whose `create_room` names none and the deployment sets no other default.
pub const MAX_COHOSTS_DEFAULT: u8 = 4;
/// The most seats a room may have.
pub const MAX_COHOSTS_LIMIT: u8 = 16;
/// Pending invitations and requests a room holds at once.
pub const PENDING_PER_ROOM_MAX: usize = 32;
/// The largest request body: an HTTP body, a NATS service request, a LiveKit webhook.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// The most items a list returns in one page.
pub const PAGE_LIMIT_MAX: usize = 100;
/// The most events one read of the log returns.
pub const READ_EVENTS_MAX: usize = 1_000;
