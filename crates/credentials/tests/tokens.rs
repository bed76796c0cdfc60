//! Every minted token, decoded with livekit-api's own `TokenVerifier`: the grants, the identity, the room, the
//! metadata and the expiry. First straight from the `Minter`, then through `Credentials` on a real engine,
//! where a token is handed out exactly while the contract's `get_broadcaster_data` row allows it.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohost_credentials::{COHOST_SOURCES, Credentials, LiveKitConfig, Minter, TOKEN_TTL_DEFAULT};
use cohost_engine::{Broadcaster, Config, Engine, Error, Options};
use cohost_proto::{
    BroadcasterData, BroadcasterRole, Command, CommandId, ErrorCode, InvitationId,
    InvitationStatus, Reply, RoomId,
};
use livekit_api::access_token::{Claims, TokenVerifier, VideoGrants};
use serde_json::json;
use support::{
    ROOM, accept, actor, create, go_live, invite, leave, reject, remove, request, stop, user,
};

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
    let default = TOKEN_TTL_DEFAULT.as_secs();
    let cases = [
        ("", default, Role::Host, "stage-1", "alice"),
        ("", default, Role::Cohost("stage-1.3"), "stage-1", "bob"),
        ("cohost-", 90, Role::Host, "stage-2", "carol"),
        (
            "cohost-",
            90,
            Role::Cohost("stage-2.17"),
            "stage-2",
            "dave_9",
        ),
        ("prod_", 3_600, Role::Cohost("r.1"), "r", "E-e"),
    ];
    for (prefix, ttl_secs, role, room_id, identity) in cases {
        let ttl = Duration::from_secs(ttl_secs);
        let minter = Minter::new(config(prefix, ttl));
        let entitled = match role {
            Role::Host => Broadcaster {
                role: BroadcasterRole::Host,
                invitation_id: None,
                audio: true,
                video: true,
            },
            Role::Cohost(id) => Broadcaster {
                role: BroadcasterRole::Cohost,
                invitation_id: Some(id.parse::<InvitationId>().unwrap()),
                audio: true,
                video: true,
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
fn a_cohost_token_carries_only_the_sources_the_seat_may_publish() {
    let minter = Minter::new(config("", TOKEN_TTL_DEFAULT));
    let cases = [
        ((true, true), Some(true), vec!["camera", "microphone"]),
        ((false, true), Some(true), vec!["camera"]),
        ((true, false), Some(true), vec!["microphone"]),
        // No sources at all would read as any source: publishing is off instead.
        ((false, false), Some(false), vec![]),
    ];
    for ((audio, video), can_publish, sources) in cases {
        let entitled = Broadcaster {
            role: BroadcasterRole::Cohost,
            invitation_id: Some("stage-1.1".parse::<InvitationId>().unwrap()),
            audio,
            video,
        };
        let data = minter
            .mint(&room("stage-1"), &user("bob"), &entitled)
            .unwrap();
        let claims = TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&data.token)
            .unwrap();
        assert_eq!(
            claims.video.can_publish, can_publish,
            "audio {audio}, video {video}"
        );
        assert_eq!(
            claims.video.can_publish_sources, sources,
            "audio {audio}, video {video}"
        );
        assert!(claims.video.room_join && claims.video.can_subscribe == Some(true));
    }
}

#[test]
fn a_token_verifies_only_with_the_key_and_secret_that_signed_it() {
    let minter = Minter::new(config("", TOKEN_TTL_DEFAULT));
    let host = Broadcaster {
        role: BroadcasterRole::Host,
        invitation_id: None,
        audio: true,
        video: true,
    };
    let data = minter
        .mint(&room("stage-1"), &user("alice"), &host)
        .unwrap();
    let verifies = |key, secret, token: &str| {
        TokenVerifier::with_api_key(key, secret)
            .verify(token)
            .is_ok()
    };
    assert!(verifies(KEY, SECRET, &data.token));
    assert!(
        !verifies(KEY, "another-secret", &data.token),
        "a token signed with one secret fails verification with another"
    );
    assert!(
        !verifies("another-key", SECRET, &data.token),
        "the issuer is the API key"
    );
    let other = Minter::new(LiveKitConfig {
        api_secret: "another-secret".into(),
        ..config("", TOKEN_TTL_DEFAULT)
    });
    let foreign = other.mint(&room("stage-1"), &user("alice"), &host).unwrap();
    assert!(!verifies(KEY, SECRET, &foreign.token));
}

/// A real engine in a temporary directory, with credentials on top. The scenarios play in room `ROOM`.
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
            room_id: room(ROOM),
        }
    }

    /// Room `ROOM`, hosted by alice and live.
    async fn live() -> Self {
        let stage = Self::open();
        stage.run("alice", create()).await.unwrap();
        stage.run("alice", go_live()).await.unwrap();
        stage
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
        self.credentials.execute(actor(who), command, options).await
    }

    fn data(&self, who: &str) -> Result<BroadcasterData, Error> {
        self.credentials.broadcaster_data(&self.room_id, &user(who))
    }

    fn last_seq(&self) -> u64 {
        self.credentials.engine().last_seq()
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

use Gets::{Cohost, Host, Refused};
const PENDING: Gets = Refused(ErrorCode::FailedPrecondition);
const NOT_LIVE: Gets = Refused(ErrorCode::FailedPrecondition);
const NO_SEAT: Gets = Refused(ErrorCode::FailedPrecondition);
const STRANGER: Gets = Refused(ErrorCode::PermissionDenied);

/// Steps (who, what) and what `broadcaster_data` gives whom after each.
type Script<'a> = [(&'a str, Command, &'a [(&'a str, Gets)])];

