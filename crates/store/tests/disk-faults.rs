//! The store on a disk that fails: a failed write changes nothing, a failed flush stops every later write, a
//! crash keeps only what was flushed (a torn, never-committed tail is taken back at open), and what a failed
//! flush left in the cache is written again when the store is reopened after a process restart.

mod common;

use cohost_store::{Crash, MemoryBackend, Store, StoreError};
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

/// What goes wrong while the fourth room is appended to a log of three.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Nothing,
    FailWrite,
    FailFlush,
    /// The process dies in the flush: the write is in the cache, not on the disk.
    DieInFlush,
}

/// How the store comes back.
#[derive(Debug, Clone, Copy)]
enum Reboot {
    /// The process restarts on the same machine: the cache is intact.
    Restart,
    /// The machine crashes, and its committed mark loses its last `n` writes.
    Crash(Crash, usize),
}

/// Appends room 4 with `fault`, reboots with `reboot`, and checks the log that reopens: it ends at
/// `ends_at`, opening confirmed `confirmed` records and took back a torn record at `torn`; every record has
/// its command index, and the next append continues it.
fn check(fault: Fault, reboot: Reboot, ends_at: u64, confirmed: u64, torn: Option<u64>) {
    let case = format!("{fault:?} then {reboot:?}");
    let backend = MemoryBackend::new();
    let store = open(&backend);
    let mut log = LogBuilder::new();
    append_rooms(&store, &mut log, 3);
    match fault {
        Fault::Nothing => {}
        Fault::FailWrite => backend.fail_writes(1),
        Fault::FailFlush => backend.fail_flushes(1),
        Fault::DieInFlush => backend.die_at_next_flush(),
    }
    let event = log.room_created("room-4", "show");
    let appended = store.append(std::slice::from_ref(&event), &[record_for(&event)]);
    assert_eq!(
        appended.is_ok(),
        matches!(fault, Fault::Nothing),
        "{case}: {appended:?}"
    );
    drop(store);
    match reboot {
        Reboot::Restart => backend.restart(),
        Reboot::Crash(how, marks_lost) => {
            backend.crash(how);
            backend.set_mark_back(marks_lost);
        }
    }
    let store = open(&backend);
    let opened = store.opened();
    assert_eq!(
        (last_seq(&store), opened.confirmed, opened.torn_dropped),
        (ends_at, confirmed, torn),
        "{case}: the log's end, the records confirmed, the torn record"
    );
    let indexed: Vec<u64> = store.command_index_rev().map(|i| i.unwrap().0).collect();
    assert_eq!(
        indexed,
        (1..=ends_at).rev().collect::<Vec<_>>(),
        "{case}: the command index"
    );
    append_rooms(&store, &mut LogBuilder::after(ends_at), 1);
    drop(store);
    // Whatever opening took in is durable now: a crash that keeps nothing unflushed keeps it.
    backend.crash(Crash::LoseUnflushed);
    assert_eq!(
        last_seq(&open(&backend)),
        ends_at + 1,
        "{case}: durable after opening"
    );
}

#[test]
fn each_fault_and_reboot_leaves_exactly_the_log_that_was_flushed() {
    use Crash::{KeepUnflushed, LoseUnflushed, TearLast};
    use Fault::{DieInFlush, FailFlush, FailWrite, Nothing};
    use Reboot::Restart;
    let crash = Reboot::Crash;
    let cases = [
        // A failed write changes nothing.
        (FailWrite, Restart, 3, 0, None),
        // A failed flush's write is gone after a crash, or still in the cache after a restart: then opening
        // writes it again, and it is durable.
        (FailFlush, crash(LoseUnflushed, 0), 3, 0, None),
        (FailFlush, Restart, 4, 1, None),
        // A death in the flush: the crash keeps a prefix of what was not flushed, or tears the last write,
        // which opening takes back since it lies past the committed mark.
        (DieInFlush, crash(LoseUnflushed, 0), 3, 0, None),
        (DieInFlush, crash(KeepUnflushed(0), 0), 3, 0, None),
        (DieInFlush, crash(KeepUnflushed(1), 0), 4, 1, None),
        (DieInFlush, crash(TearLast, 0), 3, 0, Some(4)),
        (DieInFlush, Restart, 4, 1, None),
        // A mark set back by a crash only costs writing those records again.
        (Nothing, crash(LoseUnflushed, 2), 4, 2, None),
    ];
    for (fault, reboot, last_seq, confirmed, torn) in cases {
        check(fault, reboot, last_seq, confirmed, torn);
    }
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
        store.write_snapshot(2, &[]),
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

#[test]
fn after_a_failed_flush_the_next_open_drops_the_snapshots_the_cache_may_have_made_up() {
    let backend = MemoryBackend::new();
    let store = open(&backend);
    append_rooms(&store, &mut LogBuilder::new(), 2);
    let room = common::room_id("room-1");
    store
        .write_snapshot(2, &[(room.clone(), b"room 1 at seq 2".to_vec())])
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
