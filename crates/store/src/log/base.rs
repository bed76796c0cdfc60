//! A log that starts past seq 1: in cluster mode a node taking a partition starts from the partition's snapshot
//! in JetStream (a [`Base`]) and copies only the log after it, so a takeover costs the tail, not the history.

use std::sync::atomic::Ordering;

use cohost_proto::RoomId;
use serde::{Deserialize, Serialize};

use super::{
    ARCHIVE, BASE_RECORDS, LOG_FROM_KEY, SNAPSHOT_POSITION_KEY, Store, StoreError,
    command_index_key, key_seq, log_key, prefixed,
};
use crate::backend::Op;
use crate::record::{self, CommandIndexEntry, FrameError, IdempotencyRecord};

/// What the log up to `seq` comes down to: the rooms as of it, the ended rooms archived, and the replies
/// still remembered for a retry. A store holding a base holds the log only from `seq + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Base {
    /// The last seq the base stands for: the store's log goes on from `seq + 1`.
    pub seq: u64,
    /// Every room in memory as of `seq`, as the engine encoded it (a snapshot).
    pub rooms: Vec<(RoomId, Vec<u8>)>,
    /// Ended rooms that left memory, their final state.
    pub archived: Vec<(RoomId, Vec<u8>)>,
    /// The idempotency records of batches at or before `seq` still remembered, by the batch's first seq, each
    /// batch's records whole (a remembered reply is found by its index in its batch).
    pub remembered: Vec<(u64, Vec<IdempotencyRecord>)>,
}

