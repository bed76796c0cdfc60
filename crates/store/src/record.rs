//! The stored formats: one checksummed record per committed batch, plus framed snapshots and cursors.

use cohost_proto::codec::{from_postcard, to_postcard};
use cohost_proto::{
    Actor, CommandId, Envelope, Invitation, Room, RoomId, StoredEvent, StoredEventRef,
};
use serde::{Deserialize, Serialize};

/// What a successful command with a `command_id` replied, kept so a retry gets the identical answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Who sent the command: a `command_id` is scoped by actor (and room), so another actor's same id is
    /// another command.
    pub actor: Actor,
    /// The caller's idempotency key, at most 64 characters.
    pub command_id: CommandId,
    /// A stable hash of the command and its `expected_version`: the same id with another command is a conflict.
    pub fingerprint: u64,
    /// When the command was decided, in ms since the Unix epoch: the id is remembered for a TTL from then.
    pub at_ms: u64,
    /// The reply the first run gave.
    pub reply: StoredReply,
}

/// An idempotency record without its reply: what the engine needs at open to remember a command id. Kept under
/// its own key per batch, so opening reads these small entries, not every batch's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandIndexEntry {
    /// As [`IdempotencyRecord::actor`].
    pub actor: Actor,
    /// The command's room: a `command_id` is scoped by actor and room.
    pub room_id: RoomId,
    /// As [`IdempotencyRecord::command_id`].
    pub command_id: CommandId,
    /// As [`IdempotencyRecord::fingerprint`].
    pub fingerprint: u64,
    /// As [`IdempotencyRecord::at_ms`].
    pub at_ms: u64,
}

impl From<&IdempotencyRecord> for CommandIndexEntry {
    fn from(record: &IdempotencyRecord) -> Self {
        Self {
            actor: record.actor.clone(),
            room_id: record.reply.room_id().clone(),
            command_id: record.command_id.clone(),
            fingerprint: record.fingerprint,
            at_ms: record.at_ms,
        }
    }
}

/// An entry of the command index value written by builds before the room joined the entry (a bare postcard
/// list of these: actor, command id, fingerprint, time; postcard encodes a struct as the tuple of its fields).
/// Only counted: the room, and all else, is read from the batch's own records instead.
type CommandIndexEntryV1 = (Actor, CommandId, u64, u64);

/// What starts a command index value that holds [`CommandIndexEntry`]s. A canonical postcard varint never
/// starts so (`0xFF 0x00` would encode 127 in two bytes), so an older value, a bare list, is never taken for one.
const COMMAND_INDEX_V2: [u8; 2] = [0xFF, 0x00];

/// A command index value: framed `[COMMAND_INDEX_V2][postcard list of entries]`.
pub(crate) fn encode_command_index(entries: &[CommandIndexEntry]) -> Vec<u8> {
    let mut payload = COMMAND_INDEX_V2.to_vec();
    payload.extend_from_slice(&to_postcard(&entries));
    frame(&payload)
}

/// A decoded command index value: this layout's entries, or an older value's count of entries (whose rooms
/// must be read from the batch).
pub(crate) enum CommandIndex {
    Current(Vec<CommandIndexEntry>),
    Older(usize),
}

pub(crate) fn decode_command_index(value: &[u8]) -> Result<CommandIndex, FrameError> {
    let payload = unframe(value)?;
    let decode = |e: cohost_proto::codec::DecodeError| FrameError::Decode(e.to_string());
    match payload.strip_prefix(&COMMAND_INDEX_V2) {
        Some(entries) => from_postcard(entries)
            .map(CommandIndex::Current)
            .map_err(decode),
        None => from_postcard::<Vec<CommandIndexEntryV1>>(payload)
            .map(|older| CommandIndex::Older(older.len()))
            .map_err(decode),
    }
}

impl StoredReply {
    /// The room the command acted on.
    pub fn room_id(&self) -> &RoomId {
        match self {
            Self::Room(room) => &room.room_id,
            Self::Invitation(invitation) | Self::Accepted(invitation) => &invitation.room_id,
        }
    }
}

/// A reply as stored. Credentials are never part of it: accept's broadcaster data is minted again on retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredReply {
    /// A room command's reply: the room after it.
    Room(Room),
    /// invite, request_to_join, reject or cancel: the invitation after it.
    Invitation(Invitation),
    /// accept: the invitation after it; the broadcaster data is not kept.
    Accepted(Invitation),
}

/// One group commit: every event the batch appended, in seq order, and the idempotency records of its commands.
/// Decoded through the layout's own types ([`v1`]), so the wire types can change under it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum BatchRecord {
    V1 {
        events: Vec<StoredEvent>,
        commands: Vec<v1::IdempotencyRecord>,
    },
    /// Today's layout (the events are `StoredEvent::V2`). When the wire types change next, this layout is
    /// first copied into a `v2` module, as `v1` was.
    V2 {
        events: Vec<StoredEvent>,
        commands: Vec<IdempotencyRecord>,
    },
}

