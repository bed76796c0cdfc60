//! The stage controls' routes (DESIGN.md, "Stage controls"): moderators, seats, bans, media and whether the
//! room takes requests. Each authenticates the caller, reads its command from the path and the body, and
//! returns the room.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{delete, post};
use cohost_proto::{
    BanUser, CohostMedia, Command, MoveCohost, RequestsOpen, SeatTarget, UserId, UserTarget,
};
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::{AppState, Empty, RawBody, UserBody, as_caller, body, on_user, room_id, user_id};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rooms/{room_id}/requests/open", post(open_requests))
        .route("/v1/rooms/{room_id}/requests/close", post(close_requests))
        .route("/v1/rooms/{room_id}/moderators", post(add_moderator))
        .route(
            "/v1/rooms/{room_id}/moderators/{user_id}",
            delete(remove_moderator),
        )
        .route(
            "/v1/rooms/{room_id}/cohosts/{user_id}/move",
            post(move_cohost),
        )
        .route(
            "/v1/rooms/{room_id}/cohosts/{user_id}/media",
            post(set_cohost_media),
        )
        .route("/v1/rooms/{room_id}/seats/{seat}/lock", post(lock_seat))
        .route("/v1/rooms/{room_id}/seats/{seat}/unlock", post(unlock_seat))
        .route("/v1/rooms/{room_id}/bans", post(ban_user))
        .route("/v1/rooms/{room_id}/bans/{user_id}", delete(unban_user))
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaBody {
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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    user_id: UserId,
    #[serde(default)]
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
