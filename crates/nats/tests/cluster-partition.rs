//! The partition of a room is the number NATS subject mapping's `partition(n, 1)` gives its id, so NATS itself
//! can route by subject: checked against a real server's mapping, not only against our own reading of it.

use std::collections::HashMap;
use std::time::Duration;

use cohost_nats::test_server::TestServer;
use cohost_proto::{RoomId, partition};
use futures::StreamExt;

const PARTITIONS: u32 = 64;

fn room_ids() -> Vec<RoomId> {
    let mut ids: Vec<String> = (0..300).map(|n| format!("stage-{n}")).collect();
    ids.extend(["a", "Z", "_", "-", "room_with-Mixed_Case-09"].map(String::from));
    ids.push("x".repeat(64));
    ids.iter()
        .map(|id| RoomId::new(id).expect("valid id"))
        .collect()
}

#[tokio::test]
async fn a_room_s_partition_is_the_one_nats_subject_mapping_gives_it() {
    let config = format!(
        "mappings = {{ \"route.*\": \"part.{{{{partition({PARTITIONS},1)}}}}.{{{{wildcard(1)}}}}\" }}\n"
    );
    let server = TestServer::start_with_config(false, Some(config));
    let client = async_nats::connect(server.url()).await.expect("connects");
    let mut routed = client.subscribe("part.>").await.expect("subscribes");
    client.flush().await.expect("flushes");
    let ids = room_ids();
    for id in &ids {
        client
            .publish(format!("route.{id}"), "".into())
            .await
            .expect("publishes");
    }
    client.flush().await.expect("flushes");
    let mut by_nats = HashMap::new();
    while by_nats.len() < ids.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), routed.next())
            .await
            .expect("every message is routed within 10 s")
            .expect("the subscription stays open");
        let mut tokens = message.subject.split('.').skip(1);
        let part: u32 = tokens.next().unwrap().parse().expect("a partition number");
        by_nats.insert(tokens.next().unwrap().to_owned(), part);
    }
    let mut used = std::collections::HashSet::new();
    for id in &ids {
        let ours = partition::of(id, PARTITIONS);
        assert_eq!(by_nats[id.as_str()], ours, "room {id}");
        used.insert(ours);
    }
    // A mapping that sent everything to one partition would agree with a function that does the same.
    assert!(
        used.len() > PARTITIONS as usize / 2,
        "{} partitions used",
        used.len()
    );
}
