//! Reads cost what they return: on a log of a million events, reading a quiet room's events, following it,
//! opening its live collection, or resuming a candidate's stream decodes only the log records that hold
//! their events, never a scan of the log.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cohost_core::{Context, Policy, RoomState, apply, decide};
use cohost_engine::{Config, Engine, Interest, ListRequest, ManualClock};
use cohost_proto::{Actor, Command, Envelope};
use cohost_store::Store;
use support::*;

const EVENTS: u64 = 1_000_000;
/// Events per log record, as a busy engine writes them.
const RECORD_EVENTS: usize = 1_024;
const BUSY_ROOMS: usize = 1_000;

/// Writes a log of `EVENTS` events: busy rooms cycling invitations, and the quiet room `quiet` (host alice)
/// with bob invited near the start, middle and end. Returns the seqs of the quiet room's events and of bob's.
fn write_log(dir: &std::path::Path) -> (Vec<u64>, Vec<u64>) {
    let store = Store::open(dir).unwrap();
    let mut rooms: HashMap<String, RoomState> = HashMap::new();
    let (mut pending, mut seq, mut quiet, mut bob) = (Vec::new(), 0u64, Vec::new(), Vec::new());
    let mut step = |by: &str, command: Command, pending: &mut Vec<Envelope>| {
        let room_id = command.room_id().clone();
        let state = rooms.entry(room_id.to_string()).or_default();
        let actor = Actor::User(user(by));
        let ctx = Context::new(&actor, START_MS, Policy::default());
        for event in decide(state, &command, &ctx).unwrap() {
            apply(state, &event);
            seq += 1;
            if room_id.as_str() == "quiet" {
                quiet.push(seq);
            }
            if event.candidate().is_some_and(|c| c.as_str() == "bob") {
                bob.push(seq);
            }
            pending.push(Envelope {
                seq,
                room_id: room_id.clone(),
                version: state.version(),
                at_ms: START_MS,
                actor: Some(actor.user().unwrap().clone()),
                service: None,
                command_id: None,
                event,
            });
        }
        seq
    };
    step("alice", create("quiet"), &mut pending);
    step("alice", go_live("quiet"), &mut pending);
    step("alice", invite("quiet", "bob"), &mut pending);
    step("alice", cancel("quiet", 1), &mut pending);
    for r in 0..BUSY_ROOMS {
        step(
            &format!("host-{r}"),
            create(&format!("busy-{r}")),
            &mut pending,
        );
        step(
            &format!("host-{r}"),
            go_live(&format!("busy-{r}")),
            &mut pending,
        );
    }
    let mut n = 0;
    'fill: loop {
        n += 1;
        for r in 0..BUSY_ROOMS {
            let (host, room) = (format!("host-{r}"), format!("busy-{r}"));
            step(&host, invite(&room, "carol"), &mut pending);
            if step(&host, cancel(&room, n), &mut pending) >= EVENTS - 4 {
                break 'fill;
            }
        }
        if n == 250 {
            step("alice", invite("quiet", "bob"), &mut pending);
            step("alice", cancel("quiet", 2), &mut pending);
        }
    }
    step("alice", invite("quiet", "bob"), &mut pending);
    step("alice", cancel("quiet", 3), &mut pending);
    for chunk in pending.chunks(RECORD_EVENTS) {
        store.append(chunk, &[]).unwrap();
    }
    (quiet, bob)
}

/// How many records hold these seqs, as the engine writes them here.
fn records_holding(seqs: &[u64]) -> u64 {
    let records: BTreeSet<u64> = seqs
        .iter()
        .map(|s| (s - 1) / RECORD_EVENTS as u64)
        .collect();
    records.len() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_decode_only_the_records_that_hold_what_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let (quiet_seqs, bob_seqs) = write_log(dir.path());
    let clock = Arc::new(ManualClock::new(START_MS));
    let engine = Engine::open(Config::new(dir.path()).with_clock(clock)).unwrap();
    assert!(engine.last_seq() >= EVENTS - 4, "{}", engine.last_seq());
    let quiet_records = records_holding(&quiet_seqs);
    let bob_records = records_holding(&bob_seqs);
    assert!(quiet_records >= 3 && bob_records >= 3);

    let cost = |what: &str, before: u64, most: u64| {
        let read = engine.records_read() - before;
        assert!(
            read <= most,
            "{what} decoded {read} records, at most {most} hold its events"
        );
        assert!(read > 0, "{what} read nothing");
    };
    let before = engine.records_read();
    let events = engine.read_room(&room("quiet"), 1, 1_000).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), quiet_seqs);
    cost("read_room", before, quiet_records);

    let before = engine.records_read();
    let mut follow = engine.subscribe(1, Interest::Room(room("quiet")));
    for want in &quiet_seqs {
        assert_eq!(follow.next().await.unwrap().unwrap().seq, *want);
    }
    cost("following the room from seq 1", before, quiet_records);

    let before = engine.records_read();
    let mut candidate = engine.subscribe(1, Interest::Candidate(user("bob")));
    for want in &bob_seqs {
        assert_eq!(candidate.next().await.unwrap().unwrap().seq, *want);
    }
    cost("resuming bob's stream from seq 1", before, bob_records);

    // Opening the room's live collection reads nothing from the log at all.
    let before = engine.records_read();
    let watch = engine
        .watch_room_invitations(&room("quiet"), &ListRequest::default())
        .unwrap();
    assert_eq!(watch.room_version, Some(quiet_seqs.len() as u64));
    assert_eq!(watch.snapshot.items.len(), 3);
    assert_eq!(engine.records_read(), before);
    engine.shutdown().await;
}
