//! The architecture invariant that each outside system is known to one crate: of the workspace's crates, only
//! the one named here may list it among its direct normal dependencies (what it pulls in further down, such as
//! hyper under livekit-api, is that crate's business). `core-is-pure.rs` holds the core to more.

mod support;

use std::collections::BTreeMap;

use support::cargo_tree;

/// An outside system's crate, and the one workspace crate that may depend on it directly.
const EDGES: [(&str, &str); 5] = [
    ("sled", "cohost-store"),
    ("async-nats", "cohost-nats"),
    ("livekit-api", "cohost-credentials"),
    ("axum", "cohostd"),
    ("hyper", "cohostd"),
];

/// Each workspace crate with its direct normal dependencies, from `cargo tree`.
fn direct_dependencies() -> BTreeMap<String, Vec<String>> {
    let text = cargo_tree(&[
        "--workspace",
        "--edges",
        "normal",
        "--depth",
        "1",
        "--no-dedupe",
        "--prefix",
        "depth",
    ]);
    let mut crates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        let name = |rest: &str| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        if let Some(rest) = line.strip_prefix('0') {
            current = Some(name(rest));
            crates.entry(name(rest)).or_default();
        } else if let (Some(rest), Some(krate)) = (line.strip_prefix('1'), &current) {
            crates
                .get_mut(krate)
                .expect("listed above")
                .push(name(rest));
        }
    }
    crates
}

#[test]
fn each_outside_system_is_a_direct_dependency_of_its_edge_crate_only() {
    let crates = direct_dependencies();
    assert!(
        crates.len() >= 8 && crates.contains_key("cohost-core"),
        "cargo tree listed the workspace: {crates:?}"
    );
    for (outside, edge) in EDGES {
        let users: Vec<&String> = crates
            .iter()
            .filter(|(_, dependencies)| dependencies.iter().any(|d| d == outside))
            .map(|(krate, _)| krate)
            .collect();
        assert_eq!(
            users,
            [edge],
            "{outside} may be a direct dependency of {edge} alone"
        );
    }
}
