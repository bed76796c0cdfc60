use cohost_proto::{Accepted, Command, Event, Reply};

use crate::RoomState;

/// The contract's reply body for a command that succeeded, read from the state after its events.
///
/// accept's `broadcaster` is left `None`: minting credentials is the engine's job, not a rule. Allocates a
/// clone of the room or invitation.
///
/// # Panics
///
/// When `events` are not what `decide` returned for `command`, already applied to `state`: the room or
/// invitation it answers with is then missing, a bug in the caller.
pub fn reply(state: &RoomState, command: &Command, events: &[Event]) -> Reply {
    let invitation = |id| {
        // The command just succeeded on this invitation, and settled invitations are kept at least until
        // ENDED_KEPT_MAX more end, which cannot happen within one command.
        state
            .invitation(id)
            .expect("the invitation a command succeeded on is held")
            .clone()
    };
    match command {
        Command::Invite(_) | Command::RequestToJoin(_) => {
            let created = events.iter().find_map(Event::invitation);
            Reply::Invitation(created.expect("invite emits invitation_created").clone())
        }
        Command::AcceptInvitation(t) => Reply::Accepted(Accepted {
            invitation: invitation(&t.invitation_id),
            broadcaster: None,
        }),
        Command::RejectInvitation(t) | Command::CancelInvitation(t) | Command::Expire(t) => {
            Reply::Invitation(invitation(&t.invitation_id))
        }
        Command::CreateRoom(_)
        | Command::GoLive(_)
        | Command::StopRoom(_)
        | Command::RemoveCohost(_)
        | Command::LeaveStage(_)
        | Command::Presence(_)
        | Command::Disconnect(_)
        | Command::EndAbandoned(_)
        | Command::AddModerator(_)
        | Command::RemoveModerator(_)
        | Command::SetRequestsOpen(_)
        | Command::MoveCohost(_)
        | Command::LockSeat(_)
        | Command::UnlockSeat(_)
        | Command::BanUser(_)
        | Command::UnbanUser(_)
        | Command::SetCohostMedia(_) => Reply::Room(
            state
                .room()
                .expect("the room a command succeeded on exists")
                .clone(),
        ),
    }
}
