//! The IO around the [`Sequencer`], one function per kind of output: make a batch durable, read a remembered
//! reply back, write snapshots, archive ended rooms; and one input, bringing an archived room back for a command. The engine's sequencer thread (`writer.rs`) and the simulator both call these,
//! so the simulator runs the write path of production minus the thread and the clock.

use std::sync::RwLock;

use cohost_core::RoomState;
use cohost_proto::{Reply, RoomId};
use cohost_store::{Store, StoreError};

use crate::read_model::{self, ReadModel, RoomEntry, decode_entry};
use crate::sequencer::{Answer, Batch, Failure, Sequencer, SnapshotRequest, StoredAt, Submission};
use crate::{Error, idempotency};

/// Writes and flushes `batch` (one write, one flush), then tells the sequencer how it went. When it became
/// durable, readers see it (`read`) before the sequencer releases a single answer. When its write failed, the
/// write is taken back from the store; when its flush failed, or taking it back did, the sequencer stops.
pub fn commit<T>(
    sequencer: &mut Sequencer<T>,
    batch: &Batch,
    store: &Store,
    read: &RwLock<ReadModel>,
) -> Result<(), Failure> {
    assert!(
        !batch.envelopes.is_empty(),
        "a batch from poll_batch holds at least one event"
    );
    let failure = match store.append(&batch.envelopes, &batch.records) {
        Ok(()) => {
            let mut model = read_model::write(read);
            for envelope in &batch.envelopes {
                model.apply(envelope);
            }
            drop(model);
            sequencer.handle_durable(batch.id);
            return Ok(());
        }
        Err(StoreError::FlushFailed { cause } | StoreError::ReplicationStopped { cause }) => {
            Failure::Flush(cause)
        }
        Err(write) => match store.discard(batch.first_seq()) {
            Ok(()) => Failure::Write(write.to_string()),
            Err(discard) => Failure::Flush(format!(
                "{write}; then taking the failed write back failed: {discard}"
            )),
        },
    };
    tracing::error!(
        ?failure,
        first_seq = batch.first_seq(),
        "batch not durable; its commands get unavailable"
    );
    let model = read_model::read(read);
    sequencer.handle_failed(batch.id, failure.clone(), |room_id| {
        model.room_state(room_id).cloned()
    });
    Err(failure)
}

/// The reply an answer stands for: itself, or a remembered command's first reply read from its batch record.
pub fn resolve(answer: Answer, store: &Store) -> Result<Reply, Error> {
    match answer {
        Answer::Ready(outcome) => outcome,
        Answer::Stored(at) => stored_reply(at, store),
    }
}

fn stored_reply(at: StoredAt, store: &Store) -> Result<Reply, Error> {
    let missing = || Error::Corrupt("a remembered command's record is missing from the log".into());
    let records = store
        .idempotency_records(at.batch_seq)?
        .ok_or_else(missing)?;
    let record = records.get(at.index as usize).ok_or_else(missing)?;
    Ok(idempotency::from_stored(&record.reply))
}

/// Writes a snapshot of every room in the read model and moves the snapshot mark, then tells the sequencer. A
/// failure only costs replay time at the next open: the log still has everything.
pub fn snapshot<T>(
    sequencer: &mut Sequencer<T>,
    request: SnapshotRequest,
    store: &Store,
    read: &RwLock<ReadModel>,
) {
    let model = read_model::read(read);
    assert_eq!(
        model.last_seq, request.seq,
        "the read model is at the durable seq between batches"
    );
    let rooms = model.encode_all();
    let ended = model.ended.encode(request.seq);
    drop(model);
    let written = match store.write_snapshot_with(request.seq, &rooms, Some(&ended)) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "snapshot not written; the log still has everything");
            false
        }
    };
    sequencer.handle_snapshot(request.seq, written);
    if let (true, Some((now_ms, retain_ms))) = (written, sequencer.retention()) {
        let mut model = read_model::write(read);
        match crate::retention::run(store, &mut model, request.seq, now_ms, retain_ms) {
            Ok(from) => tracing::debug!(from, "the log starts here after retention"),
            Err(error) => {
                tracing::warn!(%error, "retention removed nothing; the next snapshot tries again")
            }
        }
    }
}

/// Hands a command to the sequencer, first bringing its room back from the archive when the sequencer does not
/// hold it (an ended room that left memory), so the rules see it: `create_room` on its id is `already_exists`,
/// an accept in it `failed_precondition`. An archive that cannot be read answers the command with the error.
/// Returns the submission's number, as [`Sequencer::handle_command`] does.
pub fn admit<T>(
    sequencer: &mut Sequencer<T>,
    store: &Store,
    now_ms: u64,
    submission: Submission<T>,
) -> u64 {
    let room_id = submission.command.room_id();
    if !sequencer.holds(room_id) {
        match archived_entry(store, room_id) {
            Ok(Some(entry)) => sequencer.handle_loaded(room_id.clone(), entry.state),
            Ok(None) => {}
            Err(error) => return sequencer.refuse(submission, error),
        }
    }
    sequencer.handle_command(now_ms, submission)
}

/// Archives the ended rooms due to leave memory and takes them out of the read model, then tells the sequencer.
/// The archive is not flushed on its own: the next batch's flush makes it durable, and until then a crash
/// loses it only together with everything written after it (the snapshot that drops the rooms' snapshots), so
/// opening finds each room in its snapshot and the log instead.
pub fn evict<T>(sequencer: &mut Sequencer<T>, store: &Store, read: &RwLock<ReadModel>) {
    let Some(rooms) = sequencer.poll_evict() else {
        return;
    };
    // A room loaded back from its archive for a command is not in the read model: its archive stands.
    let entries = read_model::read(read).encode_rooms(&rooms);
    let written = match store.archive_rooms(&entries, false) {
        Ok(()) => {
            read_model::write(read).evict(&rooms);
            true
        }
        Err(error) => {
            tracing::warn!(%error, rooms = rooms.len(), "ended rooms not archived; trying again later");
            false
        }
    };
    sequencer.handle_evicted(rooms, written);
}

/// An archived room's entry, if the room was archived.
pub(crate) fn archived_entry(store: &Store, room_id: &RoomId) -> Result<Option<RoomEntry>, Error> {
    let Some(bytes) = store.archived(room_id)? else {
        return Ok(None);
    };
    decode_entry(&bytes)
        .map(|(_, entry)| Some(entry))
        .map_err(|reason| Error::Corrupt(format!("the archive of room {room_id}: {reason}")))
}

/// Every archived room: its id, and its final state and the seqs of its events, or why its archive does not
/// read back (torn by a crash before it was durable). For checks and tooling.
pub fn archived_rooms(store: &Store) -> Result<Vec<ArchivedRoom>, Error> {
    let mut rooms = Vec::new();
    for item in store.archived_rooms() {
        let (room_id, bytes) = item?;
        let entry = bytes
            .map_err(|error| error.to_string())
            .and_then(|bytes| decode_entry(&bytes).map(|(_, entry)| entry));
        rooms.push((room_id, entry.map(|entry| (entry.state, entry.seqs))));
    }
    Ok(rooms)
}

/// One archived room, as [`archived_rooms`] finds it: its final state and the seqs of its events, or why its
/// archive does not read back.
pub type ArchivedRoom = (RoomId, Result<(RoomState, Vec<u64>), String>);
