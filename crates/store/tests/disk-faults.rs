//! The store on a disk that fails: a failed write changes nothing, a failed flush stops every later write, a
//! crash keeps only what was flushed (a torn, never-committed tail is taken back at open), and what a failed
//! flush left in the cache is written again when the store is reopened after a process restart.

mod common;

use cohost_store::{Backend, BackendError, Crash, Entries, MemoryBackend, Op, Store, StoreError};
use common::{LogBuilder, record_for};

fn open(backend: &MemoryBackend) -> Store {
    Store::with_backend(Box::new(backend.clone())).expect("the store opens")
}

/// Appends `n` one-event batches, each a new room.
fn append_rooms(store: &Store, log: &mut LogBuilder, n: usize) {
    for _ in 0..n {
        let seq = log.last_seq() + 1;
        let event = log.room_created(&format!("room-{seq}"), "show");
        store
            .append(std::slice::from_ref(&event), &[record_for(&event)])
            .expect("the append succeeds");
    }
}

fn last_seq(store: &Store) -> u64 {
    store.verify_log().expect("the log is whole").last_seq
}

#[test]
fn a_failed_write_changes_nothing_and_the_store_goes_on() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    let mut log = LogBuilder::new();
    append_rooms(&store, &mut log, 2);
    backend.fail_writes(1);
    let event = LogBuilder::after(2).room_created("room-3", "show");
    let failed = store.append(std::slice::from_ref(&event), &[]);
    assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
    assert_eq!(last_seq(&store), 2);
    store.append(std::slice::from_ref(&event), &[]).unwrap();
    assert_eq!(last_seq(&store), 3);
}

#[test]
fn a_failed_flush_refuses_every_later_write_until_reopened() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    let mut log = LogBuilder::new();
    append_rooms(&store, &mut log, 2);
    backend.fail_flushes(1);
    let event = log.room_created("room-3", "show");
    let failed = store.append(std::slice::from_ref(&event), &[]);
    assert!(
        matches!(failed, Err(StoreError::FlushFailed { .. })),
        "{failed:?}"
    );
    assert!(
        store
            .flush_failure()
            .unwrap()
            .contains("injected flush failure")
    );
    let later = log.room_created("room-4", "show");
    for refused in [
        store.append(std::slice::from_ref(&later), &[]),
        store.set_cursor("nats", 1),
        store.write_snapshots(2, &[]),
        store.flush(),
    ] {
        assert!(
            matches!(refused, Err(StoreError::FlushFailed { .. })),
            "{refused:?}"
        );
    }
    // The unflushed batch is readable until the machine crashes, and may be gone after it.
    assert_eq!(last_seq(&store), 3);
    drop(store);
    backend.crash(Crash::LoseUnflushed);
    let store = open(&backend);
    assert_eq!(
        last_seq(&store),
        2,
        "the failed flush's write did not survive"
    );
    append_rooms(&store, &mut LogBuilder::after(2), 1);
}

#[test]
fn a_restart_after_a_failed_flush_writes_what_the_cache_still_shows_again() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    let mut log = LogBuilder::new();
    append_rooms(&store, &mut log, 2);
    backend.fail_flushes(1);
    let event = log.room_created("room-3", "show");
    assert!(store.append(std::slice::from_ref(&event), &[]).is_err());
    drop(store);
    // The process restarts, the machine does not: the cache still shows batch 3, which no flush wrote.
    backend.restart();
    let store = open(&backend);
    assert_eq!(
        store.opened().confirmed,
        1,
        "the record past the mark is written again"
    );
    assert_eq!(last_seq(&store), 3);
    drop(store);
    backend.crash(Crash::LoseUnflushed);
    assert_eq!(last_seq(&open(&backend)), 3, "and now it is durable");
}

#[test]
fn a_mark_set_back_by_a_crash_only_costs_a_rewrite() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    append_rooms(&store, &mut LogBuilder::new(), 4);
    drop(store);
    backend.crash(Crash::LoseUnflushed);
    backend.set_mark_back(2);
    let store = open(&backend);
    assert_eq!(store.opened().confirmed, 2);
    assert_eq!(last_seq(&store), 4);
}

