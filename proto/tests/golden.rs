//! Golden vectors: the committed bytes in `proto/vectors/` pin the wire and log formats.
//!
//! Every value is built here in code. The test decodes each committed file and compares it with that value,
//! then encodes the value and compares the bytes with the file. A change to a contract type therefore fails
//! here until someone regenerates the files on purpose:
//!
//! ```text
//! COHOST_BLESS=1 cargo test -p cohost-proto --test golden
//! ```
//!
//! Regenerating a released `.postcard` vector is a format break (see "Versioning" in proto/README.md): old logs
//! would no longer decode. Add a `StoredEvent` variant instead.
//!
//! The event vectors are excerpts of one story in room `stage-1` (host alice, candidates bob and carol); their
//! `version`s are that room's, so the skipped versions are events the story has but the vectors do not show.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};

use cohost_proto::codec::{self, Encoding};
use cohost_proto::{
    Accepted, BroadcasterData, BroadcasterRole, CommandId, Envelope, ErrorBody, ErrorCode,
    ErrorInfo, Event, Invitation, InvitationId, InvitationKind, InvitationStatus, Page,
    RemovalReason, Reply, Room, RoomId, RoomStatus, Seat, ServiceReply, UserId,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// 2026-01-01T00:00:00Z: the story starts here.
const T0_MS: u64 = 1_767_225_600_000;
const TTL_MS: u64 = 300_000;
const TITLE: &str = "Friday night jam — open stage";

// ---------------------------------------------------------------------------------------------------------
// The values
// ---------------------------------------------------------------------------------------------------------

fn room_id() -> RoomId {
    RoomId::new("stage-1").unwrap()
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn invitation_id(number: u64) -> InvitationId {
    InvitationId::new(room_id(), number).unwrap()
}

fn command_id(id: &str) -> Option<CommandId> {
    Some(CommandId::new(id).unwrap())
}

/// A room without stage controls: no moderators, no locked seats, requests open.
fn room(status: RoomStatus, cohosts: Vec<Seat>, version: u64) -> Room {
    Room {
        room_id: room_id(),
        host: user("alice"),
        title: TITLE.to_owned(),
        status,
        max_cohosts: 4,
        cohosts,
        version,
        moderators: Vec::new(),
        locked_seats: Vec::new(),
        requests_open: true,
    }
}

fn seat(name: &str, number: u64, since_ms: u64, online: bool) -> Seat {
    Seat {
        user_id: user(name),
        invitation_id: invitation_id(number),
        since_ms,
        online,
        // In this story each co-host's seat has their invitation's number.
        seat: u8::try_from(number).unwrap(),
        audio: true,
        video: true,
    }
}

/// Invitation `stage-1.{number}` for `candidate`, created at `created_ms` with the default TTL.
fn invitation(
    number: u64,
    kind: InvitationKind,
    candidate: &str,
    status: InvitationStatus,
    created_ms: u64,
    updated_ms: u64,
) -> Invitation {
    Invitation {
        invitation_id: invitation_id(number),
        room_id: room_id(),
        kind,
        host: user("alice"),
        user_id: user(candidate),
        status,
        created_ms,
        updated_ms,
        expires_ms: created_ms + TTL_MS,
        // An approved invitation names the seat it took: in this story, its own number.
        seat: (status == InvitationStatus::Approved).then(|| u8::try_from(number).unwrap()),
    }
}

fn envelope(
    seq: u64,
    version: u64,
    at_ms: u64,
    actor: Option<&str>,
    command: Option<CommandId>,
    event: Event,
) -> Envelope {
    Envelope {
        seq,
        room_id: room_id(),
        version,
        at_ms,
        actor: actor.map(user),
        service: None,
        command_id: command,
        event,
    }
}

/// Bob's invite, as the story leaves it once he accepted.
fn bob_approved() -> Invitation {
    use InvitationKind::Invite;
    invitation(
        1,
        Invite,
        "bob",
        InvitationStatus::Approved,
        T0_MS + 5_000,
        T0_MS + 12_000,
    )
}

/// One event vector: file stem `NN-type` and the envelope it holds.
struct EventVector {
    number: usize,
    envelope: Envelope,
    /// Whether a `V1` record of it was released (`NN-type.postcard`); events new in `V2` have none.
    v1: bool,
    /// Whether a `V2` record of it was released (`NN-type.v2.postcard`); envelopes new in `V3` have none.
    v2: bool,
}

impl EventVector {
    fn stem(&self) -> String {
        format!("{:02}-{}", self.number, self.envelope.event.type_name())
    }
}

/// Every event vector: the first story's, then those of events new in `V2`, then those new in `V3`.
fn event_vectors() -> Vec<EventVector> {
    let mut vectors = story_vectors();
    let layouts = [
        (stage_controls_vectors(), true),
        (service_vectors(), false),
        (abandoned_vectors(), false),
    ];
    for (envelopes, v2) in layouts {
        let first = vectors.len() + 1;
        vectors.extend(
            envelopes
                .into_iter()
                .enumerate()
                .map(|(index, envelope)| EventVector {
                    number: first + index,
                    envelope,
                    v1: false,
                    v2,
                }),
        );
    }
    vectors
}

/// Events new in `V2`, from a second room, `stage-2`, hosted by alice: she appoints dave a moderator, then
/// removes him; she closes the room to requests, then opens it again; she moves erin to frank's seat (they
/// swap), locks seat 3 and unlocks it, bans mallory for an hour and lifts it, and stops erin's audio; LiveKit
/// reports erin gone, and the system removes her once the disconnect grace has passed.
fn stage_controls_vectors() -> Vec<Envelope> {
    let stage_2 = RoomId::new("stage-2").unwrap();
    let at = |seq: u64, version: u64, ms: u64, event: Event| Envelope {
        seq,
        room_id: stage_2.clone(),
        version,
        at_ms: T0_MS + ms,
        actor: Some(user("alice")),
        service: None,
        command_id: None,
        event,
    };
    vec![
        at(
            201,
            3,
            3_600_000,
            Event::ModeratorAdded {
                user_id: user("dave"),
            },
        ),
        at(
            240,
            9,
            5_400_000,
            Event::ModeratorRemoved {
                user_id: user("dave"),
            },
        ),
        at(251, 12, 6_000_000, Event::RequestsClosed {}),
        at(260, 15, 6_600_000, Event::RequestsOpened {}),
        at(
            270,
            17,
            6_700_000,
            Event::CohostMoved {
                user_id: user("erin"),
                seat: 2,
                from_seat: 1,
                swapped_with: Some(user("frank")),
            },
        ),
        at(271, 18, 6_710_000, Event::SeatLocked { seat: 3 }),
        at(280, 20, 6_800_000, Event::SeatUnlocked { seat: 3 }),
        at(
            290,
            22,
            6_900_000,
            Event::UserBanned {
                user_id: user("mallory"),
                since_ms: T0_MS + 6_900_000,
                until_ms: Some(T0_MS + 10_500_000),
            },
        ),
        at(
            300,
            24,
            7_000_000,
            Event::UserUnbanned {
                user_id: user("mallory"),
            },
        ),
        at(
            310,
            26,
            7_100_000,
            Event::CohostMediaChanged {
                user_id: user("erin"),
                audio: false,
                video: true,
            },
        ),
        // LiveKit reports erin gone (the webhook's time and session), and she stays away past the grace.
        Envelope {
            actor: None,
            ..at(
                320,
                27,
                7_200_000,
                Event::PresenceChanged {
                    user_id: user("erin"),
                    online: false,
                    stamp: Some(cohost_proto::PresenceStamp {
                        at_ms: T0_MS + 7_199_000,
                        participant_sid: "PA_erin".into(),
                    }),
                },
            )
        },
        Envelope {
            actor: None,
            ..at(
                330,
                28,
                7_260_000,
                Event::CohostRemoved {
                    user_id: user("erin"),
                    invitation_id: InvitationId::new(stage_2.clone(), 4).unwrap(),
                    reason: RemovalReason::Disconnected,
                },
            )
        },
    ]
}

/// Envelopes new in `V3`: a backend service with a service credential removes frank from `stage-2`, then stops
/// the room; the envelope names the service, and no user.
fn service_vectors() -> Vec<Envelope> {
    let stage_2 = RoomId::new("stage-2").unwrap();
    let by_service = |seq, version, ms, command, event| Envelope {
        seq,
        room_id: stage_2.clone(),
        version,
        at_ms: T0_MS + ms,
        actor: None,
        service: Some(cohost_proto::ServiceId::new("moderation-bot").unwrap()),
        command_id: command,
        event,
    };
    vec![
        by_service(
            340,
            29,
            7_300_000,
            command_id("remove-frank-1"),
            Event::CohostRemoved {
                user_id: user("frank"),
                invitation_id: InvitationId::new(stage_2.clone(), 5).unwrap(),
                reason: RemovalReason::System,
            },
        ),
        // Then it stops the room: reason `system`, the service named again.
        by_service(
            341,
            30,
            7_300_500,
            None,
            Event::RoomStopped {
                room: Room {
                    room_id: stage_2.clone(),
                    ..room(RoomStatus::Ended, vec![], 30)
                },
                reason: cohost_proto::StopReason::System,
            },
        ),
    ]
}

/// Reasons new in `V3`'s layout: the system ends `stage-3`, idle a day and never live, and `stage-4`, live
/// with its host away past the deployment's limit.
fn abandoned_vectors() -> Vec<Envelope> {
    let by_system = |seq, room_id: &str, version, ms, reason| {
        let room_id = RoomId::new(room_id).unwrap();
        Envelope {
            seq,
            room_id: room_id.clone(),
            version,
            at_ms: T0_MS + ms,
            actor: None,
            service: None,
            command_id: None,
            event: Event::RoomStopped {
                room: Room {
                    room_id,
                    ..room(RoomStatus::Ended, vec![], version)
                },
                reason,
            },
        }
    };
    use cohost_proto::StopReason::{HostAbsent, NeverLive};
    vec![
        by_system(350, "stage-3", 2, 86_400_000, NeverLive),
        by_system(351, "stage-4", 3, 86_400_500, HostAbsent),
    ]
}

/// The first story's vectors, each released as a `V1` record too.
fn story_vectors() -> Vec<EventVector> {
    use InvitationKind::{Invite, Request};
    use InvitationStatus::{Approved, Cancelled, Expired, Pending, Rejected};
    let seats = vec![
        seat("bob", 1, T0_MS + 12_000, false),
        seat("carol", 2, T0_MS + 15_000, false),
    ];
    let envelopes = vec![
        // alice creates the room.
        envelope(
            42,
            1,
            T0_MS,
            Some("alice"),
            command_id("create-stage-1"),
            Event::RoomCreated {
                room: room(RoomStatus::Idle, vec![], 1),
            },
        ),
        // alice invites bob before going live.
        envelope(
            43,
            2,
            T0_MS + 5_000,
            Some("alice"),
            command_id("7f3c2a1e-0b4d-4c8e-9a51-2d6f8e0c1b3a"),
            Event::InvitationCreated {
                invitation: invitation(1, Invite, "bob", Pending, T0_MS + 5_000, T0_MS + 5_000),
            },
        ),
        // carol raises her hand.
        envelope(
            47,
            3,
            T0_MS + 9_000,
            Some("carol"),
            None,
            Event::InvitationCreated {
                invitation: invitation(2, Request, "carol", Pending, T0_MS + 9_000, T0_MS + 9_000),
            },
        ),
        // bob accepts: his seat is taken.
        envelope(
            48,
            4,
            T0_MS + 12_000,
            Some("bob"),
            command_id("bob:accept:stage-1.1"),
            Event::InvitationApproved {
                invitation: bob_approved(),
            },
        ),
        // alice approves carol's request: the second seat.
        envelope(
            50,
            5,
            T0_MS + 15_000,
            Some("alice"),
            None,
            Event::InvitationApproved {
                invitation: invitation(
                    2,
                    Request,
                    "carol",
                    Approved,
                    T0_MS + 9_000,
                    T0_MS + 15_000,
                ),
            },
        ),
        // alice goes live with two co-hosts seated.
        envelope(
            55,
            6,
            T0_MS + 20_000,
            Some("alice"),
            command_id("go-live-stage-1"),
            Event::RoomLive {
                room: room(RoomStatus::Live, seats, 6),
            },
        ),
        // LiveKit reports bob connected.
        envelope(
            56,
            7,
            T0_MS + 21_500,
            None,
            None,
            Event::PresenceChanged {
                user_id: user("bob"),
                online: true,
                stamp: None,
            },
        ),
        // carol leaves the stage.
        envelope(
            80,
            8,
            T0_MS + 600_000,
            Some("carol"),
            command_id("carol-leave-1"),
            Event::CohostLeft {
                user_id: user("carol"),
                invitation_id: invitation_id(2),
            },
        ),
        // Version 9 invited carol again (stage-1.3); she declines.
        envelope(
            84,
            10,
            T0_MS + 615_000,
            Some("carol"),
            None,
            Event::InvitationRejected {
                invitation: invitation(
                    3,
                    Invite,
                    "carol",
                    Rejected,
                    T0_MS + 610_000,
                    T0_MS + 615_000,
                ),
            },
        ),
        // Version 11 was carol's new request (stage-1.4); she withdraws it.
        envelope(
            90,
            12,
            T0_MS + 702_000,
            Some("carol"),
            command_id("carol-cancel-4"),
            Event::InvitationCancelled {
                invitation: invitation(
                    4,
                    Request,
                    "carol",
                    Cancelled,
                    T0_MS + 700_000,
                    T0_MS + 702_000,
                ),
            },
        ),
        // Version 13 invited carol once more (stage-1.5); nobody answers and the timer expires it.
        envelope(
            97,
            14,
            T0_MS + 800_000 + TTL_MS,
            None,
            None,
            Event::InvitationExpired {
                invitation: invitation(
                    5,
                    Invite,
                    "carol",
                    Expired,
                    T0_MS + 800_000,
                    T0_MS + 800_000 + TTL_MS,
                ),
            },
        ),
        // alice removes bob from the stage.
        envelope(
            101,
            15,
            T0_MS + 1_200_000,
            Some("alice"),
            command_id("remove-bob"),
            Event::CohostRemoved {
                user_id: user("bob"),
                invitation_id: invitation_id(1),
                reason: cohost_proto::RemovalReason::Host,
            },
        ),
        // alice stops the room; no invitation was pending, so no cancellations precede it.
        envelope(
            130,
            16,
            T0_MS + 1_800_000,
            Some("alice"),
            command_id("stop-stage-1"),
            Event::RoomStopped {
                room: room(RoomStatus::Ended, vec![], 16),
                reason: cohost_proto::StopReason::Host,
            },
        ),
    ];
    envelopes
        .into_iter()
        .enumerate()
        .map(|(index, envelope)| EventVector {
            number: index + 1,
            envelope,
            v1: true,
            v2: true,
        })
        .collect()
}

/// The live room of version 6, with bob and carol seated.
fn live_room() -> Room {
    let seats = vec![
        seat("bob", 1, T0_MS + 12_000, true),
        seat("carol", 2, T0_MS + 15_000, false),
    ];
    room(RoomStatus::Live, seats, 7)
}

fn reply_room() -> Reply {
    Reply::Room(live_room())
}

fn reply_invitation() -> Reply {
    Reply::Invitation(invitation(
        1,
        InvitationKind::Invite,
        "bob",
        InvitationStatus::Pending,
        T0_MS + 5_000,
        T0_MS + 5_000,
    ))
}

fn reply_accepted() -> Reply {
    Reply::Accepted(Accepted {
        invitation: bob_approved(),
        broadcaster: Some(BroadcasterData {
            url: "wss://livekit.example.com".to_owned(),
            token: "fake-livekit-token.for-golden-vectors.not-a-jwt".to_owned(),
            role: BroadcasterRole::Cohost,
            expires_ms: T0_MS + 12_000 + 600_000,
        }),
    })
}

fn reply_page() -> Page<Invitation> {
    use InvitationKind::{Invite, Request};
    use InvitationStatus::{Approved, Pending};
    Page {
        items: vec![
            invitation(1, Invite, "bob", Approved, T0_MS + 5_000, T0_MS + 12_000),
            invitation(2, Request, "carol", Pending, T0_MS + 9_000, T0_MS + 9_000),
        ],
        next_cursor: Some("2".to_owned()),
    }
}

fn error_body() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::FailedPrecondition,
        "invitation stage-1.1 is not pending",
    )
}

