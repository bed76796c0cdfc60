//! What the events carry and what the state answers: ids, times, seats, queries, entitlement and replies.

mod support;

use cohost_core::{ENDED_KEPT_MAX, Entitlement, InvitationFilter, apply, entitlement, reply};
use cohost_proto::limits::PAGE_LIMIT_MAX;
use cohost_proto::{
    BroadcasterRole, ErrorCode, Event, InvitationKind, InvitationStatus, RemovalReason, Reply,
    RoomStatus,
};
use support::*;

#[test]
fn an_invitation_carries_its_parties_times_and_id() {
    let (_, log) = given(&live_room_then(&[
        invite("alice", "bob").at(1_000),
        request("carol").at(2_000),
    ]));
    let created: Vec<_> = log.iter().filter_map(Event::invitation).collect();
    assert_eq!(created.len(), 2);
    let (first, second) = (created[0], created[1]);
    assert_eq!(first.invitation_id.to_string(), "stage-1.1");
    assert_eq!(first.room_id, room_id());
    assert_eq!(
        (first.kind, first.host.as_str(), first.user_id.as_str()),
        (InvitationKind::Invite, "alice", "bob")
    );
    assert_eq!(
        (first.created_ms, first.updated_ms, first.expires_ms),
        (1_000, 1_000, 1_000 + TTL_MS)
    );
    assert_eq!(first.status, InvitationStatus::Pending);
    assert_eq!(first.initiator().as_str(), "alice");
    assert_eq!(first.responder().as_str(), "bob");
    assert_eq!(second.invitation_id.to_string(), "stage-1.2");
    assert_eq!(
        (second.kind, second.user_id.as_str()),
        (InvitationKind::Request, "carol")
    );
    assert_eq!(second.initiator().as_str(), "carol");
    assert_eq!(second.responder().as_str(), "alice");
}

#[test]
fn accepting_seats_the_candidate() {
    let (state, log) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1).at(5_000),
    ]));
    let room = state.room().unwrap();
    assert_eq!(room.version, 4);
    assert_eq!(room.cohosts.len(), 1);
    let seat = &room.cohosts[0];
    assert_eq!(
        (seat.user_id.as_str(), seat.since_ms, seat.online),
        ("bob", 5_000, false)
    );
    assert_eq!(seat.invitation_id, invitation_id(1));
    assert!(state.is_cohost(&user("bob")));
    assert!(!state.is_cohost(&user("alice")));
    let approved = log.last().unwrap().invitation().unwrap();
    assert_eq!(
        (approved.status, approved.updated_ms),
        (InvitationStatus::Approved, 5_000)
    );
}

#[test]
fn removal_and_leaving_free_the_seat() {
    let (state, _) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        invite("alice", "carol"),
        accept("carol", 2),
        remove("alice", "bob"),
    ]));
    let seats: Vec<&str> = state
        .room()
        .unwrap()
        .cohosts
        .iter()
        .map(|s| s.user_id.as_str())
        .collect();
    assert_eq!(seats, ["carol"]);
    let (state, _) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        leave("bob"),
    ]));
    assert!(state.room().unwrap().cohosts.is_empty());
    // The invitation keeps its approved status: it was approved; the seat is what ended.
    assert_eq!(
        state.invitation(&invitation_id(1)).unwrap().status,
        InvitationStatus::Approved
    );
}

