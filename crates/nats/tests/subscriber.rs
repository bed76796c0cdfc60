//! The subscriber client against a private nats-server, with the log faked in memory: order, duplicates, seq
//! and version gaps, starting from a seq, undecodable messages, failed log reads, reconnects, and the
//! `read_events` request of `NatsBackfill`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, HeaderMap};
use cohost_nats::subscriber::{
    Backfill, BackfillError, Error, Interest, NatsBackfill, Stats, Subscriber,
};
use cohost_nats::test_server::TestServer;
use cohost_proto::codec::{encode_envelope, to_json};
use cohost_proto::subject::{self, header};
use cohost_proto::{
    Encoding, Envelope, ErrorCode, Event, Invitation, InvitationId, InvitationKind,
    InvitationStatus, Room, RoomId, RoomStatus, UserId,
};
use futures::StreamExt;

/// The longest wait for anything that should happen.
const STEP: Duration = Duration::from_secs(5);
/// How long a stream must stay silent to count as having nothing more.
const QUIET: Duration = Duration::from_millis(150);
/// Envelopes in the story every test draws from.
const STORY_LEN: u64 = 30;

// ---------------------------------------------------------------------------------------------------------
// The story: two rooms, their events interleaved in the log, invitations for bob and carol
// ---------------------------------------------------------------------------------------------------------

