//! Every minted token, decoded with livekit-api's own `TokenVerifier`: the grants, the identity, the room, the
//! metadata and the expiry. First straight from the `Minter`, then through `Credentials` on a real engine,
//! where a token is handed out exactly while the contract's `get_broadcaster_data` row allows it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohost_credentials::{COHOST_SOURCES, Credentials, LiveKitConfig, Minter, TOKEN_TTL_DEFAULT};
use cohost_engine::{Broadcaster, Config, Engine, Error, Options};
use cohost_proto::{
    Actor, BroadcasterData, BroadcasterRole, Command, CommandId, CreateRoom, ErrorCode,
    InvitationId, InvitationStatus, InvitationTarget, Reply, RoomId, RoomTarget, UserId,
    UserTarget,
};
use livekit_api::access_token::{Claims, TokenVerifier, VideoGrants};
use serde_json::json;

const KEY: &str = "lk-test-key";
const SECRET: &str = "lk-test-secret-of-some-length";
const URL: &str = "wss://cohost.example.livekit.cloud";

fn config(room_prefix: &str, token_ttl: Duration) -> LiveKitConfig {
    LiveKitConfig {
        url: URL.into(),
        api_key: KEY.into(),
        api_secret: SECRET.into(),
        room_prefix: room_prefix.into(),
        token_ttl,
        admin: false,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the test machine's clock is after 1970")
        .as_secs()
}

fn user(id: &str) -> UserId {
    UserId::new(id).unwrap()
}

fn room(id: &str) -> RoomId {
    RoomId::new(id).unwrap()
}

/// What a token must carry.
#[derive(Debug, Clone, Copy)]
enum Role<'a> {
    Host,
    /// A co-host, with the invitation id of the seat.
    Cohost(&'a str),
}

/// Exactly the grants the contract gives each role, and nothing else.
fn grants(role: Role, livekit_room: &str) -> VideoGrants {
    match role {
        Role::Host => VideoGrants {
            room_join: true,
            room_admin: true,
            room: livekit_room.into(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..VideoGrants::default()
        },
        Role::Cohost(_) => VideoGrants {
            room_join: true,
            room: livekit_room.into(),
            can_publish: Some(true),
            can_publish_sources: vec!["camera".into(), "microphone".into()],
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..VideoGrants::default()
        },
    }
}

/// Decodes `data` with LiveKit's verifier and checks every claim. `minted_after_secs` is the clock read just
/// before the token was minted, which bounds its `nbf` and `exp`.
fn check_token(
    data: &BroadcasterData,
    role: Role,
    identity: &str,
    livekit_room: &str,
    ttl: Duration,
    minted_after_secs: u64,
) -> Claims {
    let minted_before_secs = now_secs();
    let claims = TokenVerifier::with_api_key(KEY, SECRET)
        .verify(&data.token)
        .expect("a minted token verifies with the deployment's key and secret");
    let expected = Claims {
        exp: claims.exp,
        nbf: claims.nbf,
        iss: KEY.into(),
        sub: identity.into(),
        name: identity.into(),
        video: grants(role, livekit_room),
        metadata: claims.metadata.clone(),
        ..Claims::default()
    };
    assert_eq!(
        claims, expected,
        "identity, name, issuer and grants, and no other claim"
    );
    let metadata: serde_json::Value =
        serde_json::from_str(&claims.metadata).expect("metadata is JSON");
    let expected_metadata = match role {
        Role::Host => json!({"role": "host"}),
        Role::Cohost(invitation_id) => json!({"role": "cohost", "invitation_id": invitation_id}),
    };
    assert_eq!(metadata, expected_metadata);

    let ttl_secs = ttl.as_secs();
    let (exp, nbf) = (claims.exp as u64, claims.nbf as u64);
    assert!(
        (minted_after_secs..=minted_before_secs).contains(&nbf),
        "nbf {nbf} is the minting time"
    );
    assert!(
        (minted_after_secs + ttl_secs..=minted_before_secs + ttl_secs).contains(&exp),
        "exp {exp} is the minting time plus the TTL of {ttl_secs} s"
    );
    assert!(
        data.expires_ms.abs_diff(exp * 1_000) < 1_000,
        "the reply's expires_ms {} is the token's exp {exp}",
        data.expires_ms
    );
    assert_eq!(data.url, URL);
    let expected_role = match role {
        Role::Host => BroadcasterRole::Host,
        Role::Cohost(_) => BroadcasterRole::Cohost,
    };
    assert_eq!(data.role, expected_role);
    claims
}

#[test]
fn minted_tokens_carry_exactly_the_grants_of_their_role() {
    // (room prefix, TTL, role, room id, user): every token must decode to the role's grants, the user's
    // identity, the prefixed room, the role's metadata and an expiry of now + TTL.
    let cases = [
        ("", TOKEN_TTL_DEFAULT, Role::Host, "stage-1", "alice"),
        (
            "",
            TOKEN_TTL_DEFAULT,
            Role::Cohost("stage-1.3"),
            "stage-1",
            "bob",
        ),
        (
            "cohost-",
            Duration::from_secs(90),
            Role::Host,
            "stage-2",
            "carol",
        ),
        (
            "cohost-",
            Duration::from_secs(90),
            Role::Cohost("stage-2.17"),
            "stage-2",
            "dave_9",
        ),
        (
            "prod_",
            Duration::from_secs(3_600),
            Role::Cohost("r.1"),
            "r",
            "E-e",
        ),
    ];
    for (prefix, ttl, role, room_id, identity) in cases {
        let minter = Minter::new(config(prefix, ttl));
        let entitled = match role {
            Role::Host => Broadcaster {
                role: BroadcasterRole::Host,
                invitation_id: None,
            },
            Role::Cohost(id) => Broadcaster {
                role: BroadcasterRole::Cohost,
                invitation_id: Some(id.parse::<InvitationId>().unwrap()),
            },
        };
        let before = now_secs();
        let data = minter
            .mint(&room(room_id), &user(identity), &entitled)
            .unwrap();
        let livekit_room = format!("{prefix}{room_id}");
        check_token(&data, role, identity, &livekit_room, ttl, before);
    }
}

#[test]
fn the_default_ttl_is_ten_minutes_and_cohosts_publish_camera_and_microphone_only() {
    assert_eq!(TOKEN_TTL_DEFAULT, Duration::from_secs(600));
    assert_eq!(LiveKitConfig::dev().token_ttl, TOKEN_TTL_DEFAULT);
    assert_eq!(COHOST_SOURCES, ["camera", "microphone"]);
}

#[test]
fn a_token_verifies_only_with_the_key_and_secret_that_signed_it() {
    let minter = Minter::new(config("", TOKEN_TTL_DEFAULT));
    let host = Broadcaster {
        role: BroadcasterRole::Host,
        invitation_id: None,
    };
    let data = minter
        .mint(&room("stage-1"), &user("alice"), &host)
        .unwrap();
    assert!(
        TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&data.token)
            .is_ok()
    );
    assert!(
        TokenVerifier::with_api_key(KEY, "another-secret")
            .verify(&data.token)
            .is_err(),
        "a token signed with one secret fails verification with another"
    );
    assert!(
        TokenVerifier::with_api_key("another-key", SECRET)
            .verify(&data.token)
            .is_err(),
        "the issuer is the API key"
    );
    let other = Minter::new(LiveKitConfig {
        api_secret: "another-secret".into(),
        ..config("", TOKEN_TTL_DEFAULT)
    });
    let foreign = other.mint(&room("stage-1"), &user("alice"), &host).unwrap();
    assert!(
        TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&foreign.token)
            .is_err()
    );
}

