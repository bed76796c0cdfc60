//! The HTTP error body `{"error": {"code", "message"}}` with the contract's status per code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cohost_proto::{ErrorBody, ErrorCode};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// 413 for an oversized body, 405 for a method the route lacks, 408 for a body that did not arrive in
    /// time; otherwise the code's status.
    pub status: Option<StatusCode>,
    /// For a 429: how long to wait, sent as `Retry-After`.
    pub retry_after: Option<std::time::Duration>,
    /// The request's body was left unread (refused before reading, or cut off): the response says
    /// `Connection: close`, so no client sends its next request on a connection the server then closes.
    pub body_unread: bool,
}

/// `Retry-After` on a 429 that names no wait (a full room, a quota that clears when state changes): a hint.
const RETRY_AFTER_HINT_S: u64 = 30;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: None,
            retry_after: None,
            body_unread: false,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self {
            status: Some(StatusCode::METHOD_NOT_ALLOWED),
            ..Self::invalid("this route does not take that method")
        }
    }

    /// 408: the body did not arrive within the body-read timeout.
    pub fn body_timeout() -> Self {
        Self {
            status: Some(StatusCode::REQUEST_TIMEOUT),
            body_unread: true,
            ..Self::invalid("the request body did not arrive in time")
        }
    }

    /// 429 `resource_exhausted`, with `Retry-After` in whole seconds (at least one).
    pub fn exhausted(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(ErrorCode::ResourceExhausted, message)
        }
    }

    pub fn too_large() -> Self {
        Self {
            status: Some(StatusCode::PAYLOAD_TOO_LARGE),
            body_unread: true,
            ..Self::invalid("request body is larger than 64 KiB")
        }
    }
}

impl From<cohost_engine::Error> for ApiError {
    fn from(error: cohost_engine::Error) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<cohost_credentials::WebhookRefusal> for ApiError {
    fn from(refusal: cohost_credentials::WebhookRefusal) -> Self {
        Self::new(refusal.code(), refusal.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let mut response = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.code == ErrorCode::ResourceExhausted {
            let seconds = self.retry_after.map_or(RETRY_AFTER_HINT_S, |wait| {
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            });
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds.max(1)),
            );
        }
        if self.code == ErrorCode::Unauthenticated {
            // RFC 7235: a 401 names the scheme it wants.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"cohost\""),
            );
        }
        response
    }
}
