//! Where a batch goes before the local log, in cluster mode: the partition log in JetStream. The store calls it
//! first and writes locally only what it took, so the local log is always a prefix of the replicated one.

/// Makes a batch record durable elsewhere (a quorum holds it) before the store writes it locally.
///
/// `cohost-nats` implements it over the partition's JetStream subject; the simulator, over a log in memory.
/// A call blocks the sequencer's thread, and so every command, until the batch is held or refused: an
/// implementation bounds its own wait.
pub trait Replicator: Send + Sync {
    /// `record` is the batch record as the store encodes it, its first seq `first_seq`. Called from the
    /// sequencer's thread, one batch at a time.
    fn replicate(&self, first_seq: u64, record: &[u8]) -> Result<(), ReplicateError>;

    /// Where the replicated log stands after this writer's last message (a stream sequence): kept with each
    /// snapshot, so a reader of the log after it finds the batches that follow the snapshot.
    fn position(&self) -> Option<u64> {
        None
    }
}

/// Why a [`Replicator`] did not take a batch. The variant decides whether the store goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    /// Refused outright (too large, say): nothing was kept anywhere, and the store goes on.
    #[error("the batch was refused: {0}")]
    Refused(String),
    /// This writer may no longer append: another took the partition, or whether the batch landed is unknown.
    /// The store takes no more writes, and the engine stops until the partition is taken again.
    #[error("{0}")]
    Stopped(String),
}