fn service_reply_ok() -> ServiceReply<Reply> {
    ServiceReply::Ok(reply_invitation())
}

fn service_reply_error() -> ServiceReply<Reply> {
    ServiceReply::Error(ErrorInfo {
        code: ErrorCode::NotFound,
        message: "no room stage-9".to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

fn blessing() -> bool {
    std::env::var("COHOST_BLESS").is_ok_and(|v| v == "1")
}

/// The committed bytes of `name`; with `COHOST_BLESS=1`, writes `fresh` first.
fn committed(name: &str, fresh: &[u8]) -> Vec<u8> {
    let path = vectors_dir().join(name);
    if blessing() {
        fs::create_dir_all(vectors_dir()).unwrap();
        fs::write(&path, fresh).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden vector proto/vectors/{name} is missing or unreadable ({e}); \
             create it with `COHOST_BLESS=1 cargo test -p cohost-proto --test golden`"
        )
    })
}

fn pretty_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    text.into_bytes()
}

/// `name` decodes to `value`, and `value` encodes to `name`'s bytes.
fn check_json<T: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str, value: &T) {
    let fresh = pretty_json(value);
    let bytes = committed(name, &fresh);
    let decoded: T = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("proto/vectors/{name} no longer decodes: {e}"));
    assert_eq!(
        &decoded, value,
        "proto/vectors/{name} decodes to a different value"
    );
    assert!(
        bytes == fresh,
        "encoding changed for proto/vectors/{name}:\n--- committed\n{}\n--- now\n{}",
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&fresh),
    );
}

