//! What spans partitions in cluster mode: a candidate's invitations live in the partitions of their rooms, so a
//! node asks each partition (its own engines here, the others' owners over NATS) for the page after the cursor
//! and merges them. The list's order, `(created_ms, invitation_id)`, is the same in every partition and on one
//! node, and so is its cursor, so a page from the cluster is the page one node would give.

use std::time::Instant;

use cohost_engine::ListRequest;
use cohost_proto::{ErrorCode, Invitation, Page, UserId};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::{FORWARD_DEADLINE, Refusal, to_json};
use crate::cluster::{Forwarder, Kind, Node};

/// A partition's page and the last seq it reflects.
type PageSeq = (Page<Invitation>, u64);

/// Partitions asked at once.
const PARTITIONS_AT_ONCE: usize = 16;

/// Why a list across partitions has no answer: the code and message of the first partition that refused, or
/// `unavailable` when one's owner did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// The contract's code, for the caller's reply (HTTP status or service error).
    pub code: ErrorCode,
    /// For people, never for matching.
    pub message: String,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Self {
            code: refusal.code,
            message: refusal.message,
        }
    }
}

/// A candidate's invitations across every partition: each partition's page after `list.cursor` (at most
/// `list.limit` items each), merged in list order and cut at `list.limit`. This node's partitions answer from
/// their engines; the others' owners over NATS, 16 partitions at a time, all within one deadline of
/// [`FORWARD_DEADLINE`](super::FORWARD_DEADLINE). Holds up to every partition's page in memory at once.
///
/// # Errors
///
/// [`Refused`] with the first refusal of a partition, or `unavailable` when an owner did not answer in time:
/// a list is never silently shorter.
pub async fn user_invitations_across(
    node: &Node,
    forwarder: &Forwarder,
    user: &UserId,
    list: &ListRequest,
) -> Result<Page<Invitation>, Refused> {
    let (page, _) = user_invitations_at_across(node, forwarder, user, list).await?;
    Ok(page)
}

/// As [`user_invitations_across`], with the last seq of each partition that its page reflects (by partition),
/// so a live collection can drop the changes the page already holds.
pub async fn user_invitations_at_across(
    node: &Node,
    forwarder: &Forwarder,
    user: &UserId,
    list: &ListRequest,
) -> Result<(Page<Invitation>, Vec<u64>), Refused> {
    let request = super::frame_named(PAGE_AT, &to_json(&arguments(user, list)));
    let deadline = Instant::now() + FORWARD_DEADLINE;
    let pages: Vec<(u32, Result<PageSeq, Refusal>)> = futures::stream::iter(0..node.partitions())
        .map(|partition| {
            let request = request.clone();
            async move {
                let page = async {
                    if let Some(engine) = node.engine_of(partition) {
                        return engine
                            .user_invitations_at(user, list)
                            .map_err(Refusal::from);
                    }
                    let answer = forwarder
                        .request(partition, Kind::Service, request, deadline)
                        .await
                        .map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))?;
                    page_at_of(&answer)
                };
                (partition, page.await)
            }
        })
        .buffer_unordered(PARTITIONS_AT_ONCE)
        .collect()
        .await;
    let mut seqs = vec![0; node.partitions() as usize];
    let mut parts = Vec::with_capacity(pages.len());
    for (partition, page) in pages {
        let (page, seq) = page?;
        seqs[partition as usize] = seq;
        parts.push(page);
    }
    Ok((merge(parts, list.limit), seqs))
}

/// The name of the frame that asks one partition's owner for a candidate's page and the seq it reflects: not
/// an endpoint of the service, only understood on the partition subjects.
pub(super) const PAGE_AT: &str = "user_invitations_at";

/// The arguments of a [`PAGE_AT`] frame, if it is one.
pub(super) fn page_at_payload(frame: &[u8]) -> Option<&[u8]> {
    frame
        .strip_prefix(PAGE_AT.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"\n"))
}

/// What a partition's owner answers [`PAGE_AT`] with.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct PageAt {
    pub page: Page<Invitation>,
    pub seq: u64,
}

/// The owner's answer to a [`PAGE_AT`] frame: `payload` holds `user_invitations`' arguments.
pub(super) fn answer_page_at(engine: &cohost_engine::Engine, payload: &[u8]) -> Vec<u8> {
    let answered = super::list_args::<UserId>(payload, "user_id").and_then(|(user, list)| {
        engine
            .user_invitations_at(&user, &list)
            .map_err(Refusal::from)
    });
    match answered {
        Ok((page, seq)) => super::ok_body(&PageAt { page, seq }),
        Err(refusal) => super::error_body(refusal),
    }
}

fn page_at_of(body: &[u8]) -> Result<(Page<Invitation>, u64), Refusal> {
    let at: PageAt = reply_of(body)?;
    Ok((at.page, at.seq))
}

