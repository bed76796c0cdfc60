//! Log retention: with `retain_ended_ms` set, the log's prefix that only rooms ended longer ago than that hold
//! is removed after each snapshot. Records mix rooms, so only a prefix can go: the cut comes before the first
//! event of every room still kept (open, or ended within the retention), before what any follower has not
//! handled, and after nothing the snapshot does not cover.

use std::collections::BTreeMap;

use cohost_proto::codec::{from_postcard, to_postcard};
use cohost_store::Store;

use crate::read_model::ReadModel;

const HOUR_MS: u64 = 3_600_000;
/// Records removed in one write: a long backlog goes over several snapshots' passes.
pub(crate) const RECORDS_PER_PASS: usize = 16_384;

/// The smallest first seq of the rooms ended in each hour: all retention needs of ended rooms, a few entries
/// per hour whatever the churn. Kept beside the snapshot, as of its mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EndedRooms {
    by_hour: BTreeMap<u64, u64>,
}

impl EndedRooms {
    /// A room whose first event is `first_seq` ended at `ended_ms`.
    pub fn note(&mut self, ended_ms: u64, first_seq: u64) {
        let least = self.by_hour.entry(ended_ms / HOUR_MS).or_insert(first_seq);
        *least = (*least).min(first_seq);
    }

    /// The smallest first seq of a room ended at `since_ms` or later (by the hour: a little more is kept).
    fn kept_from(&self, since_ms: u64) -> Option<u64> {
        (self.by_hour.range(since_ms / HOUR_MS..))
            .map(|(_, &seq)| seq)
            .min()
    }

    /// Forgets the hours wholly before `since_ms`.
    fn forget_before(&mut self, since_ms: u64) {
        self.by_hour = self.by_hour.split_off(&(since_ms / HOUR_MS));
    }

    /// As of the snapshot at `seq`: an extra left by another snapshot is never taken for this one's.
    pub fn encode(&self, seq: u64) -> Vec<u8> {
        let hours: Vec<(u64, u64)> = self.by_hour.iter().map(|(&h, &s)| (h, s)).collect();
        to_postcard(&(seq, hours))
    }

    /// The rooms ended by hour as of the snapshot at `seq`; `None` when the bytes are of another snapshot.
    pub fn decode(bytes: &[u8], seq: u64) -> Result<Option<Self>, String> {
        let (at, hours): (u64, Vec<(u64, u64)>) =
            from_postcard(bytes).map_err(|e| e.to_string())?;
        Ok((at == seq).then(|| Self {
            by_hour: hours.into_iter().collect(),
        }))
    }
}

/// Where the log may start, as of the snapshot at `snapshot_seq`, at `now_ms`, keeping `retain_ms` of ended
/// rooms: the least of the snapshot's mark + 1, every open room's first seq, every room ended within the
/// retention's first seq, and every follower's cursor + 1.
pub(crate) fn cut(
    read: &ReadModel,
    cursors: &[(String, u64)],
    snapshot_seq: u64,
    now_ms: u64,
    retain_ms: u64,
) -> u64 {
    let open = (read.rooms.values())
        .filter(|entry| !entry.state.is_ended())
        .filter_map(|entry| entry.seqs.first().copied());
    let followers = cursors.iter().map(|(_, seq)| seq + 1);
    let ended = read.ended.kept_from(now_ms.saturating_sub(retain_ms));
    (open.chain(followers).chain(ended)).fold(snapshot_seq + 1, u64::min)
}

/// One retention pass after the snapshot at `snapshot_seq` was written; returns the log's first seq after.
/// A failure leaves the log as it was (the next snapshot tries again).
pub(crate) fn run(
    store: &Store,
    read: &mut ReadModel,
    snapshot_seq: u64,
    now_ms: u64,
    retain_ms: u64,
) -> Result<u64, cohost_store::StoreError> {
    let cursors = store.cursors()?;
    let cut = cut(read, &cursors, snapshot_seq, now_ms, retain_ms);
    read.ended.forget_before(now_ms.saturating_sub(retain_ms));
    store.remove_before(cut, RECORDS_PER_PASS)
}
