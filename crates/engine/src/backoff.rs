//! Capped exponential backoff for the followers of the log that retry (the NATS relay, the LiveKit revoker, the
//! NATS subscriber's reads, cohostd's webhook deliveries): each failure doubles the wait, up to a cap; a
//! success starts over.

use std::time::Duration;

use tokio::sync::watch;

/// Capped exponential backoff for a follower of the log that retries (the NATS relay, the LiveKit revoker,
/// the NATS subscriber's reads, webhook deliveries): each failure doubles the wait, up to a cap; a success
/// starts over. No jitter of its own: a follower that retries beside others (a webhook delivery) spreads the
/// waits itself.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// The first wait of [`Backoff::new`].
    pub const FIRST: Duration = Duration::from_millis(50);

    /// 50 ms, doubling up to `max`.
    pub fn new(max: Duration) -> Self {
        Self::between(Self::FIRST, max)
    }

    /// `first`, doubling up to `max` (at least `first`).
    pub fn between(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The wait before the next try; the one after it is twice as long, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next wait; `false` if `stopped` turned true first or meanwhile.
    pub async fn sleep_unless_stopped(&mut self, stopped: &mut watch::Receiver<bool>) -> bool {
        let wait = self.next_wait();
        tokio::select! {
            _ = tokio::time::sleep(wait) => !*stopped.borrow(),
            _ = stopped.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(300));
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Backoff::FIRST);
    }
}
