//! Opening: check the whole log, load the snapshot, replay the log after it, and rebuild what lives only in
//! memory (the sequencer's rooms, expiry timers, remembered command ids).

use std::collections::{HashMap, HashSet};

use cohost_proto::{Envelope, Event, RoomId};
use cohost_store::{Store, StoreError};

use crate::Error;
use crate::driver::archived_entry;
use crate::idempotency::{Idempotency, Remembered, key};
use crate::read_model::{ReadModel, decode_entry};
use crate::sequencer::{EVICT_MAX, Resumed, Sequencer, SequencerConfig};

/// A sequencer and a read model that continue the log in a store, both as of its last record.
#[derive(Debug)]
pub struct Recovered<T> {
    /// The write path's state: the rooms, timers and remembered command ids, numbering on from the log's end.
    pub sequencer: Sequencer<T>,
    /// What readers see, as of the same seq.
    pub read: ReadModel,
}

/// Rebuilds the engine's state from `store`: every checksum and seq checked, the snapshot loaded, the log after
/// it replayed, command ids remembered within their retention as of `now_ms`. A damaged record is an error
/// naming its seq; an unreadable snapshot only means replaying from seq 1. Rooms archived already are not
/// replayed (their archive holds their final state), and rooms the replay finds ended longer than the
/// retention ago are archived as it goes, so opening a long log holds no more rooms than serving it does.
pub fn recover<T>(
    store: &Store,
    now_ms: u64,
    config: SequencerConfig,
) -> Result<Recovered<T>, Error> {
    let (read, snapshot_seq) = load_snapshot(store, now_ms)?;
    let archive_before_ms = now_ms.saturating_sub(config.ended_retention_ms);
    let (replayed, snapshot_seq) = match replay(store, read, archive_before_ms)? {
        Some(replayed) => (replayed, snapshot_seq),
        None if store.log_from() > 1 => {
            return Err(Error::Corrupt(format!(
                "the snapshot at seq {snapshot_seq} is past the log's end, and the log holds seqs from {} on only",
                store.log_from()
            )));
        }
        None => {
            tracing::warn!(
                mark = snapshot_seq,
                "the snapshot is past the log's end; replaying from seq 1"
            );
            let replayed = replay(store, ReadModel::default(), archive_before_ms)?
                .expect("an empty model is never ahead of the log");
            (replayed, 0)
        }
    };
    let idempotency = remembered_commands(
        store,
        now_ms,
        config.idempotency_ttl_ms,
        config.idempotency_max,
    )?;
    let read = replayed.read;
    let created_ms = match config.idle_room_ms {
        0 => HashMap::new(),
        _ => idle_rooms_created(store, &read),
    };
    let rooms = read
        .rooms
        .iter()
        .map(|(id, entry)| (id.clone(), entry.state.clone()))
        .collect();
    let found = Resumed {
        rooms,
        last_seq: read.last_seq,
        snapshot_seq,
        changed: replayed.changed,
        idempotency,
        now_ms,
        created_ms,
    };
    let sequencer = Sequencer::resume(config, found);
    Ok(Recovered { sequencer, read })
}

/// When each idle room was created: the time of its first event, one record read per room. A room whose first
/// event the log no longer holds (a cluster partition's local store starts at its snapshot) is left out, and
/// its idle time counts from the opening.
fn idle_rooms_created(store: &Store, read: &ReadModel) -> HashMap<RoomId, u64> {
    let idle = read.rooms.iter().filter(|(_, entry)| {
        (entry.state.room()).is_some_and(|room| room.status == cohost_proto::RoomStatus::Idle)
    });
    let mut created = HashMap::new();
    for (room_id, entry) in idle {
        let Some(&first) = entry.seqs.first() else {
            continue;
        };
        match store.read_seqs(&[first]) {
            Ok(found) => {
                if let Some(envelope) = found.first() {
                    created.insert(room_id.clone(), envelope.at_ms);
                }
            }
            Err(error) => {
                tracing::debug!(%room_id, %error, "an idle room's creation is not in the log; counting from now");
            }
        }
    }
    created
}

