//! Cluster mode, rolling restart: sixteen clients send keyed commands for the whole test, each to the next
//! running node in turn (whoever owns its room), while each of the three nodes in turn is stopped with SIGTERM
//! (handing its partitions over) and started again. No acknowledged command is lost or doubled, at most 1% of
//! the commands were answered 503 `unavailable` on the way, and none once the handovers were done.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cluster::{CLIENTS, Cluster, Nodes, spread_rooms, token};

/// What the clients saw: commands acknowledged, and answers 503.
#[derive(Default)]
struct Seen {
    acked: AtomicU64,
    unavailable: AtomicU64,
}

/// Sends one keyed command to the running nodes in turn until one acknowledges it. A node that cannot be
/// reached (stopping, or not yet up) is skipped; a 503 is counted.
async fn send(
    nodes: &Nodes,
    turn: &mut usize,
    path: &str,
    body: Value,
    key: &str,
    seen: &Seen,
) -> Value {
    let started = Instant::now();
    loop {
        *turn += 1;
        let target = {
            let nodes = nodes.read().await;
            let running: Vec<_> = nodes.iter().flatten().collect();
            (!running.is_empty()).then(|| {
                let node = running[*turn % running.len()];
                (node.http.clone(), node.url(path))
            })
        };
        if let Some((http, url)) = target {
            let reply = http
                .post(url)
                .bearer_auth(token("host"))
                .header("idempotency-key", key)
                .timeout(Duration::from_secs(30))
                .json(&body)
                .send()
                .await;
            if let Ok(reply) = reply {
                let status = reply.status();
                let body: Value = reply.json().await.unwrap_or(Value::Null);
                if status == StatusCode::OK {
                    return body;
                }
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
                seen.unavailable.fetch_add(1, Ordering::Relaxed);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{path} never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates the room, takes it live, then invites and cancels until `stop`; returns the commands acknowledged.
async fn drive(
    nodes: Nodes,
    room: String,
    seen: Arc<Seen>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (String, u64) {
    let mut turn = room.len();
    let create = json!({"room_id": room});
    send(
        &nodes,
        &mut turn,
        "/v1/rooms",
        create,
        &format!("{room}-create"),
        &seen,
    )
    .await;
    let live = format!("/v1/rooms/{room}/live");
    send(
        &nodes,
        &mut turn,
        &live,
        json!({}),
        &format!("{room}-live"),
        &seen,
    )
    .await;
    let mut acked = 0;
    while !*stop.borrow() {
        let invite = format!("/v1/rooms/{room}/invitations");
        let key = format!("{room}-i{acked}");
        let reply = send(
            &nodes,
            &mut turn,
            &invite,
            json!({"user_id": "guest"}),
            &key,
            &seen,
        )
        .await;
        let id = reply["invitation_id"]
            .as_str()
            .expect("an invitation id")
            .to_owned();
        let cancel = format!("/v1/invitations/{id}/cancel");
        let key = format!("{room}-c{acked}");
        send(&nodes, &mut turn, &cancel, json!({}), &key, &seen).await;
        acked += 2;
        seen.acked.fetch_add(2, Ordering::Relaxed);
    }
    (room, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing_and_answers_almost_nothing_unavailable() {
    let cluster = Cluster::start().await;
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let clients: Vec<_> = spread_rooms(CLIENTS, 2)
        .into_iter()
        .map(|(room, _)| {
            tokio::spawn(drive(
                cluster.nodes.clone(),
                room,
                seen.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in 0..3 {
        cluster.restart_node(node).await;
    }
    // The handovers are done: from here on, nothing is answered 503.
    let (acked_then, unavailable_then) = (
        seen.acked.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(true).unwrap();
    let mut rooms = Vec::new();
    for client in clients {
        rooms.push(client.await.expect("a client finishes"));
    }
    let (acked, unavailable) = (
        seen.acked.load(Ordering::Relaxed),
        seen.unavailable.load(Ordering::Relaxed),
    );
    println!(
        "rolling restart: {acked} commands acknowledged ({} after the handovers), {unavailable} answers 503",
        acked - acked_then
    );
    assert!(acked - acked_then > 0, "no command after the handovers");
    assert_eq!(
        unavailable, unavailable_then,
        "503 after the handovers were done"
    );
    assert!(
        unavailable * 100 <= acked,
        "{unavailable} of {acked} answered 503"
    );
    let nodes = cluster.nodes.read().await;
    let node = nodes[0].as_ref().unwrap();
    for (room, acked) in rooms {
        let state = node
            .ok_get(&format!("/v1/rooms/{room}"), &token("host"))
            .await;
        assert_eq!(state["version"], 2 + acked, "room {room}: {state}");
    }
}
