//! decide + apply throughput of `cohost-core` over a realistic mix across 10k rooms.
//!
//! A seeded script of commands (invite, accept, reject, cancel, remove) is recorded once by running the
//! core; each timed round replays it from the same initial states, so every round does identical work.
//! Prints the median ns per command over the rounds. Goal: at most 300 ns per command on one core.
//!
//! `cargo bench -p cohost-benches --bench core` (set `COHOST_BENCH_COMMANDS` to change the script length).

use std::hint::black_box;
use std::time::Instant;

use cohost_benches::mix::next_command;
use cohost_benches::{Rng, median};
use cohost_core::{Context, Policy, RoomState, apply, decide};
use cohost_proto::{Actor, Command, CreateRoom, RoomId, RoomTarget, UserId};

const ROOMS: usize = 10_000;
const USERS: usize = 50_000;
const ROUNDS: usize = 7;
const NOW_MS: u64 = 1_700_000_000_000;

struct Step {
    room: usize,
    actor: Actor,
    command: Command,
}

fn ctx(actor: &Actor) -> Context<'_> {
    Context {
        actor,
        now_ms: NOW_MS,
        expected_version: None,
        policy: Policy::default(),
    }
}

fn run(state: &mut RoomState, actor: &Actor, command: &Command) -> bool {
    match decide(state, command, &ctx(actor)) {
        Ok(events) => {
            for event in &events {
                apply(state, event);
            }
            true
        }
        Err(_) => false,
    }
}

/// Live rooms, each with its own host.
fn initial_rooms() -> Vec<RoomState> {
    (0..ROOMS)
        .map(|i| {
            let mut state = RoomState::default();
            let host = Actor::User(UserId::new(&format!("host-{i}")).expect("valid id"));
            let room_id = RoomId::new(&format!("room-{i}")).expect("valid id");
            let create = CreateRoom {
                room_id: room_id.clone(),
                title: Some(format!("Show {i}")),
                max_cohosts: None,
            };
            assert!(run(&mut state, &host, &Command::CreateRoom(create)));
            assert!(run(
                &mut state,
                &host,
                &Command::GoLive(RoomTarget { room_id })
            ));
            state
        })
        .collect()
}

/// Records a script of commands that all succeed when replayed from `initial`.
fn record(initial: &[RoomState], length: usize) -> Vec<Step> {
    let users: Vec<UserId> = (0..USERS)
        .map(|i| UserId::new(&format!("user-{i}")).expect("valid id"))
        .collect();
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
    let initial = initial_rooms();
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
    println!(
        "  goal: <= 300 ns/command -> {}",
        if median_ns <= 300.0 { "met" } else { "MISSED" }
    );
}
