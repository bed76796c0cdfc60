//! The HTTP API of the contract: every route, JWT auth, the error body and status mapping, and the limits.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use bytes::BytesMut;
use cohost_core::InvitationFilter;
use cohost_credentials::{Credentials, LiveKitConfig, Minter, Webhooks};
use cohost_engine::{Clock, Engine, FollowerStatus, Health, ListRequest, Options, SystemClock};
use cohost_proto::{
    Actor, Command, CommandId, ErrorCode, InvitationId, InvitationKind, InvitationStatus,
    InvitationTarget, Invite, Reply, RequestToJoin, RoomId, RoomTarget, ServiceId, UserId,
    UserTarget,
};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{Auth, Caller};
use crate::browser::CorsOrigins;
use crate::error::ApiError;
use crate::metrics::{FollowerView, Metrics};
use crate::quota::{QuotaLimits, Quotas};
use crate::serve::{ConnectionStats, Limits};
use crate::sse;
use crate::ticket::TicketCollection;
use cohost_proto::limits::{BODY_BYTES_MAX, PAGE_LIMIT_MAX};

/// The engines behind the API: one, or in cluster mode those of the partitions this node owns.
#[derive(Clone)]
pub enum Engines {
    /// Single-node mode: one engine over the local log.
    One {
        /// The engine every command and read goes to.
        engine: Engine,
        /// Mints broadcaster tokens from the engine's entitlement.
        credentials: Credentials,
        /// Takes LiveKit's webhooks into the engine.
        webhooks: Box<Webhooks>,
    },
    /// Cluster mode: the engines of the partitions this node owns, found through the node.
    Cluster {
        /// The cluster node: its partitions, leases and engines.
        node: Arc<cohost_nats::cluster::Node>,
        /// Mints broadcaster tokens once the owning engine granted the entitlement.
        minter: Minter,
        /// Each webhook goes to the engine of its room's partition: the forwarding middleware sends it to
        /// the partition's owner first.
        webhooks: Box<Webhooks>,
    },
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::One { engine, .. } => f.debug_tuple("One").field(engine).finish(),
            Self::Cluster { node, .. } => f.debug_tuple("Cluster").field(node).finish(),
        }
    }
}

impl Engines {
    /// The engine that serves `room_id` on this node. In cluster mode, a room whose partition this node does
    /// not own (or whose lease it cannot vouch for right now) is `unavailable`: the client sends it to the
    /// partition's owner.
    pub fn for_room(&self, room_id: &RoomId) -> Result<Engine, ApiError> {
        match self {
            Self::One { engine, .. } => Ok(engine.clone()),
            Self::Cluster { node, .. } => node.engine_for(room_id).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "room {room_id} is in partition {}, which node {} does not serve now; send it to \
                         the partition's owner",
                        node.partition_of(room_id),
                        node.node_id()
                    ),
                )
            }),
        }
    }

    /// Credentials over the engine of `room_id`: borrowed on one node, so a command costs no clone there.
    fn credentials(&self, room_id: &RoomId) -> Result<std::borrow::Cow<'_, Credentials>, ApiError> {
        match self {
            Self::One { credentials, .. } => Ok(std::borrow::Cow::Borrowed(credentials)),
            Self::Cluster { minter, .. } => Ok(std::borrow::Cow::Owned(Credentials::new(
                self.for_room(room_id)?,
                minter.clone(),
            ))),
        }
    }

    /// The one engine, for what spans rooms; in cluster mode that spans partitions, which part 1 does not serve.
    pub fn one(&self, what: &str) -> Result<&Engine, ApiError> {
        match self {
            Self::One { engine, .. } => Ok(engine),
            Self::Cluster { .. } => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("{what} spans partitions, which cluster mode does not serve yet"),
            )),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where commands and reads go.
    pub engines: Engines,
    /// Verifies user JWTs and stream tickets.
    pub auth: Auth,
    /// The counters `/metrics` renders.
    pub metrics: Arc<Metrics>,
    /// The log's followers that run (the NATS relay, the LiveKit revoker), shown by `/healthz` and `/metrics`.
    pub followers: Arc<[Arc<FollowerStatus>]>,
    /// Turns true at shutdown; live collections end on it, and `/readyz` answers 503.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// A request body must arrive whole within this long.
    pub body_read_timeout: Duration,
    /// The connection loop's counters, for `/metrics`.
    pub connections: Arc<ConnectionStats>,
    /// Per-user quotas: commands, invitations, live collections.
    pub quotas: Arc<Quotas>,
    /// On a cluster node, how a room route this node does not serve reaches the owner.
    pub routing: Option<crate::forward::Routing>,
    /// The origins browsers may call from; `None`: no CORS.
    pub cors: Option<CorsOrigins>,
    /// Where the built web console is, served at `/console`; `None`: no console.
    pub console_dir: Option<std::path::PathBuf>,
    /// What opens the admin routes; `None`: nothing does.
    pub admin_secret: Option<String>,
    /// The outgoing webhook deliveries running on this node, for the admin routes.
    pub webhooks: Arc<crate::delivery::Deliveries>,
    /// In cluster mode, the cluster's erased users, which the erase route records into.
    pub(crate) erasures: Option<crate::erase::ClusterErasures>,
}

