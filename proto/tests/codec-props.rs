//! Property tests of the codecs: every valid envelope round-trips through JSON and postcard, no input makes a
//! decoder panic, a torn postcard record never decodes, and invalid ids are refused inside otherwise valid JSON.

use cohost_proto::codec::{self, Encoding};
use cohost_proto::{
    Command, CommandId, Envelope, Event, Invitation, InvitationId, InvitationKind,
    InvitationStatus, PresenceStamp, RemovalReason, Room, RoomId, RoomStatus, Seat, ServiceId,
    StopReason, StoredEvent, UserId,
};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------------------

/// A valid room or user id: 1 to 64 characters of `[A-Za-z0-9_-]`.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn room_id() -> impl Strategy<Value = RoomId> {
    name().prop_map(|s| RoomId::new(&s).unwrap())
}

fn user_id() -> impl Strategy<Value = UserId> {
    name().prop_map(|s| UserId::new(&s).unwrap())
}

/// 1 to 64 printable ASCII characters, no space.
fn command_id() -> impl Strategy<Value = CommandId> {
    "[!-~]{1,64}".prop_map(|s| CommandId::new(&s).unwrap())
}

fn invitation_id() -> impl Strategy<Value = InvitationId> {
    (room_id(), 1..=u64::MAX).prop_map(|(room, n)| InvitationId::new(room, n).unwrap())
}

/// Any text up to the title limit, control and non-ASCII characters included.
fn title() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=200).prop_map(String::from_iter)
}

fn seat() -> impl Strategy<Value = Seat> {
    (
        user_id(),
        invitation_id(),
        any::<u64>(),
        any::<[bool; 3]>(),
        1..=16u8,
    )
        .prop_map(
            |(user_id, invitation_id, since_ms, [online, audio, video], seat)| Seat {
                user_id,
                invitation_id,
                since_ms,
                online,
                seat,
                audio,
                video,
            },
        )
}

fn room_status() -> impl Strategy<Value = RoomStatus> {
    prop_oneof![
        Just(RoomStatus::Idle),
        Just(RoomStatus::Live),
        Just(RoomStatus::Ended)
    ]
}

fn room() -> impl Strategy<Value = Room> {
    (
        room_id(),
        user_id(),
        title(),
        room_status(),
        0..=16u8,
        proptest::collection::vec(seat(), 0..=16),
        any::<u64>(),
        proptest::collection::vec(user_id(), 0..=8),
        proptest::collection::vec(1..=16u8, 0..=16),
        any::<bool>(),
    )
        .prop_map(
            |(
                room_id,
                host,
                title,
                status,
                max_cohosts,
                cohosts,
                version,
                moderators,
                locked_seats,
                requests_open,
            )| Room {
                room_id,
                host,
                title,
                status,
                max_cohosts,
                cohosts,
                version,
                moderators,
                locked_seats,
                requests_open,
            },
        )
}

fn invitation_kind() -> impl Strategy<Value = InvitationKind> {
    prop_oneof![Just(InvitationKind::Invite), Just(InvitationKind::Request)]
}

fn invitation_status() -> impl Strategy<Value = InvitationStatus> {
    prop_oneof![
        Just(InvitationStatus::Pending),
        Just(InvitationStatus::Approved),
        Just(InvitationStatus::Rejected),
        Just(InvitationStatus::Cancelled),
        Just(InvitationStatus::Expired),
    ]
}

fn invitation() -> impl Strategy<Value = Invitation> {
    (
        invitation_id(),
        invitation_kind(),
        user_id(),
        user_id(),
        invitation_status(),
        any::<[u64; 3]>(),
        proptest::option::of(1..=16u8),
    )
        .prop_map(
            |(invitation_id, kind, host, user_id, status, [c, u, e], seat)| Invitation {
                room_id: invitation_id.room_id().clone(),
                invitation_id,
                kind,
                host,
                user_id,
                status,
                created_ms: c,
                updated_ms: u,
                expires_ms: e,
                seat,
            },
        )
}

