//! The process `tests/crash-kill9.rs` kills: an engine on a data directory with many concurrent clients
//! issuing a realistic mix of co-host commands, forever.
//!
//! Usage: `crash-child <data_dir> <ack_file> <seed> [clients]`. It prints `ready` on stdout once the engine is
//! open. Every client appends one line per `Ok` reply to the ack file, `"{command_id} {command} {events}\n"`,
//! in one `write` to a file opened with `O_APPEND`, so lines never interleave; no fsync, because SIGKILL keeps
//! the page cache. It never exits by itself unless something is wrong: an engine error that is not a rule's
//! rejection, stdin closing (the test went away) or [`LIFETIME_MAX`] passing. Then it says why on stderr and
//! exits non-zero.

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cohost_engine::{Config, Engine, Error, InvitationFilter, ListRequest, Options};
use cohost_model::Rng;
use cohost_proto::{
    Actor, Command, CommandId, CreateRoom, ErrorCode, InvitationStatus, InvitationTarget, RoomId,
    RoomTarget, UserId, UserTarget,
};

/// Clients when the command line names no count.
const CLIENTS_DEFAULT: usize = 16;
/// The most clients the command line may ask for.
const CLIENTS_MAX: usize = 256;
/// Rooms the clients share; room `k` is hosted by `host-k`.
const ROOMS: u64 = 4;
/// Users who get invited or raise a hand, `user-0` .. `user-{CANDIDATES-1}`.
const CANDIDATES: u64 = 12;
/// A child the test forgot still goes away after this long.
const LIFETIME_MAX: Duration = Duration::from_secs(300);

fn user(name: &str) -> UserId {
    UserId::new(name).expect("test user names are valid ids")
}

fn host_of(room: u64) -> UserId {
    user(&format!("host-{room}"))
}

fn room_id(room: u64) -> RoomId {
    RoomId::new(&format!("room-{room}")).expect("test room names are valid ids")
}

/// One client: issues commands one after another, as a gateway serving many users would.
struct Client {
    engine: Engine,
    acks: Arc<File>,
    rng: Rng,
    seed: u64,
    client: usize,
    sent: u64,
}

impl Client {
    /// Picks the next command from what the read model shows now, so most commands are accepted.
    fn pick(&mut self) -> (Actor, Command) {
        let room = self.rng.below(ROOMS);
        let room_id = room_id(room);
        let host = host_of(room);
        let candidate = user(&format!("user-{}", self.rng.below(CANDIDATES)));
        let Ok(state) = self.engine.room(&room_id) else {
            let create = CreateRoom {
                room_id,
                title: Some(format!("crash room {room}")),
                max_cohosts: None,
            };
            return (Actor::User(host), Command::CreateRoom(create));
        };
        let target = RoomTarget {
            room_id: room_id.clone(),
        };
        let pending = self
            .engine
            .room_invitations(
                &room_id,
                &ListRequest {
                    filter: InvitationFilter {
                        status: Some(InvitationStatus::Pending),
                        kind: None,
                    },
                    ..ListRequest::default()
                },
            )
            .map(|page| page.items)
            .unwrap_or_default();
        let roll = self.rng.below(100);
        match roll {
            0..=2 => (Actor::User(host), Command::GoLive(target)),
            3..=24 => (
                Actor::User(host),
                Command::Invite(
                    UserTarget {
                        room_id,
                        user_id: candidate,
                    }
                    .into(),
                ),
            ),
            25..=39 => (
                Actor::User(candidate),
                Command::RequestToJoin(target.into()),
            ),
            40..=79 if !pending.is_empty() => {
                let invitation = &pending[self.rng.below(pending.len() as u64) as usize];
                let id = InvitationTarget {
                    invitation_id: invitation.invitation_id.clone(),
                };
                let initiator = invitation.initiator().clone();
                let responder = invitation.responder().clone();
                match roll {
                    40..=57 => (Actor::User(responder), Command::AcceptInvitation(id)),
                    58..=69 => (Actor::User(responder), Command::RejectInvitation(id)),
                    _ => (Actor::User(initiator), Command::CancelInvitation(id)),
                }
            }
            80..=99 if !state.cohosts.is_empty() => {
                let seat = &state.cohosts[self.rng.below(state.cohosts.len() as u64) as usize];
                if roll < 90 {
                    let remove = UserTarget {
                        room_id,
                        user_id: seat.user_id.clone(),
                    };
                    (Actor::User(host), Command::RemoveCohost(remove))
                } else {
                    (
                        Actor::User(seat.user_id.clone()),
                        Command::LeaveStage(target),
                    )
                }
            }
            // Nothing to answer or nobody seated: a request that the rules often refuse, which is fine.
            _ => (
                Actor::User(candidate),
                Command::RequestToJoin(target.into()),
            ),
        }
    }

