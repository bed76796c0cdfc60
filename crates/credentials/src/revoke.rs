//! Revocation: when a co-host is removed or leaves, a user is banned, or the room stops, remove the participant
//! from the LiveKit room and revoke the tokens issued before, through LiveKit's RoomService; when a co-host's media
//! is set, apply what they may publish to the participant.
//!
//! It runs off the command path and is driven by the log from a durable cursor (sink `livekit`), like the NATS
//! relay: a crash never skips a removal. Each event's calls are retried with capped backoff until LiveKit
//! accepts them (a participant LiveKit no longer has counts as removed), and the cursor moves after each event,
//! so a restart repeats at most the one event in flight.
//!
//! It is supervised like the relay: every failure (LiveKit refusing or unreachable, a log read that fails, a
//! cursor write) is retried with capped backoff, from the last event handled, until it is stopped; its state,
//! last error, retries and last handled seq are in [`Revoker::status`], and a warning is logged at the first
//! failure of a streak and then at most once a minute.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use cohost_engine::{
    Backoff, Clock, Engine, FollowerSnapshot, FollowerStatus, Interest, SystemClock,
};
use cohost_proto::{Envelope, Event, UserId};
use livekit_api::services::room::{RemoveParticipantOptions, RoomClient, UpdateParticipantOptions};
use livekit_api::services::{ServerError, ServiceError};
use livekit_protocol::{ParticipantPermission, TrackSource};
use tokio::sync::watch;

use crate::LiveKitConfig;

/// The name of the revoker's durable cursor in the store: the seq of the last event whose calls LiveKit took.
pub const SINK: &str = "livekit";
/// The revoker's name among the log's followers, as `/healthz` and `/metrics` show it.
pub const FOLLOWER: &str = "revoker";

/// What LiveKit must be told of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LiveKitCall {
    /// Remove the participant and revoke the tokens issued before the event.
    Remove(UserId),
    /// Replace the participant's permissions with what the seat may publish.
    Permissions {
        user_id: UserId,
        audio: bool,
        video: bool,
    },
}

/// The calls an event needs, in order.
fn calls_for(event: &Event) -> Vec<LiveKitCall> {
    match event {
        Event::CohostMediaChanged {
            user_id,
            audio,
            video,
        } => vec![LiveKitCall::Permissions {
            user_id: user_id.clone(),
            audio: *audio,
            video: *video,
        }],
        _ => participants_to_remove(event)
            .into_iter()
            .map(LiveKitCall::Remove)
            .collect(),
    }
}

