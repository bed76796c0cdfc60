//! The simulator over many seeds: every reply and the log against the reference model, through failed
//! writes, failed flushes, deaths in a flush, crashes and restarts.
//!
//! `COHOST_SIM_SEEDS` (default 10,000) seeds of `COHOST_SIM_STEPS` (default 200) steps each, on every core;
//! `COHOST_SIM_SEED=<n>` replays one seed exactly. A failure prints its seed and step.

use cohost_sim::{STEPS_DEFAULT, Totals, campaign, run};

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")),
    )
}

#[test]
fn every_seed_keeps_every_promise() {
    let steps = env("COHOST_SIM_STEPS").unwrap_or(STEPS_DEFAULT);
    if let Some(seed) = env("COHOST_SIM_SEED") {
        match run(seed, steps) {
            Ok(report) => println!("seed {seed}: {report:?}"),
            Err(violation) => panic!("{violation}"),
        }
        return;
    }
    let seeds = env("COHOST_SIM_SEEDS").unwrap_or(10_000);
    let started = std::time::Instant::now();
    let (totals, failures) = campaign(1..seeds + 1, steps);
    println!(
        "{seeds} seeds of {steps} steps in {:.1} s: {totals:?}",
        started.elapsed().as_secs_f64()
    );
    if let Some(first) = failures.first() {
        panic!(
            "{} of {seeds} seeds failed; the first:\n{first}",
            failures.len()
        );
    }
    assert_exercised(&totals);
}

/// A run that never reached a fault would prove nothing: over this many seeds, each kind happened.
fn assert_exercised(totals: &Totals) {
    if totals.seeds < 200 {
        return;
    }
    let (s, c) = (&totals.stats, &totals.counts);
    for (what, count) in [
        ("failed writes", s.failed_writes),
        ("failed flushes", s.failed_flushes),
        ("deaths in a flush", s.deaths_in_flush),
        ("machine crashes", s.crashes),
        ("process restarts", s.process_restarts),
        ("torn records taken back", s.torn_records_dropped),
        ("records confirmed at open", s.records_confirmed),
        ("marks set back by a crash", s.marks_set_back),
        ("clean restarts", s.restarts),
        ("sends while a batch was in flight", s.sent_in_flight),
        ("rooms archived", s.rooms_archived),
        (
            "archived rooms loaded back for a command",
            s.archived_rooms_loaded,
        ),
        ("snapshots", s.snapshots),
        ("retries", s.retries),
        ("remembered retries", c.retries_remembered),
        ("retries of forgotten ids", c.retries_forgotten),
        ("answers read back from the log", c.stored_answers),
        ("expiries", c.expiries),
        ("disconnects", c.disconnects),
        ("abandoned rooms ended", c.abandoned),
        ("unconfirmed batches that survived", c.survived_crashes),
        ("unavailable answers", c.unavailable),
        ("seeds in cluster mode", s.cluster_seeds),
        ("takeovers", s.takeovers),
        ("bases saved", s.bases_saved),
        ("takeovers from a base", s.takeovers_from_base),
        ("appends refused", s.appends_refused),
        (
            "committed appends whose ack was lost",
            s.acks_lost_committed,
        ),
        ("lost appends whose ack was lost", s.acks_lost_not_committed),
        (
            "local writes failed after the log took the batch",
            s.local_writes_failed_after_the_log,
        ),
        ("other writers claiming the partition", s.other_writers),
        ("writers fenced by the log", s.writers_fenced),
    ] {
        assert!(
            count > 0,
            "{} seeds never saw {what}: {totals:?}",
            totals.seeds
        );
    }
}
