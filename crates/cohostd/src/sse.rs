//! Live collections over Server-Sent Events.
//!
//! A live collection first sends one `snapshot` event (the page `{"items", "next_cursor"}` for the list's filter
//! and limit, or the room for `GET /v1/rooms/{room_id}`), then one `change` event per envelope (the envelope in its
//! contract JSON). The SSE `id:` is the room version for a room and its invitations and the global seq for
//! `/v1/me/invitations`; the snapshot's id is the room
//! version (or the seq) the page reflects. A client that reconnects with `Last-Event-ID` skips the snapshot and
//! gets every change after that id, caught up from the log and then followed live, without gaps or duplicates.
//!
//! **Why memory stays bounded, however slow the client.** The changes are produced straight from the engine's
//! [`EventStream`], polled only when the HTTP body asks for the next event, so nothing queues between the engine and
//! the socket: a client that reads slowly simply causes the stream to be polled slowly. The engine never waits for
//! it: its live feed is a bounded broadcast channel, and a reader that falls behind it is lagged out and reads the
//! log instead (in chunks of bounded size). So a slow client costs one cursor, not a buffer of its backlog. If the
//! stream fails (for instance the log cannot be read), the collection sends a final `end` event
//! (`{"error": {"code", "message"}}`) and ends; the client reconnects with `Last-Event-ID`.
//!
//! The collection also ends when the caller's token expires, with an `end` event whose code is
//! `unauthenticated`: a token's lifetime bounds what it can read. It ends when the engine shuts down (after
//! delivering what was committed). Keep-alive comments go out every 15 s. `cohost_sse_clients` counts the open
//! collections.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cohost_engine::{Engine, EventStream, Interest};
use cohost_nats::service::user_invitations_at_across;
use cohost_nats::user_feed;
use cohost_proto::{Envelope, ErrorBody, ErrorCode, RoomId, UserId};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::error::ApiError;
use cohost_engine::ListRequest;

use crate::http::AppState;
use crate::metrics::Metrics;
use crate::quota::StreamGuard;

/// The interval of keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a live collection follows.
#[derive(Debug)]
pub enum Collection {
    /// A room's invitations; the `id:` is the room version.
    Room(RoomId, ListRequest),
    /// The room itself, for a stage grid or a co-host who must learn they were moved, muted or removed; the
    /// `id:` is the room version.
    Stage(RoomId),
    /// The caller's invitations as candidate; the `id:` is the global seq.
    Candidate(UserId, ListRequest),
}

/// Serves `collection` after `Last-Event-ID`, or, without one, from a snapshot.
pub async fn serve(
    state: Arc<AppState>,
    collection: Collection,
    headers: &HeaderMap,
    token_expires_s: u64,
    stream: StreamGuard,
) -> Result<Response, ApiError> {
    if let (Collection::Candidate(user, list), Some(routing)) = (&collection, &state.routing) {
        let feed = candidate_in_cluster(&state, routing, user, list, headers).await?;
        let feed = Feed {
            _stream: Some(stream),
            ..feed.until(token_expires_s)
        };
        return Ok(respond(&state, feed));
    }
    let engine = match &collection {
        Collection::Room(room_id, _) | Collection::Stage(room_id) => {
            state.engines.for_room(room_id)?
        }
        Collection::Candidate(..) => state.engines.one("a candidate's invitations")?.clone(),
    };
    let engine = &engine;
    let feed = match (collection, last_event_id(headers)?) {
        // An id the collection cannot have sent (ahead of the room, or of the log) starts over too, rather than
        // waiting silently for a change that far ahead; so does one from before what the log here holds.
        (Collection::Room(room_id, list), Some(version))
            if engine
                .room(&room_id)
                .is_ok_and(|room| version <= room.version) =>
        {
            match room_resumed(&state, engine, &room_id, version).await? {
                Some(feed) => feed,
                None => room_snapshot(&state, engine, &room_id, &list)?,
            }
        }
        (Collection::Room(room_id, list), _) => room_snapshot(&state, engine, &room_id, &list)?,
        (Collection::Stage(room_id), Some(version))
            if engine
                .room(&room_id)
                .is_ok_and(|room| version <= room.version) =>
        {
            match room_resumed(&state, engine, &room_id, version).await? {
                Some(feed) => feed,
                None => stage_snapshot(&state, engine, &room_id)?,
            }
        }
        (Collection::Stage(room_id), _) => stage_snapshot(&state, engine, &room_id)?,
        (Collection::Candidate(user, _), Some(seq)) if engine.candidate_resumable(&user, seq) => {
            let changes = engine.subscribe(seq.saturating_add(1), Interest::Candidate(user));
            Feed::new(&state, None, engine_changes(changes, |e| e.seq), seq)
        }
        // Too far back to resume from what the engine indexes, or ahead of the log: start over from a snapshot.
        (Collection::Candidate(user, list), _) => {
            let watch = engine.watch_user_invitations(&user, &list)?;
            let snapshot = snapshot_event(watch.seq, &watch.snapshot)?;
            let changes = engine_changes(watch.changes, |e| e.seq);
            Feed::new(&state, Some(snapshot), changes, watch.seq)
        }
    };
    let feed = Feed {
        _stream: Some(stream),
        ..feed.until(token_expires_s)
    };
    Ok(respond(&state, feed))
}

