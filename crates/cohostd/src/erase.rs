//! `POST /v1/admin/users/{user_id}/erase`: a backend, with a service credential, erases a user (see
//! `Engine::erase_user`). The pseudonym is `erased-` and 96 bits of an HMAC of the id under a key derived
//! from the deployment's secret, so it cannot be found by hashing guessed ids; the store keeps the first one
//! given, so it is stable.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cohost_proto::{ErrorCode, UserId};

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
    let Engines::One { engine, .. } = &state.engines else {
        let why =
            "erasure is not built for cluster mode yet: each partition would need the erased users";
        return Err(ApiError::new(ErrorCode::FailedPrecondition, why));
    };
    let pseudonym = state.auth.pseudonym(&user);
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
