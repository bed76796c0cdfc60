//! Reconciliation: LiveKit's webhooks can be lost or late, so with LiveKit admin on, the room's idea of who is
//! connected is compared with LiveKit's own list of participants (RoomService `ListParticipants`) at start and
//! then periodically, and each difference becomes a stamped `presence` command, as a webhook would have been.
//!
//! The stamp is the reconciler's clock and the participant's sid, so the presence rule orders it with the
//! webhooks: a webhook stamped later still wins, and one stamped earlier that arrives late is stale. A co-host
//! whose joining was never reported is thus seen as connected within one period, before the disconnect grace
//! (60 s by default) removes them; one whose leaving was lost is seen as away, and the grace starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cohost_engine::{Clock, Engine, Options, SeatPresence};
use cohost_proto::{Actor, Command, Presence, PresenceStamp, RoomId};
use livekit_api::services::room::RoomClient;
use livekit_api::services::{ServerError, ServiceError};
use tokio::sync::watch;

use crate::LiveKitConfig;

/// What one pass found and did.
// Public, like `reconcile`, only for tests/reconcile.rs; callers run passes through `Reconciler`.
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Rooms whose participants were listed.
    pub rooms: usize,
    /// Presence reports issued: differences found.
    pub reports: usize,
    /// Rooms LiveKit did not answer for, with why; they are tried again next pass.
    pub failed: Vec<(RoomId, String)>,
}

/// A running reconciler. Stop it before shutting the engine down; dropping it stops it too (the task ends when
/// its stop channel closes).
#[derive(Debug)]
pub struct Reconciler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reconciler {
    /// Reconciles at once, then every `every`, on a task of the current tokio runtime; it returns at once. A
    /// room LiveKit does not answer for is logged and tried again next period.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(
        engine: Engine,
        config: LiveKitConfig,
        clock: Arc<dyn Clock>,
        every: Duration,
    ) -> Reconciler {
        let client =
            RoomClient::with_api_key(&config.http_url(), &config.api_key, &config.api_secret);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let pass = reconcile(&engine, &client, &config, clock.as_ref()).await;
                for (room_id, error) in &pass.failed {
                    tracing::warn!(%room_id, %error, "could not list the LiveKit room's participants");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Reconciler { stop, task }
    }

    /// Stops it and waits for its task to end: a pass in progress ends at its next wait, so this may wait
    /// for one RoomService call.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// One pass over every live room with co-hosts seated or its host believed away.
// Public only so tests/reconcile.rs can run one pass at a time against its stand-in LiveKit; callers use
// `Reconciler`, which runs it periodically.
#[doc(hidden)]
pub async fn reconcile(
    engine: &Engine,
    client: &RoomClient,
    config: &LiveKitConfig,
    clock: &dyn Clock,
) -> Pass {
    let mut pass = Pass::default();
    for (room_id, seats) in engine.seated_presence() {
        // As of just before the list, in whole seconds less a millisecond, like LiveKit's stamps: a webhook
        // LiveKit stamps in the same second (a rejoin the list just missed) then comes after this report.
        let as_of_ms = (clock.now_ms() / 1_000 * 1_000).saturating_sub(1);
        let listed = client.list_participants(&config.room_name(&room_id)).await;
        let present: HashMap<String, String> = match listed {
            Ok(participants) => (participants.into_iter())
                .map(|p| (p.identity, p.sid))
                .collect(),
            // No LiveKit room: no one is connected.
            Err(ServiceError::Twirp(ServerError::Twirp(code))) if code.code == "not_found" => {
                HashMap::new()
            }
            Err(error) => {
                pass.failed.push((room_id, error.to_string()));
                continue;
            }
        };
        pass.rooms += 1;
        for seat in seats {
            let Some(report) = difference(&room_id, &seat, &present, as_of_ms) else {
                continue;
            };
            pass.reports += 1;
            // Refused only when the room moved on meanwhile (the seat ended, the room stopped): nothing to do.
            let applied =
                engine.execute(Actor::System, Command::Presence(report), Options::default());
            if let Err(error) = applied.await {
                tracing::debug!(%room_id, %error, "a reconciled presence report was refused");
            }
        }
    }
    pass
}

/// The report that brings the room in line with LiveKit for one seat, if they differ.
fn difference(
    room_id: &RoomId,
    seat: &SeatPresence,
    present: &HashMap<String, String>,
    now_ms: u64,
) -> Option<Presence> {
    let listed = present.get(seat.user_id.as_str());
    let participant_sid = match (listed, seat.online) {
        (Some(sid), false) => sid.clone(),
        // Gone: in the session the room last heard of, so that session's own late join is stale.
        (None, true) => seat.participant_sid.clone().unwrap_or_default(),
        // Gone, as the room knows, but with no grace running (seated before go-live and never reported, or
        // reported gone without a stamp): a report with no session starts it.
        (None, false) if !seat.away => String::new(),
        _ => return None,
    };
    Some(Presence {
        room_id: room_id.clone(),
        user_id: seat.user_id.clone(),
        online: listed.is_some(),
        stamp: Some(PresenceStamp {
            at_ms: now_ms,
            participant_sid,
        }),
    })
}