/// A room's changes after `version`; `None` when the log here no longer holds them (in cluster mode, events
/// from before the snapshot the partition's owner started from): the client gets a fresh snapshot.
async fn room_resumed(
    state: &AppState,
    engine: &Engine,
    room_id: &RoomId,
    version: u64,
) -> Result<Option<Feed>, ApiError> {
    // Read the durable seq first: an event with version > `version` is then either found by `read_room`
    // (committed by now) or has a seq after `durable`. The read goes to the log, off the async workers.
    let durable = engine.last_seq();
    let (reader, id) = (engine.clone(), room_id.clone());
    let next =
        tokio::task::spawn_blocking(move || reader.read_room(&id, version.saturating_add(1), 1))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("a log read failed: {e}")))?;
    let next = match next {
        Ok(next) => next,
        Err(
            cohost_engine::Error::HistoryGone { .. } | cohost_engine::Error::EventsRemoved { .. },
        ) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let from_seq = next.first().map_or(durable + 1, |e| e.seq);
    let changes = engine.subscribe(from_seq, Interest::Room(room_id.clone()));
    let changes = engine_changes(changes, |e| e.version);
    Ok(Some(Feed::new(state, None, changes, version)))
}

/// A room's page, then its changes.
fn room_snapshot(
    state: &AppState,
    engine: &Engine,
    room_id: &RoomId,
    list: &ListRequest,
) -> Result<Feed, ApiError> {
    let watch = engine.watch_room_invitations(room_id, list)?;
    let version = watch.room_version.unwrap_or_default();
    let snapshot = snapshot_event(version, &watch.snapshot)?;
    let changes = engine_changes(watch.changes, |e| e.version);
    Ok(Feed::new(state, Some(snapshot), changes, version))
}

/// The room, then its changes.
fn stage_snapshot(state: &AppState, engine: &Engine, room_id: &RoomId) -> Result<Feed, ApiError> {
    let watch = engine.watch_room(room_id)?;
    let version = watch.snapshot.version;
    let snapshot = snapshot_event(version, &watch.snapshot)?;
    let changes = engine_changes(watch.changes, |e| e.version);
    Ok(Feed::new(state, Some(snapshot), changes, version))
}

/// A collection's changes, each with its `id:`, or why they end.
type Changes = BoxStream<'static, Result<(u64, Envelope), (ErrorCode, String)>>;

/// An engine's events as changes, each with the id `id_of` gives it.
fn engine_changes(events: EventStream, id_of: fn(&Envelope) -> u64) -> Changes {
    futures::stream::unfold(events, move |mut events| async move {
        let next = events.next().await?;
        let next = next
            .map(|envelope| (id_of(&envelope), envelope))
            .map_err(|error| (error.code(), error.to_string()));
        Some((next, events))
    })
    .boxed()
}

