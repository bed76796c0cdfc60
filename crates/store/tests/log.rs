//! The log as a caller sees it: appends across rooms, every read path, reopening, cursors and snapshots.

mod common;

use std::path::Path;

use cohost_proto::limits::READ_EVENTS_MAX;
use cohost_proto::{Envelope, RoomId};
use cohost_store::{
    Backend, Batch, CommandIndexEntry, LogSummary, MemoryBackend, Op, Snapshots, Store, StoreError,
};
use common::{LogBuilder, record_for, room_id, sample_batches};

fn all_events(batches: &[Batch]) -> Vec<Envelope> {
    batches.iter().flat_map(|b| b.events.clone()).collect()
}

/// A fresh store holding the sample batches, with its directory (kept alive) and the batches.
fn sample_store() -> (tempfile::TempDir, Vec<Batch>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches();
    let store = open_with(dir.path(), &batches);
    (dir, batches, store)
}

fn open_with(dir: &Path, batches: &[Batch]) -> Store {
    let store = Store::open(dir).expect("a fresh directory opens");
    for batch in batches {
        store
            .append(&batch.events, &batch.commands)
            .expect("append succeeds");
    }
    store
}

/// Expected seqs or versions, `first..=last`.
type Versions = (u64, u64);
/// An empty `first..=last`.
const NONE: Versions = (1, 0);

fn seqs(events: &[Envelope]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

#[test]
fn verify_log_counts_records_and_finds_the_last_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.verify_log().unwrap(),
        LogSummary {
            last_seq: 0,
            records: 0
        }
    );
    for batch in sample_batches() {
        store.append(&batch.events, &batch.commands).unwrap();
    }
    assert_eq!(
        store.verify_log().unwrap(),
        LogSummary {
            last_seq: 11,
            records: 5
        }
    );
}

#[test]
fn read_events_returns_exactly_the_asked_window() {
    let (_dir, batches, store) = sample_store();
    let events = all_events(&batches);
    let window = |from: u64, to: u64| -> Vec<Envelope> {
        events
            .iter()
            .filter(|e| (from..=to).contains(&e.seq))
            .cloned()
            .collect()
    };
    // (from_seq, limit, expected seqs first..=last); NONE is empty.
    let cases: &[(u64, usize, (u64, u64))] = &[
        (0, 100, (1, 11)),   // seq 0 reads from the start
        (1, 100, (1, 11)),   // the whole log
        (3, 100, (3, 11)),   // inside the second batch
        (4, 3, (4, 6)),      // last event of a batch, across a boundary
        (5, 2, (5, 6)),      // a batch boundary, exactly one batch
        (5, 3, (5, 7)),      // a boundary, one event past the batch
        (8, 1, (8, 8)),      // first event of the last batch
        (10, 100, (10, 11)), // inside the last batch, to the end
        (11, 10, (11, 11)),  // the last event
        (1, 1, (1, 1)),      // a one-event batch
        (2, 0, NONE),        // limit 0
        (12, 10, NONE),      // just past the end
        (1_000, 10, NONE),   // far past the end
    ];
    for &(from, limit, (first, last)) in cases {
        let got = store.read_events(from, limit).unwrap();
        assert_eq!(
            seqs(&got),
            (first..=last).collect::<Vec<_>>(),
            "read_events({from}, {limit})"
        );
        assert_eq!(got, window(first, last), "read_events({from}, {limit})");
    }
}

