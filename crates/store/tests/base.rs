//! A store that starts from a base (cluster mode's takeover from a snapshot): the log after it continues it,
//! reads before it are refused by name, remembered replies come from the base, and all of it survives reopening.

mod common;

use std::sync::{Arc, Mutex};

use cohost_store::{Base, Batch, ReplicateError, Replicator, Store, StoreError};
use common::{room_id, sample_batches};

/// Keeps every record a store sends it, as the partition log would, its position the count kept.
#[derive(Default)]
struct Capture(Mutex<Vec<(u64, Vec<u8>)>>);

impl Replicator for Capture {
    fn replicate(&self, first_seq: u64, record: &[u8]) -> Result<(), ReplicateError> {
        self.0.lock().unwrap().push((first_seq, record.to_vec()));
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.0.lock().unwrap().len() as u64)
    }
}

/// The sample batches' records as the partition log holds them.
fn records(batches: &[Batch]) -> Vec<(u64, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let capture = Arc::new(Capture::default());
    store.replicate_to(capture.clone());
    for batch in batches {
        store.append(&batch.events, &batch.commands).unwrap();
    }
    capture.0.lock().unwrap().clone()
}

/// The base after the sample's first three batches (`[1] [2 3 4] [5 6]`).
fn base(batches: &[Batch]) -> Base {
    Base {
        seq: 6,
        rooms: vec![(room_id("room-a"), b"a as of 6".to_vec())],
        archived: vec![(room_id("gone"), b"ended".to_vec())],
        remembered: vec![
            (2, batches[1].commands.clone()),
            (5, batches[2].commands.clone()),
        ],
    }
}

fn started_from_base(dir: &std::path::Path, batches: &[Batch]) -> Store {
    let store = Store::open(dir).unwrap();
    store.install_base(&base(batches)).unwrap();
    for (_, record) in &records(batches)[3..] {
        store.append_replicated(record).unwrap();
    }
    store.flush_replicated().unwrap();
    store
}

fn check(store: &Store, batches: &[Batch]) {
    assert_eq!(store.log_from(), 7);
    let summary = store.verify_log().unwrap();
    assert_eq!((summary.last_seq, summary.records), (11, 2));
    let seqs: Vec<u64> = store
        .read_events(7, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (7..=11).collect::<Vec<_>>());
    for from in [0, 1, 6] {
        assert!(
            matches!(
                store.read_events(from, 10),
                Err(StoreError::Before { first: 7, .. })
            ),
            "a read from {from} is before the log"
        );
    }
    assert!(matches!(
        store.read_seqs(&[3]),
        Err(StoreError::Before { from: 3, first: 7 })
    ));
    // Remembered replies: from the base before it, from the log after it.
    assert_eq!(
        store.idempotency_records(2).unwrap(),
        Some(batches[1].commands.clone())
    );
    assert_eq!(
        store.idempotency_records(8).unwrap(),
        Some(batches[4].commands.clone())
    );
    assert_eq!(store.idempotency_records(1).unwrap(), None);
    let indexed: Vec<u64> = store
        .command_index_rev()
        .map(|item| item.unwrap().0)
        .collect();
    assert_eq!(indexed, vec![8, 5, 2]);
    let snapshot = store.snapshots().unwrap();
    assert_eq!(snapshot.seq, 6);
    assert_eq!(snapshot.rooms, base(batches).rooms);
    assert_eq!(
        store.archived(&room_id("gone")).unwrap(),
        Some(b"ended".to_vec())
    );
    // A sink that never advanced starts where the log does.
    assert_eq!(store.cursor("relay").unwrap(), 6);
}

#[test]
fn a_store_started_from_a_base_reads_as_its_log_and_survives_reopening() {
    let batches = sample_batches();
    let dir = tempfile::tempdir().unwrap();
    let store = started_from_base(dir.path(), &batches);
    check(&store, &batches);
    store.set_cursor("relay", 9).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    check_reopened(&store, &batches);
}

fn check_reopened(store: &Store, batches: &[Batch]) {
    assert_eq!(store.cursor("relay").unwrap(), 9);
    store.set_cursor("relay", 0).unwrap();
    check(store, batches);
}

#[test]
fn a_base_goes_only_into_an_empty_store_and_is_never_given_up() {
    let batches = sample_batches();
    let dir = tempfile::tempdir().unwrap();
    let store = started_from_base(dir.path(), &batches);
    assert!(matches!(
        store.install_base(&base(&batches)),
        Err(StoreError::InvalidArgument(_))
    ));
    // Its snapshot cannot be rebuilt from a log that starts after it.
    assert!(store.clear_snapshots().is_err());
    assert_eq!(store.snapshots().unwrap().seq, 6);

    let fresh = tempfile::tempdir().unwrap();
    let store = Store::open(fresh.path()).unwrap();
    store.install_base(&base(&batches)).unwrap();
    let records = records(&batches);
    assert!(
        matches!(
            store.append_replicated(&records[2].1),
            Err(StoreError::Gap {
                expected: 7,
                found: 5
            })
        ),
        "a record the base already covers does not continue it"
    );
    let mut remembered_late = base(&batches);
    remembered_late
        .remembered
        .push((8, batches[4].commands.clone()));
    let other = tempfile::tempdir().unwrap();
    let store = Store::open(other.path()).unwrap();
    assert!(matches!(
        store.install_base(&remembered_late),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[test]
fn a_snapshot_keeps_the_replicated_position_it_was_taken_at() {
    let batches = sample_batches();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.snapshot_position().unwrap(), None);
    store
        .write_snapshot(0, &[])
        .expect("a snapshot without a replicator");
    assert_eq!(store.snapshot_position().unwrap(), None);
    let capture = Arc::new(Capture::default());
    store.replicate_to(capture.clone());
    for batch in &batches[..2] {
        store.append(&batch.events, &batch.commands).unwrap();
    }
    store.write_snapshot(4, &[]).unwrap();
    assert_eq!(store.snapshots_seq().unwrap(), 4);
    assert_eq!(store.snapshot_position().unwrap(), Some(2));
}