/// `/v1/me` on a cluster node: the candidate's rooms are spread over the partitions, so the page is gathered
/// from every partition (with the seq each page reflects) and the changes follow the candidate's subject in the
/// stream `COHOST`, whose sequence is the one order across partitions and so the `id:`. A change a partition's
/// page already reflects (its seq at or below the page's) is dropped. The snapshot's id is `s` and the stream
/// sequence read before the pages: a client resuming from it gets a fresh snapshot, since the changes right
/// after it may be reflected in the one it has.
async fn candidate_in_cluster(
    state: &AppState,
    routing: &crate::forward::Routing,
    user: &UserId,
    list: &ListRequest,
    headers: &HeaderMap,
) -> Result<Feed, ApiError> {
    let client = routing.feed.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "the live collection of /v1/me in cluster mode follows the stream COHOST: it needs COHOST_JETSTREAM=true",
        )
    })?;
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::new(ErrorCode::Unavailable, e.to_string());
    let (subjects, erased) = &feed_subjects(state, user);
    let erased = erased.clone();
    let (first, last) = user_feed::bounds(client)
        .await
        .map_err(|e| unavailable(&e))?;
    let bad = || ApiError::invalid("Last-Event-ID must be an id this collection sent");
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => match value.to_str().map_err(|_| bad())?.trim() {
            id if id
                .strip_prefix('s')
                .is_some_and(|n| n.parse::<u64>().is_ok()) =>
            {
                None
            }
            // An id ahead of the stream is not one this collection sent, and one before what it still holds
            // cannot be resumed from: start over.
            id => {
                let seq = id.parse::<u64>().map_err(|_| bad())?;
                (first.saturating_sub(1) <= seq && seq <= last).then_some(seq)
            }
        },
    };
    if let Some(after) = resume {
        let changes = user_feed::user_changes(client, subjects, after)
            .await
            .map_err(|e| unavailable(&e))?;
        return Ok(Feed::new(
            state,
            None,
            cluster_changes(changes, Vec::new(), erased),
            after,
        ));
    }
    let (page, seqs) = user_invitations_at_across(&routing.node, &routing.forwarder, user, list)
        .await
        .map_err(|refused| ApiError::new(refused.code, refused.message))?;
    let snapshot = Event::default()
        .event("snapshot")
        .id(format!("s{last}"))
        .data(json(&page)?);
    let changes = user_feed::user_changes(client, subjects, last)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Feed::new(
        state,
        Some(snapshot),
        cluster_changes(changes, seqs, erased),
        last,
    ))
}

/// The stream keeps what the relays published: events from before an erasure name the user, and the relays
/// publish an erased candidate's later events on their pseudonym's subject. So a candidate's feed follows both
/// (the pseudonym this deployment would give, or the one given), whenever the erasure comes; and the node's
/// erased users, through which its changes are served.
fn feed_subjects(
    state: &AppState,
    user: &UserId,
) -> ([UserId; 2], Arc<cohost_engine::ErasedUsers>) {
    let erased = (state.erasures.as_ref()).map_or_else(Arc::default, |e| e.erased.clone());
    let pseudonym = match erased.served_id(user) {
        same if &same == user => state.auth.pseudonym(user),
        given => given,
    };
    ([user.clone(), pseudonym], erased)
}

/// The feed's changes with the stream sequence as id, dropping those at or below `reflected`'s seq for their
/// partition (empty: none dropped), erased users named by their pseudonyms.
fn cluster_changes(
    changes: impl futures::Stream<Item = Result<user_feed::Change, user_feed::FeedError>>
    + Send
    + 'static,
    reflected: Vec<u64>,
    erased: Arc<cohost_engine::ErasedUsers>,
) -> Changes {
    changes
        .filter_map(move |change| {
            let kept = match change {
                Ok(change)
                    if reflected
                        .get(change.partition as usize)
                        .is_some_and(|seq| change.seq <= *seq) =>
                {
                    None
                }
                Ok(change) => Some(Ok((change.stream_seq, erased.serve(change.envelope)))),
                Err(error) => Some(Err((ErrorCode::Unavailable, error.to_string()))),
            };
            std::future::ready(kept)
        })
        .boxed()
}

/// The collection's first event: the page, with the id a client resumes from.
fn snapshot_event<T: serde::Serialize>(id: u64, page: &T) -> Result<Event, ApiError> {
    Ok(Event::default()
        .event("snapshot")
        .id(id.to_string())
        .data(json(page)?))
}

/// `Last-Event-ID` as a number, if present; anything else is `invalid_argument`.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid("Last-Event-ID must be an id this collection sent (a number)")
                })
        })
        .transpose()
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot encode JSON: {e}")))
}

/// Counts an open collection for as long as its stream lives.
struct ClientGuard(Arc<Metrics>);