/// The participants an event takes off the stage: the co-host removed or leaving, a banned user (seated or
/// not: a viewer is removed too), or everyone on a stopped room's stage (its co-hosts and its host).
fn participants_to_remove(event: &Event) -> Vec<UserId> {
    match event {
        Event::CohostRemoved { user_id, .. }
        | Event::CohostLeft { user_id, .. }
        | Event::UserBanned { user_id, .. } => vec![user_id.clone()],
        Event::RoomStopped { room, .. } => {
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

/// A running revoker. Stop it before shutting the engine down; dropping it stops it too. It ends only when
/// stopped, dropped, or when the engine it follows has shut down.
#[derive(Debug)]
pub struct Revoker {
    follower: Arc<FollowerStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Revoker {
    /// Starts following the log from the `livekit` cursor ([`SINK`]), on a task of the current tokio runtime.
    /// It returns at once; LiveKit is first called when an event needs it.
    ///
    /// # Errors
    ///
    /// The engine's error when the cursor cannot be read (a store that fails, an engine shut down).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(engine: Engine, config: LiveKitConfig) -> Result<Revoker, cohost_engine::Error> {
        let cursor = engine.cursor(SINK)?;
        let follower = Arc::new(FollowerStatus::new(FOLLOWER, cursor));
        let client =
            RoomClient::with_api_key(&config.http_url(), &config.api_key, &config.api_secret);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(
            Task {
                engine,
                client,
                config,
                follower: follower.clone(),
                stopped,
            }
            .run(),
        );
        Ok(Revoker {
            follower,
            stop,
            task,
        })
    }

    /// The last seq whose removals are done (and the cursor holds).
    pub fn done_seq(&self) -> u64 {
        self.follower.handled_seq()
    }

    /// The revoker's state, last error, retries and last handled seq.
    pub fn status(&self) -> FollowerSnapshot {
        self.follower.snapshot()
    }

    /// The status the revoker writes, for readers that outlive a borrow of it (`/healthz`, `/metrics`).
    pub fn follower(&self) -> Arc<FollowerStatus> {
        self.follower.clone()
    }

    /// Stops it and waits for its task to end. A LiveKit call or backoff in progress is dropped; the event it
    /// was for is handled again on the next start (the cursor had not moved past it).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The revoker's task.
struct Task {
    engine: Engine,
    client: RoomClient,
    config: LiveKitConfig,
    follower: Arc<FollowerStatus>,
    stopped: watch::Receiver<bool>,
}

impl Task {
    /// Follows the log until stopped. A read of the log that fails is recorded and retried with backoff,
    /// subscribing again after the last event handled.
    async fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_MAX);
        loop {
            let before = self.follower.handled_seq();
            let Some(error) = self.follow().await else {
                break;
            };
            self.failed("reading the log", &error);
            if self.follower.handled_seq() > before {
                backoff.reset();
            }
            let stopped = *self.stopped.borrow();
            if stopped || !backoff.sleep_unless_stopped(&mut self.stopped).await {
                break;
            }
        }
        self.follower.stopped();
    }

    /// Handles every event after the last one handled, until stopped or the engine shuts down (`None`), or a
    /// read of the log fails (its error).
    async fn follow(&mut self) -> Option<String> {
        let from_seq = self.follower.handled_seq() + 1;
        // As stored: LiveKit knows participants by their ids, erased users' too.
        let mut events = self.engine.subscribe_as_stored(from_seq, Interest::All);
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = self.stopped.changed() => return None,
            };
            let envelope = match next? {
                Ok(envelope) => envelope,
                Err(error) => return Some(error.to_string()),
            };
            let calls = calls_for(&envelope.event);
            for call in &calls {
                if !self.call(&envelope, call).await {
                    return None;
                }
            }
            // The cursor need not be written for events that need no call; it is written with the next that does.
            if !calls.is_empty() && !self.save_cursor(envelope.seq).await {
                return None;
            }
            self.follower.handled(envelope.seq);
            self.recovered();
        }
    }

    /// Makes one call until LiveKit accepts it (a participant it no longer has counts as done); false once
    /// stopped.
    async fn call(&mut self, envelope: &Envelope, call: &LiveKitCall) -> bool {
        let room = self.config.room_name(&envelope.room_id);
        let mut backoff = Backoff::new(BACKOFF_MAX);
        loop {
            if self.superseded(envelope, call) {
                return true;
            }
            let outcome = tokio::select! {
                outcome = send(&self.client, &room, envelope, call) => outcome,
                _ = self.stopped.changed() => return false,
            };
            let error = match outcome {
                Ok(()) => return true,
                Err(ServiceError::Twirp(ServerError::Twirp(code))) if code.code == "not_found" => {
                    return true;
                }
                Err(error) => error,
            };
            self.failed_call(&error, &room, call, envelope.seq);
            if !backoff.sleep_unless_stopped(&mut self.stopped).await {
                return false;
            }
        }
    }

    /// Whether the room has moved on since the event, so the call would undo a later change. Handled late (far
    /// behind, repeated by a new owner of the partition after a takeover, or retried while LiveKit was down), a
    /// removal would cut a seat taken again since, and permissions would overwrite later ones.
    fn superseded(&self, envelope: &Envelope, call: &LiveKitCall) -> bool {
        match call {
            LiveKitCall::Remove(user) => self
                .engine
                .broadcaster_entitlement(&envelope.room_id, user)
                .is_ok(),
            LiveKitCall::Permissions {
                user_id,
                audio,
                video,
            } => !self
                .engine
                .broadcaster_entitlement(&envelope.room_id, user_id)
                .is_ok_and(|now| (now.audio, now.video) == (*audio, *video)),
        }
    }

    /// Records a call LiveKit refused or did not answer, and logs it as [`Task::failed`] does.
    fn failed_call(&self, error: &ServiceError, room: &str, call: &LiveKitCall, seq: u64) {
        let (doing, user) = match call {
            LiveKitCall::Remove(user) => ("removing", user),
            LiveKitCall::Permissions { user_id, .. } => ("setting the permissions of", user_id),
        };
        let place = if doing == "removing" { "from" } else { "in" };
        let message = format!("{doing} {user} {place} LiveKit room {room} (seq {seq}): {error}");
        let Some(in_a_row) = self.follower.failed(message, SystemClock.now_ms()) else {
            return;
        };
        if let ServiceError::Twirp(ServerError::Twirp(code)) = error
            && matches!(code.code.as_str(), "unauthenticated" | "permission_denied")
        {
            // A configuration error (wrong key or secret) does not heal by itself: say it loudly.
            tracing::error!(%code, %room, %user, seq, in_a_row, doing, "LiveKit refused the call; check the API key");
        } else {
            tracing::warn!(%error, %room, %user, seq, in_a_row, doing, "LiveKit call failed; retrying");
        }
    }

    /// Writes the cursor, retrying store failures; false once stopped.
    async fn save_cursor(&mut self, seq: u64) -> bool {
        let mut backoff = Backoff::new(BACKOFF_MAX);
        loop {
            match self.engine.set_cursor(SINK, seq) {
                Ok(()) => return true,
                Err(error) => self.failed("saving the cursor", &error),
            }
            if !backoff.sleep_unless_stopped(&mut self.stopped).await {
                return false;
            }
        }
    }

    fn failed(&self, what: &str, error: &dyn Display) {
        self.follower.retrying(what, error, SystemClock.now_ms());
    }

    fn recovered(&self) {
        self.follower.recovered();
    }
}