impl AppState {
    /// The state for an engine, with credentials and webhooks on `livekit`, and the default limits.
    pub fn new(
        engine: Engine,
        livekit: LiveKitConfig,
        auth: Auth,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let engines = Engines::One {
            credentials: Credentials::new(engine.clone(), Minter::new(livekit.clone())),
            webhooks: Box::new(Webhooks::new(
                engine.clone(),
                livekit,
                Arc::new(SystemClock),
            )),
            engine,
        };
        Self::with_engines(engines, auth, closing)
    }

    /// The state of a cluster node: each room goes to the engine of its partition, if this node owns it.
    pub fn cluster(
        node: Arc<cohost_nats::cluster::Node>,
        livekit: LiveKitConfig,
        auth: Auth,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let owner = node.clone();
        let webhooks = Webhooks::for_engines(
            Arc::new(move |room_id: &RoomId| owner.engine_for(room_id)),
            livekit.clone(),
            Arc::new(SystemClock),
        );
        let engines = Engines::Cluster {
            node,
            minter: Minter::new(livekit),
            webhooks: Box::new(webhooks),
        };
        Self::with_engines(engines, auth, closing)
    }

    fn with_engines(
        engines: Engines,
        auth: Auth,
        closing: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            engines,
            auth,
            metrics: Arc::default(),
            followers: Arc::new([]),
            closing,
            body_read_timeout: Limits::default().body_read_timeout,
            connections: Arc::default(),
            quotas: Arc::new(Quotas::new(QuotaLimits::default())),
            routing: None,
            cors: None,
            console_dir: None,
            admin_secret: None,
            webhooks: Arc::default(),
            erasures: None,
        }
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("engines", &self.engines)
            .finish_non_exhaustive()
    }
}

/// One route: its method, its path, and what serves it.
pub(crate) type Route = (Method, &'static str, MethodRouter<Arc<AppState>>);

/// Route table entries, each method named once.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr),* $(,)?) => {
        vec![$((
            axum::http::Method::$method,
            $path,
            axum::routing::on(axum::routing::MethodFilter::$method, $handler),
        )),*]
    };
}
pub(crate) use routes;