/// Checks that `data` is the token `gets` promises `who` in room `ROOM`, minted after `minted_after_secs`.
fn check_stage_token(data: &BroadcasterData, who: &str, gets: Gets, minted_after_secs: u64) {
    let invitation_id;
    let role = match gets {
        Host => Role::Host,
        Cohost(number) => {
            invitation_id = format!("{ROOM}.{number}");
            Role::Cohost(&invitation_id)
        }
        Refused(code) => panic!("{who} should be refused with {code}, got {data:?}"),
    };
    check_token(data, role, who, ROOM, TOKEN_TTL_DEFAULT, minted_after_secs);
}

/// Runs each step and checks what `broadcaster_data` gives the listed users afterwards. `zed`, who never
/// takes part, is checked after every step too.
async fn check(stage: &Stage, script: &Script<'_>) {
    for (step, (who, command, expect)) in script.iter().enumerate() {
        stage
            .run(who, command.clone())
            .await
            .unwrap_or_else(|e| panic!("step {step}: {who} {command:?} failed: {e}"));
        for &(asked, gets) in expect.iter().chain(&[("zed", STRANGER)]) {
            let before = now_secs();
            match (gets, stage.data(asked)) {
                (Refused(code), Err(error)) => {
                    assert_eq!(error.code(), code, "step {step}: {asked}: {error}");
                }
                (Host | Cohost(_), Ok(data)) => {
                    check_stage_token(&data, asked, gets, before);
                }
                (gets, got) => panic!("step {step}: {asked} should get {gets:?}, got {got:?}"),
            }
        }
    }
}

