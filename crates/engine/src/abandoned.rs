//! Abandoned rooms: one idle, never live, for longer than `idle_room_ms` since it was created, or one live with
//! its host away (as LiveKit reports) for longer than `host_absent_ms`. The sequencer ends each with
//! `end_abandoned` when its timer comes due.
//!
//! A room's state holds neither time, so they are kept here, beside the rooms in memory: when each idle room
//! was created, and since when each live room's host has been away (from a report that they left, or from
//! going live without them). Times start as commands are decided and go only once their batch is durable, so
//! a failed batch never restarts a count. After opening a log they come from the log where it still holds a
//! room's first event, else from the opening, so a restart may end a room later, never earlier; a host's
//! absence counts from the opening. A timer's `end_abandoned` is checked again when it is decided.

use std::collections::HashMap;

use cohost_core::RoomState;
use cohost_proto::{Command, EndAbandoned, Event, RoomId, RoomStatus, StopReason};

use crate::timers::Due;

/// How long a room may be abandoned, in ms; 0 never ends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Limits {
    /// An idle room's life from its creation.
    pub idle_room_ms: u64,
    /// A live room's host's absence.
    pub host_absent_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Abandoned {
    limits: Limits,
    /// When each idle room was created.
    created_ms: HashMap<RoomId, u64>,
    /// Since when each live room's host has been away.
    host_away_ms: HashMap<RoomId, u64>,
}

impl Abandoned {
    /// The times for the rooms of an opened log, as of `now_ms`: `created_ms` holds the creation times the
    /// log still had.
    pub fn resume<'a>(
        limits: Limits,
        rooms: impl Iterator<Item = (&'a RoomId, &'a RoomState)>,
        mut created_ms: HashMap<RoomId, u64>,
        now_ms: u64,
    ) -> Self {
        let mut host_away_ms = HashMap::new();
        let mut idle = HashMap::new();
        for (room_id, state) in rooms {
            match state.room().map(|room| room.status) {
                Some(RoomStatus::Idle) => {
                    let since = created_ms.remove(room_id).unwrap_or(now_ms);
                    idle.insert(room_id.clone(), since);
                }
                Some(RoomStatus::Live) if !state.host_online() => {
                    host_away_ms.insert(room_id.clone(), now_ms);
                }
                _ => {}
            }
        }
        Self {
            limits,
            created_ms: idle,
            host_away_ms,
        }
    }

    /// Follows a command's events on `room_id`, `state` as they left it, decided at `now_ms`: a creation, a
    /// go-live without the host, and the host's leaving start a time here, and return the timer it starts.
    /// Nothing is forgotten until the batch is durable ([`Abandoned::settle`]), so a failed batch leaves the
    /// times it found.
    pub fn on_events(
        &mut self,
        room_id: &RoomId,
        state: &RoomState,
        events: &[Event],
        now_ms: u64,
    ) -> Option<(u64, Due)> {
        let room = state.room()?;
        let mut started = false;
        for event in events {
            let since = match event {
                Event::RoomCreated { .. } => {
                    self.created_ms.insert(room_id.clone(), now_ms);
                    started = true;
                    continue;
                }
                // Away from going live on, at the earliest: a host may join LiveKit only then.
                Event::RoomLive { .. } if !state.host_online() => now_ms,
                // A stamped report dates the leaving by LiveKit's clock, as a co-host's does.
                Event::PresenceChanged {
                    user_id,
                    online: false,
                    stamp,
                } if user_id == &room.host => stamp.as_ref().map_or(now_ms, |s| s.at_ms),
                _ => continue,
            };
            let away = self.host_away_ms.entry(room_id.clone()).or_insert(since);
            *away = since.max(*away);
            started = true;
        }
        started.then(|| self.deadline(room_id)).flatten()
    }

    /// The batch that touched `room_id` is durable, and the room is at `state`: the times it no longer needs
    /// go (a room gone live is not idle, a host back is not away, an ended room needs neither).
    pub fn settle(&mut self, room_id: &RoomId, state: Option<&RoomState>) {
        let status = state.and_then(|s| s.room()).map(|room| room.status);
        if status != Some(RoomStatus::Idle) {
            self.created_ms.remove(room_id);
        }
        if status != Some(RoomStatus::Live) || state.is_some_and(RoomState::host_online) {
            self.host_away_ms.remove(room_id);
        }
    }

    /// After a failed batch, `room_id` is back at `state` (`None`: it is gone): the times the batch started
    /// go, those from before it stay, and a room the state shows idle or without its host but with no time
    /// counts from `now_ms`. Returns its timer, if any (the batch's own were never armed).
    pub fn reset(
        &mut self,
        room_id: &RoomId,
        state: Option<&RoomState>,
        now_ms: u64,
    ) -> Option<(u64, Due)> {
        self.settle(room_id, state);
        match state.and_then(|s| s.room()).map(|room| room.status) {
            Some(RoomStatus::Idle) => {
                self.created_ms.entry(room_id.clone()).or_insert(now_ms);
            }
            Some(RoomStatus::Live) if !state.is_some_and(RoomState::host_online) => {
                self.host_away_ms.entry(room_id.clone()).or_insert(now_ms);
            }
            _ => {}
        }
        self.deadline(room_id)
    }

    /// The room's timer: when it is abandoned if nothing changes.
    fn deadline(&self, room_id: &RoomId) -> Option<(u64, Due)> {
        let Limits {
            idle_room_ms,
            host_absent_ms,
        } = self.limits;
        if let Some(&since) = self.created_ms.get(room_id).filter(|_| idle_room_ms > 0) {
            return Some((
                since.saturating_add(idle_room_ms),
                Due::NeverLive(room_id.clone()),
            ));
        }
        let since = self
            .host_away_ms
            .get(room_id)
            .filter(|_| host_absent_ms > 0)?;
        Some((
            since.saturating_add(host_absent_ms),
            Due::HostAbsent(room_id.clone()),
        ))
    }

    /// Every room's timer, for a rebuild of the heap.
    pub fn deadlines(&self) -> impl Iterator<Item = (u64, Due)> + '_ {
        let ids = self.created_ms.keys().chain(self.host_away_ms.keys());
        ids.filter_map(|room_id| self.deadline(room_id))
    }

    /// The command that ends `room_id` for `reason` if, at `now_ms`, it is still abandoned that way.
    pub fn due(
        &self,
        room_id: &RoomId,
        reason: StopReason,
        state: Option<&RoomState>,
        now_ms: u64,
    ) -> Option<Command> {
        let state = state?;
        let status = state.room()?.status;
        let (since, limit, holds) = match reason {
            StopReason::NeverLive => (
                self.created_ms.get(room_id),
                self.limits.idle_room_ms,
                status == RoomStatus::Idle,
            ),
            _ => (
                self.host_away_ms.get(room_id),
                self.limits.host_absent_ms,
                status == RoomStatus::Live && !state.host_online(),
            ),
        };
        let passed = since.is_some_and(|&since| since.saturating_add(limit) <= now_ms);
        (holds && limit > 0 && passed).then(|| {
            Command::EndAbandoned(EndAbandoned {
                room_id: room_id.clone(),
                reason,
            })
        })
    }
}
