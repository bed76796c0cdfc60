//! Cluster mode, rate quotas: a user's commands are counted by the node that runs them, the owner of the room's
//! partition, so a user sending commands for one room meets the quota (429 `resource_exhausted`) whichever
//! nodes the requests reach, forwarded ones included, and no more often than the quota allows.

mod support;

use std::time::Instant;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::cluster::{Cluster, token};

/// Commands one user may send per second on each node here (with a burst of twice that).
const COMMANDS_PER_S: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_s_command_rate_is_counted_by_the_room_s_owner_whichever_node_is_asked() {
    let cluster = Cluster::start_with(COMMANDS_PER_S).await;
    let room = "rapid-1";
    let rapid = token("rapid");
    let started = Instant::now();
    {
        let nodes = cluster.nodes.read().await;
        let node = nodes[0].as_ref().expect("running");
        node.ok_post("/v1/rooms", &rapid, &json!({"room_id": room}))
            .await;
    }
    let (mut taken, mut limited) = (1, 0);
    for n in 0..40 {
        let nodes = cluster.nodes.read().await;
        let (status, reply) = nodes[n % 3]
            .as_ref()
            .expect("running")
            .call(
                Method::POST,
                &format!("/v1/rooms/{room}/invitations"),
                Some(&rapid),
                Some(&json!({"user_id": format!("guest-{n}")})),
            )
            .await;
        match status {
            StatusCode::OK => taken += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(reply["error"]["code"], "resource_exhausted", "{reply}");
                limited += 1;
            }
            other => panic!("invitation {n} on node-{}: {other} {reply}", n % 3),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "rate quota: {taken} commands taken, {limited} refused in {elapsed:.2} s over 3 nodes"
    );
    assert!(limited > 0, "no command met the quota");
    // One bucket, the owner's: its burst, then its rate. (A bucket per node asked would take up to three times
    // as many.)
    let allowed = f64::from(2 * COMMANDS_PER_S) + f64::from(COMMANDS_PER_S) * elapsed + 1.0;
    assert!(
        f64::from(taken) <= allowed,
        "{taken} commands taken in {elapsed:.2} s: more than one bucket allows ({allowed:.0})"
    );
}