/// The idempotency records of `BatchRecord::V1` (and of a base's remembered batches), in that layout: never
/// edited. Each converts into today's types by a fixed conversion.
pub mod v1 {
    use cohost_proto::stored::v1::{Invitation, Room};
    use cohost_proto::{Actor, CommandId};
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    pub struct IdempotencyRecord {
        pub actor: Actor,
        pub command_id: CommandId,
        pub fingerprint: u64,
        pub at_ms: u64,
        pub reply: StoredReply,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    pub enum StoredReply {
        Room(Room),
        Invitation(Invitation),
        Accepted(Invitation),
    }

    impl From<IdempotencyRecord> for super::IdempotencyRecord {
        fn from(old: IdempotencyRecord) -> Self {
            Self {
                actor: old.actor,
                command_id: old.command_id,
                fingerprint: old.fingerprint,
                at_ms: old.at_ms,
                reply: old.reply.into(),
            }
        }
    }

    impl From<StoredReply> for super::StoredReply {
        fn from(old: StoredReply) -> Self {
            match old {
                StoredReply::Room(room) => Self::Room(room.into()),
                StoredReply::Invitation(invitation) => Self::Invitation(invitation.into()),
                StoredReply::Accepted(invitation) => Self::Accepted(invitation.into()),
            }
        }
    }
}

/// What starts a list of idempotency records in today's layout. A canonical postcard varint never starts so,
/// so a list written before (a bare postcard list, in the V1 layout) is never taken for one.
const RECORDS_V2: [u8; 2] = [0xFF, 0x00];

/// A list of idempotency records as stored (a base's remembered batch): `[RECORDS_V2][postcard list]`.
pub(crate) fn encode_records(records: &[IdempotencyRecord]) -> Vec<u8> {
    let mut payload = RECORDS_V2.to_vec();
    payload.extend_from_slice(&to_postcard(&records));
    frame(&payload)
}

/// A stored list of idempotency records, of either layout.
pub(crate) fn decode_records(payload: &[u8]) -> Result<Vec<IdempotencyRecord>, FrameError> {
    let decode = |e: cohost_proto::codec::DecodeError| FrameError::Decode(e.to_string());
    match payload.strip_prefix(&RECORDS_V2) {
        Some(records) => from_postcard(records).map_err(decode),
        None => {
            let records: Vec<v1::IdempotencyRecord> = from_postcard(payload).map_err(decode)?;
            Ok(records.into_iter().map(IdempotencyRecord::from).collect())
        }
    }
}

/// A decoded batch record: what one group commit appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its events, seqs consecutive; at least one in any record the store wrote.
    pub events: Vec<Envelope>,
    /// The idempotency records of its commands that carried a `command_id` and succeeded.
    pub commands: Vec<IdempotencyRecord>,
}

impl Batch {
    /// The seq of its first event, which names its record (`L{first_seq}`); `None` only for an empty batch.
    pub fn first_seq(&self) -> Option<u64> {
        self.events.first().map(|e| e.seq)
    }
}

/// Why a stored value could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header needs (the length found): a value cut short.
    #[error("record is shorter than its header ({0} bytes)")]
    Truncated(usize),
    /// The bytes changed after they were written: a torn write or bit rot.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum written with the value.
        stored: u32,
        /// The checksum of the bytes read now.
        computed: u32,
    },
    /// The checksum holds but the payload does not decode, contradicts its header, or cannot be used where it
    /// was found; the message says which.
    #[error("undecodable payload: {0}")]
    Decode(String),
}

/// `[crc32 of payload, LE][payload]`.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub(crate) fn unframe(bytes: &[u8]) -> Result<&[u8], FrameError> {
    let (head, payload) = bytes
        .split_at_checked(4)
        .ok_or(FrameError::Truncated(bytes.len()))?;
    let stored = u32::from_le_bytes(head.try_into().expect("split at 4"));
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(payload)
}

/// A log record: framed `[event count, u32 LE][postcard BatchRecord]`. The count lets `open` check that seqs are
/// gap-free without decoding every event.
pub(crate) fn encode_batch(events: &[Envelope], commands: &[IdempotencyRecord]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename = "BatchRecord")]
    enum BatchRecordRef<'a> {
        #[allow(dead_code)] // Never written again; it holds V2's place.
        V1(()),
        V2 {
            events: Vec<StoredEventRef<'a>>,
            commands: &'a [IdempotencyRecord],
        },
    }
    let record = BatchRecordRef::V2 {
        events: events.iter().map(StoredEventRef::new).collect(),
        commands,
    };
    let count = u32::try_from(events.len()).expect("a batch holds far fewer than 2^32 events");
    let mut payload = count.to_le_bytes().to_vec();
    payload.extend_from_slice(&to_postcard(&record));
    frame(&payload)
}

/// The event count of a log record, after checking its checksum.
pub(crate) fn batch_count(bytes: &[u8]) -> Result<u32, FrameError> {
    let payload = unframe(bytes)?;
    let head = payload.get(..4).ok_or(FrameError::Truncated(bytes.len()))?;
    Ok(u32::from_le_bytes(head.try_into().expect("4 bytes")))
}

pub(crate) fn decode_batch(bytes: &[u8]) -> Result<Batch, FrameError> {
    let payload = unframe(bytes)?;
    let (head, body) = payload
        .split_at_checked(4)
        .ok_or(FrameError::Truncated(bytes.len()))?;
    let count = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
    let record: BatchRecord = from_postcard(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    let (events, commands) = match record {
        BatchRecord::V1 { events, commands } => (
            events,
            commands.into_iter().map(IdempotencyRecord::from).collect(),
        ),
        BatchRecord::V2 { events, commands } => (events, commands),
    };
    if events.len() != count {
        return Err(FrameError::Decode(format!(
            "header says {count} events, body has {}",
            events.len()
        )));
    }
    Ok(Batch {
        events: events.into_iter().map(StoredEvent::into_envelope).collect(),
        commands,
    })
}
