//! Retention removes a prefix of the log: whole records before a seq, never the last one, only where the
//! snapshot covers them; reads before the new start are refused by name, the rest reads and appends as before,
//! and all of it survives reopening.

mod common;

use cohost_store::{Store, StoreError};
use common::{room_id, sample_batches};

/// The sample's five records, `[1] [2 3 4] [5 6] [7] [8 9 10 11]`, and a snapshot at `snapshot_seq`.
fn sample(dir: &std::path::Path, snapshot_seq: u64) -> Store {
    let store = Store::open(dir).unwrap();
    for batch in sample_batches() {
        store.append(&batch.events, &batch.commands).unwrap();
    }
    let rooms = vec![(room_id("room-a"), b"a".to_vec())];
    store.write_snapshot(snapshot_seq, &rooms).unwrap();
    store
}

#[test]
fn whole_records_before_the_seq_go_and_the_rest_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path(), 7);
    // seq 6 sits in [5 6]: only the records wholly before it go.
    assert_eq!(store.remove_before(6, 100).unwrap(), 5);
    assert_eq!(store.log_from(), 5);
    assert!(matches!(
        store.read_events(4, 10),
        Err(StoreError::Before { from: 4, first: 5 })
    ));
    let seqs: Vec<u64> = store
        .read_events(5, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (5..=11).collect::<Vec<_>>());
    assert_eq!(store.verify_log().unwrap().last_seq, 11);
    // The command index of what went went with it: the newest batches remain, the removed ones are gone.
    let batches: Vec<u64> = store
        .command_index_rev()
        .map(|entry| entry.unwrap().0)
        .collect();
    assert!(batches.iter().all(|&first| first >= 5), "{batches:?}");
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.log_from(), 5, "the new start survives reopening");
    assert_eq!(store.verify_log().unwrap().last_seq, 11);
    let more = common::LogBuilder::after(11).room_created("room-z", "Late show");
    store.append(&[more], &[]).unwrap();
    assert_eq!(store.verify_log().unwrap().last_seq, 12);
}

#[test]
fn the_last_record_stays_and_a_pass_takes_at_most_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path(), 11);
    assert_eq!(
        store.remove_before(u64::MAX, 2).unwrap(),
        5,
        "two records per pass"
    );
    assert_eq!(
        store.remove_before(u64::MAX, 100).unwrap(),
        8,
        "all but the last"
    );
    assert_eq!(
        store.remove_before(u64::MAX, 100).unwrap(),
        8,
        "nothing more to do"
    );
    assert_eq!(store.read_events(8, 10).unwrap().len(), 4);
}

#[test]
fn nothing_goes_that_the_snapshot_does_not_cover() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample(dir.path(), 3);
    // Keeping from 5 would need the snapshot at 4 or later.
    assert!(matches!(
        store.remove_before(6, 100),
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.log_from(), 1, "a refusal removes nothing");
    assert_eq!(
        store.remove_before(2, 100).unwrap(),
        2,
        "what it covers may go"
    );
}
