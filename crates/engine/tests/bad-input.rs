//! Bad input through the API gets the contract's code and changes nothing.

mod support;

use cohost_engine::Options;
use cohost_proto::{ErrorCode, RoomId};
use support::*;

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = open();
    t.live_room("stage", "alice").await;
    let before = (t.engine.last_seq(), t.engine.room_states().1);
    let json_cases: [(&str, &str); 7] = [
        ("create_room", r#"{"room_id":"bad.id"}"#),
        (
            "create_room",
            r#"{"room_id":"ok","title":"x","extra":true}"#,
        ),
        ("invite", r#"{"room_id":"stage","user_id":"no spaces"}"#),
        ("invite", r#"{"room_id":"stage","user_id":"ÿ"}"#),
        ("accept_invitation", r#"{"invitation_id":"stage.0"}"#),
        ("accept_invitation", r#"{"invitation_id":"stage"}"#),
        ("no_such_command", r#"{}"#),
    ];
    for (name, args) in json_cases {
        let err = t
            .engine
            .execute_json(actor("alice"), name, args.as_bytes(), Options::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{name} {args}: {err}");
    }
    let long_title = format!(r#"{{"room_id":"other","title":"{}"}}"#, "t".repeat(201));
    let err = t
        .engine
        .execute_json(
            actor("alice"),
            "create_room",
            long_title.as_bytes(),
            Options::default(),
        )
        .await;
    assert_eq!(err.unwrap_err().code, ErrorCode::InvalidArgument);
    let too_many = br#"{"room_id":"other","max_cohosts":17}"#;
    let err = t
        .engine
        .execute_json(actor("alice"), "create_room", too_many, Options::default())
        .await;
    assert_eq!(err.unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(t.code("bob", accept("stage", 7)).await, ErrorCode::NotFound);
    assert_eq!(
        t.code("bob", accept("elsewhere", 1)).await,
        ErrorCode::NotFound
    );
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
