//! The TypeScript SDK (`clients/ts`) against this build of cohostd: its own tests, run with Node's test runner
//! (`clients/ts/test/`), after `npm ci` (once: it installs only the pinned TypeScript compiler) and a build. Node
//! 20 and npm are part of a fresh machine; if either is missing or too old, the test fails saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/ts")
}

fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("COHOST_BIN", env!("CARGO_BIN_EXE_cohostd"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (Node 20 and npm are needed for the SDK's tests): {e}")
        })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn check(output: Output, what: &str) -> String {
    let report = text(&output);
    assert!(output.status.success(), "{what} failed:\n{report}");
    report
}

#[test]
fn the_typescript_sdk_passes_its_tests_against_this_daemon() {
    let dir = sdk_dir();
    let version = text(&run("node", &["--version"], &dir));
    let major: u32 = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "the SDK's tests need Node 20 or later, found {version:?}"
    );
    if !dir.join("node_modules/typescript").is_dir() {
        let ci = ["ci", "--no-audit", "--no-fund", "--loglevel=error"];
        check(run("npm", &ci, &dir), "npm ci in clients/ts");
    }
    check(
        run("npm", &["run", "--silent", "build"], &dir),
        "building the SDK (tsc)",
    );
    let report = check(run("node", &["--test", "test/"], &dir), "the SDK's tests");
    assert!(report.contains("# fail 0"), "{report}");
    println!("{report}");
}