impl ClientGuard {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
        Self(metrics.clone())
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the body stream carries between polls.
struct Feed {
    snapshot: Option<Event>,
    changes: Changes,
    /// Changes with an id at or below this were already sent (or are in the snapshot).
    after: u64,
    /// When the caller's token expires: the collection ends there.
    expires: tokio::time::Instant,
    ended: bool,
    _guard: ClientGuard,
    /// The collection's place in the user's quota, freed when it ends.
    _stream: Option<StreamGuard>,
}

impl Feed {
    fn new(state: &AppState, snapshot: Option<Event>, changes: Changes, after: u64) -> Self {
        Self {
            snapshot,
            changes,
            after,
            expires: tokio::time::Instant::now(),
            ended: false,
            _guard: ClientGuard::new(&state.metrics),
            _stream: None,
        }
    }

    /// Ends the collection when a token that expires at `expires_s` (seconds since the epoch) does.
    fn until(mut self, expires_s: u64) -> Self {
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(expires_s.saturating_sub(now_s));
        let now = tokio::time::Instant::now();
        self.expires = now
            .checked_add(left)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3_600));
        self
    }
}

fn respond(state: &AppState, feed: Feed) -> Response {
    // At shutdown every collection ends, so the server's graceful stop does not wait on open streams.
    let mut closing = state.closing.clone();
    let until_closing = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let mut response = Sse::new(futures::StreamExt::take_until(events(feed), until_closing))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Ask proxies not to buffer the stream.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

fn events(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    futures::stream::unfold(feed, |mut feed| async move {
        if feed.ended {
            return None;
        }
        if let Some(snapshot) = feed.snapshot.take() {
            return Some((Ok(snapshot), feed));
        }
        loop {
            let next = tokio::select! {
                next = feed.changes.next() => next,
                () = tokio::time::sleep_until(feed.expires) => {
                    feed.ended = true;
                    let message = "the token expired; reconnect with a fresh one and Last-Event-ID";
                    return Some((Ok(end_event(ErrorCode::Unauthenticated, message.into())), feed));
                }
            };
            match next {
                // The engine has shut down: the collection ends.
                None => return None,
                Some(Ok((id, envelope))) => {
                    if id <= feed.after {
                        continue;
                    }
                    feed.after = id;
                    let event = match serde_json::to_string(&envelope) {
                        Ok(data) => Event::default()
                            .event("change")
                            .id(id.to_string())
                            .data(data),
                        Err(e) => {
                            feed.ended = true;
                            end_event(ErrorCode::Internal, format!("cannot encode JSON: {e}"))
                        }
                    };
                    return Some((Ok(event), feed));
                }
                Some(Err((code, message))) => {
                    feed.ended = true;
                    let event = end_event(code, format!("{message}; reconnect with Last-Event-ID"));
                    return Some((Ok(event), feed));
                }
            }
        }
    })
}

/// The collection's last event, saying why it ends. Named `end`, not `error`: a browser's `EventSource`
/// reports its own connection failures as `error` events, and the two must not be taken for each other.
fn end_event(code: ErrorCode, message: String) -> Event {
    let body = serde_json::to_string(&ErrorBody::new(code, message)).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal","message":"cannot encode the error"}}"#.to_owned()
    });
    Event::default().event("end").data(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohost_proto::Event as Happened;

    fn change(stream_seq: u64, partition: u32, seq: u64) -> user_feed::Change {
        let envelope = Envelope {
            seq,
            room_id: RoomId::new("stage").unwrap(),
            version: seq,
            at_ms: 0,
            actor: None,
            service: None,
            command_id: None,
            event: Happened::PresenceChanged {
                user_id: UserId::new("bob").unwrap(),
                online: true,
                stamp: None,
            },
        };
        user_feed::Change {
            stream_seq,
            partition,
            seq,
            envelope,
        }
    }

    #[tokio::test]
    async fn a_change_the_snapshot_reflects_is_dropped_by_its_partition_s_seq() {
        let feed = futures::stream::iter([
            Ok(change(10, 0, 5)),
            Ok(change(11, 1, 1)),
            Ok(change(12, 0, 6)),
            Ok(change(13, 2, 9)),
        ]);
        // Partition 0's page reflects seq 5, partition 1's seq 3; partition 2 is not in the list.
        let kept: Vec<u64> = cluster_changes(feed, vec![5, 3], Arc::default())
            .map(|c| c.unwrap().0)
            .collect()
            .await;
        assert_eq!(kept, [12, 13]);
        let all: Vec<u64> = cluster_changes(
            futures::stream::iter([Ok(change(10, 0, 5))]),
            Vec::new(),
            Arc::default(),
        )
        .map(|c| c.unwrap().0)
        .collect()
        .await;
        assert_eq!(all, [10], "a resume drops nothing");
    }
}