/// Every route the API serves. The router is built from this list, and a test holds `/openapi.json` to it.
pub(crate) fn route_table() -> Vec<Route> {
    let mut table = routes![
        GET "/healthz" => healthz,
        GET "/readyz" => readyz,
        GET "/metrics" => metrics,
        GET "/openapi.json" => crate::openapi::document,
        POST "/v1/rooms" => create_room,
        GET "/v1/rooms/{room_id}" => get_room,
        POST "/v1/rooms/{room_id}/live" => go_live,
        POST "/v1/rooms/{room_id}/stop" => stop_room,
        POST "/v1/rooms/{room_id}/invitations" => invite,
        GET "/v1/rooms/{room_id}/invitations" => room_invitations,
        POST "/v1/rooms/{room_id}/requests" => request_to_join,
        DELETE "/v1/rooms/{room_id}/cohosts/{user_id}" => remove_cohost,
        POST "/v1/rooms/{room_id}/leave" => leave_stage,
        GET "/v1/rooms/{room_id}/broadcaster-data" => broadcaster_data,
        GET "/v1/me/invitations" => my_invitations,
        POST "/v1/invitations/{invitation_id}/accept" => accept,
        POST "/v1/invitations/{invitation_id}/reject" => reject,
        POST "/v1/invitations/{invitation_id}/cancel" => cancel,
        POST "/v1/livekit/webhook" => webhook,
        POST "/v1/stream-tickets" => stream_ticket,
        GET "/v1/admin/webhooks" => crate::admin::webhooks,
        POST "/v1/admin/webhooks/{id}/resume" => crate::admin::resume_webhook,
        GET "/v1/admin/backup" => crate::backup::backup,
        POST "/v1/admin/users/{user_id}/erase" => crate::erase::erase_user,
    ];
    table.extend(crate::stage::routes());
    table
}

/// The whole API over `state`: every route of the route table, behind the forwarding middleware, request
/// limits and CORS. What `serve` serves, and what the tests call in process.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    let routes = route_table()
        .into_iter()
        .fold(Router::new(), |routes, (_, path, route)| {
            routes.route(path, route)
        })
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") });
    let routes = match &state.console_dir {
        Some(dir) => routes.nest_service("/console", crate::browser::console(dir)),
        None => routes,
    }
    .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() });
    // Only a cluster node routes requests to other nodes; one node's requests pay nothing for it.
    let routes = match state.routing {
        Some(_) => routes.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::forward::route,
        )),
        None => routes,
    };
    // Outermost, so a preflight is answered here, whichever node owns the room.
    let cors = state.cors.as_ref().map(CorsOrigins::layer);
    routes
        .with_state(state)
        .layer(tower::util::option_layer(cors))
}

/// The caller, from `Authorization: Bearer <jwt>`.
pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<UserId, ApiError> {
    authenticated(state, headers).map(|caller| caller.user)
}

/// Who sent a request: a user with their JWT, or a backend service with a service credential.
pub(crate) enum Principal {
    User(Caller),
    Service(ServiceId),
}

/// The request's principal. A user's token is checked first (through the verified-token cache), and only a
/// token that is not one is tried as a service credential, so users pay nothing for services.
pub(crate) fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.caller(value) {
        Ok(caller) => Ok(Principal::User(caller)),
        Err(reason) => match service(state, headers)? {
            Some(service) => Ok(Principal::Service(service)),
            None => Err(ApiError::new(ErrorCode::Unauthenticated, reason)),
        },
    }
}

/// A user-only route's caller: a service credential gets 403.
fn only_users(principal: Principal) -> Result<Caller, ApiError> {
    match principal {
        Principal::User(caller) => Ok(caller),
        Principal::Service(_) => Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "a service credential cannot use this route: it acts for users only",
        )),
    }
}

/// The caller and when their token expires. A service credential gets 403 here: the route is a user's.
pub(crate) fn authenticated(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    principal(state, headers).and_then(only_users)
}

/// The backend service of a request with a service credential; `None` when the token is not one (then it may
/// be a user's). Refused from a browser: a request with `Origin` or `Sec-Fetch-*` headers, which browsers set
/// and a backend does not (defence in depth: the secret and its tokens belong on servers).
fn service(state: &AppState, headers: &HeaderMap) -> Result<Option<ServiceId>, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let found = (state.auth.service(value))
        .map_err(|reason| ApiError::new(ErrorCode::Unauthenticated, reason))?;
    let Some(caller) = found else {
        return Ok(None);
    };
    let from_browser = headers.contains_key(header::ORIGIN)
        || (headers.keys()).any(|name| name.as_str().starts_with("sec-fetch-"));
    if from_browser {
        let why = "service credentials are never accepted from a browser (the request has Origin or \
                   Sec-Fetch-* headers)";
        return Err(ApiError::new(ErrorCode::PermissionDenied, why));
    }
    Ok(Some(caller.service))
}

