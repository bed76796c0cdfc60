//! Shared helpers for the cohostd black-box tests: spawn the real binary on a temp data dir and a free port,
//! mint user tokens with `cohostd token`, and make HTTP calls with a timeout.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cohostd");
/// Every HTTP call gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// An HTTP client with a timeout and no proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("http client")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.arg("--data-dir").arg(dir);
    for var in [
        "COHOST_DATA_DIR",
        "COHOST_HTTP_ADDR",
        "COHOST_NATS_URL",
        "COHOST_JETSTREAM",
        "COHOST_WIRE_ENCODING",
        "COHOST_AUTH_SECRET",
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "COHOST_LIVEKIT_ROOM_PREFIX",
        "COHOST_LIVEKIT_ADMIN",
        "COHOST_INVITATION_TTL_S",
        "COHOST_TOKEN_TTL_S",
        "COHOST_MAX_COHOSTS",
    ] {
        command.env_remove(var);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// A running daemon; killed (SIGKILL) on drop unless it already exited.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub base: String,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Starts `cohostd` on `dir` and waits until GET /healthz answers 200.
    pub async fn start(dir: &Path) -> Daemon {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let child = command(dir)
                .arg("--http-addr")
                .arg(format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn cohostd");
            let mut daemon = Daemon {
                child: Some(child),
                dir: dir.to_path_buf(),
                base: format!("http://127.0.0.1:{port}"),
                http: client(),
            };
            match daemon.wait_healthy().await {
                Ok(()) => return daemon,
                Err(error) => last = error,
            }
        }
        panic!("cohostd did not become healthy: {last}");
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("cohostd exited early: {status}"));
            }
            if let Ok(reply) = self
                .http
                .get(format!("{}/healthz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && reply.status() == StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("timed out waiting for /healthz".into())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A user JWT from `cohostd --data-dir <dir> token --user <user>`.
    pub fn token(&self, user: &str) -> String {
        token(&self.dir, user)
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        self.wait_exit(timeout)
    }

    /// Waits (at most `timeout`) for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cohostd did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One call; returns the status and the JSON body (Null if the body is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request.send().await.expect("HTTP call");
        let status = reply.status();
        let text = reply.text().await.expect("HTTP body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A raw body with `Content-Type: application/json`.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let reply = request.send().await.expect("HTTP call");
        let status = reply.status();
        let text = reply.text().await.expect("HTTP body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// A POST expected to succeed; returns the body.
    pub async fn ok_post(&self, path: &str, token: &str, body: &Value) -> Value {
        let (status, reply) = self.post(path, token, body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {reply}");
        reply
    }

    /// A GET expected to succeed; returns the body.
    pub async fn ok_get(&self, path: &str, token: &str) -> Value {
        let (status, reply) = self.get(path, token).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {reply}");
        reply
    }

    /// `last_seq` from /healthz.
    pub async fn last_seq(&self) -> u64 {
        let (status, reply) = self.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK, "healthz: {reply}");
        reply["last_seq"].as_u64().expect("last_seq")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A user JWT from `cohostd --data-dir <dir> token --user <user>`.
pub fn token(dir: &Path, user: &str) -> String {
    let output = command(dir)
        .arg("token")
        .arg("--user")
        .arg(user)
        .stdin(Stdio::null())
        .output()
        .expect("run cohostd token");
    assert!(
        output.status.success(),
        "cohostd token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("utf-8 token")
        .trim()
        .to_owned()
}

/// The dev auth secret the daemon keeps in its data dir.
pub fn dev_secret(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dev-auth-secret"))
        .expect("dev-auth-secret")
        .trim()
        .to_owned()
}

/// Asserts an error reply: the HTTP status and `{"error": {"code", "message"}}`.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str, what: &str) {
    assert_eq!(got.0.as_u16(), status, "{what}: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{what}: {}", got.1);
    assert!(
        got.1["error"]["message"].is_string(),
        "{what}: error message missing: {}",
        got.1
    );
}
