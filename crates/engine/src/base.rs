//! A partition's base, for cluster mode: the store's latest snapshot with what a node taking the partition
//! needs besides it (archived rooms, replies still remembered), so the taker copies only the log after it.

use cohost_store::{Base, Store};

use crate::Error;

/// A [`Base`] and where the replicated log stood when its snapshot was taken (a stream sequence): the log
/// after that position continues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The snapshot, the archived rooms and the replies still remembered, as of `base.seq`.
    pub base: Base,
    /// The replicated log's stream sequence at the snapshot: a taker reads the log after it.
    pub position: u64,
}

/// What decides which remembered replies a base keeps.
#[derive(Debug, Clone, Copy)]
pub struct Remembering {
    /// The time to judge retention by, in ms since the Unix epoch.
    pub now_ms: u64,
    /// How long a command id is remembered ([`crate::Config::idempotency_ttl_ms`]).
    pub ttl_ms: u64,
    /// The most idempotency records kept.
    pub max: usize,
}

/// The base at the store's snapshot, `None` when there is none with a replicated position yet, or when a
/// newer snapshot replaced it while it was read (the next call finds that one). For a driver of its own (the
/// simulator); an engine's is [`crate::Engine::export_base`].
pub fn export(store: &Store, remembering: Remembering) -> Result<Option<Exported>, Error> {
    let before = (store.snapshots_seq()?, store.snapshot_position()?);
    let (seq, Some(position)) = before else {
        return Ok(None);
    };
    if seq == 0 {
        return Ok(None);
    }
    let snapshot = match store.snapshots() {
        Ok(snapshot) => snapshot,
        // Replaced while its chunks were read: the next call reads the new one.
        Err(_) if store.snapshots_seq()? != seq => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut archived = Vec::new();
    for room in store.archived_rooms() {
        let (room_id, bytes) = room?;
        archived.push((room_id, bytes?));
    }
    let remembered = remembered_through(store, seq, remembering)?;
    let after = (store.snapshots_seq()?, store.snapshot_position()?);
    if snapshot.seq != seq || after != before {
        return Ok(None);
    }
    let base = Base {
        seq,
        rooms: snapshot.rooms,
        archived,
        remembered,
    };
    Ok(Some(Exported { base, position }))
}

/// The idempotency records of batches at or before `seq` with a command still remembered, newest batches
/// first until the retention or the count runs out; returned oldest first.
fn remembered_through(
    store: &Store,
    seq: u64,
    remembering: Remembering,
) -> Result<Vec<(u64, Vec<cohost_store::IdempotencyRecord>)>, Error> {
    let mut kept = Vec::new();
    let mut count = 0;
    for item in store.command_index_rev() {
        let (batch_seq, entries) = item?;
        if batch_seq > seq {
            continue;
        }
        let live = entries
            .iter()
            .any(|e| e.at_ms.saturating_add(remembering.ttl_ms) > remembering.now_ms);
        if !live || count >= remembering.max {
            break;
        }
        let records = store.idempotency_records(batch_seq)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "the idempotency records of batch {batch_seq} are missing"
            ))
        })?;
        count += records.len();
        kept.push((batch_seq, records));
    }
    kept.reverse();
    Ok(kept)
}
