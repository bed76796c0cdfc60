//! The `cohost` NATS service: every command and query of the engine as a request-reply endpoint.
//!
//! [`serve`] starts a service named `cohost` (the async-nats `service` API, so `$SRV.PING|INFO|STATS.cohost`
//! discover it) in queue group `cohost`, with one endpoint per command, `cohost.v1.cmd.<command>`, and one per
//! query, `cohost.v1.query.<name>`. Requests and replies are JSON. A reply is `{"ok": body}` or
//! `{"error": {"code", "message"}}` with the contract's codes. Every request gets exactly one reply: bad input is
//! `invalid_argument`, never a panic and never silence. The service decides nothing (the engine does), and it never
//! sends a LiveKit token: accept's `broadcaster` is always `null` here, and `broadcaster_entitlement` says who may
//! broadcast without minting anything. Tokens are minted where a caller is authenticated (cohostd's HTTP API).
//!
//! # Commands
//!
//! A request is one JSON object: `{"actor", "command_id"?, "expected_version"?, ...arguments}`, with the
//! arguments of proto/README.md ("NATS" → "Service"); unknown fields are refused.
//! - `actor` is required. It is a user id, or `null` for the system. The system may issue only the commands
//!   the contract lets it issue: `expire` and `presence` (system only), and `stop_room` and `remove_cohost`
//!   (host or system, for LiveKit's `room_finished` and operators' tools). `null` on any other command, or no
//!   `actor` at all, is `invalid_argument`, so a client that forgets the actor never acts as the system.
//! - `command_id` (a string, or `null` for none) makes the command idempotent; `expected_version` (an integer,
//!   or `null`) makes it conditional. Both as in the contract.
//!
//! The reply body is the command's reply of the contract: the room, the invitation, or for accept
//! `{"invitation", "broadcaster": null}`.
//!
//! # Queries
//!
//! Arguments refuse unknown fields, except `actor`: it may be sent, as on every request of the contract, and must
//! then be a valid user id or `null`, but queries are not scoped by caller. NATS permissions decide who may ask.
//!
//! | query | arguments | reply body |
//! |---|---|---|
//! | `room` | `{"room_id"}` | the room |
//! | `room_invitations` | `{"room_id", "status"?, "kind"?, "cursor"?, "limit"?}` | `{"items", "next_cursor"}` |
//! | `user_invitations` | `{"user_id", "status"?, "kind"?, "cursor"?, "limit"?}` (user = candidate) | `{"items", "next_cursor"}` |
//! | `broadcaster_entitlement` | `{"room_id", "user_id"}` | `{"role": "host" \| "cohost", "invitation_id", "audio", "video"}` |
//! | `read_events` | `{"from_seq", "limit"?}` | `{"events": [envelope...], "last_seq"}` |
//! | `read_room` | `{"room_id", "from_version", "limit"?}` | `{"events": [envelope...], "version"}` |
//!
//! A page `limit` is 1 to [`PAGE_LIMIT_MAX`], an events `limit` 1 to [`READ_EVENTS_MAX`]; an absent limit means
//! the largest, and any other value is `invalid_argument` rather than silently clamped. `read_events` returns
//! envelopes in seq order from `from_seq` on; `last_seq` is the log's last durable seq when it was read, so a
//! caller is caught up once it has that seq. `read_room` returns the room's envelopes in version order from
//! `from_version` on, and `version` is the room's version. An events reply holds as many envelopes as fit the
//! server's `max_payload`, so it may hold fewer than `limit`: continue after the last one.
//!
//! # Limits
//!
//! A request body over [`BODY_BYTES_MAX`] (64 KiB) or empty is `invalid_argument`, checked before parsing.
//! At most [`IN_FLIGHT_MAX`] requests run at once, each in its own task, so a slow command never holds up a
//! query; past that a request gets `unavailable` at once. A message without a reply subject is dropped
//! unexecuted, since nobody could learn its result. Error messages are cut to [`MESSAGE_CHARS_MAX`].
//!
//! # Cluster mode
//!
//! Every node serves the service in the same queue group ([`serve_cluster`]), so a request lands on any node. It
//! runs there if the node serves the partition of the room the request names (`room_id`, or `invitation_id`);
//! otherwise it goes to the partition's owner (`cohost.v1.partition.<p>.service`, answered by
//! [`owner_handler`]) and the owner's reply is the reply. `read_events` names the partition whose log it reads
//! (`"partition"`, required in cluster mode); `user_invitations` spans partitions: the node asks every partition
//! for its page (on the owner, `user_invitations` sent to a partition's subject answers from that partition's
//! engine alone) and merges them in list order.

use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, Service, ServiceExt};
use bytes::Bytes;
use cohost_engine::{Engine, Error, InvitationFilter, ListRequest, Options};
use cohost_proto::codec::to_json;
use cohost_proto::limits::{BODY_BYTES_MAX, PAGE_LIMIT_MAX, READ_EVENTS_MAX};
use cohost_proto::subject;
use cohost_proto::{
    Actor, BroadcasterRole, Command, CommandId, Envelope, ErrorCode, ErrorInfo, InvitationId,
    InvitationKind, InvitationStatus, Reply, RoomId, ServiceId, ServiceReply, UserId,
};
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::cluster::{Forwarder, Handler, Keys, Kind, Limits, Node};

mod gather;
pub use gather::{Refused, user_invitations_across, user_invitations_at_across};

