//! The sequencer's thread: the thin driver around [`Sequencer`]. It owns the channel, the clock, the store and
//! the broadcast, and only moves inputs in and outputs out; every decision is the sequencer's.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohost_proto::{Envelope, Reply};
use cohost_store::Store;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::sequencer::{Health, Sequencer, Submission};
use crate::{Error, Shared, driver};

/// The longest the thread sleeps without looking at the clock: a bound on how late an expiry can be when the
/// clock jumps (a wall clock set by NTP, a manual clock in tests) instead of running.
const TIMER_POLL_MS: u64 = 100;

pub(crate) type ReplySender = oneshot::Sender<Result<Reply, Error>>;

pub(crate) enum Job {
    Command(Submission<ReplySender>),
    Stop,
}

pub(crate) struct Writer {
    pub sequencer: Sequencer<ReplySender>,
    pub shared: Arc<Shared>,
    pub events: tokio::sync::broadcast::Sender<Arc<Vec<Envelope>>>,
    pub store: Arc<Store>,
    pub clock: Arc<dyn Clock>,
    /// Jobs taken from the channel per turn.
    pub take_max: usize,
}

/// Runs the driver on this thread until the engine stops. A panic in it is fail-stop too: the engine reports
/// it and answers every later command `unavailable`, rather than leaving callers waiting.
pub(crate) fn run(mut writer: Writer, jobs: Receiver<Job>) {
    let shared = writer.shared.clone();
    let Err(panic) = catch_unwind(AssertUnwindSafe(|| writer.run(&jobs))) else {
        shared.finished();
        return;
    };
    let cause = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let cause = format!("the sequencer panicked: {cause}");
    tracing::error!(%cause, "the engine stops taking writes");
    shared.fail(cause.clone());
    // Callers whose answers were lost in the unwinding wait for this report (`Shared::lost_answer`).
    drop(writer);
    for job in jobs.iter() {
        match job {
            Job::Command(submission) => {
                let _ = submission.reply_to.send(Err(Error::Stopped {
                    cause: cause.clone(),
                }));
            }
            Job::Stop => break,
        }
    }
    shared.finished();
}

impl Writer {
    fn run(&mut self, jobs: &Receiver<Job>) {
        let mut arrived = Vec::with_capacity(self.take_max + 1);
        let mut stopping = false;
        while !stopping {
            match jobs.recv_timeout(self.wait()) {
                Ok(job) => arrived.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            arrived.extend(jobs.try_iter().take(self.take_max));
            if arrived.iter().any(|job| matches!(job, Job::Stop)) {
                // Drain what was queued before the stop; `execute` refuses new work once closed is set.
                arrived.extend(jobs.try_iter());
                stopping = true;
            }
            // The clock is read after the jobs arrived, so a caller that moved the clock before sending a
            // command finds the command decided at that time or later. Due invitations go first: a command
            // decided now never sees one still pending.
            let now = self.clock.now_ms();
            self.sequencer.handle_timeout(now);
            for job in arrived.drain(..) {
                if let Job::Command(submission) = job {
                    driver::admit(&mut self.sequencer, &self.store, now, submission);
                }
            }
            self.write_path();
            if let Some(request) = self.sequencer.poll_snapshot() {
                driver::snapshot(&mut self.sequencer, request, &self.store, &self.shared.read);
            }
            driver::evict(&mut self.sequencer, &self.store, &self.shared.read);
            if let Health::Failed { cause } = self.sequencer.health() {
                self.shared.fail(cause.clone());
            }
            self.answer();
        }
        self.stop();
    }

    fn wait(&self) -> Duration {
        let now = self.clock.now_ms();
        let until_due = self
            .sequencer
            .poll_timeout()
            .map_or(TIMER_POLL_MS, |due| due.saturating_sub(now));
        Duration::from_millis(until_due.min(TIMER_POLL_MS))
    }

    /// Decide → flush → ack → publish, batch after batch, until the queue is empty.
    fn write_path(&mut self) {
        while let Some(batch) = self.sequencer.poll_batch() {
            let started = Instant::now();
            let durable =
                driver::commit(&mut self.sequencer, &batch, &self.store, &self.shared.read).is_ok();
            if durable {
                self.shared.stats.record_batch(
                    batch.envelopes.len(),
                    batch.commands,
                    started.elapsed(),
                );
            } else if let Health::Failed { cause } = self.sequencer.health() {
                // Before any caller hears of it, so none can find the engine still serving.
                self.shared.fail(cause.clone());
            }
            self.answer();
            if durable {
                // No receiver is fine: subscribers catch up from the log.
                let _ = self.events.send(Arc::new(batch.envelopes));
            }
        }
        self.answer();
    }

    fn answer(&mut self) {
        while let Some((reply_to, answer)) = self.sequencer.poll_reply() {
            let outcome = driver::resolve(answer, &self.store);
            self.shared.stats.record_outcome(&outcome);
            let _ = reply_to.send(outcome);
        }
    }

    /// The last snapshot and flush; nothing is written after a failure.
    fn stop(&mut self) {
        if *self.sequencer.health() != Health::Serving {
            return;
        }
        if let Some(request) = self.sequencer.snapshot_now() {
            driver::snapshot(&mut self.sequencer, request, &self.store, &self.shared.read);
        }
        if let Err(error) = self.store.flush() {
            tracing::error!(%error, "final flush failed");
        }
    }
}
