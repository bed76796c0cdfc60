//! What the house-rule tests share: where the workspace is, and `cargo tree` over it.
#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// `cargo tree` with `args` (and `--format {p}`), run in the workspace; its output.
pub fn cargo_tree(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .arg("tree")
        .args(args)
        .args(["--format", "{p}"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}