/// A real engine in a temporary directory, with credentials on top. Room `stage-1` is hosted by alice.
struct Stage {
    _dir: tempfile::TempDir,
    credentials: Credentials,
    room_id: RoomId,
}

impl Stage {
    fn open() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(Config::new(dir.path())).unwrap();
        Self {
            _dir: dir,
            credentials: Credentials::new(engine, Minter::new(config("", TOKEN_TTL_DEFAULT))),
            room_id: room("stage-1"),
        }
    }

    async fn run(&self, who: &str, command: Command) -> Result<Reply, Error> {
        self.run_with(who, command, Options::default()).await
    }

    async fn run_with(
        &self,
        who: &str,
        command: Command,
        options: Options,
    ) -> Result<Reply, Error> {
        self.credentials
            .execute(Actor::User(user(who)), command, options)
            .await
    }

    fn data(&self, who: &str) -> Result<BroadcasterData, Error> {
        self.credentials.broadcaster_data(&self.room_id, &user(who))
    }

    fn create(&self) -> Command {
        Command::CreateRoom(CreateRoom {
            room_id: self.room_id.clone(),
            title: None,
            max_cohosts: None,
        })
    }

    fn target(&self) -> RoomTarget {
        RoomTarget {
            room_id: self.room_id.clone(),
        }
    }

    fn go_live(&self) -> Command {
        Command::GoLive(self.target())
    }

    fn stop(&self) -> Command {
        Command::StopRoom(self.target())
    }

    fn request(&self) -> Command {
        Command::RequestToJoin(self.target())
    }

    fn leave(&self) -> Command {
        Command::LeaveStage(self.target())
    }

    fn invite(&self, who: &str) -> Command {
        Command::Invite(UserTarget {
            room_id: self.room_id.clone(),
            user_id: user(who),
        })
    }

    fn remove(&self, who: &str) -> Command {
        Command::RemoveCohost(UserTarget {
            room_id: self.room_id.clone(),
            user_id: user(who),
        })
    }

    fn invitation(&self, number: u64) -> InvitationTarget {
        InvitationTarget {
            invitation_id: InvitationId::new(self.room_id.clone(), number).unwrap(),
        }
    }

    fn accept(&self, number: u64) -> Command {
        Command::AcceptInvitation(self.invitation(number))
    }

    fn reject(&self, number: u64) -> Command {
        Command::RejectInvitation(self.invitation(number))
    }

    async fn shutdown(self) {
        self.credentials.engine().shutdown().await;
    }
}

