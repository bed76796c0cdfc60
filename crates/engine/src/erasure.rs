//! Erasure: a user's id is served as a stable pseudonym from the moment they are erased, and what they held
//! in open rooms (a hosted room, seats, pending offers, moderator roles) ends by the system's commands.
//!
//! The log keeps its bytes, so it stays replayable and gap-free; every path that serves data (command
//! replies, reads, pages, the event streams behind SSE, the relay and webhooks) rewrites the ids on the way
//! out. The store keeps each erased id with its pseudonym (`E{user_id}`), to recognise it in the log; in
//! cluster mode the cluster's bucket does, and a node's engines share one [`ErasedUsers`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use cohost_proto::{
    Actor, Command, ErrorCode, InvitationTarget, MapUsers, RoomId, RoomTarget, ServiceId, UserId,
    UserTarget,
};

use crate::{Engine, Error, Options};

/// The erased users and their pseudonyms, read on every value an engine serves. Each engine has its own,
/// loaded from its store; a cluster node gives all its engines one ([`Config::erased_users`](crate::Config)),
/// which it keeps up with the cluster's.
#[derive(Debug, Default)]
pub struct ErasedUsers {
    /// Whether anyone is erased: until then serving pays one load.
    any: AtomicBool,
    by_user: RwLock<HashMap<UserId, UserId>>,
    /// Held while an erasure is written and taken in, so the store and the map agree on every pseudonym.
    writing: Mutex<()>,
}

impl ErasedUsers {
    /// Nobody erased yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id served for `user`: their pseudonym if erased, else the id itself.
    pub fn served_id(&self, user: &UserId) -> UserId {
        if !self.any.load(Ordering::Acquire) {
            return user.clone();
        }
        self.read()
            .get(user)
            .cloned()
            .unwrap_or_else(|| user.clone())
    }

    /// From now on `user` is served as `pseudonym` by every engine that shares this; a user already here
    /// keeps the pseudonym they have, so it never changes under a reader.
    pub fn insert(&self, user: UserId, pseudonym: UserId) {
        let mut by_user = self.by_user.write().unwrap_or_else(|e| e.into_inner());
        by_user.entry(user).or_insert(pseudonym);
        self.any.store(true, Ordering::Release);
    }

    /// Whether `user` is erased.
    pub fn contains(&self, user: &UserId) -> bool {
        self.any.load(Ordering::Acquire) && self.read().contains_key(user)
    }