/// Every variant of `Event`, weighted equally.
fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        room().prop_map(|room| Event::RoomCreated { room }),
        room().prop_map(|room| Event::RoomLive { room }),
        (room(), stop_reason()).prop_map(|(room, reason)| Event::RoomStopped { room, reason }),
        invitation().prop_map(|invitation| Event::InvitationCreated { invitation }),
        invitation().prop_map(|invitation| Event::InvitationApproved { invitation }),
        invitation().prop_map(|invitation| Event::InvitationRejected { invitation }),
        invitation().prop_map(|invitation| Event::InvitationCancelled { invitation }),
        invitation().prop_map(|invitation| Event::InvitationExpired { invitation }),
        (user_id(), invitation_id(), removal_reason()).prop_map(
            |(user_id, invitation_id, reason)| Event::CohostRemoved {
                user_id,
                invitation_id,
                reason,
            }
        ),
        (user_id(), invitation_id()).prop_map(|(user_id, invitation_id)| Event::CohostLeft {
            user_id,
            invitation_id
        }),
        (
            user_id(),
            any::<bool>(),
            proptest::option::of((any::<u64>(), "[A-Za-z0-9_]{0,24}"))
        )
            .prop_map(|(user_id, online, stamp)| Event::PresenceChanged {
                user_id,
                online,
                stamp: stamp.map(|(at_ms, participant_sid)| PresenceStamp {
                    at_ms,
                    participant_sid
                }),
            }),
        user_id().prop_map(|user_id| Event::ModeratorAdded { user_id }),
        user_id().prop_map(|user_id| Event::ModeratorRemoved { user_id }),
        Just(Event::RequestsOpened {}),
        Just(Event::RequestsClosed {}),
    ]
}

fn removal_reason() -> impl Strategy<Value = RemovalReason> {
    prop_oneof![
        Just(RemovalReason::Host),
        Just(RemovalReason::Moderator),
        Just(RemovalReason::Ban),
        Just(RemovalReason::Disconnected),
        Just(RemovalReason::RoomStopped),
        Just(RemovalReason::System),
    ]
}

fn stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![Just(StopReason::Host), Just(StopReason::System)]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        room_id(),
        any::<u64>(),
        any::<u64>(),
        // A user, a service, or neither (the system); never both.
        proptest::option::of(prop_oneof![
            user_id().prop_map(|u| (Some(u), None)),
            user_id().prop_map(|u| (None, Some(ServiceId::new(u.as_str()).unwrap()))),
        ]),
        proptest::option::of(command_id()),
        event(),
    )
        .prop_map(|(seq, room_id, version, at_ms, who, command_id, event)| {
            let (actor, service) = who.unwrap_or((None, None));
            Envelope {
                seq,
                room_id,
                version,
                at_ms,
                actor,
                service,
                command_id,
                event,
            }
        })
}

/// A string that breaks the room/user id rules: empty, too long, or with a character outside the set.
fn invalid_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("bad.id".to_owned()),
        "[A-Za-z0-9_-]{65,80}",
        "[A-Za-z0-9_-]{0,8}[. :>*/\\\\\"\t\nÀ-ÿ€😀][A-Za-z0-9_-]{0,8}",
    ]
}

/// A string that breaks the command id rules: empty, too long, a space, a control or non-ASCII character.
fn invalid_command_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[!-~]{65,80}",
        "[!-~]{0,8}[ \t\n\u{7f}À-ÿ😀][!-~]{0,8}",
    ]
}