/// `envelope` as a `V1` record of it decodes: approvals name no seat, room events list seats unnumbered (0).
fn as_recorded_in_v1(envelope: &Envelope) -> Envelope {
    let mut envelope = envelope.clone();
    match &mut envelope.event {
        Event::InvitationApproved { invitation } => invitation.seat = None,
        Event::RoomCreated { room }
        | Event::RoomLive { room }
        | Event::RoomStopped { room, .. } => {
            room.cohosts.iter_mut().for_each(|seat| seat.seat = 0);
        }
        Event::InvitationCreated { invitation }
        | Event::InvitationRejected { invitation }
        | Event::InvitationCancelled { invitation }
        | Event::InvitationExpired { invitation } => {
            assert_eq!(invitation.seat, None, "no seat asked for in V1");
        }
        _ => {}
    }
    envelope
}

/// A released record of `layout` (never rewritten, not even when blessing) decodes to `envelope` as recorded
/// then.
fn check_released(name: &str, layout: u8, envelope: &Envelope) {
    let path = vectors_dir().join(name);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("proto/vectors/{name}: {e}"));
    check_decodes(name, &bytes, layout, envelope);
}

/// `bytes`, the record `name`, is of `layout` and decodes to `envelope`, as a record and on the wire.
fn check_decodes(name: &str, bytes: &[u8], layout: u8, envelope: &Envelope) {
    let stored = codec::decode_stored(bytes)
        .unwrap_or_else(|e| panic!("proto/vectors/{name} no longer decodes: {e}"));
    assert_eq!(stored.layout(), layout, "proto/vectors/{name}'s layout");
    assert_eq!(
        &stored.into_envelope(),
        envelope,
        "proto/vectors/{name} decodes to a different value"
    );
    let via_wire = codec::decode_envelope(Encoding::Postcard, bytes).unwrap();
    assert_eq!(&via_wire, envelope, "proto/vectors/{name} on the wire");
}