#[test]
fn reads_are_capped_at_read_events_max() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = LogBuilder::new();
    let mut first = Vec::new();
    first.push(log.room_created("big-room", "A long show"));
    let total = READ_EVENTS_MAX + 150;
    while first.len() < 100 {
        first.push(log.invitation_created("big-room", "viewer"));
    }
    store.append(&first, &[]).unwrap();
    while (log.last_seq() as usize) < total {
        let batch: Vec<Envelope> = (0..100)
            .take(total - log.last_seq() as usize)
            .map(|_| log.invitation_created("big-room", "viewer"))
            .collect();
        store.append(&batch, &[]).unwrap();
    }
    assert_eq!(store.verify_log().unwrap().last_seq, total as u64);

    let head = store.read_events(1, usize::MAX).unwrap();
    assert_eq!(
        seqs(&head),
        (1..=READ_EVENTS_MAX as u64).collect::<Vec<_>>()
    );
    let tail = store
        .read_events(READ_EVENTS_MAX as u64 + 1, usize::MAX)
        .unwrap();
    assert_eq!(
        seqs(&tail),
        (READ_EVENTS_MAX as u64 + 1..=total as u64).collect::<Vec<_>>()
    );
    let from_middle = store.read_events(42, READ_EVENTS_MAX + 1).unwrap();
    assert_eq!(from_middle.len(), READ_EVENTS_MAX);
    assert_eq!(from_middle[0].seq, 42);

    let wanted: Vec<u64> = (1..=total as u64).collect();
    let room = store.read_seqs(&wanted).unwrap();
    let versions: Vec<u64> = room.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=READ_EVENTS_MAX as u64).collect::<Vec<_>>());
}

#[test]
fn batches_come_back_whole_in_both_orders() {
    let (_dir, batches, store) = sample_store();

    let forward: Vec<Batch> = store.batches_from(1).map(Result::unwrap).collect();
    assert_eq!(forward, batches);
    assert_eq!(forward[3].commands, Vec::new());
    assert_eq!(forward[1].commands.len(), 3);

    // (from_seq, first seqs of the batches returned)
    let cases: &[(u64, &[u64])] = &[
        (0, &[1, 2, 5, 7, 8]),
        (1, &[1, 2, 5, 7, 8]),
        (2, &[2, 5, 7, 8]),
        (3, &[2, 5, 7, 8]), // the batch that holds seq 3 starts at 2
        (4, &[2, 5, 7, 8]),
        (5, &[5, 7, 8]),
        (7, &[7, 8]),
        (11, &[8]),
    ];
    for &(from, expected) in cases {
        let firsts: Vec<u64> = store
            .batches_from(from)
            .map(|b| b.unwrap().first_seq().unwrap())
            .collect();
        assert_eq!(firsts, expected, "batches_from({from})");
    }

    let backward: Vec<Batch> = store.batches_rev().map(Result::unwrap).collect();
    let mut reversed = batches.clone();
    reversed.reverse();
    assert_eq!(backward, reversed);
}

#[test]
fn read_seqs_reads_only_the_records_that_hold_them() {
    let (_dir, batches, store) = sample_store();
    let events = all_events(&batches);
    // Records start at seqs 1, 2, 5, 7 and 8 (8 holds 8..=11). room-a: seqs 1 3 6 8 11; room-b: 2 4 9;
    // room-c: 5 7 10. (seqs, records decoded)
    let cases: &[(&[u64], u64)] = &[
        (&[1, 3, 6, 8, 11], 4),
        (&[2, 4, 9], 2),
        (&[5, 7, 10], 3),
        (&[8, 9, 10, 11], 1),
        (&[3], 1),
        (&[], 0),
    ];
    for &(seqs, records) in cases {
        let before = store.records_read();
        let got = store.read_seqs(seqs).unwrap();
        assert_eq!(
            store.records_read() - before,
            records,
            "read_seqs({seqs:?})"
        );
        let want: Vec<Envelope> = seqs
            .iter()
            .map(|&s| events[s as usize - 1].clone())
            .collect();
        assert_eq!(got, want, "read_seqs({seqs:?})");
    }
    // A seq past the log is an error, not a shorter answer.
    assert!(store.read_seqs(&[10, 12]).is_err());
}

/// Everything a reader can see, to compare a store before and after reopening.
#[derive(Debug, PartialEq)]
struct Contents {
    summary: LogSummary,
    events: Vec<Envelope>,
    batches_rev: Vec<Batch>,
    rooms: Vec<Vec<Envelope>>,
    cursors: Vec<u64>,
    snapshots: Snapshots,
}