/// A string that is not `{room_id}.{n}` with `n` from 1 and no leading zeros.
fn invalid_invitation_id() -> impl Strategy<Value = String> {
    prop_oneof![
        name(),
        name().prop_map(|room| format!("{room}.0")),
        (name(), 1..1000u32).prop_map(|(room, n)| format!("{room}.0{n}")),
        (name(), 1..1000u32).prop_map(|(room, n)| format!("{room}.+{n}")),
        name().prop_map(|room| format!("{room}.")),
        (1..1000u32).prop_map(|n| format!(".{n}")),
        (invalid_name(), 1..1000u32).prop_map(|(room, n)| format!("{room}.{n}")),
        name().prop_map(|room| format!("{room}.18446744073709551616")),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn envelopes_round_trip_through_json(envelope in envelope()) {
        let text = serde_json::to_string(&envelope).unwrap();
        let decoded: Envelope = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&decoded, &envelope);

        let pretty = serde_json::to_string_pretty(&envelope).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Envelope>(&pretty).unwrap(), &envelope);

        let wire = codec::encode_envelope(Encoding::Json, &envelope);
        prop_assert_eq!(wire.as_slice(), text.as_bytes());
        prop_assert_eq!(&codec::decode_envelope(Encoding::Json, &wire).unwrap(), &envelope);

        let value: Value = serde_json::from_str(&text).unwrap();
        let event_id = format!("{}:{}", envelope.room_id, envelope.version);
        prop_assert_eq!(value["event_id"].as_str(), Some(event_id.as_str()));
        prop_assert_eq!(value["type"].as_str(), Some(envelope.event.type_name()));
    }

    #[test]
    fn envelopes_round_trip_through_postcard(envelope in envelope()) {
        // Writers write the newest layout, `V3`.
        let stored = codec::encode_stored(&envelope);
        let decoded = codec::decode_stored(&stored).unwrap();
        prop_assert_eq!(decoded.layout(), 3);
        prop_assert_eq!(decoded.into_envelope(), envelope.clone());
        for encoding in [Encoding::Json, Encoding::Postcard] {
            let wire = codec::encode_envelope(encoding, &envelope);
            prop_assert_eq!(&codec::decode_envelope(encoding, &wire).unwrap(), &envelope);
        }
        prop_assert_eq!(codec::encode_envelope(Encoding::Postcard, &envelope), stored);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Hostile input: errors, never panics
// ---------------------------------------------------------------------------------------------------------

/// Every decoder a peer's bytes can reach. Each returns `Ok` or `Err`; a panic fails the property.
fn decode_everything(bytes: &[u8]) {
    let _ = codec::decode_stored(bytes);
    let _ = codec::decode_envelope(Encoding::Json, bytes);
    let _ = codec::decode_envelope(Encoding::Postcard, bytes);
    for name in Command::NAMES {
        let _ = Command::from_json(name, bytes);
    }
    let _ = Command::from_json("no_such_command", bytes);
}

/// A record that decoded from mutated bytes is a value like any other: it re-encodes (in today's layout) and
/// decodes to the same envelope, and to itself when it was of today's layout.
fn assert_stable(stored: &StoredEvent) -> Result<(), TestCaseError> {
    let envelope = stored.clone().into_envelope();
    let again = codec::decode_stored(&codec::encode_stored(&envelope)).unwrap();
    if stored.layout() == 3 {
        prop_assert_eq!(&again, stored);
    }
    prop_assert_eq!(again.into_envelope(), envelope.clone());
    let json = codec::encode_envelope(Encoding::Json, &envelope);
    prop_assert_eq!(
        codec::decode_envelope(Encoding::Json, &json).unwrap(),
        envelope
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    /// Bytes that start like a V1 record reach deeper into the postcard decoder than uniform noise.
    #[test]
    fn arbitrary_v1_records_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&tail);
        if let Ok(stored) = codec::decode_stored(&bytes) {
            assert_stable(&stored)?;
        }
        decode_everything(&bytes);
    }

    #[test]
    fn arbitrary_strings_as_json_envelopes_never_panic(text in any::<String>()) {
        prop_assert!(codec::decode_envelope(Encoding::Json, text.as_bytes()).is_err());
        decode_everything(text.as_bytes());
    }
}

/// Any JSON value, nested a little, with keys that sometimes collide with the contract's.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        name().prop_map(Value::from),
        Just(Value::from("room_created")),
        Just(Value::from("stage-1.1")),
    ];
    let key = prop_oneof![
        Just("type".to_owned()),
        Just("room_id".to_owned()),
        Just("user_id".to_owned()),
        Just("invitation_id".to_owned()),
        Just("room".to_owned()),
        Just("invitation".to_owned()),
        "[a-z_]{0,12}",
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer below `value`'s root, depth first.
fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (format!("{at}/{k}"), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{at}/{i}"), v))
            .collect(),
        _ => return,
    };
    for (pointer, child) in children {
        out.push(pointer.clone());
        pointers(child, &pointer, out);
    }
}

