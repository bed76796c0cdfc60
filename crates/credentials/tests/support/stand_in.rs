//! A local stand-in for LiveKit's Twirp RoomService that records what it receives and answers as planned.
//!
//! Every call must be `POST /twirp/livekit.RoomService/RemoveParticipant` with a protobuf
//! `RoomParticipantIdentity` body, or `.../UpdateParticipant` with an `UpdateParticipantRequest`, and an admin
//! token (`room_admin` for that LiveKit room, signed with the configured key); [`StandIn::seen`] and
//! [`StandIn::updates`] check it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohost_credentials::LiveKitConfig;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use livekit_api::access_token::TokenVerifier;
use livekit_protocol::{
    ListParticipantsRequest, ListParticipantsResponse, ParticipantInfo, ParticipantPermission,
    RemoveParticipantResponse, RoomParticipantIdentity, UpdateParticipantRequest,
};
use prost::Message;

pub const API_KEY: &str = "stand-in-key";
pub const API_SECRET: &str = "stand-in-secret-of-a-decent-length";
/// The LiveKit room of `support::ROOM` under the test's prefix.
pub const LIVEKIT_ROOM: &str = "cohost-stage-1";
const ROUTE: &str = "/twirp/livekit.RoomService/RemoveParticipant";
const UPDATE_ROUTE: &str = "/twirp/livekit.RoomService/UpdateParticipant";
const LIST_ROUTE: &str = "/twirp/livekit.RoomService/ListParticipants";
/// Every wait has this bound, so a stuck revoker fails the test instead of hanging it.
pub const WAIT_MAX: Duration = Duration::from_secs(5);

/// How the stand-in answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with an empty protobuf `RemoveParticipantResponse` (or `ParticipantInfo`, to an update).
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
pub struct Call {
    method: String,
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Bytes,
    answer: Answer,
}

/// What a call asked for and how it was answered: (LiveKit room, identity, revoke_token_ts, answer).
pub type Seen = (String, String, i64, Answer);
/// What an update asked for: (LiveKit room, identity, permission, answer).
pub type Update = (String, String, Option<ParticipantPermission>, Answer);

#[derive(Debug)]
struct Script {
    /// Answers for the next calls, in order.
    planned: VecDeque<Answer>,
    /// The answer once `planned` is empty.
    otherwise: Answer,
    calls: Vec<Call>,
    /// What `ListParticipants` answers: (identity, sid) per LiveKit room; a room not here is `not_found`.
    participants: std::collections::HashMap<String, Vec<(String, String)>>,
}

/// A LiveKit RoomService stand-in on a free loopback port.
#[derive(Debug, Clone)]
pub struct StandIn {
    pub port: u16,
    script: Arc<Mutex<Script>>,
}

impl StandIn {
    pub async fn start() -> StandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script {
            planned: VecDeque::new(),
            otherwise: Answer::Removed,
            calls: Vec::new(),
            participants: Default::default(),
        }));
        tokio::spawn(serve(listener, script.clone()));
        StandIn { port, script }
    }

    /// The next calls get `answers`, in order; the ones after them `otherwise`.
    pub fn plan(&self, answers: &[Answer], otherwise: Answer) {
        let mut script = self.script.lock().unwrap();
        script.planned = answers.iter().copied().collect();
        script.otherwise = otherwise;
    }

    /// What `ListParticipants` answers for `room` from now on: these (identity, sid); `None`, no such room.
    pub fn set_participants(&self, room: &str, participants: Option<&[(&str, &str)]>) {
        let mut script = self.script.lock().unwrap();
        match participants {
            Some(list) => {
                let list = list.iter().map(|(i, s)| ((*i).to_owned(), (*s).to_owned()));
                script.participants.insert(room.to_owned(), list.collect());
            }
            None => {
                script.participants.remove(room);
            }
        }
    }

    /// The rooms listed so far, checked to be well-formed ListParticipants calls with an admin token.
    pub fn listed(&self) -> Vec<String> {
        let calls = self.calls();
        let lists = calls.iter().filter(|call| call.path == LIST_ROUTE);
        lists
            .map(|call| {
                let request = ListParticipantsRequest::decode(call.body.clone())
                    .unwrap_or_else(|e| panic!("the body is not a ListParticipantsRequest: {e}"));
                check_admin(call, &request.room);
                request.room
            })
            .collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.script.lock().unwrap().calls.clone()
    }

    /// Every removal so far, checked to be a well-formed RemoveParticipant with an admin token for its room.
    pub fn seen(&self) -> Vec<Seen> {
        let calls = self.calls();
        let removals =
            (calls.iter()).filter(|call| call.path != UPDATE_ROUTE && call.path != LIST_ROUTE);
        removals.map(checked).collect()
    }

    /// Every update so far, checked to be a well-formed UpdateParticipant with an admin token for its room.
    pub fn updates(&self) -> Vec<Update> {
        let calls = self.calls();
        let updates = calls.iter().filter(|call| call.path == UPDATE_ROUTE);
        updates.map(checked_update).collect()
    }

    /// Waits until `check` holds for what was seen.
    pub async fn until(&self, what: &str, check: impl Fn(&[Seen]) -> bool) {
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
    let path_is_update = path == UPDATE_ROUTE;
    let body = request.into_body().collect().await?.to_bytes();
    if path == LIST_ROUTE {
        return Ok(list_participants(
            &script,
            method,
            path,
            content_type,
            authorization,
            body,
        ));
    }
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
    Ok(response(answer, path_is_update))
}