#[test]
fn an_accept_takes_the_lowest_free_seat_and_names_it() {
    let (state, log) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        invite("alice", "carol"),
        accept("carol", 2),
        remove("alice", "bob"),
        invite("alice", "dave"),
        accept("dave", 3),
    ]));
    let seats: Vec<(&str, u8, bool, bool)> = state
        .room()
        .unwrap()
        .cohosts
        .iter()
        .map(|s| (s.user_id.as_str(), s.seat, s.audio, s.video))
        .collect();
    // bob's seat 1 came free; carol keeps 2; the list stays in the order they were seated.
    assert_eq!(seats, [("carol", 2, true, true), ("dave", 1, true, true)]);
    let taken: Vec<Option<u8>> = log
        .iter()
        .filter_map(|e| match e {
            Event::InvitationApproved { invitation } => Some(invitation.seat),
            _ => None,
        })
        .collect();
    assert_eq!(taken, [Some(1), Some(2), Some(1)]);
    let reasons: Vec<RemovalReason> = log
        .iter()
        .filter_map(|e| match e {
            Event::CohostRemoved { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [RemovalReason::Host]);
    let room = state.room().unwrap();
    assert!(room.moderators.is_empty() && room.locked_seats.is_empty() && room.requests_open);
}

/// A history recorded before seats were numbered (log layout V1: approvals name no seat, room events list seats
/// unnumbered) replays to the same seats as one recorded today: each the lowest free when it was taken.
#[test]
fn a_history_without_seat_numbers_replays_to_the_same_seats() {
    let (numbered, log) = given(&[
        create("alice"),
        invite("alice", "bob"),
        accept("bob", 1),
        invite("alice", "carol"),
        accept("carol", 2),
        leave("bob"),
        invite("alice", "dave"),
        accept("dave", 3),
        go_live("alice"),
        presence("carol", true),
    ]);
    let unnumbered: Vec<Event> = log
        .into_iter()
        .map(|mut event| {
            match &mut event {
                Event::InvitationApproved { invitation } => invitation.seat = None,
                Event::RoomLive { room } | Event::RoomStopped { room, .. } => {
                    room.cohosts.iter_mut().for_each(|seat| seat.seat = 0);
                }
                _ => {}
            }
            event
        })
        .collect();
    let mut replayed = cohost_core::RoomState::default();
    for event in &unnumbered {
        apply(&mut replayed, event);
    }
    let seats = |state: &cohost_core::RoomState| -> Vec<(String, u8)> {
        let room = state.room().unwrap();
        room.cohosts
            .iter()
            .map(|s| (s.user_id.to_string(), s.seat))
            .collect()
    };
    assert_eq!(seats(&numbered), [("carol".into(), 2), ("dave".into(), 1)]);
    assert_eq!(seats(&replayed), seats(&numbered));
}

#[test]
fn stopping_cancels_pending_offers_ends_seats_then_ends_the_room() {
    let (state, log) = given(&live_room_then(&[
        invite("alice", "bob"),
        request("carol"),
        invite("alice", "dave"),
        accept("dave", 3),
        stop("alice").at(9_000),
    ]));
    let tail: Vec<_> = log.iter().rev().take(4).rev().collect();
    let cancelled: Vec<_> = tail[..2].iter().map(|e| e.invitation().unwrap()).collect();
    assert!(matches!(tail[0], Event::InvitationCancelled { .. }));
    assert_eq!(cancelled[0].invitation_id, invitation_id(1));
    assert_eq!(cancelled[1].invitation_id, invitation_id(2));
    assert!(
        cancelled
            .iter()
            .all(|i| i.status == InvitationStatus::Cancelled && i.updated_ms == 9_000)
    );
    let Event::CohostRemoved {
        user_id,
        invitation_id: seat,
        reason,
    } = tail[2]
    else {
        panic!("dave's seat ends before the room does")
    };
    assert_eq!((user_id.as_str(), seat), ("dave", &invitation_id(3)));
    assert_eq!(*reason, cohost_proto::RemovalReason::RoomStopped);
    let Event::RoomStopped { room, .. } = tail[3] else {
        panic!("last event must be room_stopped")
    };
    assert_eq!(room.status, RoomStatus::Ended);
    assert!(room.cohosts.is_empty());
    assert_eq!(room, state.room().unwrap());
    assert_eq!(room.version, log.len() as u64);
    assert_eq!(state.pending_count(), 0);
}

#[test]
fn presence_marks_the_seat_and_the_host() {
    let (state, _) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        presence("bob", true),
    ]));
    assert!(state.seat(&user("bob")).unwrap().online);
    assert!(!state.host_online());
    let (state, _) = given(&live_room_then(&[presence("alice", true)]));
    assert!(state.host_online());
    assert_eq!(state.version(), 3);
}

#[test]
fn invitations_filter_by_status_and_kind_and_page_with_a_cursor() {
    let mut steps = vec![];
    for i in 0..5 {
        steps.push(invite("alice", &format!("guest-{i}")));
        steps.push(request(&format!("fan-{i}")));
    }
    steps.extend([
        reject("guest-0", 1),
        cancel("fan-0", 2),
        accept("guest-1", 3),
    ]);
    let (state, _) = given(&live_room_then(&steps));
    let all = state.invitations(InvitationFilter::default(), None, 100);
    assert_eq!(all.items.len(), 10);
    assert_eq!(all.next_after, None);
    let pending = InvitationFilter {
        status: Some(InvitationStatus::Pending),
        kind: None,
    };
    assert_eq!(state.invitations(pending, None, 100).items.len(), 7);
    let pending_requests = InvitationFilter {
        status: Some(InvitationStatus::Pending),
        kind: Some(InvitationKind::Request),
    };
    let numbers = |page: &cohost_core::InvitationPage| -> Vec<u64> {
        page.items
            .iter()
            .map(|i| i.invitation_id.number())
            .collect()
    };
    assert_eq!(
        numbers(&state.invitations(pending_requests, None, 100)),
        [4, 6, 8, 10]
    );
    let first = state.invitations(pending, None, 3);
    assert_eq!(numbers(&first), [4, 5, 6]);
    assert_eq!(first.next_after, Some(6));
    let second = state.invitations(pending, first.next_after, 3);
    assert_eq!(numbers(&second), [7, 8, 9]);
    let third = state.invitations(pending, second.next_after, 3);
    assert_eq!(numbers(&third), [10]);
    assert_eq!(third.next_after, None);
    // A limit of zero still returns a page; a huge one is capped.
    assert_eq!(state.invitations(pending, None, 0).items.len(), 1);
    assert!(
        state
            .invitations(InvitationFilter::default(), None, usize::MAX)
            .items
            .len()
            <= PAGE_LIMIT_MAX
    );
}