/// Who a request acts as: its user, or a service with a service credential.
pub(crate) fn actor(state: &AppState, headers: &HeaderMap) -> Result<Actor, ApiError> {
    Ok(match principal(state, headers)? {
        Principal::User(caller) => Actor::User(caller.user),
        Principal::Service(service) => Actor::Service(service),
    })
}

/// The caller of a route that serves a live collection: a JWT in `Authorization`, or, for the live collection
/// itself (`Accept: text/event-stream`), a stream ticket made for this very path in `?ticket=` (a browser's
/// `EventSource` cannot send headers). The stream ends where the JWT would, ticket or not.
pub(crate) fn reader(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Caller, ApiError> {
    reader_principal(state, headers, uri).and_then(only_users)
}

/// [`reader`]'s principal: a ticket's user, or the JWT's user or service.
fn reader_principal(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Principal, ApiError> {
    let unauthenticated = |reason: &str| ApiError::new(ErrorCode::Unauthenticated, reason);
    let params = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map_err(|e| ApiError::invalid(e.body_text()))?;
    let Some(ticket) = params.get("ticket") else {
        return principal(state, headers);
    };
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::invalid(
            "send a JWT in Authorization or a stream ticket in ?ticket=, not both",
        ));
    }
    if !wants_events(headers) {
        return Err(unauthenticated(
            "a stream ticket opens a live collection only (Accept: text/event-stream); other requests \
             need Authorization: Bearer <jwt>",
        ));
    }
    let ticket = state
        .auth
        .tickets()
        .verify(ticket, SystemClock.now_ms())
        .map_err(unauthenticated)?;
    if ticket.collection != uri.path() {
        return Err(unauthenticated(
            "this stream ticket is for another collection",
        ));
    }
    Ok(Principal::User(Caller {
        user: ticket.user,
        expires_s: ticket.jwt_expires_s,
    }))
}

/// The reader of a room route: [`reader`]'s user, or a service asking for a plain read (a service reads any
/// room, but opens no live collection).
pub(crate) fn room_reader(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Principal, ApiError> {
    let principal = reader_principal(state, headers, uri)?;
    if matches!(principal, Principal::Service(_)) && wants_events(headers) {
        let why = "a service reads rooms; live collections are for users";
        return Err(ApiError::new(ErrorCode::PermissionDenied, why));
    }
    Ok(principal)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TicketRequest {
    collection: String,
}

/// `POST /v1/stream-tickets` `{collection}` → `{ticket, expires_ms}`: a ticket for one live collection, made with a
/// JWT (never with another ticket), so a browser can open it with a plain `EventSource`.
async fn stream_ticket(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    let caller = authenticated(&state, &headers)?;
    state.quotas.command(&caller.user, false)?;
    let request: TicketRequest = body(bytes)?;
    let collection = TicketCollection::parse(&request.collection).map_err(ApiError::invalid)?;
    let (ticket, expires_ms) = (state.auth.tickets()).mint(
        &caller.user,
        &collection,
        caller.expires_s,
        SystemClock.now_ms(),
    );
    json(serde_json::json!({ "ticket": ticket, "expires_ms": expires_ms }))
}

/// `Idempotency-Key` → command_id, `If-Match: <version>` → expected_version.
fn options(headers: &HeaderMap) -> Result<Options, ApiError> {
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::invalid(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    let command_id = text("idempotency-key")?
        .map(CommandId::new)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let expected_version = text("if-match")?
        .map(|v| v.trim().trim_matches('"').parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::invalid("If-Match must be a room version (a number)"))?;
    Ok(Options {
        command_id,
        expected_version,
    })
}

/// A request body, read whole: at most 64 KiB, and within the body-read timeout, as one deadline for the whole
/// body. A declared `Content-Length` over the limit is refused at once, before anything is read. The outcome
/// waits in the extractor for the handler, which authenticates the caller first, so a 401 comes before a 400.
#[derive(Debug)]
pub struct RawBody(Result<Bytes, ApiError>);

impl FromRequest<Arc<AppState>> for RawBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(
        request: Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let unread = request.extensions().get::<BodyUnread>().cloned();
        let body = read_body(request, state.body_read_timeout).await;
        if let (Err(error), Some(unread)) = (&body, unread)
            && error.body_unread
        {
            unread.mark();
        }
        Ok(Self(body))
    }
}

/// Set when a request's body was left unread, whatever the handler then answers (a 401 comes before the
/// body's 413).
#[derive(Debug, Clone, Default)]
pub struct BodyUnread(Arc<std::sync::atomic::AtomicBool>);

impl BodyUnread {
    /// A flag for a request that declares a body (the connection loop sets it before routing).
    pub fn watch(request: &mut Request) -> Option<Self> {
        let headers = request.headers();
        let declared = headers.get(header::CONTENT_LENGTH);
        let has_body = declared.is_some_and(|length| length.as_bytes() != b"0")
            || headers.contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return None;
        }
        let unread = Self::default();
        request.extensions_mut().insert(unread.clone());
        Some(unread)
    }

    pub(crate) fn mark(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A response to a request whose body was left unread says `Connection: close`: the server closes the
    /// connection after it, and a client must not send its next request on it.
    pub fn close_if_unread(self, response: &mut Response) {
        if self.0.load(std::sync::atomic::Ordering::Relaxed) {
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
    }
}

async fn read_body(request: Request, deadline: Duration) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    read_whole(body, &parts.headers, deadline).await
}

/// A body read whole, as [`RawBody`] reads it.
pub(crate) async fn read_whole(
    body: axum::body::Body,
    headers: &HeaderMap,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > BODY_BYTES_MAX as u64) {
        return Err(ApiError::too_large());
    }
    let mut chunks = body.into_data_stream();
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| ApiError {
                body_unread: true,
                ..ApiError::invalid(format!("cannot read the body: {e}"))
            })?;
            if body.len() + chunk.len() > BODY_BYTES_MAX {
                return Err(ApiError::too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| Err(ApiError::body_timeout()))
}

/// A JSON object of at most 64 KiB; an empty body reads as `{}`. Unknown fields, wrong types and any other
/// JSON value (serde would read an array as a struct's fields in order) are refused.
pub(crate) fn body<T: DeserializeOwned>(raw: RawBody) -> Result<T, ApiError> {
    let bytes = raw.0?;
    let bytes: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => &bytes,
        Some(_) => return Err(ApiError::invalid("the body must be a JSON object")),
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))
}

