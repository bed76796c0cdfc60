//! The web console (`clients/console`) in headless Chromium against this build of cohostd, serving it at
//! `/console`: `clients/console/test/`, run with Node's test runner after `npm ci` (once) and a build. Chromium is
//! Debian's (`/usr/bin/chromium`, or `CHROMIUM`); on a machine without it the test installs it with apt-get (as
//! root), since a test tool's own browser download cannot reach its servers here; if that cannot be done, the
//! test fails saying so. Screenshots of both pages land in `target/console-screenshots/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/console")
}

fn run(program: &str, args: &[&str], dir: &Path, envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env("COHOST_BIN", env!("CARGO_BIN_EXE_cohostd"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().unwrap_or_else(|e| {
        panic!("cannot run {program} (the console's tests need Node 20 and npm): {e}")
    })
}

fn check(output: Output, what: &str) -> String {
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{report}");
    report
}

/// Debian's Chromium, installed if it is missing.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        return path;
    }
    let root = Path::new("/");
    let install = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|output| output.status.success())
    };
    let installed = install(&["install", "-y", "-q", "chromium"])
        || (install(&["update", "-q"]) && install(&["install", "-y", "-q", "chromium"]));
    assert!(
        installed && path.is_file(),
        "the console's tests need Debian's chromium at {}, and `apt-get install chromium` could not install it \
         (run it as root, or set CHROMIUM to a Chromium binary)",
        path.display()
    );
    path
}

#[test]
fn a_host_and_a_cohost_run_the_seed_flow_through_the_console() {
    let chromium = chromium();
    let dir = console_dir();
    if !dir.join("node_modules/vite").is_dir() || !dir.join("node_modules/playwright-core").is_dir()
    {
        let ci = ["ci", "--no-audit", "--no-fund", "--loglevel=error"];
        check(run("npm", &ci, &dir, &[]), "npm ci in clients/console");
    }
    check(
        run("npm", &["run", "--silent", "build"], &dir, &[]),
        "building the console",
    );
    let shots = support::target_dir().join("console-screenshots");
    let envs = [
        ("CHROMIUM", chromium.as_path()),
        ("SCREENSHOT_DIR", shots.as_path()),
    ];
    let report = check(
        run("node", &["--test", "test/"], &dir, &envs),
        "the console's tests",
    );
    assert!(report.contains("# fail 0"), "{report}");
    assert!(shots.join("console-host.png").is_file() && shots.join("console-cohost.png").is_file());
    println!("{report}\nscreenshots in {}", shots.display());
}