/// `name`, a record of the layout writers write (`V3`), decodes to `envelope`, which encodes to its bytes.
fn check_postcard(name: &str, envelope: &Envelope) {
    let fresh = codec::encode_stored(envelope);
    let bytes = committed(name, &fresh);
    check_decodes(name, &bytes, 3, envelope);
    assert_eq!(
        bytes, fresh,
        "encoding changed for proto/vectors/{name}: committed {bytes:02x?}, now {fresh:02x?}"
    );
    assert_eq!(
        codec::encode_envelope(Encoding::Postcard, envelope),
        fresh,
        "the wire's postcard must be the log's record"
    );
}

/// Every reply vector's file name and its pretty JSON, as built in code.
fn reply_vectors() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("reply-room.json", pretty_json(&reply_room())),
        ("reply-invitation.json", pretty_json(&reply_invitation())),
        ("reply-accepted.json", pretty_json(&reply_accepted())),
        ("reply-page.json", pretty_json(&reply_page())),
        ("error-body.json", pretty_json(&error_body())),
        ("service-reply-ok.json", pretty_json(&service_reply_ok())),
        (
            "service-reply-error.json",
            pretty_json(&service_reply_error()),
        ),
    ]
}

#[test]
fn event_vectors_decode_and_encode_exactly() {
    for vector in event_vectors() {
        let stem = vector.stem();
        check_json(&format!("{stem}.json"), &vector.envelope);
        if vector.v1 {
            let recorded = as_recorded_in_v1(&vector.envelope);
            check_released(&format!("{stem}.postcard"), 1, &recorded);
        }
        if vector.v2 {
            check_released(&format!("{stem}.v2.postcard"), 2, &vector.envelope);
        }
        check_postcard(&format!("{stem}.v3.postcard"), &vector.envelope);
        assert_eq!(
            codec::encode_envelope(Encoding::Json, &vector.envelope),
            serde_json::to_vec(&vector.envelope).unwrap(),
            "{stem}: the wire's JSON is compact serde_json"
        );
    }
}

