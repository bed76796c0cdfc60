//! A candidate's list across rooms cannot be flooded: however many invitations spammers make and end, a real
//! pending invitation stays on the list, and the number of pending offers one user can be sent across rooms is
//! capped, so the spam is refused to the inviters instead. Also after a restart, which rebuilds the list.

mod support;

use cohost_engine::{InvitationFilter, ListRequest};
use cohost_proto::{ErrorCode, Invitation, InvitationStatus, Page};
use support::*;

/// Every page of the victim's list with this filter, walked by `next_cursor`.
fn whole_list(t: &TestEngine, status: Option<InvitationStatus>) -> Vec<Invitation> {
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let list = ListRequest {
            filter: InvitationFilter { status, kind: None },
            cursor,
            limit: 100,
        };
        let Page {
            items: page,
            next_cursor,
        } = t.engine.user_invitations(&user("victim"), &list).unwrap();
        items.extend(page);
        match next_cursor {
            Some(next) => cursor = Some(next),
            None => return items,
        }
    }
}

fn lists_the_real_one(t: &TestEngine, status: Option<InvitationStatus>) -> bool {
    whole_list(t, status)
        .iter()
        .any(|i| i.invitation_id == invitation("real", 1))
}

#[tokio::test]
async fn spam_neither_hides_a_real_invitation_nor_exceeds_the_pending_cap() {
    let t = live(&[("real", "friend")]).await;
    t.ok("friend", invite("real", "victim")).await;
    // 300 invitations made and cancelled, from 10 rooms of 10 spammers.
    for r in 0..10 {
        let room = format!("spam-{r}");
        t.live_room(&room, &format!("spammer-{r}")).await;
        for n in 1..=30 {
            t.ok(&format!("spammer-{r}"), invite(&room, "victim")).await;
            t.ok(&format!("spammer-{r}"), cancel(&room, n)).await;
        }
    }
    // Pending offers up to the cap (32 by default): the real one and 31 more, one per room.
    for r in 0..31 {
        let room = format!("pending-{r}");
        t.live_room(&room, &format!("host-{r}")).await;
        t.ok(&format!("host-{r}"), invite(&room, "victim")).await;
    }
    t.live_room("one-more", "host-x").await;
    assert_eq!(
        t.code("host-x", invite("one-more", "victim")).await,
        ErrorCode::ResourceExhausted
    );
    assert_eq!(
        t.code("victim", request("one-more")).await,
        ErrorCode::ResourceExhausted,
        "the candidate's own requests count too"
    );
    check_lists(&t);
    let t = t.restart().await;
    check_lists(&t);
    // Once one ends, there is room for another.
    t.ok("victim", reject("real", 1)).await;
    t.ok("host-x", invite("one-more", "victim")).await;
}

fn check_lists(t: &TestEngine) {
    let pending = whole_list(t, Some(InvitationStatus::Pending));
    assert_eq!(pending.len(), 32);
    assert!(lists_the_real_one(t, Some(InvitationStatus::Pending)));
    assert!(lists_the_real_one(t, None));
    // Ended ones are kept only up to their bound.
    let all = whole_list(t, None);
    assert!(
        all.len() <= 32 + cohost_engine::USER_ENDED_INVITATIONS_MAX,
        "{}",
        all.len()
    );
}