fn contents(store: &Store) -> Contents {
    Contents {
        summary: store.verify_log().unwrap(),
        events: store.read_events(1, READ_EVENTS_MAX).unwrap(),
        batches_rev: store.batches_rev().map(Result::unwrap).collect(),
        rooms: [&[1u64, 3, 6, 8, 11][..], &[2, 4, 9], &[5, 7, 10]]
            .iter()
            .map(|seqs| store.read_seqs(seqs).unwrap())
            .collect(),
        cursors: ["nats", "webhooks"]
            .iter()
            .map(|sink| store.cursor(sink).unwrap())
            .collect(),
        snapshots: store.snapshots().unwrap(),
    }
}

#[test]
fn a_reopened_store_reads_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches();
    let before = {
        let store = open_with(dir.path(), &batches);
        store.set_cursor("nats", 9).unwrap();
        store
            .write_snapshot(7, &[(room_id("room-a"), b"a@7".to_vec())])
            .unwrap();
        store.flush().unwrap();
        contents(&store)
    };
    assert_eq!(before.events, all_events(&batches));
    assert_eq!(before.cursors, vec![9, 0]);
    assert_eq!(before.snapshots.seq, 7);

    let store = Store::open(dir.path()).expect("the directory reopens");
    assert_eq!(contents(&store), before);

    // The log continues where it ended.
    let mut log = LogBuilder::after(11);
    let next = log.room_created("room-e", "After the restart");
    assert_eq!(next.seq, 12);
    store.append(std::slice::from_ref(&next), &[]).unwrap();
    assert_eq!(
        store.verify_log().unwrap(),
        LogSummary {
            last_seq: 12,
            records: 6
        }
    );
    assert_eq!(store.read_events(12, 10).unwrap(), vec![next]);
}

#[test]
fn an_empty_batch_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches();
    let store = open_with(dir.path(), &batches[..2]);
    let record = record_for(&batches[2].events[0]);
    let err = store.append(&[], &[record]).unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidArgument(_)),
        "unexpected error: {err:?}"
    );
    assert_eq!(
        err.to_string(),
        "invalid argument: a batch needs at least one event"
    );
    assert_eq!(
        store.verify_log().unwrap(),
        LogSummary {
            last_seq: 4,
            records: 2
        }
    );
}

#[test]
fn cursors_start_at_zero_move_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let longest = "s".repeat(cohost_store::SINK_NAME_LEN_MAX);
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor("nats").unwrap(), 0);
        store.set_cursor("nats", 7).unwrap();
        assert_eq!(store.cursor("nats").unwrap(), 7);
        store.set_cursor("nats", 11).unwrap();
        assert_eq!(store.cursor("nats").unwrap(), 11);
        assert_eq!(
            store.cursor("webhooks").unwrap(),
            0,
            "sinks are independent"
        );
        store.set_cursor(&longest, u64::MAX).unwrap();
        assert_eq!(store.cursor(&longest).unwrap(), u64::MAX);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.cursor("nats").unwrap(), 11);
    assert_eq!(store.cursor("webhooks").unwrap(), 0);
    assert_eq!(store.cursor(&longest).unwrap(), u64::MAX);

    let too_long = "s".repeat(cohost_store::SINK_NAME_LEN_MAX + 1);
    for bad in ["", too_long.as_str()] {
        let read = store.cursor(bad).unwrap_err();
        assert!(matches!(read, StoreError::InvalidArgument(_)), "{read:?}");
        let write = store.set_cursor(bad, 1).unwrap_err();
        assert!(matches!(write, StoreError::InvalidArgument(_)), "{write:?}");
        assert_eq!(
            write.to_string(),
            "invalid argument: a sink name is 1 to 64 bytes"
        );
    }
}

