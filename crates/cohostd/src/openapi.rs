//! `GET /openapi.json`: the HTTP API as an OpenAPI 3.1 document, generated from the code with utoipa.
//!
//! The schemas come from the types the daemon reads and writes (the wire types of `cohost-proto`, the request
//! bodies of `http.rs` and `stage.rs`). The handlers are built by macros that utoipa's attribute cannot see
//! through, so each route is described by a stub below; a test holds the stubs to the router's own table
//! ([`crate::http::route_table`]) both ways, so a route cannot be added, removed or re-verbed in one and not the
//! other. Every operation declares the error body for each status the daemon can answer (with `Retry-After` on
//! 429) and, but for the health routes and LiveKit's webhook, the bearer JWT (the live collections take a stream
//! ticket in the query instead).

use axum::response::{IntoResponse, Response};
use cohost_proto::{
    Accepted, BroadcasterData, CreateRoom, Envelope, ErrorBody, Invitation, InvitationId,
    InvitationKind, InvitationStatus, Page, Room, RoomId, UserId,
};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::http::{Empty, InviteBody, SeatBody, TicketRequest, UserBody};
use crate::stage::{BanBody, MediaBody, MoveBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cohost",
        description = "The co-host flow of a livestream: invitations, the stage and LiveKit credentials. \
                       Errors are `{\"error\": {\"code\", \"message\"}}`; proto/README.md is the contract."
    ),
    paths(
        paths::healthz, paths::readyz, paths::metrics, paths::openapi,
        paths::create_room, paths::get_room, paths::go_live, paths::stop_room,
        paths::invite, paths::room_invitations, paths::request_to_join, paths::remove_cohost,
        paths::leave_stage, paths::broadcaster_data, paths::my_invitations,
        paths::accept, paths::reject, paths::cancel, paths::webhook, paths::stream_ticket,
        paths::open_requests, paths::close_requests, paths::add_moderator, paths::remove_moderator,
        paths::move_cohost, paths::set_cohost_media, paths::lock_seat, paths::unlock_seat,
        paths::ban_user, paths::unban_user, paths::room_events, paths::admin_webhooks,
        paths::resume_webhook, paths::admin_backup, paths::erase_user,
    ),
    components(schemas(ErrorBody, Envelope, InvitationStatus, InvitationKind)),
    modifiers(&Errors),
    security(("bearer" = []))
)]
struct Document;

/// The document, built once.
fn json() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        Document::openapi()
            .to_pretty_json()
            .expect("the document encodes")
    })
}

pub(crate) async fn document() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
        .into_response()
}

/// Adds the bearer scheme, and to every operation the error responses it may answer.
struct Errors;

/// Each status the daemon answers with the error body, and why.
const ERROR_STATUSES: [(&str, &str); 9] = [
    ("400", "invalid_argument: a bad id, body or query"),
    (
        "401",
        "unauthenticated: no valid JWT (with WWW-Authenticate)",
    ),
    ("403", "permission_denied: not the party who may do this"),
    (
        "404",
        "not_found: no such room, invitation, co-host or route",
    ),
    ("409", "already_exists, failed_precondition or conflict"),
    ("413", "invalid_argument: the body is over 64 KiB"),
    (
        "429",
        "resource_exhausted: a limit or quota (with Retry-After)",
    ),
    ("500", "internal"),
    (
        "503",
        "unavailable: recovering, draining, or the room's partition is elsewhere; ask again shortly",
    ),
];

impl Modify for Errors {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for item in document.paths.paths.values_mut() {
            for operation in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                add_errors(operation);
            }
        }
    }
}

fn add_errors(operation: &mut Operation) {
    for (status, description) in ERROR_STATUSES {
        let mut response = ResponseBuilder::new().description(description).content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        );
        if status == "429" {
            let seconds = utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::Integer)
                .minimum(Some(0));
            response = response.header(
                "Retry-After",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(Some(seconds))
                    .description(Some("seconds to wait before asking again"))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| response.build().into());
    }
}

