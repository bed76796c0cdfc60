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

/// One client: a host that creates a room, goes live, then invites and cancels until the daemon goes away.
#[derive(Debug)]
struct Load {
    http: reqwest::Client,
    base: String,
    token: String,
    acked: Acked,
}

impl Load {
    /// One command, which must succeed: POST, a 2xx asserted and counted. `None` on a connection error or a 503
    /// (the daemon is going away), which ends the client.
    async fn command(&mut self, path: &str, body: Value) -> Option<Value> {
        let reply = (self.http.post(format!("{}{path}", self.base)))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = reply.status();
        let text = reply.text().await.ok()?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        let reply = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path} {body}: {status} {reply}");
        self.acked.commands += 1;
        Some(reply)
    }

    /// Runs until the daemon goes away (`None`), noting each acknowledged command.
    async fn run(&mut self, i: usize) -> Option<()> {
        let room = format!("room-{i}");
        self.command("/v1/rooms", json!({"room_id": room})).await?;
        self.acked.room = Some(room.clone());
        self.command(&format!("/v1/rooms/{room}/live"), json!({}))
            .await?;
        self.acked.live = true;
        let guest = json!({"user_id": format!("guest-{i}")});
        loop {
            let invited =
                (self.command(&format!("/v1/rooms/{room}/invitations"), guest.clone())).await?;
            let id = invited["invitation_id"].as_str().expect("invitation_id");
            self.acked.invitations.push((id.to_owned(), false));
            let cancelled =
                (self.command(&format!("/v1/invitations/{id}/cancel"), json!({}))).await?;
            assert_eq!(cancelled["status"], "cancelled");
            self.acked.invitations.last_mut().expect("pushed").1 = true;
        }
    }
}

async fn client(i: usize, base: String, token: String) -> Acked {
    let mut load = Load {
        http: support::client(),
        base,
        token,
        acked: Acked::default(),
    };
    let _gone = load.run(i).await;
    load.acked
}

/// After the restart: what host `i` saw acknowledged is all there.
async fn assert_kept(d: &Daemon, i: usize, token: &str, acked: &Acked) {
    let Some(room_id) = &acked.room else {
        return;
    };
    let room = d.ok_get(&format!("/v1/rooms/{room_id}"), token).await;
    assert_eq!(room["host"], format!("host-{i}"));
    if acked.live {
        assert_eq!(room["status"], "live", "{room}");
    }
    let listed = (d.list_all(&format!("/v1/rooms/{room_id}/invitations"), token, 100)).await;
    // At most one unacknowledged invite and one unacknowledged cancel may have landed.
    assert!(
        listed.len() >= acked.invitations.len() && listed.len() <= acked.invitations.len() + 1,
        "room {room_id}: {} listed, {} acknowledged",
        listed.len(),
        acked.invitations.len()
    );
    for (id, cancelled) in &acked.invitations {
        let found = (listed.iter())
            .find(|inv| inv["invitation_id"] == id.as_str())
            .unwrap_or_else(|| panic!("acknowledged invitation {id} lost"));
        let status = found["status"].as_str().unwrap();
        match cancelled {
            true => assert_eq!(status, "cancelled", "{found}"),
            false => assert!(status == "pending" || status == "cancelled", "{found}"),
        }
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
        assert_kept(&d, i, &tokens[i], acked).await;
    }
    // And the restarted daemon takes commands.
    let guest = d.token("late-guest");
    d.ok_post("/v1/rooms", &guest, &json!({"room_id": "after-restart"}))
        .await;
}
