//! Cluster mode, routing: any node answers any room route. The seed's flow with each step sent to the next node
//! in turn, whoever owns the room (most steps are forwarded to the owner), every read on another node than the
//! write before it reflecting that write; one `Idempotency-Key` sent to two nodes at once lands once with
//! identical replies; a caller without a token is refused where it called, with nothing forwarded; and the
//! NATS service, whose queue group hands each request to any node, answers every room's commands and queries; a
//! candidate's invitations in rooms of several partitions are listed whole, in order, page by page, on every node;
//! the room's live collection on a node that does not own it sees every change of the flow in order; and a
//! quota across rooms (a candidate's pending offers) holds per partition, whichever node is asked.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Body;
use support::cluster::{Cluster, Live, PARTITIONS, token};

use cohost_nats::subscriber::{Interest, NatsBackfill, Subscriber};
use cohost_proto::{RoomId, partition};

/// Sends one call to node `n` (of three), expecting 200; returns the body.
async fn ok(cluster: &Cluster, n: usize, method: Method, path: &str, user: &str) -> Value {
    let nodes = cluster.nodes.read().await;
    let node = nodes[n % 3].as_ref().expect("running");
    let body = (method != Method::GET).then(|| json!({}));
    let (status, reply) = node
        .call(method.clone(), path, Some(&token(user)), body.as_ref())
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{method} {path} on node-{}: {reply}",
        n % 3
    );
    reply
}

async fn create(cluster: &Cluster, n: usize, room: &str) -> Value {
    let nodes = cluster.nodes.read().await;
    let node = nodes[n % 3].as_ref().expect("running");
    node.ok_post("/v1/rooms", &token("alice"), &json!({"room_id": room}))
        .await
}

/// Requests to the service land on any node (its queue group picks one): every one is answered by the room's
/// owner, whichever node took it; a query that spans partitions is `unavailable`.
async fn service_on_any_node(cluster: &Cluster, room: &str) {
    let client = async_nats::connect(cluster.servers.addrs()).await.unwrap();
    let ask = |subject: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let reply = client
                .request(subject, serde_json::to_vec(&body).unwrap().into())
                .await
                .expect("the service answers");
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let before = ask("cohost.v1.query.room", json!({"room_id": room})).await;
    let version = before["ok"]["version"].as_u64().expect("the room");
    // Twelve invitations: with three nodes in the queue group, most land on a node that forwards them.
    for n in 0..12 {
        let invite = json!({"actor": "alice", "room_id": room, "user_id": format!("guest-{n}"), "command_id": format!("svc-{n}")});
        let reply = ask("cohost.v1.cmd.invite", invite).await;
        assert_eq!(reply["ok"]["status"], "pending", "{reply}");
    }
    let after = ask("cohost.v1.query.room", json!({"room_id": room})).await;
    assert_eq!(after["ok"]["version"], version + 12, "{after}");
    // A candidate's invitations span partitions: every partition is asked.
    let bob = ask(
        "cohost.v1.query.user_invitations",
        json!({"user_id": "bob"}),
    )
    .await;
    let items = bob["ok"]["items"].as_array().expect("bob's invitations");
    assert!(items.iter().any(|i| i["room_id"] == room), "{bob}");
    // read_events names its partition in cluster mode: the room is alone in its own, so its log is the room's.
    let spans = ask("cohost.v1.query.read_events", json!({"from_seq": 1})).await;
    assert_eq!(spans["error"]["code"], "unavailable", "{spans}");
    let p = partition::of(&RoomId::new(room).unwrap(), PARTITIONS);
    let read = ask(
        "cohost.v1.query.read_events",
        json!({"from_seq": 1, "partition": p}),
    )
    .await;
    let events = read["ok"]["events"].as_array().expect("events");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=version + 12).collect::<Vec<u64>>(), "{read}");
    assert!(events.iter().all(|e| e["room_id"] == room), "{read}");
    let wrong = ask(
        "cohost.v1.query.read_events",
        json!({"from_seq": 1, "partition": PARTITIONS}),
    )
    .await;
    assert_eq!(wrong["error"]["code"], "invalid_argument", "{wrong}");
    // The subscriber client follows the room, its gaps filled from the room's partition's log.
    let backfill = NatsBackfill::new(client.clone()).in_partition(p);
    let room_id = RoomId::new(room).unwrap();
    let mut subscriber =
        Subscriber::with_backfill(client.clone(), backfill, Interest::Room(room_id), Some(1))
            .await
            .expect("subscribes");
    for want in 1..=version + 12 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), subscriber.next())
            .await
            .expect("the room's events come")
            .expect("the stream goes on")
            .expect("the log reads");
        assert_eq!(next.version, want, "{next:?}");
    }
}

