//! Backups of a running engine, and restores from them.
//!
//! A backup is the log's records up to a durable seq, as the store holds them, and the outbox cursors, in a
//! directory of two files: `log` (each record as a little-endian `u32` length and its bytes, checksum
//! included) and `manifest.json` (written last, so a directory without one is not a backup). It needs no stop:
//! the log is append-only and nothing up to a durable seq ever changes, so copying while the engine appends
//! gives the log exactly as it was at that seq. Snapshots and archives are not copied; opening a restored
//! directory replays the log and rebuilds them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cohost_proto::UserId;
use cohost_store::{RawRecord, Store};
use serde::{Deserialize, Serialize};

use crate::{Engine, Error};

/// The backup layout this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// The largest record a backup's `log` may hold: far above any batch the engine writes (a batch holds at most
/// `BATCH_MAX_LIMIT` commands' events), so a damaged length cannot make a restore allocate without bound.
pub const BACKUP_RECORD_BYTES_MAX: usize = 256 << 20;

const LOG_FILE: &str = "log";
const MANIFEST_FILE: &str = "manifest.json";

/// What a backup holds, as `manifest.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`BACKUP_FORMAT`] when it was written.
    pub format: u32,
    /// The backup's position: the log up to this seq, every event of it.
    pub last_seq: u64,
    /// Log records (group commits) in `log`.
    pub records: u64,
    /// The size of `log` in bytes, length prefixes included: a log cut or padded after the fact is refused.
    pub log_bytes: u64,
    /// Each outbox sink's cursor (the relay's, each webhook endpoint's), at most `last_seq`: where each resumes
    /// after a restore.
    pub cursors: BTreeMap<String, u64>,
    /// Each erased user's pseudonym, by user id, so a restored node serves them as before (see
    /// [`Engine::erase_user`]); empty in backups written before erasure.
    #[serde(default)]
    pub erased: BTreeMap<String, String>,
    /// When the position was taken, in ms since the Unix epoch.
    pub taken_at_ms: u64,
}

/// Why a backup or a restore failed; nothing it wrote is a usable backup or data directory then.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// Which file, and what was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The target holds files already; a backup or a restore never overwrites.
    #[error("{0} is not empty; a backup or a restore writes only into a new or empty directory")]
    NotEmpty(PathBuf),
    /// The backup's files are damaged, cut short, or do not match each other; the message says where.
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    /// A layout this build does not read.
    #[error("backup format {0} is not one this build reads (it reads format {BACKUP_FORMAT})")]
    Format(u32),
    /// The engine or the store refused.
    #[error("{0}")]
    Engine(#[from] Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// Creates `dir`, or checks that it is empty.
fn empty_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut entries = std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    match entries.next() {
        None => Ok(()),
        Some(_) => Err(BackupError::NotEmpty(dir.to_owned())),
    }
}

/// Writes a backup directory record by record, checking each one continues the last.
#[derive(Debug)]
pub struct BackupWriter {
    dir: PathBuf,
    log: BufWriter<File>,
    next_seq: u64,
    records: u64,
    bytes: u64,
}

impl BackupWriter {
    /// Starts a backup in `dir`, which must be new or empty.
    pub fn create(dir: &Path) -> Result<Self, BackupError> {
        empty_dir(dir)?;
        let path = dir.join(format!("{LOG_FILE}.partial"));
        let file = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        Ok(Self {
            dir: dir.to_owned(),
            log: BufWriter::with_capacity(1 << 20, file),
            next_seq: 1,
            records: 0,
            bytes: 0,
        })
    }

    /// Adds the next record: it must pass its checksum, decode, and start where the last one ended.
    pub fn push(&mut self, record: &[u8]) -> Result<(), BackupError> {
        let (first, last) = cohost_store::batch_seqs(record)
            .map_err(|e| BackupError::Damaged(format!("record {}: {e}", self.records + 1)))?;
        if last < first {
            let why = format!("record {} holds no event", self.records + 1);
            return Err(BackupError::Damaged(why));
        }
        if first != self.next_seq {
            let why = format!(
                "expected a record at seq {}, got one at {first}",
                self.next_seq
            );
            return Err(BackupError::Damaged(why));
        }
        if record.len() > BACKUP_RECORD_BYTES_MAX {
            return Err(BackupError::Damaged(format!(
                "record at seq {first} is too large"
            )));
        }
        let length = u32::try_from(record.len()).expect("bounded above");
        (self.log.write_all(&length.to_le_bytes()))
            .and_then(|()| self.log.write_all(record))
            .map_err(io("writing the backup's log"))?;
        self.next_seq = last + 1;
        self.records += 1;
        self.bytes += 4 + record.len() as u64;
        Ok(())
    }