#[test]
fn a_snapshot_replaces_the_last_whole_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let room = |name: &str, bytes: &[u8]| -> (RoomId, Vec<u8>) { (room_id(name), bytes.to_vec()) };
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.snapshots().unwrap(), Snapshots::default());
        let first = vec![room("room-b", b"b@4"), room("room-a", b"a@4")];
        store.write_snapshot(4, &first).unwrap();
        let found = store.snapshots().unwrap();
        assert_eq!((found.seq, found.rooms), (4, first));
        store
            .write_snapshot(9, &[room("room-b", b"b@9"), room("room-c", b"c@9")])
            .unwrap();
        store.flush().unwrap();
    }
    // The rooms of the earlier snapshot are gone with it: a snapshot holds every room in memory.
    let expected = Snapshots {
        seq: 9,
        rooms: vec![room("room-b", b"b@9"), room("room-c", b"c@9")],
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.snapshots().unwrap(), expected);
    // Rooms beyond one value's size go in several; they all come back, in order.
    let many: Vec<(RoomId, Vec<u8>)> = (0..40)
        .map(|n| room(&format!("big-{n:02}"), &vec![n as u8; 100_000]))
        .collect();
    store.write_snapshot(10, &many).unwrap();
    assert_eq!(store.snapshots().unwrap().rooms, many);
    store.write_snapshot(11, &[]).unwrap();
    assert_eq!(
        store.snapshots().unwrap(),
        Snapshots {
            seq: 11,
            rooms: vec![]
        }
    );
    // A key of the earlier layout (one per room) beside the snapshot: the snapshot is refused, not read as if
    // it held every room.
    drop(store);
    let backend = MemoryBackend::new();
    let store = Store::with_backend(Box::new(backend.clone())).unwrap();
    store
        .write_snapshot(12, &[room("room-b", b"b@12")])
        .unwrap();
    let legacy = [b"S".as_slice(), b"room-a"].concat();
    backend
        .write(vec![Op::Put(legacy, b"an old snapshot".to_vec())])
        .unwrap();
    match store.snapshots() {
        Err(StoreError::CorruptValue { what, .. }) => assert_eq!(what, "snapshot"),
        other => panic!("expected the mixed snapshot refused, got {other:?}"),
    }
    store.clear_snapshots().unwrap();
    assert_eq!(store.snapshots().unwrap(), Snapshots::default());
    // An archived room stays readable as archived.
    store
        .archive_rooms(&[room("room-a", b"a final")], true)
        .unwrap();
    assert_eq!(
        store.archived(&room_id("room-a")).unwrap(),
        Some(b"a final".to_vec())
    );
    assert_eq!(store.archived(&room_id("room-b")).unwrap(), None);
    let archived: Vec<_> = store
        .archived_rooms()
        .map(|item| item.map(|(id, bytes)| (id, bytes.unwrap())).unwrap())
        .collect();
    assert_eq!(archived, vec![room("room-a", b"a final")]);
}

#[test]
fn replay_checks_the_whole_log_and_hands_over_the_batches_after_a_seq() {
    let (_dir, batches, store) = sample_store();
    // (after_seq, first seqs of the batches handed over): a batch goes over if it holds any seq after after_seq.
    let cases: &[(u64, &[u64])] = &[
        (0, &[1, 2, 5, 7, 8]),
        (1, &[2, 5, 7, 8]),
        (3, &[2, 5, 7, 8]),
        (4, &[5, 7, 8]),
        (7, &[8]),
        (10, &[8]),
        (11, &[]),
        (u64::MAX, &[]),
    ];
    for &(after, expected) in cases {
        let mut handed = Vec::new();
        let summary = store.replay(after, |batch| handed.push(batch)).unwrap();
        assert_eq!(
            summary,
            LogSummary {
                last_seq: 11,
                records: 5
            },
            "replay({after})"
        );
        let expected: Vec<Batch> = batches
            .iter()
            .filter(|b| expected.contains(&b.first_seq().unwrap()))
            .cloned()
            .collect();
        assert_eq!(handed, expected, "replay({after})");
    }
}

/// The command index `batches` should leave: each batch with commands, newest first.
fn index_of(batches: &[Batch]) -> Vec<(u64, Vec<CommandIndexEntry>)> {
    batches
        .iter()
        .rev()
        .filter(|b| !b.commands.is_empty())
        .map(|b| {
            let entries = b.commands.iter().map(CommandIndexEntry::from).collect();
            (b.first_seq().unwrap(), entries)
        })
        .collect()
}