pub(crate) fn room_id(text: &str) -> Result<RoomId, ApiError> {
    RoomId::new(text).map_err(|e| ApiError::invalid(e.to_string()))
}

fn invitation_id(text: &str) -> Result<InvitationId, ApiError> {
    text.parse()
        .map_err(|e: cohost_proto::IdError| ApiError::invalid(e.to_string()))
}

/// Runs a command as `actor` and answers with the contract's reply body.
async fn run(
    state: &AppState,
    actor: Actor,
    command: Command,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let options = options(headers)?;
    let name = command.name();
    let credentials = state.engines.credentials(command.room_id())?;
    let outcome = credentials.execute(actor, command, options).await;
    state.metrics.command(
        name,
        outcome
            .as_ref()
            .map_or_else(|e| e.code().as_str(), |_| "ok"),
    );
    Ok(axum::Json(outcome?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}

/// 200 while the engine takes writes; 503 with the cause once it has stopped (fail-stop after a storage
/// failure: a supervisor restarts the process, which recovers from disk) or while it shuts down. The body also
/// shows each follower of the log: a follower that retries leaves the daemon alive (the engine still takes
/// writes), so it is reported, not turned into a 503.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let engine = match &state.engines {
        Engines::One { engine, .. } => engine,
        Engines::Cluster { node, .. } => {
            let followers = followers_json(&cluster_followers(node, &state.webhooks));
            let body = serde_json::json!({"status": "ok", "node": node.node_id(), "partitions": node.serving(), "followers": followers});
            return axum::Json(body).into_response();
        }
    };
    if let Health::Failed { cause } = engine.health() {
        let message = format!("the engine stopped taking writes: {cause}");
        return ApiError::new(ErrorCode::Unavailable, message).into_response();
    }
    if engine.is_closed() {
        return ApiError::new(ErrorCode::Unavailable, "shutting down").into_response();
    }
    let last_seq = engine.last_seq();
    let followers = followers_json(&single_followers(&state, last_seq));
    let body = serde_json::json!({"status": "ok", "last_seq": last_seq, "followers": followers});
    axum::Json(body).into_response()
}