fn room_id(name: &str) -> RoomId {
    RoomId::new(name).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// Seq `s` belongs to stage-2 when `s % 3 == 0`, else to stage-1. Each room starts with room_created, then
/// cycles through an invitation (to bob or carol), its rejection, and a presence change.
fn story(len: u64) -> Vec<Envelope> {
    let mut versions = [0u64; 2];
    (1..=len)
        .map(|seq| {
            let index = usize::from(seq.is_multiple_of(3));
            versions[index] += 1;
            let room = room_id(["stage-1", "stage-2"][index]);
            let version = versions[index];
            let candidate = if seq % 4 < 2 { "bob" } else { "carol" };
            Envelope {
                seq,
                room_id: room.clone(),
                version,
                at_ms: 1_767_225_600_000 + seq * 1_000,
                actor: Some(user("alice")),
                service: None,
                command_id: None,
                event: event(&room, version, candidate),
            }
        })
        .collect()
}

fn event(room: &RoomId, version: u64, candidate: &str) -> Event {
    let invitation = |status| Invitation {
        invitation_id: InvitationId::new(room.clone(), version).unwrap(),
        room_id: room.clone(),
        kind: InvitationKind::Invite,
        host: user("alice"),
        user_id: user(candidate),
        status,
        created_ms: 1_767_225_600_000,
        updated_ms: 1_767_225_600_000,
        expires_ms: 1_767_225_900_000,
        seat: None,
    };
    match version % 3 {
        _ if version == 1 => Event::RoomCreated {
            room: Room {
                room_id: room.clone(),
                host: user("alice"),
                title: "Friday night jam — open stage".to_owned(),
                status: RoomStatus::Idle,
                max_cohosts: 4,
                cohosts: Vec::new(),
                version,
                moderators: Vec::new(),
                locked_seats: Vec::new(),
                requests_open: true,
            },
        },
        2 => Event::InvitationCreated {
            invitation: invitation(InvitationStatus::Pending),
        },
        0 => Event::InvitationRejected {
            invitation: invitation(InvitationStatus::Rejected),
        },
        _ => Event::PresenceChanged {
            user_id: user("alice"),
            online: version.is_multiple_of(2),
            stamp: None,
        },
    }
}

/// The seqs in `range` of the story that `interest` wants.
fn seqs_of(interest: &Interest, range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    story(STORY_LEN)
        .into_iter()
        .filter(|envelope| range.contains(&envelope.seq) && interest.matches(envelope))
        .map(|envelope| envelope.seq)
        .collect()
}

fn story_envelope(seq: u64) -> Envelope {
    story(STORY_LEN).swap_remove(usize::try_from(seq - 1).unwrap())
}

// ---------------------------------------------------------------------------------------------------------
// A log in memory
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct FakeLog(Arc<Mutex<FakeState>>);

#[derive(Debug, Default)]
struct FakeState {
    events: Vec<Envelope>,
    /// The next this many reads fail.
    fail_next: usize,
    /// Every read asked for: `(from_seq, limit)`.
    reads: Vec<(u64, usize)>,
}

impl FakeLog {
    fn holding(events: Vec<Envelope>) -> Self {
        let log = Self::default();
        log.0.lock().unwrap().events = events;
        log
    }

    fn append(&self, envelope: Envelope) {
        self.0.lock().unwrap().events.push(envelope);
    }

    fn fail_next(&self, reads: usize) {
        self.0.lock().unwrap().fail_next = reads;
    }

    fn reads(&self) -> Vec<(u64, usize)> {
        self.0.lock().unwrap().reads.clone()
    }
}

impl Backfill for FakeLog {
    async fn read_events(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, BackfillError> {
        let mut state = self.0.lock().unwrap();
        state.reads.push((from_seq, limit));
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return Err(BackfillError::Other("injected failure".into()));
        }
        Ok(state
            .events
            .iter()
            .filter(|envelope| envelope.seq >= from_seq)
            .take(limit)
            .cloned()
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------------------
// NATS helpers
// ---------------------------------------------------------------------------------------------------------

async fn connect(server: &TestServer) -> Client {
    tokio::time::timeout(STEP, async_nats::connect(server.url()))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A private nats-server with two clients: `publisher` publishes as the relay would, `client` subscribes.
struct Nats {
    server: TestServer,
    publisher: Client,
    client: Client,
}

impl Nats {
    async fn start() -> Self {
        let server = TestServer::start(false);
        let publisher = connect(&server).await;
        let client = connect(&server).await;
        Self {
            server,
            publisher,
            client,
        }
    }

    /// Publishes the story's envelopes `seqs`, in this order, as the relay does, and flushes.
    async fn publish(&self, seqs: impl IntoIterator<Item = u64>, on_user_subject: bool) {
        for seq in seqs {
            publish(&self.publisher, &story_envelope(seq), on_user_subject).await;
        }
        flush(&self.publisher).await;
    }

    /// A stream of `interest` from `from_seq` (or live), filling gaps from `log`.
    async fn subscribe(
        &self,
        log: &FakeLog,
        interest: Interest,
        from_seq: Option<u64>,
    ) -> Subscriber<FakeLog> {
        let subscribe =
            Subscriber::with_backfill(self.client.clone(), log.clone(), interest, from_seq);
        tokio::time::timeout(STEP, subscribe)
            .await
            .expect("subscribe in time")
            .expect("subscribe")
    }
}

/// JSON for odd seqs and postcard for even ones, so every scenario crosses both encodings.
fn encoding_of(seq: u64) -> Encoding {
    if seq % 2 == 1 {
        Encoding::Json
    } else {
        Encoding::Postcard
    }
}

/// Publishes `payload` on `subject` with `Content-Type: content_type` (none when `None`).
async fn publish_raw(
    client: &Client,
    subject: String,
    content_type: Option<&str>,
    payload: Vec<u8>,
) {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    publish_with_headers(client, subject, headers, payload).await;
}

/// Publishes `envelope` as the relay does: on its room subject, or on its candidate's user subject.
async fn publish(client: &Client, envelope: &Envelope, on_user_subject: bool) {
    let encoding = encoding_of(envelope.seq);
    let (subject, msg_id) = if on_user_subject {
        let candidate = envelope.event.candidate().expect("an invitation event");
        (subject::user(candidate), subject::user_msg_id(envelope))
    } else {
        (
            subject::room(&envelope.room_id),
            subject::room_msg_id(envelope),
        )
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, msg_id.as_str());
    headers.insert(header::SEQ, envelope.seq.to_string().as_str());
    headers.insert(header::VERSION, envelope.version.to_string().as_str());
    headers.insert(header::CONTENT_TYPE, encoding.content_type());
    let payload = encode_envelope(encoding, envelope);
    publish_with_headers(client, subject, headers, payload).await;
}

async fn publish_with_headers(
    client: &Client,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) {
    let publish = client.publish_with_headers(subject, headers, payload.into());
    tokio::time::timeout(STEP, publish)
        .await
        .expect("publish in time")
        .expect("publish");
}

/// Waits until the server has read the client's subscriptions (`flush` only writes the socket): a request
/// nobody serves comes back "no responders" once the server has handled everything before it.
async fn confirm_subscriptions(client: &Client) {
    let request = client.request(client.new_inbox(), Vec::new().into());
    match tokio::time::timeout(STEP, request)
        .await
        .expect("confirmed in time")
    {
        Err(error) if error.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => panic!("expected no responders, got {other:?}"),
    }
}

async fn flush(client: &Client) {
    tokio::time::timeout(STEP, client.flush())
        .await
        .expect("flush in time")
        .expect("flush");
}

async fn next<B: Backfill>(stream: &mut Subscriber<B>) -> Result<Envelope, Error> {
    match tokio::time::timeout(STEP, stream.next()).await {
        Ok(next) => next.expect("the stream goes on"),
        Err(_) => panic!("no envelope in time: {stream:?}"),
    }
}

async fn next_seq<B: Backfill>(stream: &mut Subscriber<B>) -> u64 {
    next(stream).await.expect("an envelope, not an error").seq
}

/// The seqs of the stream's next `n` envelopes.
async fn next_seqs<B: Backfill>(stream: &mut Subscriber<B>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    for _ in 0..n {
        seqs.push(next_seq(stream).await);
    }
    seqs
}

/// The stream yields nothing more (for a while).
async fn assert_quiet<B: Backfill>(stream: &mut Subscriber<B>, case: &str) {
    if let Ok(extra) = tokio::time::timeout(QUIET, stream.next()).await {
        panic!("{case}: expected nothing more, got {extra:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Order, duplicates, gaps and starting seqs, as data
// ---------------------------------------------------------------------------------------------------------

/// Given a stream of `interest` over a log, when seqs are published live, then it yields `expect` and nothing
/// more, having counted `duplicates` and `gaps`.
struct Case {
    name: &'static str,
    interest: Interest,
    /// The fake log holds the story's first `log_len` envelopes: all of it unless the stream starts at a seq.
    log_len: u64,
    from_seq: Option<u64>,
    /// Seqs published live, in this order (a user stream's on the candidate's subject).
    publish: Vec<u64>,
    /// Seqs the stream yields, in this order, and nothing after them.
    expect: Vec<u64>,
    duplicates: u64,
    gaps: u64,
}

impl Case {
    /// A live stream of everything over the whole story, with nothing published, expected or counted yet.
    fn named(name: &'static str) -> Self {
        Self {
            name,
            interest: Interest::All,
            log_len: STORY_LEN,
            from_seq: None,
            publish: Vec::new(),
            expect: Vec::new(),
            duplicates: 0,
            gaps: 0,
        }
    }

    fn of(self, interest: &Interest) -> Self {
        Self {
            interest: interest.clone(),
            ..self
        }
    }

    /// The stream starts at `from_seq` instead of live.
    fn starting_at(self, from_seq: u64) -> Self {
        Self {
            from_seq: Some(from_seq),
            ..self
        }
    }

    fn log_len(self, log_len: u64) -> Self {
        Self { log_len, ..self }
    }

    fn publish(self, seqs: impl IntoIterator<Item = u64>) -> Self {
        Self {
            publish: seqs.into_iter().collect(),
            ..self
        }
    }

    fn expect(self, seqs: impl IntoIterator<Item = u64>) -> Self {
        Self {
            expect: seqs.into_iter().collect(),
            ..self
        }
    }

    fn counting(self, duplicates: u64, gaps: u64) -> Self {
        Self {
            duplicates,
            gaps,
            ..self
        }
    }
}

/// Runs each case on a stream of its own, over one nats-server.
async fn check(cases: impl IntoIterator<Item = Case>) {
    let nats = Nats::start().await;
    for case in cases {
        check_case(&nats, case).await;
    }
}

async fn check_case(nats: &Nats, case: Case) {
    let log = FakeLog::holding(story(case.log_len));
    let mut stream = nats
        .subscribe(&log, case.interest.clone(), case.from_seq)
        .await;
    let on_user_subject = matches!(case.interest, Interest::Candidate(_));
    nats.publish(case.publish, on_user_subject).await;
    let got = next_seqs(&mut stream, case.expect.len()).await;
    assert_eq!(got, case.expect, "{}: seqs", case.name);
    assert_quiet(&mut stream, case.name).await;
    let Stats {
        duplicates,
        gaps,
        undecodable,
        ..
    } = stream.stats();
    assert_eq!(
        (duplicates, gaps, undecodable),
        (case.duplicates, case.gaps, 0),
        "{}: stats",
        case.name
    );
    if let Interest::Room(room) = &case.interest {
        let versions: Vec<u64> = got.iter().map(|&seq| story_envelope(seq).version).collect();
        assert!(
            versions.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{}: room versions {versions:?} are gap-free",
            case.name
        );
        assert!(
            got.iter().all(|&seq| &story_envelope(seq).room_id == room),
            "{}: only the room",
            case.name
        );
    }
}

#[tokio::test]
async fn all_streams_deliver_in_order_drop_duplicates_and_fill_seq_gaps() {
    check([
        Case::named("in order, JSON and postcard")
            .publish(1..=8)
            .expect(1..=8),
        Case::named("starting live mid-story: the first message is the baseline")
            .publish([7, 8, 9])
            .expect([7, 8, 9]),
        Case::named("seq gaps are filled from the log, in order")
            .publish([1, 2, 5, 6, 9])
            .expect(1..=9)
            .counting(0, 2),
        Case::named("repeats and older envelopes are dropped")
            .publish([1, 2, 2, 3, 1, 4, 4])
            .expect(1..=4)
            .counting(3, 0),
        Case::named("live copies of filled envelopes are dropped")
            .publish([1, 4, 2, 3, 4, 6])
            .expect(1..=6)
            .counting(3, 2),
        Case::named("from a seq: catch up from the log, then live without repeats")
            .starting_at(5)
            .log_len(20)
            .publish(18..=22)
            .expect(5..=22)
            .counting(3, 0),
    ])
    .await;
}

#[tokio::test]
async fn room_streams_fill_version_gaps_with_the_room_events_only() {
    let stage_1 = Interest::Room(room_id("stage-1"));
    let stage_2 = Interest::Room(room_id("stage-2"));
    let all_of_stage_1 = seqs_of(&stage_1, 1..=STORY_LEN);
    check([
        Case::named("room in order")
            .of(&stage_1)
            .publish(all_of_stage_1.clone())
            .expect(all_of_stage_1),
        Case::named("room version gaps (stage-1 skips seqs 4, 5, 10, 11, 13)")
            .of(&stage_1)
            .publish([1, 2, 7, 8, 14, 16, 16, 7])
            .expect(seqs_of(&stage_1, 1..=16))
            .counting(2, 2),
        Case::named("room version gap of stage-2, whose seqs are never consecutive")
            .of(&stage_2)
            .publish([3, 6, 15, 18])
            .expect([3, 6, 9, 12, 15, 18])
            .counting(0, 1),
        Case::named("room from a seq: the room's events from the log, then live")
            .of(&stage_2)
            .starting_at(7)
            .log_len(20)
            .publish([15, 18, 21, 24])
            .expect([9, 12, 15, 18, 21, 24])
            .counting(2, 0),
    ])
    .await;
}

#[tokio::test]
async fn user_streams_drop_duplicates_and_catch_up_from_a_seq() {
    let bob = Interest::Candidate(user("bob"));
    let all_of_bob = seqs_of(&bob, 1..=STORY_LEN);
    assert!(
        all_of_bob.len() >= 4,
        "the story invites bob: {all_of_bob:?}"
    );
    let (first, second, third) = (all_of_bob[0], all_of_bob[1], all_of_bob[2]);
    check([
        Case::named("user in order, repeats dropped")
            .of(&bob)
            .publish([first, second, second, first, third])
            .expect([first, second, third])
            .counting(2, 0),
        // Sparse seqs: a skipped message cannot be told from a seq that was never bob's.
        Case::named("user streams do not guess gaps")
            .of(&bob)
            .publish([first, third])
            .expect([first, third]),
        Case::named("user from a seq: bob's invitations from the log, then live")
            .of(&bob)
            .starting_at(1)
            .log_len(20)
            .publish(seqs_of(&bob, 15..=STORY_LEN))
            .expect(all_of_bob.clone())
            .counting(seqs_of(&bob, 15..=20).len() as u64, 0),
    ])
    .await;
}

/// The log grows while the stream is live: a gap after the catch-up is read from the log as it is then.
#[tokio::test]
async fn after_the_catch_up_gaps_are_filled_from_the_grown_log() {
    let nats = Nats::start().await;
    let log = FakeLog::holding(story(22));
    let mut all = nats.subscribe(&log, Interest::All, Some(20)).await;
    assert_eq!(next_seqs(&mut all, 3).await, [20, 21, 22]);
    // The catch-up reads on until the log has nothing more, then the stream is live.
    assert_quiet(&mut all, "catch-up to seq 22").await;
    for seq in 23..=26 {
        log.append(story_envelope(seq));
    }
    nats.publish([26], false).await;
    assert_eq!(next_seqs(&mut all, 4).await, [23, 24, 25, 26]);
    assert_eq!(all.stats().gaps, 1);

    // stage-2's events are the seqs divisible by 3: none in 22..=23, so the catch-up leaves its version
    // unknown, and version 9 (seq 27) is a gap back to the end of the catch-up.
    let log = FakeLog::holding(story(23));
    let stage_2 = Interest::Room(room_id("stage-2"));
    let mut stage_2 = nats.subscribe(&log, stage_2, Some(22)).await;
    assert_quiet(&mut stage_2, "catch-up without stage-2 events").await;
    for seq in 24..=27 {
        log.append(story_envelope(seq));
    }
    nats.publish([27], false).await;
    assert_eq!(next_seqs(&mut stage_2, 2).await, [24, 27]);
    assert_eq!(stage_2.stats().gaps, 1);
    assert_eq!(log.reads(), vec![(22, 256), (24, 256), (24, 3)]);
}

// ---------------------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn undecodable_and_foreign_messages_are_skipped_and_counted() {
    let nats = Nats::start().await;
    let log = FakeLog::holding(story(STORY_LEN));
    let stage_1 = Interest::Room(room_id("stage-1"));
    let mut stream = nats.subscribe(&log, stage_1, None).await;
    let subject = subject::room(&room_id("stage-1"));
    let valid = story_envelope(1);
    let mut truncated = encode_envelope(Encoding::Postcard, &valid);
    truncated.pop();
    let mut event_id_mismatch: serde_json::Value =
        serde_json::from_slice(&to_json(&valid)).unwrap();
    event_id_mismatch["event_id"] = "stage-1:9".into();
    let mut unknown_type = event_id_mismatch.clone();
    unknown_type["event_id"] = "stage-1:1".into();
    unknown_type["type"] = "room_renamed".into();
    let bad: [(Option<&str>, Vec<u8>); 7] = [
        (Some("application/json"), b"{not json".to_vec()),
        (Some("application/json"), to_json(&event_id_mismatch)),
        (Some("application/json"), to_json(&unknown_type)),
        (Some("application/postcard"), truncated),
        (
            Some("application/postcard"),
            encode_envelope(Encoding::Json, &valid),
        ),
        (Some("text/plain"), encode_envelope(Encoding::Json, &valid)),
        // stage-2's event on stage-1's subject.
        (
            Some("application/json"),
            encode_envelope(Encoding::Json, &story_envelope(3)),
        ),
    ];
    let bad_len = bad.len() as u64;
    for (content_type, payload) in bad {
        publish_raw(&nats.publisher, subject.clone(), content_type, payload).await;
    }
    // No Content-Type at all reads as JSON, the wire's default.
    let no_content_type = encode_envelope(Encoding::Json, &valid);
    publish_raw(&nats.publisher, subject.clone(), None, no_content_type).await;
    nats.publish([2], false).await;
    assert_eq!(next(&mut stream).await.unwrap(), valid);
    assert_eq!(next(&mut stream).await.unwrap(), story_envelope(2));
    assert_quiet(&mut stream, "undecodable").await;
    assert_eq!(stream.stats().undecodable, bad_len);
    assert_eq!(stream.stats().gaps, 0);
}

#[tokio::test]
async fn a_failed_log_read_is_an_error_and_the_stream_goes_on() {
    let nats = Nats::start().await;
    let log = FakeLog::holding(story(STORY_LEN));
    let mut stream = nats.subscribe(&log, Interest::All, None).await;
    nats.publish([1, 4], false).await;
    log.fail_next(2);
    assert_eq!(next_seq(&mut stream).await, 1);
    for _ in 0..2 {
        match next(&mut stream).await {
            Err(Error::Backfill(BackfillError::Other(error))) => {
                assert_eq!(error.to_string(), "injected failure");
            }
            other => panic!("expected the injected failure, got {other:?}"),
        }
    }
    // The same gap is read again, then the live envelope follows.
    assert_eq!(next_seqs(&mut stream, 3).await, [2, 3, 4]);
    nats.publish([5], false).await;
    assert_eq!(next_seq(&mut stream).await, 5);
    assert_eq!(log.reads(), vec![(2, 2), (2, 2), (2, 2)]);
    assert_quiet(&mut stream, "after the failures").await;
}

#[tokio::test]
async fn a_gap_the_log_cannot_fill_is_reported_then_the_live_envelope_follows() {
    let nats = Nats::start().await;
    let log = FakeLog::holding(story(2));
    let mut stream = nats.subscribe(&log, Interest::All, None).await;
    nats.publish([1, 5, 6], false).await;
    assert_eq!(next_seqs(&mut stream, 2).await, [1, 2]);
    match next(&mut stream).await {
        Err(Error::Unfilled {
            from_seq: 3,
            to_seq: 4,
            live_seq: 5,
        }) => {}
        other => panic!("expected seqs 3..=4 unfilled, got {other:?}"),
    }
    assert_eq!(next_seqs(&mut stream, 2).await, [5, 6]);
    assert_quiet(&mut stream, "after the unfilled gap").await;
}

#[tokio::test]
async fn gap_fills_read_no_further_than_the_live_envelope() {
    let nats = Nats::start().await;
    let log = FakeLog::holding(story(STORY_LEN));
    let stage_1 = Interest::Room(room_id("stage-1"));
    let mut stream = nats.subscribe(&log, stage_1.clone(), None).await;
    nats.publish([1, 20], false).await;
    let want = seqs_of(&stage_1, 1..=20);
    assert_eq!(next_seqs(&mut stream, want.len()).await, want);
    assert_eq!(log.reads(), vec![(2, 18)]);
}

#[tokio::test]
async fn after_a_reconnect_the_stream_catches_up_from_the_log() {
    let mut nats = Nats::start().await;
    let bob = Interest::Candidate(user("bob"));
    let bobs = seqs_of(&bob, 1..=STORY_LEN);
    assert!(bobs.len() >= 4, "the story invites bob: {bobs:?}");
    let log = FakeLog::holding(story(bobs[0]));
    let mut stream = nats.subscribe(&log, bob.clone(), None).await;
    nats.publish([bobs[0]], true).await;
    assert_eq!(next_seq(&mut stream).await, bobs[0]);

    // NATS goes away; meanwhile the engine commits bob's next invitation event, which no one receives live.
    // Nothing is published after the outage, yet the stream finds the event.
    nats.server.kill();
    for seq in bobs[0] + 1..=bobs[1] {
        log.append(story_envelope(seq));
    }
    nats.server.restart();
    assert_eq!(next_seq(&mut stream).await, bobs[1]);
    assert_eq!(stream.stats().reconnects, 1);
    // The catch-up reads on to the log's end; then the stream is live again.
    assert_quiet(&mut stream, "after the first reconnect").await;

    // A second outage, and this time the relay publishes again as soon as NATS is back, while the stream
    // waits: the events of the outage still come first, in order, and the live copy is a duplicate.
    let connects = (connects(&nats.publisher), connects(&nats.client));
    nats.server.kill();
    for seq in bobs[1] + 1..=STORY_LEN {
        log.append(story_envelope(seq));
    }
    let last = *bobs.last().unwrap();
    let relay = async {
        nats.server.restart();
        wait_reconnected(&nats.publisher, connects.0).await;
        wait_reconnected(&nats.client, connects.1).await;
        confirm_subscriptions(&nats.client).await;
        nats.publish([last], true).await;
    };
    let (first, ()) = tokio::join!(next_seq(&mut stream), relay);
    let mut got = vec![first];
    got.extend(next_seqs(&mut stream, bobs[3..].len()).await);
    assert_eq!(got, bobs[2..]);
    assert_quiet(&mut stream, "after the second reconnect").await;
    assert_eq!(stream.stats().reconnects, 2);
    assert_eq!(stream.stats().duplicates, 1);
}

fn connects(client: &Client) -> u64 {
    client.statistics().connects.load(Ordering::Relaxed)
}

/// Waits until `client` has connected again after `before` connects. (`connection_state` may still say
/// connected for a moment after the server died.)
async fn wait_reconnected(client: &Client, before: u64) {
    let reconnected = async {
        while connects(client) == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(STEP, reconnected)
        .await
        .expect("reconnected in time");
}

// ---------------------------------------------------------------------------------------------------------
// NatsBackfill: the read_events request and its reply
// ---------------------------------------------------------------------------------------------------------

/// Answers `cohost.v1.query.read_events` from `events` (JSON values, so one can be of an unknown type), or
/// with `error` when set. Returns the requests it saw.
async fn serve_read_events(
    client: Client,
    events: Vec<serde_json::Value>,
    error: Option<ErrorCode>,
) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let mut service = client
        .subscribe(subject::query("read_events"))
        .await
        .unwrap();
    confirm_subscriptions(&client).await;
    tokio::spawn(async move {
        while let Some(request) = service.next().await {
            let body: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
            let from_seq = body["from_seq"].as_u64().unwrap();
            let limit = usize::try_from(body["limit"].as_u64().unwrap_or(1_000)).unwrap();
            seen.lock().unwrap().push(body);
            let reply = match error {
                Some(code) => {
                    serde_json::json!({"error": {"code": code, "message": "engine is closed"}})
                }
                None => {
                    let page: Vec<_> = events
                        .iter()
                        .filter(|event| event["seq"].as_u64().unwrap() >= from_seq)
                        .take(limit)
                        .cloned()
                        .collect();
                    serde_json::json!({"ok": {"events": page, "last_seq": events.len()}})
                }
            };
            let reply_to = request.reply.expect("a request");
            client
                .publish(reply_to, to_json(&reply).into())
                .await
                .unwrap();
        }
    });
    requests
}

#[tokio::test]
async fn nats_backfill_requests_read_events_and_skips_unknown_types() {
    let server = TestServer::start(false);
    let service = connect(&server).await;
    let client = connect(&server).await;
    let mut events: Vec<serde_json::Value> = story(12)
        .iter()
        .map(|envelope| serde_json::from_slice(&to_json(envelope)).unwrap())
        .collect();
    events[6]["type"] = "room_renamed".into();
    let requests = serve_read_events(service, events, None).await;
    let subscribe = Subscriber::new(client.clone(), Interest::All, Some(3));
    let mut stream = tokio::time::timeout(STEP, subscribe)
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    for _ in (3..=12).filter(|&seq| seq != 7) {
        got.push(next(&mut stream).await.unwrap());
    }
    let mut expected = story(12);
    expected.retain(|envelope| envelope.seq >= 3 && envelope.seq != 7);
    assert_eq!(got, expected);
    assert_quiet(&mut stream, "backfill over NATS").await;
    assert_eq!(stream.backfill().undecodable(), 1);
    let requests = requests.lock().unwrap().clone();
    assert_eq!(
        requests[0],
        serde_json::json!({"from_seq": 3, "limit": 256})
    );
    assert_eq!(
        requests[1],
        serde_json::json!({"from_seq": 13, "limit": 256})
    );
}

#[tokio::test]
async fn nats_backfill_reports_service_errors_and_missing_service() {
    let server = TestServer::start(false);
    let client = connect(&server).await;
    let backfill = NatsBackfill::new(client.clone());
    let read = tokio::time::timeout(STEP, backfill.read_events(1, 10))
        .await
        .unwrap();
    assert!(
        matches!(read, Err(BackfillError::Request(_))),
        "no responders: {read:?}"
    );

    let _requests = serve_read_events(
        connect(&server).await,
        Vec::new(),
        Some(ErrorCode::Unavailable),
    )
    .await;
    let mut stream = tokio::time::timeout(
        STEP,
        Subscriber::new(client, Interest::Candidate(user("bob")), Some(1)),
    )
    .await
    .unwrap()
    .unwrap();
    match next(&mut stream).await {
        Err(Error::Backfill(BackfillError::Refused(info))) => {
            assert_eq!(info.code, ErrorCode::Unavailable);
            assert_eq!(info.message, "engine is closed");
        }
        other => panic!("expected the service's error, got {other:?}"),
    }
}

/// Streams can be moved into spawned tasks.
#[test]
fn subscribers_and_their_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn stream_is_send<B: Backfill + 'static>(stream: &mut Subscriber<B>) {
        send(&stream.next());
    }
    let _ = stream_is_send::<NatsBackfill>;
    let _ = stream_is_send::<FakeLog>;
}