fn accepted(reply: Reply) -> cohost_proto::Accepted {
    match reply {
        Reply::Accepted(accepted) => accepted,
        other => panic!("accept replied {other:?}"),
    }
}

/// What `broadcaster_data` must give a user.
#[derive(Debug, Clone, Copy)]
enum Gets {
    Host,
    /// Co-host credentials for the seat of this invitation number.
    Cohost(u64),
    Refused(ErrorCode),
}

use Gets::Refused;
const PENDING: Gets = Refused(ErrorCode::FailedPrecondition);
const NOT_LIVE: Gets = Refused(ErrorCode::FailedPrecondition);
const NO_SEAT: Gets = Refused(ErrorCode::FailedPrecondition);
const STRANGER: Gets = Refused(ErrorCode::PermissionDenied);

/// Steps (who, what) and what `broadcaster_data` gives whom after each.
type Script<'a> = [(&'a str, Command, &'a [(&'a str, Gets)])];

/// Runs each step and checks what `broadcaster_data` gives the listed users afterwards. `zed`, who never
/// takes part, is checked after every step too.
async fn check(stage: &Stage, script: &Script<'_>) {
    for (step, (who, command, expect)) in script.iter().enumerate() {
        stage
            .run(who, command.clone())
            .await
            .unwrap_or_else(|e| panic!("step {step}: {who} {command:?} failed: {e}"));
        for (asked, gets) in expect.iter().chain(&[("zed", STRANGER)]) {
            let before = now_secs();
            let got = stage.data(asked);
            match (gets, got) {
                (Gets::Host, Ok(data)) => {
                    check_token(
                        &data,
                        Role::Host,
                        asked,
                        "stage-1",
                        TOKEN_TTL_DEFAULT,
                        before,
                    );
                }
                (Gets::Cohost(number), Ok(data)) => {
                    let id = format!("stage-1.{number}");
                    let role = Role::Cohost(&id);
                    check_token(&data, role, asked, "stage-1", TOKEN_TTL_DEFAULT, before);
                }
                (Refused(code), Err(error)) => {
                    assert_eq!(error.code(), *code, "step {step}: {asked}: {error}");
                }
                (gets, got) => panic!("step {step}: {asked} should get {gets:?}, got {got:?}"),
            }
        }
    }
}

#[tokio::test]
async fn broadcaster_data_is_given_exactly_while_the_seat_is_held_in_a_live_room() {
    let stage = Stage::open();
    let s = &stage;
    let script: &Script = &[
        (
            "alice",
            s.create(),
            &[("alice", NOT_LIVE), ("bob", STRANGER)],
        ),
        (
            "alice",
            s.go_live(),
            &[("alice", Gets::Host), ("bob", STRANGER)],
        ),
        (
            "alice",
            s.invite("bob"),
            &[("bob", PENDING), ("alice", Gets::Host)],
        ),
        ("bob", s.reject(1), &[("bob", NO_SEAT)]),
        ("alice", s.invite("bob"), &[("bob", PENDING)]),
        ("bob", s.accept(2), &[("bob", Gets::Cohost(2))]),
        (
            "alice",
            s.remove("bob"),
            &[("bob", NO_SEAT), ("alice", Gets::Host)],
        ),
        ("bob", s.request(), &[("bob", PENDING)]),
        ("alice", s.accept(3), &[("bob", Gets::Cohost(3))]),
        ("bob", s.leave(), &[("bob", NO_SEAT)]),
        ("alice", s.invite("carol"), &[("carol", PENDING)]),
        (
            "carol",
            s.accept(4),
            &[("carol", Gets::Cohost(4)), ("bob", NO_SEAT)],
        ),
        (
            "alice",
            s.stop(),
            &[("alice", NOT_LIVE), ("carol", NOT_LIVE), ("bob", NO_SEAT)],
        ),
    ];
    check(s, script).await;
    let unknown = stage
        .credentials
        .broadcaster_data(&room("no-such-room"), &user("alice"))
        .unwrap_err();
    assert_eq!(unknown.code(), ErrorCode::NotFound);
    stage.shutdown().await;
}

