//! Erasure's rewrite reaches every user id: each golden vector (every event type, and the replies), its users
//! mapped, names none of the story's cast anywhere in its JSON, and ids it does not map stay as they were.

use std::path::Path;

use cohost_proto::{Envelope, MapUsers, Reply, UserId};

/// Every user the golden vectors name.
const CAST: [&str; 7] = ["alice", "bob", "carol", "dave", "erin", "frank", "mallory"];

fn vectors() -> Vec<(String, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .expect("proto/vectors")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a vector");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).expect("JSON"))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every string in `value`, keys aside.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(fields) => fields.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn erased(user: &UserId) -> Option<UserId> {
    Some(UserId::new(&format!("erased-{user}")).unwrap())
}

fn rewritten(
    name: &str,
    json: &serde_json::Value,
    f: &mut dyn FnMut(&UserId) -> Option<UserId>,
) -> serde_json::Value {
    if name.starts_with("reply-") && name != "reply-page.json" {
        let mut reply: Reply = serde_json::from_value(json.clone()).expect(name);
        reply.map_users(f);
        serde_json::to_value(reply).unwrap()
    } else {
        let mut envelope: Envelope = serde_json::from_value(json.clone()).expect(name);
        envelope.map_users(f);
        serde_json::to_value(envelope).unwrap()
    }
}

#[test]
fn every_vector_mapped_names_no_user_of_the_cast() {
    let mut checked = 0;
    for (name, json) in vectors() {
        if !(name.starts_with(char::is_numeric) || name.starts_with("reply-"))
            || name == "reply-page.json"
        {
            continue;
        }
        let mut before = Vec::new();
        strings(&json, &mut before);
        let mapped = rewritten(&name, &json, &mut erased);
        let mut after = Vec::new();
        strings(&mapped, &mut after);
        for user in CAST {
            assert!(
                !after.iter().any(|s| s == user),
                "{name} still names {user}: {mapped}"
            );
            let named = before.iter().filter(|s| *s == user).count();
            let pseudonyms = after
                .iter()
                .filter(|s| **s == format!("erased-{user}"))
                .count();
            assert_eq!(
                named, pseudonyms,
                "{name}: each {user} becomes the pseudonym: {mapped}"
            );
        }
        // Mapping nobody changes nothing.
        assert_eq!(rewritten(&name, &json, &mut |_| None), json, "{name}");
        checked += 1;
    }
    assert!(
        checked >= 32,
        "every event vector and reply checked, got {checked}"
    );
}