#[tokio::test]
async fn broadcaster_data_is_given_exactly_while_the_seat_is_held_in_a_live_room() {
    let stage = Stage::open();
    let script: &Script = &[
        ("alice", create(), &[("alice", NOT_LIVE), ("bob", STRANGER)]),
        ("alice", go_live(), &[("alice", Host), ("bob", STRANGER)]),
        ("alice", invite("bob"), &[("bob", PENDING), ("alice", Host)]),
        ("bob", reject(1), &[("bob", NO_SEAT)]),
        ("alice", invite("bob"), &[("bob", PENDING)]),
        ("bob", accept(2), &[("bob", Cohost(2))]),
        ("alice", remove("bob"), &[("bob", NO_SEAT), ("alice", Host)]),
        ("bob", request(), &[("bob", PENDING)]),
        ("alice", accept(3), &[("bob", Cohost(3))]),
        ("bob", leave(), &[("bob", NO_SEAT)]),
        ("alice", invite("carol"), &[("carol", PENDING)]),
        (
            "carol",
            accept(4),
            &[("carol", Cohost(4)), ("bob", NO_SEAT)],
        ),
        (
            "alice",
            stop(),
            &[("alice", NOT_LIVE), ("carol", NOT_LIVE), ("bob", NO_SEAT)],
        ),
    ];
    check(&stage, script).await;
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
    let script: &Script = &[
        ("alice", create(), &[("alice", NOT_LIVE)]),
        ("alice", invite("bob"), &[("bob", PENDING)]),
        ("bob", accept(1), &[("bob", NOT_LIVE), ("alice", NOT_LIVE)]),
        ("alice", go_live(), &[("bob", Cohost(1)), ("alice", Host)]),
        ("alice", stop(), &[("bob", NOT_LIVE), ("alice", NOT_LIVE)]),
    ];
    check(&stage, script).await;
    stage.shutdown().await;
}

#[tokio::test]
async fn accepting_an_invitation_in_a_live_room_returns_the_new_cohosts_credentials() {
    let stage = Stage::live().await;
    stage.run("alice", invite("bob")).await.unwrap();
    let before = now_secs();
    let reply = accepted(stage.run("bob", accept(1)).await.unwrap());
    assert_eq!(reply.invitation.status, InvitationStatus::Approved);
    assert_eq!(reply.invitation.user_id, user("bob"));
    let data = reply
        .broadcaster
        .expect("the invited candidate gets credentials with the accept");
    check_stage_token(&data, "bob", Cohost(1), before);
    stage.shutdown().await;
}

#[tokio::test]
async fn the_host_accepting_a_request_gets_no_credentials_in_the_reply() {
    let stage = Stage::live().await;
    stage.run("bob", request()).await.unwrap();
    let reply = accepted(stage.run("alice", accept(1)).await.unwrap());
    assert_eq!(reply.invitation.status, InvitationStatus::Approved);
    assert_eq!(
        reply.broadcaster, None,
        "the token is the new co-host's, never the host's reply"
    );
    // The requester fetches them.
    let before = now_secs();
    let data = stage.data("bob").unwrap();
    check_stage_token(&data, "bob", Cohost(1), before);
    stage.shutdown().await;
}

#[tokio::test]
async fn a_retried_accept_mints_again_while_seated_and_never_after_removal() {
    let stage = Stage::live().await;
    stage.run("alice", invite("bob")).await.unwrap();
    let once = Options {
        command_id: Some(CommandId::new("accept-1").unwrap()),
        expected_version: None,
    };
    let accept_once = async || {
        let reply = stage.run_with("bob", accept(1), once.clone()).await;
        accepted(reply.unwrap())
    };
    let first = accept_once().await;
    assert!(first.broadcaster.is_some());
    let seq = stage.last_seq();

    let before = now_secs();
    let retry = accept_once().await;
    assert_eq!(retry.invitation, first.invitation);
    let data = retry
        .broadcaster
        .expect("a retry while seated mints fresh credentials");
    check_stage_token(&data, "bob", Cohost(1), before);
    assert_eq!(stage.last_seq(), seq, "a retry appends nothing");

    stage.run("alice", remove("bob")).await.unwrap();
    let seq = stage.last_seq();
    let late = accept_once().await;
    assert_eq!(
        late.invitation, first.invitation,
        "the retry gets the first reply's invitation"
    );
    assert_eq!(late.broadcaster, None, "a removed co-host gets no token");
    assert_eq!(stage.last_seq(), seq);
    assert_eq!(
        stage.data("bob").unwrap_err().code(),
        ErrorCode::FailedPrecondition
    );
    stage.shutdown().await;
}
