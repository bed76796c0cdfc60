//! `/openapi.json` against the real daemon: the document validates as OpenAPI 3.1 (`openapi-spec-validator`),
//! and Schemathesis, generating requests from it for every route but the live collections, finds no 5xx and no
//! response outside the document (status, content type, headers, body schema). Both tools come from PyPI,
//! pinned, installed once into `target/pypi/` with pip; if they cannot be, the test fails saying so.
//!
//! Left out on purpose: Schemathesis' `positive_data_acceptance` and `negative_data_rejection`, which expect
//! every schema-valid request to be accepted and every other refused. The rules refuse valid-looking requests
//! the schema cannot know of (the host as their own moderator, a seat past the room's size), and JSON Schema
//! counts `82.0` as an integer where the daemon does not.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;
use support::Daemon;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const VALIDATOR: &str = "openapi-spec-validator==0.9.0";
/// The live collections' routes: a generated request would open a stream that never ends.
const STREAMS: &str = r"^/v1/(rooms/\{room_id\}|rooms/\{room_id\}/invitations|me/invitations)$";

/// The pinned tools (`target/pypi/schemathesis-…`).
fn tools() -> PathBuf {
    let name = SCHEMATHESIS.replace("==", "-");
    support::pip_packages(&name, &[SCHEMATHESIS, VALIDATOR])
}

/// Runs `python3 -m <module> <args>` with the tools on the path; returns whether it succeeded, and its output.
/// It runs in `cwd`: Schemathesis keeps a cache of past failures there, which must not land in the source tree
/// nor carry one run's findings into the next.
fn python(tools: &Path, cwd: &Path, module: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("python3")
        .current_dir(cwd)
        .arg("-m")
        .arg(module)
        .args(args)
        .env("PYTHONPATH", tools)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 -m {module}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_validates_and_the_daemon_keeps_to_it_under_generated_requests() {
    let tools = tools();
    let dir = support::data_dir();
    // Quotas high enough that generated requests reach the rules, not only the rate limits.
    let d = Daemon::start_with(
        dir.path(),
        &[
            "--user-commands-per-s",
            "1000000",
            "--user-invitations-per-min",
            "1000000",
        ],
    )
    .await;
    let alice = d.token("alice");
    d.live_room(&alice, "r1").await;
    d.ok_post(
        "/v1/rooms/r1/invitations",
        &alice,
        &json!({"user_id": "bob"}),
    )
    .await;

    let document = d.http.get(d.url("/openapi.json")).send().await.unwrap();
    assert_eq!(document.status(), 200);
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.bytes().await.unwrap()).unwrap();
    let cwd = dir.path().to_path_buf();
    let (valid, report) = python(
        &tools,
        &cwd,
        "openapi_spec_validator",
        &[file.to_str().unwrap()],
    );
    assert!(valid, "the document does not validate:\n{report}");

    let url = d.url("/openapi.json");
    let authorization = format!("Authorization: Bearer {alice}");
    let args: Vec<String> = [
        "run",
        url.as_str(),
        "--header",
        authorization.as_str(),
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,negative_data_rejection",
        "--exclude-path-regex",
        STREAMS,
        "--max-examples",
        "25",
        "--seed",
        "1",
    ]
    .map(str::to_owned)
    .to_vec();
    let tester = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python(&tools, &cwd, "schemathesis.cli", &args)
    });
    let (passed, report) = tester.await.unwrap();
    let tail: Vec<&str> = report.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert!(passed, "schemathesis found failures:\n{}", tail.join("\n"));
    assert!(report.contains("passed"), "{}", tail.join("\n"));
}