#[test]
fn reply_vectors_decode_and_encode_exactly() {
    check_json("reply-room.json", &reply_room());
    check_json("reply-invitation.json", &reply_invitation());
    check_json("reply-accepted.json", &reply_accepted());
    check_json("reply-page.json", &reply_page());
    check_json("error-body.json", &error_body());
    check_json("service-reply-ok.json", &service_reply_ok());
    check_json("service-reply-error.json", &service_reply_error());
}

#[test]
fn every_event_type_has_a_vector() {
    let covered: BTreeSet<&str> = event_vectors()
        .iter()
        .map(|v| v.envelope.event.type_name())
        .collect();
    let expected: BTreeSet<&str> = Event::TYPES.into_iter().collect();
    assert_eq!(
        covered, expected,
        "add a golden vector for every Event variant"
    );
}

#[test]
fn the_vectors_cover_the_contract_cases() {
    let vectors = story_vectors();
    let envelopes: Vec<&Envelope> = vectors.iter().map(|v| &v.envelope).collect();
    let invitations: Vec<&Invitation> = envelopes
        .iter()
        .filter_map(|e| e.event.invitation())
        .collect();
    let statuses: BTreeSet<String> = invitations
        .iter()
        .map(|i| format!("{:?}", i.status))
        .collect();
    assert_eq!(statuses.len(), 5, "every InvitationStatus: {statuses:?}");
    let kinds: BTreeSet<String> = invitations
        .iter()
        .map(|i| format!("{:?}", i.kind))
        .collect();
    assert_eq!(kinds.len(), 2, "both invitation kinds: {kinds:?}");
    assert!(envelopes.iter().any(|e| e.actor.is_none()));
    assert!(envelopes.iter().any(|e| e.actor.is_some()));
    assert!(envelopes.iter().any(|e| e.command_id.is_none()));
    assert!(envelopes.iter().any(|e| e.command_id.is_some()));
    assert!(
        envelopes
            .iter()
            .filter_map(|e| e.event.room())
            .any(|room| room.cohosts.len() == 2)
    );
    let seqs: Vec<u64> = envelopes.iter().map(|e| e.seq).collect();
    let versions: Vec<u64> = envelopes.iter().map(|e| e.version).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq increases");
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "version increases"
    );
}