/// Removes the value at `pointer`, or replaces it; the pointer's parent is an object or an array.
fn edit(value: &mut Value, pointer: &str, replacement: Option<Value>) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let parent = if parent.is_empty() {
        value
    } else {
        value.pointer_mut(parent).unwrap()
    };
    match (parent, replacement) {
        (Value::Object(map), Some(new)) => {
            map.insert(last.to_owned(), new);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), Some(new)) => items[last.parse::<usize>().unwrap()] = new,
        (Value::Array(items), None) => {
            items.remove(last.parse::<usize>().unwrap());
        }
        _ => unreachable!("a pointer's parent is a container"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn one_mutated_postcard_byte_errors_or_decodes(
        envelope in envelope(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = codec::encode_stored(&envelope);
        let at = at.index(bytes.len());
        bytes[at] = byte;
        if let Ok(stored) = codec::decode_stored(&bytes) {
            assert_stable(&stored)?;
        }
        let _ = codec::decode_envelope(Encoding::Postcard, &bytes);
    }

    #[test]
    fn one_mutated_json_char_errors_or_decodes(
        envelope in envelope(),
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let text = serde_json::to_string(&envelope).unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let at = at.index(chars.len());
        chars[at] = replacement;
        let mutated: String = chars.into_iter().collect();
        if let Ok(decoded) = codec::decode_envelope(Encoding::Json, mutated.as_bytes()) {
            let again = codec::encode_envelope(Encoding::Json, &decoded);
            prop_assert_eq!(codec::decode_envelope(Encoding::Json, &again).unwrap(), decoded);
        }
    }

    /// Structure-aware noise: one field of a valid envelope removed or replaced by any JSON value.
    #[test]
    fn one_replaced_json_field_errors_or_decodes(
        envelope in envelope(),
        at in any::<prop::sample::Index>(),
        replacement in proptest::option::of(json_value()),
    ) {
        let mut value = serde_json::to_value(&envelope).unwrap();
        let mut all = Vec::new();
        pointers(&value, "", &mut all);
        edit(&mut value, &all[at.index(all.len())], replacement);
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(decoded) = codec::decode_envelope(Encoding::Json, &bytes) {
            let again = codec::encode_envelope(Encoding::Json, &decoded);
            prop_assert_eq!(codec::decode_envelope(Encoding::Json, &again).unwrap(), decoded);
        }
        decode_everything(&bytes);
    }

    /// A torn write leaves a prefix of a record; no prefix may pass as a record.
    #[test]
    fn truncated_postcard_records_never_decode(envelope in envelope()) {
        let bytes = codec::encode_stored(&envelope);
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            prop_assert!(
                codec::decode_stored(prefix).is_err(),
                "a {}-byte prefix of a {}-byte record decoded", len, bytes.len()
            );
            prop_assert!(codec::decode_envelope(Encoding::Postcard, prefix).is_err());
        }
    }

    /// Padding a record is as bad as tearing it.
    #[test]
    fn padded_postcard_records_never_decode(
        envelope in envelope(),
        padding in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let mut bytes = codec::encode_stored(&envelope);
        bytes.extend_from_slice(&padding);
        prop_assert!(codec::decode_stored(&bytes).is_err());
        prop_assert!(codec::decode_envelope(Encoding::Postcard, &bytes).is_err());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Invalid ids inside otherwise valid JSON
// ---------------------------------------------------------------------------------------------------------

/// Decoding `value` fails, and the error names `what`.
fn assert_refused(value: &Value, what: &str) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(value).unwrap();
    match codec::decode_envelope(Encoding::Json, &bytes) {
        Ok(envelope) => Err(TestCaseError::fail(format!(
            "{what} must be refused, decoded {envelope:?}"
        ))),
        Err(err) => {
            prop_assert!(err.to_string().contains(what), "{what}: {err}");
            Ok(())
        }
    }
}

/// The JSON pointer of a user id inside the payload, and of an invitation id, where the event has one.
fn payload_pointers(event: &Event) -> (&'static str, Option<&'static str>) {
    match event {
        Event::RoomCreated { .. } | Event::RoomLive { .. } | Event::RoomStopped { .. } => {
            ("/room/host", None)
        }
        Event::CohostRemoved { .. } | Event::CohostLeft { .. } => {
            ("/user_id", Some("/invitation_id"))
        }
        Event::PresenceChanged { .. }
        | Event::ModeratorAdded { .. }
        | Event::ModeratorRemoved { .. } => ("/user_id", None),
        // No id in the payload: the envelope's actor stands in.
        Event::RequestsOpened {} | Event::RequestsClosed {} => ("/actor", None),
        _ => ("/invitation/user_id", Some("/invitation/invitation_id")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn an_invalid_envelope_room_id_is_refused(envelope in envelope(), bad in invalid_name()) {
        let mut value = serde_json::to_value(&envelope).unwrap();
        value["room_id"] = Value::from(bad.as_str());
        // Keep event_id consistent so only the id rule can refuse it.
        value["event_id"] = Value::from(format!("{bad}:{}", envelope.version));
        assert_refused(&value, "room_id")?;
    }

    #[test]
    fn an_invalid_actor_is_refused(envelope in envelope(), bad in invalid_name()) {
        let mut value = serde_json::to_value(&envelope).unwrap();
        value["actor"] = Value::from(bad);
        assert_refused(&value, "user_id")?;
    }

    #[test]
    fn an_invalid_command_id_is_refused(envelope in envelope(), bad in invalid_command_id()) {
        let mut value = serde_json::to_value(&envelope).unwrap();
        value["command_id"] = Value::from(bad);
        assert_refused(&value, "command_id")?;
    }

    #[test]
    fn invalid_ids_in_the_payload_are_refused(
        envelope in envelope(),
        bad_name in invalid_name(),
        bad_invitation in invalid_invitation_id(),
    ) {
        let (user_pointer, invitation_pointer) = payload_pointers(&envelope.event);
        let value = serde_json::to_value(&envelope).unwrap();

        let mut with_bad_user = value.clone();
        *with_bad_user.pointer_mut(user_pointer).unwrap() = Value::from(bad_name.as_str());
        assert_refused(&with_bad_user, "user_id")?;

        if let Some(pointer) = invitation_pointer {
            let mut with_bad_invitation = value;
            *with_bad_invitation.pointer_mut(pointer).unwrap() = Value::from(bad_invitation);
            assert_refused(&with_bad_invitation, "invitation_id")?;
        }
    }

    #[test]
    fn invalid_ids_in_command_arguments_are_refused(
        room in name(),
        user in name(),
        bad_name in invalid_name(),
        bad_invitation in invalid_invitation_id(),
    ) {
        let good = serde_json::json!({"room_id": room, "user_id": user});
        prop_assert!(Command::from_json("invite", good.to_string().as_bytes()).is_ok());
        let bad_room = serde_json::json!({"room_id": bad_name, "user_id": user});
        prop_assert!(Command::from_json("invite", bad_room.to_string().as_bytes()).is_err());
        let bad_user = serde_json::json!({"room_id": room, "user_id": bad_name});
        prop_assert!(Command::from_json("invite", bad_user.to_string().as_bytes()).is_err());
        let accept = serde_json::json!({"invitation_id": bad_invitation});
        prop_assert!(
            Command::from_json("accept_invitation", accept.to_string().as_bytes()).is_err()
        );
    }
}

/// The one example the contract names, spelled out.
#[test]
fn bad_dot_id_is_refused_as_room_id() {
    let text = r#"{"seq":1,"room_id":"bad.id","version":1,"event_id":"bad.id:1","at_ms":0,
        "actor":null,"command_id":null,"type":"presence_changed","user_id":"bob","online":true}"#;
    let err = codec::decode_envelope(Encoding::Json, text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("invalid room_id"), "{err}");
    let good = text.replace("bad.id", "stage-1");
    let envelope = codec::decode_envelope(Encoding::Json, good.as_bytes()).unwrap();
    assert_eq!(envelope.event.type_name(), "presence_changed");
}

/// The case count: `PROPTEST_CASES` when set (`just proptest` runs many more), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