/// One stub per route, for utoipa's attribute; never called.
#[allow(dead_code)]
mod paths {
    use super::*;

    #[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
        responses((status = 200, description = "alive: `{status, last_seq, followers}`; 503 after fail-stop", body = Object)))]
    fn healthz() {}

    #[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
        responses((status = 200, description = "ready for traffic: `{status: ready}`; 503 while recovering, failed or draining", body = Object)))]
    fn readyz() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
        responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
    fn metrics() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
        responses((status = 200, description = "this document", body = Object)))]
    fn openapi() {}

    #[utoipa::path(post, path = "/v1/rooms", tag = "rooms", request_body = CreateRoom,
        params(IdempotencyKey),
        responses((status = 200, description = "create_room: the caller is the host", body = Room)))]
    fn create_room() {}

    #[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "rooms", security((), ("bearer" = [])),
        params(RoomPath, TicketQuery, LastEventId),
        responses((status = 200, description = "the room; with `Accept: text/event-stream` the room as a live \
            collection: a `snapshot` of it, then a `change` per event (`id:` the room version)",
            content((Room = "application/json"), (String = "text/event-stream")))))]
    fn get_room() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/live", tag = "rooms", request_body = Empty,
        params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "go_live", body = Room)))]
    fn go_live() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/stop", tag = "rooms", request_body = Empty,
        params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "stop_room: every seat and offer ends", body = Room)))]
    fn stop_room() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/invitations", tag = "invitations", request_body = InviteBody,
        params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "invite (host or moderator)", body = Invitation)))]
    fn invite() {}

    #[utoipa::path(get, path = "/v1/rooms/{room_id}/invitations", tag = "invitations", security((), ("bearer" = [])),
        params(RoomPath, ListQuery, KindQuery, TicketQuery, LastEventId),
        responses((status = 200, description = "the room's invitations, for the host and moderators; with \
            `Accept: text/event-stream` a live collection (`id:` the room version)",
            content((Page<Invitation> = "application/json"), (String = "text/event-stream")))))]
    fn room_invitations() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/requests", tag = "invitations",
        request_body = SeatBody, params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "request_to_join: the caller raises a hand", body = Invitation)))]
    fn request_to_join() {}

    #[utoipa::path(delete, path = "/v1/rooms/{room_id}/cohosts/{user_id}", tag = "stage",
        params(RoomPath, UserPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "remove_cohost", body = Room)))]
    fn remove_cohost() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/leave", tag = "stage", request_body = Empty,
        params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "leave_stage", body = Room)))]
    fn leave_stage() {}

    #[utoipa::path(get, path = "/v1/rooms/{room_id}/broadcaster-data", tag = "stage", params(RoomPath),
        responses((status = 200, description = "LiveKit credentials for the host or a seated co-host of a live room", body = BroadcasterData)))]
    fn broadcaster_data() {}

    #[utoipa::path(get, path = "/v1/me/invitations", tag = "invitations", security((), ("bearer" = [])),
        params(ListQuery, KindQuery, TicketQuery, LastEventId),
        responses((status = 200, description = "the caller's invitations as candidate; with \
            `Accept: text/event-stream` a live collection (`id:` the seq)",
            content((Page<Invitation> = "application/json"), (String = "text/event-stream")))))]
    fn my_invitations() {}

    #[utoipa::path(post, path = "/v1/invitations/{invitation_id}/accept", tag = "invitations",
        request_body = Empty, params(InvitationPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "accept: the invitation, and the new co-host's credentials", body = Accepted)))]
    fn accept() {}

    #[utoipa::path(post, path = "/v1/invitations/{invitation_id}/reject", tag = "invitations",
        request_body = Empty, params(InvitationPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "reject", body = Invitation)))]
    fn reject() {}

    #[utoipa::path(post, path = "/v1/invitations/{invitation_id}/cancel", tag = "invitations",
        request_body = Empty, params(InvitationPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "cancel", body = Invitation)))]
    fn cancel() {}

    #[utoipa::path(post, path = "/v1/livekit/webhook", tag = "livekit", security(()),
        request_body(content = String, content_type = "application/webhook+json",
            description = "LiveKit's webhook, signed in its own Authorization header"),
        responses((status = 200, description = "`{applied}`, `{ignored}` or `{removed, why}`", body = Object)))]
    fn webhook() {}

    #[utoipa::path(post, path = "/v1/stream-tickets", tag = "live collections", request_body = TicketRequest,
        responses((status = 200, description = "a ticket that opens that one collection as `?ticket=`, for a \
            browser's EventSource", body = TicketReply)))]
    fn stream_ticket() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/requests/open", tag = "stage",
        request_body = Empty, params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "set_requests_open true", body = Room)))]
    fn open_requests() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/requests/close", tag = "stage",
        request_body = Empty, params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "set_requests_open false", body = Room)))]
    fn close_requests() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/moderators", tag = "stage", request_body = UserBody,
        params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "add_moderator (the host)", body = Room)))]
    fn add_moderator() {}

    #[utoipa::path(delete, path = "/v1/rooms/{room_id}/moderators/{user_id}", tag = "stage",
        params(RoomPath, UserPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "remove_moderator (the host)", body = Room)))]
    fn remove_moderator() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/cohosts/{user_id}/move", tag = "stage", request_body = MoveBody,
        params(RoomPath, UserPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "move_cohost: a taken seat swaps", body = Room)))]
    fn move_cohost() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/cohosts/{user_id}/media", tag = "stage",
        request_body = MediaBody, params(RoomPath, UserPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "set_cohost_media", body = Room)))]
    fn set_cohost_media() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/seats/{seat}/lock", tag = "stage",
        request_body = Empty, params(RoomPath, SeatPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "lock_seat", body = Room)))]
    fn lock_seat() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/seats/{seat}/unlock", tag = "stage",
        request_body = Empty, params(RoomPath, SeatPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "unlock_seat", body = Room)))]
    fn unlock_seat() {}

    #[utoipa::path(post, path = "/v1/rooms/{room_id}/bans", tag = "stage", request_body = BanBody,
        params(RoomPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "ban_user: for duration_s, else the room's life", body = Room)))]
    fn ban_user() {}

    #[utoipa::path(delete, path = "/v1/rooms/{room_id}/bans/{user_id}", tag = "stage",
        params(RoomPath, UserPath, IdempotencyKey, IfMatch),
        responses((status = 200, description = "unban_user", body = Room)))]
    fn unban_user() {}

    #[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin", security(("admin" = [])),
        responses((status = 200, description = "each outgoing webhook delivery on this node (per endpoint; on a \
            cluster node per endpoint and owned partition): `{endpoints: [{id, url, partition, cursor, state, lag, \
            retries, last_error}]}`; for the admin secret (COHOST_ADMIN_SECRET), never a user JWT", body = Object)))]
    fn admin_webhooks() {}

    #[utoipa::path(post, path = "/v1/admin/webhooks/{id}/resume", tag = "admin", security(("admin" = [])),
        params(WebhookPath),
        responses((status = 200, description = "the endpoint's paused deliveries on this node try their event again \
            at once, with a fresh give-up age: `{id, state: retrying, partitions}` (the partitions resumed; null on a \
            single node); 404 when no delivery of that endpoint runs on this node, 409 when none is paused", body = Object)))]
    fn resume_webhook() {}

    #[utoipa::path(get, path = "/v1/admin/backup", tag = "admin", security(("admin" = [])),
        responses((status = 200, description = "the log up to its last durable seq (header Cohost-Backup-Seq), \
            streamed while the node serves, as application/vnd.cohost.backup: frames of a little-endian u32 length \
            and bytes, a JSON header {format, last_seq, cursors, taken_at_ms} first, then each log record; \
            `cohostd backup --to DIR` writes it into a backup directory. 409 on a cluster node", body = Object)))]
    fn admin_backup() {}

    #[utoipa::path(post, path = "/v1/admin/users/{user_id}/erase", tag = "admin",
        params(UserPath),
        responses((status = 200, description = "erases the user, for a service credential only (403 for a user's \
            JWT): from now on everything served names them by a stable pseudonym, and what they held in open rooms \
            ends by the service's commands (a hosted room stops; pending offers, the seat and the moderator role \
            end). `{user_id: pseudonym, rooms, commands}`; on a cluster node rooms and commands are null (each partition's \
            owner ends its part after the answer)", body = Object)))]
    fn erase_user() {}

    #[utoipa::path(get, path = "/v1/rooms/{room_id}/events", tag = "rooms", params(RoomPath, EventsQuery),
        responses((status = 200, description = "the room's history from the log, for the host and moderators; \
            next_cursor is the after_version of the next page", body = Page<Envelope>)))]
    fn room_events() {}
}