#[test]
fn the_command_index_lists_each_batchs_commands_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches();
    let expected = index_of(&batches);
    assert_eq!(
        expected.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        vec![8, 5, 2, 1],
        "the batch at seq 7 has no commands"
    );
    {
        let store = open_with(dir.path(), &batches);
        let index: Vec<_> = store.command_index_rev().map(Result::unwrap).collect();
        assert_eq!(index, expected);
        assert_eq!(index[2].1[1].command_id, batches[1].commands[1].command_id);
    }
    let store = Store::open(dir.path()).unwrap();
    let index: Vec<_> = store.command_index_rev().map(Result::unwrap).collect();
    assert_eq!(index, expected, "the index survives reopening");
}

/// `discard` takes back a batch whose flush failed; the engine then writes other events under the same seqs.
/// Nothing of the discarded batch may survive it, its command ids included: a stale index entry would make a
/// reopened engine remember a command that never committed, and look for its reply in a record that now holds
/// another batch.
#[test]
fn discard_removes_a_batch_with_its_command_index() {
    let (dir, _batches, store) = sample_store();
    store.discard(8).unwrap();
    assert_eq!(
        store.verify_log().unwrap(),
        LogSummary {
            last_seq: 7,
            records: 4
        }
    );
    assert_eq!(store.read_events(8, 10).unwrap(), Vec::new());
    let indexed: Vec<u64> = store
        .command_index_rev()
        .map(|item| item.unwrap().0)
        .collect();
    assert_eq!(
        indexed,
        vec![5, 2, 1],
        "the discarded batch's commands are gone"
    );

    // The seqs are written again, by a batch without commands.
    let mut log = LogBuilder::after(7);
    let again = vec![log.room_created("room-z", "Second try")];
    assert_eq!(again[0].seq, 8);
    store.append(&again, &[]).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read_events(8, 10).unwrap(), again);
    let indexed: Vec<u64> = store
        .command_index_rev()
        .map(|item| item.unwrap().0)
        .collect();
    assert_eq!(indexed, vec![5, 2, 1], "no command is remembered at seq 8");
}

/// A store whose command index an older build wrote (entries without their room) opens with every entry's room,
/// read from the batch's own idempotency records.
#[test]
fn an_older_command_index_reads_its_rooms_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches();
    let expected = index_of(&batches);
    drop(open_with(dir.path(), &batches));
    {
        let db = open_raw(dir.path());
        for batch in batches.iter().filter(|b| !b.commands.is_empty()) {
            // The older layout: a bare list of (actor, command_id, fingerprint, at_ms), framed.
            let older: Vec<_> = batch
                .commands
                .iter()
                .map(|c| (&c.actor, &c.command_id, c.fingerprint, c.at_ms))
                .collect();
            let payload = cohost_proto::codec::to_postcard(&older);
            let mut value = crc32fast::hash(&payload).to_le_bytes().to_vec();
            value.extend_from_slice(&payload);
            let mut key = vec![b'I'];
            key.extend_from_slice(&batch.first_seq().unwrap().to_be_bytes());
            let replaced = db.insert(key, value).unwrap();
            assert!(replaced.is_some(), "this build keeps its index there too");
        }
        db.insert(b"Mformat", b"cohost-store/1".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let index: Vec<_> = store.command_index_rev().map(Result::unwrap).collect();
    assert_eq!(index, expected);
    assert_eq!(index[0].1[0].room_id, room_id("room-a"));
    drop(store);
    // Opened once by this build, the store is marked as its format, which an older build refuses.
    let db = open_raw(dir.path());
    assert_eq!(
        db.get(b"Mformat").unwrap().as_deref(),
        Some(&b"cohost-store/2"[..])
    );
}

/// The store's sled directory, opened directly; sled lets its lock go a little after the last handle is dropped.
fn open_raw(dir: &Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(_) if started.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("the store's directory opens in sled: {error}"),
        }
    }
}
