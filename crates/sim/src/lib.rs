//! A deterministic simulator for the cohost sequencer, in the manner of TigerBeetle's VOPR and FoundationDB's
//! simulation tests.
//!
//! One `u64` seed builds everything: a simulated clock, an in-memory disk that fails a write, fails a flush,
//! dies in a flush or crashes (keeping a prefix of what was not flushed, or tearing the last write), the
//! engine's sequencer with its store and read model (recovered from that disk after every crash), a population
//! of clients sending random commands of every kind (with and without `command_id` and `expected_version`,
//! from the right and the wrong parties, retried after `unavailable`), and an auditor holding every reply and
//! the log to the reference model in `cohost-model`.
//!
//! A third of the seeds run in cluster mode (`cluster.rs`): every batch goes first to a shared partition log
//! with its fence, which may refuse an append, lose its ack with the batch committed or not, or be claimed by
//! another writer; every start is a takeover that rebuilds the local store from the log.
//!
//! Nothing here reads a clock, spawns a thread or draws from the OS: the same seed replays the same run, step
//! for step. A failure names its seed and step; `COHOST_SIM_SEED=<n>` replays it.
//!
//! This crate is a test harness. It never decides anything itself: the rules are [`cohost_core`]'s, the
//! write path [`cohost_engine`]'s (its `Sequencer` and `driver`, driven here as its writer thread drives
//! them), the log [`cohost_store`]'s (on its `MemoryBackend`), and what the replies must be
//! [`cohost_model`]'s. It never touches a real disk or network, and is not part of the daemon: `cargo test -p
//! cohost-sim` runs [`campaign`] over 10,000 seeds (`tests/seeds.rs`), and the `cohost-sim` binary runs
//! longer campaigns (`just sim N`).
//!
//! ```
//! // One seed, a few steps: every reply and the log held to the model, or the failure with its seed.
//! let report = cohost_sim::run(7, 20).unwrap_or_else(|violation| panic!("{violation}"));
//! assert_eq!(report.stats.steps, 20);
//! ```

#![warn(missing_docs)]

/// Declares a struct of `u64` counters that add up field by field, each field named once.
macro_rules! counters {
    (
        $(#[doc = $doc:literal])* pub struct $name:ident {
            $($(#[doc = $field_doc:literal])* $field:ident,)*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Default, Clone, Copy)]
        pub struct $name {
            $($(#[doc = $field_doc])* pub $field: u64,)*
        }

        impl $name {
            /// Adds `other`'s counts to these, field by field.
            pub fn add(&mut self, other: &Self) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

mod auditor;
mod cluster;
mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use auditor::Counts;
pub use world::Stats;
// `World` is the harness's inside: `run` and `campaign` are its interface, so it stays private.
use world::World;

/// Steps per seed unless told otherwise.
pub const STEPS_DEFAULT: u64 = 200;

/// A check that failed: where, and what it said. Its `Display` ends with the command that replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The seed whose run failed; `COHOST_SIM_SEED=<seed>` replays it.
    pub seed: u64,
    /// The step that failed, from 1; 0 is building the world, one past the last is the final checks.
    pub step: u64,
    /// The failed check's panic message: what differed, and from what.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\n  replay: COHOST_SIM_SEED={} cargo test -p cohost-sim",
            self.seed, self.step, self.message, self.seed
        )
    }
}

/// What one seed's run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// What the world did: steps, commands, faults, crashes, takeovers.
    pub stats: Stats,
    /// What the auditor checked: decisions, batches, replies.
    pub counts: Counts,
}

fn message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs one seed for `steps` steps, then a last turn and every check. The same seed and steps give the
/// same run, on any machine. It runs on the calling thread, in memory; a seed of 200 steps takes a few
/// milliseconds in an optimised build.
///
/// # Errors
///
/// The first [`Violation`]: a check of the auditor or the world that failed (caught as a panic, so the
/// panic hook still prints it).
pub fn run(seed: u64, steps: u64) -> Result<Report, Violation> {
    let violation = |step, panic| Violation {
        seed,
        step,
        message: message(panic),
    };
    let mut world = catch_unwind(|| World::new(seed)).map_err(|p| violation(0, p))?;
    for step in 1..=steps {
        catch_unwind(AssertUnwindSafe(|| world.step())).map_err(|p| violation(step, p))?;
    }
    catch_unwind(AssertUnwindSafe(|| world.finish())).map_err(|p| violation(steps + 1, p))?;
    Ok(Report {
        stats: world.stats,
        counts: world.auditor.counts,
    })
}

/// Totals over many seeds: the passing ones only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Seeds that passed.
    pub seeds: u64,
    /// Their [`Report::stats`], summed.
    pub stats: Stats,
    /// Their [`Report::counts`], summed.
    pub counts: Counts,
}

impl Totals {
    fn add(&mut self, seeds: u64, stats: &Stats, counts: &Counts) {
        self.seeds += seeds;
        self.stats.add(stats);
        self.counts.add(counts);
    }
}

/// Runs `seeds` on every core, and gives the totals and the failures, lowest seed first. Blocks until every
/// seed has run, on one scoped thread per core; a failing seed does not stop the others.
pub fn campaign(seeds: std::ops::Range<u64>, steps: u64) -> (Totals, Vec<Violation>) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let results: Vec<(Totals, Vec<Violation>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let seeds = seeds.clone();
                scope.spawn(move || {
                    let mut totals = Totals::default();
                    let mut failures = Vec::new();
                    for seed in seeds.filter(|seed| seed % threads == worker) {
                        match run(seed, steps) {
                            Ok(report) => totals.add(1, &report.stats, &report.counts),
                            Err(violation) => failures.push(violation),
                        }
                    }
                    (totals, failures)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .expect("a worker never panics: each seed catches its own")
            })
            .collect()
    });
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for (part, mut failed) in results {
        totals.add(part.seeds, &part.stats, &part.counts);
        failures.append(&mut failed);
    }
    failures.sort_by_key(|v| v.seed);
    (totals, failures)
}