fn single_followers(state: &AppState, last_seq: u64) -> Vec<FollowerView> {
    state
        .followers
        .iter()
        .map(|follower| {
            let mut view = FollowerView::of(&follower.snapshot(), last_seq);
            view.paused = state.webhooks.paused(view.name);
            view
        })
        .collect()
}

/// What follows the partitions this node owns, summed by name.
fn cluster_followers(
    node: &cohost_nats::cluster::Node,
    webhooks: &crate::delivery::Deliveries,
) -> Vec<FollowerView> {
    let engines: std::collections::BTreeMap<u32, Engine> = node.engines().into_iter().collect();
    let followers = node
        .followers()
        .into_iter()
        .flat_map(|(partition, statuses)| {
            let last_seq = engines.get(&partition).map_or(0, Engine::last_seq);
            statuses
                .into_iter()
                .map(move |status| (status.snapshot(), last_seq))
        });
    let mut views = FollowerView::summed(followers);
    for view in &mut views {
        view.paused = webhooks.paused(view.name);
    }
    views
}

fn followers_json(followers: &[FollowerView]) -> Vec<serde_json::Value> {
    followers
        .iter()
        .map(|view| {
            let last_error = view
                .last_error
                .as_ref()
                .map(|error| serde_json::json!({"message": error.message, "at_ms": error.at_ms}));
            serde_json::json!({
                "name": view.name,
                "state": if view.paused { "paused" } else { view.state.as_str() },
                "lag": view.lag,
                "last_error": last_error,
                "retries": view.retries,
            })
        })
        .collect()
}

/// 200 when a load balancer may send traffic: the engine is open, takes writes, and the daemon is not
/// draining. 503 with the reason otherwise.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let closed = match &state.engines {
        Engines::One { engine, .. } => {
            if let Health::Failed { cause } = engine.health() {
                let message = format!("the engine stopped taking writes: {cause}");
                return ApiError::new(ErrorCode::Unavailable, message).into_response();
            }
            engine.is_closed()
        }
        Engines::Cluster { .. } => false,
    };
    if *state.closing.borrow() || closed {
        return ApiError::new(ErrorCode::Unavailable, "draining: shutting down").into_response();
    }
    axum::Json(serde_json::json!({"status": "ready"})).into_response()
}

/// What the daemon serves while the engine opens its log: alive, not ready, and every other route 503.
pub fn starting_router() -> Router {
    let recovering = "recovering: the engine is opening its log; retry shortly";
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "recovering"})) }),
        )
        .fallback(move || async move { ApiError::new(ErrorCode::Unavailable, recovering) })
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let engine = match &state.engines {
        Engines::One { engine, .. } => engine,
        Engines::Cluster { node, .. } => {
            let engines = node.engines();
            let mut stats = cohost_engine::StatsSnapshot::default();
            let mut records_read = 0;
            for (_, engine) in &engines {
                stats.add(&engine.stats());
                records_read += engine.records_read();
            }
            let followers = cluster_followers(node, &state.webhooks);
            let mut text = state
                .metrics
                .render_cluster(&stats, node.serving().len(), &followers);
            if let Some(routing) = &state.routing {
                crate::metrics::render_forwards(&mut text, &routing.counts);
            }
            crate::metrics::render_node(&mut text, node.stats());
            crate::metrics::render_connections(&mut text, &state.connections);
            crate::metrics::render_reads_and_quotas(&mut text, records_read, &state.quotas);
            return ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response();
        }
    };
    let last_seq = engine.last_seq();
    let followers = single_followers(&state, last_seq);
    let mut text = state.metrics.render(&engine.stats(), last_seq, &followers);
    crate::metrics::render_connections(&mut text, &state.connections);
    let records_read = engine.records_read();
    crate::metrics::render_reads_and_quotas(&mut text, records_read, &state.quotas);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A command route: authenticates the caller (401 before any 400), then runs the command `command` reads from