#[test]
fn a_crash_keeps_what_was_flushed_and_a_prefix_of_the_rest() {
    for (how, expected) in [
        (Crash::LoseUnflushed, 2),
        (Crash::KeepUnflushed(0), 2),
        (Crash::KeepUnflushed(1), 3),
    ] {
        let backend = MemoryBackend::new();
        let store = open(&backend);
        let mut log = LogBuilder::new();
        append_rooms(&store, &mut log, 2);
        // A write the crash catches before its flush, as the sequencer's batch between write and flush.
        let event = log.room_created("room-3", "show");
        let unflushed = Store::with_backend(Box::new(NoFlush(backend.clone()))).unwrap();
        unflushed.append(std::slice::from_ref(&event), &[]).unwrap();
        drop((store, unflushed));
        backend.crash(how);
        assert_eq!(last_seq(&open(&backend)), expected, "{how:?}");
    }
}

#[test]
fn a_torn_tail_past_the_committed_mark_is_taken_back_at_open() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    let mut log = LogBuilder::new();
    append_rooms(&store, &mut log, 3);
    let event = log.room_created("room-4", "show");
    let unflushed = Store::with_backend(Box::new(NoFlush(backend.clone()))).unwrap();
    unflushed
        .append(std::slice::from_ref(&event), &[record_for(&event)])
        .unwrap();
    drop((store, unflushed));
    backend.crash(Crash::TearLast);
    let store = open(&backend);
    assert_eq!(
        last_seq(&store),
        3,
        "the torn record is gone, the rest is whole"
    );
    let indexed: Vec<u64> = store.command_index_rev().map(|i| i.unwrap().0).collect();
    assert_eq!(indexed, vec![3, 2, 1], "with its command index");
    // Its seq is free for the next append.
    append_rooms(&store, &mut LogBuilder::after(3), 1);
    assert_eq!(last_seq(&store), 4);
}

#[test]
fn a_damaged_committed_record_is_never_taken_back() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    append_rooms(&store, &mut LogBuilder::new(), 3);
    drop(store);
    let mut key = vec![b'L'];
    key.extend_from_slice(&3u64.to_be_bytes());
    assert!(backend.damage(&key, |value| value.truncate(value.len() / 2)));
    match Store::with_backend(Box::new(backend.clone())) {
        Err(StoreError::Corrupt { seq: 3, .. }) => {}
        other => panic!("expected the committed record 3 reported corrupt, got {other:?}"),
    }
}

/// A backend whose flush does nothing and records no mark: a write that a crash catches before its flush.
#[derive(Debug)]
struct NoFlush(MemoryBackend);

impl Backend for NoFlush {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.0.get(key)
    }
    fn range(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        self.0.range(from, to)
    }
    fn range_rev(&self, from: &[u8], to: &[u8]) -> Entries<'_> {
        self.0.range_rev(from, to)
    }
    fn write(&self, ops: Vec<Op>) -> Result<(), BackendError> {
        self.0.write(ops)
    }
    fn flush(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn committed(&self) -> Option<u64> {
        self.0.committed()
    }
}

#[test]
fn after_a_failed_flush_the_next_open_drops_the_snapshots_the_cache_may_have_made_up() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    append_rooms(&store, &mut LogBuilder::new(), 2);
    let room = common::room_id("room-1");
    store
        .write_snapshots(2, &[(room.clone(), b"room 1 at seq 2".to_vec())])
        .unwrap();
    backend.fail_flushes(1);
    assert!(store.flush().is_err());
    drop(store);
    // On the same machine the snapshot still reads back; nothing says it ever reached the disk.
    backend.restart();
    let store = open(&backend);
    assert!(store.opened().after_flush_failure);
    assert_eq!(
        store.snapshots().unwrap(),
        cohost_store::Snapshots::default()
    );
    assert_eq!(last_seq(&store), 2, "the log itself is whole");
    drop(store);
    let store = open(&backend);
    assert!(!store.opened().after_flush_failure, "the flag was cleared");
}
