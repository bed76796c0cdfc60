// The cases of `idempotency.rs`, run by it in single-node mode and by `idempotency-cluster.rs` through a partition log.

use cohost_proto::ErrorCode;

#[tokio::test]
async fn a_retry_returns_the_first_reply_and_appends_nothing() {
    let t = live(&[("stage", "alice")]).await;
    let first = t
        .with_id("alice", invite("stage", "bob"), "req-1")
        .await
        .unwrap();
    let seq = t.engine.last_seq();
    let again = t
        .with_id("alice", invite("stage", "bob"), "req-1")
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(t.engine.last_seq(), seq, "a retry appends nothing");
    // Without the id, the same command is a new attempt, and the rules refuse a second pending offer.
    assert_eq!(
        t.code("alice", invite("stage", "bob")).await,
        ErrorCode::AlreadyExists
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn the_same_id_for_another_command_is_a_conflict() {
    let t = live(&[("stage", "alice")]).await;
    t.with_id("alice", invite("stage", "bob"), "req-1")
        .await
        .unwrap();
    let err = t
        .with_id("alice", invite("stage", "carol"), "req-1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    let err = t
        .run_with("alice", invite("stage", "bob"), Some("req-1"), Some(3))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        ErrorCode::Conflict,
        "expected_version is part of what the id names"
    );
    t.engine.shutdown().await;
}

#[tokio::test]
async fn ids_are_scoped_by_actor() {
    let t = live(&[("stage", "alice")]).await;
    t.with_id("bob", request("stage"), "k").await.unwrap();
    t.with_id("carol", request("stage"), "k")
        .await
        .expect("carol's k is not bob's k");
    assert_eq!(t.engine.last_seq(), 4);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn ids_are_scoped_by_room_too_before_and_after_a_restart() {
    let t = live(&[("stage", "alice"), ("other", "alice")]).await;
    let here = t
        .with_id("alice", invite("stage", "bob"), "k")
        .await
        .unwrap();
    let there = t
        .with_id("alice", invite("other", "carol"), "k")
        .await
        .expect("alice's k in one room is not her k in another");
    assert_ne!(here, there);
    let seq = t.engine.last_seq();
    let t = t.restart().await;
    assert_eq!(
        t.with_id("alice", invite("stage", "bob"), "k")
            .await
            .unwrap(),
        here
    );
    assert_eq!(
        t.with_id("alice", invite("other", "carol"), "k")
            .await
            .unwrap(),
        there
    );
    assert_eq!(
        t.with_id("alice", invite("other", "dave"), "k")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::Conflict
    );
    assert_eq!(t.engine.last_seq(), seq);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn retries_in_one_batch_and_after_a_restart_get_the_same_reply() {
    let t = live(&[("stage", "alice")]).await;
    let (a, b) = tokio::join!(
        t.with_id("alice", invite("stage", "bob"), "same"),
        t.with_id("alice", invite("stage", "bob"), "same")
    );
    let invited = a.unwrap();
    assert_eq!(b.unwrap(), invited);
    let accepted = t
        .with_id("bob", accept("stage", 1), "accept-1")
        .await
        .unwrap();
    let seq = t.engine.last_seq();
    let t = t.restart().await;
    assert_eq!(
        t.with_id("bob", accept("stage", 1), "accept-1")
            .await
            .unwrap(),
        accepted
    );
    // The invite's reply is replayed as it was first given, although bob has since been seated.
    assert_eq!(
        t.with_id("alice", invite("stage", "bob"), "same")
            .await
            .unwrap(),
        invited
    );
    assert_eq!(t.engine.last_seq(), seq);
    t.engine.shutdown().await;
}
