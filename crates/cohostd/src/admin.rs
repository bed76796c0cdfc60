//! The operators' routes, behind an admin secret of their own (`COHOST_ADMIN_SECRET`), never a user's JWT:
//! a user token, however valid, is refused here, and the admin secret opens nothing else.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use cohost_engine::FollowerStatus;
use cohost_proto::ErrorCode;

use crate::error::ApiError;
use crate::http::AppState;

/// One outgoing webhook endpoint, as the admin route shows it (never its secret).
#[derive(Debug, Clone)]
pub struct WebhookView {
    /// The partition whose events it delivers, on a cluster node; `None` on a single node.
    pub partition: Option<u32>,
    /// The endpoint's id in the webhooks file.
    pub id: String,
    pub url: String,
    pub follower: Arc<FollowerStatus>,
    pub pause: Arc<crate::delivery::Pause>,
}

impl WebhookView {
    /// The endpoint's state: its follower's, or `paused` while it waits at an event it kept failing.
    pub fn state(&self) -> &'static str {
        if self.pause.is_paused() {
            "paused"
        } else {
            self.follower.snapshot().state.as_str()
        }
    }
}

/// Equal in time independent of where the two differ, so the secret cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn check(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// The last seq of the log a delivery follows: the engine's, or on a cluster node its partition's.
fn last_seq(state: &AppState, partition: Option<u32>) -> u64 {
    match (&state.engines, partition) {
        (crate::http::Engines::One { engine, .. }, _) => engine.last_seq(),
        (crate::http::Engines::Cluster { node, .. }, Some(partition)) => {
            (node.engines().into_iter())
                .find(|(p, _)| *p == partition)
                .map_or(0, |(_, engine)| engine.last_seq())
        }
        (crate::http::Engines::Cluster { .. }, None) => 0,
    }
}

/// `GET /v1/admin/webhooks`: each delivery running on this node (one per endpoint on a single node; one per
/// endpoint and owned partition on a cluster node): the endpoint's id, url, partition, cursor (the last seq it
/// has handled), state (`following`, `retrying`, `paused` at an event it kept failing for the give-up age, or
/// `stopped`), lag, retries and last error.
pub(crate) async fn webhooks(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let endpoints: Vec<serde_json::Value> = (state.webhooks.views().iter())
        .map(|view| {
            let snapshot = view.follower.snapshot();
            let last_error = (snapshot.last_error.as_ref())
                .map(|error| serde_json::json!({"message": error.message, "at_ms": error.at_ms}));
            serde_json::json!({
                "id": view.id,
                "url": view.url,
                "partition": view.partition,
                "cursor": snapshot.handled_seq,
                "state": view.state(),
                "lag": snapshot.lag(last_seq(&state, view.partition)),
                "retries": snapshot.retries,
                "last_error": last_error,
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "endpoints": endpoints })).into_response())
}

/// `POST /v1/admin/webhooks/{id}/resume`: the endpoint's paused deliveries on this node (on a cluster node,
/// those of the partitions it owns) try their event again at once, with a fresh give-up age (nothing is
/// skipped). 404 when no delivery of that endpoint runs here, 409 `failed_precondition` when none is paused.
pub(crate) async fn resume_webhook(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check(&state, &headers)?;
    let views: Vec<_> = (state.webhooks.views().into_iter())
        .filter(|view| view.id == id)
        .collect();
    if views.is_empty() {
        let why = "no delivery of a webhook endpoint with this id runs on this node";
        return Err(ApiError::new(ErrorCode::NotFound, why));
    }
    let resumed: Vec<Option<u32>> = (views.iter())
        .filter(|view| view.pause.resume())
        .map(|view| view.partition)
        .collect();
    if resumed.is_empty() {
        let why = format!("webhook endpoint {id} is not paused here");
        return Err(ApiError::new(ErrorCode::FailedPrecondition, why));
    }
    // Each tries its event again now: `retrying` until the endpoint takes it.
    let body = serde_json::json!({"id": id, "state": "retrying", "partitions": resumed});
    Ok(axum::Json(body).into_response())
}
