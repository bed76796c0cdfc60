//! Revocation against a local stand-in for LiveKit's Twirp RoomService that records what it receives.
//!
//! Every call must be `POST /twirp/livekit.RoomService/RemoveParticipant` with a protobuf
//! `RoomParticipantIdentity` body and an admin token (`room_admin` for that LiveKit room, signed with the
//! configured key). The stand-in fails calls on purpose, so the retry is tested. Between two removals the
//! revoker is killed and the engine restarted: each removal still succeeds exactly once, and nothing already
//! done is sent again.

mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohost_credentials::revoke::SINK;
use cohost_credentials::{LiveKitConfig, Revoker};
use cohost_engine::{Config, Engine, ManualClock};
use cohost_proto::{Command, Envelope, InvitationTarget, Reply};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use livekit_api::access_token::TokenVerifier;
use livekit_protocol::{RemoveParticipantResponse, RoomParticipantIdentity};
use prost::Message;
use support::{create, go_live, invite, leave, remove, run, stop};

const API_KEY: &str = "stand-in-key";
const API_SECRET: &str = "stand-in-secret-of-a-decent-length";
/// The LiveKit room of `support::ROOM` under the test's prefix.
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

/// Alice invites `user`, who accepts.
async fn seat(engine: &Engine, user: &str) {
    let Reply::Invitation(invitation) = run(engine, "alice", invite(user)).await else {
        panic!("invite answers with the invitation");
    };
    let accept = Command::AcceptInvitation(InvitationTarget {
        invitation_id: invitation.invitation_id,
    });
    run(engine, user, accept).await;
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

/// A step of a revocation script: who runs which command; the calls LiveKit must then get, each an identity
/// and the stand-in's answer to it; and the stand-in's answer to any call after those.
type Step<'a> = (&'a str, Command, &'a [(&'a str, Answer)], Answer);

/// The stand-in, and an engine on a temporary directory with a manual clock.
struct Harness {
    stand_in: StandIn,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Engine,
}

impl Harness {
    async fn start() -> Self {
        let stand_in = StandIn::start().await;
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(START_MS));
        let engine = open(dir.path(), &clock);
        Self {
            stand_in,
            dir,
            clock,
            engine,
        }
    }

    fn revoker(&self) -> Revoker {
        Revoker::start(self.engine.clone(), livekit(self.stand_in.port)).unwrap()
    }

    /// Alice's live room with bob and carol seated.
    async fn live_room_with_bob_and_carol(&self) {
        run(&self.engine, "alice", create()).await;
        run(&self.engine, "alice", go_live()).await;
        seat(&self.engine, "bob").await;
        seat(&self.engine, "carol").await;
    }

    /// The clock moves a second, then `by` runs `command`; returns the last envelope it wrote.
    async fn step(&self, by: &str, command: Command) -> Envelope {
        self.clock.advance(1_000);
        run(&self.engine, by, command).await;
        let last_seq = self.engine.last_seq();
        self.engine
            .read_events(last_seq, 1)
            .unwrap()
            .pop()
            .expect("the command wrote an event")
    }

    /// Runs each step with the stand-in answering as it says, and checks that once the revoker is done with
    /// the step's event, LiveKit got exactly the step's calls, each for the event's `revoke_token_ts`, and
    /// the revoker's cursor is at the event. Returns the events.
    async fn check(&self, revoker: &Revoker, script: Vec<Step<'_>>) -> Vec<Envelope> {
        let mut events = Vec::new();
        for (by, command, calls, otherwise) in script {
            let answers: Vec<Answer> = calls.iter().map(|&(_, answer)| answer).collect();
            self.stand_in.plan(&answers, otherwise);
            let before = self.stand_in.seen().len();
            let event = self.step(by, command).await;
            done(revoker, &event).await;
            let ts = revoke_token_ts(&event);
            let want: Vec<Seen> = calls
                .iter()
                .map(|&(identity, answer)| seen(identity, ts, answer))
                .collect();
            assert_eq!(self.stand_in.seen()[before..], want, "{by}'s {event:?}");
            assert_eq!(self.engine.cursor(SINK).unwrap(), event.seq);
            events.push(event);
        }
        events
    }
}