/// Answers `ListParticipants` from the script's participants (not planned answers), recording the call.
fn list_participants(
    script: &Mutex<Script>,
    method: String,
    path: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut script = script.lock().unwrap();
    let room = ListParticipantsRequest::decode(body.clone())
        .map(|r| r.room)
        .unwrap_or_default();
    let listed = script.participants.get(&room).cloned();
    script.calls.push(Call {
        method,
        path,
        content_type,
        authorization,
        body,
        answer: if listed.is_some() {
            Answer::Removed
        } else {
            Answer::NotFound
        },
    });
    let Some(listed) = listed else {
        return response(Answer::NotFound, false);
    };
    let participants = (listed.into_iter())
        .map(|(identity, sid)| ParticipantInfo {
            identity,
            sid,
            ..Default::default()
        })
        .collect();
    let body = ListParticipantsResponse { participants }.encode_to_vec();
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/protobuf")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid")
}

fn response(answer: Answer, update: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match answer {
        Answer::Removed if update => (
            StatusCode::OK,
            "application/protobuf",
            ParticipantInfo::default().encode_to_vec(),
        ),
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
pub fn checked(call: &Call) -> Seen {
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", ROUTE));
    let request = RoomParticipantIdentity::decode(call.body.clone())
        .unwrap_or_else(|e| panic!("the body is not a RoomParticipantIdentity: {e}"));
    check_admin(call, &request.room);
    (
        request.room,
        request.identity,
        request.revoke_token_ts,
        call.answer,
    )
}

/// Asserts the call is an UpdateParticipant that changes nothing but the permissions, with an admin token for
/// the room it names, and returns what it asked for.
pub fn checked_update(call: &Call) -> Update {
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", UPDATE_ROUTE)
    );
    let request = UpdateParticipantRequest::decode(call.body.clone())
        .unwrap_or_else(|e| panic!("the body is not an UpdateParticipantRequest: {e}"));
    check_admin(call, &request.room);
    assert!(
        request.metadata.is_empty() && request.name.is_empty() && request.attributes.is_empty(),
        "an update of permissions touches nothing else: {request:?}"
    );
    (
        request.room,
        request.identity,
        request.permission,
        call.answer,
    )
}

fn check_admin(call: &Call, room: &str) {
    assert_eq!(call.content_type.as_deref(), Some("application/protobuf"));
    let jwt = call
        .authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token in {:?}", call.authorization));
    let claims = TokenVerifier::with_api_key(API_KEY, API_SECRET)
        .verify(jwt)
        .unwrap_or_else(|e| panic!("the admin token does not verify with the configured key: {e}"));
    assert!(claims.video.room_admin, "the token lacks room_admin");
    assert_eq!(claims.video.room, room, "the token is for another room");
}

pub fn seen(identity: &str, revoke_token_ts: i64, answer: Answer) -> Seen {
    (
        LIVEKIT_ROOM.to_owned(),
        identity.to_owned(),
        revoke_token_ts,
        answer,
    )
}

pub fn livekit(port: u16) -> LiveKitConfig {
    LiveKitConfig {
        url: format!("ws://127.0.0.1:{port}"),
        api_key: API_KEY.into(),
        api_secret: API_SECRET.into(),
        room_prefix: "cohost-".into(),
        token_ttl: Duration::from_secs(600),
        admin: true,
    }
}

pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
