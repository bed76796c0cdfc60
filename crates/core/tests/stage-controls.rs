//! Seats, bans and media controls as given/when/then cases: each success, each precondition and each error
//! code, and what the room shows afterwards.

mod support;

use cohost_proto::limits::{BAN_DURATION_MAX_S, BANS_PER_ROOM_MAX};
use cohost_proto::{ErrorCode, Event, RemovalReason, Room};
use support::*;

/// Alice hosts a live room of four seats; the given steps follow.
fn four_seats_then(steps: &[Step]) -> Vec<Step> {
    let mut history = vec![create_with("alice", "show", Some(4)), go_live("alice")];
    history.extend_from_slice(steps);
    history
}

/// Bob on seat 1, carol on seat 2, dave a moderator.
fn staged() -> Vec<Step> {
    four_seats_then(&[
        invite("alice", "bob"),
        accept("bob", 1),
        invite("alice", "carol"),
        accept("carol", 2),
        add_moderator("alice", "dave"),
    ])
}

fn with(history: Vec<Step>, more: &[Step]) -> Vec<Step> {
    [history, more.to_vec()].concat()
}

fn room_after(history: &[Step]) -> Room {
    given(history).0.room().expect("the room exists").clone()
}

/// Each co-host with their seat, in the room's order.
fn seats(history: &[Step]) -> Vec<(String, u8)> {
    room_after(history)
        .cohosts
        .iter()
        .map(|s| (s.user_id.to_string(), s.seat))
        .collect()
}

#[test]
fn accept_takes_the_seat_asked_for_when_free_and_unlocked_else_the_lowest_free() {
    let asked = four_seats_then(&[invite_to("alice", "bob", 3), accept("bob", 1)]);
    assert_eq!(seats(&asked), [("bob".into(), 3)]);
    let requested = four_seats_then(&[request_seat("carol", 4), accept("alice", 1)]);
    assert_eq!(seats(&requested), [("carol".into(), 4)]);
    // Asked for seat 3, locked since: the lowest free unlocked seat instead.
    let relocked = four_seats_then(&[
        invite_to("alice", "bob", 3),
        lock("alice", 3),
        lock("alice", 1),
    ]);
    assert_eq!(
        seats(&with(relocked, &[accept("bob", 1)])),
        [("bob".into(), 2)]
    );
    // Taken since: the same.
    let taken = four_seats_then(&[
        invite_to("alice", "bob", 1),
        invite_to("alice", "carol", 1),
        accept("carol", 2),
        accept("bob", 1),
    ]);
    assert_eq!(seats(&taken), [("carol".into(), 1), ("bob".into(), 2)]);
}

#[test]
fn an_offer_for_a_seat_out_of_range_or_locked_is_refused() {
    let room = four_seats_then(&[]);
    for seat in [0, 5, u8::MAX] {
        check(
            &room,
            invite_to("alice", "bob", seat),
            Error(ErrorCode::InvalidArgument),
        );
        check(
            &room,
            request_seat("bob", seat),
            Error(ErrorCode::InvalidArgument),
        );
    }
    let locked = four_seats_then(&[lock("alice", 2)]);
    check(
        &locked,
        invite_to("alice", "bob", 2),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &locked,
        request_seat("bob", 2),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &locked,
        invite_to("alice", "bob", 3),
        Events(&["invitation_created"]),
    );
    check(
        &locked,
        invite("alice", "bob"),
        Events(&["invitation_created"]),
    );
}

#[test]
fn with_every_free_seat_locked_no_offer_opens_and_none_is_accepted() {
    // Two seats by default.
    let all_locked = live_room_then(&[lock("alice", 1), lock("alice", 2)]);
    check(
        &all_locked,
        invite("alice", "bob"),
        Error(ErrorCode::ResourceExhausted),
    );
    check(
        &all_locked,
        request("bob"),
        Error(ErrorCode::ResourceExhausted),
    );
    let pending = live_room_then(&[invite("alice", "bob"), lock("alice", 1), lock("alice", 2)]);
    check(
        &pending,
        accept("bob", 1),
        Error(ErrorCode::ResourceExhausted),
    );
    let one_left = live_room_then(&[invite("alice", "bob"), lock("alice", 1)]);
    check(
        &one_left,
        accept("bob", 1),
        Events(&["invitation_approved"]),
    );
}

