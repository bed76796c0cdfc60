//! Secrets at startup and in the `token` subcommand: the dev secret is kept owner-only and never printed; the
//! secret can come from a file; a deployment with its own auth secret refuses LiveKit's public dev keys, which
//! would let anyone sign a webhook that stops any room; `token` takes its settings after the subcommand and
//! refuses lifetimes it could not honour.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use support::BIN;

/// Runs `cohostd` with these arguments and environment (and nothing else of the test's environment).
fn cohostd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    for (var, _) in std::env::vars() {
        if var.starts_with("COHOST_") || var.starts_with("LIVEKIT_") {
            command.env_remove(var);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run cohostd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_dev_secret_is_owner_only_and_never_printed() {
    let dir = support::data_dir();
    let data = dir.path().to_str().unwrap();
    // Settings after the subcommand, as the README shows.
    let out = cohostd(&["token", "--data-dir", data, "--user", "alice"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = dir.path().join("dev-auth-secret");
    let secret = std::fs::read_to_string(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains(secret.trim()),
        "the secret was printed: {stderr}"
    );
    assert!(
        stderr.contains("dev-auth-secret"),
        "the path is named: {stderr}"
    );
    // A file an earlier version left world-readable is narrowed.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cohostd(&["--data-dir", data, "token", "--user", "alice"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn token_takes_the_secret_from_a_file_and_refuses_lifetimes_it_cannot_honour() {
    let dir = support::data_dir();
    let file = dir.path().join("secret");
    std::fs::write(&file, "  a secret kept in a file, 0123456789\n").unwrap();
    let env = [("COHOST_AUTH_SECRET_FILE", file.to_str().unwrap())];
    let out = cohostd(&["token", "--user", "alice", "--ttl-s", "60"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout);
    let key = DecodingKey::from_secret(b"a secret kept in a file, 0123456789");
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &key,
        &Validation::new(Algorithm::HS256),
    )
    .expect("signed with the file's secret")
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    for ttl in ["0", "86401"] {
        let out = cohostd(&["token", "--user", "alice", "--ttl-s", ttl], &env);
        assert!(
            !out.status.success(),
            "--ttl-s {ttl} printed {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).contains("--ttl-s"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    // A secret too short to be one.
    std::fs::write(&file, "short").unwrap();
    let out = cohostd(&["token", "--user", "alice"], &env);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("at least 16"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_auth_secret_without_real_livekit_keys_refuses_to_start() {
    let dir = support::data_dir();
    let data = dir.path().to_str().unwrap();
    let secret = ("COHOST_AUTH_SECRET", "a deployment secret, 0123456789");
    let refusals = [
        vec![secret],
        vec![
            secret,
            ("LIVEKIT_API_KEY", "devkey"),
            ("LIVEKIT_API_SECRET", "secret"),
        ],
    ];
    for env in refusals {
        let out = cohostd(&["--data-dir", data, "--http-addr", "127.0.0.1:0"], &env);
        assert!(!out.status.success(), "{env:?}: started");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("LIVEKIT_API_KEY") && stderr.lines().count() == 1,
            "{env:?}: one line naming the keys: {stderr}"
        );
    }
}

#[test]
fn a_reconciliation_no_shorter_than_a_wait_on_presence_refuses_to_start() {
    for wait in ["COHOST_DISCONNECT_GRACE_S", "COHOST_HOST_ABSENT_S"] {
        let dir = support::data_dir();
        let data = dir.path().to_str().unwrap();
        let env = [
            ("COHOST_LIVEKIT_ADMIN", "true"),
            ("COHOST_LIVEKIT_WEBHOOKS", "true"),
            ("COHOST_DISCONNECT_GRACE_S", "60"),
            ("COHOST_HOST_ABSENT_S", "600"),
            (wait, "20"),
            ("COHOST_LIVEKIT_RECONCILE_S", "20"),
        ];
        let out = cohostd(&["--data-dir", data, "--http-addr", "127.0.0.1:0"], &env);
        assert!(!out.status.success(), "started");
        let stderr = text(&out.stderr);
        let want = format!("COHOST_LIVEKIT_RECONCILE_S (20) must be shorter than {wait} (20)");
        assert!(
            stderr.contains(&want) && stderr.lines().count() == 1,
            "one line naming both settings: {stderr}"
        );
    }
}

#[tokio::test]
async fn an_auth_secret_with_real_livekit_keys_starts() {
    let dir = support::data_dir();
    let args = [
        "--auth-secret=a deployment secret, 0123456789",
        "--livekit-api-key=APIkey",
        "--livekit-api-secret=a LiveKit secret of some length",
    ];
    // Waits for /readyz.
    support::Daemon::start_with(dir.path(), &args).await;
}