/// Requests handled at once; past this a request gets `unavailable` at once.
pub const IN_FLIGHT_MAX: usize = 1_024;
/// The longest error message in a reply, in characters.
pub const MESSAGE_CHARS_MAX: usize = 1_024;
/// Every query name, as in `cohost.v1.query.<name>`.
pub const QUERY_NAMES: [&str; QUERIES.len()] = {
    let mut names = [""; QUERIES.len()];
    let mut i = 0;
    while i < QUERIES.len() {
        names[i] = QUERIES[i].1;
        i += 1;
    }
    names
};
/// Every query with its name: the one list the endpoints and [`QUERY_NAMES`] come from.
const QUERIES: [(Query, &str); 6] = [
    (Query::Room, "room"),
    (Query::RoomInvitations, "room_invitations"),
    (Query::UserInvitations, "user_invitations"),
    (Query::BroadcasterEntitlement, "broadcaster_entitlement"),
    (Query::ReadEvents, "read_events"),
    (Query::ReadRoom, "read_room"),
];
/// The commands that take `"actor": null`, the system: those the contract lets the system issue.
pub const SYSTEM_COMMANDS: [&str; 5] = [
    "stop_room",
    "remove_cohost",
    "expire",
    "presence",
    "disconnect",
];

/// The commands a backend service may issue as itself (`"actor": null, "service": "<id>"`): part of what it may
/// do over HTTP with a service credential (which also cancels offers and ends moderator roles, for erasure).
/// The events name it.
pub const SERVICE_COMMANDS: [&str; 2] = ["stop_room", "remove_cohost"];

const DESCRIPTION: &str =
    "cohost: co-host commands (cohost.v1.cmd.<command>) and queries (cohost.v1.query.<name>), JSON";
/// How long [`ServiceHandle::stop`] lets the endpoints hand over the requests they already received.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long [`ServiceHandle::stop`] waits for running requests to reply.
const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `serve` and `stop` wait for the server to confirm the endpoints' (un)subscriptions.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes an events reply keeps free for its closing `],"last_seq":<u64>}}`.
const EVENTS_CLOSING_BYTES_MAX: usize = 48;

/// Why the service could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// async-nats could not start the service: its discovery subscriptions were refused (the client is
    /// closed, say).
    #[error("cannot start the NATS service: {0}")]
    Start(#[source] async_nats::Error),
    /// An endpoint's subscription was refused; the service started so far is stopped again.
    #[error("cannot add the endpoint {subject}: {source}")]
    Endpoint {
        /// The endpoint's subject, `cohost.v1.cmd.<command>` or `cohost.v1.query.<name>`.
        subject: String,
        /// What async-nats said.
        #[source]
        source: async_nats::Error,
    },
    /// async-nats reported a failure to stop the service (the version in use never does). The requests
    /// received before the stop have still been let run.
    #[error("cannot stop the NATS service: {0}")]
    Stop(#[source] async_nats::Error),
}

/// A running `cohost` service. [`ServiceHandle::stop`] stops it gracefully; dropping the handle stops it too,
/// without waiting for running requests.
#[derive(Debug)]
#[must_use = "dropping the handle stops the service"]
pub struct ServiceHandle {
    service: Option<Service>,
    /// Dropped (or fired) to end the dispatch loop.
    stop: Option<oneshot::Sender<()>>,
    dispatch: Option<JoinHandle<()>>,
    in_flight: Arc<Semaphore>,
    client: async_nats::Client,
    id: String,
}

impl ServiceHandle {
    /// This instance's id, as in `$SRV.PING.cohost.<id>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops taking requests, lets the requests already received run and reply, and unregisters the service.
    /// Bounded: up to 2 s for the endpoints to hand over what they received, 1 s for the server to confirm
    /// the unsubscriptions (after which it sends requests to the queue group's other members), and 10 s for
    /// running requests to reply.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Stop`], after the waits above.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        let stopped = match self.service.take() {
            Some(service) => service.stop().await.map_err(ServiceError::Stop),
            None => Ok(()),
        };
        if let Some(mut dispatch) = self.dispatch.take() {
            // The stopped endpoints unsubscribe and end once their buffered requests are dispatched; if that
            // takes too long, end the loop, which drops (and so unsubscribes) them.
            if tokio::time::timeout(STOP_GRACE, &mut dispatch)
                .await
                .is_err()
            {
                drop(self.stop.take());
                let _ = dispatch.await;
            }
        }
        // Then the server routes no more requests here, but to the other instances of the queue group.
        round_trip(&self.client, "the endpoints' unsubscriptions").await;
        let permits = u32::try_from(IN_FLIGHT_MAX).unwrap_or(u32::MAX);
        let _ =
            tokio::time::timeout(STOP_DRAIN_TIMEOUT, self.in_flight.acquire_many(permits)).await;
        stopped
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            // `Service::stop` only signals the endpoints and aborts the verb handler; it never waits, so its
            // future completes on the first poll. The endpoints also end with the dispatch loop, which ends
            // when `self.stop` drops.
            let _ = service.stop().now_or_never();
        }
    }
}

