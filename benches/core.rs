//! decide + apply throughput of `cohost-core` over a realistic mix across 10k rooms.
//!
//! A seeded script of commands (invite, accept, reject, cancel, remove) is recorded once by running the
//! core; each timed round replays it from the same initial states, so every round does identical work.
//! Prints the median ns per command over the rounds. Goal: at most 300 ns per command on one core.
//!
//! `cargo bench -p cohost-benches --bench core` (set `COHOST_BENCH_COMMANDS` to change the script length).

use std::hint::black_box;
use std::time::Instant;

use cohost_benches::mix::{self, next_command};
use cohost_benches::{Goal, Rng, median};
use cohost_core::{RoomState, apply, decide};
use cohost_proto::{Actor, Command};

const ROOMS: usize = 10_000;
const ROUNDS: usize = 7;
const GOAL: Goal = Goal::at_most("decide+apply on one core", 300.0, "ns/command");

struct Step {
    room: usize,
    actor: Actor,
    command: Command,
}

fn run(state: &mut RoomState, actor: &Actor, command: &Command) -> bool {
    match decide(state, command, &mix::mirror_ctx(actor)) {
        Ok(events) => {
            for event in &events {
                apply(state, event);
            }
            true
        }
        Err(_) => false,
    }
}

/// Records a script of commands that all succeed when replayed from `initial`.
fn record(initial: &[RoomState], length: usize) -> Vec<Step> {
    let users = mix::users();
    let mut rooms = initial.to_vec();
    let mut rng = Rng::new(0xC0_4057);
    let mut script = Vec::with_capacity(length);
    while script.len() < length {
        let room = rng.index(ROOMS);
        let (actor, command) = next_command(&mut rng, &rooms[room], &users);
        if run(&mut rooms[room], &actor, &command) {
            script.push(Step {
                room,
                actor,
                command,
            });
        }
    }
    script
}

fn main() {
    let length: usize = std::env::var("COHOST_BENCH_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let initial = mix::mirror_rooms("room", ROOMS);
    let script = record(&initial, length);
    let mut mix = std::collections::BTreeMap::<&str, usize>::new();
    for step in &script {
        *mix.entry(step.command.name()).or_default() += 1;
    }
    println!("core: decide+apply over {ROOMS} rooms, {length} commands per round, {ROUNDS} rounds");
    println!("  mix: {mix:?}");
    let mut ns_per_command = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let mut rooms = initial.clone();
        let started = Instant::now();
        for step in &script {
            let ok = run(&mut rooms[step.room], &step.actor, &step.command);
            assert!(ok, "a recorded command must succeed on replay");
        }
        let elapsed = started.elapsed();
        black_box(&rooms);
        ns_per_command.push(elapsed.as_nanos() as f64 / length as f64);
    }
    let (min, max) = (
        ns_per_command.iter().cloned().fold(f64::MAX, f64::min),
        ns_per_command.iter().cloned().fold(0.0, f64::max),
    );
    let median_ns = median(&mut ns_per_command);
    println!(
        "  decide+apply: median {median_ns:.0} ns/command (min {min:.0}, max {max:.0}), {:.2} M commands/s",
        1e3 / median_ns
    );
    GOAL.report(median_ns);
    second_copy(&initial, &script);
}

/// What holding each live room once would cost the engine: a copy-on-write room is cloned once per batch that
/// touches it, where the second copy of today costs one more apply per event. Measured on the rooms as the
/// script leaves them (with their invitation history), against decide+apply per command above.
fn second_copy(initial: &[RoomState], script: &[Step]) {
    let mut rooms = initial.to_vec();
    for step in script {
        run(&mut rooms[step.room], &step.actor, &step.command);
    }
    let mut ns_per_clone = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for room in &rooms {
            black_box(room.clone());
        }
        ns_per_clone.push(started.elapsed().as_nanos() as f64 / rooms.len() as f64);
    }
    let held: usize = rooms.iter().map(|r| r.held_invitations().count()).sum();
    println!(
        "  one room's clone (copy-on-write, once per batch touching it): median {:.0} ns ({:.0} invitations held per room)",
        median(&mut ns_per_clone),
        held as f64 / rooms.len() as f64
    );
}
