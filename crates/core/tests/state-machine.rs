//! The core against a separate, deliberately simple reference model (`cohost-model`), over random command
//! sequences in several rooms with the clock advancing. After every step the test compares the outcome and
//! the rooms, and checks the invariants.

use std::collections::HashMap;

use cohost_core::{Context, RoomState, Tallies, apply, decide};
use cohost_model::{
    Dice, Model, ROOMS, Step, TTL_MS, USERS, Who, compare_room, model_step, room_name, to_command,
    user_name,
};
use cohost_proto::codec::{decode_stored, encode_stored};
use cohost_proto::{Actor, Envelope, RoomId, RoomStatus, UserId};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(model: &Model) -> BoxedStrategy<Step> {
        let model = model.clone();
        let dice = (
            (
                0..ROOMS,
                any::<u8>(),
                0u8..10,
                0..USERS,
                0..USERS,
                0usize..16,
            ),
            (any::<bool>(), 0u64..TTL_MS, 0u8..20, 0u8..24, any::<bool>()),
        );
        dice.prop_map(
            move |(
                (room, op, who, user, other, offer),
                (online, tick_ms, version, max_cohosts, bad_title),
            )| {
                model.roll(Dice {
                    room,
                    op,
                    who,
                    user,
                    other,
                    offer,
                    online,
                    tick_ms,
                    version,
                    max_cohosts,
                    bad_title,
                })
            },
        )
        .boxed()
    }

    fn apply(mut model: Model, step: &Step) -> Model {
        model.last = match *step {
            Step::Tick(ms) => {
                model.now_ms += ms;
                None
            }
            Step::Command {
                room,
                who,
                op,
                expected_version,
            } => Some(model_step(&mut model, room, who, op, expected_version)),
        };
        model
    }
}

// ---------------------------------------------------------------------------------------------------------
// The system under test: cohost-core, with a log of postcard records as the engine would keep.

struct Core {
    now_ms: u64,
    rooms: HashMap<RoomId, RoomState>,
    log: Vec<Vec<u8>>,
}

impl StateMachineTest for Core {
    type SystemUnderTest = Core;
    type Reference = Reference;

    fn init_test(_: &Model) -> Core {
        Core {
            now_ms: 0,
            rooms: HashMap::new(),
            log: Vec::new(),
        }
    }

    fn apply(mut core: Core, model: &Model, step: Step) -> Core {
        let Step::Command {
            room,
            who,
            op,
            expected_version,
        } = step
        else {
            let Step::Tick(ms) = step else { unreachable!() };
            core.now_ms += ms;
            return core;
        };
        let actor = match who {
            Who::User(user) => Actor::User(user_name(user)),
            Who::System => Actor::System,
        };
        let command = to_command(room, op);
        let room_id = command.room_id().clone();
        let tallies = Scanned::of(core.rooms.values());
        let state = core.rooms.entry(room_id.clone()).or_default();
        let ctx = Context {
            actor: &actor,
            now_ms: core.now_ms,
            expected_version,
            policy: cohost_model::policy(),
            tallies: &tallies,
        };
        let log_len = core.log.len();
        let outcome = decide(state, &command, &ctx);
        let expected = model.last.expect("a command step records its outcome");
        match (&outcome, expected) {
            (Ok(events), Ok(count)) => {
                assert_eq!(events.len() as u64, count, "{command:?} by {actor:?}")
            }
            (Err(rejection), Err(code)) => assert_eq!(
                rejection.code(),
                code,
                "{command:?} by {actor:?}: {rejection}"
            ),
            _ => panic!(
                "{command:?} by {actor:?}: core gave {outcome:?}, model expects {expected:?}"
            ),
        }
        for event in outcome.unwrap_or_default() {
            apply(state, &event);
            let envelope = Envelope {
                seq: core.log.len() as u64 + 1,
                room_id: room_id.clone(),
                version: state.version(),
                at_ms: core.now_ms,
                actor: actor.user().cloned(),
                service: None,
                command_id: None,
                event,
            };
            core.log.push(encode_stored(&envelope));
        }
        if expected.is_err() {
            assert_eq!(core.log.len(), log_len, "a rejected command emits nothing");
        }
        core
    }

    fn check_invariants(core: &Core, model: &Model) {
        let mut rebuilt: HashMap<RoomId, RoomState> = HashMap::new();
        let mut versions: HashMap<RoomId, u64> = HashMap::new();
        for (index, bytes) in core.log.iter().enumerate() {
            let envelope = decode_stored(bytes)
                .expect("every record decodes")
                .into_envelope();
            assert_eq!(envelope.seq, index as u64 + 1, "seq is gap-free from 1");
            let version = versions.entry(envelope.room_id.clone()).or_default();
            *version += 1;
            assert_eq!(
                envelope.version, *version,
                "room version is gap-free from 1"
            );
            apply(
                rebuilt.entry(envelope.room_id.clone()).or_default(),
                &envelope.event,
            );
        }
        for (room_ix, expected) in model.rooms.iter().enumerate() {
            let room_id = room_name(room_ix);
            let live = core.rooms.get(&room_id).cloned().unwrap_or_default();
            let folded = rebuilt.remove(&room_id).unwrap_or_default();
            assert_eq!(folded, live, "folding the log rebuilds the live state");
            compare_room(&live, expected.as_ref());
        }
    }
}

/// The case count: `PROPTEST_CASES` when set (`just proptest` runs many more), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

prop_state_machine! {
    #![proptest_config(Config { cases: cases(1024), ..Config::default() })]

    #[test]
    fn core_matches_the_reference_model(sequential 1..=60 => Core);
}

/// The quotas' counts across the core's rooms, by scanning them (a third reading, beside the engine's
/// incremental tallies and the model's).
#[derive(Debug, Default)]
struct Scanned {
    open_rooms: HashMap<UserId, u32>,
    pending: HashMap<UserId, u32>,
}

impl Scanned {
    fn of<'a>(rooms: impl Iterator<Item = &'a RoomState>) -> Self {
        let mut scanned = Self::default();
        for state in rooms {
            let Some(room) = state.room() else { continue };
            if room.status != RoomStatus::Ended {
                *scanned.open_rooms.entry(room.host.clone()).or_default() += 1;
            }
            for invitation in state.pending() {
                *scanned
                    .pending
                    .entry(invitation.user_id.clone())
                    .or_default() += 1;
            }
        }
        scanned
    }
}

impl Tallies for Scanned {
    fn open_rooms(&self, host: &UserId) -> u32 {
        self.open_rooms.get(host).copied().unwrap_or(0)
    }

    fn pending_offers(&self, user: &UserId) -> u32 {
        self.pending.get(user).copied().unwrap_or(0)
    }
}
