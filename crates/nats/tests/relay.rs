//! The outbox relay against a real nats-server: the seed flow reaches plain subscribers with the contract's
//! subjects and headers; JetStream holds every event exactly once through a NATS outage and an engine restart.

mod support;

use std::time::Duration;

use async_nats::jetstream;
use cohost_engine::Engine;
use cohost_nats::relay::{Mode, Relay, RelayConfig};
use cohost_nats::test_server::TestServer;
use cohost_proto::codec::decode_envelope;
use cohost_proto::subject::header;
use cohost_proto::{Command, Encoding, Envelope};
use futures::StreamExt;
use support::{
    assert_exactly_once, create, eventually, invitation, open_engine, read_all, room_target, run,
    seed_flow, start_relay, stream_contents, user_target,
};

/// A private nats-server, a client of it, and an engine on a temporary directory with its relay to that client.
struct Stack {
    server: TestServer,
    client: async_nats::Client,
    dir: tempfile::TempDir,
    engine: Engine,
    relay: Relay,
}

impl Stack {
    /// Subscribes to `subjects` before the relay starts, so no message is missed.
    async fn start(
        jetstream: bool,
        subjects: &[&'static str],
        config: RelayConfig,
    ) -> (Self, Vec<async_nats::Subscriber>) {
        let server = TestServer::start(jetstream);
        let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        let client = options.connect(server.url()).await.unwrap();
        let mut subscribers = Vec::new();
        for &subject in subjects {
            subscribers.push(client.subscribe(subject).await.unwrap());
        }
        client.flush().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(dir.path());
        let relay = start_relay(&engine, &client, config).await;
        let stack = Self {
            server,
            client,
            dir,
            engine,
            relay,
        };
        (stack, subscribers)
    }

    async fn stop(self) {
        self.relay.stop().await;
        self.engine.shutdown().await;
    }
}

async fn receive(subscriber: &mut async_nats::Subscriber, n: usize) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
            .await
            .expect("a message in time")
            .expect("subscription open");
        out.push(message);
    }
    out
}

fn decode(message: &async_nats::Message) -> Envelope {
    let headers = message.headers.as_ref().expect("headers");
    let encoding =
        Encoding::from_content_type(headers.get(header::CONTENT_TYPE).unwrap().as_str()).unwrap();
    decode_envelope(encoding, &message.payload).unwrap()
}