fn type_names(events: &[Envelope]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.type_name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_removal_reaches_livekit_once_through_failures() {
    use Answer::{NotFound, ProxyError, Removed, Unavailable};
    let h = Harness::start().await;
    let revoker = h.revoker();
    h.live_room_with_bob_and_carol().await;
    assert_eq!(h.stand_in.calls().len(), 0, "no one left the stage yet");

    // The host removes bob: two failures, then LiveKit accepts. Carol leaves: a failure that is not even a
    // Twirp error, then LiveKit accepts.
    let bob = [("bob", Unavailable), ("bob", Unavailable), ("bob", Removed)];
    let carol = [("carol", ProxyError), ("carol", Removed)];
    let mut events = h
        .check(
            &revoker,
            vec![
                ("alice", remove("bob"), &bob, Removed),
                ("carol", leave(), &carol, Removed),
            ],
        )
        .await;
    // Dave is seated when the room stops: the stop removes its co-hosts, then its host. LiveKit no longer
    // has alice; not_found counts as removed and is not retried.
    seat(&h.engine, "dave").await;
    let stopped = [("dave", Removed), ("alice", NotFound)];
    events.extend(
        h.check(&revoker, vec![("alice", stop(), &stopped, Unavailable)])
            .await,
    );
    assert_eq!(
        type_names(&events),
        ["cohost_removed", "cohost_left", "room_stopped"]
    );
    let [bob, carol, stop_ts] = [0, 1, 2].map(|i| revoke_token_ts(&events[i]));
    assert_eq!(
        successes(&h.stand_in.seen()),
        HashMap::from([
            success("bob", bob),
            success("carol", carol),
            success("dave", stop_ts)
        ])
    );

    stop_quietly(revoker, &h.stand_in, &h.stand_in.seen()).await;
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_while_retrying_neither_loses_nor_repeats_a_removal() {
    use Answer::{Removed, Unavailable};
    let mut h = Harness::start().await;
    // The first revoker runs on a runtime of its own, so it can be killed mid-retry without a goodbye.
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let first = {
        let _runtime = doomed.enter();
        h.revoker()
    };
    h.live_room_with_bob_and_carol().await;

    let script = vec![("alice", remove("bob"), &[("bob", Removed)][..], Removed)];
    let removed = h.check(&first, script).await.remove(0);
    let bob = revoke_token_ts(&removed);

    // LiveKit is down when carol leaves; the revoker is killed while it retries, then the engine stops. After
    // the fourth failure the revoker backs off for 400 ms, so the kill lands between calls, not during one.
    h.stand_in.plan(&[], Unavailable);
    let left = h.step("carol", leave()).await;
    let carol = revoke_token_ts(&left);
    h.stand_in
        .until("four failed calls for carol", |seen| seen.len() >= 5)
        .await;
    // The handle stays alive: dropping it would stop a revoker that outlived the kill. Once the runtime's
    // threads have stopped, the killed revoker can call nothing more.
    tokio::task::spawn_blocking(move || doomed.shutdown_timeout(WAIT_MAX))
        .await
        .unwrap();
    h.engine.shutdown().await;
    let before_restart = h.stand_in.seen();
    assert!(
        before_restart[1..]
            .iter()
            .all(|call| *call == seen("carol", carol, Unavailable)),
        "only failed calls for carol after bob's removal: {before_restart:?}"
    );

    // Restart: bob's removal is behind the cursor, carol's is not.
    h.engine = open(h.dir.path(), &h.clock);
    assert_eq!(h.engine.cursor(SINK).unwrap(), removed.seq);
    h.stand_in.plan(&[], Removed);
    let second = h.revoker();
    done(&second, &left).await;
    assert_eq!(h.engine.cursor(SINK).unwrap(), left.seq);
    let all = h.stand_in.seen();
    stop_quietly(second, &h.stand_in, &all).await;

    assert_eq!(
        all[before_restart.len()..],
        [seen("carol", carol, Removed)],
        "after the restart only carol's removal is sent, once"
    );
    assert_eq!(
        successes(&all),
        HashMap::from([success("bob", bob), success("carol", carol)])
    );

    drop(first);
    h.engine.shutdown().await;
}
