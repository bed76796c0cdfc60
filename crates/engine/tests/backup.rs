//! A backup taken while commands land restores to exactly the log up to its position: the same events, rooms,
//! cursors and remembered command ids; and neither a backup nor a restore overwrites, or takes damaged files.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cohost_engine::{BackupError, Engine, Manifest};
use support::*;

/// Creates rooms and invites into them until `stop` is set; returns how many commands landed.
async fn load(engine: Engine, stop: Arc<AtomicBool>) -> u64 {
    let mut landed = 0;
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (room, host) = (format!("load-{n}"), format!("host-{n}"));
        let run = |by: String, command| {
            let engine = engine.clone();
            async move {
                engine
                    .execute(actor(&by), command, Default::default())
                    .await
            }
        };
        run(host.clone(), create(&room)).await.unwrap();
        run(host.clone(), go_live(&room)).await.unwrap();
        run(host, invite(&room, &format!("guest-{n}")))
            .await
            .unwrap();
        landed += 3;
    }
    landed
}

/// Every event of the log up to `last_seq`, in order.
fn events_to(engine: &Engine, last_seq: u64) -> Vec<cohost_proto::Envelope> {
    let mut events = Vec::new();
    while (events.len() as u64) < last_seq {
        let next = engine.read_events(events.len() as u64 + 1, 1000).unwrap();
        assert!(!next.is_empty(), "the log ends before seq {last_seq}");
        events.extend(next);
    }
    events.truncate(last_seq as usize);
    events
}

