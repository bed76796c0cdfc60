//! Per-user quotas at the HTTP edge, so one token cannot take the daemon for itself: commands per second and
//! invitations per minute (token buckets, GCRA through `governor`), and live collections per user and in total.
//! A refusal is 429 `resource_exhausted` with `Retry-After`.
//!
//! These are per process: behind a load balancer over several daemons, each enforces them on its own share.
//! The quotas that need the whole deployment's state (open rooms per host, pending offers per candidate) are
//! rules of the core, decided by the sequencer. The NATS service, for trusted backends, has no rate limits.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohost_proto::{ServiceId, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::ApiError;

/// The numbers, each a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Commands one user may send per second, sustained; twice as many in a burst.
    pub commands_per_s: u32,
    /// Invitations and requests to join one user may make per minute (a burst of as many).
    pub invitations_per_min: u32,
    /// Live collections one user may hold open.
    pub streams_per_user: u32,
    /// Live collections open in all.
    pub streams_total: u32,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        Self {
            commands_per_s: 20,
            invitations_per_min: 30,
            streams_per_user: 8,
            streams_total: 3_072,
        }
    }
}

/// How long a refused caller is told to wait when only a state change can help (a stream closing).
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What the quotas refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Commands refused by a user's rate.
    pub commands: AtomicU64,
    /// Invitations refused by an inviter's rate.
    pub invitations: AtomicU64,
    /// Live collections refused at a user's cap.
    pub streams_per_user: AtomicU64,
    /// Live collections refused at the daemon's cap.
    pub streams_total: AtomicU64,
}

/// The quotas and what they hold.
pub struct Quotas {
    limits: QuotaLimits,
    commands: DefaultKeyedRateLimiter<Key>,
    invitations: DefaultKeyedRateLimiter<Key>,
    streams: Mutex<Streams>,
    /// What was refused so far, for `/metrics`.
    pub refusals: Refusals,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Whose bucket: a user's, or a service's (apart, so no user name can share a service's bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(UserId),
    Service(ServiceId),
}

#[derive(Debug, Default)]
struct Streams {
    by_user: HashMap<UserId, u32>,
    total: u32,
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least one")
}

impl Quotas {
    /// Quotas at `limits`, every user's buckets full. A user's bucket lives in memory until it refills.
    pub fn new(limits: QuotaLimits) -> Self {
        let commands = Quota::per_second(at_least_one(limits.commands_per_s))
            .allow_burst(at_least_one(limits.commands_per_s.saturating_mul(2)));
        let invitations = Quota::per_minute(at_least_one(limits.invitations_per_min));
        Self {
            limits,
            commands: DefaultKeyedRateLimiter::keyed(commands),
            invitations: DefaultKeyedRateLimiter::keyed(invitations),
            streams: Mutex::default(),
            refusals: Refusals::default(),
        }
    }

    /// The limits these quotas enforce.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    /// Takes one command from the user's bucket, and one invitation when the command opens an offer.
    pub fn command(&self, user: &UserId, opens_offer: bool) -> Result<(), ApiError> {
        self.take_command(&Key::User(user.clone()), opens_offer)
    }

    /// Takes one command from a service's bucket, at the users' rate (a service opens no offers).
    pub fn service_command(&self, service: &ServiceId) -> Result<(), ApiError> {
        self.take_command(&Key::Service(service.clone()), false)
    }

    fn take_command(&self, user: &Key, opens_offer: bool) -> Result<(), ApiError> {
        let per_second = format!("{} commands per second", self.limits.commands_per_s);
        take(&self.commands, user, &self.refusals.commands, || per_second)?;
        if opens_offer {
            let per_minute = || {
                let n = self.limits.invitations_per_min;
                format!("{n} invitations and requests per minute")
            };
            take(
                &self.invitations,
                user,
                &self.refusals.invitations,
                per_minute,
            )?;
        }
        Ok(())
    }