/// the path and body as that caller.
pub(crate) async fn as_caller(
    state: &AppState,
    headers: &HeaderMap,
    command: impl FnOnce() -> Result<Command, ApiError>,
) -> Result<Response, ApiError> {
    let actor = actor(state, headers)?;
    let command = command()?;
    let opens_offer = matches!(command, Command::Invite(_) | Command::RequestToJoin(_));
    match &actor {
        Actor::User(user) => state.quotas.command(user, opens_offer)?,
        // A service's commands count against the command rate, in a bucket of its own.
        Actor::Service(service) => state.quotas.service_command(service)?,
        Actor::System => {}
    }
    run(state, actor, command, headers).await
}

pub(crate) fn user_id(text: &str) -> Result<UserId, ApiError> {
    UserId::new(text).map_err(|e| ApiError::invalid(e.to_string()))
}

async fn create_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    as_caller(&state, &headers, || Ok(Command::CreateRoom(body(bytes)?))).await
}

async fn get_room(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let reader = room_reader(&state, &headers, &uri)?;
    let room_id = room_id(&id)?;
    if let Principal::User(caller) = &reader
        && wants_events(&headers)
    {
        let stream = state.quotas.open_stream(&caller.user)?;
        let collection = sse::Collection::Stage(room_id);
        return sse::serve(
            state.clone(),
            collection,
            &headers,
            caller.expires_s,
            stream,
        )
        .await;
    }
    let engine = state.engines.for_room(&room_id)?;
    Ok(axum::Json(Reply::Room(engine.room(&room_id)?)).into_response())
}

/// Routes whose path names one room or invitation, with the command built from the path segment and the body.
macro_rules! path_command {
    ($name:ident, $build:expr) => {
        async fn $name(
            State(state): State<Arc<AppState>>,
            headers: HeaderMap,
            Path(id): Path<String>,
            bytes: RawBody,
        ) -> Result<Response, ApiError> {
            as_caller(&state, &headers, || ($build)(id.as_str(), bytes)).await
        }
    };
}

/// The path commands whose body is empty.
macro_rules! target_command {
    ($name:ident, $variant:ident, $target:ident { $field:ident: $parse:ident }) => {
        path_command!($name, |id: &str, bytes| {
            let Empty {} = body(bytes)?;
            Ok(Command::$variant($target {
                $field: $parse(id)?,
            }))
        });
    };
}

target_command!(go_live, GoLive, RoomTarget { room_id: room_id });
target_command!(stop_room, StopRoom, RoomTarget { room_id: room_id });
/// `{seat?}`: the seat a request or invitation asks for.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeatBody {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 255)]
    seat: Option<u8>,
}

path_command!(request_to_join, |id: &str, bytes| {
    let SeatBody { seat } = body(bytes)?;
    let room_id = room_id(id)?;
    Ok(Command::RequestToJoin(RequestToJoin { room_id, seat }))
});
target_command!(leave_stage, LeaveStage, RoomTarget { room_id: room_id });

target_command!(
    accept,
    AcceptInvitation,
    InvitationTarget {
        invitation_id: invitation_id
    }
);
target_command!(
    reject,
    RejectInvitation,
    InvitationTarget {
        invitation_id: invitation_id
    }
);
target_command!(
    cancel,
    CancelInvitation,
    InvitationTarget {
        invitation_id: invitation_id
    }
);

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody {
    pub user_id: UserId,
}

/// `{user_id, seat?}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteBody {
    user_id: UserId,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 255)]
    seat: Option<u8>,
}

path_command!(invite, |id: &str, bytes| {
    let InviteBody { user_id, seat } = body(bytes)?;
    let room_id = room_id(id)?;
    Ok(Command::Invite(Invite {
        room_id,
        user_id,
        seat,
    }))
});

async fn remove_cohost(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    on_user(&state, &headers, &id, &user, Command::RemoveCohost).await
}

/// A command on a user of a room, both named by the path.
pub(crate) async fn on_user(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    user: &str,
    command: fn(UserTarget) -> Command,
) -> Result<Response, ApiError> {
    as_caller(state, headers, || {
        let (room_id, user_id) = (room_id(id)?, user_id(user)?);
        Ok(command(UserTarget { room_id, user_id }))
    })
    .await
}

