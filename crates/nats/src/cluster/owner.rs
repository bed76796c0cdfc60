//! Owning a partition: taking it over (catch up on its log, append the ownership marker, only then serve) and
//! writing it (every batch appended to the partition log before the local store, fenced by the expected
//! sequence). A partition's engine is a whole `cohost_engine::Engine` over a local store that is a cache of
//! the partition log, so its timers, idempotency memory and archives move with it: the new owner rebuilds them
//! from the log.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cohost_engine::{Config, Engine};
use cohost_store::{Base, ReplicateError, Replicator, Store};

use super::cursor::Cursors;
use super::lease::Lease;
use super::log::{AppendError, Entry, EntryKind, LogError, Marker, PartitionLog, msg_id};
use super::snapshot::PartitionSnapshot;

/// Appends a partition's batches to its log, each expecting the last message this owner wrote (its marker
/// first), so the stream refuses them once another node has claimed the partition.
#[derive(Debug)]
pub struct LogReplicator {
    log: PartitionLog,
    partition: u32,
    epoch: u64,
    /// The stream seq of this owner's last message on the subject.
    expected: Mutex<u64>,
    runtime: tokio::runtime::Handle,
}

impl Replicator for LogReplicator {
    fn replicate(&self, first_seq: u64, record: &[u8]) -> Result<(), ReplicateError> {
        let mut expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        let id = msg_id(self.partition, self.epoch, first_seq);
        let record = Bytes::copy_from_slice(record);
        // The sequencer's own thread, outside the runtime: blocking here is the group commit's wait.
        let appended =
            self.runtime.block_on(
                self.log
                    .append_batch(self.partition, *expected, &id, record),
            );
        match appended {
            Ok(seq) => {
                *expected = seq;
                Ok(())
            }
            Err(refused @ AppendError::Refused { .. }) => {
                Err(ReplicateError::Refused(refused.to_string()))
            }
            // Deposed, or not known to have landed: either way this owner may append nothing more; a new
            // takeover reads what the log holds.
            Err(error) => Err(ReplicateError::Stopped(error.to_string())),
        }
    }

