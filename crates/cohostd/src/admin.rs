//! The operators' routes, behind an admin secret of their own (`COHOST_ADMIN_SECRET`), never a user's JWT:
//! a user token, however valid, is refused here, and the admin secret opens nothing else.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use cohost_engine::FollowerStatus;
use cohost_proto::ErrorCode;

use crate::error::ApiError;
use crate::http::AppState;

/// One outgoing webhook endpoint, as the admin route shows it (never its secret).
#[derive(Debug, Clone)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub follower: Arc<FollowerStatus>,
}

/// Equal in time independent of where the two differ, so the secret cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |why: &str| ApiError::new(ErrorCode::Unauthenticated, why);
    let secret = state
        .admin_secret
        .as_deref()
        .ok_or_else(|| refuse("this deployment sets no COHOST_ADMIN_SECRET"))?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| refuse("the admin routes need Authorization: Bearer <admin secret>"))?;
    if !same(given.as_bytes(), secret.as_bytes()) {
        return Err(refuse("not the admin secret"));
    }
    Ok(())
}

/// `GET /v1/admin/webhooks`: each endpoint's id, url, cursor (the last seq it has handled), state
/// (`following`, `retrying`, or `stopped` once paused at an event it kept failing), lag, retries and last error.
pub(crate) async fn webhooks(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let last_seq = state.engines.one("the webhook endpoints")?.last_seq();
    let endpoints: Vec<serde_json::Value> = state
        .webhooks
        .iter()
        .map(|view| {
            let snapshot = view.follower.snapshot();
            let last_error = (snapshot.last_error.as_ref())
                .map(|error| serde_json::json!({"message": error.message, "at_ms": error.at_ms}));
            serde_json::json!({
                "id": view.id,
                "url": view.url,
                "cursor": snapshot.handled_seq,
                "state": snapshot.state.as_str(),
                "lag": snapshot.lag(last_seq),
                "retries": snapshot.retries,
                "last_error": last_error,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "endpoints": endpoints })).into_response())
}
