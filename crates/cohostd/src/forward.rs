//! Cluster mode: any node answers any room route. A request for a room whose partition this node does not serve
//! goes, whole, to the partition's owner over NATS (`cohost_nats::cluster::forward`); the owner runs it through
//! its own router, as if the client had called it, and the response comes back as it was. So replies, errors,
//! token minting and read-your-writes are the owner's, whichever node was asked.
//!
//! A command the client sent without `Idempotency-Key` gets one here (`fwd-…`, echoed in the response's
//! `Idempotency-Key`), so that asking again while the partition moves never applies it twice. A forwarded request
//! is marked, and never forwarded a second time. A node subscribed for a partition whose lease has run out does
//! not answer at all, so the forwarding node gets the serving owner's answer or none, and asks again until its
//! deadline. A room's live collection (SSE) on a node that does not serve the room is streamed through from
//! the owner's own over HTTP ([`proxy_events`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cohost_nats::cluster::{ForwardError, Forwarder, Handler, Keys, Kind, Limits, Node};
use cohost_proto::{ErrorCode, InvitationId, RoomId};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::error::ApiError;
use crate::http::{AppState, BodyUnread};

/// Marks a forwarded request (the value is the forwarding node's id).
pub const FORWARDED_BY: &str = "cohost-forwarded-by";
/// How long a forwarding node keeps trying while a partition moves: longer than a failover (2 to 3 s) and
/// than JetStream's leader election after a server dies (11 to 15 s measured).
pub const DEADLINE: Duration = Duration::from_secs(20);
/// The largest answer an owner sends back; a NATS message holds 1 MiB by default.
const ANSWER_BYTES_MAX: usize = 900 * 1024;

/// What routes requests on a cluster node.
#[derive(Debug, Clone)]
pub struct Routing {
    pub node: Arc<Node>,
    pub forwarder: Forwarder,
    keys: Arc<Keys>,
    pub counts: Arc<Forwards>,
    /// The connection the `/v1/me` live collection follows the stream `COHOST` through; `None` when the
    /// relays do not publish into it (`COHOST_JETSTREAM` off).
    pub feed: Option<cohost_nats::Client>,
    /// What names a LiveKit webhook's room (its room prefix), so the webhook goes to the room's owner.
    pub livekit: Option<cohost_credentials::LiveKitConfig>,
}

/// Requests this node forwarded, for `/metrics`.
#[derive(Debug, Default)]
pub struct Forwards {
    /// Answered by an owner (whatever the answer).
    pub answered: AtomicU64,
    /// No owner answered before the deadline, or NATS failed: answered 503 here.
    pub unanswered: AtomicU64,
    /// Time from sending to the owner's answer, summed, in microseconds.
    pub answered_us: AtomicU64,
}

impl Routing {
    pub fn new(node: Arc<Node>, forwarder: Forwarder) -> Self {
        Self {
            node,
            forwarder,
            keys: Arc::new(Keys::default()),
            counts: Arc::default(),
            feed: None,
            livekit: None,
        }
    }
}

/// A request as it crosses to the owner.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    method: String,
    uri: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// A response as it comes back.
#[derive(Debug, Serialize, Deserialize)]
struct Answered {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Headers that belong to one connection, not to the request or response.
fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::HOST
        || name.as_str() == "keep-alive"
}