/// Starts the `cohost` service on `client`, serving `engine`. Once it returns, the server routes requests to it
/// (unless the connection is down; then the subscriptions go out when it is back). It waits up to 1 s for the
/// server to confirm the subscriptions, and never for a connection that is down.
///
/// It spawns a dispatch task on the current tokio runtime, and a task per request, at most [`IN_FLIGHT_MAX`]
/// at once; reads of the log run on the blocking pool. Run one per engine, or several on one engine: the
/// queue group `cohost` gives each request to one of them. Keep the [`ServiceHandle`]: dropping it stops the
/// service.
///
/// # Errors
///
/// [`ServiceError::Start`] or [`ServiceError::Endpoint`] when async-nats refuses a subscription.
///
/// # Examples
///
/// A command as any NATS client sends it, and its reply:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let server = cohost_nats::test_server::TestServer::start(false);
/// # let url = server.url();
/// use cohost_engine::{Config, Engine};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(Config::new(dir.path()))?;
/// let client = cohost_nats::connect(&url).await?;
/// let service = cohost_nats::service::serve(client.clone(), engine).await?;
///
/// let request = r#"{"actor": "alice", "room_id": "friday", "title": "Friday show"}"#;
/// let reply = client.request("cohost.v1.cmd.create_room", request.into()).await?;
/// let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
/// assert_eq!(reply["ok"]["host"], "alice");
/// assert_eq!(reply["ok"]["version"], 1);
///
/// // A refusal is a reply too, with the contract's code.
/// let reply = client.request("cohost.v1.cmd.create_room", request.into()).await?;
/// let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
/// assert_eq!(reply["error"]["code"], "already_exists");
///
/// service.stop().await?;
/// # Ok(())
/// # }
/// ```
pub async fn serve(
    client: async_nats::Client,
    engine: Engine,
) -> Result<ServiceHandle, ServiceError> {
    start(client, Engines::One(engine)).await
}

/// Starts the `cohost` service on a cluster node: a request for a room whose partition the node serves runs on
/// that partition's engine; any other goes to the partition's owner (its answer is the reply), tried again
/// while the partition moves, for up to [`FORWARD_DEADLINE`]. `read_events` goes to the partition it names;
/// `user_invitations` asks every partition and merges their pages ([`user_invitations_across`]). Otherwise as
/// [`serve`]: the same limits, errors and waits.
pub async fn serve_cluster(
    client: async_nats::Client,
    node: Arc<Node>,
) -> Result<ServiceHandle, ServiceError> {
    let engines = Engines::Node {
        node,
        forwarder: Forwarder::new(client.clone()),
        keys: Arc::new(Keys::default()),
    };
    start(client, engines).await
}

/// What the owner of a partition answers the service requests other nodes forward to it with: the partition's
/// engine while this node serves it (`engine`, which checks the lease); while it does not, no answer at all,
/// so the forwarder's answer is the serving owner's.
pub fn owner_handler(
    client: async_nats::Client,
    (partition, partitions): (u32, u32),
    engine: PartitionEngine,
) -> Handler {
    Arc::new(move |frame: Bytes| {
        let (client, serving) = (client.clone(), engine.clone());
        async move {
            let serving_engine = serving()?;
            let context = Context {
                engines: Engines::One(serving_engine.clone()),
                client,
            };
            let body = match gather::page_at_payload(&frame) {
                // A page of a candidate's invitations with the seq it reflects, for a live collection.
                Some(payload) => gather::answer_page_at(&serving_engine, payload),
                None => match unframe(&frame) {
                    Some((call, payload)) => {
                        match in_partition(call, payload, partition, partitions) {
                            Ok(()) => answer(&context, call, payload).await,
                            Err(refusal) => error_body(refusal),
                        }
                    }
                    None => error_body(Refusal::invalid("a forwarded request does not decode")),
                },
            };
            // `unavailable` from a partition that moved away while the request ran is not the owner's answer:
            // the forwarder asks again, and the new owner answers.
            if unavailable(&body) && serving().is_none() {
                return None;
            }
            Some(Bytes::from(body))
        }
        .boxed()
    })
}

/// Refuses a forwarded request for a room of another partition (sent straight to this subject, say): it would
/// run on the wrong engine.
fn in_partition(
    call: Call,
    payload: &[u8],
    partition: u32,
    partitions: u32,
) -> Result<(), Refusal> {
    // Not bound to one room: answered from this partition's engine alone.
    if matches!(
        call,
        Call::Query(Query::ReadEvents | Query::UserInvitations)
    ) {
        return Ok(());
    }
    let room = room_of(call, payload)?;
    if cohost_proto::partition::of(&room, partitions) != partition {
        return Err(Refusal::invalid(format!(
            "room {room} is not in partition {partition}"
        )));
    }
    Ok(())
}

/// What the owner answers by itself, in the service's terms: busy (`unavailable`), or failed (`internal`).
pub fn owner_limits(slots: Arc<Semaphore>) -> Limits {
    let busy = Refusal::new(
        ErrorCode::Unavailable,
        "the partition's owner has too many forwarded requests in flight; retry shortly",
    );
    let failed = Refusal::new(ErrorCode::Internal, "the service failed on this request");
    Limits {
        slots,
        busy: Bytes::from(error_body(busy)),
        failed: Bytes::from(error_body(failed)),
    }
}

/// How long a cluster node tries to reach a partition's owner, as its HTTP API does.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(20);

/// A request as it crosses to the owner: the endpoint's name, a newline, the payload.
fn frame(call: Call, payload: &[u8]) -> Bytes {
    frame_named(call.name(), payload)
}

