//! Leases against a real JetStream server: one holder at a time, a dead holder's lease ages out and the next
//! holder's epoch is larger, a deposed holder cannot renew, and heartbeats show who is alive.

use std::time::{Duration, Instant};

use cohost_nats::cluster::{Holder, LeaseConfig, LeaseError, Leases};
use cohost_nats::test_server::TestServer;

const CONFIG: LeaseConfig = LeaseConfig {
    ttl: Duration::from_secs(1),
    renew_every: Duration::from_millis(250),
    margin: Duration::from_millis(200),
};

async fn node(server: &TestServer, name: &str) -> Leases {
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    Leases::open(&js, name, 1, CONFIG)
        .await
        .expect("the buckets open")
}

#[tokio::test]
async fn one_holder_at_a_time_and_a_dead_holder_s_lease_passes_on_with_a_larger_epoch() {
    let server = TestServer::start(true);
    let a = node(&server, "node-a").await;
    let b = node(&server, "node-b").await;

    let sent = Instant::now();
    let lease = a
        .acquire(7)
        .await
        .unwrap()
        .expect("a free partition is taken");
    assert!(lease.valid_until() <= sent + CONFIG.ttl - CONFIG.margin + Duration::from_millis(50));
    assert!(lease.is_valid(Instant::now()));
    assert_eq!(
        b.acquire(7).await.unwrap(),
        None,
        "a held partition is not taken"
    );
    assert_eq!(
        b.holder(7).await.unwrap(),
        Some(Holder {
            node: "node-a".into(),
            epoch: lease.epoch
        })
    );

    // Renewed well inside the TTL, the lease outlives several TTLs.
    let mut lease = lease;
    for _ in 0..8 {
        tokio::time::sleep(CONFIG.renew_every).await;
        lease = a.renew(&lease).await.expect("renewed in time");
        assert_eq!(b.acquire(7).await.unwrap(), None);
    }

    // A renewal that landed but whose answer was lost leaves the holder with an old revision: the next
    // renewal finds the key still its own and goes on, rather than taking the lease for lost.
    let landed = a.renew(&lease).await.expect("renewed");
    let again = a
        .renew(&lease)
        .await
        .expect("a holder that missed its own renewal keeps the lease");
    assert!(again.revision() > landed.revision());
    assert_eq!(again.epoch, lease.epoch);
    lease = again;

    // node-a stops renewing (a pause, a crash): its lease ages out and node-b takes the partition.
    let stopped = Instant::now();
    let taken = loop {
        if let Some(taken) = b.acquire(7).await.unwrap() {
            break taken;
        }
        assert!(
            stopped.elapsed() < CONFIG.ttl * 5,
            "the lease never aged out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stopped.elapsed() >= CONFIG.ttl - CONFIG.margin,
        "taken too early: {:?}",
        stopped.elapsed()
    );
    assert!(
        !lease.is_valid(Instant::now()),
        "node-a's own view ran out before node-b took over"
    );
    assert!(taken.epoch > lease.epoch);

    // node-a wakes up: its renewal is refused.
    match a.renew(&lease).await {
        Err(LeaseError::Lost {
            partition: 7,
            epoch,
        }) => assert_eq!(epoch, lease.epoch),
        other => panic!("a deposed holder renewed: {other:?}"),
    }
    // A release by the old holder leaves the new holder's lease alone.
    a.release(lease).await.unwrap_err();
    assert_eq!(
        b.holder(7).await.unwrap().map(|h| h.node),
        Some("node-b".into())
    );
    // The new holder hands the partition off at once.
    b.release(taken).await.unwrap();
    assert!(a.acquire(7).await.unwrap().is_some());
}

#[tokio::test]
async fn heartbeats_show_the_live_nodes() {
    let server = TestServer::start(true);
    let a = node(&server, "node-a").await;
    let b = node(&server, "node-b").await;
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    assert_eq!(a.live_nodes().await.unwrap(), ["node-a", "node-b"]);
    // A node that leaves is gone at once, not when its heartbeat ages out.
    let c = node(&server, "node-c").await;
    c.heartbeat().await.unwrap();
    assert_eq!(
        a.live_nodes().await.unwrap(),
        ["node-a", "node-b", "node-c"]
    );
    c.leave().await.unwrap();
    assert_eq!(a.live_nodes().await.unwrap(), ["node-a", "node-b"]);
    // node-b goes quiet; node-a keeps beating.
    let quiet = Instant::now();
    while a.live_nodes().await.unwrap().len() > 1 {
        assert!(quiet.elapsed() < CONFIG.ttl * 5, "a quiet node stayed live");
        a.heartbeat().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.live_nodes().await.unwrap(), ["node-a"]);
}