/// One RoomService call for `envelope`'s event.
async fn send(
    client: &RoomClient,
    room: &str,
    envelope: &Envelope,
    call: &LiveKitCall,
) -> Result<(), ServiceError> {
    match call {
        LiveKitCall::Remove(user) => {
            // Seconds, like a token's `nbf`; rounded up so a token minted earlier in the same second is revoked too.
            let options = RemoveParticipantOptions {
                revoke_token_ts: envelope.at_ms.div_ceil(1_000) as i64,
            };
            (client.remove_participant_with_options(room, user.as_str(), options)).await
        }
        LiveKitCall::Permissions {
            user_id,
            audio,
            video,
        } => {
            let options = UpdateParticipantOptions {
                permission: Some(cohost_permission(*audio, *video)),
                ..Default::default()
            };
            let info = client.update_participant(room, user_id.as_str(), options);
            info.await.map(drop)
        }
    }
}

/// A co-host's whole permission set: UpdateParticipant replaces all of it, so it carries what the co-host's
/// token grants (subscribe, data), with the sources the seat may publish, as [`crate::Minter`] mints them.
// Public only so tests/stage-calls.rs can hold it against the grants of a minted token; not an API.
#[doc(hidden)]
pub fn cohost_permission(audio: bool, video: bool) -> ParticipantPermission {
    let sources = [
        (video, TrackSource::Camera),
        (audio, TrackSource::Microphone),
    ];
    ParticipantPermission {
        can_subscribe: true,
        can_publish: audio || video,
        can_publish_data: true,
        can_publish_sources: (sources.into_iter())
            .filter(|(allowed, _)| *allowed)
            .map(|(_, source)| source as i32)
            .collect(),
        ..Default::default()
    }
}

/// The longest wait between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