/// `name`, a newline, `payload`: a forwarded request, or an owner-only one ([`gather`]'s).
fn frame_named(name: &str, payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(name.len() + 1 + payload.len());
    frame.extend_from_slice(name.as_bytes());
    frame.push(b'\n');
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

fn unframe(frame: &[u8]) -> Option<(Call, &[u8])> {
    let split = frame.iter().position(|b| *b == b'\n')?;
    let name = std::str::from_utf8(&frame[..split]).ok()?;
    let call = Call::all().find(|call| call.name() == name)?;
    Some((call, &frame[split + 1..]))
}

/// A partition's engine on its owner while the owner's lease is valid.
pub type PartitionEngine = Arc<dyn Fn() -> Option<Engine> + Send + Sync>;

/// Where a request's engine comes from.
enum Engines {
    /// One engine: a single node, or the owner answering a forwarded request (never forwarded again).
    One(Engine),
    /// A cluster node in the queue group: the engine of the room's partition if it serves it, else the owner's
    /// answer.
    Node {
        node: Arc<Node>,
        forwarder: Forwarder,
        keys: Arc<Keys>,
    },
}

/// What runs a request: an engine here (with the payload it takes), or the owner's answer, already made.
enum Target<'a> {
    Here(Engine, Cow<'a, [u8]>),
    Answered(Vec<u8>),
}

impl Context {
    async fn target<'a>(&self, call: Call, payload: &'a [u8]) -> Result<Target<'a>, Refusal> {
        let (node, forwarder, keys) = match &self.engines {
            Engines::One(engine) => {
                return Ok(Target::Here(engine.clone(), Cow::Borrowed(payload)));
            }
            Engines::Node {
                node,
                forwarder,
                keys,
            } => (node, forwarder, keys),
        };
        let (partition, payload) = partition_of(node, call, payload)?;
        if let Some(engine) = node.engine_of(partition) {
            return Ok(Target::Here(engine, payload));
        }
        let payload = keyed(call, &payload, keys)?;
        let deadline = std::time::Instant::now() + FORWARD_DEADLINE;
        let answered = forwarder
            .request(partition, Kind::Service, frame(call, &payload), deadline)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))?;
        Ok(Target::Answered(answered.to_vec()))
    }
}

/// The partition a request goes to in cluster mode, and its payload as the partition's engine takes it: that of
/// the room it names, or for `read_events` the `partition` it names (taken out of the arguments; its seqs are
/// the partition's).
fn partition_of<'a>(
    node: &Node,
    call: Call,
    payload: &'a [u8],
) -> Result<(u32, Cow<'a, [u8]>), Refusal> {
    if call == Call::Query(Query::ReadEvents) {
        let mut args = parse_object(payload)?;
        let partitions = node.partitions();
        let partition = match args.remove("partition") {
            Some(Value::Number(n)) => n.as_u64().filter(|p| *p < u64::from(partitions)),
            None => {
                let message = format!(
                    "read_events spans partitions in cluster mode: name a partition (0 to {}); seqs count within it",
                    partitions - 1
                );
                return Err(Refusal::new(ErrorCode::Unavailable, message));
            }
            Some(_) => None,
        };
        let partition = partition.ok_or_else(|| {
            Refusal::invalid(format!(
                "partition must be an integer from 0 to {}",
                partitions - 1
            ))
        })?;
        return Ok((partition as u32, Cow::Owned(to_json(&args))));
    }
    let room = room_of(call, payload)?;
    Ok((node.partition_of(&room), Cow::Borrowed(payload)))
}

/// Whether a reply body is the error `unavailable`.
fn unavailable(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|reply| reply["error"]["code"] == ErrorCode::Unavailable.as_str())
}

/// A command's payload with a `command_id`, generated if it had none, so that asking the owner again while the
/// partition moves never applies it twice. Queries go as they came.
fn keyed(call: Call, payload: &[u8], keys: &Keys) -> Result<Vec<u8>, Refusal> {
    if !matches!(call, Call::Command(_)) {
        return Ok(payload.to_vec());
    }
    let mut args = parse_object(payload)?;
    if matches!(args.get("command_id"), None | Some(Value::Null)) {
        args.insert("command_id".into(), Value::String(keys.next()));
    }
    Ok(to_json(&args))
}

/// The room a request names (`room_id`, or `invitation_id`), which decides the partition in cluster mode.
fn room_of(call: Call, payload: &[u8]) -> Result<RoomId, Refusal> {
    if matches!(
        call,
        Call::Query(Query::UserInvitations | Query::ReadEvents)
    ) {
        // (read_events with a partition is routed before this.)
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            format!(
                "{} spans partitions, which cluster mode does not serve yet",
                call.name()
            ),
        ));
    }
    let args = parse_object(payload)?;
    if let Some(Value::String(room)) = args.get("room_id") {
        return Ok(RoomId::new(room)?);
    }
    if let Some(Value::String(id)) = args.get("invitation_id") {
        let id: InvitationId = id.parse()?;
        return Ok(id.room_id().clone());
    }
    Err(Refusal::invalid(format!(
        "{} needs a room_id or an invitation_id",
        call.name()
    )))
}