async fn broadcaster_data(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = caller(&state, &headers)?;
    let room_id = room_id(&id)?;
    let credentials = state.engines.credentials(&room_id)?;
    Ok(axum::Json(credentials.broadcaster_data(&room_id, &user)?).into_response())
}

fn list_query(
    raw: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    allow_kind: bool,
) -> Result<ListRequest, ApiError> {
    let Query(mut params) = raw.map_err(|e| ApiError::invalid(e.body_text()))?;
    let status = params
        .remove("status")
        .map(|text| serde_json::from_value::<InvitationStatus>(serde_json::Value::String(text)))
        .transpose()
        .map_err(|_| {
            ApiError::invalid("status must be pending, approved, rejected, cancelled or expired")
        })?;
    let kind = match params.remove("kind") {
        Some(_) if !allow_kind => return Err(ApiError::invalid("this list has no kind filter")),
        other => other
            .map(|text| serde_json::from_value::<InvitationKind>(serde_json::Value::String(text)))
            .transpose()
            .map_err(|_| ApiError::invalid("kind must be invite or request"))?,
    };
    let limit = match params.remove("limit") {
        None => PAGE_LIMIT_MAX,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=PAGE_LIMIT_MAX).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit must be from 1 to 100")),
        },
    };
    let cursor = params.remove("cursor");
    // The caller was read from it already (`reader`).
    params.remove("ticket");
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::invalid(format!(
            "unknown query parameter {unknown:?}"
        )));
    }
    Ok(ListRequest {
        filter: InvitationFilter { status, kind },
        limit,
        cursor,
    })
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

async fn room_invitations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let reader = room_reader(&state, &headers, &uri)?;
    let room_id = room_id(&id)?;
    let list = list_query(query, true)?;
    let engine = state.engines.for_room(&room_id)?;
    let room = engine.room(&room_id)?;
    let Principal::User(caller) = reader else {
        return json(engine.room_invitations(&room_id, &list)?);
    };
    // The room is as served: an erased caller is named as it names them.
    let user = engine.served_id(&caller.user);
    if room.host != user && !room.moderators.contains(&user) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only the host or a moderator lists a room's invitations",
        ));
    }
    if wants_events(&headers) {
        let stream = state.quotas.open_stream(&caller.user)?;
        let collection = sse::Collection::Room(room_id, list);
        return sse::serve(state, collection, &headers, caller.expires_s, stream).await;
    }
    json(engine.room_invitations(&room_id, &list)?)
}

async fn my_invitations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = reader(&state, &headers, &uri)?;
    let list = list_query(query, true)?;
    if wants_events(&headers) {
        let stream = state.quotas.open_stream(&caller.user)?;
        let collection = sse::Collection::Candidate(caller.user, list);
        return sse::serve(state, collection, &headers, caller.expires_s, stream).await;
    }
    if let Some(routing) = &state.routing {
        // A cluster node: the candidate's rooms are spread over the partitions.
        let page = cohost_nats::service::user_invitations_across(
            &routing.node,
            &routing.forwarder,
            &caller.user,
            &list,
        )
        .await
        .map_err(|refused| ApiError::new(refused.code, refused.message))?;
        return json(page);
    }
    let engine = state.engines.one("a candidate's invitations")?;
    json(engine.user_invitations(&caller.user, &list)?)
}

fn json(body: impl serde::Serialize) -> Result<Response, ApiError> {
    Ok(axum::Json(body).into_response())
}

async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    let bytes = bytes.0?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (Engines::One { webhooks, .. } | Engines::Cluster { webhooks, .. }) = &state.engines;
    let outcome = webhooks.handle(&bytes, authorization).await?;
    let summary = match outcome {
        cohost_credentials::WebhookOutcome::Applied { command, .. } => {
            serde_json::json!({"applied": command})
        }
        cohost_credentials::WebhookOutcome::Ignored(reason) => {
            serde_json::json!({"ignored": reason})
        }
        cohost_credentials::WebhookOutcome::Removed { user_id, why } => {
            serde_json::json!({"removed": user_id, "why": why})
        }
    };
    Ok(axum::Json(summary).into_response())
}
