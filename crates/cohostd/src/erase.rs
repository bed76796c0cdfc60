//! `POST /v1/admin/users/{user_id}/erase`: a backend, with a service credential, erases a user (see
//! `Engine::erase_user`). The pseudonym is `erased-` and 96 bits of an HMAC of the id under a key derived
//! from the deployment's secret, so it cannot be found by hashing guessed ids; the store (in cluster mode the
//! cluster's bucket) keeps the first one given, so it is stable.
//!
//! In cluster mode the erasure goes into the cluster's bucket; every node follows it, serves the user by the
//! pseudonym, and ends what the user holds in the partitions it owns, after the answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cohost_proto::{ErrorCode, UserId};

use cohost_engine::ErasedUsers;
use cohost_nats::cluster::{Erased, ErasureBook};

use crate::error::ApiError;
use crate::http::{AppState, Engines, Principal};

pub(crate) async fn erase_user(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let service = match crate::http::principal(&state, &headers)? {
        Principal::Service(service) => service,
        Principal::User(_) => {
            let why =
                "erasure takes a service credential (COHOST_SERVICE_SECRET), never a user's JWT";
            return Err(ApiError::new(ErrorCode::PermissionDenied, why));
        }
    };
    let user = UserId::new(&user_id).map_err(|e| ApiError::invalid(e.to_string()))?;
    let pseudonym = state.auth.pseudonym(&user);
    let Engines::One { engine, .. } = &state.engines else {
        return in_cluster(&state, user, Erased { pseudonym, service }).await;
    };
    // In a task of its own: a client that stops waiting does not cut an erasure short.
    let engine = engine.clone();
    let erased = tokio::spawn(async move { engine.erase_user(service, &user, pseudonym).await })
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the erasure did not finish: {e}"),
            )
        })??;
    tracing::info!(pseudonym = %erased.pseudonym, rooms = erased.rooms, "user erased");
    let body = serde_json::json!({
        "user_id": erased.pseudonym,
        "rooms": erased.rooms,
        "commands": erased.commands,
    });
    Ok(axum::Json(body).into_response())
}

/// A cluster node's part in erasure: the cluster's bucket, and the erased users its engines share.
#[derive(Clone)]
pub(crate) struct ClusterErasures {
    pub(crate) book: ErasureBook,
    pub(crate) erased: Arc<ErasedUsers>,
}

/// Records the erasure in the cluster's bucket and serves it here at once; what the user holds ends on each
/// partition's owner as it sees the erasure, so `rooms` and `commands` are null.
async fn in_cluster(state: &AppState, user: UserId, erasure: Erased) -> Result<Response, ApiError> {
    let erasures = (state.erasures.as_ref())
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "the node is not ready to erase"))?;
    // In a task of its own: a client that stops waiting does not cut the announcement short.
    let book = erasures.book.clone();
    let recorded =
        tokio::spawn(async move { book.erase(&user, &erasure).await.map(|e| (user, e)) });
    let (user, erased) = (recorded.await)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the erasure did not finish: {e}"),
            )
        })?
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    erasures.erased.insert(user, erased.pseudonym.clone());
    tracing::info!(pseudonym = %erased.pseudonym, "user erased in the cluster");
    let body = serde_json::json!({"user_id": erased.pseudonym, "rooms": null, "commands": null});
    Ok(axum::Json(body).into_response())
}
