//! Cluster mode, full restart: after load, every process goes down (the nodes stopped, the JetStream servers
//! killed), then everything comes up again on the same ports and directories: every room reads back exactly as
//! before, and the rooms take commands again.

mod support;

use std::time::Duration;

use serde_json::json;
use support::cluster::{
    CLIENTS, Cluster, assert_exactly_once, send, spread_rooms, start_load, stop_load,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_down_then_up_keeps_every_room() {
    let mut cluster = Cluster::start().await;
    let rooms = spread_rooms(CLIENTS, 2);
    let (stop, tasks) = start_load(&cluster.nodes, rooms.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let clients = stop_load(stop, tasks).await;
    let mut before = Vec::new();
    for (room, partition) in &rooms {
        before.push(cluster.room(room, *partition).await);
    }

    cluster.down().await;
    cluster.up().await;

    for ((room, partition), was) in rooms.iter().zip(&before) {
        assert_eq!(
            &cluster.room(room, *partition).await,
            was,
            "room {room} after the restart"
        );
    }
    assert_exactly_once(&cluster, &clients).await;
    let (room, partition) = &rooms[0];
    let invite = format!("/v1/rooms/{room}/invitations");
    send(
        &cluster.nodes,
        *partition,
        "host",
        &invite,
        json!({"user_id": "after"}),
        "after-restart",
    )
    .await;
}
