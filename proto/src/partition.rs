//! The partition of a room in cluster mode: `fnv1a32(room_id) mod partitions`, the function NATS subject mapping's
//! `partition(n, 1)` applies to a subject's wildcard token, so a client in any language, and NATS itself, computes
//! the same number (`proto/README.md`, "Partitions").

use crate::RoomId;

/// Partitions in a cluster unless configured otherwise (`COHOST_PARTITIONS`).
pub const PARTITIONS_DEFAULT: u32 = 64;
/// The most partitions a cluster may have: each is a subject, a lease and a sequencer on its owner.
pub const PARTITIONS_MAX: u32 = 1_024;

const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a of `bytes`.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The partition, in `0..partitions`, that holds `room_id`; the same on every node and in NATS.
///
/// # Panics
///
/// If `partitions` is 0: a broken configuration, which the daemon refuses before it gets here.
pub fn of(room_id: &RoomId, partitions: u32) -> u32 {
    assert!(partitions >= 1, "a cluster has at least one partition");
    fnv1a32(room_id.as_str().as_bytes()) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a test vectors (Fowler, Noll, Vo).
    #[test]
    fn fnv1a32_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    /// The examples of proto/README.md, "Partitions".
    #[test]
    fn the_documented_examples_hold() {
        for (name, partition) in [("stage-1", 35), ("stage-2", 54), ("a", 44), ("Z", 13)] {
            assert_eq!(
                of(&RoomId::new(name).unwrap(), PARTITIONS_DEFAULT),
                partition,
                "{name}"
            );
        }
    }

    #[test]
    fn every_room_falls_in_range_and_one_partition_holds_all() {
        for name in ["stage-1", "a", "room_with-64-chars", "Z"] {
            let room = RoomId::new(name).unwrap();
            assert!(of(&room, PARTITIONS_DEFAULT) < PARTITIONS_DEFAULT);
            assert_eq!(of(&room, 1), 0);
        }
    }
}
