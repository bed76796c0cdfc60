//! Shared helpers for the benchmarks: robust statistics and the command mix; the seeded generator is the
//! workspace's one (`cohost_model::Rng`).

pub use cohost_model::Rng;

/// What every benchmark reads from its environment: `COHOST_BENCH_QUICK` (a smoke run), `COHOST_BENCH_RUNS`,
/// `COHOST_BENCH_SECS`, `COHOST_BENCH_DIR` (where data directories go; a real disk) and `COHOST_BENCH_ONLY` (a
/// comma-separated list of phases).
#[derive(Debug, Clone)]
pub struct Common {
    pub quick: bool,
    pub runs: usize,
    pub secs: f64,
    pub dir: std::path::PathBuf,
    only: Option<String>,
}

impl Common {
    /// The settings, with `runs` and `secs` as defaults for a full run and `quick_runs`, `quick_secs` for a
    /// smoke run.
    pub fn from_env(runs: usize, secs: f64, quick_runs: usize, quick_secs: f64) -> Self {
        let quick = std::env::var("COHOST_BENCH_QUICK").is_ok_and(|v| v != "0");
        let (runs, secs) = if quick {
            (quick_runs, quick_secs)
        } else {
            (runs, secs)
        };
        Self {
            quick,
            runs: env_or("COHOST_BENCH_RUNS", runs).max(1),
            secs: env_or("COHOST_BENCH_SECS", secs),
            dir: std::env::var_os("COHOST_BENCH_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            only: std::env::var("COHOST_BENCH_ONLY").ok(),
        }
    }

    /// Whether `phase` runs: all do unless `COHOST_BENCH_ONLY` names some.
    pub fn runs_phase(&self, phase: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|p| p.trim() == phase))
    }

    /// The variable `name` parsed, or the default for a full run (`full`) or a smoke run (`quick`).
    pub fn setting<T: std::str::FromStr>(&self, name: &str, full: T, quick: T) -> T {
        env_or(name, if self.quick { quick } else { full })
    }

    /// A fresh data directory under `dir`, removed when dropped.
    pub fn fresh_dir(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("cohost-bench-")
            .tempdir_in(&self.dir)
            .expect("the bench directory is writable")
    }
}

/// A figure a benchmark is expected to reach, printed beside the measured one.
#[derive(Debug, Clone, Copy)]
pub struct Goal {
    what: &'static str,
    limit: f64,
    unit: &'static str,
    at_least: bool,
}

impl Goal {
    pub const fn at_least(what: &'static str, limit: f64, unit: &'static str) -> Self {
        Self {
            what,
            limit,
            unit,
            at_least: true,
        }
    }

    pub const fn at_most(what: &'static str, limit: f64, unit: &'static str) -> Self {
        Self {
            what,
            limit,
            unit,
            at_least: false,
        }
    }

    pub fn met(&self, value: f64) -> bool {
        if self.at_least {
            value >= self.limit
        } else {
            value <= self.limit
        }
    }

    /// Prints `  goal: <what> >= <limit> <unit> -> met (<value>)`, or `MISSED`.
    pub fn report(&self, value: f64) {
        let (sign, verdict) = (
            if self.at_least { ">=" } else { "<=" },
            if self.met(value) { "met" } else { "MISSED" },
        );
        println!(
            "  goal: {} {sign} {} {} -> {verdict} ({} {})",
            self.what,
            figure(self.limit),
            self.unit,
            figure(value),
            self.unit
        );
    }
}