    fn position(&self) -> Option<u64> {
        Some(*self.expected.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Why a takeover failed. Nothing is served; the node may try again with a lease it still holds.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    /// The partition's log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The ownership marker was not appended: another writer appended after the tail this node read
    /// ([`AppendError::Fenced`]), or the append failed.
    #[error("partition {partition}: the claim was refused: {source}")]
    Claim {
        /// The partition.
        partition: u32,
        /// Why the marker's append failed.
        #[source]
        source: AppendError,
    },
    /// The local store could not be rebuilt or the engine opened on it (disk, or a damaged record).
    #[error("partition {partition}: the local copy of the log: {reason}")]
    Local {
        /// The partition.
        partition: u32,
        /// What failed, for people.
        reason: String,
    },
}

/// Takes `lease`'s partition over on this node: rebuilds the local store in `config.data_dir` from the
/// partition's `snapshot` (when it continues the log) and the log after it, or else from the whole log (with
/// the followers' `cursors` as the last owner saved them), claims the partition with a marker right after the
/// tail it read, and opens the engine, which serves from then on and appends each batch after the marker. A
/// writer that appended after the tail was read makes the claim fail (`Claim`, `Fenced`): try again.
///
/// It deletes and rewrites `config.data_dir` (the local store is a cache of the log), on the blocking pool,
/// and holds the log it replays in memory. The engine's sequencer then blocks its own thread on each
/// append, through the current tokio runtime, which must outlive the engine.
///
/// # Errors
///
/// [`TakeOverError`]: the log unreadable, the claim refused, or the local store failing.
pub async fn take_over(
    log: &PartitionLog,
    node: &str,
    lease: &Lease,
    mut config: Config,
    cursors: Cursors,
    snapshot: Option<PartitionSnapshot>,
) -> Result<Engine, TakeOverError> {
    let partition = lease.partition;
    let local = |reason: String| TakeOverError::Local { partition, reason };
    let (base, entries) = catch_up(log, partition, snapshot).await?;
    let from_base = base.is_some();
    let tail = entries.last().map_or(0, |entry| entry.seq);
    let (dir, cache) = (config.data_dir.clone(), config.store_cache_bytes);
    let kept = cursors.clone();
    tokio::task::spawn_blocking(move || rebuild(&dir, cache, base.as_ref(), &entries, kept))
        .await
        .map_err(|e| local(e.to_string()))?
        .map_err(local)?;
    let marker = Marker {
        node: node.to_owned(),
        epoch: lease.epoch,
    };
    let claimed = log
        .append_marker(partition, tail, &marker)
        .await
        .map_err(|source| TakeOverError::Claim { partition, source })?;
    config.replicator = Some(Arc::new(LogReplicator {
        log: log.clone(),
        partition,
        epoch: lease.epoch,
        expected: Mutex::new(claimed),
        runtime: tokio::runtime::Handle::current(),
    }));
    let open = |config: Config| async move {
        tokio::task::spawn_blocking(move || Engine::open(config))
            .await
            .map_err(|e| local(e.to_string()))?
            .map_err(|e| local(e.to_string()))
    };
    match open(config.clone()).await {
        // A snapshot this build cannot open (say, written by a newer one) costs a whole replay, never the
        // partition: the claim stands, and the log has everything.
        Err(error) if from_base => {
            tracing::warn!(%error, partition, "the engine did not open from the partition's snapshot; replaying the whole log");
            let entries = log.read_after(partition, 0).await?;
            let dir = config.data_dir.clone();
            tokio::task::spawn_blocking(move || rebuild(&dir, cache, None, &entries, cursors))
                .await
                .map_err(|e| local(e.to_string()))?
                .map_err(local)?;
            open(config).await
        }
        opened => opened,
    }
}

/// The log to copy: after the snapshot when it continues the log here (the message at its position is on the
/// partition's subject and, if a batch, ends at the snapshot's seq; the next batch starts right after it), else
/// the whole log. Returns the base to start from and the entries to copy after it; the first entry then is the
/// one at the snapshot's position, which the base covers (kept, so the tail is known).
async fn catch_up(
    log: &PartitionLog,
    partition: u32,
    snapshot: Option<PartitionSnapshot>,
) -> Result<(Option<Base>, Vec<Entry>), LogError> {
    if let Some(snapshot) = snapshot {
        let position = snapshot.position;
        let entries = log
            .read_after(partition, position.saturating_sub(1))
            .await?;
        if continues(&snapshot, &entries) {
            tracing::info!(
                partition,
                seq = snapshot.base.seq,
                position,
                "taking over from the partition's snapshot"
            );
            return Ok((Some(snapshot.base), entries));
        }
        tracing::warn!(
            partition,
            seq = snapshot.base.seq,
            position,
            "the partition's snapshot does not continue its log; replaying the whole log"
        );
    }
    Ok((None, log.read_after(partition, 0).await?))
}

fn continues(snapshot: &PartitionSnapshot, entries: &[Entry]) -> bool {
    let seq = snapshot.base.seq;
    let Some(at) = entries.first().filter(|e| e.seq == snapshot.position) else {
        return false;
    };
    // The message is the snapshot's writer's own (its batch, or its marker), not one of another log that
    // happens to have the same shape: a stream recreated under a bucket that was kept.
    let ends_at_base = match &at.kind {
        EntryKind::Batch(record) => cohost_store::batch_seqs(record).is_ok_and(|(first, last)| {
            last == seq
                && at.msg_id.as_deref() == Some(&msg_id(snapshot.partition, snapshot.epoch, first))
        }),
        EntryKind::Marker(marker) => marker.node == snapshot.node && marker.epoch == snapshot.epoch,
    };
    let next = entries[1..].iter().find_map(|e| match &e.kind {
        EntryKind::Batch(record) => Some(cohost_store::batch_seqs(record).map(|(first, _)| first)),
        EntryKind::Marker(_) => None,
    });
    ends_at_base && next.is_none_or(|first| first == Ok(seq + 1))
}

/// The local store in `dir`, made afresh: the base (if any), every batch entry after it, one flush, then the
/// followers' cursors (none past the log).
fn rebuild(
    dir: &std::path::Path,
    cache: u64,
    base: Option<&Base>,
    entries: &[Entry],
    cursors: Cursors,
) -> Result<(), String> {
    // The local store is a cache of the log: whatever an earlier ownership left there is replaced.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let store = Store::open_with_cache(dir, cache).map_err(|e| e.to_string())?;
    let (mut last, skip) = match base {
        Some(base) => {
            store
                .install_base(base)
                .map_err(|e| format!("the snapshot: {e}"))?;
            (base.seq, 1)
        }
        None => (0, 0),
    };
    for entry in &entries[skip.min(entries.len())..] {
        if let EntryKind::Batch(record) = &entry.kind {
            last = store
                .append_replicated(record)
                .map_err(|e| format!("stream seq {}: {e}", entry.seq))?;
        }
    }
    store.flush_replicated().map_err(|e| e.to_string())?;
    for (sink, seq) in cursors {
        // A cursor never passes the log; one saved past it is from a log this is not.
        store
            .set_cursor(&sink, seq.min(last))
            .map_err(|e| format!("cursor {sink:?}: {e}"))?;
    }
    Ok(())
}
