//! A retried accept mints only for the seat its own invitation gave: after a removal and a new seat through
//! another invitation, the old accept's retry carries no token.

mod support;

use std::sync::Arc;

use cohost_credentials::{Credentials, LiveKitConfig, Minter};
use cohost_engine::{Config, Engine, ManualClock, Options};
use cohost_proto::{Accepted, Command, CommandId, Reply};
use support::{accept, actor, create, go_live, invite, remove};

#[tokio::test]
async fn a_retried_accept_after_a_new_seat_gets_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let engine =
        Engine::open(Config::new(dir.path()).with_clock(Arc::new(ManualClock::new(1_000))))
            .unwrap();
    let credentials = Credentials::new(engine.clone(), Minter::new(LiveKitConfig::dev()));
    let run = async |steps: Vec<(&str, Command)>| {
        for (who, command) in steps {
            let reply = credentials.execute(actor(who), command, Options::default());
            reply.await.unwrap();
        }
    };
    let keyed = Options {
        command_id: Some(CommandId::new("bob-accept-1").unwrap()),
        expected_version: None,
    };
    let accept_keyed = async |what: &str| -> Accepted {
        let reply = credentials.execute(actor("bob"), accept(1), keyed.clone());
        match reply.await.unwrap() {
            Reply::Accepted(accepted) => accepted,
            other => panic!("{what} replies {other:?}, not accepted"),
        }
    };

    run(vec![
        ("alice", create()),
        ("alice", go_live()),
        ("alice", invite("bob")),
    ])
    .await;
    let first = accept_keyed("accept").await;
    assert!(
        first.broadcaster.is_some(),
        "the new co-host gets credentials"
    );
    // bob is removed, invited again and seated through invitation 2.
    run(vec![
        ("alice", remove("bob")),
        ("alice", invite("bob")),
        ("bob", accept(2)),
    ])
    .await;
    let retried = accept_keyed("a retry").await;
    assert_eq!(
        retried.invitation, first.invitation,
        "the retry replays the first reply"
    );
    assert!(
        retried.broadcaster.is_none(),
        "the seat is invitation 2's, not the retried invitation 1's"
    );
    engine.shutdown().await;
}
