//! The architecture invariant that `cohost-core` is pure: its dependency tree holds no runtime, storage,
//! network or LiveKit crate, and its source names no clock, randomness, IO, threads or async.

mod support;

use support::{cargo_tree, workspace_root};

/// Crates whose presence would mean the core can do IO, wait, or draw randomness.
const FORBIDDEN_CRATES: [&str; 14] = [
    "tokio",
    "mio",
    "async-std",
    "futures",
    "sled",
    "async-nats",
    "nats",
    "livekit",
    "livekit-api",
    "reqwest",
    "hyper",
    "rand",
    "getrandom",
    "axum",
];

/// Source patterns that would let the core read a clock, do IO or share state across threads.
const FORBIDDEN_SOURCE: [&str; 14] = [
    "std::time",
    "SystemTime",
    "Instant",
    "std::fs",
    "std::net",
    "std::io",
    "std::thread",
    "std::env",
    "std::process",
    "Arc<",
    "Mutex",
    "async fn",
    ".await",
    "static mut",
];

fn core_dependencies() -> Vec<String> {
    let text = cargo_tree(&[
        "--package",
        "cohost-core",
        "--edges",
        "normal,build",
        "--prefix",
        "none",
    ]);
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn core_depends_on_no_runtime_storage_network_or_livekit_crate() {
    let names = core_dependencies();
    assert!(
        names.iter().any(|n| n == "cohost-proto"),
        "the tree was read: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "serde"),
        "the tree was read: {names:?}"
    );
    let found: Vec<&String> = names
        .iter()
        .filter(|name| {
            FORBIDDEN_CRATES
                .iter()
                .any(|bad| *name == bad || name.starts_with(&format!("{bad}-")))
        })
        .collect();
    assert!(
        found.is_empty(),
        "cohost-core must stay pure, but depends on {found:?}"
    );
}

#[test]
fn core_and_proto_source_name_no_clock_io_threads_or_async() {
    for dir in ["crates/core/src", "proto/src"] {
        let mut checked = 0;
        for entry in std::fs::read_dir(workspace_root().join(dir)).expect("source dir exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            for (number, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for bad in FORBIDDEN_SOURCE {
                    assert!(
                        !code.contains(bad),
                        "{}:{}: `{bad}` has no place in a pure crate",
                        path.display(),
                        number + 1
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 5, "{dir} holds the crate's source");
    }
}