/// The service's arguments for one partition's page.
fn arguments(user: &UserId, list: &ListRequest) -> Map<String, Value> {
    let mut args = Map::new();
    args.insert("user_id".into(), Value::String(user.to_string()));
    if let Some(status) = list.filter.status {
        args.insert(
            "status".into(),
            serde_json::to_value(status).expect("a status is JSON"),
        );
    }
    if let Some(kind) = list.filter.kind {
        args.insert(
            "kind".into(),
            serde_json::to_value(kind).expect("a kind is JSON"),
        );
    }
    if let Some(cursor) = &list.cursor {
        args.insert("cursor".into(), Value::String(cursor.clone()));
    }
    args.insert("limit".into(), Value::from(list.limit as u64));
    args
}

/// A partition owner's reply: its page, or its refusal.
#[cfg(test)]
fn page_of(body: &[u8]) -> Result<Page<Invitation>, Refusal> {
    reply_of(body)
}

/// A partition owner's reply: its body, or its refusal.
fn reply_of<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let malformed = |e: &dyn std::fmt::Display| {
        Refusal::new(
            ErrorCode::Internal,
            format!("a partition's answer does not decode: {e}"),
        )
    };
    let mut reply: Map<String, Value> = serde_json::from_slice(body).map_err(|e| malformed(&e))?;
    if let Some(page) = reply.remove("ok") {
        return serde_json::from_value(page).map_err(|e| malformed(&e));
    }
    let error = reply.remove("error").unwrap_or_default();
    let code =
        serde_json::from_value::<ErrorCode>(error["code"].clone()).unwrap_or(ErrorCode::Internal);
    let message = error["message"].as_str().unwrap_or("no message").to_owned();
    Err(Refusal::new(code, message))
}

/// The first `limit` items of the partitions' pages in list order, with a cursor after the last when any
/// partition has more, or more were found than fit.
fn merge(pages: Vec<Page<Invitation>>, limit: usize) -> Page<Invitation> {
    let more_in_a_partition = pages.iter().any(|page| page.next_cursor.is_some());
    let mut items: Vec<Invitation> = pages.into_iter().flat_map(|page| page.items).collect();
    items.sort_by(|a, b| (a.created_ms, &a.invitation_id).cmp(&(b.created_ms, &b.invitation_id)));
    let more = more_in_a_partition || items.len() > limit;
    items.truncate(limit);
    let next_cursor = more
        .then(|| {
            items
                .last()
                .map(|i| format!("{}:{}", i.created_ms, i.invitation_id))
        })
        .flatten();
    Page { items, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohost_proto::{InvitationId, InvitationKind, InvitationStatus, RoomId};

    fn invitation(room: &str, n: u64, created_ms: u64) -> Invitation {
        let room_id = RoomId::new(room).unwrap();
        Invitation {
            invitation_id: InvitationId::new(room_id.clone(), n).unwrap(),
            room_id,
            kind: InvitationKind::Invite,
            host: UserId::new("host").unwrap(),
            user_id: UserId::new("guest").unwrap(),
            status: InvitationStatus::Pending,
            created_ms,
            updated_ms: created_ms,
            expires_ms: created_ms + 1,
            seat: None,
        }
    }

    fn ids(page: &Page<Invitation>) -> Vec<String> {
        page.items
            .iter()
            .map(|i| i.invitation_id.to_string())
            .collect()
    }

    #[test]
    fn pages_merge_in_list_order_and_the_cursor_follows_the_last_item_kept() {
        let a = Page {
            items: vec![invitation("a", 1, 10), invitation("a", 2, 30)],
            next_cursor: None,
        };
        let b = Page {
            items: vec![invitation("b", 1, 20), invitation("b", 2, 30)],
            next_cursor: None,
        };
        let page = merge(vec![a.clone(), b.clone()], 3);
        assert_eq!(ids(&page), ["a.1", "b.1", "a.2"]);
        assert_eq!(page.next_cursor.as_deref(), Some("30:a.2"));
        let all = merge(vec![a.clone(), b.clone()], 4);
        assert_eq!(ids(&all), ["a.1", "b.1", "a.2", "b.2"]);
        assert_eq!(all.next_cursor, None, "everything fit");
        let partial = Page {
            next_cursor: Some("30:b.2".into()),
            ..b
        };
        let page = merge(vec![a, partial], 4);
        assert_eq!(
            page.next_cursor.as_deref(),
            Some("30:b.2"),
            "a partition has more"
        );
    }

    #[test]
    fn a_refusal_keeps_its_code() {
        let body = br#"{"error": {"code": "invalid_argument", "message": "cursor is not one this list gave"}}"#;
        let refusal = page_of(body).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::InvalidArgument);
        assert_eq!(refusal.message, "cursor is not one this list gave");
        assert!(
            page_of(br#"{"ok": {"items": [], "next_cursor": null}}"#)
                .unwrap()
                .items
                .is_empty()
        );
    }
}
