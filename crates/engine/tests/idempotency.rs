//! command_id: a retry gets the identical reply and appends nothing, before and after a restart; another
//! command under the same id is a conflict; ids are scoped by actor and room.

mod support;

use support::*;

include!("cases/idempotency.rs");