    async fn run(mut self) -> Result<(), String> {
        loop {
            let (actor, command) = self.pick();
            self.sent += 1;
            let id = format!("{}-{}-{}", self.seed, self.client, self.sent);
            let options = Options {
                command_id: Some(CommandId::new(&id).map_err(|e| e.to_string())?),
                expected_version: None,
            };
            let name = command.name();
            match self.engine.execute(actor, command, options).await {
                // Every command this client sends appends at least one event when accepted (no presence).
                Ok(_) => self.ack(&format!("{id} {name} 1\n"))?,
                Err(error) if is_rejection(&error) => {}
                Err(error) => return Err(format!("{name} {id}: {error}")),
            }
            // Some clients think a little between commands, so batches vary in size.
            if self.client.is_multiple_of(4) {
                tokio::time::sleep(Duration::from_micros(self.rng.below(500))).await;
            }
        }
    }

    /// Records an ack as one whole line in one `write`.
    fn ack(&self, line: &str) -> Result<(), String> {
        let written = (&*self.acks)
            .write(line.as_bytes())
            .map_err(|e| format!("cannot write the ack file: {e}"))?;
        if written != line.len() {
            return Err(format!(
                "short write to the ack file: {written} of {}",
                line.len()
            ));
        }
        Ok(())
    }
}

/// A rule's refusal is an answer; anything else (unavailable, internal) means the engine is in trouble.
fn is_rejection(error: &Error) -> bool {
    !matches!(error.code(), ErrorCode::Unavailable | ErrorCode::Internal)
}

struct Args {
    data_dir: PathBuf,
    ack_file: PathBuf,
    seed: u64,
    clients: usize,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        return Err("usage: crash-child <data_dir> <ack_file> <seed> [clients]".into());
    }
    let seed = args[2].parse().map_err(|e| format!("bad seed: {e}"))?;
    let clients = match args.get(3) {
        Some(text) => text.parse().map_err(|e| format!("bad client count: {e}"))?,
        None => CLIENTS_DEFAULT,
    };
    if !(1..=CLIENTS_MAX).contains(&clients) {
        return Err(format!("clients must be from 1 to {CLIENTS_MAX}"));
    }
    Ok(Args {
        data_dir: PathBuf::from(&args[0]),
        ack_file: PathBuf::from(&args[1]),
        seed,
        clients,
    })
}

/// Ends the process when the test closes our stdin, so a dead test leaves no child behind.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut line = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut line)
            .is_ok_and(|n| n > 0)
        {
            line.clear();
        }
        eprintln!("crash-child: stdin closed; exiting");
        std::process::exit(3);
    });
}

async fn run(args: Args) -> Result<Infallible, String> {
    let acks = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.ack_file)
        .map_err(|e| format!("cannot open {}: {e}", args.ack_file.display()))?;
    let acks = Arc::new(acks);
    let engine = Engine::open(Config::new(&args.data_dir)).map_err(|e| format!("open: {e}"))?;
    println!("ready");
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..args.clients {
        clients.spawn(
            Client {
                engine: engine.clone(),
                acks: acks.clone(),
                rng: Rng::new(args.seed ^ (client as u64).wrapping_mul(0x1000_0000_01B3)),
                seed: args.seed,
                client,
                sent: 0,
            }
            .run(),
        );
    }
    let first = tokio::time::timeout(LIFETIME_MAX, clients.join_next()).await;
    match first {
        Err(_) => Err("lifetime exceeded; the test never killed this child".into()),
        Ok(None) => Err("no clients".into()),
        Ok(Some(Ok(Ok(())))) => Err("a client stopped".into()),
        Ok(Some(Ok(Err(reason)))) => Err(reason),
        Ok(Some(Err(panic))) => Err(format!("a client panicked: {panic}")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(reason) => {
            eprintln!("crash-child: {reason}");
            return ExitCode::from(2);
        }
    };
    exit_when_stdin_closes();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("crash-child: cannot start tokio: {e}");
            return ExitCode::from(2);
        }
    };
    let Err(reason) = runtime.block_on(run(args));
    eprintln!("crash-child: {reason}");
    ExitCode::FAILURE
}
