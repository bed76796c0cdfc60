//! Live collections over Server-Sent Events. (Filled in by the SSE work.)

use axum::http::HeaderMap;
use axum::response::Response;
use cohost_proto::{RoomId, UserId};

use crate::error::ApiError;
use crate::http::{AppState, ListQuery};

pub fn room_invitations(
    _state: AppState,
    _room_id: RoomId,
    _list: ListQuery,
    _headers: &HeaderMap,
) -> Result<Response, ApiError> {
    Err(ApiError::new(
        cohost_proto::ErrorCode::Unavailable,
        "live collections are not served yet",
    ))
}

pub fn my_invitations(
    _state: AppState,
    _user: UserId,
    _list: ListQuery,
    _headers: &HeaderMap,
) -> Result<Response, ApiError> {
    Err(ApiError::new(
        cohost_proto::ErrorCode::Unavailable,
        "live collections are not served yet",
    ))
}
