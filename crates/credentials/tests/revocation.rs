//! Revocation against a local stand-in for LiveKit's Twirp RoomService that records what it receives.
//!
//! Every call must be `POST /twirp/livekit.RoomService/RemoveParticipant` with a protobuf
//! `RoomParticipantIdentity` body and an admin token (`room_admin` for that LiveKit room, signed with the
//! configured key). The stand-in fails calls on purpose, so the retry is tested. Between two removals the
//! revoker is killed and the engine restarted: each removal still succeeds exactly once, and nothing already
//! done is sent again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohost_credentials::revoke::SINK;
use cohost_credentials::{LiveKitConfig, Revoker};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_proto::{
    Actor, Command, CreateRoom, Envelope, InvitationTarget, Reply, RoomId, RoomTarget, UserId,
    UserTarget,
};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use livekit_api::access_token::TokenVerifier;
use livekit_protocol::{RemoveParticipantResponse, RoomParticipantIdentity};
use prost::Message;

const API_KEY: &str = "stand-in-key";
const API_SECRET: &str = "stand-in-secret-of-a-decent-length";
const ROOM: &str = "stage-1";
/// The LiveKit room of `ROOM` under the test's prefix.
const LIVEKIT_ROOM: &str = "cohost-stage-1";
const ROUTE: &str = "/twirp/livekit.RoomService/RemoveParticipant";
const START_MS: u64 = 1_700_000_000_000;
/// Every wait has this bound, so a stuck revoker fails the test instead of hanging it.
const WAIT_MAX: Duration = Duration::from_secs(5);

/// How the stand-in answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 with an empty protobuf `RemoveParticipantResponse`.
    Removed,
    /// 503 with the Twirp JSON error `unavailable`.
    Unavailable,
    /// 500 with a body that is not a Twirp error, as a proxy in front of LiveKit may send.
    ProxyError,
    /// 404 with the Twirp JSON error `not_found`: LiveKit no longer has the participant.
    NotFound,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Bytes,
    answer: Answer,
}

/// What a call asked for and how it was answered: (LiveKit room, identity, revoke_token_ts, answer).
type Seen = (String, String, i64, Answer);

#[derive(Debug)]
struct Script {
    /// Answers for the next calls, in order.
    planned: VecDeque<Answer>,
    /// The answer once `planned` is empty.
    otherwise: Answer,
    calls: Vec<Call>,
}

/// A LiveKit RoomService stand-in on a free loopback port.
#[derive(Debug, Clone)]
struct StandIn {
    port: u16,
    script: Arc<Mutex<Script>>,
}

impl StandIn {
    async fn start() -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script {
            planned: VecDeque::new(),
            otherwise: Answer::Removed,
            calls: Vec::new(),
        }));
        tokio::spawn(serve(listener, script.clone()));
        StandIn { port, script }
    }

    /// The next calls get `answers`, in order; the ones after them `otherwise`.
    fn plan(&self, answers: &[Answer], otherwise: Answer) {
        let mut script = self.script.lock().unwrap();
        script.planned = answers.iter().copied().collect();
        script.otherwise = otherwise;
    }

    fn calls(&self) -> Vec<Call> {
        self.script.lock().unwrap().calls.clone()
    }

    /// Every call so far, checked to be a well-formed RemoveParticipant with an admin token for its room.
    fn seen(&self) -> Vec<Seen> {
        self.calls().iter().map(checked).collect()
    }

    /// Waits until `check` holds for what was seen.
    async fn until(&self, what: &str, check: impl Fn(&[Seen]) -> bool) {
        eventually(what, || check(&self.seen())).await;
    }
}

async fn serve(listener: tokio::net::TcpListener, script: Arc<Mutex<Script>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let script = script.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(script.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    script: Arc<Mutex<Script>>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (content_type, authorization) = (header(CONTENT_TYPE), header(AUTHORIZATION));
    let (method, path) = (
        request.method().to_string(),
        request.uri().path().to_owned(),
    );
    let body = request.into_body().collect().await?.to_bytes();
    let answer = {
        let mut script = script.lock().unwrap();
        let answer = script.planned.pop_front().unwrap_or(script.otherwise);
        script.calls.push(Call {
            method,
            path,
            content_type,
            authorization,
            body,
            answer,
        });
        answer
    };
    Ok(response(answer))
}

fn response(answer: Answer) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match answer {
        Answer::Removed => (
            StatusCode::OK,
            "application/protobuf",
            RemoveParticipantResponse::default().encode_to_vec(),
        ),
        Answer::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            br#"{"code":"unavailable","msg":"the stand-in fails on purpose"}"#.to_vec(),
        ),
        Answer::ProxyError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            b"upstream connect error".to_vec(),
        ),
        Answer::NotFound => (
            StatusCode::NOT_FOUND,
            "application/json",
            br#"{"code":"not_found","msg":"participant not found"}"#.to_vec(),
        ),
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

