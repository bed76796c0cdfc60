//! A corrupted record gives a clear error naming its seq: never a panic, never wrong data.
//!
//! Two layers are tested. On disk, a byte is flipped in a copy of a real sled directory; sled's own checks may
//! catch it first, and any error is acceptable as long as no read returns data that differs from what was
//! written. In memory, the store's `MemoryBackend` lets the test damage exactly one stored value, so the store's
//! own checksums and gap check are held to the exact seq and reason.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use cohost_proto::limits::READ_EVENTS_MAX;
use cohost_proto::{Envelope, RoomId};
use cohost_store::{Backend, Batch, FrameError, LogSummary, MemoryBackend, Op, Store, StoreError};
use common::{LogBuilder, record_for, room_id, sample_batches};

/// The store's own in-memory backend, with the two ways of damage these cases need, each checked to hit.
trait Damage {
    fn damage_key(&self, key: &[u8], change: impl FnOnce(&mut Vec<u8>));
    fn remove(&self, key: &[u8]);
}

impl Damage for MemoryBackend {
    fn damage_key(&self, key: &[u8], change: impl FnOnce(&mut Vec<u8>)) {
        assert!(self.damage(key, change), "the key to damage exists");
    }

    fn remove(&self, key: &[u8]) {
        assert!(self.delete(key), "the key to remove exists");
    }
}

/// Whether a `FrameError` is the one a case expects.
type IsReason = fn(&FrameError) -> bool;

fn log_key(first_seq: u64) -> Vec<u8> {
    let mut key = vec![b'L'];
    key.extend_from_slice(&first_seq.to_be_bytes());
    key
}

/// A store over a fresh in-memory backend holding the sample log (records at seqs 1, 2, 5, 7, 8).
fn sample_store() -> (Store, MemoryBackend, Vec<Batch>) {
    let backend = MemoryBackend::default();
    let store = Store::with_backend(Box::new(backend.clone())).expect("an empty backend opens");
    let batches = sample_batches();
    for batch in &batches {
        store.append(&batch.events, &batch.commands).unwrap();
    }
    assert_eq!(store.verify_log().unwrap().last_seq, 11);
    (store, backend, batches)
}

fn events_from(batches: &[Batch], from_seq: u64) -> Vec<Envelope> {
    batches
        .iter()
        .flat_map(|b| b.events.iter())
        .filter(|e| e.seq >= from_seq)
        .cloned()
        .collect()
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, StoreError>, seq: u64, what: &str) {
    match result {
        Err(StoreError::Corrupt { seq: found, .. }) => assert_eq!(found, seq, "{what}"),
        other => panic!("{what}: expected Corrupt at seq {seq}, got {other:?}"),
    }
}

#[test]
fn a_flipped_byte_names_the_first_seq_of_its_record() {
    // (first seq of the damaged record, last seq in it, byte offset in the value: 0 is the checksum,
    // 4 the event count, then the body; usize::MAX the last byte)
    let cases: &[(u64, u64, usize)] = &[
        (1, 1, 0),
        (2, 4, 4),
        (2, 4, 9),
        (5, 6, 40),
        (7, 7, usize::MAX),
        (8, 11, 3),
        (8, 11, 100),
    ];
    for &(first, last, offset) in cases {
        let case = format!("record {first} byte {offset}");
        let (store, backend, batches) = sample_store();
        backend.damage_key(&log_key(first), |value| {
            let at = offset.min(value.len() - 1);
            value[at] ^= 0x20;
        });

        let err = store.verify_log().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt { seq, reason: FrameError::Checksum { .. } } if seq == first
            ),
            "{case}: {err:?}"
        );
        let text = err.to_string();
        let prefix = format!("log record at seq {first} is corrupt: checksum mismatch: stored 0x");
        assert!(text.starts_with(&prefix), "{case}: {text}");

        // Replay checks every record, also those before the seq it replays from.
        assert_corrupt(store.replay(0, |_| {}), first, &case);
        assert_corrupt(store.replay(11, |_| {}), first, &case);
        assert_corrupt(store.read_events(1, READ_EVENTS_MAX), first, &case);
        assert_corrupt(store.read_events(first, 1), first, &case);
        assert_corrupt(store.read_events(last, READ_EVENTS_MAX), first, &case);
        assert_corrupt(store.read_seqs(&[first]), first, &case);
        assert_corrupt(store.read_seqs(&[last]), first, &case);

        // Batches before the damaged one still read; the damaged one is an error, not skipped.
        let mut read = store.batches_from(1);
        for batch in batches.iter().take_while(|b| b.first_seq() < Some(first)) {
            assert_eq!(read.next().unwrap().as_ref().ok(), Some(batch), "{case}");
        }
        assert_corrupt(read.next().unwrap(), first, &case);
        let newest = store.batches_rev().next().unwrap();
        if first == 8 {
            assert_corrupt(newest, first, &case);
        } else {
            assert_eq!(newest.unwrap(), batches[4], "{case}");
            // The damage is local: the log after the record still reads, exactly.
            assert_eq!(
                store.read_events(last + 1, READ_EVENTS_MAX).unwrap(),
                events_from(&batches, last + 1),
                "{case}"
            );
        }
    }
}

