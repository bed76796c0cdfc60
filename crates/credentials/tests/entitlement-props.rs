//! Over random command histories, a co-host token is obtainable exactly while the user holds an approved seat
//! in a live room, and never otherwise.
//!
//! A separate, simple model follows every command the rules accept and says what `get_broadcaster_data` must
//! answer each user. The property runs against `cohost-core` directly (fast, many cases), and in a shorter
//! form through a real engine and `Credentials`, whose replies to accept are checked too.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cohost_core::{Context, Entitlement, Policy, RoomState, apply, decide, entitlement};
use cohost_credentials::{Credentials, LiveKitConfig, Minter};
use cohost_engine::{Broadcaster, Engine, ManualClock, Options};
use cohost_proto::{
    Actor, BroadcasterData, BroadcasterRole, Command, CreateRoom, ErrorCode, InvitationId,
    InvitationTarget, Reply, RoomId, RoomTarget, UserId, UserTarget,
};
use livekit_api::access_token::TokenVerifier;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const ROOM: &str = "stage-1";
/// Users 0..ACTORS act and are invited; the last one never takes part, so it is always a stranger.
const USERS: [&str; 5] = ["u0", "u1", "u2", "u3", "zed"];
const ACTORS: usize = 4;
const PREFIX: &str = "lk-";
const KEY: &str = "props-key";
const SECRET: &str = "props-secret";
/// A fixed clock well before any invitation's expiry, so offers never lapse in these histories.
const NOW_MS: u64 = 1_700_000_000_000;

/// Who issues a step.
#[derive(Debug, Clone, Copy)]
enum Who {
    User(usize),
    System,
    /// The party the rules would let do it (the host, the responder, the initiator, a seated co-host), so
    /// histories get somewhere instead of being mostly refused.
    Party,
}

/// Which invitation a step names.
#[derive(Debug, Clone, Copy)]
enum Offer {
    /// The n-th pending one (modulo their count).
    Pending(usize),
    /// Any number, pending, ended or never made.
    Number(u64),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Create(Who, Option<u8>),
    GoLive(Who),
    Stop(Who),
    Invite(Who, usize),
    Request(Who),
    Accept(Who, Offer),
    Reject(Who, Offer),
    Cancel(Who, Offer),
    Remove(Who, usize),
    Leave(Who),
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![
        3 => (0..ACTORS).prop_map(Who::User),
        1 => Just(Who::System),
        4 => Just(Who::Party),
    ]
}

fn offer() -> impl Strategy<Value = Offer> {
    prop_oneof![
        3 => (0..4usize).prop_map(Offer::Pending),
        1 => (1..=8u64).prop_map(Offer::Number),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (who(), prop::option::of(1..=3u8)).prop_map(|(w, max)| Step::Create(w, max)),
        2 => who().prop_map(Step::GoLive),
        1 => who().prop_map(Step::Stop),
        4 => (who(), 0..ACTORS).prop_map(|(w, u)| Step::Invite(w, u)),
        3 => who().prop_map(Step::Request),
        5 => (who(), offer()).prop_map(|(w, o)| Step::Accept(w, o)),
        2 => (who(), offer()).prop_map(|(w, o)| Step::Reject(w, o)),
        1 => (who(), offer()).prop_map(|(w, o)| Step::Cancel(w, o)),
        2 => (who(), 0..ACTORS).prop_map(|(w, u)| Step::Remove(w, u)),
        2 => who().prop_map(Step::Leave),
    ]
}

/// A room created by a random user, then `steps` random steps.
fn history(steps: usize) -> impl Strategy<Value = Vec<Step>> {
    (
        0..ACTORS,
        prop::option::of(1..=3u8),
        prop::collection::vec(step(), 1..=steps),
    )
        .prop_map(|(host, max_cohosts, mut steps)| {
            steps.insert(0, Step::Create(Who::User(host), max_cohosts));
            steps
        })
}

