//! A second opener of a data directory is refused with a clear error while the first holds it, whether it is
//! in the same process or another one, and the refusal changes nothing for the first.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cohost_proto::Envelope;
use cohost_proto::limits::READ_EVENTS_MAX;
use cohost_store::{BackendError, Store, StoreError};
use common::{LogBuilder, record_for};

/// Set only in the child process, to the directory it must try to open.
const CHILD_DIR_ENV: &str = "COHOST_STORE_SECOND_OPENER_DIR";
/// Prefixes the child's one line of result on its stdout.
const CHILD_RESULT: &str = "second-opener result: ";

fn append_rooms(store: &Store, log: &mut LogBuilder, count: usize) -> Vec<Envelope> {
    (0..count)
        .map(|_| {
            let seq = log.last_seq() + 1;
            let event = log.room_created(&format!("room-{seq}"), "Opening night");
            store
                .append(std::slice::from_ref(&event), &[record_for(&event)])
                .unwrap();
            event
        })
        .collect()
}

/// The first opener of a fresh directory, with `rooms` rooms written.
struct First {
    dir: tempfile::TempDir,
    /// The directory as error messages show it.
    shown: String,
    log: LogBuilder,
    store: Store,
    written: Vec<Envelope>,
}

fn first_opener(rooms: usize) -> First {
    let dir = tempfile::tempdir().unwrap();
    let shown = dir.path().display().to_string();
    let mut log = LogBuilder::new();
    let store = Store::open(dir.path()).unwrap();
    let written = append_rooms(&store, &mut log, rooms);
    First {
        dir,
        shown,
        log,
        store,
        written,
    }
}

#[test]
fn a_second_open_in_the_same_process_is_locked() {
    let First {
        dir,
        shown,
        mut log,
        store: first,
        mut written,
    } = first_opener(2);

    let started = Instant::now();
    let err = Store::open(dir.path()).unwrap_err();
    // `open` retries a held lock for a moment (a closing handle of this process may still hold it), but the
    // wait is bounded.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(&err, StoreError::Backend(BackendError::Locked(path)) if *path == shown),
        "expected Locked({shown:?}), got {err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("the data directory {shown} is in use by another process")
    );

    // The refused opener changed nothing: the first keeps appending and reading.
    written.extend(append_rooms(&first, &mut log, 2));
    assert_eq!(first.read_events(1, READ_EVENTS_MAX).unwrap(), written);
    drop(first);

    let reopened = Store::open(dir.path()).expect("the lock goes with the first store");
    assert_eq!(reopened.read_events(1, READ_EVENTS_MAX).unwrap(), written);
}

/// `open_error` in backend.rs recognizes the lock by sled's wording; this pins that wording to the sled in use.
#[test]
fn sled_words_a_held_lock_as_the_store_expects() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = sled::Config::new()
        .path(dir.path())
        .open()
        .expect_err("sled refuses a second opener");
    let text = err.to_string();
    assert!(
        text.starts_with("IO error: could not acquire lock on ") && text.contains("WouldBlock"),
        "sled's lock error now reads: {text}"
    );
}

/// Runs `child_process_opener` in a new process of this test binary and returns its result line.
fn open_in_child(dir: &Path) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_opener", "--nocapture"])
        .env(CHILD_DIR_ENV, dir)
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {output:?}");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(CHILD_RESULT))
        .unwrap_or_else(|| panic!("the child printed no result: {stdout}"))
        .to_owned()
}

/// The child's side of `a_second_process_is_locked_out_until_the_first_closes`: it opens the directory it is
/// given and prints what happened. Run without `COHOST_STORE_SECOND_OPENER_DIR`, it has nothing to do.
#[test]
fn child_process_opener() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let result = match Store::open(Path::new(&dir)) {
        Ok(store) => format!("opened, last seq {}", store.verify_log().unwrap().last_seq),
        Err(err) => format!("{err:?} / {err}"),
    };
    println!("{CHILD_RESULT}{result}");
}

#[test]
fn a_second_process_is_locked_out_until_the_first_closes() {
    let First {
        dir,
        shown,
        store: first,
        written,
        ..
    } = first_opener(3);

    assert_eq!(
        open_in_child(dir.path()),
        format!(
            "Backend(Locked({shown:?})) / the data directory {shown} is in use by another process"
        )
    );
    assert_eq!(first.read_events(1, READ_EVENTS_MAX).unwrap(), written);

    drop(first);
    assert_eq!(open_in_child(dir.path()), "opened, last seq 3");
}
