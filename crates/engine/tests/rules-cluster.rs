//! The cases of `rules.rs` again, with the engine writing as cluster mode does: every batch to a partition log
//! before the local store, and every restart a takeover that rebuilds the store from that log. Both modes must
//! give the same answers to the same commands.

mod support;

use support::cluster::{live, open};
use support::*;

include!("cases/rules.rs");