/// The postcard variant index is the position in `Event::TYPES`: the stored order is the listed order.
#[test]
fn postcard_variant_index_is_the_position_in_types() {
    for vector in event_vectors() {
        let event = &vector.envelope.event;
        let bytes = codec::to_postcard(event);
        let index = Event::TYPES
            .iter()
            .position(|t| *t == event.type_name())
            .unwrap();
        assert_eq!(usize::from(bytes[0]), index, "{}", event.type_name());
        let stored = codec::encode_stored(&vector.envelope);
        assert_eq!(stored[0], 2, "StoredEvent::V3 is variant 2");
    }
}

/// The envelope's own keys in JSON; the payload's sit beside them.
const ENVELOPE_KEYS: [&str; 8] = [
    "seq",
    "room_id",
    "version",
    "event_id",
    "at_ms",
    "actor",
    "command_id",
    "type",
];

#[test]
fn envelope_json_has_the_contract_shape() {
    let vector = event_vectors()
        .into_iter()
        .find(|v| v.envelope.version == 3)
        .unwrap();
    let value: serde_json::Value = serde_json::to_value(&vector.envelope).unwrap();
    let object = value.as_object().unwrap();
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = ENVELOPE_KEYS.into_iter().chain(["invitation"]).collect();
    assert_eq!(keys, expected);
    assert_eq!(object["type"], "invitation_created");
    assert_eq!(object["event_id"], "stage-1:3");
    assert_eq!(object["room_id"], "stage-1");
    assert_eq!(object["seq"], 47);
    assert_eq!(object["version"], 3);
    assert_eq!(object["actor"], "carol");
    assert_eq!(object["command_id"], serde_json::Value::Null);
    let invitation = &object["invitation"];
    assert_eq!(invitation["invitation_id"], "stage-1.2");
    assert_eq!(invitation["kind"], "request");
    assert_eq!(invitation["status"], "pending");

    // The pretty vector keeps the contract's key order: envelope fields, then `type`, then the payload.
    let text = String::from_utf8(pretty_json(&vector.envelope)).unwrap();
    let order = [
        "\"seq\"",
        "\"room_id\"",
        "\"version\"",
        "\"event_id\"",
        "\"at_ms\"",
        "\"actor\"",
        "\"command_id\"",
        "\"type\"",
        "\"invitation\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn every_type_tag_is_snake_case_and_payload_keys_are_the_contracts() {
    for vector in event_vectors() {
        let value = serde_json::to_value(&vector.envelope).unwrap();
        let tag = value["type"].as_str().unwrap();
        assert_eq!(tag, vector.envelope.event.type_name());
        assert!(
            tag.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{tag}"
        );
        let payload: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| !ENVELOPE_KEYS.contains(k) && *k != "service")
            .collect();
        // `service` is the envelope's too, present only when a service caused the event.
        match &vector.envelope.service {
            Some(service) => assert_eq!(value["service"], service.as_str()),
            None => assert!(value.get("service").is_none(), "no service key unless set"),
        }
        let expected: &[&str] = match tag {
            "room_created" | "room_live" => &["room"],
            "room_stopped" => &["reason", "room"],
            "cohost_removed" => &["invitation_id", "reason", "user_id"],
            "cohost_left" => &["invitation_id", "user_id"],
            "presence_changed" => &["online", "stamp", "user_id"],
            "moderator_added" | "moderator_removed" => &["user_id"],
            "requests_opened" | "requests_closed" => &[],
            "cohost_moved" => &["from_seat", "seat", "swapped_with", "user_id"],
            "seat_locked" | "seat_unlocked" => &["seat"],
            "user_banned" => &["since_ms", "until_ms", "user_id"],
            "user_unbanned" => &["user_id"],
            "cohost_media_changed" => &["audio", "user_id", "video"],
            _ => &["invitation"],
        };
        assert_eq!(payload.into_iter().collect::<Vec<_>>(), expected, "{tag}");
        let actor = &value["actor"];
        match &vector.envelope.actor {
            Some(user) => assert_eq!(actor, user.as_str()),
            None => assert!(actor.is_null(), "a system event's actor is null"),
        }
    }
}

