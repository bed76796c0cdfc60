//! Crash test with a real SIGKILL. A child process (`tests/bin/crash-child.rs`) runs many concurrent clients
//! against an engine; this test kills it at a random moment, reopens the same data directory and checks:
//! - the store opens without error;
//! - seqs run 1..=last_seq and each room's versions 1..=n, with no gaps;
//! - every command whose ack a client recorded is in the log (acked ⇒ durable), and a command's events are
//!   one unbroken run (no command applied twice);
//! - folding `cohost_core::apply` over the whole log equals the state the engine recovered.
//!
//! 20 rounds by default; `COHOST_CRASH_ROUNDS` sets another count (`just crash` runs more) and
//! `COHOST_CRASH_SEED` replays a schedule (kill moments and client seeds; thread timing is not replayable).

#![cfg(unix)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cohost_core::{RoomState, apply};
use cohost_engine::{Config, Engine, ManualClock};
use cohost_model::Rng;
use cohost_proto::{Envelope, RoomId};

const ROUNDS_DEFAULT: usize = 20;
/// Clients in an ordinary round, and in the heavy-load round.
const CLIENTS: usize = 16;
const CLIENTS_HEAVY: usize = 64;
/// New acks the heavy-load round waits for before it kills.
const HEAVY_ACKS_MIN: usize = 500;
/// The random kill delay after `ready`, in ms.
const KILL_DELAY_MS_MIN: u64 = 20;
const KILL_DELAY_MS_MAX: u64 = 250;
/// The random kill delay after spawning, for a kill while the child is still opening the store.
const KILL_DURING_OPEN_MS_MAX: u64 = 40;
/// Envelopes per `read_events` call.
const READ_CHUNK: usize = 1_000;
/// Every wait has a bound, so a stuck child or engine fails the test instead of hanging it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HEAVY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The signal `Child::kill` sends on Unix.
const SIGKILL: i32 = 9;

/// When a round kills its child.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after spawning, whether or not the store is open yet.
    DuringOpen { after_ms: u64 },
    /// As soon as the child says `ready`, before any client could be acked.
    RightAfterReady,
    /// This long after `ready`.
    AfterReady { after_ms: u64 },
    /// With many clients, once at least [`HEAVY_ACKS_MIN`] new acks are on file.
    UnderHeavyLoad,
}

fn schedule(round: usize, rng: &mut Rng) -> Kill {
    match round {
        0 => Kill::RightAfterReady,
        1 => Kill::UnderHeavyLoad,
        r if r % 10 == 5 => Kill::DuringOpen {
            after_ms: rng.between(0, KILL_DURING_OPEN_MS_MAX),
        },
        _ => Kill::AfterReady {
            after_ms: rng.between(KILL_DELAY_MS_MIN, KILL_DELAY_MS_MAX),
        },
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a number: {e}")),
    )
}

/// A running `crash-child`, killed and reaped on drop so a failing test leaves no process behind.
struct ChildProcess {
    child: Child,
    /// Held open: the child exits by itself when its stdin closes.
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    spawned: Instant,
}