/// A read whose window ends before a damaged record does not need that record, so it succeeds: the limit is
/// reached before the next record is decoded.
#[test]
fn a_read_that_ends_before_a_damaged_record_succeeds() {
    // (damaged record, from_seq, limit): each window ends on the last seq before the damaged record.
    let cases: &[(u64, u64, usize)] = &[(2, 1, 1), (5, 1, 4), (5, 3, 2), (7, 5, 2), (8, 2, 6)];
    for &(damaged, from, limit) in cases {
        let (store, backend, batches) = sample_store();
        backend.damage_key(&log_key(damaged), |value| value[6] ^= 0x08);
        let expected: Vec<Envelope> = events_from(&batches, from)
            .into_iter()
            .take(limit)
            .collect();
        assert_eq!(expected.last().map(|e| e.seq), Some(damaged - 1));
        match store.read_events(from, limit) {
            Ok(events) => assert_eq!(
                events, expected,
                "damaged {damaged}, read_events({from}, {limit})"
            ),
            Err(err) => panic!("damaged {damaged}, read_events({from}, {limit}) failed: {err}"),
        }
    }
}

#[test]
fn a_truncated_record_is_corrupt() {
    // (first seq of the record, bytes kept (usize::MAX - n keeps all but n), expected reason)
    let checksum = |r: &FrameError| matches!(r, FrameError::Checksum { .. });
    let cases: &[(u64, usize, IsReason)] = &[
        (5, usize::MAX - 1, checksum),
        (5, usize::MAX - 7, checksum),
        (2, 20, checksum),
        (8, 5, checksum),
        (7, 3, |r| *r == FrameError::Truncated(3)),
        (1, 0, |r| *r == FrameError::Truncated(0)),
    ];
    for &(first, keep, expected) in cases {
        let case = format!("record {first} keeping {keep}");
        let (store, backend, _) = sample_store();
        backend.damage_key(&log_key(first), |value| {
            let keep = if keep > usize::MAX - 100 {
                value.len() - (usize::MAX - keep)
            } else {
                keep
            };
            value.truncate(keep);
        });
        match store.verify_log() {
            Err(StoreError::Corrupt { seq, reason }) => {
                assert_eq!(seq, first, "{case}");
                assert!(expected(&reason), "{case}: {reason:?}");
            }
            other => panic!("{case}: expected Corrupt, got {other:?}"),
        }
        assert_corrupt(store.read_events(1, READ_EVENTS_MAX), first, &case);
        assert_corrupt(store.read_events(first, READ_EVENTS_MAX), first, &case);
    }
}

