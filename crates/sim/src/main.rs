//! A long simulation campaign: `cohost-sim [SEEDS] [--from FIRST] [--steps STEPS]`, or `just sim 1000000`.
//! Prints progress, the totals (so a run shows every fault was exercised), and every failing seed.

use std::process::ExitCode;
use std::time::Instant;

use cohost_sim::{STEPS_DEFAULT, campaign};

const CHUNK: u64 = 10_000;

fn arg(args: &[String], flag: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seeds = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000u64);
    let from = arg(&args, "--from").unwrap_or(1);
    let steps = arg(&args, "--steps").unwrap_or(STEPS_DEFAULT);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut done = 0;
    while done < seeds {
        let chunk = CHUNK.min(seeds - done);
        let first = from + done;
        let (totals, mut failed) = campaign(first..first + chunk, steps);
        done += chunk;
        failures.append(&mut failed);
        println!(
            "seeds {first}..{}: {} steps, {} commands, {} durable and {} failed batches, {} crashes ({} survived in flight), {} failures so far, {:.0} s",
            first + chunk,
            totals.stats.steps,
            totals.stats.commands,
            totals.counts.durable_batches,
            totals.counts.failed_batches,
            totals.stats.crashes,
            totals.counts.survived_crashes,
            failures.len(),
            started.elapsed().as_secs_f64()
        );
    }
    for violation in &failures {
        println!("{violation}");
    }
    if failures.is_empty() {
        println!("{seeds} seeds of {steps} steps from seed {from}: no violation");
        ExitCode::SUCCESS
    } else {
        println!("{} of {seeds} seeds failed", failures.len());
        ExitCode::FAILURE
    }
}