impl ChildProcess {
    fn spawn(data_dir: &Path, ack_file: &Path, seed: u64, clients: usize) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
            .arg(data_dir)
            .arg(ack_file)
            .arg(seed.to_string())
            .arg(clients.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crash-child starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, stdout_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            stdin: child.stdin.take(),
            child,
            stdout: stdout_rx,
            stderr: Some(stderr),
            spawned: Instant::now(),
        }
    }

    /// Fails the test, with the child's exit status and stderr, if it is no longer running.
    fn assert_running(&mut self, when: &str) {
        let status = self.child.try_wait().expect("try_wait on crash-child");
        if let Some(status) = status {
            let stderr = self.take_stderr();
            panic!("crash-child exited by itself {when}: {status}\n--- its stderr ---\n{stderr}");
        }
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| "<stderr reader panicked>".into())
            })
            .unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line == "ready" => return,
                Ok(line) => eprintln!("crash-child: {line}"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("crash-child did not say ready within {READY_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit();
                    let stderr = self.take_stderr();
                    let hint = if stderr.contains("already open") {
                        "\nThe data directory was still locked: the previous engine did not release it."
                    } else {
                        ""
                    };
                    panic!(
                        "crash-child closed stdout before ready: {status}{hint}\n--- its stderr ---\n{stderr}"
                    );
                }
            }
        }
    }

    /// Waits until the ack file holds at least `acks` more lines than at `from_len` bytes.
    fn wait_acks(&mut self, ack_file: &Path, from_len: u64, acks: usize) {
        let deadline = Instant::now() + HEAVY_TIMEOUT;
        loop {
            let bytes = fs::read(ack_file).unwrap_or_default();
            let new = bytes
                .get(from_len as usize..)
                .unwrap_or_default()
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            if new >= acks {
                return;
            }
            self.assert_running("under heavy load");
            assert!(
                Instant::now() < deadline,
                "crash-child acked only {new} commands in {HEAVY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on crash-child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "crash-child did not exit within {EXIT_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL, then checks that SIGKILL is what ended it. Returns how long the child lived.
    fn kill9(&mut self, when: &str) -> Duration {
        self.assert_running(when);
        self.child.kill().expect("SIGKILL crash-child");
        let lived = self.spawned.elapsed();
        let status = self.wait_exit();
        self.stdin.take();
        let stderr = self.take_stderr();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "crash-child ended with {status}, not by SIGKILL\n--- its stderr ---\n{stderr}"
        );
        lived
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one verification found.
#[derive(Debug, Default, Clone)]
struct Recovered {
    last_seq: u64,
    /// The envelope at `last_seq`, to check a later round still has it unchanged.
    last: Option<Envelope>,
    rooms: usize,
    acks: usize,
    open: Duration,
    check: Duration,
}

/// The command ids the clients recorded as acked. A last line without its newline was cut by the kill
/// mid-write; it is not a complete record, so it is skipped.
fn read_acks(ack_file: &Path) -> Vec<String> {
    let text = fs::read_to_string(ack_file).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next().unwrap_or_default();
            let _command = fields.next();
            let events = fields.next();
            assert!(
                !id.is_empty() && events.is_some() && fields.next().is_none(),
                "malformed ack line {line:?}"
            );
            assert_eq!(
                events,
                Some("1"),
                "every command the clients send appends events: {line:?}"
            );
            id.to_owned()
        })
        .collect()
}

/// Reads the whole log in chunks, checking seqs, versions and command runs, and folds it into room states.
fn replay(
    engine: &Engine,
) -> (
    u64,
    Option<Envelope>,
    HashMap<RoomId, RoomState>,
    HashSet<String>,
) {
    let mut rooms: HashMap<RoomId, RoomState> = HashMap::new();
    let mut command_ids: HashSet<String> = HashSet::new();
    // The command and room of the previous envelope, for the "one unbroken run" check.
    let mut previous: Option<(String, RoomId)> = None;
    let mut next_seq = 1;
    let mut last = None;
    loop {
        let chunk = engine
            .read_events(next_seq, READ_CHUNK)
            .unwrap_or_else(|e| panic!("read_events from seq {next_seq}: {e}"));
        if chunk.is_empty() {
            break;
        }
        for envelope in chunk {
            assert_eq!(envelope.seq, next_seq, "seqs must be gap-free");
            next_seq += 1;
            let state = rooms.entry(envelope.room_id.clone()).or_default();
            assert_eq!(
                envelope.version,
                state.version() + 1,
                "versions of room {} must be gap-free (seq {})",
                envelope.room_id,
                envelope.seq
            );
            apply(state, &envelope.event);
            assert_eq!(state.version(), envelope.version, "seq {}", envelope.seq);
            let current = envelope
                .command_id
                .as_ref()
                .map(|id| (id.as_str().to_owned(), envelope.room_id.clone()));
            if let Some((id, room)) = &current {
                let continues = previous.as_ref() == current.as_ref();
                assert!(
                    continues || command_ids.insert(id.clone()),
                    "command {id} appears again at seq {} in room {room}: applied twice",
                    envelope.seq
                );
            }
            previous = current;
            last = Some(envelope);
        }
    }
    (next_seq - 1, last, rooms, command_ids)
}

async fn open_engine(data_dir: &Path) -> (Engine, Duration) {
    let dir = data_dir.to_path_buf();
    let started = Instant::now();
    // A frozen clock: the checking engine must not expire invitations and so append events of its own.
    let config = Config::new(dir).with_clock(Arc::new(ManualClock::new(0)));
    let opened = tokio::time::timeout(
        OPEN_TIMEOUT,
        tokio::task::spawn_blocking(move || Engine::open(config)),
    )
    .await
    .unwrap_or_else(|_| panic!("Engine::open took more than {OPEN_TIMEOUT:?}"))
    .expect("Engine::open did not panic");
    let engine = opened.unwrap_or_else(|e| panic!("the store must open after SIGKILL: {e}"));
    (engine, started.elapsed())
}

/// Opens the store the child left, checks every invariant, and shuts the engine down again.
async fn verify(data_dir: &Path, ack_file: &Path, before: &Recovered) -> Recovered {
    let (engine, open) = open_engine(data_dir).await;
    let started = Instant::now();
    let (states_seq, states) = engine.room_states();
    let (last_seq, last, folded, command_ids) = replay(&engine);
    assert_eq!(states_seq, last_seq, "room_states is as of the log's end");
    assert_eq!(engine.last_seq(), last_seq);
    assert!(
        last_seq >= before.last_seq,
        "the log shrank from seq {} to {last_seq}",
        before.last_seq
    );
    if let Some(earlier) = &before.last {
        let now = engine
            .read_events(earlier.seq, 1)
            .expect("read the previous round's last event");
        assert_eq!(
            now.first(),
            Some(earlier),
            "an event verified in an earlier round changed"
        );
    }
    let recovered: HashMap<RoomId, RoomState> = states.into_iter().collect();
    assert_eq!(
        recovered.keys().collect::<HashSet<_>>(),
        folded.keys().collect::<HashSet<_>>(),
        "the recovered rooms are the log's rooms"
    );
    for (room_id, state) in &folded {
        assert!(
            recovered.get(room_id) == Some(state),
            "room {room_id}: a full replay differs from the recovered state\nreplay:    {state:?}\nrecovered: {:?}",
            recovered.get(room_id)
        );
    }
    let acks = read_acks(ack_file);
    let missing: Vec<&String> = acks
        .iter()
        .filter(|id| !command_ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acked commands are not in the log (last_seq {last_seq}); first: {:?}",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(10)]
    );
    let check = started.elapsed();
    tokio::time::timeout(SHUTDOWN_TIMEOUT, engine.shutdown())
        .await
        .unwrap_or_else(|_| panic!("engine shutdown took more than {SHUTDOWN_TIMEOUT:?}"));
    drop(engine);
    Recovered {
        last_seq,
        last,
        rooms: folded.len(),
        acks: acks.len(),
        open,
        check,
    }
}

/// Runs one child until `kill` says, then SIGKILLs it. Returns how long it lived.
fn run_child(data_dir: &Path, ack_file: &Path, seed: u64, kill: Kill, rng: &mut Rng) -> Duration {
    let ack_len = fs::metadata(ack_file).map_or(0, |m| m.len());
    let clients = match kill {
        Kill::UnderHeavyLoad => CLIENTS_HEAVY,
        _ => CLIENTS,
    };
    let mut child = ChildProcess::spawn(data_dir, ack_file, seed, clients);
    match kill {
        Kill::DuringOpen { after_ms } => {
            std::thread::sleep(Duration::from_millis(after_ms));
            // It may have failed to open; the kill checks that it is still running.
            return child.kill9("while opening");
        }
        Kill::RightAfterReady => child.wait_ready(),
        Kill::AfterReady { after_ms } => {
            child.wait_ready();
            std::thread::sleep(Duration::from_millis(after_ms));
        }
        Kill::UnderHeavyLoad => {
            child.wait_ready();
            child.wait_acks(ack_file, ack_len, HEAVY_ACKS_MIN);
            // Kill somewhere in the middle of the next few batches, not right at the poll.
            std::thread::sleep(Duration::from_millis(rng.between(0, 5)));
        }
    }
    child.kill9("before its kill")
}

#[test]
fn acked_commands_survive_sigkill_and_replay_equals_recovered_state() {
    let rounds = env_number("COHOST_CRASH_ROUNDS").map_or(ROUNDS_DEFAULT, |n| n as usize);
    let seed = env_number("COHOST_CRASH_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970");
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    eprintln!(
        "crash-kill9: {rounds} rounds, seed {seed} (COHOST_CRASH_SEED={seed} replays the schedule)"
    );
    let mut rng = Rng::new(seed);
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir: PathBuf = temp.path().join("data");
    let ack_file: PathBuf = temp.path().join("acks.log");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut seeds = HashSet::new();
    let mut before = Recovered::default();
    let started = Instant::now();
    for round in 0..rounds {
        let kill = schedule(round, &mut rng);
        let child_seed = rng.next_u64();
        assert!(
            seeds.insert(child_seed),
            "child seeds must differ: command ids carry them"
        );
        let lived = run_child(&data_dir, &ack_file, child_seed, kill, &mut rng);
        let after = runtime.block_on(verify(&data_dir, &ack_file, &before));
        eprintln!(
            "round {round:>3}: {kill:<34} lived {:>4} ms | events {:>7} (+{:>5}) | acks {:>7} (+{:>5}) | rooms {} | open {:>4} ms | check {:>4} ms",
            lived.as_millis(),
            after.last_seq,
            after.last_seq - before.last_seq,
            after.acks,
            after.acks - before.acks,
            after.rooms,
            after.open.as_millis(),
            after.check.as_millis(),
            kill = format!("{kill:?}"),
        );
        before = after;
    }
    eprintln!(
        "crash-kill9: {rounds} rounds in {:.1} s, {} events, {} acked commands, all durable",
        started.elapsed().as_secs_f64(),
        before.last_seq,
        before.acks
    );
    if rounds >= 2 {
        assert!(
            before.acks >= HEAVY_ACKS_MIN,
            "the children must have been acked under load for the test to mean anything"
        );
    }
}
