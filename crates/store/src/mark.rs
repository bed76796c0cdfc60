//! The committed mark: the last seq an append made durable, kept in a small file beside sled's, outside sled's
//! log. sled 0.34 takes the first bad message after its last snapshot for a torn write and silently drops it and
//! everything after it; comparing the log's end with this mark at open turns that loss into an error.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use crate::record::{self, FrameError};

const FILE_NAME: &str = "committed-seq";

#[derive(Debug)]
pub(crate) struct CommittedMark {
    file: Mutex<File>,
}

impl CommittedMark {
    /// Opens (or creates) the mark in `dir`, with the seq it holds (`None` when new).
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Result<Option<u64>, FrameError>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(FILE_NAME))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let seq = if bytes.is_empty() {
            Ok(None)
        } else {
            record::unframe(&bytes).and_then(|payload| {
                let seq: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| FrameError::Truncated(payload.len()))?;
                Ok(Some(u64::from_le_bytes(seq)))
            })
        };
        Ok((
            Self {
                file: Mutex::new(file),
            },
            seq,
        ))
    }

    /// Records `seq`, which the backend has made durable. Not fsynced: after a crash the file holds this or an
    /// earlier value, so the mark is never ahead of the log.
    pub(crate) fn record(&self, seq: u64) -> io::Result<()> {
        // A poisoned lock only means another append panicked mid-write; the next write replaces the value.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&record::frame(&seq.to_le_bytes()))
    }
}

/// The flag a failed flush leaves beside the store: `flush-failed`, an empty file, made durable on its own.
/// Its presence at open says the previous process read data back from a cache that a failed flush may have
/// made a lie, so the next open trusts nothing only the cache vouched for.
#[derive(Debug)]
pub(crate) struct FlushFailedFlag {
    path: std::path::PathBuf,
}

const FLAG_NAME: &str = "flush-failed";

impl FlushFailedFlag {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            path: dir.join(FLAG_NAME),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.path.exists()
    }

    /// Creates the file and flushes it and its directory: another file than the one whose flush failed.
    pub(crate) fn set(&self) -> io::Result<()> {
        File::create(&self.path)?.sync_all()?;
        self.sync_dir()
    }

    pub(crate) fn clear(&self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> io::Result<()> {
        match self.path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }
}