fn pairs(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

fn header_map(pairs: Vec<(String, Vec<u8>)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// The room a route names: `/v1/rooms/{room_id}…` or `/v1/invitations/{invitation_id}/…`.
fn room_in_path(path: &str) -> Option<RoomId> {
    if let Some(rest) = path.strip_prefix("/v1/rooms/") {
        let segment = rest.split('/').next()?;
        return RoomId::new(segment).ok();
    }
    let rest = path.strip_prefix("/v1/invitations/")?;
    let segment = rest.split('/').next()?;
    segment
        .parse::<InvitationId>()
        .ok()
        .map(|id| id.room_id().clone())
}

/// The room of `POST /v1/rooms`, from its body; `None` for a body that does not name one (the handler answers
/// it).
fn room_in_body(body: &[u8]) -> Option<RoomId> {
    #[derive(Deserialize)]
    struct Named {
        room_id: String,
    }
    let named: Named = serde_json::from_slice(body).ok()?;
    RoomId::new(&named.room_id).ok()
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// The middleware of a cluster node's router: a room route whose partition this node does not serve goes to
/// the owner; so does one whose partition moved away while it ran here and answered 503. Every other request
/// goes on here. A command gets an `Idempotency-Key` first if it has none, so that running it here and then at
/// the owner never applies it twice.
pub async fn route(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(routing) = state.routing.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_BY) {
        return next.run(request).await;
    }
    if request.method() == Method::GET && wants_events(request.headers()) {
        return match room_in_path(request.uri().path()) {
            Some(room) if routing.node.engine_for(&room).is_none() => {
                // Unauthenticated callers get their 401 here, before the owner is looked for.
                if let Err(error) = crate::http::reader(&state, request.headers(), request.uri()) {
                    return error.into_response();
                }
                proxy_events(&routing, routing.node.partition_of(&room), request).await
            }
            _ => next.run(request).await,
        };
    }
    if request.method() == Method::POST && request.uri().path() == WEBHOOK_PATH {
        return webhook_to_owner(&state, &routing, request, next).await;
    }
    let creates = request.method() == Method::POST && request.uri().path() == "/v1/rooms";
    let in_path = room_in_path(request.uri().path());
    if !creates && in_path.is_none() {
        return next.run(request).await;
    }
    // Unauthenticated callers get their 401 here, before anything is read or sent, as the handlers would
    // (a service credential passes: the owner checks what it may do).
    if let Err(error) = crate::http::actor(&state, request.headers()) {
        return error.into_response();
    }
    let unread = request.extensions().get::<BodyUnread>().cloned();
    let (mut parts, body) = request.into_parts();
    let body = match crate::http::read_whole(body, &parts.headers, state.body_read_timeout).await {
        Ok(body) => body,
        Err(error) => return body_failed(error, unread),
    };
    // `POST /v1/rooms` names its room in the body; one that names none is the handler's to refuse.
    let Some(room) = in_path.or_else(|| room_in_body(&body)) else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let generated = keyed(&routing, &mut parts);
    if routing.node.engine_for(&room).is_some() {
        let here = Request::from_parts(parts.clone(), Body::from(body.clone()));
        let response = next.run(here).await;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE
            || routing.node.engine_for(&room).is_some()
        {
            return with_key(response, generated);
        }
    }
    forward(
        &routing,
        routing.node.partition_of(&room),
        parts,
        body,
        generated,
    )
    .await
}

/// Where LiveKit sends its webhooks.
const WEBHOOK_PATH: &str = "/v1/livekit/webhook";

/// A LiveKit webhook names its room in the body, not the path: it goes to the owner of that room's partition,
/// which verifies it (the body and LiveKit's `Authorization` travel whole). One that names no cohost room is
/// the handler's here to answer.
async fn webhook_to_owner(
    state: &AppState,
    routing: &Routing,
    request: Request,
    next: Next,
) -> Response {
    let unread = request.extensions().get::<BodyUnread>().cloned();
    let (parts, body) = request.into_parts();
    let body = match crate::http::read_whole(body, &parts.headers, state.body_read_timeout).await {
        Ok(body) => body,
        Err(error) => return body_failed(error, unread),
    };
    let room = (routing.livekit.as_ref()).and_then(|livekit| room_of_webhook(livekit, &body));
    match room {
        Some(room) if routing.node.engine_for(&room).is_none() => {
            forward(routing, routing.node.partition_of(&room), parts, body, None).await
        }
        _ => next.run(Request::from_parts(parts, Body::from(body))).await,
    }
}

/// The cohost room of a LiveKit webhook's body (`{"room": {"name": ...}}`), if it names one.
fn room_of_webhook(livekit: &cohost_credentials::LiveKitConfig, body: &[u8]) -> Option<RoomId> {
    #[derive(Deserialize)]
    struct Event {
        room: Option<Named>,
    }
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let event: Event = serde_json::from_slice(body).ok()?;
    livekit.room_id(&event.room?.name)
}

/// Gives a command without `Idempotency-Key` one; the key given.
fn keyed(routing: &Routing, parts: &mut axum::http::request::Parts) -> Option<HeaderValue> {
    let changes = parts.method == Method::POST || parts.method == Method::DELETE;
    if !changes || parts.headers.contains_key("idempotency-key") {
        return None;
    }
    let key = HeaderValue::from_str(&routing.keys.next()).expect("the key is ASCII");
    parts.headers.insert("idempotency-key", key.clone());
    Some(key)
}

/// How long a node looks for the owner of a live collection's partition (a failover takes 2 to 3 s).
const OWNER_LOOKUP: Duration = Duration::from_secs(5);
/// A proxied live collection that brings nothing for this long has lost its owner without a word (a host
/// that died, a network cut): it ends, and the client resumes elsewhere. Keep-alives come every 15 s.
const PROXY_IDLE_MAX: Duration = Duration::from_secs(40);

/// A live collection of a room this node does not serve: the owner's own, streamed through as it comes (so a
/// slow client slows the owner's stream, and nothing queues here). The owner is found from the partition's
/// lease and the URL its heartbeat advertises. If the owner dies, the stream ends, and the client resumes with
/// `Last-Event-ID` on any node: room collections resume by room version, which every owner shares.
async fn proxy_events(routing: &Routing, partition: u32, request: Request) -> Response {
    let unavailable = |why: String| ApiError::new(ErrorCode::Unavailable, why).into_response();
    let deadline = Instant::now() + OWNER_LOOKUP;
    let own = routing.node.owner_url_of(routing.node.node_id()).await;
    let url = loop {
        // This node's own URL means it holds the lease but does not serve yet (a takeover): wait for it.
        if let Some(url) = routing.node.owner_url(partition).await
            && Some(&url) != own.as_ref()
        {
            break url;
        }
        if Instant::now() >= deadline {
            return unavailable(format!("no owner of partition {partition} could be found"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match stream_from(&url, routing.node.node_id(), request).await {
        Ok(response) => response,
        Err(why) => unavailable(format!(
            "the owner of partition {partition}, at {url}: {why}"
        )),
    }
}

/// Sends `request` to the node at `url` (marked as forwarded by `node`) and streams its response back.
async fn stream_from(url: &str, node: &str, request: Request) -> Result<Response, String> {
    let host = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are reached")?
        .trim_end_matches('/');
    let connect = tokio::net::TcpStream::connect(host);
    let stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| "no connection in time".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // Ends when the response's body ends or is dropped (the client went away).
    tokio::spawn(connection);
    let (parts, _) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = Request::new(Body::empty());
    *outgoing.method_mut() = Method::GET;
    *outgoing.uri_mut() = path
        .parse()
        .map_err(|_| "the path does not parse".to_owned())?;
    let headers = outgoing.headers_mut();
    for name in [
        header::AUTHORIZATION,
        header::ACCEPT,
        HeaderName::from_static("last-event-id"),
    ] {
        if let Some(value) = parts.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    headers.insert(
        header::HOST,
        HeaderValue::from_str(host).map_err(|e| e.to_string())?,
    );
    let by = HeaderValue::from_str(node).unwrap_or(HeaderValue::from_static("?"));
    headers.insert(FORWARDED_BY, by);
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(outgoing))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(response.map(|body| idle_bounded(Body::new(body))))
}

/// The body, ended once nothing has come for [`PROXY_IDLE_MAX`].
fn idle_bounded(body: Body) -> Body {
    let chunks = body.into_data_stream();
    Body::from_stream(futures::stream::unfold(chunks, |mut chunks| async move {
        let next =
            tokio::time::timeout(PROXY_IDLE_MAX, futures::StreamExt::next(&mut chunks)).await;
        match next {
            Ok(Some(chunk)) => Some((chunk, chunks)),
            Ok(None) | Err(_) => None,
        }
    }))
}

fn body_failed(error: ApiError, unread: Option<BodyUnread>) -> Response {
    if error.body_unread
        && let Some(unread) = unread
    {
        unread.mark();
    }
    error.into_response()
}

/// Sends the request to the owner of `partition` and answers with the owner's response; 503 if no owner
/// answered in time.
async fn forward(
    routing: &Routing,
    partition: u32,
    mut parts: axum::http::request::Parts,
    body: Bytes,
    generated: Option<HeaderValue>,
) -> Response {
    let node =
        HeaderValue::from_str(routing.node.node_id()).unwrap_or(HeaderValue::from_static("?"));
    parts.headers.insert(FORWARDED_BY, node);
    // CORS is answered by the node the browser asked, under its own origins, on the way out.
    parts.headers.remove(header::ORIGIN);
    let request = Forwarded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: pairs(&parts.headers),
        body: body.to_vec(),
    };
    let payload = Bytes::from(postcard::to_allocvec(&request).expect("a request encodes"));
    let sent = Instant::now();
    let deadline = sent + DEADLINE;
    let answered = routing
        .forwarder
        .request(partition, Kind::Http, payload, deadline)
        .await;
    let counts = &routing.counts;
    let counted = match &answered {
        Ok(_) => {
            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            counts.answered_us.fetch_add(us, Ordering::Relaxed);
            &counts.answered
        }
        Err(_) => &counts.unanswered,
    };
    counted.fetch_add(1, Ordering::Relaxed);
    let answer = match answered {
        Ok(answer) => answer,
        Err(error @ ForwardError::NoAnswer { .. }) => {
            let response = ApiError::new(ErrorCode::Unavailable, error.to_string()).into_response();
            return with_key(response, generated);
        }
        Err(error) => {
            let message = format!("the owner of partition {partition} could not be asked: {error}");
            return with_key(
                ApiError::new(ErrorCode::Unavailable, message).into_response(),
                generated,
            );
        }
    };
    let Some(answer) = decode(&answer) else {
        let message =
            format!("the owner of partition {partition} sent an answer that does not decode");
        return ApiError::new(ErrorCode::Internal, message).into_response();
    };
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *response.headers_mut() = header_map(answer.headers);
    with_key(response, generated)
}

/// A response that names the key this node gave the command, so that a client told `unavailable` can ask again
/// with it.
fn with_key(mut response: Response, key: Option<HeaderValue>) -> Response {
    if let Some(key) = key {
        response.headers_mut().insert("idempotency-key", key);
    }
    response
}

fn decode(answer: &[u8]) -> Option<Answered> {
    postcard::from_bytes(answer).ok()
}

/// The owner's side for one partition: runs each forwarded request through `router` while `serving` says this
/// node serves the partition, and does not answer otherwise (see the module docs), nor before the router is
/// set (the node is starting).
pub fn handler(
    router: Arc<OnceLock<Router>>,
    serving: Arc<dyn Fn() -> bool + Send + Sync>,
) -> Handler {
    Arc::new(move |payload: Bytes| {
        let (router, serving) = (router.get().cloned(), serving.clone());
        async move {
            if !serving() {
                return None;
            }
            let response = match (router, postcard::from_bytes::<Forwarded>(&payload)) {
                // The node is starting: no answer, and the forwarder asks again.
                (None, _) => return None,
                (Some(_), Err(error)) => {
                    ApiError::invalid(format!("a forwarded request does not decode: {error}"))
                        .into_response()
                }
                (Some(router), Ok(forwarded)) => match rebuild(forwarded) {
                    Ok(request) => router
                        .oneshot(request)
                        .await
                        .unwrap_or_else(|never| match never {}),
                    Err(error) => error.into_response(),
                },
            };
            // A 503 from a partition that moved away while the request ran is not the owner's answer: the
            // forwarder asks again, and the new owner answers.
            if response.status() == StatusCode::SERVICE_UNAVAILABLE && !serving() {
                return None;
            }
            Some(answer(response).await)
        }
        .boxed()
    })
}

/// What an owner answers by itself: 503 when `slots` are all taken, 500 when a handler panicked.
pub async fn limits(slots: Arc<tokio::sync::Semaphore>) -> Limits {
    let busy = ApiError::new(
        ErrorCode::Unavailable,
        "the room's owner has too many forwarded requests in flight; retry shortly",
    );
    let failed = ApiError::new(
        ErrorCode::Internal,
        "the room's owner failed on this request",
    );
    Limits {
        slots,
        busy: answer(busy.into_response()).await,
        failed: answer(failed.into_response()).await,
    }
}

fn rebuild(forwarded: Forwarded) -> Result<Request, ApiError> {
    let method = Method::from_bytes(forwarded.method.as_bytes())
        .map_err(|_| ApiError::invalid("a forwarded request has no valid method"))?;
    let uri: Uri = forwarded
        .uri
        .parse()
        .map_err(|_| ApiError::invalid("a forwarded request has no valid path"))?;
    let mut request = Request::new(Body::from(forwarded.body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = header_map(forwarded.headers);
    Ok(request)
}

async fn answer(response: Response) -> Bytes {
    let (parts, body) = response.into_parts();
    let answered = match axum::body::to_bytes(body, ANSWER_BYTES_MAX).await {
        Ok(body) => Answered {
            status: parts.status.as_u16(),
            headers: pairs(&parts.headers),
            body: body.to_vec(),
        },
        Err(error) => {
            let message = format!("the owner's answer could not be sent back: {error}");
            let response = ApiError::new(ErrorCode::Internal, message).into_response();
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, ANSWER_BYTES_MAX)
                .await
                .unwrap_or_default();
            Answered {
                status: parts.status.as_u16(),
                headers: pairs(&parts.headers),
                body: body.to_vec(),
            }
        }
    };
    Bytes::from(postcard::to_allocvec(&answered).expect("an answer encodes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_of_a_route_is_read_from_its_path() {
        let room = |path| room_in_path(path).map(|r| r.to_string());
        assert_eq!(room("/v1/rooms/stage-1"), Some("stage-1".into()));
        assert_eq!(
            room("/v1/rooms/stage-1/invitations"),
            Some("stage-1".into())
        );
        assert_eq!(
            room("/v1/invitations/stage-1.3/accept"),
            Some("stage-1".into())
        );
        assert_eq!(room("/v1/rooms"), None);
        assert_eq!(room("/v1/me/invitations"), None);
        assert_eq!(room("/v1/invitations/nonsense/accept"), None);
    }

    #[test]
    fn generated_keys_are_valid_command_ids_and_differ() {
        let keys = Keys::default();
        let (a, b) = (keys.next(), keys.next());
        assert_ne!(a, b);
        assert!(cohost_proto::CommandId::new(&a).is_ok(), "{a}");
        let other = Keys::default().next();
        assert_ne!(other[..36], a[..36], "random per instance: {a} {other}");
    }
}