#[test]
fn rule_move_cohost() {
    let staged = staged();
    check(
        &staged,
        move_cohost("alice", "bob", 3),
        Events(&["cohost_moved"]),
    );
    assert_eq!(
        seats(&with(staged.clone(), &[move_cohost("alice", "bob", 3)])),
        [("bob".into(), 3), ("carol".into(), 2)]
    );
    // A taken seat swaps.
    let swapped = with(staged.clone(), &[move_cohost("dave", "bob", 2)]);
    assert_eq!(seats(&swapped), [("bob".into(), 2), ("carol".into(), 1)]);
    let (_, log) = given(&swapped);
    match log.last() {
        Some(Event::CohostMoved {
            user_id,
            seat: 2,
            from_seat: 1,
            swapped_with: Some(other),
        }) => assert_eq!((user_id.as_str(), other.as_str()), ("bob", "carol")),
        other => panic!("expected bob moved to carol's seat, got {other:?}"),
    }
    check(&staged, move_cohost("alice", "bob", 1), Events(&[]));
    check(
        &staged,
        move_cohost("alice", "bob", 5),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &staged,
        move_cohost("alice", "bob", 0),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &staged,
        move_cohost("alice", "erin", 3),
        Error(ErrorCode::NotFound),
    );
    let locked = with(staged.clone(), &[lock("alice", 4)]);
    check(
        &locked,
        move_cohost("alice", "bob", 4),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &staged,
        move_cohost("bob", "bob", 3),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        move_cohost("erin", "bob", 3),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        move_cohost("system", "bob", 3),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &[],
        move_cohost("alice", "bob", 3),
        Error(ErrorCode::NotFound),
    );
    let ended = with(staged, &[stop("alice")]);
    check(
        &ended,
        move_cohost("alice", "bob", 3),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn rule_lock_and_unlock_seat() {
    let staged = staged();
    check(&staged, lock("alice", 3), Events(&["seat_locked"]));
    check(&staged, lock("dave", 3), Events(&["seat_locked"]));
    let locked = with(staged.clone(), &[lock("alice", 4), lock("alice", 3)]);
    assert_eq!(room_after(&locked).locked_seats, [3, 4]);
    check(&locked, lock("alice", 3), Events(&[]));
    check(&locked, unlock("dave", 3), Events(&["seat_unlocked"]));
    assert_eq!(
        room_after(&with(locked, &[unlock("alice", 4)])).locked_seats,
        [3]
    );
    check(&staged, unlock("alice", 3), Events(&[]));
    check(
        &staged,
        lock("alice", 1),
        Error(ErrorCode::FailedPrecondition),
    );
    for seat in [0, 5] {
        check(
            &staged,
            lock("alice", seat),
            Error(ErrorCode::InvalidArgument),
        );
        check(
            &staged,
            unlock("alice", seat),
            Error(ErrorCode::InvalidArgument),
        );
    }
    check(&staged, lock("bob", 3), Error(ErrorCode::PermissionDenied));
    check(
        &staged,
        unlock("system", 3),
        Error(ErrorCode::PermissionDenied),
    );
    check(&[], lock("alice", 3), Error(ErrorCode::NotFound));
    let ended = with(staged, &[stop("alice")]);
    check(
        &ended,
        lock("alice", 3),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn a_ban_ends_everything_the_user_has_in_the_room() {
    let staged = staged();
    check(
        &staged,
        ban("alice", "bob", None),
        Events(&["cohost_removed", "user_banned"]),
    );
    let (state, log) = given(&with(staged.clone(), &[ban("dave", "bob", None)]));
    assert!(matches!(
        &log[log.len() - 2],
        Event::CohostRemoved {
            reason: RemovalReason::Ban,
            ..
        }
    ));
    assert!(!state.is_cohost(&user("bob")));
    let offered = with(staged.clone(), &[invite("alice", "erin")]);
    check(
        &offered,
        ban("alice", "erin", Some(60)),
        Events(&["invitation_cancelled", "user_banned"]),
    );
    let requested = with(staged.clone(), &[request("erin")]);
    check(
        &requested,
        ban("dave", "erin", None),
        Events(&["invitation_cancelled", "user_banned"]),
    );
    // A moderator's role ends with the ban, and only the host bans a moderator.
    check(
        &staged,
        ban("alice", "dave", None),
        Events(&["moderator_removed", "user_banned"]),
    );
    let two = with(staged.clone(), &[add_moderator("alice", "frank")]);
    check(
        &two,
        ban("dave", "frank", None),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        ban("dave", "alice", None),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        ban("alice", "alice", None),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        ban("bob", "carol", None),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        ban("system", "carol", None),
        Error(ErrorCode::PermissionDenied),
    );
    // Someone with nothing in the room may be banned ahead.
    check(
        &staged,
        ban("alice", "erin", Some(BAN_DURATION_MAX_S)),
        Events(&["user_banned"]),
    );
    for duration in [0, BAN_DURATION_MAX_S + 1, u64::MAX] {
        check(
            &staged,
            ban("alice", "erin", Some(duration)),
            Error(ErrorCode::InvalidArgument),
        );
    }
    check(&[], ban("alice", "erin", None), Error(ErrorCode::NotFound));
    let ended = with(staged, &[stop("alice")]);
    check(
        &ended,
        ban("alice", "erin", None),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn a_banned_user_cannot_be_invited_or_request_until_the_ban_ends() {
    let banned = four_seats_then(&[ban("alice", "bob", None)]);
    check(
        &banned,
        invite("alice", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &banned,
        invite_to("alice", "bob", 2),
        Error(ErrorCode::PermissionDenied),
    );
    check(&banned, request("bob"), Error(ErrorCode::PermissionDenied));
    check(
        &banned,
        request("bob").at(u64::MAX / 2),
        Error(ErrorCode::PermissionDenied),
    );
    // Ten seconds from t=0: held at 9.999 s, over at 10 s.
    let timed = four_seats_then(&[ban("alice", "bob", Some(10))]);
    check(
        &timed,
        invite("alice", "bob").at(9_999),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &timed,
        invite("alice", "bob").at(10_000),
        Events(&["invitation_created"]),
    );
    check(
        &timed,
        request("bob").at(10_000),
        Events(&["invitation_created"]),
    );
    // A second ban replaces the first.
    let rebanned = with(timed, &[ban("alice", "bob", None).at(5_000)]);
    let (state, _) = given(&rebanned);
    assert_eq!(state.bans().len(), 1);
    check(
        &rebanned,
        invite("alice", "bob").at(10_000),
        Error(ErrorCode::PermissionDenied),
    );
}

#[test]
fn a_room_holds_a_bounded_number_of_bans() {
    let names: Vec<String> = (0..BANS_PER_ROOM_MAX).map(|n| format!("u{n}")).collect();
    let bans: Vec<Step> = names.iter().map(|n| ban("alice", n, None)).collect();
    let full = four_seats_then(&bans);
    check(
        &full,
        ban("alice", "bob", None),
        Error(ErrorCode::ResourceExhausted),
    );
    // Renewing a ban held is no new ban; one that has ended frees its place.
    check(&full, ban("alice", "u7", Some(5)), Events(&["user_banned"]));
    let one_timed = with(full, &[unban("alice", "u0"), ban("alice", "u0", Some(1))]);
    check(
        &one_timed,
        ban("alice", "bob", None),
        Error(ErrorCode::ResourceExhausted),
    );
    check(
        &one_timed,
        ban("alice", "bob", None).at(1_000),
        Events(&["user_banned"]),
    );
}

#[test]
fn rule_unban_user() {
    let banned = four_seats_then(&[
        add_moderator("alice", "dave"),
        ban("alice", "bob", Some(10)),
    ]);
    check(&banned, unban("alice", "bob"), Events(&["user_unbanned"]));
    check(&banned, unban("dave", "bob"), Events(&["user_unbanned"]));
    check(&banned, unban("alice", "carol"), Error(ErrorCode::NotFound));
    check(
        &banned,
        unban("alice", "bob").at(10_000),
        Error(ErrorCode::NotFound),
    );
    check(
        &banned,
        unban("bob", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &banned,
        unban("system", "bob"),
        Error(ErrorCode::PermissionDenied),
    );
    let unbanned = with(banned.clone(), &[unban("alice", "bob")]);
    check(
        &unbanned,
        invite("alice", "bob"),
        Events(&["invitation_created"]),
    );
    check(&unbanned, unban("alice", "bob"), Error(ErrorCode::NotFound));
    check(&[], unban("alice", "bob"), Error(ErrorCode::NotFound));
    let ended = with(banned, &[stop("alice")]);
    check(
        &ended,
        unban("alice", "bob"),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn rule_set_cohost_media() {
    let staged = staged();
    let seat = |history: &[Step]| {
        let room = room_after(history);
        let bob = room
            .cohosts
            .iter()
            .find(|s| s.user_id.as_str() == "bob")
            .cloned();
        bob.map(|s| (s.audio, s.video))
    };
    assert_eq!(
        seat(&staged),
        Some((true, true)),
        "a new seat may publish both"
    );
    check(
        &staged,
        media("alice", "bob", Some(false), None),
        Events(&["cohost_media_changed"]),
    );
    let muted = with(staged.clone(), &[media("dave", "bob", Some(false), None)]);
    assert_eq!(seat(&muted), Some((false, true)));
    check(
        &muted,
        media("alice", "bob", Some(false), Some(true)),
        Events(&[]),
    );
    let dark = with(muted.clone(), &[media("alice", "bob", None, Some(false))]);
    assert_eq!(seat(&dark), Some((false, false)));
    // A move keeps what the seat may publish.
    assert_eq!(
        seat(&with(dark, &[move_cohost("alice", "bob", 4)])),
        Some((false, false))
    );
    check(
        &staged,
        media("alice", "bob", None, None),
        Error(ErrorCode::InvalidArgument),
    );
    check(
        &staged,
        media("alice", "erin", Some(false), None),
        Error(ErrorCode::NotFound),
    );
    check(
        &staged,
        media("bob", "bob", Some(false), None),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &staged,
        media("carol", "bob", Some(false), None),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &[],
        media("alice", "bob", Some(false), None),
        Error(ErrorCode::NotFound),
    );
    let ended = with(staged, &[stop("alice")]);
    check(
        &ended,
        media("alice", "bob", Some(false), None),
        Error(ErrorCode::FailedPrecondition),
    );
}

/// Bob seated at t=0 (the accept); alice's room.
fn bob_seated() -> Vec<Step> {
    live_room_then(&[invite("alice", "bob"), accept("bob", 1)])
}

#[test]
fn a_cohost_away_past_the_grace_is_disconnected_by_the_system() {
    // Never joined since accepting: away from the accept.
    let seated = bob_seated();
    check(
        &seated,
        disconnect("system", "bob").at(GRACE_MS - 1),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &seated,
        disconnect("system", "bob").at(GRACE_MS),
        Events(&["cohost_removed"]),
    );
    let (_, log) = given(&with(
        seated.clone(),
        &[disconnect("system", "bob").at(GRACE_MS)],
    ));
    assert!(matches!(
        log.last(),
        Some(Event::CohostRemoved {
            reason: RemovalReason::Disconnected,
            ..
        })
    ));
    // Joined: no grace runs; left at t=40 s (LiveKit's time): away from then.
    let joined = with(seated.clone(), &[presence_at("bob", true, 1_000, "PA_1")]);
    check(
        &joined,
        disconnect("system", "bob").at(GRACE_MS * 10),
        Error(ErrorCode::FailedPrecondition),
    );
    let left = with(
        joined.clone(),
        &[presence_at("bob", false, 40_000, "PA_1").at(40_500)],
    );
    check(
        &left,
        disconnect("system", "bob").at(40_000 + GRACE_MS - 1),
        Error(ErrorCode::FailedPrecondition),
    );
    check(
        &left,
        disconnect("system", "bob").at(40_000 + GRACE_MS),
        Events(&["cohost_removed"]),
    );
    // Back within the grace: the seat stays.
    let back = with(left, &[presence_at("bob", true, 50_000, "PA_2").at(50_100)]);
    check(
        &back,
        disconnect("system", "bob").at(GRACE_MS * 10),
        Error(ErrorCode::FailedPrecondition),
    );
    // Only the system; a seat that is not there; an ended room.
    check(
        &seated,
        disconnect("alice", "bob").at(GRACE_MS),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &seated,
        disconnect("bob", "bob").at(GRACE_MS),
        Error(ErrorCode::PermissionDenied),
    );
    check(
        &seated,
        disconnect("system", "carol").at(GRACE_MS),
        Error(ErrorCode::NotFound),
    );
    check(&[], disconnect("system", "bob"), Error(ErrorCode::NotFound));
    let ended = with(seated, &[stop("alice")]);
    check(
        &ended,
        disconnect("system", "bob").at(GRACE_MS),
        Error(ErrorCode::FailedPrecondition),
    );
}

#[test]
fn reports_are_ordered_by_livekits_clock_not_by_arrival() {
    let joined = with(bob_seated(), &[presence_at("bob", true, 10_000, "PA_1")]);
    // A leave stamped before the join it arrives after is stale: bob stays online, no grace runs.
    check(
        &joined,
        presence_at("bob", false, 9_000, "PA_1"),
        Events(&[]),
    );
    // Within one second (LiveKit stamps whole seconds) a session's leave follows its join...
    check(
        &joined,
        presence_at("bob", false, 10_000, "PA_1"),
        Events(&["presence_changed"]),
    );
    // ...and a duplicate of the join is nothing.
    check(
        &joined,
        presence_at("bob", true, 10_000, "PA_1"),
        Events(&[]),
    );
    // A rejoin in a new session whose leave was missed is recorded, so the old session's late leave is stale.
    let rejoined = with(joined.clone(), &[presence_at("bob", true, 20_000, "PA_2")]);
    check(
        &joined,
        presence_at("bob", true, 20_000, "PA_2"),
        Events(&["presence_changed"]),
    );
    check(
        &rejoined,
        presence_at("bob", false, 15_000, "PA_1"),
        Events(&[]),
    );
    let (state, _) = given(&with(
        rejoined.clone(),
        &[presence_at("bob", false, 15_000, "PA_1")],
    ));
    assert!(
        state.seat(&user("bob")).unwrap().online,
        "a present co-host stays online"
    );
    assert_eq!(state.liveness(&user("bob")).unwrap().offline_since_ms, None);
    // In the same second, an old session's leave loses to a new session's join, in either arrival order.
    let left_first = with(joined.clone(), &[presence_at("bob", false, 30_000, "PA_1")]);
    check(
        &left_first,
        presence_at("bob", true, 30_000, "PA_2"),
        Events(&["presence_changed"]),
    );
    let joined_first = with(joined, &[presence_at("bob", true, 30_000, "PA_2")]);
    check(
        &joined_first,
        presence_at("bob", false, 30_000, "PA_1"),
        Events(&[]),
    );
    // A leave that arrives before its own join: the leave is recorded (bob is away since it), the join stale.
    let leave_first = with(bob_seated(), &[presence_at("bob", false, 5_000, "PA_1")]);
    check(
        &bob_seated(),
        presence_at("bob", false, 5_000, "PA_1"),
        Events(&["presence_changed"]),
    );
    check(
        &leave_first,
        presence_at("bob", true, 1_000, "PA_1"),
        Events(&[]),
    );
    let (state, _) = given(&leave_first);
    assert_eq!(
        state.liveness(&user("bob")).unwrap().offline_since_ms,
        Some(5_000)
    );
    check(
        &leave_first,
        disconnect("system", "bob").at(5_000 + GRACE_MS),
        Events(&["cohost_removed"]),
    );
    // Reports without a stamp (from before stamps, or a caller with none) apply as they arrive.
    check(
        &rejoined,
        presence("bob", false),
        Events(&["presence_changed"]),
    );
}

#[test]
fn the_grace_starts_only_once_a_cohost_could_join() {
    // Seated before go-live: no credentials yet, so no grace runs from the accept.
    let idle = vec![
        create("alice"),
        invite("alice", "bob"),
        accept("bob", 1),
        go_live("alice"),
    ];
    check(
        &idle,
        disconnect("system", "bob").at(GRACE_MS * 10),
        Error(ErrorCode::FailedPrecondition),
    );
    // A report that they left (or reconciliation's) starts it.
    let left = with(idle, &[presence_at("bob", false, 70_000, "")]);
    check(
        &left,
        disconnect("system", "bob").at(70_000 + GRACE_MS),
        Events(&["cohost_removed"]),
    );
}

#[test]
fn a_late_report_from_an_earlier_seat_is_stale() {
    // bob joined in session PA_1, was removed, and is seated again at t=100 s.
    let again = with(
        bob_seated(),
        &[
            presence_at("bob", true, 1_000, "PA_1"),
            remove("alice", "bob").at(50_000),
            invite("alice", "bob").at(100_000),
            accept("bob", 2).at(100_500),
        ],
    );
    check(
        &again,
        presence_at("bob", true, 60_000, "PA_1").at(100_600),
        Events(&[]),
    );
    check(
        &again,
        presence_at("bob", false, 90_000, "PA_1").at(100_600),
        Events(&[]),
    );
    // Within the second of the accept (LiveKit stamps whole seconds) a join is the new seat's.
    check(
        &again,
        presence_at("bob", true, 100_000, "PA_2").at(100_600),
        Events(&["presence_changed"]),
    );
    check(
        &again,
        disconnect("system", "bob").at(100_500 + GRACE_MS),
        Events(&["cohost_removed"]),
    );
}
