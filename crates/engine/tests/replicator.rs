//! In cluster mode every batch goes to the replicated log before the local store: a batch is acknowledged
//! only once the replicator took it, one it refused changes nothing and the engine goes on, and once it stops
//! taking batches (another node took the partition) the engine stops, acknowledging nothing more.

mod support;

use std::sync::{Arc, Mutex};

use cohost_engine::{Engine, Error, Health, ManualClock};
use cohost_proto::ErrorCode;
use cohost_store::{ReplicateError, Replicator};
use support::*;

/// Takes every batch (recording its first seq), refuses, or stops, as the test sets it.
#[derive(Default)]
struct Fake {
    taken: Mutex<Vec<u64>>,
    answer: Mutex<Option<ReplicateError>>,
}

impl Replicator for Fake {
    fn replicate(&self, first_seq: u64, record: &[u8]) -> Result<(), ReplicateError> {
        assert!(!record.is_empty());
        if let Some(error) = self.answer.lock().unwrap().clone() {
            return Err(error);
        }
        self.taken.lock().unwrap().push(first_seq);
        Ok(())
    }
}

fn open(dir: &std::path::Path, fake: &Arc<Fake>) -> Engine {
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut config = config(dir, &clock);
    config.replicator = Some(fake.clone());
    Engine::open(config).unwrap()
}

async fn run(engine: &Engine, by: &str, command: cohost_proto::Command) -> Result<(), Error> {
    engine
        .execute(actor(by), command, Default::default())
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_once_replicated_and_a_refusal_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let engine = open(dir.path(), &fake);
    run(&engine, "alice", create("stage")).await.unwrap();
    run(&engine, "alice", go_live("stage")).await.unwrap();
    assert_eq!(*fake.taken.lock().unwrap(), [1, 2]);

    *fake.answer.lock().unwrap() = Some(ReplicateError::Refused("too large".into()));
    let refused = run(&engine, "alice", invite("stage", "bob"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Unavailable, "{refused}");
    assert_eq!(engine.health(), Health::Serving);
    assert_eq!(
        engine.room(&room("stage")).unwrap().version,
        2,
        "nothing of the refused batch"
    );

    *fake.answer.lock().unwrap() = None;
    run(&engine, "alice", invite("stage", "bob")).await.unwrap();
    // The refused batch's seq is used again: nothing was kept of it anywhere.
    assert_eq!(*fake.taken.lock().unwrap(), [1, 2, 3]);
    assert_eq!(engine.read_events(1, 10).unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replicator_stops_the_engine_and_nothing_more_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let engine = open(dir.path(), &fake);
    run(&engine, "alice", create("stage")).await.unwrap();
    let deposed = "partition 3: another writer; this writer is deposed";
    *fake.answer.lock().unwrap() = Some(ReplicateError::Stopped(deposed.into()));
    let refused = run(&engine, "alice", go_live("stage")).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Unavailable, "{refused}");
    match engine.health() {
        Health::Failed { cause } => assert!(cause.contains("deposed"), "{cause}"),
        Health::Serving => panic!("a deposed engine still serves"),
    }
    // Even if the replicator would take batches again, this engine appends nothing more.
    *fake.answer.lock().unwrap() = None;
    let later = run(&engine, "alice", go_live("stage")).await.unwrap_err();
    assert_eq!(later.code(), ErrorCode::Unavailable, "{later}");
    assert_eq!(*fake.taken.lock().unwrap(), [1]);
    assert_eq!(
        engine.read_events(1, 10).unwrap().len(),
        1,
        "the local log holds only what was replicated"
    );
    engine.shutdown().await;
}

/// The local store is a cache of the replicated log: when it fails to take a batch the log already holds, the
/// engine must not take the batch back and reuse its seqs (the log has spent them); it stops, acknowledging
/// nothing of the batch, and a new takeover reads the batch from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_write_that_fails_after_the_log_took_the_batch_stops_the_engine() {
    let fake = Arc::new(Fake::default());
    let disk = cohost_store::MemoryBackend::new();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut config = cohost_engine::Config::new("unused").with_clock(clock.clone());
    config.replicator = Some(fake.clone());
    let engine = Engine::open(config.with_backend(Arc::new(disk.clone()))).unwrap();
    run(&engine, "alice", create("stage")).await.unwrap();

    disk.fail_writes(1);
    let failed = run(&engine, "alice", go_live("stage")).await.unwrap_err();
    assert_eq!(failed.code(), ErrorCode::Unavailable, "{failed}");
    match engine.health() {
        Health::Failed { cause } => assert!(cause.contains("replicated log holds"), "{cause}"),
        Health::Serving => panic!("an engine whose cache lost a replicated batch still serves"),
    }
    let later = run(&engine, "alice", go_live("stage")).await.unwrap_err();
    assert_eq!(later.code(), ErrorCode::Unavailable, "{later}");
    assert_eq!(
        *fake.taken.lock().unwrap(),
        [1, 2],
        "seq 2 went to the log once, and no other batch was sent under it"
    );
    engine.shutdown().await;
}