fn header_of(message: &async_nats::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .unwrap()
        .get(name)
        .unwrap_or_else(|| panic!("{name} header"))
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flow_reaches_room_and_user_subscribers_in_order() {
    for encoding in [Encoding::Json, Encoding::Postcard] {
        let config = RelayConfig {
            encoding,
            ..RelayConfig::new(Mode::Core)
        };
        let subjects = [
            "cohost.v1.room.>",
            "cohost.v1.user.bob",
            "cohost.v1.user.carol",
        ];
        let (stack, subscribers) = Stack::start(false, &subjects, config).await;
        let [mut rooms, mut bob, mut carol] = <[_; 3]>::try_from(subscribers).unwrap();
        let engine = &stack.engine;
        seed_flow(engine, "stage-1").await;

        let room_messages = receive(&mut rooms, 10).await;
        let log = engine.read_events(1, 100).unwrap();
        assert_eq!(
            log.len(),
            10,
            "one event per command; stop found nothing pending"
        );
        for (message, expected) in room_messages.iter().zip(&log) {
            assert_eq!(message.subject.as_str(), "cohost.v1.room.stage-1");
            assert_eq!(&decode(message), expected);
            assert_eq!(
                header_of(message, header::MSG_ID),
                format!("stage-1:{}", expected.version)
            );
            assert_eq!(header_of(message, header::SEQ), expected.seq.to_string());
            assert_eq!(
                header_of(message, header::VERSION),
                expected.version.to_string()
            );
            assert_eq!(
                header_of(message, header::CONTENT_TYPE),
                encoding.content_type()
            );
        }
        let bobs: Vec<String> = receive(&mut bob, 2)
            .await
            .iter()
            .map(|m| decode(m).event.type_name().into())
            .collect();
        assert_eq!(bobs, ["invitation_created", "invitation_approved"]);
        let carols = receive(&mut carol, 2).await;
        assert_eq!(header_of(&carols[0], header::MSG_ID), "stage-1:5:user");
        assert_eq!(decode(&carols[1]).event.type_name(), "invitation_rejected");
        // The cursor is written once the relay is idle, and never past what the server confirmed.
        eventually("the relay's cursor at 10", || {
            engine.cursor("nats").unwrap() == 10
        })
        .await;
        assert_eq!(stack.relay.lag(), 0);
        stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_holds_every_event_once_through_an_outage_and_an_engine_restart() {
    let (stack, _) = Stack::start(true, &[], RelayConfig::new(Mode::JetStream)).await;
    let Stack {
        mut server,
        client,
        dir,
        mut engine,
        mut relay,
    } = stack;
    // Each room has a host and a guest of its own: the quotas across rooms (open rooms per host, pending offers
    // per candidate) stay out of the way.
    let rooms = 50;
    let (host, guest) = (|r| format!("host-{r}"), |r| format!("guest-{r}"));
    for r in 0..rooms {
        let room = format!("room-{r}");
        let live = Command::GoLive(room_target(&room));
        run(
            &engine,
            [(&*host(r), create(&room, None)), (&*host(r), live)],
        )
        .await;
    }
    // 5,000 commands in all: invite and cancel in a loop; NATS dies a third of the way, returns at two thirds.
    let total = 5_000 - 2 * rooms;
    for i in 0..total {
        if i == total / 3 {
            server.kill();
        }
        if i == 2 * total / 3 {
            assert!(relay.lag() > 0, "while NATS is down the relay lags");
            server.restart();
        }
        let r = i % rooms;
        let round = (i / rooms) as u64;
        let room = format!("room-{r}");
        let command = if round.is_multiple_of(2) {
            Command::Invite(user_target(&room, &guest(r)).into())
        } else {
            Command::CancelInvitation(invitation(&room, round / 2 + 1))
        };
        run(&engine, [(&*host(r), command)]).await;
        if i == 5 * total / 6 {
            // The engine goes away while the relay is catching up, and comes back.
            relay.stop().await;
            engine.shutdown().await;
            engine = open_engine(dir.path());
            relay = start_relay(&engine, &client, RelayConfig::new(Mode::JetStream)).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while relay.lag() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "relay did not catch up: lag {}",
            relay.lag()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let log = read_all(&engine).await;
    assert_eq!(log.len(), 5_000);
    assert_exactly_once(&stream_contents(&server.url()).await, &log);
    relay.stop().await;

    // A restart of the relay long after the duplicate window would have passed republishes nothing: it resumes
    // from the stream's last message even when its own cursor is behind.
    engine.set_cursor("jetstream", 10).unwrap();
    let relay = start_relay(&engine, &client, RelayConfig::new(Mode::JetStream)).await;
    // A barrier: one more event. The relay publishes in seq order, so once it is confirmed, anything the
    // relay would have republished from its stale cursor would have gone out before it.
    run(&engine, [("late-host", create("after-restart", None))]).await;
    eventually("the barrier event confirmed", || relay.lag() == 0).await;
    let log = read_all(&engine).await;
    assert_eq!(log.len(), 5_001);
    assert_exactly_once(&stream_contents(&server.url()).await, &log);
    assert_eq!(
        relay.published(),
        1,
        "resumed after the stream's last message, not from its own stale cursor"
    );
    eventually("the cursor at the barrier", || {
        engine.cursor("jetstream").unwrap() == 5_001
    })
    .await;
    relay.stop().await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_captures_event_subjects_only() {
    let (stack, _) = Stack::start(true, &[], RelayConfig::new(Mode::JetStream)).await;
    let client = &stack.client;
    seed_flow(&stack.engine, "stage-1").await;
    eventually("every event in the stream", || stack.relay.lag() == 0).await;
    let context = jetstream::new(client.clone());
    let mut stream = context.get_stream("COHOST").await.unwrap();
    let subjects = stream.info().await.unwrap().config.subjects.clone();
    assert_eq!(subjects, ["cohost.v1.room.>", "cohost.v1.user.>"]);
    client
        .publish("cohost.v1.cmd.invite", "{}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let contents = stream_contents(&stack.server.url()).await;
    assert!(
        contents
            .iter()
            .all(|(subject, _, _)| subject.starts_with("cohost.v1.room.")
                || subject.starts_with("cohost.v1.user."))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_published_message_carries_a_token() {
    let (stack, mut subscribers) = Stack::start(false, &[">"], RelayConfig::new(Mode::Core)).await;
    let mut everything = subscribers.remove(0);
    seed_flow(&stack.engine, "stage-1").await;
    // 10 room messages and 6 user messages (bob, carol and dave: created, then answered).
    let mut messages = Vec::new();
    while messages.len() < 16 {
        // The relay's round trips to the server are on _INBOX subjects; only events count here.
        let message = receive(&mut everything, 1).await.remove(0);
        if message.subject.starts_with("cohost.v1.") {
            messages.push(message);
        }
    }
    for message in &messages {
        let text = String::from_utf8_lossy(&message.payload).to_lowercase();
        assert!(
            !text.contains("token") && !text.contains("eyj"),
            "{}: {text}",
            message.subject
        );
        assert!(!text.contains("broadcaster"), "{}: {text}", message.subject);
    }
    stack.stop().await;
}
