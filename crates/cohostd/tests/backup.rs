//! `cohostd backup` copies a serving node's log while commands land; `cohostd restore` rebuilds a data
//! directory from the copy, and a daemon on it serves exactly the log up to the backup's position. A JetStream
//! stream that went past that position is refused at start with the way out. Neither command overwrites.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cohost_nats::test_server::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::*;

const ADMIN: &str = "admin-secret-0123456789";

fn cli(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run cohostd")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The backup's position, from `cohostd backup`'s line.
fn backed_up_to(output: &Output) -> u64 {
    let line = stderr(output);
    assert!(output.status.success(), "{line}");
    let seq = line
        .split("up to seq ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next());
    seq.and_then(|seq| seq.parse().ok())
        .unwrap_or_else(|| panic!("no position in: {line}"))
}

async fn backup(daemon: &Daemon, to: &Path) -> Output {
    let (dir, base, to) = (daemon.dir.clone(), daemon.base.clone(), to.to_owned());
    tokio::task::spawn_blocking(move || {
        let to = to.to_str().unwrap();
        command(&dir)
            .env("COHOST_ADMIN_SECRET", ADMIN)
            .args(["backup", "--to", to, "--url", &base])
            .output()
            .expect("run cohostd backup")
    })
    .await
    .unwrap()
}

/// Creates and stops rooms `load-0`, `load-1`, ... one after another until `stop` is set: two events each.
async fn load(daemon: Arc<Daemon>, token: String, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let room = format!("load-{n}");
        daemon
            .ok_post("/v1/rooms", &token, &json!({"room_id": room}))
            .await;
        daemon
            .ok_post(&format!("/v1/rooms/{room}/stop"), &token, &json!({}))
            .await;
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_to_the_log_at_its_position() {
    let dir = data_dir();
    let flags = ["--admin-secret", ADMIN, "--user-commands-per-s", "1000000"];
    let daemon = Arc::new(Daemon::start_with(dir.path(), &flags).await);
    let alice = daemon.token("alice");
    for room in ["one", "two"] {
        daemon.live_room(&alice, room).await;
        let body = json!({"user_id": "bob"});
        daemon
            .ok_post(&format!("/v1/rooms/{room}/invitations"), &alice, &body)
            .await;
    }
    let mut before = Vec::new();
    for room in ["one", "two"] {
        before.push(daemon.ok_get(&format!("/v1/rooms/{room}"), &alice).await);
    }
    let before_load = daemon.metric("cohost_last_seq").await;
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(daemon.clone(), alice.clone(), stop.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let backups = data_dir();
    let position = backed_up_to(&backup(&daemon, backups.path()).await);
    stop.store(true, Ordering::Relaxed);
    let created = loader.await.unwrap();
    assert!(created > 0);
    assert!(daemon.metric("cohost_last_seq").await >= position);

    let restored = data_dir();
    let output = cli(
        restored.path(),
        &["restore", "--from", backups.path().to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains(&format!("up to seq {position}")));
    let again = Daemon::start(restored.path()).await;
    assert_eq!(again.metric("cohost_last_seq").await, position);
    let token = again.token("alice");
    for (room, was) in ["one", "two"].iter().zip(&before) {
        assert_eq!(
            &again.ok_get(&format!("/v1/rooms/{room}"), &token).await,
            was
        );
    }
    // The load's rooms up to the position, and none after it: two events per room.
    assert!(
        position > before_load,
        "the backup began before the load's first room"
    );
    let held = (position - before_load).div_ceil(2);
    for n in [0, held - 1] {
        again.ok_get(&format!("/v1/rooms/load-{n}"), &token).await;
    }
    let (status, _) = (again.call(
        Method::GET,
        &format!("/v1/rooms/load-{held}"),
        Some(&token),
        None,
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_restored_node_refuses_a_stream_that_went_past_its_backup() {
    let server = TestServer::start(true);
    let nats = [
        "--admin-secret",
        ADMIN,
        "--nats-url",
        &server.url(),
        "--jetstream",
    ];
    let dir = data_dir();
    let mut daemon = Daemon::start_with(dir.path(), &nats).await;
    let alice = daemon.token("alice");
    daemon.live_room(&alice, "one").await;
    let backups = data_dir();
    let position = backed_up_to(&backup(&daemon, backups.path()).await);
    daemon.live_room(&alice, "two").await;
    // The relay has published past the backup's position.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while daemon.metric("cohost_relay_lag_events").await > 0 {
        assert!(std::time::Instant::now() < deadline, "the relay caught up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.terminate(std::time::Duration::from_secs(20));

    let restored = data_dir();
    let output = cli(
        restored.path(),
        &["restore", "--from", backups.path().to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let port = free_port().to_string();
    let started = (command(restored.path()).args(&nats[2..]))
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!started.status.success());
    let line = stderr(&started);
    assert!(
        line.contains(&format!("but the log ends at seq {position}"))
            && line.contains("the stream is ahead of the log")
            && line.contains("purge the stream if the log is the truth"),
        "{line}"
    );
}

#[tokio::test]
async fn backup_and_restore_refuse_what_they_cannot_do_in_one_line() {
    let dir = data_dir();
    let daemon = Daemon::start_with(dir.path(), &["--admin-secret", ADMIN]).await;
    let alice = daemon.token("alice");
    daemon.live_room(&alice, "one").await;
    let target = data_dir();
    let to = target.path().to_str().unwrap();

    let no_secret = cli(dir.path(), &["backup", "--to", to, "--url", &daemon.base]);
    assert!(!no_secret.status.success());
    assert!(
        stderr(&no_secret).contains("needs the admin secret"),
        "{}",
        stderr(&no_secret)
    );

    let wrong = command(dir.path())
        .env("COHOST_ADMIN_SECRET", "not-the-admin-secret-at-all")
        .args(["backup", "--to", to, "--url", &daemon.base])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("401"), "{}", stderr(&wrong));
    assert_eq!(
        std::fs::read_dir(target.path()).unwrap().count(),
        0,
        "nothing written"
    );

    // A user's JWT does not open the route.
    let (status, _) = daemon
        .call(Method::GET, "/v1/admin/backup", Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    std::fs::write(target.path().join("keep"), b"mine").unwrap();
    let occupied = backup(&daemon, target.path()).await;
    assert!(!occupied.status.success());
    assert!(
        stderr(&occupied).contains("is not empty"),
        "{}",
        stderr(&occupied)
    );

    let backups = data_dir();
    backed_up_to(&backup(&daemon, backups.path()).await);
    let from = backups.path().to_str().unwrap();
    let over = cli(target.path(), &["restore", "--from", from]);
    assert!(!over.status.success());
    let line = stderr(&over);
    assert!(
        line.contains("is not empty") && line.lines().count() == 1,
        "{line}"
    );
    assert_eq!(std::fs::read(target.path().join("keep")).unwrap(), b"mine");
}