async fn start(
    client: async_nats::Client,
    engines: Engines,
) -> Result<ServiceHandle, ServiceError> {
    let service = client
        .service_builder()
        .description(DESCRIPTION)
        .queue_group(subject::SERVICE)
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(ServiceError::Start)?;
    let requests = match add_endpoints(&service).await {
        Ok(requests) => requests,
        Err(error) => {
            let _ = service.stop().await;
            return Err(error);
        }
    };
    round_trip(&client, "the endpoints' subscriptions").await;
    let id = service.info().await.id;
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let (stop, stopped) = oneshot::channel();
    let context = Arc::new(Context {
        engines,
        client: client.clone(),
    });
    let dispatch = tokio::spawn(dispatch(requests, stopped, context, in_flight.clone()));
    Ok(ServiceHandle {
        service: Some(service),
        stop: Some(stop),
        dispatch: Some(dispatch),
        in_flight,
        client,
        id,
    })
}

/// A round trip (see `round_trip.rs`), logging rather than failing: `what` says what it confirms.
async fn round_trip(client: &async_nats::Client, what: &str) {
    if let Err(error) = crate::round_trip::round_trip(client, ROUND_TRIP_TIMEOUT).await {
        tracing::warn!(%error, "the server did not confirm {what}");
    }
}

type Requests = SelectAll<BoxStream<'static, (Call, Request)>>;

async fn add_endpoints(service: &Service) -> Result<Requests, ServiceError> {
    let mut streams = Vec::new();
    for call in Call::all() {
        let subject = call.subject();
        let endpoint = service
            .endpoint_builder()
            .name(call.name())
            .add(subject.clone())
            .await
            .map_err(|source| ServiceError::Endpoint { subject, source })?;
        streams.push(endpoint.map(move |request| (call, request)).boxed());
    }
    Ok(futures::stream::select_all(streams))
}

struct Context {
    engines: Engines,
    client: async_nats::Client,
}

/// Takes requests from every endpoint and runs each in its own task, at most [`IN_FLIGHT_MAX`] at once.
async fn dispatch(
    mut requests: Requests,
    mut stopped: oneshot::Receiver<()>,
    context: Arc<Context>,
    in_flight: Arc<Semaphore>,
) {
    loop {
        let (call, request) = tokio::select! {
            biased;
            _ = &mut stopped => break,
            next = requests.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        if request.message.reply.is_none() {
            tracing::debug!(subject = %request.message.subject, "dropped a request without a reply subject");
            continue;
        }
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let context = context.clone();
                tokio::spawn(async move {
                    handle(&context, call, request).await;
                    drop(permit);
                });
            }
            Err(_) => {
                let busy = Refusal::new(
                    ErrorCode::Unavailable,
                    format!("the service has {IN_FLIGHT_MAX} requests in flight; retry shortly"),
                );
                respond(&request, error_body(busy)).await;
            }
        }
    }
}

/// Answers one request. A panic here is a bug; the caller still gets `internal` rather than a timeout.
async fn handle(context: &Context, call: Call, request: Request) {
    let payload = request.message.payload.clone();
    let body = AssertUnwindSafe(answer(context, call, &payload))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(call = call.name(), "a request handler panicked");
            error_body(Refusal::new(
                ErrorCode::Internal,
                "the service failed on this request",
            ))
        });
    respond(&request, body).await;
}

async fn respond(request: &Request, body: Vec<u8>) {
    let Err(error) = request.respond(Ok(Bytes::from(body))).await else {
        return;
    };
    tracing::warn!(%error, subject = %request.message.subject, "could not send a reply");
    if error.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded {
        let too_big = Refusal::new(
            ErrorCode::ResourceExhausted,
            "the reply is larger than the server's max_payload; ask for fewer items",
        );
        if let Err(error) = request.respond(Ok(Bytes::from(error_body(too_big)))).await {
            tracing::warn!(%error, subject = %request.message.subject, "could not send a reply");
        }
    }
}

/// One endpoint: a command or a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Command(&'static str),
    Query(Query),
}

impl Call {
    fn all() -> impl Iterator<Item = Call> {
        let commands = Command::NAMES.into_iter().map(Call::Command);
        commands.chain(QUERIES.into_iter().map(|(query, _)| Call::Query(query)))
    }

