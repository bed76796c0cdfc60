//! Cluster mode, membership: under load from sixteen clients, a fourth node joins and takes its share of the
//! partitions (each handed over by its owner: the old owner stops, the new one replays), then a node leaves
//! with SIGTERM and hands its partitions over before it exits. Every acknowledged command is in its room
//! exactly once, and its event in the stream `COHOST` exactly once.

mod support;

use std::time::Duration;

use support::cluster::{
    CLIENTS, Cluster, PARTITIONS, assert_exactly_once, assert_relayed_exactly_once, spread_rooms,
    start_load, stop_load,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_leaves_under_load_and_nothing_is_lost_or_doubled() {
    let mut cluster = Cluster::start().await;
    let (stop, tasks) = start_load(&cluster.nodes, spread_rooms(CLIENTS, 2));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let joined = cluster.join_node().await;
    let owners = cluster.owners().await;
    let taken = owners.values().filter(|n| **n == joined).count();
    println!("node-{joined} joined and took {taken} of {PARTITIONS} partitions");
    assert!(taken > 0, "the new node took no partition: {owners:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let leaving = 0;
    let handed: Vec<u32> = cluster
        .owners()
        .await
        .iter()
        .filter(|(_, n)| **n == leaving)
        .map(|(p, _)| *p)
        .collect();
    cluster.stop_node(leaving).await;
    let owners = cluster.owners().await;
    assert!(
        handed.iter().all(|p| owners[p] != leaving),
        "node-{leaving}'s partitions {handed:?} were handed over: {owners:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clients = stop_load(stop, tasks).await;
    let acked: u64 = clients.iter().map(|c| c.acked).sum();
    println!("membership: {acked} commands acknowledged through a join and a leave");
    assert!(
        clients.iter().all(|c| c.acked > 0),
        "a client got nothing acknowledged"
    );
    assert_exactly_once(&cluster, &clients).await;
    assert_relayed_exactly_once(&cluster, &clients).await;
}
