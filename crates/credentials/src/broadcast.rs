//! Credentials at the moment of entitlement: accept's reply carries them for the new co-host, and
//! `broadcaster_data` mints them again while the seat is held.

use cohost_engine::{Engine, Error, Options};
use cohost_proto::{Actor, BroadcasterData, BroadcasterRole, Command, Reply, RoomId, UserId};

use crate::Minter;

/// The engine with LiveKit credentials added where the contract gives them.
#[derive(Debug, Clone)]
pub struct Credentials {
    engine: Engine,
    minter: Minter,
}

impl Credentials {
    pub fn new(engine: Engine, minter: Minter) -> Self {
        Self { engine, minter }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn minter(&self) -> &Minter {
        &self.minter
    }

    /// Runs a command like `Engine::execute`. When an accept seats its caller (the candidate of an invite) in a
    /// live room, the reply also carries that co-host's credentials, minted now; an idempotent retry mints
    /// fresh ones while the seat is still held.
    pub async fn execute(
        &self,
        actor: Actor,
        command: Command,
        options: Options,
    ) -> Result<Reply, Error> {
        let reply = self.engine.execute(actor.clone(), command, options).await?;
        let Reply::Accepted(mut accepted) = reply else {
            return Ok(reply);
        };
        let Actor::User(user) = &actor else {
            return Ok(Reply::Accepted(accepted));
        };
        if &accepted.invitation.user_id == user {
            let room_id = accepted.invitation.room_id.clone();
            accepted.broadcaster = match self.engine.broadcaster_entitlement(&room_id, user) {
                // The seat must be this invitation's: a retry after a removal and a new seat gets no token.
                Ok(entitled)
                    if entitled.role == BroadcasterRole::Cohost
                        && entitled.invitation_id.as_ref()
                            == Some(&accepted.invitation.invitation_id) =>
                {
                    Some(
                        self.minter
                            .mint(&room_id, user, &entitled)
                            .map_err(|e| Error::Internal(e.to_string()))?,
                    )
                }
                // Not live (accepted in an idle room), or no longer seated (a retry after removal): no token.
                _ => None,
            };
        }
        Ok(Reply::Accepted(accepted))
    }

    /// `get_broadcaster_data`: credentials for the host or a seated co-host of a live room; otherwise the
    /// contract's `failed_precondition`, `permission_denied` or `not_found`.
    pub fn broadcaster_data(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<BroadcasterData, Error> {
        let entitled = self.engine.broadcaster_entitlement(room_id, user)?;
        self.minter
            .mint(room_id, user, &entitled)
            .map_err(|e| Error::Internal(e.to_string()))
    }
}
