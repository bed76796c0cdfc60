//! Every command of the contract's table, as given/when/then cases: each success and each rejection with
//! its exact error code.

mod support;

use cohost_core::{Rejection, apply};
use cohost_proto::{ErrorCode, Event, RoomStatus};
use support::*;

const LATER: u64 = TTL_MS + 1;

#[test]
fn rule_create_room() {
    check(&[], create("alice"), Events(&["room_created"]));
    check(
        &[],
        create_with("alice", &"t".repeat(200), Some(16)),
        Events(&["room_created"]),
    );
    check(
        &[],
        create_with("alice", &"é".repeat(200), Some(1)),
        Events(&["room_created"]),
    );
    check(
        &[],
        create_with("alice", &"t".repeat(201), None),
        Error(ErrorCode::InvalidArgument),
    );
    for control in ["a\nb", "tab\there", "bell\u{7}", "del\u{7f}", "c1\u{85}"] {
        check(
            &[],
            create_with("alice", control, None),
            Error(ErrorCode::InvalidArgument),
        );
    }
    check(
        &[],
        create_with("alice", "Emoji 🎤 and accents: é ü ñ", None),
        Events(&["room_created"]),
    );
    check(
        &[],
        create_with("alice", "", Some(0)),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &[],
        create_with("alice", "", Some(17)),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &[create("alice")],
        create("bob"),
        Error(ErrorCode::AlreadyExists),
    );
    check(&[], create("system"), Error(ErrorCode::PermissionDenied));
    check(&[], create("alice").expecting(0), Events(&["room_created"]));
    check(
        &[],
        create("alice").expecting(1),
        Error(ErrorCode::Conflict),
    );
}