    /// The seq the next record must start at.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Ends the backup at `last_seq`, which the records must have reached exactly: syncs the log, then writes
    /// the manifest, so a crash before this leaves no manifest and so no backup.
    pub fn finish(
        self,
        last_seq: u64,
        cursors: BTreeMap<String, u64>,
        erased: BTreeMap<String, String>,
        taken_at_ms: u64,
    ) -> Result<Manifest, BackupError> {
        if self.next_seq != last_seq + 1 {
            let why = format!(
                "the records end at seq {} but the backup's position is {last_seq}",
                self.next_seq - 1
            );
            return Err(BackupError::Damaged(why));
        }
        let file = self.log.into_inner().map_err(|e| e.into_error());
        file.and_then(|file| file.sync_all())
            .map_err(io("syncing the backup's log"))?;
        let manifest = Manifest {
            format: BACKUP_FORMAT,
            last_seq,
            records: self.records,
            log_bytes: self.bytes,
            cursors: (cursors.into_iter())
                .map(|(sink, seq)| (sink, seq.min(last_seq)))
                .collect(),
            erased,
            taken_at_ms,
        };
        let partial = self.dir.join(format!("{LOG_FILE}.partial"));
        std::fs::rename(&partial, self.dir.join(LOG_FILE))
            .map_err(io("naming the backup's log"))?;
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
        write_synced(&self.dir.join(MANIFEST_FILE), &json)?;
        sync_dir(&self.dir)?;
        Ok(manifest)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let what = format!("writing {}", path.display());
    let mut file = File::create(path).map_err(io(what.clone()))?;
    (file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(io(what))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Reads a backup's manifest, checking its format.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(io(format!(
        "reading {} (a directory without one is not a finished backup)",
        path.display()
    )))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| BackupError::Damaged(format!("{}: {e}", path.display())))?;
    if manifest.format != BACKUP_FORMAT {
        return Err(BackupError::Format(manifest.format));
    }
    Ok(manifest)
}

/// Reads the next record of a backup's log; `None` at its end, which must fall between records.
fn read_record(log: &mut impl Read) -> Result<Option<Vec<u8>>, BackupError> {
    let mut length = [0u8; 4];
    let mut read = 0;
    while read < length.len() {
        match log.read(&mut length[read..]) {
            Ok(0) if read == 0 => return Ok(None),
            Ok(0) => {
                let why = "the log ends inside a record's length";
                return Err(BackupError::Damaged(why.into()));
            }
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("reading the backup's log")(e)),
        }
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > BACKUP_RECORD_BYTES_MAX {
        return Err(BackupError::Damaged(format!(
            "a record claims {length} bytes"
        )));
    }
    let mut record = vec![0; length];
    log.read_exact(&mut record)
        .map_err(|_| BackupError::Damaged("the log is cut short inside a record".into()))?;
    Ok(Some(record))
}

/// Rebuilds a data directory from the backup in `from`: `data_dir` must be new or empty. The store is built in
/// a directory beside it and renamed into place only once whole and flushed, so a restore that fails leaves
/// `data_dir` as it was, never a shorter log an engine would open. Every record is checked as it is written.
/// Opening the engine on `data_dir` afterwards replays the log, so its state is the log's up to the backup's
/// position.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = read_manifest(from)?;
    let path = from.join(LOG_FILE);
    let file = File::open(&path).map_err(io(format!("opening {}", path.display())))?;
    let size = file
        .metadata()
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    if size != manifest.log_bytes {
        let why = format!(
            "the log holds {size} bytes, the manifest says {}",
            manifest.log_bytes
        );
        return Err(BackupError::Damaged(why));
    }
    empty_dir(data_dir)?;
    let staging = staging_dir(data_dir)?;
    let built = build(
        &manifest,
        &mut BufReader::with_capacity(1 << 20, file),
        &staging,
    );
    if let Err(error) = built {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    std::fs::rename(&staging, data_dir).map_err(io(format!(
        "moving the restored store into {}",
        data_dir.display()
    )))?;
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty());
    sync_dir(parent.unwrap_or(Path::new(".")))?;
    Ok(manifest)
}