fn user(index: usize) -> UserId {
    UserId::new(USERS[index]).unwrap()
}

fn room_id() -> RoomId {
    RoomId::new(ROOM).unwrap()
}

/// Turns a step into an actor and a command, picking `Who::Party` and `Offer::Pending` from the current state.
fn resolve(state: &RoomState, step: Step) -> (Actor, Command) {
    let room = || RoomTarget { room_id: room_id() };
    let host = state.room().map(|room| room.host.clone());
    let as_host = || host.clone().unwrap_or_else(|| user(0));
    let invitation = |offer: Offer| {
        let number = match offer {
            Offer::Pending(n) => {
                let pending: Vec<_> = state.pending().collect();
                pending
                    .get(n % pending.len().max(1))
                    .map_or(1, |invitation| invitation.invitation_id.number())
            }
            Offer::Number(n) => n,
        };
        InvitationId::new(room_id(), number).unwrap()
    };
    let actor = |who: Who, party: &dyn Fn() -> UserId| match who {
        Who::User(index) => Actor::User(user(index)),
        Who::System => Actor::System,
        Who::Party => Actor::User(party()),
    };
    match step {
        Step::Create(who, max_cohosts) => {
            let command = Command::CreateRoom(CreateRoom {
                room_id: room_id(),
                title: None,
                max_cohosts,
            });
            (actor(who, &|| user(0)), command)
        }
        Step::GoLive(who) => (actor(who, &as_host), Command::GoLive(room())),
        Step::Stop(who) => (actor(who, &as_host), Command::StopRoom(room())),
        Step::Invite(who, candidate) => {
            let target = UserTarget {
                room_id: room_id(),
                user_id: user(candidate),
            };
            (actor(who, &as_host), Command::Invite(target.into()))
        }
        Step::Remove(who, cohost) => {
            let target = UserTarget {
                room_id: room_id(),
                user_id: user(cohost),
            };
            (actor(who, &as_host), Command::RemoveCohost(target))
        }
        Step::Request(who) => {
            let candidate = || {
                (0..ACTORS)
                    .map(user)
                    .find(|u| Some(u) != host.as_ref() && !state.is_cohost(u))
                    .unwrap_or_else(|| user(0))
            };
            (
                actor(who, &candidate),
                Command::RequestToJoin(room().into()),
            )
        }
        Step::Leave(who) => {
            let seated = || {
                state
                    .room()
                    .and_then(|room| room.cohosts.first())
                    .map_or_else(|| user(0), |seat| seat.user_id.clone())
            };
            (actor(who, &seated), Command::LeaveStage(room()))
        }
        Step::Accept(who, offer) | Step::Reject(who, offer) | Step::Cancel(who, offer) => {
            let invitation_id = invitation(offer);
            let held = state.invitation(&invitation_id);
            let party = || match (step, held) {
                (Step::Cancel(..), Some(invitation)) => invitation.initiator().clone(),
                (_, Some(invitation)) => invitation.responder().clone(),
                (_, None) => as_host(),
            };
            let target = InvitationTarget { invitation_id };
            let command = match step {
                Step::Accept(..) => Command::AcceptInvitation(target),
                Step::Reject(..) => Command::RejectInvitation(target),
                _ => Command::CancelInvitation(target),
            };
            (actor(who, &party), command)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Status {
    #[default]
    Missing,
    Idle,
    Live,
    Ended,
}

/// The reference: what each accepted command means for the stage, written without `cohost-core`.
#[derive(Debug, Default)]
struct Model {
    status: Status,
    host: Option<UserId>,
    /// Pending offers: invitation number → candidate.
    pending: BTreeMap<u64, UserId>,
    /// Held seats: co-host → the invitation number that seated them.
    seats: BTreeMap<UserId, u64>,
    /// Everyone who was ever the candidate of an offer.
    candidates: BTreeSet<UserId>,
    created: u64,
}

/// What `get_broadcaster_data` must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Host,
    /// Co-host credentials for the seat of this invitation number.
    Cohost(u64),
    Refused(ErrorCode),
}

impl Model {
    /// Follows a command the rules accepted; fails if the model cannot make sense of it.
    fn follow(&mut self, actor: &Actor, command: &Command) -> Result<(), TestCaseError> {
        let caller = || {
            actor
                .user()
                .cloned()
                .ok_or_else(|| fail("a user command from the system"))
        };
        match command {
            Command::CreateRoom(_) => {
                prop_assert_eq!(self.status, Status::Missing);
                self.host = Some(caller()?);
                self.status = Status::Idle;
            }
            Command::GoLive(_) => self.status = Status::Live,
            Command::StopRoom(_) => {
                self.status = Status::Ended;
                self.pending.clear();
            }
            Command::Invite(target) => self.offer(target.user_id.clone()),
            Command::RequestToJoin(_) => self.offer(caller()?),
            Command::AcceptInvitation(target) => {
                let number = target.invitation_id.number();
                let candidate = self.pending.remove(&number);
                let candidate =
                    candidate.ok_or_else(|| fail("accepted an offer that is not pending"))?;
                prop_assert!(self.seats.insert(candidate, number).is_none());
            }
            Command::RejectInvitation(target) | Command::CancelInvitation(target) => {
                let number = target.invitation_id.number();
                prop_assert!(self.pending.remove(&number).is_some());
            }
            Command::RemoveCohost(target) | Command::Disconnect(target) => {
                prop_assert!(self.seats.remove(&target.user_id).is_some());
            }
            Command::LeaveStage(_) => {
                prop_assert!(self.seats.remove(&caller()?).is_some());
            }
            Command::Expire(_)
            | Command::Presence(_)
            | Command::AddModerator(_)
            | Command::RemoveModerator(_)
            | Command::SetRequestsOpen(_)
            | Command::MoveCohost(_)
            | Command::LockSeat(_)
            | Command::UnlockSeat(_)
            | Command::BanUser(_)
            | Command::UnbanUser(_)
            | Command::SetCohostMedia(_)
            | Command::EndAbandoned(_) => return Err(fail("not generated")),
        }
        Ok(())
    }

    fn offer(&mut self, candidate: UserId) {
        self.created += 1;
        self.pending.insert(self.created, candidate.clone());
        self.candidates.insert(candidate);
    }

    fn expect(&self, user: &UserId) -> Expect {
        let Some(host) = &self.host else {
            return Expect::Refused(ErrorCode::NotFound);
        };
        let live = self.status == Status::Live;
        let not_live = Expect::Refused(ErrorCode::FailedPrecondition);
        if user == host {
            if live { Expect::Host } else { not_live }
        } else if let Some(&number) = self.seats.get(user) {
            if live {
                Expect::Cohost(number)
            } else {
                not_live
            }
        } else if self.candidates.contains(user) {
            Expect::Refused(ErrorCode::FailedPrecondition)
        } else {
            Expect::Refused(ErrorCode::PermissionDenied)
        }
    }
}

fn fail(why: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(why.into())
}

/// How often each interesting answer came up over a run, so the property is known not to hold vacuously.
#[derive(Debug, Default)]
struct Seen {
    host_tokens: Cell<u32>,
    cohost_tokens: Cell<u32>,
    seated_not_live: Cell<u32>,
    offer_no_seat: Cell<u32>,
}

impl Seen {
    fn count(&self, model: &Model, user: &UserId, expect: Expect) {
        let bump = |cell: &Cell<u32>| cell.set(cell.get() + 1);
        match expect {
            Expect::Host => bump(&self.host_tokens),
            Expect::Cohost(_) => bump(&self.cohost_tokens),
            Expect::Refused(ErrorCode::FailedPrecondition) if model.seats.contains_key(user) => {
                bump(&self.seated_not_live)
            }
            Expect::Refused(ErrorCode::FailedPrecondition) if model.host.as_ref() != Some(user) => {
                bump(&self.offer_no_seat)
            }
            Expect::Refused(_) => {}
        }
    }

    fn assert_covered(&self) {
        for (what, cell) in [
            ("host tokens", &self.host_tokens),
            ("co-host tokens", &self.cohost_tokens),
            (
                "seated co-hosts of a room that is not live",
                &self.seated_not_live,
            ),
            ("candidates without a seat", &self.offer_no_seat),
        ] {
            assert!(cell.get() > 0, "the histories never produced {what}");
        }
    }
}

fn minter() -> Minter {
    Minter::new(LiveKitConfig {
        url: "ws://localhost:7880".into(),
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        room_prefix: PREFIX.into(),
        token_ttl: Duration::from_secs(120),
        admin: false,
    })
}

/// Decodes the token with LiveKit's verifier and checks it gives `user` exactly `expect`'s role.
fn check_token(data: &BroadcasterData, user: &UserId, expect: Expect) -> Result<(), TestCaseError> {
    let claims = TokenVerifier::with_api_key(KEY, SECRET)
        .verify(&data.token)
        .map_err(|e| fail(format!("token does not verify: {e}")))?;
    prop_assert_eq!(&claims.sub, user.as_str());
    prop_assert_eq!(claims.video.room, format!("{PREFIX}{ROOM}"));
    prop_assert!(claims.video.room_join);
    prop_assert_eq!(claims.video.can_publish, Some(true));
    let metadata: serde_json::Value = serde_json::from_str(&claims.metadata)
        .map_err(|e| fail(format!("metadata is not JSON: {e}")))?;
    match expect {
        Expect::Host => {
            prop_assert_eq!(data.role, BroadcasterRole::Host);
            prop_assert!(claims.video.room_admin);
            prop_assert!(claims.video.can_publish_sources.is_empty());
            prop_assert_eq!(metadata, serde_json::json!({"role": "host"}));
        }
        Expect::Cohost(number) => {
            prop_assert_eq!(data.role, BroadcasterRole::Cohost);
            prop_assert!(!claims.video.room_admin);
            prop_assert_eq!(
                claims.video.can_publish_sources,
                vec!["camera", "microphone"]
            );
            let invitation_id = format!("{ROOM}.{number}");
            let expected = serde_json::json!({"role": "cohost", "invitation_id": invitation_id});
            prop_assert_eq!(metadata, expected);
        }
        Expect::Refused(code) => return Err(fail(format!("checked a token where {code} was due"))),
    }
    Ok(())
}

/// The core's `entitlement` for every user against the model, minting and verifying whenever it entitles.
fn check_core(
    state: &RoomState,
    model: &Model,
    minter: &Minter,
    seen: &Seen,
) -> Result<(), TestCaseError> {
    for index in 0..USERS.len() {
        let user = user(index);
        let expect = model.expect(&user);
        seen.count(model, &user, expect);
        let entitled = match (expect, entitlement(state, &user)) {
            (Expect::Host, Ok(Entitlement::Host)) => Broadcaster {
                role: BroadcasterRole::Host,
                invitation_id: None,
                audio: true,
                video: true,
            },
            (Expect::Cohost(number), Ok(Entitlement::Cohost(seat))) => {
                prop_assert_eq!(&seat.user_id, &user);
                prop_assert_eq!(seat.invitation_id.number(), number);
                Broadcaster {
                    role: BroadcasterRole::Cohost,
                    invitation_id: Some(seat.invitation_id.clone()),
                    audio: seat.audio,
                    video: seat.video,
                }
            }
            (Expect::Refused(code), Err(rejection)) => {
                prop_assert_eq!(rejection.code(), code, "{:?}: {}", user, rejection);
                continue;
            }
            (expect, got) => {
                return Err(fail(format!(
                    "{user:?}: the model says {expect:?}, the core {got:?}"
                )));
            }
        };
        let data = minter
            .mint(&room_id(), &user, &entitled)
            .map_err(|e| fail(e.to_string()))?;
        check_token(&data, &user, expect)?;
    }
    Ok(())
}

/// A runner with a fixed seed: a failure replays, and the coverage the tests assert (a co-host seated in a
/// live room) does not depend on the draw; with a random seed, 16 short histories sometimes seated no one.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

#[test]
fn core_entitles_a_cohost_exactly_while_seated_in_a_live_room() {
    let minter = minter();
    let seen = Seen::default();
    let result = runner(512).run(&history(40), |history| {
        let mut state = RoomState::default();
        let mut model = Model::default();
        for (index, step) in history.into_iter().enumerate() {
            let (actor, command) = resolve(&state, step);
            let ctx = Context::new(&actor, NOW_MS + index as u64, Policy::default());
            // A refused command changes nothing, in the core or the model.
            if let Ok(events) = decide(&state, &command, &ctx) {
                for event in &events {
                    apply(&mut state, event);
                }
                model.follow(&actor, &command)?;
            }
            check_core(&state, &model, &minter, &seen)?;
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    seen.assert_covered();
}

/// The real engine and `Credentials`: `broadcaster_data` for every user after every step, and the
/// credentials in accept's reply.
async fn check_engine(history: Vec<Step>, seen: &Seen) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let engine = Engine::open(cohost_engine::Config::new(dir.path()).with_clock(clock)).unwrap();
    let credentials = Credentials::new(engine.clone(), minter());
    let mut model = Model::default();
    let result = async {
        for step in history {
            let state = engine
                .room_states()
                .1
                .into_iter()
                .find_map(|(id, state)| (id == room_id()).then_some(state))
                .unwrap_or_default();
            let (actor, command) = resolve(&state, step);
            match credentials
                .execute(actor.clone(), command.clone(), Options::default())
                .await
            {
                Ok(reply) => {
                    model.follow(&actor, &command)?;
                    check_accept_reply(&model, &actor, &reply)?;
                }
                Err(error) => prop_assert!(
                    !matches!(error.code(), ErrorCode::Internal | ErrorCode::Unavailable),
                    "{:?} by {:?}: {}",
                    command,
                    actor,
                    error
                ),
            }
            for index in 0..USERS.len() {
                let user = user(index);
                let expect = model.expect(&user);
                seen.count(&model, &user, expect);
                match (expect, credentials.broadcaster_data(&room_id(), &user)) {
                    (Expect::Refused(code), Err(error)) => prop_assert_eq!(error.code(), code),
                    (Expect::Refused(_), Ok(_)) => {
                        return Err(fail(format!(
                            "{user:?} got credentials; {expect:?} was due"
                        )));
                    }
                    (_, Ok(data)) => check_token(&data, &user, expect)?,
                    (_, Err(error)) => {
                        return Err(fail(format!("{user:?}: {expect:?} was due, got {error}")));
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    engine.shutdown().await;
    result
}

/// accept's reply carries co-host credentials exactly when its caller is the new co-host of a live room.
fn check_accept_reply(model: &Model, actor: &Actor, reply: &Reply) -> Result<(), TestCaseError> {
    let Reply::Accepted(accepted) = reply else {
        return Ok(());
    };
    let candidate = &accepted.invitation.user_id;
    let due = actor.is(candidate) && model.status == Status::Live;
    match &accepted.broadcaster {
        Some(data) if due => check_token(data, candidate, model.expect(candidate)),
        None if !due => Ok(()),
        got => Err(fail(format!(
            "accept by {actor:?}: credentials due {due}, got {got:?}"
        ))),
    }
}

#[test]
fn engine_gives_cohost_credentials_exactly_while_seated_in_a_live_room() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = Seen::default();
    let result = runner(16).run(&history(29), |history| {
        runtime.block_on(check_engine(history, &seen))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(
        seen.cohost_tokens.get() > 0,
        "no history seated a co-host in a live room"
    );
}