#[test]
fn rule_go_live() {
    check(&[create("alice")], go_live("alice"), Events(&["room_live"]));
    check(&[], go_live("alice"), Error(ErrorCode::NotFound));
    check(
        &[create("alice")],
        go_live("bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &[create("alice")],
        go_live("system"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[]),
        go_live("alice"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &live_room_then(&[stop("alice")]),
        go_live("alice"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &[create("alice")],
        go_live("alice").expecting(1),
        Events(&["room_live"]),
    );
    check(
        &[create("alice")],
        go_live("alice").expecting(2),
        Error(ErrorCode::Conflict),
    );
}

#[test]
fn rule_stop_room() {
    check(
        &live_room_then(&[]),
        stop("alice"),
        Events(&["room_stopped"]),
    );
    check(&[create("alice")], stop("alice"), Events(&["room_stopped"]));
    check(
        &live_room_then(&[]),
        stop("system"),
        Events(&["room_stopped"]),
    );
    check(
        &live_room_then(&[
            invite("alice", "bob"),
            request("carol"),
            invite("alice", "dave"),
            reject("dave", 3),
        ]),
        stop("alice"),
        Events(&[
            "invitation_cancelled",
            "invitation_cancelled",
            "room_stopped",
        ]),
    );
    // Pending offers are cancelled and seats end before the room does: an ended room holds nothing that can
    // change.
    check(
        &live_room_then(&[
            invite("alice", "bob"),
            accept("bob", 1),
            request("carol"),
            invite("alice", "dave"),
            accept("dave", 3),
        ]),
        stop("alice"),
        Events(&[
            "invitation_cancelled",
            "cohost_removed",
            "cohost_removed",
            "room_stopped",
        ]),
    );
    let stopped = live_room_then(&[invite("alice", "bob"), accept("bob", 1), stop("alice")]);
    check(
        &stopped,
        remove("alice", "bob"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(&stopped, leave("bob"), Error(ErrorCode::FailedPrecondition));
    check(
        &stopped,
        remove("carol", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[invite("alice", "bob"), accept("bob", 1)]),
        stop("bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[stop("alice")]),
        stop("alice"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(&[], stop("alice"), Error(ErrorCode::NotFound));
}

/// A log written before stop_room freed seats holds ended rooms with co-hosts still seated. They stay seated:
/// nothing is appended to an ended room, and no seat there grants credentials.
#[test]
fn an_ended_room_from_an_older_log_keeps_its_seats() {
    let (mut state, _) = given(&live_room_then(&[invite("alice", "bob"), accept("bob", 1)]));
    let mut room = state.room().unwrap().clone();
    room.status = RoomStatus::Ended;
    room.version += 1;
    apply(
        &mut state,
        &Event::RoomStopped {
            room,
            reason: cohost_proto::StopReason::Host,
        },
    );
    assert!(state.seat(&user("bob")).is_some());
    for step in [
        remove("alice", "bob"),
        remove("system", "bob"),
        leave("bob"),
    ] {
        assert_eq!(
            step.decide(&state),
            Err(Rejection::FailedPrecondition("room has ended")),
            "{step:?}"
        );
    }
    assert_eq!(
        cohost_core::entitlement(&state, &user("bob")),
        Err(Rejection::FailedPrecondition("room is not live"))
    );
}

#[test]
fn rule_invite() {
    check(
        &live_room_then(&[]),
        invite("alice", "bob"),
        Events(&["invitation_created"]),
    );
    check(
        &[create("alice")],
        invite("alice", "bob"),
        Events(&["invitation_created"]),
    );
    check(&[], invite("alice", "bob"), Error(ErrorCode::NotFound));
    check(
        &live_room_then(&[]),
        invite("bob", "carol"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[]),
        invite("system", "carol"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[]),
        invite("alice", "alice"),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &live_room_then(&[stop("alice")]),
        invite("alice", "bob"),
        Error(ErrorCode::FailedPrecondition),
    );
    let seated = live_room_then(&[invite("alice", "bob"), accept("bob", 1)]);
    check(
        &seated,
        invite("alice", "bob"),
        Error(ErrorCode::AlreadyExists),
    );
    let pending = live_room_then(&[invite("alice", "bob")]);
    check(
        &pending,
        invite("alice", "bob"),
        Error(ErrorCode::AlreadyExists),
    );
    let requested = live_room_then(&[request("bob")]);
    check(
        &requested,
        invite("alice", "bob"),
        Error(ErrorCode::AlreadyExists),
    );
    // The policy gives two seats.
    let full = live_room_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        invite("alice", "carol"),
        accept("carol", 2),
    ]);
    check(
        &full,
        invite("alice", "dave"),
        Error(ErrorCode::ResourceExhausted),
    );
    check(
        &live_room_then(&[]),
        invite("alice", "bob").expecting(2),
        Events(&["invitation_created"]),
    );
    check(
        &live_room_then(&[]),
        invite("alice", "bob").expecting(1),
        Error(ErrorCode::Conflict),
    );
}

#[test]
fn invite_is_capped_at_32_pending() {
    let mut history = live_room_then(&[]);
    history.extend((0..32).map(|i| invite("alice", &format!("user-{i}"))));
    check(
        &history,
        invite("alice", "one-more"),
        Error(ErrorCode::ResourceExhausted),
    );
    check(
        &history,
        request("one-more"),
        Error(ErrorCode::ResourceExhausted),
    );
    history.push(cancel("alice", 1));
    check(
        &history,
        invite("alice", "one-more"),
        Events(&["invitation_created"]),
    );
}

#[test]
fn reinvite_after_every_terminal_status() {
    let ends: [&[Step]; 6] = [
        &[invite("alice", "bob"), reject("bob", 1)],
        &[invite("alice", "bob"), cancel("alice", 1)],
        &[invite("alice", "bob"), expire("system", 1).at(LATER)],
        &[
            invite("alice", "bob"),
            accept("bob", 1),
            remove("alice", "bob"),
        ],
        &[invite("alice", "bob"), accept("bob", 1), leave("bob")],
        &[request("bob"), reject("alice", 1)],
    ];
    for end in ends {
        let history = live_room_then(end);
        check(
            &history,
            invite("alice", "bob").at(LATER),
            Events(&["invitation_created"]),
        );
        check(
            &history,
            request("bob").at(LATER),
            Events(&["invitation_created"]),
        );
    }
}

#[test]
fn rule_request_to_join() {
    check(
        &live_room_then(&[]),
        request("bob"),
        Events(&["invitation_created"]),
    );
    check(&[], request("bob"), Error(ErrorCode::NotFound));
    check(
        &live_room_then(&[]),
        request("alice"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[]),
        request("system"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[stop("alice")]),
        request("bob"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &live_room_then(&[request("bob")]),
        request("bob"),
        Error(ErrorCode::AlreadyExists),
    );
    check(
        &live_room_then(&[invite("alice", "bob")]),
        request("bob"),
        Error(ErrorCode::AlreadyExists),
    );
    check(
        &live_room_then(&[request("bob"), accept("alice", 1)]),
        request("bob"),
        Error(ErrorCode::AlreadyExists),
    );
}

#[test]
fn rule_accept_invitation() {
    let invited = live_room_then(&[invite("alice", "bob")]);
    check(&invited, accept("bob", 1), Events(&["invitation_approved"]));
    check(
        &invited,
        accept("bob", 1).at(TTL_MS - 1),
        Events(&["invitation_approved"]),
    );
    check(
        &invited,
        accept("bob", 1).at(TTL_MS),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &invited,
        accept("alice", 1),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &invited,
        accept("carol", 1),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &invited,
        accept("system", 1),
        Error(ErrorCode::PermissionDenied),
    );
    check(&invited, accept("bob", 2), Error(ErrorCode::NotFound));
    check(
        &invited,
        accept("bob", 1).expecting(2),
        Error(ErrorCode::Conflict),
    );
    check(
        &invited,
        accept("bob", 1).expecting(3),
        Events(&["invitation_approved"]),
    );
    let requested = live_room_then(&[request("bob")]);
    check(
        &requested,
        accept("alice", 1),
        Events(&["invitation_approved"]),
    );
    check(
        &requested,
        accept("bob", 1),
        Error(ErrorCode::PermissionDenied),
    );
    for ended in [
        reject("bob", 1),
        cancel("alice", 1),
        expire("system", 1).at(LATER),
        accept("bob", 1),
    ] {
        let history = live_room_then(&[invite("alice", "bob"), ended]);
        check(
            &history,
            accept("bob", 1),
            Error(ErrorCode::FailedPrecondition),
        );
    }
    // stop_room cancels the pending invitation first, so it is no longer pending.
    check(
        &live_room_then(&[invite("alice", "bob"), stop("alice")]),
        accept("bob", 1),
        Error(ErrorCode::FailedPrecondition),
    );
    let seats_taken = live_room_then(&[
        invite("alice", "bob"),
        invite("alice", "carol"),
        invite("alice", "dave"),
        accept("bob", 1),
        accept("carol", 2),
    ]);
    check(
        &seats_taken,
        accept("dave", 3),
        Error(ErrorCode::ResourceExhausted),
    );
}

#[test]
fn rule_reject_invitation() {
    let invited = live_room_then(&[invite("alice", "bob")]);
    check(&invited, reject("bob", 1), Events(&["invitation_rejected"]));
    check(
        &invited,
        reject("alice", 1),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &invited,
        reject("carol", 1),
        Error(ErrorCode::PermissionDenied),
    );
    check(&invited, reject("bob", 9), Error(ErrorCode::NotFound));
    check(
        &live_room_then(&[request("bob")]),
        reject("alice", 1),
        Events(&["invitation_rejected"]),
    );
    check(
        &live_room_then(&[request("bob")]),
        reject("bob", 1),
        Error(ErrorCode::PermissionDenied),
    );
    let answered = live_room_then(&[invite("alice", "bob"), accept("bob", 1)]);
    check(
        &answered,
        reject("bob", 1),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn rule_cancel_invitation() {
    let invited = live_room_then(&[invite("alice", "bob")]);
    check(
        &invited,
        cancel("alice", 1),
        Events(&["invitation_cancelled"]),
    );
    check(
        &invited,
        cancel("bob", 1),
        Error(ErrorCode::PermissionDenied),
    );
    // The system withdraws any offer (a user's erasure), an invite or a request.
    check(
        &invited,
        cancel("system", 1),
        Events(&["invitation_cancelled"]),
    );
    check(
        &live_room_then(&[request("bob")]),
        cancel("system", 1),
        Events(&["invitation_cancelled"]),
    );
    check(&invited, cancel("alice", 2), Error(ErrorCode::NotFound));
    check(
        &live_room_then(&[request("bob")]),
        cancel("bob", 1),
        Events(&["invitation_cancelled"]),
    );
    check(
        &live_room_then(&[request("bob")]),
        cancel("alice", 1),
        Error(ErrorCode::PermissionDenied),
    );
    let rejected = live_room_then(&[invite("alice", "bob"), reject("bob", 1)]);
    check(
        &rejected,
        cancel("alice", 1),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn cancel_and_accept_race_first_commit_wins() {
    let invited = live_room_then(&[invite("alice", "bob")]);
    let mut cancelled_first = invited.clone();
    cancelled_first.push(cancel("alice", 1));
    check(
        &cancelled_first,
        accept("bob", 1),
        Error(ErrorCode::FailedPrecondition),
    );
    let mut accepted_first = invited;
    accepted_first.push(accept("bob", 1));
    check(
        &accepted_first,
        cancel("alice", 1),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn rule_expire_invitation() {
    let invited = live_room_then(&[invite("alice", "bob")]);
    check(
        &invited,
        expire("system", 1).at(TTL_MS),
        Events(&["invitation_expired"]),
    );
    check(
        &invited,
        expire("system", 1).at(TTL_MS - 1),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &invited,
        expire("alice", 1).at(LATER),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &invited,
        expire("system", 5).at(LATER),
        Error(ErrorCode::NotFound),
    );
    let answered = live_room_then(&[invite("alice", "bob"), reject("bob", 1)]);
    check(
        &answered,
        expire("system", 1).at(LATER),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn rule_remove_cohost() {
    let seated = live_room_then(&[invite("alice", "bob"), accept("bob", 1)]);
    check(&seated, remove("alice", "bob"), Events(&["cohost_removed"]));
    check(
        &seated,
        remove("system", "bob"),
        Events(&["cohost_removed"]),
    );
    check(
        &seated,
        remove("bob", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &seated,
        remove("carol", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &seated,
        remove("alice", "carol"),
        Error(ErrorCode::NotFound),
    );
    check(
        &live_room_then(&[invite("alice", "bob")]),
        remove("alice", "bob"),
        Error(ErrorCode::NotFound),
    );
    let mut removed = seated.clone();
    removed.push(remove("alice", "bob"));
    check(&removed, remove("alice", "bob"), Error(ErrorCode::NotFound));
    check(&[], remove("alice", "bob"), Error(ErrorCode::NotFound));
}

#[test]
fn rule_leave_stage() {
    let seated = live_room_then(&[invite("alice", "bob"), accept("bob", 1)]);
    check(&seated, leave("bob"), Events(&["cohost_left"]));
    check(&seated, leave("carol"), Error(ErrorCode::NotFound));
    check(&seated, leave("alice"), Error(ErrorCode::NotFound));
    check(&seated, leave("system"), Error(ErrorCode::PermissionDenied));
    let mut left = seated.clone();
    left.push(leave("bob"));
    check(&left, leave("bob"), Error(ErrorCode::NotFound));
}

#[test]
fn rule_presence_changed() {
    let seated = live_room_then(&[invite("alice", "bob"), accept("bob", 1)]);
    check(
        &seated,
        presence("bob", true),
        Events(&["presence_changed"]),
    );
    check(
        &seated,
        presence("alice", true),
        Events(&["presence_changed"]),
    );
    check(&seated, presence("bob", false), Events(&[]));
    check(&seated, presence("carol", true), Error(ErrorCode::NotFound));
    let mut by_user = presence("bob", true);
    by_user.actor = actor("alice");
    check(&seated, by_user, Error(ErrorCode::PermissionDenied));
    let mut online = seated.clone();
    online.push(presence("bob", true));
    check(&online, presence("bob", true), Events(&[]));
    check(
        &online,
        presence("bob", false),
        Events(&["presence_changed"]),
    );
    // An ended room is final: the host's presence changes nothing, anyone else is not found.
    let ended = live_room_then(&[stop("alice")]);
    check(&ended, presence("alice", true), Events(&[]));
    check(&ended, presence("bob", true), Error(ErrorCode::NotFound));
}

#[test]
fn rule_end_abandoned() {
    use cohost_proto::StopReason::{Host, HostAbsent, NeverLive, System};
    let idle = [create("alice"), invite("alice", "bob")];
    check(
        &idle,
        end_abandoned("system", NeverLive),
        Events(&["invitation_cancelled", "room_stopped"]),
    );
    let (_, events) = given(&[create("alice"), end_abandoned("system", NeverLive)]);
    assert!(matches!(
        events.last(),
        Some(Event::RoomStopped { reason: NeverLive, room }) if room.status == RoomStatus::Ended
    ));
    check(
        &live_room_then(&[]),
        end_abandoned("system", NeverLive),
        Error(ErrorCode::FailedPrecondition),
    );
    // A live room whose host LiveKit has not seen, or saw leave, ends with its seats.
    let seated = live_room_then(&[invite("alice", "bob"), accept("bob", 1)]);
    check(
        &seated,
        end_abandoned("system", HostAbsent),
        Events(&["cohost_removed", "room_stopped"]),
    );
    let mut left = seated.clone();
    left.extend([presence("alice", true), presence("alice", false)]);
    check(
        &left,
        end_abandoned("system", HostAbsent),
        Events(&["cohost_removed", "room_stopped"]),
    );
    let mut back = seated.clone();
    back.push(presence("alice", true));
    check(
        &back,
        end_abandoned("system", HostAbsent),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &idle,
        end_abandoned("system", HostAbsent),
        Error(ErrorCode::FailedPrecondition),
    );
    for reason in [Host, System] {
        check(
            &seated,
            end_abandoned("system", reason),
            Error(ErrorCode::InvalidArgument),
        );
    }
    // Only the timer: not the host, not a user.
    check(
        &idle,
        end_abandoned("alice", NeverLive),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live_room_then(&[stop("alice")]),
        end_abandoned("system", HostAbsent),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &[],
        end_abandoned("system", NeverLive),
        Error(ErrorCode::NotFound),
    );
}

#[test]
fn rejection_messages_are_short_and_lowercase() {
    let (state, _) = given(&live_room_then(&[]));
    let rejection = accept("bob", 1).decide(&state).unwrap_err();
    assert_eq!(rejection, Rejection::NotFound("invitation not found"));
    let conflict = go_live("alice").expecting(7).decide(&state).unwrap_err();
    assert_eq!(conflict.to_string(), "expected room version 7, but it is 2");
}

/// The quotas that span rooms, at their defaults: 20 open rooms per host, 32 pending offers per candidate.
/// Checked after the room's own rules, and the offer's candidate is counted, whoever initiates.
#[test]
fn rule_quotas_across_rooms() {
    check(
        &[],
        create("alice").across(19, 0),
        Events(&["room_created"]),
    );
    check(
        &[],
        create("alice").across(20, 0),
        Error(ErrorCode::ResourceExhausted),
    );
    let live = live_room_then(&[]);
    for (open, pending, then) in [
        (20, 31, Events(&["invitation_created"])),
        (0, 32, Error(ErrorCode::ResourceExhausted)),
    ] {
        check(&live, invite("alice", "bob").across(open, pending), then);
        check(&live, request("carol").across(open, pending), then);
    }
    // The room's own rules come first: a second offer to the same candidate is already_exists.
    let offered = live_room_then(&[invite("alice", "bob")]);
    check(
        &offered,
        invite("alice", "bob").across(0, 32),
        Error(ErrorCode::AlreadyExists),
    );
}

#[test]
fn rule_add_moderator() {
    let live = live_room_then(&[]);
    check(
        &live,
        add_moderator("alice", "dave"),
        Events(&["moderator_added"]),
    );
    check(
        &[create("alice")],
        add_moderator("alice", "dave"),
        Events(&["moderator_added"]),
    );
    check(
        &[],
        add_moderator("alice", "dave"),
        Error(ErrorCode::NotFound),
    );
    check(
        &live,
        add_moderator("bob", "dave"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live,
        add_moderator("system", "dave"),
        Error(ErrorCode::PermissionDenied),
    );
    let ended = live_room_then(&[stop("alice")]);
    check(
        &ended,
        add_moderator("alice", "dave"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &live,
        add_moderator("alice", "alice"),
        Error(ErrorCode::InvalidArgument),
    );
    let with_dave = live_room_then(&[add_moderator("alice", "dave")]);
    check(
        &with_dave,
        add_moderator("alice", "dave"),
        Error(ErrorCode::AlreadyExists),
    );
    // A moderator may not appoint another.
    check(
        &with_dave,
        add_moderator("dave", "erin"),
        Error(ErrorCode::PermissionDenied),
    );
    let eight: Vec<Step> = (0..8)
        .map(|n| add_moderator("alice", &format!("mod-{n}")))
        .collect();
    let full = live_room_then(&eight);
    check(
        &full,
        add_moderator("alice", "dave"),
        Error(ErrorCode::ResourceExhausted),
    );
}

#[test]
fn rule_remove_moderator() {
    let with_dave = live_room_then(&[add_moderator("alice", "dave")]);
    check(
        &with_dave,
        remove_moderator("alice", "dave"),
        Events(&["moderator_removed"]),
    );
    check(
        &with_dave,
        remove_moderator("alice", "erin"),
        Error(ErrorCode::NotFound),
    );
    check(
        &with_dave,
        remove_moderator("dave", "dave"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &with_dave,
        remove_moderator("bob", "dave"),
        Error(ErrorCode::PermissionDenied),
    );
    // The system ends a role (a user's erasure), but appoints no one.
    check(
        &with_dave,
        remove_moderator("system", "dave"),
        Events(&["moderator_removed"]),
    );
    check(
        &with_dave,
        add_moderator("system", "erin"),
        Error(ErrorCode::PermissionDenied),
    );
    let ended = live_room_then(&[add_moderator("alice", "dave"), stop("alice")]);
    check(
        &ended,
        remove_moderator("alice", "dave"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &ended,
        remove_moderator("system", "dave"),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn a_moderator_runs_the_stage_but_not_the_room() {
    let with_dave = || vec![add_moderator("alice", "dave")];
    let room = |more: &[Step]| {
        let mut steps = with_dave();
        steps.extend_from_slice(more);
        live_room_then(&steps)
    };
    check(
        &room(&[]),
        invite("dave", "bob"),
        Events(&["invitation_created"]),
    );
    check(
        &room(&[]),
        invite("dave", "dave"),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &room(&[]),
        invite("dave", "alice"),
        Error(ErrorCode::InvalidArgument),
    );
    // The room's invites, whoever made them; the candidate's own requests.
    let invited = room(&[invite("alice", "bob")]);
    check(
        &invited,
        cancel("dave", 1),
        Events(&["invitation_cancelled"]),
    );
    check(
        &invited,
        accept("dave", 1),
        Error(ErrorCode::PermissionDenied),
    );
    let requested = room(&[request("carol")]);
    check(
        &requested,
        accept("dave", 1),
        Events(&["invitation_approved"]),
    );
    check(
        &requested,
        reject("dave", 1),
        Events(&["invitation_rejected"]),
    );
    check(
        &requested,
        cancel("dave", 1),
        Error(ErrorCode::PermissionDenied),
    );
    // Never on an offer to themselves.
    let own = room(&[request("dave")]);
    check(&own, accept("dave", 1), Error(ErrorCode::PermissionDenied));
    let seated = room(&[invite("alice", "bob"), accept("bob", 1)]);
    check(&seated, remove("dave", "bob"), Events(&["cohost_removed"]));
    let (_, log) = given(&[seated.clone(), vec![remove("dave", "bob")]].concat());
    assert!(matches!(
        log.last(),
        Some(Event::CohostRemoved {
            reason: cohost_proto::RemovalReason::Moderator,
            ..
        })
    ));
    check(&room(&[]), stop("dave"), Error(ErrorCode::PermissionDenied));
    check(
        &room(&[]),
        go_live("dave"),
        Error(ErrorCode::PermissionDenied),
    );
    // Removed, they run nothing.
    let removed = room(&[remove_moderator("alice", "dave")]);
    check(
        &removed,
        invite("dave", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
}

#[test]
fn rule_set_requests_open() {
    let live = live_room_then(&[]);
    check(
        &live,
        requests_open("alice", false),
        Events(&["requests_closed"]),
    );
    check(&live, requests_open("alice", true), Events(&[]));
    let closed = live_room_then(&[requests_open("alice", false)]);
    check(
        &closed,
        requests_open("alice", true),
        Events(&["requests_opened"]),
    );
    check(&closed, requests_open("alice", false), Events(&[]));
    let with_dave = live_room_then(&[add_moderator("alice", "dave")]);
    check(
        &with_dave,
        requests_open("dave", false),
        Events(&["requests_closed"]),
    );
    check(
        &live,
        requests_open("bob", false),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &live,
        requests_open("system", false),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &[],
        requests_open("alice", false),
        Error(ErrorCode::NotFound),
    );
    let ended = live_room_then(&[stop("alice")]);
    check(
        &ended,
        requests_open("alice", false),
        Error(ErrorCode::FailedPrecondition),
    );
    // While closed a request is refused; invites are not.
    check(
        &closed,
        request("carol"),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &closed,
        request("alice"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &closed,
        invite("alice", "carol"),
        Events(&["invitation_created"]),
    );
    let reopened = live_room_then(&[requests_open("alice", false), requests_open("alice", true)]);
    check(&reopened, request("carol"), Events(&["invitation_created"]));
}
