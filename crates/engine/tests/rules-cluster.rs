//! The cases of `rules.rs` again, with the engine writing as cluster mode does: every batch to a partition log
//! before the local store, and every restart a takeover that rebuilds the store from that log. Both modes must
//! give the same answers to the same commands.

mod support;

use support::*;

/// Shadows the single-node `open` of `support`.
fn open() -> TestEngine {
    open_replicated()
}

/// Shadows the single-node `live` of `support`.
async fn live(rooms: &[(&str, &str)]) -> TestEngine {
    let t = open();
    for (room, host) in rooms {
        t.live_room(room, host).await;
    }
    t
}

include!("cases/rules.rs");