#[tokio::test]
async fn a_seat_taken_in_an_idle_room_gets_credentials_once_the_room_is_live() {
    let stage = Stage::open();
    let s = &stage;
    let script: &Script = &[
        ("alice", s.create(), &[("alice", NOT_LIVE)]),
        ("alice", s.invite("bob"), &[("bob", PENDING)]),
        (
            "bob",
            s.accept(1),
            &[("bob", NOT_LIVE), ("alice", NOT_LIVE)],
        ),
        (
            "alice",
            s.go_live(),
            &[("bob", Gets::Cohost(1)), ("alice", Gets::Host)],
        ),
        ("alice", s.stop(), &[("bob", NOT_LIVE), ("alice", NOT_LIVE)]),
    ];
    check(s, script).await;
    stage.shutdown().await;
}

#[tokio::test]
async fn accepting_an_invitation_in_a_live_room_returns_the_new_cohosts_credentials() {
    let stage = Stage::open();
    stage.run("alice", stage.create()).await.unwrap();
    stage.run("alice", stage.go_live()).await.unwrap();
    stage.run("alice", stage.invite("bob")).await.unwrap();
    let before = now_secs();
    let reply = accepted(stage.run("bob", stage.accept(1)).await.unwrap());
    assert_eq!(reply.invitation.status, InvitationStatus::Approved);
    assert_eq!(reply.invitation.user_id, user("bob"));
    let data = reply
        .broadcaster
        .expect("the invited candidate gets credentials with the accept");
    check_token(
        &data,
        Role::Cohost("stage-1.1"),
        "bob",
        "stage-1",
        TOKEN_TTL_DEFAULT,
        before,
    );
    stage.shutdown().await;
}

#[tokio::test]
async fn the_host_accepting_a_request_gets_no_credentials_in_the_reply() {
    let stage = Stage::open();
    stage.run("alice", stage.create()).await.unwrap();
    stage.run("alice", stage.go_live()).await.unwrap();
    stage.run("bob", stage.request()).await.unwrap();
    let reply = accepted(stage.run("alice", stage.accept(1)).await.unwrap());
    assert_eq!(reply.invitation.status, InvitationStatus::Approved);
    assert_eq!(
        reply.broadcaster, None,
        "the token is the new co-host's, never the host's reply"
    );
    // The requester fetches them.
    let before = now_secs();
    let data = stage.data("bob").unwrap();
    check_token(
        &data,
        Role::Cohost("stage-1.1"),
        "bob",
        "stage-1",
        TOKEN_TTL_DEFAULT,
        before,
    );
    stage.shutdown().await;
}

#[tokio::test]
async fn a_retried_accept_mints_again_while_seated_and_never_after_removal() {
    let stage = Stage::open();
    stage.run("alice", stage.create()).await.unwrap();
    stage.run("alice", stage.go_live()).await.unwrap();
    stage.run("alice", stage.invite("bob")).await.unwrap();
    let once = Options {
        command_id: Some(CommandId::new("accept-1").unwrap()),
        expected_version: None,
    };
    let first = accepted(
        stage
            .run_with("bob", stage.accept(1), once.clone())
            .await
            .unwrap(),
    );
    assert!(first.broadcaster.is_some());
    let seq = stage.credentials.engine().last_seq();

    let before = now_secs();
    let retry = accepted(
        stage
            .run_with("bob", stage.accept(1), once.clone())
            .await
            .unwrap(),
    );
    assert_eq!(retry.invitation, first.invitation);
    let data = retry
        .broadcaster
        .expect("a retry while seated mints fresh credentials");
    check_token(
        &data,
        Role::Cohost("stage-1.1"),
        "bob",
        "stage-1",
        TOKEN_TTL_DEFAULT,
        before,
    );
    assert_eq!(
        stage.credentials.engine().last_seq(),
        seq,
        "a retry appends nothing"
    );

    stage.run("alice", stage.remove("bob")).await.unwrap();
    let seq = stage.credentials.engine().last_seq();
    let late = accepted(stage.run_with("bob", stage.accept(1), once).await.unwrap());
    assert_eq!(
        late.invitation, first.invitation,
        "the retry gets the first reply's invitation"
    );
    assert_eq!(late.broadcaster, None, "a removed co-host gets no token");
    assert_eq!(stage.credentials.engine().last_seq(), seq);
    assert_eq!(
        stage.data("bob").unwrap_err().code(),
        ErrorCode::FailedPrecondition
    );
    stage.shutdown().await;
}
