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
/// Most moderators a room may have.
pub const MODERATORS_MAX: usize = 8;
/// Users a room holds banned at once (ended bans included until the next ban prunes them).
pub const BANS_PER_ROOM_MAX: usize = 1_024;
/// The longest ban with a duration, in seconds (a year); a ban naming none lasts the room's life.
pub const BAN_DURATION_MAX_S: u64 = 366 * 24 * 3600;
/// The largest request body: an HTTP body, a NATS service request, a LiveKit webhook.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// The most items a list returns in one page.
pub const PAGE_LIMIT_MAX: usize = 100;
/// The most events one read of the log returns.
pub const READ_EVENTS_MAX: usize = 1_000;
/// Rooms one host holds open (idle or live) at once, unless the deployment sets another number.
pub const OPEN_ROOMS_PER_HOST_DEFAULT: u32 = 20;
/// Pending invitations and requests one candidate holds across rooms at once, unless the deployment sets
/// another number: an inviter can never bury a user's offers under more than this.
pub const PENDING_PER_CANDIDATE_DEFAULT: u32 = 32;