    /// The endpoint's name in `$SRV.INFO`: the command's or the query's name.
    fn name(self) -> &'static str {
        match self {
            Self::Command(name) => name,
            Self::Query(query) => query.name(),
        }
    }

    fn subject(self) -> String {
        match self {
            Self::Command(name) => subject::command(name),
            Self::Query(query) => subject::query(query.name()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    Room,
    RoomInvitations,
    UserInvitations,
    BroadcasterEntitlement,
    ReadEvents,
    ReadRoom,
}

impl Query {
    fn name(self) -> &'static str {
        let listed = QUERIES.iter().find(|(query, _)| *query == self);
        // A static table that the endpoints are built from: a query missing from it has no endpoint at all.
        listed.expect("QUERIES lists every query").1
    }
}

/// The reply body for one request: `{"ok": ...}` or `{"error": ...}`.
async fn answer(context: &Context, call: Call, payload: &[u8]) -> Vec<u8> {
    if let (
        Call::Query(Query::UserInvitations),
        Engines::Node {
            node, forwarder, ..
        },
    ) = (call, &context.engines)
    {
        let across = async {
            let (user_id, list) = list_args::<UserId>(payload, "user_id")?;
            user_invitations_across(node, forwarder, &user_id, &list)
                .await
                .map_err(|e| Refusal::new(e.code, e.message))
        };
        return across
            .await
            .map(|page| ok_body(&page))
            .unwrap_or_else(error_body);
    }
    let (engine, payload) = match context.target(call, payload).await {
        Ok(Target::Here(engine, payload)) => (engine, payload),
        Ok(Target::Answered(body)) => return body,
        Err(refusal) => return error_body(refusal),
    };
    let payload = &payload[..];
    let body = match call {
        Call::Command(name) => run_command(&engine, name, payload)
            .await
            .map(|reply| ok_body(&reply)),
        Call::Query(query) => run_query(context, &engine, query, payload).await,
    };
    body.unwrap_or_else(error_body)
}

fn ok_body<T: Serialize>(body: &T) -> Vec<u8> {
    to_json(&ServiceReply::Ok(body))
}

/// A refused request: the code and the message its error body carries, the engine's or the service's own.
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<cohost_proto::CommandParseError> for Refusal {
    fn from(error: cohost_proto::CommandParseError) -> Self {
        Self::invalid(error.to_string())
    }
}

impl From<cohost_proto::IdError> for Refusal {
    fn from(error: cohost_proto::IdError) -> Self {
        Self::invalid(error.to_string())
    }
}

fn error_body(error: Refusal) -> Vec<u8> {
    let mut message = error.message;
    if let Some((cut, _)) = message.char_indices().nth(MESSAGE_CHARS_MAX) {
        message.truncate(cut);
    }
    to_json(&ServiceReply::<()>::Error(ErrorInfo {
        code: error.code,
        message,
    }))
}

async fn run_command(
    engine: &Engine,
    name: &'static str,
    payload: &[u8],
) -> Result<Reply, Refusal> {
    let mut args = parse_object(payload)?;
    let actor = take_actor(&mut args, name)?;
    let options = Options {
        command_id: take_command_id(&mut args)?,
        expected_version: take_expected_version(&mut args)?,
    };
    let command = Command::from_json(name, &to_json(&args))?;
    let reply = engine.execute(actor, command, options).await?;
    Ok(without_credentials(reply))
}

/// No token ever goes out over NATS, whatever the engine put in the reply.
fn without_credentials(reply: Reply) -> Reply {
    match reply {
        Reply::Accepted(mut accepted) => {
            accepted.broadcaster = None;
            Reply::Accepted(accepted)
        }
        other => other,
    }
}

fn take_actor(args: &mut Map<String, Value>, command: &str) -> Result<Actor, Refusal> {
    let service = args.remove("service");
    let actor = args.remove("actor");
    match (service, &actor) {
        (None | Some(Value::Null), _) => {}
        (Some(Value::String(service)), Some(Value::Null))
            if SERVICE_COMMANDS.contains(&command) =>
        {
            return ServiceId::new(&service)
                .map(Actor::Service)
                .map_err(|e| Refusal::invalid(format!("service: {e}")));
        }
        (Some(Value::String(_)), Some(Value::Null)) => {
            return Err(Refusal::invalid(format!(
                "a service may issue only {}",
                SERVICE_COMMANDS.join(", ")
            )));
        }
        (Some(_), _) => {
            return Err(Refusal::invalid(
                "service must be a service id string, with a null actor",
            ));
        }
    }
    match actor {
        None => Err(Refusal::invalid(
            "missing actor: name the user who issues the command (or null for the system)",
        )),
        Some(Value::Null) if SYSTEM_COMMANDS.contains(&command) => Ok(Actor::System),
        Some(Value::Null) => Err(Refusal::invalid(format!(
            "{command} needs a user as actor; the system (null) may issue only {}",
            SYSTEM_COMMANDS.join(", ")
        ))),
        Some(Value::String(user)) => UserId::new(&user)
            .map(Actor::User)
            .map_err(|e| Refusal::invalid(format!("actor: {e}"))),
        Some(_) => Err(Refusal::invalid(
            "actor must be a user id string, or null for the system",
        )),
    }
}

fn take_command_id(args: &mut Map<String, Value>) -> Result<Option<CommandId>, Refusal> {
    match args.remove("command_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => Ok(Some(CommandId::new(&id)?)),
        Some(_) => Err(Refusal::invalid("command_id must be a string")),
    }
}

fn take_expected_version(args: &mut Map<String, Value>) -> Result<Option<u64>, Refusal> {
    match args.remove("expected_version") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(_) => Err(Refusal::invalid(
            "expected_version must be a non-negative integer",
        )),
    }
}

/// A request body: one JSON object, at most [`BODY_BYTES_MAX`] bytes, with no key twice.
fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if payload.is_empty() {
        return Err(Refusal::invalid(
            "the request is empty; expected a JSON object",
        ));
    }
    if payload.len() > BODY_BYTES_MAX {
        return Err(Refusal::invalid(format!(
            "the request is {} bytes; at most {BODY_BYTES_MAX} are allowed",
            payload.len()
        )));
    }
    serde_json::from_slice::<UniqueObject>(payload)
        .map(|object| object.0)
        .map_err(|e| Refusal::invalid(format!("the request is not a JSON object: {e}")))
}

/// A JSON object that refuses a repeated key, so that no two readers of one request can see different
/// values (as `serde_json::Map` would, keeping the last silently).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(UniqueObjectVisitor)
    }
}

struct UniqueObjectVisitor;

impl<'de> Visitor<'de> for UniqueObjectVisitor {
    type Value = UniqueObject;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<UniqueObject, A::Error> {
        let mut object = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = access.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                let key: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let value: Value = access.next_value()?;
            object.insert(key, value);
        }
        Ok(UniqueObject(object))
    }
}