/// A new directory beside `data_dir`, for the store while it is built; one a crashed restore left is removed.
fn staging_dir(data_dir: &Path) -> Result<PathBuf, BackupError> {
    let name = data_dir.file_name().ok_or_else(|| BackupError::Io {
        what: format!("naming a directory beside {}", data_dir.display()),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let staging = data_dir.with_file_name(format!(".{}.restoring", name.to_string_lossy()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(format!(
            "removing an unfinished restore at {}",
            staging.display()
        )))?;
    }
    Ok(staging)
}

/// Writes the log's records into a new store in `dir`, checks them against the manifest, flushes, and sets
/// the cursors. The store is closed when it returns.
fn build(manifest: &Manifest, log: &mut impl Read, dir: &Path) -> Result<(), BackupError> {
    let store = Store::open(dir).map_err(Error::from)?;
    let (mut records, mut last_seq) = (0, 0);
    while let Some(record) = read_record(log)? {
        records += 1;
        last_seq = store
            .append_replicated(&record)
            .map_err(|e| BackupError::Damaged(format!("record {records}: {e}")))?;
    }
    if (records, last_seq) != (manifest.records, manifest.last_seq) {
        let why = format!(
            "the manifest says {} records up to seq {}, the log holds {records} up to seq {last_seq}",
            manifest.records, manifest.last_seq
        );
        return Err(BackupError::Damaged(why));
    }
    store.flush_replicated().map_err(Error::from)?;
    for (user, pseudonym) in &manifest.erased {
        let id = |s: &str| {
            UserId::new(s).map_err(|e| BackupError::Damaged(format!("erased user {s:?}: {e}")))
        };
        store
            .set_erased(&id(user)?, &id(pseudonym)?)
            .map_err(Error::from)?;
    }
    for (sink, seq) in &manifest.cursors {
        store
            .set_cursor(sink, (*seq).min(last_seq))
            .map_err(Error::from)?;
    }
    store.flush().map_err(Error::from)?;
    Ok(())
}

/// Up to this many bytes of records per [`Engine::log_records`] call from [`Engine::backup_to`].
const CHUNK_BYTES: usize = 8 << 20;

impl Engine {
    /// Where a backup taken now ends, and the cursors it carries: the cursors are read first, so none is past
    /// the position. Reads the store.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the log does not start at seq 1 (log retention removed its start, or a
    /// cluster partition started from a base: there the replicated stream is the backup), and each error of
    /// [`Engine::cursors`].
    pub fn backup_position(&self) -> Result<(u64, BTreeMap<String, u64>), Error> {
        if self.log_from() != 1 {
            return Err(Error::invalid_argument(
                "this log starts past seq 1 (log retention removed its start, or a cluster partition): a \
                 backup carries the log from seq 1; copy the stopped node's data directory instead",
            ));
        }
        let cursors = self.cursors()?.into_iter().collect();
        Ok((self.last_seq(), cursors))
    }

    /// Each erased user's pseudonym, by user id, as a backup carries them. Reads the store.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a damaged entry; [`Error::Storage`]; [`Error::ShuttingDown`].
    pub fn erased_users(&self) -> Result<BTreeMap<String, String>, Error> {
        let erased = self.shared.store()?.erased()?;
        Ok((erased.into_iter())
            .map(|(user, pseudonym)| (user.to_string(), pseudonym.to_string()))
            .collect())
    }

    /// The log's records from the one starting at `from_seq` on, none past `to_seq` or the last durable seq,
    /// stopping after `max_bytes` (always at least one record when there is one): a backup's next chunk. It
    /// reads the store: call it off the async workers.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a damaged record or a gap; [`Error::Storage`]; [`Error::ShuttingDown`].
    pub fn log_records(
        &self,
        from_seq: u64,
        to_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<RawRecord>, Error> {
        let to_seq = to_seq.min(self.last_seq());
        let store = self.shared.store()?;
        let (mut records, mut bytes) = (Vec::new(), 0);
        for record in store.raw_records(from_seq, to_seq) {
            let record = record?;
            bytes += record.bytes.len();
            records.push(record);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(records)
    }

    /// Writes a backup of the log as it is now into `dir` (new or empty), while the engine goes on taking
    /// commands. Blocks for a read of the log up to the position: call it off the async workers.
    pub fn backup_to(&self, dir: &Path, now_ms: u64) -> Result<Manifest, BackupError> {
        let (last_seq, cursors) = self.backup_position()?;
        let mut writer = BackupWriter::create(dir)?;
        while writer.next_seq() <= last_seq {
            let records = self.log_records(writer.next_seq(), last_seq, CHUNK_BYTES)?;
            if records.is_empty() {
                let why = format!("the log ends before seq {}", writer.next_seq());
                return Err(BackupError::Engine(Error::Corrupt(why)));
            }
            for record in &records {
                writer.push(&record.bytes)?;
            }
        }
        let erased = self.erased_users()?;
        writer.finish(last_seq, cursors, erased, now_ms)
    }
}
