//! Revocation: when a co-host is removed or leaves, or the room stops, remove the participant from the LiveKit
//! room and revoke the tokens issued before, through LiveKit's RoomService.
//!
//! It runs off the command path and is driven by the log from a durable cursor (sink `livekit`), like the NATS
//! relay: a crash never skips a removal. Each event's calls are retried with capped backoff until LiveKit
//! accepts them (a participant LiveKit no longer has counts as removed), and the cursor moves after each event,
//! so a restart repeats at most the one event in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cohost_engine::{Backoff, Engine, Interest};
use cohost_proto::{Envelope, Event, UserId};
use livekit_api::services::room::{RemoveParticipantOptions, RoomClient};
use livekit_api::services::{ServerError, ServiceError};
use tokio::sync::watch;

use crate::LiveKitConfig;

/// The cursor's name in the store.
pub const SINK: &str = "livekit";

/// The participants an event takes off the stage: the co-host removed or leaving, or everyone on a stopped
/// room's stage (its co-hosts and its host).
pub fn participants_to_remove(event: &Event) -> Vec<UserId> {
    match event {
        Event::CohostRemoved { user_id, .. } | Event::CohostLeft { user_id, .. } => {
            vec![user_id.clone()]
        }
        Event::RoomStopped { room } => {
            let mut users: Vec<UserId> = room
                .cohosts
                .iter()
                .map(|seat| seat.user_id.clone())
                .collect();
            users.push(room.host.clone());
            users
        }
        _ => Vec::new(),
    }
}

/// A running revoker. Stop it before shutting the engine down; dropping it stops it too.
#[derive(Debug)]
pub struct Revoker {
    done_seq: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Revoker {
    /// Starts following the log from the `livekit` cursor.
    pub fn start(engine: Engine, config: LiveKitConfig) -> Result<Revoker, cohost_engine::Error> {
        let cursor = engine.cursor(SINK)?;
        let done_seq = Arc::new(AtomicU64::new(cursor));
        let client =
            RoomClient::with_api_key(&config.http_url(), &config.api_key, &config.api_secret);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            engine,
            client,
            config,
            cursor,
            done_seq.clone(),
            stopped,
        ));
        Ok(Revoker {
            done_seq,
            stop,
            task,
        })
    }

    /// The last seq whose removals are done (and the cursor holds).
    pub fn done_seq(&self) -> u64 {
        self.done_seq.load(Ordering::Relaxed)
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run(
    engine: Engine,
    client: RoomClient,
    config: LiveKitConfig,
    cursor: u64,
    done_seq: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut events = engine.subscribe(cursor + 1, Interest::All);
    loop {
        let envelope = tokio::select! {
            next = events.next() => match next {
                Some(Ok(envelope)) => envelope,
                Some(Err(error)) => {
                    tracing::error!(%error, "revoker cannot read the log");
                    return;
                }
                None => return,
            },
            _ = stopped.changed() => return,
        };
        if !remove_all(&client, &config, &envelope, &mut stopped).await {
            return;
        }
        // The cursor need not be written for events that remove nobody; it is written with the next that does.
        if !participants_to_remove(&envelope.event).is_empty() {
            let mut backoff = Backoff::new(BACKOFF_MAX);
            while let Err(error) = engine.set_cursor(SINK, envelope.seq) {
                tracing::warn!(%error, "revoker cannot save its cursor; retrying");
                if !backoff.sleep_unless_stopped(&mut stopped).await {
                    return;
                }
            }
        }
        done_seq.store(envelope.seq, Ordering::Relaxed);
    }
}

/// Removes every participant the event takes off the stage; false once stopped.
async fn remove_all(
    client: &RoomClient,
    config: &LiveKitConfig,
    envelope: &Envelope,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let room = config.room_name(&envelope.room_id);
    for user in participants_to_remove(&envelope.event) {
        // Seconds, like a token's `nbf`; rounded up so a token minted earlier in the same second is revoked too.
        let options = RemoveParticipantOptions {
            revoke_token_ts: envelope.at_ms.div_ceil(1_000) as i64,
        };
        let mut backoff = Backoff::new(BACKOFF_MAX);
        loop {
            let call =
                client.remove_participant_with_options(&room, user.as_str(), options.clone());
            let outcome = tokio::select! {
                outcome = call => outcome,
                _ = stopped.changed() => return false,
            };
            match outcome {
                Ok(()) => break,
                Err(ServiceError::Twirp(ServerError::Twirp(code))) if code.code == "not_found" => {
                    break;
                }
                Err(ServiceError::Twirp(ServerError::Twirp(code)))
                    if matches!(code.code.as_str(), "unauthenticated" | "permission_denied") =>
                {
                    // A configuration error (wrong key or secret) does not heal by itself: say it loudly.
                    tracing::error!(%code, %room, %user, seq = envelope.seq, "LiveKit refused the removal; check the API key");
                }
                Err(error) => {
                    tracing::warn!(%error, %room, %user, seq = envelope.seq, "LiveKit removal failed; retrying");
                }
            }
            if !backoff.sleep_unless_stopped(stopped).await {
                return false;
            }
        }
    }
    true
}

/// The longest wait between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