    /// `value` as it may be served: every erased user's id replaced by their pseudonym.
    pub fn serve<T: MapUsers>(&self, mut value: T) -> T {
        if self.any.load(Ordering::Acquire) {
            let by_user = self.read();
            value.map_users(&mut |user| by_user.get(user).cloned());
        }
        value
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<UserId, UserId>> {
        self.by_user.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The pseudonym the user is served as: the one given, or the one of an earlier erasure of the same user.
    pub pseudonym: UserId,
    /// The commands that ended what the user held (stops, removals, cancellations), each applied.
    pub commands: usize,
    /// The open rooms in which at least one of those commands was applied.
    pub rooms: usize,
}

impl Engine {
    /// Erases `user`: from now on every value the engine serves names them `pseudonym` (or the pseudonym of an
    /// earlier erasure: it is stable), and `service` ends what they hold in open rooms: a room they host is
    /// stopped, and elsewhere their pending offers are cancelled, their seat removed and their moderator role
    /// ended, each as its own command (the events name the service). Running it again finishes what a failed
    /// run left; a command the room no longer needs (the user left meanwhile) is passed over.
    ///
    /// The log's bytes are not rewritten: it stays replayable, and NATS subscribers, webhook receivers and
    /// backups keep what they were sent before. The erasure itself is written and flushed (on the blocking
    /// pool) before any command. It is kept in this engine's store: a cluster partition taken over elsewhere
    /// does not carry it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `pseudonym` is `user`; the errors of [`Engine::execute`] other than a
    /// rejection for a state that moved on (`not_found`, `failed_precondition`, `conflict`); and a store's
    /// write errors.
    pub async fn erase_user(
        &self,
        service: ServiceId,
        user: &UserId,
        pseudonym: UserId,
    ) -> Result<Erasure, Error> {
        if &pseudonym == user {
            return Err(Error::invalid_argument(
                "a pseudonym must differ from the id it replaces",
            ));
        }
        let pseudonym = {
            let (shared, user) = (self.shared.clone(), user.clone());
            tokio::task::spawn_blocking(move || record(&shared, &user, pseudonym))
                .await
                .map_err(|e| Error::Internal(format!("recording an erasure: {e}")))??
        };
        let (rooms, commands) = self.end_holdings(service, user).await?;
        Ok(Erasure {
            pseudonym,
            commands,
            rooms,
        })
    }

    /// The second half of [`Engine::erase_user`], for a cluster node whose erasure is recorded in the
    /// cluster's bucket: `service` ends what `user` holds in this engine's open rooms. Returns the rooms
    /// changed and the commands applied.
    ///
    /// # Errors
    ///
    /// As [`Engine::erase_user`], the store's aside.
    pub async fn end_holdings(
        &self,
        service: ServiceId,
        user: &UserId,
    ) -> Result<(usize, usize), Error> {
        self.end_holdings_of(service, |held| held == user).await
    }

    /// What a cluster node runs on a partition it has just taken: `service` ends what every erased user (of
    /// this engine's [`ErasedUsers`]) still holds in its open rooms, whatever its last owner left undone.
    /// One pass over the open rooms; nothing when no one is erased. Returns the rooms changed and the
    /// commands applied.
    ///
    /// # Errors
    ///
    /// As [`Engine::end_holdings`].
    pub async fn end_erased_holdings(&self, service: ServiceId) -> Result<(usize, usize), Error> {
        let erased = self.shared.pseudonyms.clone();
        self.end_holdings_of(service, move |held| erased.contains(held))
            .await
    }

    async fn end_holdings_of(
        &self,
        service: ServiceId,
        erased: impl Fn(&UserId) -> bool,
    ) -> Result<(usize, usize), Error> {
        let (mut commands, mut rooms) = (0, std::collections::BTreeSet::new());
        // Planned from what is durable: a command queued before this one (an accept of the user's request)
        // lands after the plan, so plan again until nothing is left. The queue is first in, first out, so
        // after one round everything submitted before the erasure is durable.
        for _ in 0..PLAN_ROUNDS_MAX {
            let plan = self.erasure_plan(&erased);
            if plan.is_empty() {
                break;
            }
            for (room_id, command) in plan {
                let actor = Actor::Service(service.clone());
                match self.execute(actor, command, Options::default()).await {
                    Ok(_) => {
                        commands += 1;
                        rooms.insert(room_id);
                    }
                    Err(Error::Rejected(rejection))
                        if matches!(
                            rejection.code(),
                            ErrorCode::NotFound
                                | ErrorCode::FailedPrecondition
                                | ErrorCode::Conflict
                        ) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok((rooms.len(), commands))
    }

    /// The id the engine serves for `user`: their pseudonym once they are erased, else the id itself. What an
    /// access check compares a caller with when it reads a served room.
    pub fn served_id(&self, user: &UserId) -> UserId {
        self.shared.pseudonyms.served_id(user)
    }

    /// The commands that end what `user` holds in each open room, in the order they run: room by room, in
    /// room id order.
    fn erasure_plan(&self, erased: &impl Fn(&UserId) -> bool) -> Vec<(RoomId, Command)> {
        let read = self.read();
        let mut rooms: Vec<_> = read.rooms().collect();
        rooms.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut plan = Vec::new();
        for (room_id, state) in rooms {
            let Some(room) = state.room().filter(|_| !state.is_ended()) else {
                continue;
            };
            let room_id = room_id.clone();
            if erased(&room.host) {
                let stop = Command::StopRoom(RoomTarget {
                    room_id: room_id.clone(),
                });
                plan.push((room_id, stop));
                continue;
            }
            for offer in state.pending().filter(|offer| erased(&offer.user_id)) {
                let target = InvitationTarget {
                    invitation_id: offer.invitation_id.clone(),
                };
                plan.push((room_id.clone(), Command::CancelInvitation(target)));
            }
            let target = |user: &UserId| UserTarget {
                room_id: room_id.clone(),
                user_id: user.clone(),
            };
            for seat in room.cohosts.iter().filter(|seat| erased(&seat.user_id)) {
                plan.push((
                    room_id.clone(),
                    Command::RemoveCohost(target(&seat.user_id)),
                ));
            }
            for moderator in room.moderators.iter().filter(|m| erased(m)) {
                plan.push((room_id.clone(), Command::RemoveModerator(target(moderator))));
            }
        }
        plan
    }
}

/// Rounds of planning and commands one erasure runs at most: each round ends what was durable when it
/// began, so a second one only catches commands queued before the erasure.
const PLAN_ROUNDS_MAX: usize = 4;

/// Writes and flushes the erasure, then takes it in: the pseudonym the user is served as from now on (an
/// earlier erasure's, if any). On the blocking pool, and whole even if the caller stops waiting.
fn record(shared: &crate::Shared, user: &UserId, pseudonym: UserId) -> Result<UserId, Error> {
    let pseudonyms = &shared.pseudonyms;
    let _writing = pseudonyms.writing.lock().unwrap_or_else(|e| e.into_inner());
    let store = shared.store()?;
    let pseudonym = store.set_erased(user, &pseudonym).map_err(|error| {
        if let Some(cause) = store.flush_failure() {
            shared.fail(format!("a flush failed: {cause}"));
        }
        Error::from(error)
    })?;
    pseudonyms.insert(user.clone(), pseudonym.clone());
    Ok(pseudonym)
}