/// A candidate invited in rooms of several partitions: `/v1/me/invitations` on every node lists all of them, in
/// list order, page by page; the service's `user_invitations` gives the same.
async fn me_across_partitions(cluster: &Cluster) {
    let rooms: Vec<String> = (0..6).map(|n| format!("me-{n}")).collect();
    let spread: std::collections::BTreeSet<u32> = rooms
        .iter()
        .map(|r| partition::of(&RoomId::new(r).unwrap(), PARTITIONS))
        .collect();
    assert!(spread.len() >= 3, "the rooms are in {spread:?}");
    let mut invited = Vec::new();
    for (n, room) in rooms.iter().enumerate() {
        create(cluster, n, room).await;
        ok(
            cluster,
            n + 1,
            Method::POST,
            &format!("/v1/rooms/{room}/live"),
            "alice",
        )
        .await;
        let nodes = cluster.nodes.read().await;
        let (status, invitation) = nodes[(n + 2) % 3]
            .as_ref()
            .unwrap()
            .call(
                Method::POST,
                &format!("/v1/rooms/{room}/invitations"),
                Some(&token("alice")),
                Some(&json!({"user_id": "dana"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{invitation}");
        invited.push(invitation);
    }
    invited.sort_by_key(|i| {
        (
            i["created_ms"].as_u64().unwrap(),
            i["invitation_id"].as_str().unwrap().to_owned(),
        )
    });
    let ids = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["invitation_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let want = ids(&invited);
    for n in 0..3 {
        let page = ok(cluster, n, Method::GET, "/v1/me/invitations", "dana").await;
        assert_eq!(
            ids(page["items"].as_array().unwrap()),
            want,
            "node-{n}: {page}"
        );
        assert_eq!(page["next_cursor"], Value::Null, "node-{n}: {page}");
        // Two at a time, following the cursors.
        let mut paged = Vec::new();
        let mut path = "/v1/me/invitations?limit=2".to_owned();
        loop {
            let page = ok(cluster, n, Method::GET, &path, "dana").await;
            paged.extend(ids(page["items"].as_array().unwrap()));
            let Some(cursor) = page["next_cursor"].as_str() else {
                break;
            };
            path = format!("/v1/me/invitations?limit=2&cursor={cursor}");
            assert!(
                paged.len() <= want.len(),
                "node-{n}: pages past the list: {paged:?}"
            );
        }
        assert_eq!(paged, want, "node-{n}, two at a time");
    }
    let client = async_nats::connect(cluster.servers.addrs()).await.unwrap();
    let body = serde_json::to_vec(&json!({"user_id": "dana", "limit": 4})).unwrap();
    let reply = client
        .request("cohost.v1.query.user_invitations", body.into())
        .await
        .expect("the service answers");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        ids(reply["ok"]["items"].as_array().unwrap()),
        want[..4],
        "{reply}"
    );
    assert!(reply["ok"]["next_cursor"].is_string(), "{reply}");
}

/// `cohostd cluster status` names the room's partition's owner and its last seq (the room is alone in it, so
/// its last seq is the room's version).
async fn cluster_status(cluster: &Cluster, room: &str, owner: usize, version: u64) {
    let dir = support::data_dir();
    let output = support::command(dir.path())
        .args([
            "--nats-url",
            &cluster.servers.servers[0].url(),
            "cluster",
            "status",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let p = partition::of(&RoomId::new(room).unwrap(), PARTITIONS);
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some(&p.to_string()))
        .unwrap_or_else(|| panic!("no line for partition {p}: {text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[1], format!("node-{owner}"), "{line}");
    assert_eq!(fields[3], version.to_string(), "{line}");
    assert_eq!(text.lines().count(), 2 + PARTITIONS as usize, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_any_room_route() {
    let cluster = Cluster::start().await;
    let room = "routed-1";
    let owner = cluster.owners().await[&partition::of(&RoomId::new(room).unwrap(), PARTITIONS)];
    println!("{room} is owned by node-{owner}");
    // Step i goes to node i mod 3, and the read after it to the node after that.
    let mut step = 0;
    let mut next = || {
        step += 1;
        step
    };
    let read = |reply: Value| reply["version"].as_u64().unwrap_or(0);
    let created = create(&cluster, next(), room).await;
    assert_eq!(created["version"], 1, "{created}");
    // The room's live collection on a node that does not own it sees every change of the flow, in order.
    let viewer = (owner + 2) % 3;
    let viewer_url = cluster.nodes.read().await[viewer].as_ref().unwrap().url("");
    let invitations = format!("/v1/rooms/{room}/invitations");
    let mut watching = Live::open_as(&viewer_url, &invitations, "alice", None).await;
    let (event, id, _) = watching.next().await.expect("a snapshot");
    assert_eq!((event.as_str(), id), ("snapshot", 1));
    let path = format!("/v1/rooms/{room}");
    let live = ok(
        &cluster,
        next(),
        Method::POST,
        &format!("{path}/live"),
        "alice",
    )
    .await;
    assert_eq!(
        read(ok(&cluster, next(), Method::GET, &path, "alice").await),
        2,
        "{live}"
    );

    let nodes = cluster.nodes.read().await;
    let (status, invited) = nodes[next() % 3]
        .as_ref()
        .unwrap()
        .call(
            Method::POST,
            &format!("{path}/invitations"),
            Some(&token("alice")),
            Some(&json!({"user_id": "bob"})),
        )
        .await;
    drop(nodes);
    assert_eq!(status, StatusCode::OK, "{invited}");
    let bob = invited["invitation_id"].as_str().unwrap().to_owned();
    let accepted = ok(
        &cluster,
        next(),
        Method::POST,
        &format!("/v1/invitations/{bob}/accept"),
        "bob",
    )
    .await;
    assert_eq!(accepted["invitation"]["status"], "approved", "{accepted}");
    assert_eq!(accepted["broadcaster"]["role"], "cohost", "{accepted}");
    let room_now = ok(&cluster, next(), Method::GET, &path, "bob").await;
    assert_eq!(room_now["cohosts"][0]["user_id"], "bob", "{room_now}");
    let data = ok(
        &cluster,
        next(),
        Method::GET,
        &format!("{path}/broadcaster-data"),
        "bob",
    )
    .await;
    assert_eq!(data["role"], "cohost", "{data}");

    // One key, two nodes at once: one command, two identical replies.
    let nodes = cluster.nodes.read().await;
    let key = [("idempotency-key".to_owned(), "invite-carol-once".to_owned())];
    let invite = Body::Json(json!({"user_id": "carol"}));
    let alice = token("alice");
    let route = format!("{path}/invitations");
    let (first, second) = tokio::join!(
        nodes[0]
            .as_ref()
            .unwrap()
            .send(Method::POST, &route, Some(&alice), &invite, &key),
        nodes[1]
            .as_ref()
            .unwrap()
            .send(Method::POST, &route, Some(&alice), &invite, &key),
    );
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(first, second, "the same key on two nodes answers the same");
    drop(nodes);
    let room_now = ok(&cluster, 2, Method::GET, &path, "alice").await;
    assert_eq!(room_now["version"], 5, "carol was invited once: {room_now}");
    let nodes = cluster.nodes.read().await;
    // Without a token: refused by the node called.
    let (status, refused) = nodes[(owner + 1) % 3]
        .as_ref()
        .unwrap()
        .call(Method::GET, &path, None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    drop(nodes);
    service_on_any_node(&cluster, room).await;
    let stopped = ok(
        &cluster,
        next(),
        Method::POST,
        &format!("{path}/stop"),
        "alice",
    )
    .await;
    let version = read(stopped);
    for n in 0..3 {
        let room = ok(&cluster, n, Method::GET, &path, "carol").await;
        assert_eq!(room["version"], version, "node-{n}: {room}");
        assert_eq!(room["status"], "ended", "node-{n}: {room}");
    }
    assert!(version > 5, "stopped after carol's invitation: {version}");
    let mut seen = Vec::new();
    while seen.last() != Some(&version) {
        let (event, id, change) = watching.next().await.expect("a change");
        assert_eq!(event, "change", "{change}");
        seen.push(id);
    }
    assert_eq!(
        seen,
        (2..=version).collect::<Vec<u64>>(),
        "node-{viewer}'s live collection"
    );
    drop(watching);
    // The nodes that were not the owner count what they forwarded; the owner forwarded nothing.
    let nodes = cluster.nodes.read().await;
    let mut forwarded = Vec::new();
    for node in nodes.iter() {
        let node = node.as_ref().unwrap();
        forwarded.push(
            node.metric("cohost_forwarded_requests_total{result=\"answered\"}")
                .await,
        );
    }
    assert_eq!(forwarded[owner], 0, "{forwarded:?}");
    drop(nodes);
    cluster_status(&cluster, room, owner, version).await;
    assert!(forwarded.iter().sum::<u64>() >= 8, "{forwarded:?}");
    me_across_partitions(&cluster).await;
    quotas_per_partition(&cluster).await;
}

/// A quota across rooms holds in cluster mode per partition: a candidate's 33rd pending offer among one
/// partition's rooms is refused whichever node is asked (32 by default), while one in another partition's room
/// is taken.
async fn quotas_per_partition(cluster: &Cluster) {
    let in_partition = |p: u32, count: usize| -> Vec<String> {
        (0..)
            .map(|n| format!("quota-{n}"))
            .filter(|r| partition::of(&RoomId::new(r).unwrap(), PARTITIONS) == p)
            .take(count)
            .collect()
    };
    let (p, q) = (0, 1);
    let mut rooms = in_partition(p, 33);
    rooms.extend(in_partition(q, 1));
    for (n, room) in rooms.iter().enumerate() {
        let host = format!("host-{n}");
        let nodes = cluster.nodes.read().await;
        let node = nodes[n % 3].as_ref().expect("running");
        node.ok_post("/v1/rooms", &token(&host), &json!({"room_id": room}))
            .await;
        let (status, reply) = nodes[(n + 1) % 3]
            .as_ref()
            .unwrap()
            .call(
                Method::POST,
                &format!("/v1/rooms/{room}/invitations"),
                Some(&token(&host)),
                Some(&json!({"user_id": "quentin"})),
            )
            .await;
        let want = if n == 32 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        assert_eq!(status, want, "invitation {n} to {room}: {reply}");
        if n == 32 {
            assert_eq!(reply["error"]["code"], "resource_exhausted", "{reply}");
        }
    }
}