#[test]
fn a_busy_room_keeps_a_bounded_history_of_ended_offers() {
    let mut steps = vec![];
    let rounds = ENDED_KEPT_MAX as u64 + 10;
    for n in 1..=rounds {
        steps.push(invite("alice", "bob"));
        steps.push(reject("bob", n));
    }
    steps.push(invite("alice", "bob"));
    let (state, _) = given(&live_room_then(&steps));
    let held = state.invitations(InvitationFilter::default(), None, usize::MAX);
    let mut all = held.items.clone();
    let mut after = held.next_after;
    while let Some(cursor) = after {
        let page = state.invitations(InvitationFilter::default(), Some(cursor), 100);
        all.extend(page.items);
        after = page.next_after;
    }
    assert_eq!(
        all.len(),
        ENDED_KEPT_MAX + 1,
        "the ended ones kept, plus the pending one"
    );
    assert_eq!(all.last().unwrap().status, InvitationStatus::Pending);
    assert!(
        state.invitation(&invitation_id(1)).is_none(),
        "the oldest ended offer is only in the log"
    );
    assert!(state.invitation(&invitation_id(rounds)).is_some());
    // A pruned invitation is not found; a kept one answers failed_precondition.
    assert_eq!(
        accept("bob", 1).decide(&state).unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        accept("bob", rounds).decide(&state).unwrap_err().code(),
        ErrorCode::FailedPrecondition
    );
}

#[test]
fn broadcaster_credentials_follow_the_seat() {
    let host =
        |state: &cohost_core::RoomState| entitlement(state, &user("alice")).map(|e| e.role());
    let bob = |state: &cohost_core::RoomState| {
        entitlement(state, &user("bob"))
            .map(|e| e.role())
            .map_err(|r| r.code())
    };
    let (idle, _) = given(&[create("alice")]);
    assert_eq!(
        host(&idle).unwrap_err().code(),
        ErrorCode::FailedPrecondition
    );
    let (live, _) = given(&live_room_then(&[]));
    assert_eq!(host(&live), Ok(BroadcasterRole::Host));
    assert_eq!(bob(&live), Err(ErrorCode::PermissionDenied));
    let (pending, _) = given(&live_room_then(&[invite("alice", "bob")]));
    assert_eq!(bob(&pending), Err(ErrorCode::FailedPrecondition));
    let (rejected, _) = given(&live_room_then(&[invite("alice", "bob"), reject("bob", 1)]));
    assert_eq!(bob(&rejected), Err(ErrorCode::FailedPrecondition));
    let (seated, _) = given(&live_room_then(&[invite("alice", "bob"), accept("bob", 1)]));
    match entitlement(&seated, &user("bob")).unwrap() {
        Entitlement::Cohost(seat) => assert_eq!(seat.invitation_id, invitation_id(1)),
        other => panic!("expected a co-host entitlement, got {other:?}"),
    }
    let (removed, _) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        remove("alice", "bob"),
    ]));
    assert_eq!(bob(&removed), Err(ErrorCode::FailedPrecondition));
    let (ended, _) = given(&live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        stop("alice"),
    ]));
    assert_eq!(bob(&ended), Err(ErrorCode::FailedPrecondition));
    assert_eq!(
        bob(&cohost_core::RoomState::default()),
        Err(ErrorCode::NotFound)
    );
}

#[test]
fn replies_are_the_contract_bodies() {
    let steps = live_room_then(&[invite("alice", "bob")]);
    let (mut state, _) = given(&steps);
    let accept = accept("bob", 1);
    let events = accept.decide(&state).unwrap();
    for event in &events {
        apply(&mut state, event);
    }
    let Reply::Accepted(accepted) = reply(&state, &accept.command, &events) else {
        panic!("accept replies accepted")
    };
    assert_eq!(accepted.invitation.status, InvitationStatus::Approved);
    assert!(accepted.broadcaster.is_none());
    let leave = leave("bob");
    let events = leave.decide(&state).unwrap();
    for event in &events {
        apply(&mut state, event);
    }
    let Reply::Room(room) = reply(&state, &leave.command, &events) else {
        panic!("leave replies the room")
    };
    assert!(room.cohosts.is_empty());
    assert_eq!(room.version, 5);
    let invite = invite("alice", "carol");
    let events = invite.decide(&state).unwrap();
    for event in &events {
        apply(&mut state, event);
    }
    let Reply::Invitation(invitation) = reply(&state, &invite.command, &events) else {
        panic!("invite replies the invitation")
    };
    assert_eq!(invitation.invitation_id, invitation_id(2));
}