/// Asserts the call is a RemoveParticipant as livekit-api sends it, with an admin token for the room it names,
/// and returns what it asked for.
fn checked(call: &Call) -> Seen {
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", ROUTE));
    assert_eq!(call.content_type.as_deref(), Some("application/protobuf"));
    let request = RoomParticipantIdentity::decode(call.body.clone())
        .unwrap_or_else(|e| panic!("the body is not a RoomParticipantIdentity: {e}"));
    let jwt = call
        .authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token in {:?}", call.authorization));
    let claims = TokenVerifier::with_api_key(API_KEY, API_SECRET)
        .verify(jwt)
        .unwrap_or_else(|e| panic!("the admin token does not verify with the configured key: {e}"));
    assert!(claims.video.room_admin, "the token lacks room_admin");
    assert_eq!(
        claims.video.room, request.room,
        "the token is for another room"
    );
    (
        request.room,
        request.identity,
        request.revoke_token_ts,
        call.answer,
    )
}

fn seen(identity: &str, revoke_token_ts: i64, answer: Answer) -> Seen {
    (
        LIVEKIT_ROOM.to_owned(),
        identity.to_owned(),
        revoke_token_ts,
        answer,
    )
}

/// Successful calls per (room, identity, revoke_token_ts).
fn successes(seen: &[Seen]) -> HashMap<(String, String, i64), usize> {
    let mut counts = HashMap::new();
    for (room, identity, ts, answer) in seen {
        if *answer == Answer::Removed {
            *counts
                .entry((room.clone(), identity.clone(), *ts))
                .or_default() += 1;
        }
    }
    counts
}

fn success(identity: &str, revoke_token_ts: i64) -> ((String, String, i64), usize) {
    (
        (
            LIVEKIT_ROOM.to_owned(),
            identity.to_owned(),
            revoke_token_ts,
        ),
        1,
    )
}

/// The `revoke_token_ts` the revoker sends for an event: the event's `at_ms`, as `revoke.rs` passes it.
/// LiveKit compares it with a token's `nbf`, in seconds; rounded up to revoke tokens of the same second.
fn revoke_token_ts(envelope: &Envelope) -> i64 {
    envelope.at_ms.div_ceil(1_000) as i64
}

