//! The stage controls' routes (DESIGN.md, "Stage controls"): moderators, seats, bans, media and whether the
//! room takes requests. Each authenticates the caller, reads its command from the path and the body, and
//! returns the room. Beside them, the room's history from the log for the host and moderators.

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cohost_proto::limits::READ_EVENTS_MAX;
use cohost_proto::{Actor, Envelope, ErrorCode};
use cohost_proto::{
    BanUser, CohostMedia, Command, MoveCohost, RequestsOpen, SeatTarget, UserId, UserTarget,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::{
    AppState, Empty, RawBody, Route, UserBody, as_caller, body, on_user, room_id, routes, user_id,
};

pub(crate) fn routes() -> Vec<Route> {
    routes![
        POST "/v1/rooms/{room_id}/requests/open" => open_requests,
        POST "/v1/rooms/{room_id}/requests/close" => close_requests,
        POST "/v1/rooms/{room_id}/moderators" => add_moderator,
        DELETE "/v1/rooms/{room_id}/moderators/{user_id}" => remove_moderator,
        POST "/v1/rooms/{room_id}/cohosts/{user_id}/move" => move_cohost,
        POST "/v1/rooms/{room_id}/cohosts/{user_id}/media" => set_cohost_media,
        POST "/v1/rooms/{room_id}/seats/{seat}/lock" => lock_seat,
        POST "/v1/rooms/{room_id}/seats/{seat}/unlock" => unlock_seat,
        POST "/v1/rooms/{room_id}/bans" => ban_user,
        DELETE "/v1/rooms/{room_id}/bans/{user_id}" => unban_user,
        GET "/v1/rooms/{room_id}/events" => room_events,
    ]
}

/// A page of the room's history when no `limit` is given.
const EVENTS_PAGE_DEFAULT: usize = 100;

/// `GET /v1/rooms/{room_id}/events?after_version&limit`: the room's events from the log, for the host and the
/// moderators (who answer for the stage, and may need to show who removed whom). `next_cursor` is the version
/// to pass as `after_version` for the next page, or null once the page reaches the room's version.
async fn room_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let reader = crate::http::actor(&state, &headers)?;
    let room_id = room_id(&id)?;
    let (after_version, limit) = events_query(query)?;
    let engine = state.engines.for_room(&room_id)?;
    let room = engine.room(&room_id)?;
    // A service reads any room's history. The room is as served, so an erased caller is named as it names them.
    if let Actor::User(caller) = &reader
        && let caller = engine.served_id(caller)
        && room.host != caller
        && !room.moderators.contains(&caller)
    {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "only the host or a moderator reads a room's history",
        ));
    }
    let read = move || engine.read_room(&room_id, after_version.saturating_add(1), limit);
    let items: Vec<Envelope> = tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("a log read failed: {e}")))??;
    let next_cursor = items
        .last()
        .filter(|last| items.len() == limit || last.version < room.version)
        .map(|last| last.version.to_string());
    let page = serde_json::json!({"items": items, "next_cursor": next_cursor});
    Ok(axum::Json(page).into_response())
}

/// `after_version` (default 0: from the start) and `limit` (1 to 1000, default 100); nothing else.
fn events_query(
    raw: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<(u64, usize), ApiError> {
    let Query(mut params) = raw.map_err(|e| ApiError::invalid(e.body_text()))?;
    let after_version = match params.remove("after_version") {
        None => 0,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| ApiError::invalid("after_version must be a room version (0 or more)"))?,
    };
    let limit = match params.remove("limit") {
        None => EVENTS_PAGE_DEFAULT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=READ_EVENTS_MAX).contains(&n) => n,
            _ => return Err(ApiError::invalid("limit must be from 1 to 1000")),
        },
    };
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::invalid(format!(
            "unknown query parameter {unknown:?}"
        )));
    }
    Ok((after_version, limit))
}

async fn open_requests(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    set_requests_open(&state, &headers, &id, bytes, true).await
}

async fn close_requests(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    set_requests_open(&state, &headers, &id, bytes, false).await
}

/// `/requests/open` and `/close`: the path says which; the body is empty.
async fn set_requests_open(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    bytes: RawBody,
    open: bool,
) -> Result<Response, ApiError> {
    as_caller(state, headers, || {
        let Empty {} = body(bytes)?;
        let room_id = room_id(id)?;
        Ok(Command::SetRequestsOpen(RequestsOpen { room_id, open }))
    })
    .await
}

async fn add_moderator(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    as_caller(&state, &headers, || {
        let UserBody { user_id } = body(bytes)?;
        let room_id = room_id(&id)?;
        Ok(Command::AddModerator(UserTarget { room_id, user_id }))
    })
    .await
}

async fn remove_moderator(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    on_user(&state, &headers, &id, &user, Command::RemoveModerator).await
}

/// `{seat}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveBody {
    #[schema(minimum = 1, maximum = 255)]
    seat: u8,
}

async fn move_cohost(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    as_caller(&state, &headers, || {
        let MoveBody { seat } = body(bytes)?;
        let (room_id, user_id) = (room_id(&id)?, user_id(&user)?);
        Ok(Command::MoveCohost(MoveCohost {
            room_id,
            user_id,
            seat,
        }))
    })
    .await
}

/// `{audio?, video?}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MediaBody {
    #[serde(default)]
    audio: Option<bool>,
    #[serde(default)]
    video: Option<bool>,
}

async fn set_cohost_media(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    as_caller(&state, &headers, || {
        let MediaBody { audio, video } = body(bytes)?;
        let (room_id, user_id) = (room_id(&id)?, user_id(&user)?);
        Ok(Command::SetCohostMedia(CohostMedia {
            room_id,
            user_id,
            audio,
            video,
        }))
    })
    .await
}

async fn lock_seat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, seat)): Path<(String, String)>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    on_seat(&state, &headers, (&id, &seat), bytes, Command::LockSeat).await
}

async fn unlock_seat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, seat)): Path<(String, String)>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    on_seat(&state, &headers, (&id, &seat), bytes, Command::UnlockSeat).await
}

/// A command on a seat of a room, both named by the path; the body is empty.
async fn on_seat(
    state: &AppState,
    headers: &HeaderMap,
    (id, seat): (&str, &str),
    bytes: RawBody,
    command: fn(SeatTarget) -> Command,
) -> Result<Response, ApiError> {
    as_caller(state, headers, || {
        let Empty {} = body(bytes)?;
        let room_id = room_id(id)?;
        let seat = seat
            .parse::<u8>()
            .map_err(|_| ApiError::invalid("a seat is a number from 1 to 16"))?;
        Ok(command(SeatTarget { room_id, seat }))
    })
    .await
}

/// `{user_id, duration_s?}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanBody {
    user_id: UserId,
    /// 1 to 31,622,400 (366 days); absent: for the room's life.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_622_400)]
    duration_s: Option<u64>,
}

async fn ban_user(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: RawBody,
) -> Result<Response, ApiError> {
    as_caller(&state, &headers, || {
        let BanBody {
            user_id,
            duration_s,
        } = body(bytes)?;
        let room_id = room_id(&id)?;
        Ok(Command::BanUser(BanUser {
            room_id,
            user_id,
            duration_s,
        }))
    })
    .await
}

async fn unban_user(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    on_user(&state, &headers, &id, &user, Command::UnbanUser).await
}
