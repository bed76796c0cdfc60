//! Credentials at the moment of entitlement: accept's reply carries them for the new co-host, and
//! `broadcaster_data` mints them again while the seat is held.

use cohost_engine::{Engine, Error, Options};
use cohost_proto::{Actor, BroadcasterData, BroadcasterRole, Command, Reply, RoomId, UserId};

use crate::Minter;

/// The engine with LiveKit credentials added where the contract gives them. Cheap to clone: both halves are
/// handles.
///
/// # Examples
///
/// ```
/// use cohost_credentials::{Credentials, LiveKitConfig, Minter};
/// use cohost_engine::{Config, Engine, Options};
/// use cohost_proto::{
///     Actor, BroadcasterRole, Command, CreateRoom, ErrorCode, InvitationId, InvitationTarget, Invite,
///     Reply, RoomId, RoomTarget, UserId,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let dir = tempfile::tempdir().unwrap();
/// let engine = Engine::open(Config::new(dir.path())).unwrap();
/// let credentials = Credentials::new(engine.clone(), Minter::new(LiveKitConfig::dev()));
///
/// let room_id = RoomId::new("stage-1").unwrap();
/// let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
/// let run = |by: &UserId, command| credentials.execute(Actor::User(by.clone()), command, Options::default());
/// run(&alice, Command::CreateRoom(CreateRoom { room_id: room_id.clone(), title: None, max_cohosts: None }))
///     .await.unwrap();
/// run(&alice, Command::GoLive(RoomTarget { room_id: room_id.clone() })).await.unwrap();
/// run(&alice, Command::Invite(Invite { room_id: room_id.clone(), user_id: bob.clone(), seat: None }))
///     .await.unwrap();
///
/// // Bob's accept seats him in a live room: the reply carries his co-host token.
/// let invitation_id = InvitationId::new(room_id.clone(), 1).unwrap();
/// let accept = Command::AcceptInvitation(InvitationTarget { invitation_id });
/// let Reply::Accepted(accepted) = run(&bob, accept).await.unwrap() else { unreachable!() };
/// let broadcaster = accepted.broadcaster.expect("a seat in a live room");
/// assert_eq!(broadcaster.role, BroadcasterRole::Cohost);
/// assert_eq!(broadcaster.url, "ws://localhost:7880");
///
/// // The host gets a host token on request; someone without a seat gets none.
/// assert_eq!(credentials.broadcaster_data(&room_id, &alice).unwrap().role, BroadcasterRole::Host);
/// let carol = UserId::new("carol").unwrap();
/// let refused = credentials.broadcaster_data(&room_id, &carol).unwrap_err();
/// assert_eq!(refused.code(), ErrorCode::PermissionDenied);
/// engine.shutdown().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Credentials {
    engine: Engine,
    minter: Minter,
}

impl Credentials {
    /// Credentials over `engine`, signed by `minter`. Calls nothing: LiveKit is never contacted to mint.
    pub fn new(engine: Engine, minter: Minter) -> Self {
        Self { engine, minter }
    }

    /// The engine underneath, for everything that carries no credentials (reads, subscriptions).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The signer, and through it the LiveKit settings.
    pub fn minter(&self) -> &Minter {
        &self.minter
    }

    /// Runs a command like `Engine::execute`. When an accept seats its caller (the candidate of an invite) in a
    /// live room, the reply also carries that co-host's credentials, minted now; an idempotent retry mints
    /// fresh ones while the seat is still held.
    ///
    /// Waits, like `Engine::execute`, until the command's batch is durable; signing adds no IO.
    ///
    /// # Errors
    ///
    /// The engine's [`Error`] for the command, unchanged; [`Error::Internal`] when the token cannot be signed
    /// (then the accept has been applied, and `broadcaster_data` can be asked again).
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
        // The reply is as served: an erased user is named by their pseudonym in it.
        if accepted.invitation.user_id == self.engine.served_id(user) {
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

    /// `get_broadcaster_data`: credentials for the host or a seated co-host of a live room, minted now from the
    /// read model (it does not wait for the writer, and never blocks on IO).
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] with `failed_precondition` (the room is not live, or the user's offer is not or no
    /// longer a seat), `permission_denied` (neither the host nor a candidate), or [`Error::RoomNotFound`];
    /// [`Error::Internal`] when the token cannot be signed.
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