    /// Admits one more live collection for `user`; it counts until the guard is dropped.
    pub fn open_stream(self: &Arc<Self>, user: &UserId) -> Result<StreamGuard, ApiError> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.total >= self.limits.streams_total {
            self.refusals.streams_total.fetch_add(1, Ordering::Relaxed);
            let message = "the daemon holds as many live collections as it allows; retry later";
            return Err(ApiError::exhausted(message, STREAM_RETRY_AFTER));
        }
        let mine = streams.by_user.entry(user.clone()).or_default();
        if *mine >= self.limits.streams_per_user {
            self.refusals
                .streams_per_user
                .fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "this user already holds {} live collections; close one first",
                self.limits.streams_per_user
            );
            return Err(ApiError::exhausted(message, STREAM_RETRY_AFTER));
        }
        *mine += 1;
        streams.total += 1;
        Ok(StreamGuard {
            quotas: self.clone(),
            user: user.clone(),
        })
    }

    /// Forgets users whose buckets have refilled, so memory holds only recently active users.
    pub fn sweep(&self) {
        for limiter in [&self.commands, &self.invitations] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Users the buckets remember now.
    pub fn remembered(&self) -> usize {
        self.commands.len() + self.invitations.len()
    }
}

/// Sweeps `quotas` every `every` on the runtime, for as long as they are in use.
pub fn sweep_every(quotas: Arc<Quotas>, every: Duration) {
    let quotas = Arc::downgrade(&quotas);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(quotas) = quotas.upgrade() else {
                return;
            };
            quotas.sweep();
        }
    });
}

/// One token of `user`'s bucket, or a refusal (counted in `refused`) naming the quota and the wait.
fn take(
    limiter: &DefaultKeyedRateLimiter<Key>,
    user: &Key,
    refused: &AtomicU64,
    quota: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    limiter.check_key(user).map_err(|not_until| {
        refused.fetch_add(1, Ordering::Relaxed);
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::exhausted(
            format!("more than {} from this caller; retry later", quota()),
            wait,
        )
    })
}

/// An open live collection; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamGuard {
    quotas: Arc<Quotas>,
    user: UserId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = self
            .quotas
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        streams.total -= 1;
        if let Some(mine) = streams.by_user.get_mut(&self.user) {
            *mine -= 1;
            if *mine == 0 {
                streams.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohost_proto::ErrorCode;

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    #[test]
    fn buckets_refuse_past_their_burst_with_a_wait() {
        let quotas = Quotas::new(QuotaLimits {
            commands_per_s: 2,
            invitations_per_min: 3,
            ..QuotaLimits::default()
        });
        let (alice, bob) = (user("alice"), user("bob"));
        for _ in 0..3 {
            quotas.command(&alice, true).unwrap();
        }
        let refused = quotas.command(&alice, true).unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted);
        let wait = refused.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // The command bucket (burst 4) had one left; the invitation refusal took it.
        let refused = quotas.command(&alice, false).unwrap_err();
        assert!(refused.retry_after.unwrap() <= Duration::from_millis(500));
        // Users are apart.
        quotas.command(&bob, true).unwrap();
        assert_eq!(quotas.refusals.invitations.load(Ordering::Relaxed), 1);
        assert_eq!(quotas.refusals.commands.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn streams_are_capped_per_user_and_in_total_and_freed_on_drop() {
        let quotas = Arc::new(Quotas::new(QuotaLimits {
            streams_per_user: 2,
            streams_total: 3,
            ..QuotaLimits::default()
        }));
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let a1 = quotas.open_stream(&alice).unwrap();
        let _a2 = quotas.open_stream(&alice).unwrap();
        assert!(quotas.open_stream(&alice).is_err(), "per user");
        let _b1 = quotas.open_stream(&bob).unwrap();
        assert!(quotas.open_stream(&carol).is_err(), "in total");
        drop(a1);
        let _c1 = quotas.open_stream(&carol).unwrap();
        assert!(quotas.open_stream(&alice).is_err());
    }
}
