//! SIGTERM under load: 32 clients send commands while the daemon is told to stop. It exits 0, and every
//! command that got a 2xx reply is there after a restart on the same data dir.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{CALL_TIMEOUT, Daemon, data_dir};

const CLIENTS: usize = 32;

/// What one client saw acknowledged.
#[derive(Debug, Default)]
struct Acked {
    room: Option<String>,
    live: bool,
    /// (invitation_id, cancelled?)
    invitations: Vec<(String, bool)>,
    commands: usize,
}

/// POST; `None` on a connection error or a 503 (the daemon is going away), which ends the client.
async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let reply = http
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .ok()?;
    let status = reply.status();
    let text = reply.text().await.ok()?;
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

async fn client(i: usize, base: String, token: String) -> Acked {
    let http = support::client();
    let mut acked = Acked::default();
    let room = format!("room-{i}");
    let guest = format!("guest-{i}");
    let Some((status, reply)) =
        post(&http, &base, "/v1/rooms", &token, &json!({"room_id": room})).await
    else {
        return acked;
    };
    assert!(status.is_success(), "create {room}: {status} {reply}");
    acked.room = Some(room.clone());
    acked.commands += 1;
    let Some((status, reply)) = post(
        &http,
        &base,
        &format!("/v1/rooms/{room}/live"),
        &token,
        &json!({}),
    )
    .await
    else {
        return acked;
    };
    assert!(status.is_success(), "live {room}: {status} {reply}");
    acked.live = true;
    acked.commands += 1;
    loop {
        let Some((status, reply)) = post(
            &http,
            &base,
            &format!("/v1/rooms/{room}/invitations"),
            &token,
            &json!({"user_id": guest}),
        )
        .await
        else {
            return acked;
        };
        assert!(status.is_success(), "invite in {room}: {status} {reply}");
        let id = reply["invitation_id"]
            .as_str()
            .expect("invitation_id")
            .to_owned();
        acked.invitations.push((id.clone(), false));
        acked.commands += 1;
        let Some((status, reply)) = post(
            &http,
            &base,
            &format!("/v1/invitations/{id}/cancel"),
            &token,
            &json!({}),
        )
        .await
        else {
            return acked;
        };
        assert!(status.is_success(), "cancel {id}: {status} {reply}");
        assert_eq!(reply["status"], "cancelled");
        acked.invitations.last_mut().expect("pushed").1 = true;
        acked.commands += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn sigterm_under_load_exits_zero_and_keeps_every_acknowledged_command() {
    let dir = data_dir();
    let mut d = Daemon::start(dir.path()).await;
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|i| d.token(&format!("host-{i}")))
        .collect();

    let tasks: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| tokio::spawn(client(i, d.base.clone(), token.clone())))
        .collect();
    // Let the load build up: wait until some invitations have been committed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.last_seq().await < 500 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = tokio::task::block_in_place(|| d.terminate(Duration::from_secs(30)));
    assert!(
        status.success(),
        "cohostd exited with {status} after SIGTERM"
    );

    let mut results = Vec::new();
    for task in tasks {
        let acked = tokio::time::timeout(CALL_TIMEOUT * 2, task)
            .await
            .expect("a client stops once the daemon is gone")
            .expect("client task");
        results.push(acked);
    }
    let total: usize = results.iter().map(|a| a.commands).sum();
    assert!(
        total >= 64,
        "too little load before SIGTERM: {total} commands"
    );

    // Restart on the same data dir; every acknowledged command is there.
    let d = Daemon::start(dir.path()).await;
    for (i, acked) in results.iter().enumerate() {
        let token = &tokens[i];
        let Some(room_id) = &acked.room else {
            continue;
        };
        let room = d.ok_get(&format!("/v1/rooms/{room_id}"), token).await;
        assert_eq!(room["host"], format!("host-{i}"));
        if acked.live {
            assert_eq!(room["status"], "live", "{room}");
        }
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => format!("/v1/rooms/{room_id}/invitations?limit=100"),
                Some(c) => format!("/v1/rooms/{room_id}/invitations?limit=100&cursor={c}"),
            };
            let page = d.ok_get(&path, token).await;
            listed.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        // At most one unacknowledged invite and one unacknowledged cancel may have landed.
        assert!(
            listed.len() >= acked.invitations.len() && listed.len() <= acked.invitations.len() + 1,
            "room {room_id}: {} listed, {} acknowledged",
            listed.len(),
            acked.invitations.len()
        );
        for (id, cancelled) in &acked.invitations {
            let found = listed
                .iter()
                .find(|inv| inv["invitation_id"] == id.as_str())
                .unwrap_or_else(|| panic!("acknowledged invitation {id} lost"));
            if *cancelled {
                assert_eq!(found["status"], "cancelled", "{found}");
            } else {
                let status = found["status"].as_str().unwrap();
                assert!(status == "pending" || status == "cancelled", "{found}");
            }
        }
    }
    // And the restarted daemon takes commands.
    let guest = d.token("late-guest");
    d.ok_post("/v1/rooms", &guest, &json!({"room_id": "after-restart"}))
        .await;
}