fn base_records_key(seq: u64) -> [u8; 9] {
    let mut key = [BASE_RECORDS; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn framed_u64(value: u64) -> Vec<u8> {
    record::frame(&value.to_le_bytes())
}

/// A framed little-endian u64 (a cursor, a mark), or why it does not read back.
pub(super) fn read_u64(what: &str, value: &[u8]) -> Result<u64, StoreError> {
    let corrupt = |reason| StoreError::CorruptValue {
        what: what.to_owned(),
        reason,
    };
    let payload = record::unframe(value).map_err(corrupt)?;
    let bytes: [u8; 8] = payload
        .try_into()
        .map_err(|_| corrupt(FrameError::Truncated(payload.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

impl Store {
    /// The first seq the log holds: 1, or the seq after its base.
    pub fn log_from(&self) -> u64 {
        self.log_from.load(Ordering::Relaxed)
    }

    pub(super) fn load_log_from(&self) -> Result<(), StoreError> {
        if let Some(value) = self.backend.get(LOG_FROM_KEY)? {
            let from = read_u64("the log's first seq", &value)?;
            self.log_from.store(from.max(1), Ordering::Relaxed);
        }
        Ok(())
    }

    /// A read of `seq` is refused before the log's first seq, naming it.
    pub(super) fn check_held(&self, seq: u64) -> Result<(), StoreError> {
        let first = self.log_from();
        if seq < first {
            return Err(StoreError::Before { from: seq, first });
        }
        Ok(())
    }

    /// A store holding a base cannot rebuild its snapshot from its log: `why` it would have to is an error.
    pub(super) fn check_no_base(&self, why: &str) -> Result<(), StoreError> {
        if self.log_from() > 1 {
            return Err(StoreError::CorruptValue {
                what: "the snapshot the log's base stands on".into(),
                reason: FrameError::Decode(format!(
                    "{why}; the log holds seqs from {} on only, so it cannot be replayed from seq 1",
                    self.log_from()
                )),
            });
        }
        Ok(())
    }

    /// Retention: removes the log's records wholly before `seq` (at most `max_records` of them, oldest first),
    /// with their command index entries, in one flushed write. The log then starts at the first record kept
    /// ([`Store::log_from`]; a read before it is [`StoreError::Before`]), and this survives reopening. The last
    /// record always stays, so the log's end is still known. Returns the log's first seq after.
    ///
    /// The caller answers for what goes: the snapshot must cover it (its mark at least the first seq kept − 1,
    /// else [`StoreError::InvalidArgument`]: the log could no longer be replayed), and no follower, remembered
    /// command or reader may still need it.
    pub fn remove_before(&self, seq: u64, max_records: usize) -> Result<u64, StoreError> {
        let from = self.log_from();
        // The first seqs of the oldest records, one more than may go: a record goes only if the next one
        // starts at or before `seq`, so the last record never goes.
        let starts = self
            .backend
            .range(&log_key(from), &log_key(u64::MAX))
            .take(max_records.saturating_add(1))
            .map(|entry| entry.map(|(key, _)| key_seq(&key)))
            .collect::<Result<Vec<u64>, _>>()?;
        let mut removed = Vec::new();
        let mut keep_from = from;
        for pair in starts.windows(2) {
            if pair[1] > seq {
                break;
            }
            removed.push(pair[0]);
            keep_from = pair[1];
        }
        if removed.is_empty() {
            return Ok(from);
        }
        if self.snapshots_seq()? + 1 < keep_from {
            return Err(StoreError::InvalidArgument(
                "the snapshot must cover every record removed",
            ));
        }
        let mut ops = Vec::with_capacity(2 * removed.len() + 1);
        for first in removed {
            ops.push(Op::Delete(log_key(first).to_vec()));
            ops.push(Op::Delete(command_index_key(first).to_vec()));
        }
        ops.push(Op::Put(LOG_FROM_KEY.to_vec(), framed_u64(keep_from)));
        self.write_and_flush(ops)?;
        self.log_from.store(keep_from, Ordering::Relaxed);
        Ok(keep_from)
    }

    /// Makes an empty store start from `base`: its snapshot, archives and remembered records written, and the
    /// log going on from `base.seq + 1`. Not flushed: the catch-up's [`Store::flush_replicated`] does that.
    pub fn install_base(&self, base: &Base) -> Result<(), StoreError> {
        if self
            .backend
            .range(&log_key(0), &log_key(u64::MAX))
            .next()
            .is_some()
            || self.log_from() != 1
        {
            return Err(StoreError::InvalidArgument(
                "a base goes only into an empty store",
            ));
        }
        let mut ops = self.snapshot_ops(base.seq, &base.rooms)?;
        ops.push(Op::Delete(SNAPSHOT_POSITION_KEY.to_vec()));
        for (room_id, bytes) in &base.archived {
            ops.push(Op::Put(
                prefixed(ARCHIVE, room_id.as_str().as_bytes()),
                record::frame(bytes),
            ));
        }
        for (batch_seq, records) in &base.remembered {
            if *batch_seq > base.seq || records.is_empty() {
                return Err(StoreError::InvalidArgument(
                    "remembered records belong to batches at or before the base",
                ));
            }
            let index: Vec<CommandIndexEntry> =
                records.iter().map(CommandIndexEntry::from).collect();
            ops.push(Op::Put(
                command_index_key(*batch_seq).to_vec(),
                record::encode_command_index(&index),
            ));
            ops.push(Op::Put(
                base_records_key(*batch_seq).to_vec(),
                record::encode_records(records),
            ));
        }
        ops.push(Op::Put(LOG_FROM_KEY.to_vec(), framed_u64(base.seq + 1)));
        self.write(ops)?;
        self.log_from.store(base.seq + 1, Ordering::Relaxed);
        Ok(())
    }

    /// The idempotency records of the batch whose first seq is `batch_seq`: from its log record, or from the
    /// base when the batch came before it. `None` when no such batch is held.
    pub fn idempotency_records(
        &self,
        batch_seq: u64,
    ) -> Result<Option<Vec<IdempotencyRecord>>, StoreError> {
        if batch_seq >= self.log_from() {
            let Some(value) = self.backend.get(&log_key(batch_seq))? else {
                return Ok(None);
            };
            return Ok(Some(self.decode_record(batch_seq, &value)?.commands));
        }
        let Some(value) = self.backend.get(&base_records_key(batch_seq))? else {
            return Ok(None);
        };
        let corrupt = |reason| StoreError::CorruptValue {
            what: format!("remembered records of batch {batch_seq}"),
            reason,
        };
        let payload = record::unframe(&value).map_err(corrupt)?;
        record::decode_records(payload).map(Some).map_err(corrupt)
    }

    /// The seq of the snapshot at the mark, reading the mark only; 0 when none was taken.
    pub fn snapshots_seq(&self) -> Result<u64, StoreError> {
        self.backend
            .get(super::SNAPSHOT_SEQ_KEY)?
            .map_or(Ok(0), |value| read_u64("snapshot mark", &value))
    }

    /// Where the replicated log stood when the snapshot at the mark was taken: its position then.
    pub fn snapshot_position(&self) -> Result<Option<u64>, StoreError> {
        self.backend
            .get(SNAPSHOT_POSITION_KEY)?
            .map(|value| read_u64("snapshot position", &value))
            .transpose()
    }
}
