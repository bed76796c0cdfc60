//! Cluster mode, node crash: sixteen clients send commands to the owners of their rooms' partitions for the
//! whole test, and one cohostd node is killed with SIGKILL mid-load. Its partitions are served again by the
//! others (the time from the kill to the first acknowledged command on each moved partition is printed), and
//! every acknowledged command is in its room exactly once, and its event in the stream `COHOST` exactly once
//! (each partition's relay moved with it). Takeovers start from the partitions' snapshots, so this holds for a
//! base and the log after it too.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{
    CLIENTS, Cluster, FAILOVER_LIMIT, PARTITIONS, assert_exactly_once, assert_relayed_exactly_once,
    first_acks_after, signal, spread_rooms, start_load, stop_load,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_partitions_are_served_again_and_no_acknowledged_command_is_lost_or_doubled()
 {
    let cluster = Cluster::start().await;
    let (stop, tasks) = start_load(&cluster.nodes, spread_rooms(CLIENTS, 2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Each node's /metrics counts the partitions it owns and what their engines did.
    let owners = cluster.owners().await;
    for (index, node) in cluster.nodes.read().await.iter().enumerate() {
        let node = node.as_ref().expect("running");
        let owned = owners.values().filter(|n| **n == index).count() as u64;
        let partitions = node.metric("cohost_partitions_owned").await;
        assert_eq!(partitions, owned, "node-{index}");
        let events = node.metric("cohost_engine_events_total").await;
        assert!(events > 0, "node-{index} appended no event under load");
    }

    let victim = 1;
    // The victim has saved snapshots of its partitions (every 100 events), for the takers to start from.
    let saving = Instant::now();
    loop {
        let nodes = cluster.nodes.read().await;
        let node = nodes[victim].as_ref().expect("running");
        if node.metric("cohost_partition_snapshots_saved_total").await > 0 {
            break;
        }
        assert!(
            saving.elapsed() < Duration::from_secs(30),
            "node-{victim} saved no partition snapshot under load"
        );
        drop(nodes);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let moved: Vec<u32> = cluster
        .owners()
        .await
        .iter()
        .filter(|(_, n)| **n == victim)
        .map(|(p, _)| *p)
        .collect();
    assert!(!moved.is_empty(), "node-1 owned no partition");
    let killed = Instant::now();
    {
        let mut nodes = cluster.nodes.write().await;
        let mut daemon = nodes[victim].take().expect("running");
        signal(daemon.pid(), "KILL");
        daemon.wait_exit(Duration::from_secs(5));
    }
    let served = |owners: &std::collections::BTreeMap<u32, usize>| {
        owners.len() == PARTITIONS as usize && moved.iter().all(|p| owners[p] != victim)
    };
    let what = "moved partitions not served in time";
    cluster
        .wait_owners(killed, FAILOVER_LIMIT, what, served)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clients = stop_load(stop, tasks).await;

    let failovers = first_acks_after(killed, &moved, &clients);
    println!(
        "node kill: {} partitions moved; first acknowledged command after p50 {:?}, max {:?}",
        failovers.len(),
        failovers[failovers.len() / 2],
        failovers[failovers.len() - 1]
    );
    assert!(
        failovers.iter().all(|d| *d <= FAILOVER_LIMIT),
        "{failovers:?}"
    );
    assert_exactly_once(&cluster, &clients).await;
    assert_relayed_exactly_once(&cluster, &clients).await;
    // The survivors count the takeovers of the moved partitions, and the time they took.
    let (mut takeovers, mut from_snapshot, mut seconds) = (0, 0, 0.0);
    for node in cluster.nodes.read().await.iter().flatten() {
        takeovers += node.metric("cohost_takeovers_total").await;
        from_snapshot += node.metric("cohost_takeovers_from_snapshot_total").await;
        seconds += node.metric_as::<f64>("cohost_takeover_seconds_total").await;
    }
    println!(
        "node kill: {from_snapshot} of {takeovers} takeovers started from a partition snapshot"
    );
    // Snapshots every 100 events under this load: the killed node had saved some of its partitions'.
    assert!(from_snapshot >= 1, "no takeover started from a snapshot");
    assert!(
        takeovers >= moved.len() as u64,
        "{takeovers} takeovers counted"
    );
    assert!(seconds > 0.0, "no takeover time counted");
}
