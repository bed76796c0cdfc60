//! Opening: check the whole log, load room snapshots, replay the log after them, and rebuild what lives only
//! in memory (the sequencer's rooms, expiry timers, remembered command ids).

use std::collections::HashSet;

use cohost_proto::RoomId;
use cohost_store::Store;

use crate::Error;
use crate::idempotency::{Idempotency, Remembered, key};
use crate::read_model::{ReadModel, decode_entry};
use crate::sequencer::{Sequencer, SequencerConfig};

/// A sequencer and a read model that continue the log in a store, both as of its last record.
#[derive(Debug)]
pub struct Recovered<T> {
    pub sequencer: Sequencer<T>,
    pub read: ReadModel,
}

/// Rebuilds the engine's state from `store`: every checksum and seq checked, snapshots loaded, the log after
/// them replayed, command ids remembered within their retention as of `now_ms`. A damaged record is an error
/// naming its seq; an unreadable snapshot only means replaying from seq 1.
pub fn recover<T>(
    store: &Store,
    now_ms: u64,
    config: SequencerConfig,
) -> Result<Recovered<T>, Error> {
    let (read, snapshot_seq) = load_snapshots(store);
    let ((read, replayed), snapshot_seq) = match replay(store, read)? {
        Some(replayed) => (replayed, snapshot_seq),
        None => {
            tracing::warn!(
                mark = snapshot_seq,
                "snapshot mark is past the log's end; replaying from seq 1"
            );
            (
                replay(store, ReadModel::default())?
                    .expect("an empty model is never ahead of the log"),
                0,
            )
        }
    };
    let idempotency = remembered_commands(
        store,
        now_ms,
        config.idempotency_ttl_ms,
        config.idempotency_max,
    )?;
    let rooms = read
        .rooms
        .iter()
        .map(|(id, entry)| (id.clone(), entry.state.clone()))
        .collect();
    // Rooms the replay changed are newer than their snapshots: the next snapshot must write them, or it would
    // move the mark past their events while their stored state stays behind.
    let sequencer = Sequencer::resume(
        config,
        rooms,
        read.last_seq,
        snapshot_seq,
        replayed,
        idempotency,
    );
    Ok(Recovered { sequencer, read })
}

/// Checks the whole log and applies what comes after the model's seq, in one pass, naming the rooms it
/// changed. `None` when the model is ahead of the log (snapshots newer than the log they came from).
fn replay(
    store: &Store,
    mut read: ReadModel,
) -> Result<Option<(ReadModel, HashSet<RoomId>)>, Error> {
    read.index_loaded_rooms();
    let mut replayed = HashSet::new();
    let mut broken = None;
    let summary = store.replay(read.last_seq, |batch| {
        for envelope in batch.events {
            if broken.is_some() || envelope.seq <= read.last_seq {
                continue;
            }
            if envelope.seq != read.last_seq + 1 {
                broken = Some(envelope.seq);
                continue;
            }
            if !replayed.contains(&envelope.room_id) {
                replayed.insert(envelope.room_id.clone());
            }
            read.apply(&envelope);
        }
    })?;
    if let Some(seq) = broken {
        return Err(Error::Corrupt(format!(
            "log record holding seq {seq} does not continue seq {}",
            seq - 1
        )));
    }
    if read.last_seq > summary.last_seq {
        return Ok(None);
    }
    Ok(Some((read, replayed)))
}

/// Room snapshots as of their mark; an unreadable one means replaying from the start instead.
fn load_snapshots(store: &Store) -> (ReadModel, u64) {
    let snapshots = match store.snapshots() {
        Ok(snapshots) => snapshots,
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

/// The command ids still within their retention: read from the small per-batch index, newest first, and
/// restored oldest first.
fn remembered_commands(
    store: &Store,
    now_ms: u64,
    ttl_ms: u64,
    max: usize,
) -> Result<Idempotency, Error> {
    let mut found = Vec::new();
    'batches: for item in store.command_index_rev() {
        let (batch_seq, entries) = item?;
        for (index, entry) in entries.iter().enumerate().rev() {
            if entry.at_ms.saturating_add(ttl_ms) <= now_ms || found.len() >= max {
                break 'batches;
            }
            let remembered = Remembered {
                fingerprint: entry.fingerprint,
                at_ms: entry.at_ms,
                batch_seq,
                index: index as u32,
            };
            found.push((key(&entry.actor, &entry.command_id), remembered));
        }
    }
    let mut idempotency = Idempotency::new(ttl_ms, max);
    for (key, remembered) in found.into_iter().rev() {
        idempotency.insert(key, remembered);
    }
    idempotency.trim(now_ms);
    Ok(idempotency)
}