/// A query's arguments: `actor` checked and set aside, the rest read into `T`, which denies unknown fields.
fn query_args<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Refusal> {
    from_args(query_object(payload)?)
}

/// A query's arguments, with the `actor` checked and taken out.
fn query_object(payload: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    let mut args = parse_object(payload)?;
    match args.remove("actor") {
        None | Some(Value::Null) => {}
        Some(Value::String(user)) => {
            UserId::new(&user).map_err(|e| Refusal::invalid(format!("actor: {e}")))?;
        }
        Some(_) => {
            return Err(Refusal::invalid(
                "actor must be a user id string, or null for the system",
            ));
        }
    }
    Ok(args)
}

fn from_args<T: DeserializeOwned>(args: serde_json::Map<String, Value>) -> Result<T, Refusal> {
    serde_json::from_value(Value::Object(args))
        .map_err(|e| Refusal::invalid(format!("bad arguments: {e}")))
}

/// A list query's arguments: whose list, under `key`, then its filter, cursor and limit.
fn list_args<Id: DeserializeOwned>(
    payload: &[u8],
    key: &str,
) -> Result<(Id, ListRequest), Refusal> {
    let mut args = query_object(payload)?;
    let id = args
        .remove(key)
        .ok_or_else(|| Refusal::invalid(format!("bad arguments: missing field `{key}`")))?;
    let id = serde_json::from_value(id)
        .map_err(|e| Refusal::invalid(format!("bad arguments: {key}: {e}")))?;
    let ListArgs {
        status,
        kind,
        cursor,
        limit,
    } = from_args(args)?;
    let list = ListRequest {
        filter: InvitationFilter { status, kind },
        cursor,
        limit: check_limit(limit, PAGE_LIMIT_MAX)?,
    };
    Ok((id, list))
}

