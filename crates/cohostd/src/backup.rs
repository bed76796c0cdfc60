//! Backups of a running single node over HTTP, and restores: `GET /v1/admin/backup` streams the log's records
//! up to a durable seq; `cohostd backup --to DIR` writes that stream into a backup directory (the engine's
//! layout, `cohost_engine::BackupWriter`), and `cohostd restore --from DIR` rebuilds an empty data directory
//! from one. The daemon keeps serving throughout: the log is append-only, so nothing copied changes.
//!
//! The stream is frames, each a little-endian `u32` length and its bytes: first a JSON header (`format`,
//! `last_seq`, `cursors`, `taken_at_ms`), then every record up to `last_seq`, as the log holds it. A stream
//! cut short leaves the backup unfinished (no manifest), never a shorter backup that looks whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cohost_engine::{BACKUP_FORMAT, BACKUP_RECORD_BYTES_MAX, BackupWriter, Engine};
use cohost_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::http::{AppState, Engines};

/// The media type of the backup stream.
pub const BACKUP_CONTENT_TYPE: &str = "application/vnd.cohost.backup";

/// Records read per chunk of the stream: bounds what the route holds per backup.
const CHUNK_BYTES: usize = 1 << 20;

/// How long `cohostd backup` waits for the next bytes of the stream before it gives up on a stalled node.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The stream's first frame.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    last_seq: u64,
    cursors: BTreeMap<String, u64>,
    /// Erased users' pseudonyms by user id; absent from a stream written before erasure.
    #[serde(default)]
    erased: BTreeMap<String, String>,
    taken_at_ms: u64,
}

fn frame(bytes: &[u8]) -> Bytes {
    let length = u32::try_from(bytes.len()).expect("records are bounded far below 4 GiB");
    let mut framed = Vec::with_capacity(4 + bytes.len());
    framed.extend_from_slice(&length.to_le_bytes());
    framed.extend_from_slice(bytes);
    framed.into()
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

/// `GET /v1/admin/backup` (the admin secret): the log up to the last durable seq, streamed while the node
/// goes on serving. 409 `failed_precondition` on a cluster node, whose log is the JetStream stream.
pub(crate) async fn backup(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    crate::admin::check(&state, &headers)?;
    let Engines::One { engine, .. } = &state.engines else {
        let why = "a cluster node's log is its partitions' JetStream streams: back those up with \
                   `nats stream backup` (see the README's Operations)";
        return Err(ApiError::new(ErrorCode::FailedPrecondition, why));
    };
    let engine = engine.clone();
    let position = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let (last_seq, cursors) = engine.backup_position()?;
            Ok::<_, cohost_engine::Error>((last_seq, cursors, engine.erased_users()?))
        })
        .await
    };
    let (last_seq, cursors, erased) =
        position.map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let header = Header {
        format: BACKUP_FORMAT,
        last_seq,
        cursors,
        erased,
        taken_at_ms: now_ms(),
    };
    let first = frame(&serde_json::to_vec(&header).expect("a header serializes"));
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    tokio::spawn(send_records(engine, last_seq, first, sender));
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let headers = [
        (header::CONTENT_TYPE, BACKUP_CONTENT_TYPE.to_owned()),
        (
            header::HeaderName::from_static("cohost-backup-seq"),
            last_seq.to_string(),
        ),
    ];
    Ok((headers, axum::body::Body::from_stream(body)).into_response())
}

type Chunk = Result<Bytes, std::io::Error>;

/// Feeds the stream chunk by chunk; an error ends the body abruptly, so the client sees a cut stream.
async fn send_records(
    engine: Engine,
    last_seq: u64,
    first: Bytes,
    sender: tokio::sync::mpsc::Sender<Chunk>,
) {
    if sender.send(Ok(first)).await.is_err() {
        return;
    }
    let mut next = 1;
    while next <= last_seq {
        let read = {
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || engine.log_records(next, last_seq, CHUNK_BYTES))
                .await
        };
        let chunk = match read {
            Ok(Ok(records)) if !records.is_empty() => {
                next = records.last().map_or(next, |r| r.last_seq + 1);
                let mut chunk = Vec::new();
                records
                    .iter()
                    .for_each(|r| chunk.extend_from_slice(&frame(&r.bytes)));
                Ok(Bytes::from(chunk))
            }
            Ok(Ok(_)) => Err(format!("the log ends before seq {next}")),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let failed = chunk.is_err();
        if let Err(why) = &chunk {
            tracing::warn!(error = %why, "a backup stream stopped");
        }
        if sender
            .send(chunk.map_err(std::io::Error::other))
            .await
            .is_err()
            || failed
        {
            return;
        }
    }
}

