//! A snapshot's large values stay apart from the log: appends after a snapshot write what they append, not
//! the snapshot again. (In one sled tree a snapshot chunk shared the leaf at the log's tail, and sled wrote
//! that whole leaf out again every few appends.) Alone in its binary: it counts the process's written bytes.

mod common;

use cohost_store::Store;
use common::{LogBuilder, room_id};

/// Bytes this process has handed to `write` and its kin so far.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("Linux's /proc/self/io");
    io.lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a wchar line")
}

#[test]
fn appends_after_a_large_snapshot_do_not_write_it_again() {
    const SNAPSHOT_BYTES: usize = 600 << 10;
    const APPENDS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = LogBuilder::new();
    let created = log.room_created("stage", "a room");
    store.append(&[created], &[]).unwrap();
    let room = vec![7u8; SNAPSHOT_BYTES];
    store
        .write_snapshot(log.last_seq(), &[(room_id("stage"), room)])
        .unwrap();
    store.flush().unwrap();

    let before = written_bytes();
    for n in 0..APPENDS {
        let event = log.invitation_created("stage", &format!("guest-{n}"));
        store.append(&[event], &[]).unwrap();
    }
    let per_append = (written_bytes() - before) / APPENDS;
    // An append writes its record and sled's framing: a few hundred bytes, and now and then a leaf of the
    // log. Writing the snapshot again every few appends costs tens of kilobytes each.
    assert!(
        per_append < 8 << 10,
        "{per_append} bytes written per append of one small event"
    );
}