/// Consumers must ignore unknown envelope fields; the decoder does.
#[test]
fn unknown_envelope_fields_are_ignored() {
    let envelope = event_vectors().remove(0).envelope;
    let mut value = serde_json::to_value(&envelope).unwrap();
    value["added_in_a_later_release"] = serde_json::json!({"x": 1});
    let decoded: Envelope = serde_json::from_value(value).unwrap();
    assert_eq!(decoded, envelope);
}

#[test]
fn a_mismatched_event_id_is_refused() {
    let envelope = event_vectors().remove(0).envelope;
    let mut value = serde_json::to_value(&envelope).unwrap();
    value["event_id"] = "stage-1:2".into();
    let err = serde_json::from_value::<Envelope>(value).unwrap_err();
    assert!(err.to_string().contains("event_id"), "{err}");
}

/// proto/README.md shows every vector's JSON verbatim, so the spec cannot drift from the bytes.
#[test]
fn the_readme_quotes_every_json_vector() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = fs::read_to_string(&readme_path).expect("proto/README.md exists");
    let vectors = event_vectors()
        .into_iter()
        .map(|v| (format!("{}.json", v.stem()), pretty_json(&v.envelope)))
        .chain(
            reply_vectors()
                .into_iter()
                .map(|(name, json)| (name.to_owned(), json)),
        );
    // The vectors equal these bytes (checked above), so the README is compared with the values in code.
    for (name, json) in vectors {
        let block = format!("```json\n{}```", String::from_utf8(json).unwrap());
        assert!(
            readme.contains(&block),
            "proto/README.md must quote proto/vectors/{name} verbatim in a ```json block"
        );
    }
}

/// Every file in proto/vectors belongs to a check above: nothing stale is left behind.
#[test]
fn no_stray_files_in_vectors() {
    let mut expected: BTreeSet<String> = reply_vectors()
        .into_iter()
        .map(|(name, _)| name.to_owned())
        .collect();
    for vector in event_vectors() {
        expected.insert(format!("{}.json", vector.stem()));
        if vector.v1 {
            expected.insert(format!("{}.postcard", vector.stem()));
        }
        if vector.v2 {
            expected.insert(format!("{}.v2.postcard", vector.stem()));
        }
        expected.insert(format!("{}.v3.postcard", vector.stem()));
    }
    let Ok(entries) = fs::read_dir(vectors_dir()) else {
        panic!("proto/vectors is missing; run with COHOST_BLESS=1 once");
    };
    let found: BTreeSet<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let stray: Vec<&String> = found.difference(&expected).collect();
    assert!(stray.is_empty(), "files no test checks: {stray:?}");
}