/// `cohostd backup`: fetches the stream from `url` with the admin secret and writes the backup into `dir`.
pub(crate) async fn run_backup(
    url: &str,
    admin_secret: &str,
    dir: &Path,
) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let endpoint = format!("{}/v1/admin/backup", url.trim_end_matches('/'));
    let mut response = (client.get(&endpoint).bearer_auth(admin_secret).send().await)
        .map_err(|e| format!("cannot reach {endpoint}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(format!("{endpoint} answered {status}: {body}"));
    }
    let mut reader = Frames::default();
    let mut writer: Option<(BackupWriter, Header)> = None;
    let cut = |e: reqwest::Error| format!("the backup stream broke: {e}");
    let stalled = |_| {
        format!(
            "the backup stream sent nothing for {}s",
            STALL_TIMEOUT.as_secs()
        )
    };
    while let Some(chunk) = (tokio::time::timeout(STALL_TIMEOUT, response.chunk()).await)
        .map_err(stalled)?
        .map_err(cut)?
    {
        reader.extend(&chunk);
        while let Some(frame) = reader.next()? {
            match &mut writer {
                None => writer = Some(start(dir, &frame)?),
                Some((writer, _)) => writer.push(&frame).map_err(|e| e.to_string())?,
            }
        }
    }
    let (writer, header) = writer.ok_or("the backup stream was empty")?;
    if !reader.is_empty() || writer.next_seq() != header.last_seq + 1 {
        return Err(format!(
            "the backup stream was cut short at seq {} of {}; {} holds no finished backup",
            writer.next_seq() - 1,
            header.last_seq,
            dir.display()
        ));
    }
    let manifest = (writer.finish(
        header.last_seq,
        header.cursors,
        header.erased,
        header.taken_at_ms,
    ))
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "backed up the log up to seq {} ({} records) into {}",
        manifest.last_seq,
        manifest.records,
        dir.display()
    ))
}

fn start(dir: &Path, frame: &[u8]) -> Result<(BackupWriter, Header), String> {
    let header: Header = serde_json::from_slice(frame)
        .map_err(|e| format!("the backup stream's header does not read: {e}"))?;
    if header.format != BACKUP_FORMAT {
        let format = header.format;
        return Err(format!(
            "the daemon writes backup format {format}; this build reads {BACKUP_FORMAT}"
        ));
    }
    Ok((
        BackupWriter::create(dir).map_err(|e| e.to_string())?,
        header,
    ))
}

/// Splits the stream into frames as its bytes arrive.
#[derive(Default)]
struct Frames {
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`; what is before it was taken.
    start: usize,
}

impl Frames {
    fn extend(&mut self, bytes: &[u8]) {
        self.buffer.drain(..self.start);
        self.start = 0;
        self.buffer.extend_from_slice(bytes);
    }

    fn is_empty(&self) -> bool {
        self.start == self.buffer.len()
    }

    fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        let rest = &self.buffer[self.start..];
        let Some(length) = rest.get(..4) else {
            return Ok(None);
        };
        let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
        if length > BACKUP_RECORD_BYTES_MAX {
            return Err(format!("the backup stream holds a frame of {length} bytes"));
        }
        let Some(frame) = rest.get(4..4 + length) else {
            return Ok(None);
        };
        let frame = frame.to_vec();
        self.start += 4 + length;
        Ok(Some(frame))
    }
}

/// `cohostd restore`: rebuilds `data_dir` (new or empty) from the backup in `from`.
pub(crate) fn run_restore(from: &Path, data_dir: &Path) -> Result<String, String> {
    let manifest = cohost_engine::restore(from, data_dir).map_err(|e| e.to_string())?;
    Ok(format!(
        "restored the log up to seq {} ({} records) into {}; a JetStream stream that went past it is refused \
         when the daemon starts, with the way out",
        manifest.last_seq,
        manifest.records,
        data_dir.display()
    ))
}
