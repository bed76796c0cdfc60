//! Live collections over Server-Sent Events.
//!
//! A live collection first sends one `snapshot` event (the page `{"items", "next_cursor"}` for the list's filter
//! and limit), then one `change` event per envelope (the envelope in its contract JSON). The SSE `id:` is the room
//! version for a room's invitations and the global seq for `/v1/me/invitations`; the snapshot's id is the room
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
use cohost_engine::{EventStream, Interest};
use cohost_proto::{Envelope, ErrorBody, ErrorCode, Invitation, Page, RoomId, UserId};
use futures::Stream;

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
    let engine = match &collection {
        Collection::Room(room_id, _) => state.engines.for_room(room_id)?,
        Collection::Candidate(..) => state.engines.one("a candidate's invitations")?.clone(),
    };
    let engine = &engine;
    let feed = match (collection, last_event_id(headers)?) {
        // An id the collection cannot have sent (ahead of the room, or of the log) starts over too, rather than
        // waiting silently for a change that far ahead.
        (Collection::Room(room_id, _), Some(version))
            if engine
                .room(&room_id)
                .is_ok_and(|room| version <= room.version) =>
        {
            // Read the durable seq first: an event with version > `version` is then either found by `read_room`
            // (committed by now) or has a seq after `durable`. The read goes to the log, off the async workers.
            let durable = engine.last_seq();
            let (reader, id) = (engine.clone(), room_id.clone());
            let next = tokio::task::spawn_blocking(move || {
                reader.read_room(&id, version.saturating_add(1), 1)
            })
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("a log read failed: {e}")))??;
            let from_seq = next.first().map_or(durable + 1, |e| e.seq);
            let changes = engine.subscribe(from_seq, Interest::Room(room_id));
            Feed::new(&state, None, changes, version, |e| e.version)
        }
        (Collection::Room(room_id, list), _) => {
            let watch = engine.watch_room_invitations(&room_id, &list)?;
            let version = watch.room_version.unwrap_or_default();
            let snapshot = snapshot_event(version, &watch.snapshot)?;
            Feed::new(&state, Some(snapshot), watch.changes, version, |e| {
                e.version
            })
        }
        (Collection::Candidate(user, _), Some(seq)) if engine.candidate_resumable(&user, seq) => {
            let changes = engine.subscribe(seq.saturating_add(1), Interest::Candidate(user));
            Feed::new(&state, None, changes, seq, |e| e.seq)
        }
        // Too far back to resume from what the engine indexes, or ahead of the log: start over from a snapshot.
        (Collection::Candidate(user, list), _) => {
            let watch = engine.watch_user_invitations(&user, &list)?;
            let snapshot = snapshot_event(watch.seq, &watch.snapshot)?;
            Feed::new(&state, Some(snapshot), watch.changes, watch.seq, |e| e.seq)
        }
    };
    let feed = Feed {
        _stream: Some(stream),
        ..feed.until(token_expires_s)
    };
    Ok(respond(&state, feed))
}

/// The collection's first event: the page, with the id a client resumes from.
fn snapshot_event(id: u64, page: &Page<Invitation>) -> Result<Event, ApiError> {
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
    changes: EventStream,
    /// Changes with an id at or below this were already sent (or are in the snapshot).
    after: u64,
    id_of: fn(&Envelope) -> u64,
    /// When the caller's token expires: the collection ends there.
    expires: tokio::time::Instant,
    ended: bool,
    _guard: ClientGuard,
    /// The collection's place in the user's quota, freed when it ends.
    _stream: Option<StreamGuard>,
}

impl Feed {
    fn new(
        state: &AppState,
        snapshot: Option<Event>,
        changes: EventStream,
        after: u64,
        id_of: fn(&Envelope) -> u64,
    ) -> Self {
        Self {
            snapshot,
            changes,
            after,
            id_of,
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
                Some(Ok(envelope)) => {
                    let id = (feed.id_of)(&envelope);
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
                Some(Err(error)) => {
                    feed.ended = true;
                    let event = end_event(
                        error.code(),
                        format!("{error}; reconnect with Last-Event-ID"),
                    );
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
