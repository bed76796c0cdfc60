//! What a follower of the log (the NATS relay, the LiveKit revoker) shows while it runs: following or
//! retrying, its last error and when it happened, how many times it retried, and the last seq it handled.
//!
//! The follower's task writes a [`FollowerStatus`]; anyone holding it reads a [`FollowerSnapshot`] for the price
//! of a small lock. No IO here: the time of a failure comes in as an argument, and whether to log it comes out
//! as a decision, so a follower that keeps failing warns on the first failure and then at most once a minute.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// After the first failure in a row, the longest a follower that keeps failing stays quiet in the log.
pub const FOLLOWER_WARN_EVERY_MS: u64 = 60_000;

/// What a follower is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerState {
    /// Handling the log as it grows: the last attempt succeeded.
    Following,
    /// The last attempt failed; it is waiting to try again.
    Retrying,
    /// Stopped: it handles nothing more.
    Stopped,
}

impl FollowerState {
    /// The state's name in `/healthz`: `following`, `retrying` or `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Following => "following",
            Self::Retrying => "retrying",
            Self::Stopped => "stopped",
        }
    }
}

/// A failure a follower retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerError {
    /// What failed, for people.
    pub message: String,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

/// A follower's status at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerSnapshot {
    /// The follower's name, as `/healthz` shows it (`relay`, `revoker`, `webhook:<id>`).
    pub name: &'static str,
    /// Following, retrying or stopped.
    pub state: FollowerState,
    /// Every event up to this seq is handled (for the relay: confirmed by NATS).
    pub handled_seq: u64,
    /// Failures since the follower started; each one is retried.
    pub retries: u64,
    /// The last failure, kept after the follower recovers.
    pub last_error: Option<FollowerError>,
}

impl FollowerSnapshot {
    /// The events of a log that ends at `last_seq` that the follower has not handled yet.
    pub fn lag(&self, last_seq: u64) -> u64 {
        last_seq.saturating_sub(self.handled_seq)
    }
}

/// See the module docs. Shared (behind an `Arc`) by the follower's task and its readers.
#[derive(Debug)]
pub struct FollowerStatus {
    name: &'static str,
    handled_seq: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: FollowerState,
    retries: u64,
    last_error: Option<FollowerError>,
    /// Failures in a row since the last success.
    streak: u64,
    /// When the current streak last logged a warning.
    warned_at_ms: u64,
}

impl FollowerStatus {
    /// A follower called `name` that has handled everything up to `handled_seq`, following.
    pub fn new(name: &'static str, handled_seq: u64) -> Self {
        Self {
            name,
            handled_seq: AtomicU64::new(handled_seq),
            inner: Mutex::new(Inner {
                state: FollowerState::Following,
                retries: 0,
                last_error: None,
                streak: 0,
                warned_at_ms: 0,
            }),
        }
    }

    /// The name it was created with.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Every event up to this seq is handled.
    pub fn handled_seq(&self) -> u64 {
        self.handled_seq.load(Ordering::Relaxed)
    }

    /// Every event up to `seq` is handled.
    pub fn handled(&self, seq: u64) {
        self.handled_seq.store(seq, Ordering::Relaxed);
    }

    /// An attempt succeeded: following again. Returns the failures in a row this ends (0 if there were none),
    /// so the follower can say it recovered.
    pub fn succeeded(&self) -> u64 {
        let mut inner = self.lock();
        if inner.state == FollowerState::Retrying {
            inner.state = FollowerState::Following;
        }
        std::mem::take(&mut inner.streak)
    }

    /// An attempt failed at `at_ms` (ms since the epoch) and will be retried. Returns the failures in a row so
    /// far when this one should be logged (the first of a streak, then at most one every
    /// [`FOLLOWER_WARN_EVERY_MS`]), `None` when it should stay quiet.
    pub fn failed(&self, message: impl Into<String>, at_ms: u64) -> Option<u64> {
        let mut inner = self.lock();
        if inner.state != FollowerState::Stopped {
            inner.state = FollowerState::Retrying;
        }
        inner.retries += 1;
        inner.streak += 1;
        inner.last_error = Some(FollowerError {
            message: message.into(),
            at_ms,
        });
        let due = at_ms.saturating_sub(inner.warned_at_ms) >= FOLLOWER_WARN_EVERY_MS;
        if inner.streak == 1 || due {
            inner.warned_at_ms = at_ms;
            return Some(inner.streak);
        }
        None
    }

    /// Records a failure that will be retried (`what` failed with `error`), and logs it as [`Self::failed`]
    /// says when.
    pub fn retrying(&self, what: &str, error: &dyn std::fmt::Display, at_ms: u64) {
        let message = format!("{what}: {error}");
        if let Some(in_a_row) = self.failed(message.as_str(), at_ms) {
            tracing::warn!(follower = self.name, error = %message, in_a_row, "follower failed; retrying");
        }
    }

    /// Records a success, and logs it when it ends a streak of failures.
    pub fn recovered(&self) {
        let failures = self.succeeded();
        if failures > 0 {
            tracing::info!(follower = self.name, failures, "follower following again");
        }
    }

    /// The follower ended: it handles nothing more.
    pub fn stopped(&self) {
        self.lock().state = FollowerState::Stopped;
    }

    /// The status now, copied under a small lock (the error's message is cloned).
    pub fn snapshot(&self) -> FollowerSnapshot {
        let inner = self.lock();
        FollowerSnapshot {
            name: self.name,
            state: inner.state,
            handled_seq: self.handled_seq(),
            retries: inner.retries,
            last_error: inner.last_error.clone(),
        }
    }

    /// The lock never panics a reader: the fields are plain values, consistent whenever a panic could strike.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_turns_retrying_and_a_success_following_again_keeping_the_error() {
        let status = FollowerStatus::new("relay", 7);
        assert_eq!(status.snapshot().state, FollowerState::Following);
        assert_eq!(status.failed("the log is damaged", 1_000), Some(1));
        let retrying = status.snapshot();
        assert_eq!(
            (retrying.state, retrying.retries, retrying.handled_seq),
            (FollowerState::Retrying, 1, 7)
        );
        assert_eq!(status.succeeded(), 1);
        status.handled(9);
        let following = status.snapshot();
        assert_eq!(following.state, FollowerState::Following);
        assert_eq!(following.lag(12), 3);
        let error = FollowerError {
            message: "the log is damaged".into(),
            at_ms: 1_000,
        };
        assert_eq!(following.last_error, Some(error));
        status.stopped();
        status.failed("late", 2_000);
        assert_eq!(status.snapshot().state, FollowerState::Stopped);
    }

    #[test]
    fn a_streak_of_failures_logs_its_first_then_once_a_minute() {
        let status = FollowerStatus::new("revoker", 0);
        let logged: Vec<Option<u64>> = [0, 5_000, 59_999, 60_000, 65_000, 120_000]
            .into_iter()
            .map(|at_ms| status.failed("LiveKit is down", 1_000 + at_ms))
            .collect();
        assert_eq!(logged, [Some(1), None, None, Some(4), None, Some(6)]);
        assert_eq!(status.succeeded(), 6);
        assert_eq!(
            status.failed("again", 122_000),
            Some(1),
            "a new streak logs at once"
        );
        assert_eq!(status.snapshot().retries, 7);
    }
}
