//! Bad input, as the transports hand it over (a command name and its JSON arguments), gets the contract's code
//! and changes nothing.

mod support;

use cohost_engine::Error;
use cohost_proto::{Command, ErrorCode, RoomId};
use support::*;

/// What the transports do with a command's name and arguments: parse, then run.
async fn code_of(t: &TestEngine, name: &str, args: &str) -> ErrorCode {
    match Command::from_json(name, args.as_bytes()) {
        Err(error) => Error::from(error).code(),
        Ok(command) => t.code("alice", command).await,
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = live(&[("stage", "alice")]).await;
    let before = (t.engine.last_seq(), t.engine.room_states().1);
    let bad_title = format!(r#"{{"room_id":"other","title":"{}"}}"#, "t".repeat(201));
    let cases: [(&str, &str, ErrorCode); 11] = [
        (
            "create_room",
            r#"{"room_id":"bad.id"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "create_room",
            r#"{"room_id":"ok","extra":true}"#,
            ErrorCode::InvalidArgument,
        ),
        ("create_room", &bad_title, ErrorCode::InvalidArgument),
        (
            "create_room",
            r#"{"room_id":"other","max_cohosts":17}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "invite",
            r#"{"room_id":"stage","user_id":"no spaces"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "invite",
            r#"{"room_id":"stage","user_id":"ÿ"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "accept_invitation",
            r#"{"invitation_id":"stage.0"}"#,
            ErrorCode::InvalidArgument,
        ),
        (
            "accept_invitation",
            r#"{"invitation_id":"stage"}"#,
            ErrorCode::InvalidArgument,
        ),
        ("no_such_command", "{}", ErrorCode::InvalidArgument),
        (
            "accept_invitation",
            r#"{"invitation_id":"stage.7"}"#,
            ErrorCode::NotFound,
        ),
        (
            "accept_invitation",
            r#"{"invitation_id":"elsewhere.1"}"#,
            ErrorCode::NotFound,
        ),
    ];
    for (name, args, want) in cases {
        assert_eq!(code_of(&t, name, args).await, want, "{name} {args}");
    }
    assert!(
        RoomId::new(&"r".repeat(65)).is_err(),
        "an id that breaks the rules cannot even be built"
    );
    assert_eq!(
        (t.engine.last_seq(), t.engine.room_states().1),
        before,
        "nothing changed"
    );
    assert!(
        t.engine.room(&room("other")).is_err(),
        "a refused create leaves no room behind"
    );
    t.engine.shutdown().await;
}