#[test]
fn a_missing_record_is_a_gap_in_verify_log() {
    // (record removed, expected, found)
    let cases: &[(u64, u64, u64)] = &[(1, 1, 2), (2, 2, 5), (5, 5, 7), (7, 7, 8)];
    for &(removed, expected, found) in cases {
        let (store, backend, _) = sample_store();
        backend.remove(&log_key(removed));
        let err = store.verify_log().unwrap_err();
        match err {
            StoreError::Gap {
                expected: e,
                found: f,
            } => assert_eq!((e, f), (expected, found), "removed {removed}"),
            ref other => panic!("removed {removed}: expected Gap, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("log is not gap-free: expected a record at seq {expected}, found seq {found}")
        );
        match store.replay(0, |_| {}) {
            Err(StoreError::Gap {
                expected: e,
                found: f,
            }) => assert_eq!((e, f), (expected, found), "replay, removed {removed}"),
            other => panic!("replay, removed {removed}: expected Gap, got {other:?}"),
        }
    }
    // The tail record missing is indistinguishable from a shorter log: verify_log reports where it ends.
    let (store, backend, _) = sample_store();
    backend.remove(&log_key(8));
    assert_eq!(
        store.verify_log().unwrap(),
        LogSummary {
            last_seq: 7,
            records: 4
        }
    );
}

/// A read must not serve a log with a hole as if it were whole: the caller (an outbox relay, a subscriber
/// catching up) would skip the missing seqs without knowing.
#[test]
fn reads_across_a_missing_record_are_an_error_not_a_shorter_answer() {
    // (record removed, seqs it held, read from)
    let cases: &[(u64, u64, u64)] = &[(5, 6, 1), (5, 6, 3), (5, 6, 5), (5, 6, 6), (2, 4, 1)];
    for &(removed, last, from) in cases {
        let (store, backend, _) = sample_store();
        backend.remove(&log_key(removed));
        let read = store.read_events(from, READ_EVENTS_MAX);
        match read {
            Err(StoreError::Gap { expected, .. }) => {
                assert!((removed..=last).contains(&expected), "{expected}")
            }
            Err(other) => panic!("removed {removed}, read from {from}: unexpected {other:?}"),
            Ok(events) => {
                let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
                panic!(
                    "removed record {removed}..={last}, read_events({from}) returned Ok({seqs:?}): \
                     seqs {removed}..={last} are silently missing"
                );
            }
        }
    }
}

#[test]
fn a_damaged_snapshot_or_mark_is_corrupt_value() {
    // The snapshot at seq 9 is one value (chunk 0), under `S`, the seq and the chunk number.
    let chunk_key = [b"S".as_slice(), &9u64.to_be_bytes(), &0u32.to_be_bytes()].concat();
    let rooms: Vec<(RoomId, Vec<u8>)> = vec![
        (room_id("room-a"), b"state of room a".to_vec()),
        (room_id("room-b"), b"state of room b".to_vec()),
    ];
    type Damage = fn(&mut Vec<u8>);
    // (key, damage, expected `what`, expected reason)
    let cases: &[(Vec<u8>, Damage, &str, IsReason)] = &[
        (
            chunk_key.clone(),
            |v| v[7] ^= 1,
            "snapshot chunk [0, 0, 0, 0]",
            |r| matches!(r, FrameError::Checksum { .. }),
        ),
        (
            chunk_key.clone(),
            |v| v[0] ^= 0x80,
            "snapshot chunk [0, 0, 0, 0]",
            |r| matches!(r, FrameError::Checksum { .. }),
        ),
        (
            chunk_key.clone(),
            |v| v.truncate(2),
            "snapshot chunk [0, 0, 0, 0]",
            |r| *r == FrameError::Truncated(2),
        ),
        (
            b"Msnapshot_seq".to_vec(),
            |v| v[5] ^= 4,
            "snapshot mark",
            |r| matches!(r, FrameError::Checksum { .. }),
        ),
    ];
    for (key, damage, what, reason) in cases {
        let backend = MemoryBackend::default();
        let store = Store::with_backend(Box::new(backend.clone())).unwrap();
        store.write_snapshot(9, &rooms).unwrap();
        assert_eq!(store.snapshots().unwrap().rooms, rooms);
        backend.damage_key(key, damage);
        match store.snapshots() {
            Err(StoreError::CorruptValue {
                what: found,
                reason: why,
            }) => {
                assert_eq!(found, *what);
                assert!(reason(&why), "{what}: {why:?}");
            }
            other => panic!("{what}: expected CorruptValue, got {other:?}"),
        }
    }
}

#[test]
fn a_damaged_cursor_is_corrupt_value() {
    let frame = |payload: &[u8]| [&crc32fast::hash(payload).to_le_bytes()[..], payload].concat();
    // (damage, expected reason)
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(Damage, IsReason)> = vec![
        (Box::new(|v| v[6] ^= 1), |r| {
            matches!(r, FrameError::Checksum { .. })
        }),
        (Box::new(|v| v[1] ^= 1), |r| {
            matches!(r, FrameError::Checksum { .. })
        }),
        (Box::new(|v| v.truncate(3)), |r| {
            *r == FrameError::Truncated(3)
        }),
        // A well-framed value of the wrong size is refused too, not read as a shorter number.
        (Box::new(move |v| *v = frame(&[1, 2, 3, 4])), |r| {
            *r == FrameError::Truncated(4)
        }),
    ];
    for (index, (damage, reason)) in cases.into_iter().enumerate() {
        let backend = MemoryBackend::default();
        let store = Store::with_backend(Box::new(backend.clone())).unwrap();
        store.set_cursor("nats", 42).unwrap();
        store.set_cursor("webhooks", 7).unwrap();
        backend.damage_key(b"Cnats", |v| damage(v));
        let err = store.cursor("nats").unwrap_err();
        match &err {
            StoreError::CorruptValue { what, reason: why } => {
                assert_eq!(what, "cursor \"nats\"", "case {index}");
                assert!(reason(why), "case {index}: {why:?}");
            }
            other => panic!("case {index}: expected CorruptValue, got {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("stored cursor \"nats\" is corrupt: ")
        );
        assert_eq!(
            store.cursor("webhooks").unwrap(),
            7,
            "other cursors still read"
        );
        store.set_cursor("nats", 43).unwrap();
        assert_eq!(
            store.cursor("nats").unwrap(),
            43,
            "a new advance overwrites"
        );
    }
}

#[test]
fn a_damaged_command_index_is_corrupt_value_naming_its_batch() {
    // (batch whose index entry is damaged, batches read before it, newest first)
    let cases: &[(u64, &[u64])] = &[(8, &[]), (5, &[8]), (2, &[8, 5]), (1, &[8, 5, 2])];
    for &(damaged, before) in cases {
        let (store, backend, _) = sample_store();
        let mut key = vec![b'I'];
        key.extend_from_slice(&damaged.to_be_bytes());
        backend.damage_key(&key, |value| value[5] ^= 0x40);
        let mut index = store.command_index_rev();
        for &seq in before {
            assert_eq!(index.next().unwrap().unwrap().0, seq, "damaged {damaged}");
        }
        match index.next().unwrap() {
            Err(StoreError::CorruptValue { what, reason }) => {
                assert_eq!(what, format!("command index of batch {damaged}"));
                assert!(matches!(reason, FrameError::Checksum { .. }), "{reason:?}");
            }
            other => panic!("damaged {damaged}: expected CorruptValue, got {other:?}"),
        }
        // The log itself is whole.
        assert_eq!(store.verify_log().unwrap().last_seq, 11);
    }
}

#[test]
fn a_foreign_format_is_refused() {
    let backend = MemoryBackend::default();
    backend
        .write(vec![Op::Put(b"Mformat".to_vec(), b"other-app/3".to_vec())])
        .unwrap();
    match Store::with_backend(Box::new(backend)) {
        Err(StoreError::Format { found, expected }) => {
            assert_eq!(
                (found.as_str(), expected.as_str()),
                ("other-app/3", "cohost-store/2")
            );
        }
        other => panic!("expected Format, got {other:?}"),
    }
}

// ---- On disk, through sled ----

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files_under(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

fn title_of(seq: u64) -> String {
    format!("recognizable-title-of-the-record-at-seq-{seq:02}-0123456789abcdef")
}

/// What opening a directory and reading everything gave: each step's result, as far as it got.
#[derive(Debug, PartialEq)]
enum Outcome {
    OpenFailed(String),
    Opened {
        summary: Result<LogSummary, String>,
        events: Result<Vec<Envelope>, String>,
    },
}

fn open_and_read(dir: &Path) -> Outcome {
    let named = |e: StoreError| match e {
        // sled's own checks: the message is sled's.
        StoreError::Backend(_) => e.to_string(),
        // The store's own checks must name the seq they found damaged.
        other => format!("store: {other}"),
    };
    match Store::open(dir) {
        Err(e) => Outcome::OpenFailed(named(e)),
        Ok(store) => Outcome::Opened {
            summary: store.verify_log().map_err(named),
            events: store.read_events(1, READ_EVENTS_MAX).map_err(named),
        },
    }
}

fn intact(events: &[Envelope]) -> Outcome {
    Outcome::Opened {
        summary: Ok(LogSummary {
            last_seq: events.len() as u64,
            records: events.len() as u64,
        }),
        events: Ok(events.to_vec()),
    }
}

/// Appends one-event batches, one new room each, each with a long title found nowhere else in the files.
fn append_titled(dir: &Path, log: &mut LogBuilder, count: u64) -> Vec<Envelope> {
    let store = Store::open(dir).unwrap();
    let mut events = Vec::new();
    for _ in 0..count {
        let seq = log.last_seq() + 1;
        let event = log.room_created(&format!("room-{seq}"), &title_of(seq));
        store
            .append(std::slice::from_ref(&event), &[record_for(&event)])
            .unwrap();
        events.push(event);
    }
    store.flush().unwrap();
    events
}

/// Flips one byte of the title of `seq` in a copy of `original`, once for every place sled's files hold that
/// title, and checks each copy: no panic; every error the store itself raises names `seq`; whatever reads `Ok`
/// is exactly what was written. At least one copy must give an error.
fn flip_each_place(original: &Path, seq: u64, written: &[Envelope]) {
    let marker = title_of(seq);
    let mut places = Vec::new();
    for file in files_under(original) {
        let bytes = std::fs::read(&file).unwrap();
        for (at, window) in bytes.windows(marker.len()).enumerate() {
            if window == marker.as_bytes() {
                places.push((file.strip_prefix(original).unwrap().to_owned(), at));
            }
        }
    }
    assert!(
        !places.is_empty(),
        "sled stores the title verbatim somewhere"
    );

    let mut errors = 0;
    for (file, at) in &places {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(original, copy.path());
        let path = copy.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at + marker.len() / 2] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let place = format!("title of seq {seq} in {} at byte {at}", file.display());
        let outcome = catch_unwind(AssertUnwindSafe(|| open_and_read(copy.path())))
            .unwrap_or_else(|_| panic!("{place}: opening or reading the damaged copy panicked"));
        let (summary, events) = match &outcome {
            Outcome::OpenFailed(text) => (Err(text), Err(text)),
            Outcome::Opened { summary, events } => (summary.as_ref(), events.as_ref()),
        };
        for text in [summary.err(), events.err()].into_iter().flatten() {
            if let Some(text) = text.strip_prefix("store: ") {
                assert!(text.contains(&format!("seq {seq}")), "{place}: {text}");
            }
        }
        if let Ok(summary) = summary {
            let read: Option<Vec<u64>> = events.ok().map(|e| e.iter().map(|e| e.seq).collect());
            assert_eq!(
                summary.last_seq,
                written.len() as u64,
                "{place}: verify_log passed ({summary:?}) on a log that lost committed records; \
                 read_events read seqs {read:?}"
            );
        }
        if let Ok(events) = events {
            assert_eq!(events, written, "{place}: read_events returned wrong data");
        }
        errors += usize::from(summary.is_err() || events.is_err());
    }
    assert!(errors > 0, "no flipped byte was noticed: {places:?}");
}

/// Spec: "A corrupted record (flip a byte in a copy of the database) gives the clear error, not a panic and
/// not wrong data." Here the record is older than sled's last snapshot, which sled writes when it opens and
/// which records how far its log reached. Recovery stops at the bad message, finds the log ending before that
/// point, and sled reports corruption ("Read corrupted data at file offset None").
#[test]
fn a_flipped_byte_on_disk_in_an_older_record_is_an_error() {
    let original = tempfile::tempdir().unwrap();
    let mut log = LogBuilder::new();
    let written = append_titled(original.path(), &mut log, 6);
    // Reopening also lets sled take its snapshot.
    assert_eq!(open_and_read(original.path()), intact(&written));
    flip_each_place(original.path(), 4, &written);
}

/// The same spec, for a record written since the store was last opened: the normal case for the recent log of
/// a running deployment. sled 0.34 recovers such records by scanning its log past its last snapshot, takes the
/// first bad message for a torn write, and silently ends the log there (pagecache/iterator.rs: "found a
/// tear"). The store must still notice that committed records are gone instead of opening a shorter log.
#[test]
fn a_flipped_byte_on_disk_in_a_recent_record_is_an_error_not_a_shorter_log() {
    let original = tempfile::tempdir().unwrap();
    let mut log = LogBuilder::new();
    let mut written = append_titled(original.path(), &mut log, 3);
    written.extend(append_titled(original.path(), &mut log, 3));
    flip_each_place(original.path(), 5, &written);
}
