//! The IO around the [`Sequencer`], one function per kind of output: make a batch durable, read a remembered
//! reply back, write snapshots. The engine's sequencer thread (`writer.rs`) and the simulator both call these,
//! so the simulator runs the write path of production minus the thread and the clock.

use std::sync::RwLock;

use cohost_proto::Reply;
use cohost_store::{Store, StoreError};

use crate::read_model::{self, ReadModel};
use crate::sequencer::{Answer, Batch, Failure, Sequencer, SnapshotRequest, StoredAt};
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
        Err(StoreError::FlushFailed { cause }) => Failure::Flush(cause),
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
    let batch = store
        .batches_from(at.batch_seq)
        .next()
        .ok_or_else(missing)??;
    if batch.first_seq() != Some(at.batch_seq) {
        return Err(missing());
    }
    let record = batch.commands.get(at.index as usize).ok_or_else(missing)?;
    Ok(idempotency::from_stored(&record.reply))
}

/// Writes the requested rooms' snapshots from the read model and moves the snapshot mark, then tells the
/// sequencer. A failure only costs replay time at the next open: the log still has everything.
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
    let rooms = model.encode_rooms(&request.rooms);
    drop(model);
    let written = match store.write_snapshots(request.seq, &rooms) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "snapshot not written; the log still has everything");
            false
        }
    };
    sequencer.handle_snapshot(request.seq, written);
}
