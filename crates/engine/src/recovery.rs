//! Opening: check the whole log, load room snapshots, replay the log after them, and rebuild what lives only
//! in memory (the sequencer's rooms, expiry timers, remembered command ids).

use cohost_store::{Store, StoreError};

use crate::Error;
use crate::idempotency::Idempotency;
use crate::read_model::ReadModel;
use crate::timers::Timers;
use crate::writer::decode_entry;

pub(crate) struct Recovered {
    pub read: ReadModel,
    pub snapshot_seq: u64,
    pub timers: Timers,
    pub idempotency: Idempotency,
}

/// Why the engine would not open.
fn corrupt(error: StoreError) -> Error {
    Error::internal(format!("cannot open the store: {error}"))
}

pub(crate) fn recover(
    store: &Store,
    now_ms: u64,
    ttl_ms: u64,
    idempotency_max: usize,
) -> Result<Recovered, Error> {
    let summary = store.verify_log().map_err(corrupt)?;
    let (mut read, snapshot_seq) = load_snapshots(store, summary.last_seq);
    for batch in store.batches_from(read.last_seq + 1) {
        for envelope in batch.map_err(corrupt)?.events {
            if envelope.seq > read.last_seq {
                read.apply(&envelope);
            }
        }
    }
    if read.last_seq != summary.last_seq {
        return Err(Error::internal(format!(
            "replay ended at seq {} but the log ends at seq {}",
            read.last_seq, summary.last_seq
        )));
    }
    read.index_all_candidates();
    let mut timers = Timers::default();
    timers.rebuild(read.rooms.values().flat_map(|entry| entry.state.pending()));
    let idempotency = remembered_commands(store, now_ms, ttl_ms, idempotency_max)?;
    Ok(Recovered {
        read,
        snapshot_seq,
        timers,
        idempotency,
    })
}

/// Room snapshots as of their mark; an unreadable or impossible one means replaying from the start instead.
fn load_snapshots(store: &Store, last_seq: u64) -> (ReadModel, u64) {
    let snapshots = match store.snapshots() {
        Ok(snapshots) if snapshots.seq <= last_seq => snapshots,
        Ok(snapshots) => {
            tracing::warn!(
                mark = snapshots.seq,
                last_seq,
                "snapshot mark is past the log; replaying from seq 1"
            );
            return (ReadModel::default(), 0);
        }
        Err(error) => {
            tracing::warn!(%error, "snapshots unreadable; replaying from seq 1");
            return (ReadModel::default(), 0);
        }
    };
    let mut read = ReadModel::default();
    for (room_id, bytes) in snapshots.rooms {
        match decode_entry(&bytes) {
            Ok(entry) => {
                read.rooms.insert(room_id, entry);
            }
            Err(error) => {
                tracing::warn!(%error, %room_id, "room snapshot undecodable; replaying from seq 1");
                return (ReadModel::default(), 0);
            }
        }
    }
    read.last_seq = snapshots.seq;
    (read, snapshots.seq)
}

/// The command ids still within their retention, newest first from the log's end, restored oldest first.
fn remembered_commands(
    store: &Store,
    now_ms: u64,
    ttl_ms: u64,
    max: usize,
) -> Result<Idempotency, Error> {
    let mut found = Vec::new();
    'batches: for batch in store.batches_rev() {
        let batch = batch.map_err(corrupt)?;
        let batch_seq = batch
            .first_seq()
            .expect("stored batches hold at least one event");
        for (index, record) in batch.commands.iter().enumerate().rev() {
            if record.at_ms.saturating_add(ttl_ms) <= now_ms || found.len() >= max {
                break 'batches;
            }
            found.push((record.clone(), batch_seq, index as u32));
        }
    }
    let mut idempotency = Idempotency::new(ttl_ms, max);
    for (record, batch_seq, index) in found.iter().rev() {
        idempotency.restore(record, *batch_seq, *index);
    }
    Ok(idempotency)
}