/// Whole numbers for large figures, two decimals for small ones.
fn figure(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The variable `name` parsed, or `default` when it is unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of the samples (which it sorts).
pub fn median(samples: &mut [f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// The `p`-th percentile (0 to 100) of the samples (which it sorts), by nearest rank.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    assert!(!samples.is_empty(), "percentile of no samples");
    assert!((0.0..=100.0).contains(&p), "a percentile is from 0 to 100");
    samples.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// A realistic command mix over live rooms, planned against a `cohost-core` mirror so each command comes from
/// the right party and its events (and so their room versions) are known before the engine answers.
pub mod mix {
    use std::sync::Arc;

    use cohost_core::{Context, Policy, RoomState, apply, decide};
    use cohost_engine::{Engine, Options};
    use cohost_proto::{
        Actor, Command, CreateRoom, Event, InvitationTarget, Invite, RoomId, RoomTarget, UserId,
        UserTarget,
    };

    use crate::Rng;

    /// The mirrors' clock. An engine on a `ManualClock` at this time matches them exactly: same expiries, and
    /// no expiry fires during a run.
    pub const MIRROR_NOW_MS: u64 = 1_700_000_000_000;
    /// Tries to find a command the mirror accepts before sending one that will be rejected.
    const PLAN_TRIES: usize = 8;
    /// The users the hosts invite.
    pub const USERS: usize = 50_000;

    /// `user-0` .. `user-{USERS - 1}`.
    pub fn users() -> Arc<[UserId]> {
        (0..USERS)
            .map(|i| UserId::new(&format!("user-{i}")).expect("valid id"))
            .collect()
    }

    pub fn room_id(prefix: &str, i: usize) -> RoomId {
        RoomId::new(&format!("{prefix}-{i}")).expect("valid id")
    }

    pub fn host(prefix: &str, i: usize) -> Actor {
        Actor::User(UserId::new(&format!("{prefix}-host-{i}")).expect("valid id"))
    }

    pub fn mirror_ctx(actor: &Actor) -> Context<'_> {
        Context::new(actor, MIRROR_NOW_MS, Policy::default())
    }

    /// Room `i`'s setup: its host creates it, then takes it live.
    pub fn setup(prefix: &str, i: usize) -> (Actor, [Command; 2]) {
        let room_id = room_id(prefix, i);
        let create = Command::CreateRoom(CreateRoom {
            room_id: room_id.clone(),
            title: Some(format!("Show {i}")),
            max_cohosts: None,
        });
        (
            host(prefix, i),
            [create, Command::GoLive(RoomTarget { room_id })],
        )
    }

    /// Creates rooms `0..count` and takes them live, from `clients` concurrent tasks.
    pub async fn create_rooms(engine: &Engine, prefix: &'static str, count: usize, clients: usize) {
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    for i in (client..count).step_by(clients) {
                        let (host, commands) = setup(prefix, i);
                        for command in commands {
                            let reply = engine.execute(host.clone(), command, Options::default());
                            reply.await.expect("setup commands succeed");
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("setup tasks do not panic");
        }
    }

    /// The mirror of rooms `0..count` after their setup.
    pub fn mirror_rooms(prefix: &str, count: usize) -> Vec<RoomState> {
        (0..count)
            .map(|i| {
                let mut state = RoomState::default();
                let (host, commands) = setup(prefix, i);
                for command in commands {
                    let events =
                        decide(&state, &command, &mirror_ctx(&host)).expect("setup is valid");
                    events.iter().for_each(|event| apply(&mut state, event));
                }
                state
            })
            .collect()
    }

    /// Picks a plausible next command for one room: answer or cancel a pending offer, remove a co-host, or invite.
    pub fn next_command(rng: &mut Rng, state: &RoomState, users: &[UserId]) -> (Actor, Command) {
        let room = state.room().expect("rooms exist");
        let host = Actor::User(room.host.clone());
        if !room.cohosts.is_empty() && rng.chance(15) {
            let seat = &room.cohosts[rng.index(room.cohosts.len())];
            let target = UserTarget {
                room_id: room.room_id.clone(),
                user_id: seat.user_id.clone(),
            };
            return (host, Command::RemoveCohost(target));
        }
        if let Some(pending) = state.pending().nth(rng.index(state.pending_count().max(1)))
            && rng.chance(75)
        {
            let target = InvitationTarget {
                invitation_id: pending.invitation_id.clone(),
            };
            let candidate = Actor::User(pending.user_id.clone());
            return match rng.index(10) {
                0..=4 => (candidate, Command::AcceptInvitation(target)),
                5..=7 => (candidate, Command::RejectInvitation(target)),
                _ => (host, Command::CancelInvitation(target)),
            };
        }
        let user_id = users[rng.index(users.len())].clone();
        (
            host,
            Command::Invite(Invite {
                room_id: room.room_id.clone(),
                user_id,
                seat: None,
            }),
        )
    }

    /// The same command from the wrong party: a stranger for the host's commands, the host for the candidate's.
    fn wrong_actor(rng: &mut Rng, state: &RoomState, command: &Command, users: &[UserId]) -> Actor {
        match command {
            Command::AcceptInvitation(_) | Command::RejectInvitation(_) => {
                Actor::User(state.room().expect("rooms exist").host.clone())
            }
            _ => Actor::User(users[rng.index(users.len())].clone()),
        }
    }

    /// One command to send, with the events the mirror expects (`None`: the engine should reject it).
    #[derive(Debug)]
    pub struct Plan {
        pub room: usize,
        pub actor: Actor,
        pub command: Command,
        pub expected: Option<Vec<Event>>,
    }

    /// A client: its rooms, as it last saw them. Its room `j` is room `index + j * clients` of the mirror.
    #[derive(Debug)]
    pub struct Client {
        pub index: usize,
        pub clients: usize,
        pub rng: Rng,
        pub rooms: Vec<RoomState>,
        users: Arc<[UserId]>,
    }

    impl Client {
        /// Splits the mirrored rooms among `clients` clients: room `i` belongs to client `i % clients`.
        pub fn all(rooms: &[RoomState], users: &Arc<[UserId]>, clients: usize) -> Vec<Self> {
            (0..clients)
                .map(|c| Self {
                    index: c,
                    clients,
                    rng: Rng::new(0xC0_4057 + c as u64),
                    rooms: rooms.iter().skip(c).step_by(clients).cloned().collect(),
                    users: users.clone(),
                })
                .collect()
        }

        /// The mirror's index of this client's room `room`.
        pub fn global_room(&self, room: usize) -> usize {
            self.index + room * self.clients
        }

        /// The next command for this client's room `room`, one the mirror accepts if it can find one.
        pub fn plan(&mut self, room: usize) -> Plan {
            self.plan_from(room, false)
        }

        /// As [`Client::plan`], or, when `wrong_party`, the command from the party that may not send it.
        pub fn plan_from(&mut self, room: usize, wrong_party: bool) -> Plan {
            let state = &self.rooms[room];
            let mut tries = 0;
            loop {
                let (mut actor, command) = next_command(&mut self.rng, state, &self.users);
                if wrong_party {
                    actor = wrong_actor(&mut self.rng, state, &command, &self.users);
                }
                let expected = decide(state, &command, &mirror_ctx(&actor)).ok();
                tries += 1;
                if wrong_party || expected.is_some() || tries == PLAN_TRIES {
                    return Plan {
                        room,
                        actor,
                        command,
                        expected,
                    };
                }
            }
        }

        /// Applies acked events to the mirror; the room versions they took, first to last.
        pub fn settle(&mut self, room: usize, events: &[Event]) -> std::ops::RangeInclusive<u64> {
            let state = &mut self.rooms[room];
            let before = state.room().expect("rooms exist").version;
            events.iter().for_each(|event| apply(state, event));
            before + 1..=state.room().expect("rooms exist").version
        }
    }
}

/// The process's resident memory (VmRSS), in bytes.
pub fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc is readable");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("/proc/self/status has VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS is a number of kB");
    kib * 1_024
}