fn check_limit(limit: Option<u64>, max: usize) -> Result<usize, Refusal> {
    match limit {
        None => Ok(max),
        Some(n) if n >= 1 && n <= max as u64 => Ok(n as usize),
        Some(n) => Err(Refusal::invalid(format!(
            "limit must be 1 to {max}, not {n}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomArgs {
    room_id: RoomId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    status: Option<InvitationStatus>,
    kind: Option<InvitationKind>,
    cursor: Option<String>,
    limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitlementArgs {
    room_id: RoomId,
    user_id: UserId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadEventsArgs {
    from_seq: u64,
    limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRoomArgs {
    room_id: RoomId,
    from_version: u64,
    limit: Option<u64>,
}

/// `broadcaster_entitlement`'s reply: who may broadcast, without credentials.
#[derive(Serialize)]
struct EntitlementBody {
    role: BroadcasterRole,
    invitation_id: Option<InvitationId>,
    /// What the seat may publish, so a service that mints its own tokens grants the same sources.
    audio: bool,
    video: bool,
}

/// Runs a query and returns its whole `{"ok": ...}` body.
async fn run_query(
    context: &Context,
    engine: &Engine,
    query: Query,
    payload: &[u8],
) -> Result<Vec<u8>, Refusal> {
    match query {
        Query::Room => {
            let args: RoomArgs = query_args(payload)?;
            Ok(ok_body(&engine.room(&args.room_id)?))
        }
        Query::RoomInvitations => {
            let (room_id, list) = list_args::<RoomId>(payload, "room_id")?;
            Ok(ok_body(&engine.room_invitations(&room_id, &list)?))
        }
        Query::UserInvitations => {
            let (user_id, list) = list_args::<UserId>(payload, "user_id")?;
            Ok(ok_body(&engine.user_invitations(&user_id, &list)?))
        }
        Query::BroadcasterEntitlement => {
            let args: EntitlementArgs = query_args(payload)?;
            let found = engine.broadcaster_entitlement(&args.room_id, &args.user_id)?;
            Ok(ok_body(&EntitlementBody {
                role: found.role,
                invitation_id: found.invitation_id,
                audio: found.audio,
                video: found.video,
            }))
        }
        Query::ReadEvents | Query::ReadRoom => read_log(context, engine, query, payload).await,
    }
}

/// `read_events` and `read_room`: they read sled, so they run on the blocking pool.
async fn read_log(
    context: &Context,
    engine: &Engine,
    query: Query,
    payload: &[u8],
) -> Result<Vec<u8>, Refusal> {
    let engine = engine.clone();
    let bytes_max = context.client.max_payload();
    if query == Query::ReadEvents {
        let args: ReadEventsArgs = query_args(payload)?;
        let limit = check_limit(args.limit, READ_EVENTS_MAX)?;
        let read = engine.clone();
        let events = blocking(move || read.read_events(args.from_seq, limit)).await?;
        events_body(&events, "last_seq", engine.last_seq(), bytes_max)
    } else {
        let args: ReadRoomArgs = query_args(payload)?;
        let limit = check_limit(args.limit, READ_EVENTS_MAX)?;
        let (read, room_id) = (engine.clone(), args.room_id.clone());
        let events = blocking(move || read.read_room(&room_id, args.from_version, limit)).await?;
        let version = engine.room(&args.room_id)?.version;
        events_body(&events, "version", version, bytes_max)
    }
}

async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(read).await {
        Ok(outcome) => Ok(outcome?),
        Err(e) => Err(Refusal::new(
            ErrorCode::Internal,
            format!("the read failed: {e}"),
        )),
    }
}

/// `{"ok":{"events":[...],"<tail>":<value>}}` with as many of the leading events as fit in `bytes_max`.
fn events_body(
    events: &[Envelope],
    tail: &'static str,
    value: u64,
    bytes_max: usize,
) -> Result<Vec<u8>, Refusal> {
    let mut body = br#"{"ok":{"events":["#.to_vec();
    for (i, envelope) in events.iter().enumerate() {
        let json = to_json(envelope);
        if body.len() + 1 + json.len() + EVENTS_CLOSING_BYTES_MAX > bytes_max {
            if i == 0 {
                return Err(Refusal::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "the event at seq {} does not fit the server's max_payload of {bytes_max} bytes",
                        envelope.seq
                    ),
                ));
            }
            break;
        }
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&json);
    }
    body.extend_from_slice(format!(r#"],"{tail}":{value}}}}}"#).as_bytes());
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let json = include_str!("../../../proto/vectors/07-presence_changed.json");
        serde_json::from_str(json).expect("a golden envelope")
    }

    #[test]
    fn every_endpoint_has_a_distinct_valid_name_and_subject() {
        let calls: Vec<Call> = Call::all().collect();
        assert_eq!(calls.len(), Command::NAMES.len() + QUERY_NAMES.len());
        let names: HashSet<_> = calls.iter().map(|c| c.name()).collect();
        let subjects: HashSet<_> = calls.iter().map(|c| c.subject()).collect();
        assert_eq!(names.len(), calls.len(), "endpoint names are stats keys");
        assert_eq!(subjects.len(), calls.len());
        for call in calls {
            let name = call.name();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name}"
            );
        }
        let queries: Vec<_> = QUERIES.iter().map(|(q, _)| q.name()).collect();
        assert_eq!(queries, QUERY_NAMES);
        for system in SYSTEM_COMMANDS {
            assert!(Command::NAMES.contains(&system), "{system}");
        }
    }

    #[test]
    fn a_request_is_one_object_with_unique_keys() {
        assert_eq!(parse_object(br#" {"a":1} "#).unwrap()["a"], 1);
        let cases: [&[u8]; 9] = [
            b"",
            b"[]",
            b"null",
            b"\"x\"",
            br#"{"a":1,"a":2}"#,
            br#"{"a":1} {}"#,
            br#"{"a":"#,
            b"\xff",
            b"{\"a\":\"\xff\"}",
        ];
        for payload in cases {
            let error = parse_object(payload).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidArgument, "{payload:?}");
        }
        let deep = "[".repeat(100_000);
        let mut padded = br#"{"a":1}"#.to_vec();
        padded.resize(BODY_BYTES_MAX, b' ');
        assert!(parse_object(&padded).is_ok(), "exactly the limit is fine");
        padded.push(b' ');
        assert_eq!(
            parse_object(&padded).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            parse_object(deep.as_bytes()).unwrap_err().code,
            ErrorCode::InvalidArgument,
            "too large, and never a stack overflow"
        );
        let nested = format!("{{\"a\":{}", "[".repeat(60_000));
        assert_eq!(
            parse_object(nested.as_bytes()).unwrap_err().code,
            ErrorCode::InvalidArgument,
            "serde_json's depth limit holds"
        );
    }

    #[test]
    fn limits_are_checked_not_clamped() {
        assert_eq!(check_limit(None, 100).unwrap(), 100);
        assert_eq!(check_limit(Some(1), 100).unwrap(), 1);
        assert_eq!(check_limit(Some(100), 100).unwrap(), 100);
        for bad in [0, 101, u64::MAX] {
            assert_eq!(
                check_limit(Some(bad), 100).unwrap_err().code,
                ErrorCode::InvalidArgument
            );
        }
    }

    #[test]
    fn an_events_reply_keeps_what_fits() {
        let one = envelope();
        let events = vec![one.clone(), one.clone(), one.clone()];
        let each = to_json(&one).len();
        let whole: Value =
            serde_json::from_slice(&events_body(&events, "last_seq", 9, 1 << 20).unwrap()).unwrap();
        assert_eq!(whole["ok"]["events"].as_array().unwrap().len(), 3);
        assert_eq!(whole["ok"]["last_seq"], 9);
        assert_eq!(
            whole["ok"]["events"][0],
            serde_json::to_value(&one).unwrap()
        );
        let two_fit = 20 + 2 * (each + 1) + EVENTS_CLOSING_BYTES_MAX;
        let body = events_body(&events, "version", u64::MAX, two_fit).unwrap();
        assert!(body.len() <= two_fit);
        let trimmed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(trimmed["ok"]["events"].as_array().unwrap().len(), 2);
        assert_eq!(trimmed["ok"]["version"], u64::MAX);
        let empty: Value =
            serde_json::from_slice(&events_body(&[], "last_seq", 0, 64).unwrap()).unwrap();
        assert_eq!(
            empty,
            serde_json::json!({"ok": {"events": [], "last_seq": 0}})
        );
        let error = events_body(&events, "last_seq", 9, each).unwrap_err();
        assert_eq!(error.code, ErrorCode::ResourceExhausted);
    }

    #[test]
    fn error_messages_are_bounded() {
        let body = error_body(Refusal::invalid("é".repeat(5_000)));
        let reply: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply["error"]["code"], "invalid_argument");
        let message = reply["error"]["message"].as_str().unwrap();
        assert_eq!(message.chars().count(), MESSAGE_CHARS_MAX);
    }
}