/// What a replay made of the log after the snapshot.
struct Replayed {
    read: ReadModel,
    /// Whether it changed anything: applied an event, or archived a room.
    changed: bool,
}

/// Where a replay is: the model, and the rooms it skips and archives.
struct Replay<'a> {
    store: &'a Store,
    read: ReadModel,
    /// Archived rooms met in the log: their events are in their archive.
    skipped: HashSet<RoomId>,
    /// Rooms this replay archived: their archives hold their events only up to where the replay was.
    archived_here: HashSet<RoomId>,
    changed: bool,
    to_archive: Vec<RoomId>,
    /// A room that ended before this is archived as soon as the replay ends it.
    archive_before_ms: u64,
    failure: Option<Error>,
}

impl Replay<'_> {
    fn envelope(&mut self, envelope: Envelope) -> Result<(), Error> {
        let room_id = &envelope.room_id;
        // A log written before ended rooms were final may hold events after room_stopped (presence): the room
        // comes back, takes the event, and is archived again.
        if self.archived_here.remove(room_id) {
            let entry = archived_entry(self.store, room_id)?
                .ok_or_else(|| Error::Corrupt(format!("the archive of room {room_id} is gone")))?;
            self.read.load(room_id.clone(), entry);
            self.read.apply(&envelope);
            self.to_archive.push(room_id.clone());
            self.changed = true;
            return Ok(());
        }
        if !self.read.rooms.contains_key(room_id)
            && !self.skipped.contains(room_id)
            && self.archived(room_id)?
        {
            self.skipped.insert(room_id.clone());
        }
        if self.skipped.contains(room_id) {
            // Its ending still counts for retention: where it starts is in its archive.
            if matches!(envelope.event, Event::RoomStopped { .. }) {
                // An archive that does not read keeps the whole log for a retention, never fails opening.
                let first = (archived_entry(self.store, room_id).ok().flatten())
                    .and_then(|entry| entry.seqs.first().copied())
                    .unwrap_or(1);
                self.read.ended.note(envelope.at_ms, first);
            }
            self.read.skip(&envelope);
            return Ok(());
        }
        self.changed = true;
        self.read.apply(&envelope);
        if matches!(envelope.event, Event::RoomStopped { .. })
            && envelope.at_ms < self.archive_before_ms
        {
            self.to_archive.push(room_id.clone());
            if self.to_archive.len() >= EVICT_MAX {
                self.archive();
            }
        }
        Ok(())
    }

    /// Whether a room the replay meets, and does not hold, was archived: then its archive holds all its events.
    /// An archive that does not read back was torn by a crash before anything written after it survived, so no
    /// later snapshot did either: the room is not in the snapshot, so it was created after it, and the log
    /// after the snapshot holds every event of it. It is replayed instead.
    fn archived(&self, room_id: &RoomId) -> Result<bool, Error> {
        match self.store.archived(room_id) {
            Ok(found) => Ok(found.is_some()),
            Err(error @ StoreError::CorruptValue { .. }) => {
                tracing::warn!(%error, "a torn archive; the room is replayed from the log");
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Archives what the replay found ended long ago (made durable by the next flush, like the engine's own
    /// archiving). A write that fails leaves the rooms in memory, and the engine archives them in its turn.
    fn archive(&mut self) {
        let rooms = std::mem::take(&mut self.to_archive);
        if rooms.is_empty() {
            return;
        }
        if let Err(error) = self
            .store
            .archive_rooms(&self.read.encode_rooms(&rooms), false)
        {
            tracing::warn!(%error, rooms = rooms.len(), "ended rooms not archived while opening");
            self.archive_before_ms = 0;
            return;
        }
        self.read.evict(&rooms);
        self.archived_here.extend(rooms);
        self.changed = true;
    }
}

/// Checks the whole log and applies what comes after the model's seq, in one pass. `None` when the model is
/// ahead of the log (a snapshot newer than the log it came from).
fn replay(
    store: &Store,
    mut read: ReadModel,
    archive_before_ms: u64,
) -> Result<Option<Replayed>, Error> {
    read.index_loaded_rooms();
    let mut replay = Replay {
        store,
        read,
        skipped: HashSet::new(),
        archived_here: HashSet::new(),
        changed: false,
        to_archive: Vec::new(),
        archive_before_ms,
        failure: None,
    };
    let summary = store.replay(replay.read.last_seq, |batch| {
        for envelope in batch.events {
            if replay.failure.is_some() || envelope.seq <= replay.read.last_seq {
                continue;
            }
            if envelope.seq != replay.read.last_seq + 1 {
                replay.failure = Some(Error::Corrupt(format!(
                    "log record holding seq {} does not continue seq {}",
                    envelope.seq, replay.read.last_seq
                )));
                continue;
            }
            if let Err(error) = replay.envelope(envelope) {
                replay.failure = Some(error);
            }
        }
    })?;
    if let Some(failure) = replay.failure.take() {
        return Err(failure);
    }
    if replay.read.last_seq > summary.last_seq {
        return Ok(None);
    }
    replay.archive();
    Ok(Some(Replayed {
        read: replay.read,
        changed: replay.changed,
    }))
}

/// The snapshot: every room that was in memory, as of the mark. One that cannot be read means replaying from
/// seq 1 (and is cleared, so none of it outlives that replay).
fn load_snapshot(store: &Store, now_ms: u64) -> Result<(ReadModel, u64), Error> {
    let unusable = |error: String| -> Result<(ReadModel, u64), Error> {
        tracing::warn!(%error, "the snapshot cannot be used; clearing it and replaying from seq 1");
        store.clear_snapshots()?;
        Ok((ReadModel::default(), 0))
    };
    let snapshots = match store.snapshots() {
        Ok(snapshots) => snapshots,
        Err(error) => return unusable(error.to_string()),
    };
    let mut read = ReadModel::default();
    for (room_id, bytes) in snapshots.rooms {
        match decode_entry(&bytes) {
            Ok((seq, entry)) if seq == snapshots.seq => {
                read.rooms.insert(room_id, entry);
            }
            Ok((seq, _)) => {
                return unusable(format!(
                    "room {room_id} is as of seq {seq}, not {}",
                    snapshots.seq
                ));
            }
            Err(error) => return unusable(format!("room {room_id}: {error}")),
        }
    }
    read.last_seq = snapshots.seq;
    let extra = store.snapshot_extra().map_err(|e| e.to_string());
    let ended = extra.and_then(|bytes| match bytes {
        Some(bytes) => crate::retention::EndedRooms::decode(&bytes, snapshots.seq),
        None => Ok(None),
    });
    read.ended = match ended {
        Ok(Some(ended)) => ended,
        Err(error) => return unusable(format!("the rooms ended by hour: {error}")),
        // A snapshot from before retention, or whose extra is another's: rooms ended before it are unknown,
        // so, as if one starting at seq 1 had just ended, nothing goes for a whole retention.
        Ok(None) => {
            let mut ended = crate::retention::EndedRooms::default();
            if snapshots.seq > 0 {
                ended.note(now_ms, 1);
            }
            ended
        }
    };
    Ok((read, snapshots.seq))
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
            found.push((
                key(&entry.actor, &entry.room_id, &entry.command_id),
                remembered,
            ));
        }
    }
    let mut idempotency = Idempotency::new(ttl_ms, max);
    for (key, remembered) in found.into_iter().rev() {
        idempotency.insert(key, remembered);
    }
    idempotency.trim(now_ms);
    Ok(idempotency)
}