/// `POST /v1/stream-tickets`'s reply.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct TicketReply {
    ticket: String,
    /// When it stops opening the collection, in ms since the epoch.
    expires_ms: u64,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct RoomPath {
    room_id: RoomId,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UserPath {
    user_id: UserId,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct WebhookPath {
    /// The endpoint's `id` in the webhooks file.
    id: String,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct InvitationPath {
    invitation_id: InvitationId,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct SeatPath {
    /// 1 to the room's max_cohosts.
    #[param(minimum = 1, maximum = 255)]
    seat: u8,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKey {
    /// The command's id: retrying with the same key never applies it twice.
    #[param(
        nullable = false,
        rename = "Idempotency-Key",
        pattern = "^[!-~]{1,64}$"
    )]
    idempotency_key: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IfMatch {
    /// The room version the caller last saw; another is `conflict`.
    #[param(nullable = false, rename = "If-Match", pattern = "^\"?[0-9]{1,19}\"?$")]
    if_match: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct LastEventId {
    /// A live collection's resume point: the `id:` of the last event received.
    #[param(nullable = false, rename = "Last-Event-ID")]
    last_event_id: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct TicketQuery {
    /// A stream ticket for this very path, instead of Authorization, with `Accept: text/event-stream` only.
    #[param(nullable = false)]
    ticket: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListQuery {
    #[param(nullable = false)]
    status: Option<InvitationStatus>,
    /// 1 to 100 (the default).
    #[param(nullable = false, minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[param(nullable = false)]
    cursor: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct KindQuery {
    #[param(nullable = false)]
    kind: Option<InvitationKind>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct EventsQuery {
    /// Events after this room version (default 0: from the start).
    #[param(nullable = false, minimum = 0)]
    after_version: Option<u64>,
    /// 1 to 1000 (default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The document and the router name the same routes, each with the same methods.
    #[test]
    fn the_document_has_exactly_the_router_s_routes() {
        let document: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "delete", "put", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed: BTreeSet<(String, String)> = crate::http::route_table()
            .into_iter()
            .map(|(method, path, _)| (method.to_string(), path.to_owned()))
            .collect();
        assert_eq!(documented, routed);
    }

    /// The events' `type` names in the document are the contract's.
    #[test]
    fn the_event_schema_names_each_type_as_the_contract_does() {
        let document: serde_json::Value = serde_json::from_str(json()).unwrap();
        let variants = document["components"]["schemas"]["Event"]["oneOf"]
            .as_array()
            .unwrap();
        let types: Vec<&str> = variants
            .iter()
            .map(|v| v["properties"]["type"]["enum"][0].as_str().unwrap())
            .collect();
        assert_eq!(types, cohost_proto::Event::TYPES);
    }

    /// Every operation declares the error body for the statuses a client must handle.
    #[test]
    fn every_operation_declares_its_errors() {
        let document: serde_json::Value = serde_json::from_str(json()).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for status in ["400", "401", "429", "503"] {
                    let response = &operation["responses"][status];
                    assert!(response.is_object(), "{method} {path}: {status}");
                }
                assert!(operation["responses"]["429"]["headers"]["Retry-After"].is_object());
            }
        }
    }
}
