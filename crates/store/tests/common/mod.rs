//! Fixtures shared by the store's scenario tests: envelopes with real events, seqs and versions.
#![allow(dead_code)] // each scenario file uses its own part of the fixture

use std::collections::BTreeMap;

use cohost_proto::{
    Actor, CommandId, Envelope, Event, Invitation, InvitationId, InvitationKind, InvitationStatus,
    Room, RoomId, RoomStatus, UserId,
};
use cohost_store::{Batch, IdempotencyRecord, StoredReply};

pub fn room_id(name: &str) -> RoomId {
    RoomId::new(name).expect("test room ids are valid")
}

pub fn user_id(name: &str) -> UserId {
    UserId::new(name).expect("test user ids are valid")
}

/// Hands out envelopes as the engine would: seqs gap-free from 1 across the log, versions gap-free per room.
#[derive(Debug, Default)]
pub struct LogBuilder {
    last_seq: u64,
    versions: BTreeMap<RoomId, u64>,
    invitations: BTreeMap<RoomId, u64>,
}

impl LogBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues a log whose last seq is `last_seq`, for rooms it does not hold yet.
    pub fn after(last_seq: u64) -> Self {
        Self {
            last_seq,
            ..Self::default()
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn envelope(&mut self, room: &str, host: &str, event: Event) -> Envelope {
        let room_id = room_id(room);
        let version = self.versions.entry(room_id.clone()).or_default();
        *version += 1;
        self.last_seq += 1;
        Envelope {
            seq: self.last_seq,
            room_id,
            version: *version,
            at_ms: 1_700_000_000_000 + self.last_seq * 10,
            actor: Some(user_id(host)),
            service: None,
            command_id: Some(command_id(self.last_seq)),
            event,
        }
    }

    /// `RoomCreated` for a new room hosted by `host-{room}`.
    pub fn room_created(&mut self, room: &str, title: &str) -> Envelope {
        let host = format!("host-{room}");
        let event = Event::RoomCreated {
            room: Room {
                room_id: room_id(room),
                host: user_id(&host),
                title: title.to_owned(),
                status: RoomStatus::Idle,
                max_cohosts: 4,
                cohosts: Vec::new(),
                version: 1,
                moderators: Vec::new(),
                locked_seats: Vec::new(),
                requests_open: true,
            },
        };
        self.envelope(room, &host, event)
    }

    /// `InvitationCreated`: the room's host invites `user`.
    pub fn invitation_created(&mut self, room: &str, user: &str) -> Envelope {
        let host = format!("host-{room}");
        let number = self.invitations.entry(room_id(room)).or_default();
        *number += 1;
        let at_ms = 1_700_000_000_000 + (self.last_seq + 1) * 10;
        let event = Event::InvitationCreated {
            invitation: Invitation {
                invitation_id: InvitationId::new(room_id(room), *number)
                    .expect("numbers start at 1"),
                room_id: room_id(room),
                kind: InvitationKind::Invite,
                host: user_id(&host),
                user_id: user_id(user),
                status: InvitationStatus::Pending,
                created_ms: at_ms,
                updated_ms: at_ms,
                expires_ms: at_ms + 300_000,
                seat: None,
            },
        };
        self.envelope(room, &host, event)
    }
}

pub fn command_id(n: u64) -> CommandId {
    CommandId::new(&format!("cmd-{n}")).expect("test command ids are valid")
}

/// The idempotency record the engine would keep for the command behind `envelope`.
pub fn record_for(envelope: &Envelope) -> IdempotencyRecord {
    let reply = match &envelope.event {
        Event::RoomCreated { room } => StoredReply::Room(room.clone()),
        Event::InvitationCreated { invitation } => StoredReply::Invitation(invitation.clone()),
        other => panic!("the fixture keeps no reply for {other}"),
    };
    IdempotencyRecord {
        actor: Actor::User(
            envelope
                .actor
                .clone()
                .expect("fixture events have an actor"),
        ),
        command_id: envelope
            .command_id
            .clone()
            .expect("fixture events have a command id"),
        fingerprint: 0x5eed_0000 + envelope.seq,
        at_ms: envelope.at_ms,
        reply,
    }
}

/// Five batches over three rooms, 11 events, seqs 1..=11:
/// `[1] [2 3 4] [5 6] [7] [8 9 10 11]`. The fourth batch carries no idempotency record.
pub fn sample_batches() -> Vec<Batch> {
    let mut log = LogBuilder::new();
    let batches = vec![
        vec![log.room_created("room-a", "Morning show")],
        vec![
            log.room_created("room-b", "Cooking live"),
            log.invitation_created("room-a", "user-1"),
            log.invitation_created("room-b", "user-2"),
        ],
        vec![
            log.room_created("room-c", "Night chat"),
            log.invitation_created("room-a", "user-3"),
        ],
        vec![log.invitation_created("room-c", "user-4")],
        vec![
            log.invitation_created("room-a", "user-5"),
            log.invitation_created("room-b", "user-6"),
            log.invitation_created("room-c", "user-7"),
            log.invitation_created("room-a", "user-8"),
        ],
    ];
    batches
        .into_iter()
        .enumerate()
        .map(|(index, events)| {
            let commands = if index == 3 {
                Vec::new()
            } else {
                events.iter().map(record_for).collect()
            };
            Batch { events, commands }
        })
        .collect()
}
