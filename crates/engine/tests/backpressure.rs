//! A full queue answers `unavailable` at once instead of growing; shutdown drains what was queued; a stopped
//! engine refuses new work.

mod support;

use std::sync::{Arc, Condvar, Mutex};

use cohost_engine::{Config, Engine, Error, ManualClock};
use cohost_proto::{ErrorCode, Reply};
use cohost_store::MemoryBackend;
use support::*;

/// `by` runs `command`, once the future is polled.
fn execute(
    engine: &Engine,
    by: String,
    command: cohost_proto::Command,
) -> impl Future<Output = Result<Reply, Error>> + use<> {
    let engine = engine.clone();
    async move {
        engine
            .execute(actor(&by), command, Default::default())
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_unavailable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut config = config(dir.path(), &clock);
    config.queue_max = 4;
    let engine = Engine::open(config).unwrap();
    engine
        .execute(actor("alice"), create("stage"), Default::default())
        .await
        .unwrap();
    engine
        .execute(actor("alice"), go_live("stage"), Default::default())
        .await
        .unwrap();
    let attempts: Vec<_> = (0..2_000)
        .map(|n| tokio::spawn(execute(&engine, format!("fan-{n}"), request("stage"))))
        .collect();
    let mut accepted = 0;
    let mut unavailable = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(Error::QueueFull) => unavailable += 1,
            // Past 32 pending requests the room itself refuses.
            Err(e) => assert_eq!(e.code(), ErrorCode::ResourceExhausted, "{e}"),
        }
    }
    assert!(
        unavailable > 0,
        "a queue of 4 under 2000 concurrent commands must refuse some"
    );
    assert!(accepted > 0 && accepted <= 32);
    assert_eq!(engine.stats().queue_full, unavailable);
    assert_eq!(
        engine.last_seq(),
        2 + accepted,
        "every accepted command, and only those, appended"
    );
    engine.shutdown().await;
}

/// A gate that writes wait at while it is closed: the sequencer is held inside a batch, so commands pile up in
/// the queue behind it.
#[derive(Debug, Clone, Default)]
struct Gate(
    Arc<(Mutex<bool>, Condvar)>,
    Arc<std::sync::atomic::AtomicUsize>,
);

impl Gate {
    /// Writes that reached the gate so far.
    fn reached(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self, closed: bool) {
        *self.0.0.lock().unwrap() = closed;
        self.0.1.notify_all();
    }

    fn pass(&self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (closed, opened) = &*self.0;
        let _open = opened
            .wait_while(closed.lock().unwrap(), |closed| *closed)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_and_then_refuses() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (disk, gate) = (MemoryBackend::new(), Gate::default());
    disk.before_write({
        let gate = gate.clone();
        move || gate.pass()
    });
    let open = || {
        let config = Config::new("unused").with_clock(clock.clone());
        Engine::open(config.with_backend(Arc::new(disk.clone()))).unwrap()
    };
    let engine = open();
    engine
        .execute(actor("alice"), create("first"), Default::default())
        .await
        .unwrap();
    // The sequencer takes the next command and waits inside its write; 200 more queue up behind it.
    let reached = gate.reached();
    gate.set(true);
    let held = tokio::spawn({
        let engine = engine.clone();
        async move {
            engine
                .execute(actor("alice"), create("held"), Default::default())
                .await
        }
    });
    // The held command must be inside its write before the others queue and the stop begins: a task spawned
    // is not yet running, and on a loaded machine the stop could otherwise come first.
    while gate.reached() == reached {
        tokio::task::yield_now().await;
    }
    let mut queued: Vec<_> = (0..200)
        .map(|n| {
            // A host each: one host may hold only so many open rooms.
            Box::pin(execute(
                &engine,
                format!("host-{n}"),
                create(&format!("room-{n}")),
            ))
        })
        .collect();
    for command in &mut queued {
        // The first poll puts the command on the queue.
        assert!(futures::poll!(command.as_mut()).is_pending());
    }
    let stopping = tokio::spawn({
        let engine = engine.clone();
        async move { engine.shutdown().await }
    });
    while !engine.is_closed() {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        engine
            .execute(actor("alice"), create("late"), Default::default())
            .await,
        Err(Error::ShuttingDown)
    ));
    gate.set(false);
    let held = held.await.unwrap();
    assert!(matches!(held, Ok(Reply::Room(_))), "{held:?}");
    for (n, command) in queued.into_iter().enumerate() {
        match command.await {
            Ok(Reply::Room(room)) => assert_eq!(room.room_id.as_str(), format!("room-{n}")),
            other => panic!("room-{n} was queued before the stop, so it is drained: {other:?}"),
        }
    }
    stopping.await.unwrap();
    let engine = open();
    assert_eq!(engine.last_seq(), 202, "every drained command survives");
    assert!(engine.room(&room("late")).is_err());
    engine.shutdown().await;
}