async fn backup(engine: &Engine, dir: &std::path::Path) -> Result<Manifest, BackupError> {
    let (engine, dir) = (engine.clone(), dir.to_owned());
    tokio::task::spawn_blocking(move || engine.backup_to(&dir, START_MS))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_to_the_log_at_its_position() {
    let t = open();
    t.live_room("one", "alice").await;
    t.with_id("alice", invite("one", "bob"), "invite-bob")
        .await
        .unwrap();
    t.engine.set_cursor("relay", 3).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(t.engine.clone(), stop.clone()));
    eventually("300 events in the log", || t.engine.last_seq() >= 300).await;

    let backups = tempfile::tempdir().unwrap();
    let manifest = backup(&t.engine, backups.path()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let landed = loader.await.unwrap();
    assert!(manifest.last_seq >= 300, "{manifest:?}");
    assert!(t.engine.last_seq() >= manifest.last_seq && landed > 0);
    assert_eq!(manifest.cursors, BTreeMap::from([("relay".into(), 3)]));

    let restored_dir = tempfile::tempdir().unwrap();
    let restored = cohost_engine::restore(backups.path(), restored_dir.path()).unwrap();
    assert_eq!(restored, manifest);
    let r = Engine::open(config(restored_dir.path(), &t.clock)).unwrap();
    assert_eq!(r.last_seq(), manifest.last_seq);
    assert_eq!(
        events_to(&r, manifest.last_seq),
        events_to(&t.engine, manifest.last_seq),
        "the same events, seq for seq"
    );
    // Each room is at the version the log gives it at the backup's position.
    let mut versions = BTreeMap::new();
    for event in events_to(&t.engine, manifest.last_seq) {
        versions.insert(event.room_id.clone(), event.version);
    }
    let (_, rooms) = r.room_states();
    assert_eq!(rooms.len(), versions.len());
    for (room_id, version) in &versions {
        assert_eq!(r.room(room_id).unwrap().version, *version, "{room_id}");
    }
    assert_eq!(r.cursor("relay").unwrap(), 3);
    // A command id remembered before the backup is remembered after the restore.
    let r = TestEngine {
        engine: r,
        clock: t.clock.clone(),
        dir: restored_dir,
        log: None,
    };
    let again = r.with_id("alice", invite("one", "bob"), "invite-bob").await;
    let first = t.with_id("alice", invite("one", "bob"), "invite-bob").await;
    assert_eq!(again.unwrap(), first.unwrap());
    r.engine.shutdown().await;
    t.engine.shutdown().await;
}

#[tokio::test]
async fn neither_a_backup_nor_a_restore_overwrites() {
    let t = open();
    t.live_room("one", "alice").await;
    let taken = tempfile::tempdir().unwrap();
    std::fs::write(taken.path().join("keep"), b"mine").unwrap();
    let error = backup(&t.engine, taken.path()).await.unwrap_err();
    assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");
    assert_eq!(std::fs::read(taken.path().join("keep")).unwrap(), b"mine");

    let backups = tempfile::tempdir().unwrap();
    backup(&t.engine, backups.path()).await.unwrap();
    let error = cohost_engine::restore(backups.path(), taken.path()).unwrap_err();
    assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");
    let error = cohost_engine::restore(backups.path(), t.dir.path()).unwrap_err();
    assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_damaged_or_unfinished_backup_is_refused() {
    let t = open();
    t.live_room("one", "alice").await;
    t.ok("alice", invite("one", "bob")).await;
    let backups = tempfile::tempdir().unwrap();
    backup(&t.engine, backups.path()).await.unwrap();
    let log = backups.path().join("log");
    let whole = std::fs::read(&log).unwrap();
    // Each refusal leaves the data directory as it was: empty, nothing an engine would open as a log.
    let restore = |what: &str| {
        let target = tempfile::tempdir().unwrap();
        let data_dir = target.path().join("data");
        let error = cohost_engine::restore(backups.path(), &data_dir).unwrap_err();
        assert!(
            matches!(error, BackupError::Damaged(_) | BackupError::Io { .. }),
            "{what}: {error}"
        );
        let left: Vec<_> = std::fs::read_dir(target.path()).unwrap().collect();
        let empty = std::fs::read_dir(&data_dir).map_or(true, |mut d| d.next().is_none());
        assert!(
            empty && left.len() <= 1,
            "{what}: a failed restore left {left:?}"
        );
        error.to_string()
    };

    let mut flipped = whole.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    std::fs::write(&log, &flipped).unwrap();
    assert!(restore("a flipped bit").contains("record"));

    std::fs::write(&log, &whole[..whole.len() - 3]).unwrap();
    assert!(restore("a cut log").contains("the manifest says"));
    std::fs::write(&log, [&whole[..], b"xyz"].concat()).unwrap();
    assert!(restore("trailing bytes").contains("the manifest says"));

    // A whole record missing at the end, with the manifest edited to match the size: the manifest's count
    // and position disagree with the log's.
    let first_len = u32::from_le_bytes(whole[..4].try_into().unwrap()) as usize;
    std::fs::write(&log, &whole[..4 + first_len]).unwrap();
    let manifest_path = backups.path().join("manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    edited["log_bytes"] = (4 + first_len).into();
    std::fs::write(&manifest_path, edited.to_string()).unwrap();
    assert!(restore("a record short").contains("manifest says"));
    std::fs::write(&manifest_path, &manifest).unwrap();

    std::fs::write(&log, &whole).unwrap();
    std::fs::remove_file(backups.path().join("manifest.json")).unwrap();
    assert!(restore("no manifest").contains("not a finished backup"));
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_restored_node_serves_erased_users_by_their_pseudonyms() {
    let t = live(&[("stage", "alice")]).await;
    t.ok("alice", invite("stage", "erin")).await;
    let pseudonym = cohost_proto::UserId::new("erased-e1").unwrap();
    let service = cohost_proto::ServiceId::new("privacy").unwrap();
    (t.engine)
        .erase_user(service, &user("erin"), pseudonym.clone())
        .await
        .unwrap();
    let backups = tempfile::tempdir().unwrap();
    let manifest = backup(&t.engine, backups.path()).await.unwrap();
    assert_eq!(
        manifest.erased,
        BTreeMap::from([("erin".into(), "erased-e1".into())])
    );
    let restored_dir = tempfile::tempdir().unwrap();
    cohost_engine::restore(backups.path(), restored_dir.path()).unwrap();
    let r = Engine::open(config(restored_dir.path(), &t.clock)).unwrap();
    let served = serde_json::to_string(&r.read_events(1, 100).unwrap()).unwrap();
    assert!(
        !served.contains("\"erin\"") && served.contains("\"erased-e1\""),
        "{served}"
    );
}