fn livekit(port: u16) -> LiveKitConfig {
    LiveKitConfig {
        url: format!("ws://127.0.0.1:{port}"),
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        room_prefix: "cohost-".into(),
        token_ttl: Duration::from_secs(600),
        admin: true,
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    Engine::open(Config::new(dir).with_clock(clock.clone())).expect("the engine opens")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(engine: &Engine, by: &str, command: Command) -> Reply {
    let name = command.name();
    engine
        .execute(
            Actor::User(UserId::new(by).unwrap()),
            command,
            Options::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} by {by} failed: {e}"))
}

fn room_id() -> RoomId {
    RoomId::new(ROOM).unwrap()
}

/// Alice's live room with bob and carol seated.
async fn live_room_with_bob_and_carol(engine: &Engine) {
    let create = CreateRoom {
        room_id: room_id(),
        title: None,
        max_cohosts: None,
    };
    run(engine, "alice", Command::CreateRoom(create)).await;
    run(
        engine,
        "alice",
        Command::GoLive(RoomTarget { room_id: room_id() }),
    )
    .await;
    seat(engine, "bob").await;
    seat(engine, "carol").await;
}

/// Alice invites `user`, who accepts.
async fn seat(engine: &Engine, user: &str) {
    let invite = Command::Invite(UserTarget {
        room_id: room_id(),
        user_id: UserId::new(user).unwrap(),
    });
    let Reply::Invitation(invitation) = run(engine, "alice", invite).await else {
        panic!("invite answers with the invitation");
    };
    let accept = Command::AcceptInvitation(InvitationTarget {
        invitation_id: invitation.invitation_id,
    });
    run(engine, user, accept).await;
}

/// The clock moves a second, then `by` runs `command`; returns the last envelope it wrote.
async fn step(engine: &Engine, clock: &ManualClock, by: &str, command: Command) -> Envelope {
    clock.advance(1_000);
    run(engine, by, command).await;
    let last_seq = engine.last_seq();
    engine
        .read_events(last_seq, 1)
        .unwrap()
        .pop()
        .expect("the command wrote an event")
}

fn remove(user: &str) -> Command {
    Command::RemoveCohost(UserTarget {
        room_id: room_id(),
        user_id: UserId::new(user).unwrap(),
    })
}

fn leave() -> Command {
    Command::LeaveStage(RoomTarget { room_id: room_id() })
}

fn stop() -> Command {
    Command::StopRoom(RoomTarget { room_id: room_id() })
}

async fn done(revoker: &Revoker, envelope: &Envelope) {
    let what = format!("the revoker to finish seq {}", envelope.seq);
    eventually(&what, || revoker.done_seq() >= envelope.seq).await;
}

/// Stops the revoker, after which it calls nothing, and checks that it called nothing more since `seen` was
/// taken: no removal is sent again once it succeeded.
async fn stop_quietly(revoker: Revoker, stand_in: &StandIn, seen: &[Seen]) {
    revoker.stop().await;
    assert_eq!(
        stand_in.seen(),
        seen,
        "unexpected calls after the last removal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_removal_reaches_livekit_once_through_failures() {
    let stand_in = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = open(dir.path(), &clock);
    let revoker = Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap();
    live_room_with_bob_and_carol(&engine).await;
    assert_eq!(stand_in.calls().len(), 0, "no one left the stage yet");

    // The host removes bob: two failures, then LiveKit accepts.
    stand_in.plan(&[Answer::Unavailable, Answer::Unavailable], Answer::Removed);
    let removed = step(&engine, &clock, "alice", remove("bob")).await;
    assert_eq!(removed.event.type_name(), "cohost_removed");
    done(&revoker, &removed).await;
    let bob = revoke_token_ts(&removed);
    assert_eq!(
        stand_in.seen(),
        vec![
            seen("bob", bob, Answer::Unavailable),
            seen("bob", bob, Answer::Unavailable),
            seen("bob", bob, Answer::Removed),
        ]
    );
    assert_eq!(engine.cursor(SINK).unwrap(), removed.seq);

    // Carol leaves: a failure that is not even a Twirp error, then LiveKit accepts.
    stand_in.plan(&[Answer::ProxyError], Answer::Removed);
    let left = step(&engine, &clock, "carol", leave()).await;
    assert_eq!(left.event.type_name(), "cohost_left");
    done(&revoker, &left).await;
    let carol = revoke_token_ts(&left);
    assert_eq!(
        stand_in.seen()[3..],
        [
            seen("carol", carol, Answer::ProxyError),
            seen("carol", carol, Answer::Removed),
        ]
    );
    assert_eq!(engine.cursor(SINK).unwrap(), left.seq);

    // Dave is seated when the room stops: the stop removes its co-hosts, then its host. LiveKit no longer
    // has alice; not_found counts as removed and is not retried.
    seat(&engine, "dave").await;
    stand_in.plan(&[Answer::Removed, Answer::NotFound], Answer::Unavailable);
    let stopped = step(&engine, &clock, "alice", stop()).await;
    assert_eq!(stopped.event.type_name(), "room_stopped");
    done(&revoker, &stopped).await;
    let stop_ts = revoke_token_ts(&stopped);
    assert_eq!(
        stand_in.seen()[5..],
        [
            seen("dave", stop_ts, Answer::Removed),
            seen("alice", stop_ts, Answer::NotFound),
        ]
    );
    assert_eq!(engine.cursor(SINK).unwrap(), stopped.seq);
    assert_eq!(
        successes(&stand_in.seen()),
        HashMap::from([
            success("bob", bob),
            success("carol", carol),
            success("dave", stop_ts)
        ])
    );

    stop_quietly(revoker, &stand_in, &stand_in.seen()).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_retrying_neither_loses_nor_repeats_a_removal() {
    let stand_in = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = open(dir.path(), &clock);
    // The first revoker runs on a runtime of its own, so it can be killed mid-retry without a goodbye.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let first = {
        let _runtime = doomed.enter();
        Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap()
    };
    live_room_with_bob_and_carol(&engine).await;

    let removed = step(&engine, &clock, "alice", remove("bob")).await;
    done(&first, &removed).await;
    let bob = revoke_token_ts(&removed);
    assert_eq!(stand_in.seen(), vec![seen("bob", bob, Answer::Removed)]);

    // LiveKit is down when carol leaves; the revoker is killed while it retries, then the engine stops. After
    // the fourth failure the revoker backs off for 400 ms, so the kill lands between calls, not during one.
    stand_in.plan(&[], Answer::Unavailable);
    let left = step(&engine, &clock, "carol", leave()).await;
    let carol = revoke_token_ts(&left);
    stand_in
        .until("four failed calls for carol", |seen| seen.len() >= 5)
        .await;
    // The handle stays alive: dropping it would stop a revoker that outlived the kill. Once the runtime's
    // threads have stopped, the killed revoker can call nothing more.
    tokio::task::spawn_blocking(move || doomed.shutdown_timeout(WAIT_MAX))
        .await
        .unwrap();
    engine.shutdown().await;
    let before_restart = stand_in.seen();
    assert!(
        before_restart[1..]
            .iter()
            .all(|call| *call == seen("carol", carol, Answer::Unavailable)),
        "only failed calls for carol after bob's removal: {before_restart:?}"
    );

    // Restart: bob's removal is behind the cursor, carol's is not.
    let engine = open(dir.path(), &clock);
    assert_eq!(engine.cursor(SINK).unwrap(), removed.seq);
    stand_in.plan(&[], Answer::Removed);
    let second = Revoker::start(engine.clone(), livekit(stand_in.port)).unwrap();
    done(&second, &left).await;
    assert_eq!(engine.cursor(SINK).unwrap(), left.seq);
    let all = stand_in.seen();
    stop_quietly(second, &stand_in, &all).await;

    assert_eq!(
        all[before_restart.len()..],
        [seen("carol", carol, Answer::Removed)],
        "after the restart only carol's removal is sent, once"
    );
    assert_eq!(
        successes(&all),
        HashMap::from([success("bob", bob), success("carol", carol)])
    );

    drop(first);
    engine.shutdown().await;
}
