//! Shared helpers for the cohostd black-box tests: spawn the real binary on a temp data dir and a free port,
//! mint user tokens with `cohostd token`, make HTTP calls with a timeout, and run [`Flow`]s: HTTP calls and what
//! each must answer, written as data.
#![allow(dead_code)]

pub mod cluster;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_cohostd");
/// Every HTTP call gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A participant webhook for `user` in session `sid`, stamped now by LiveKit's clock and signed with the
/// LiveKit key pair `(key, secret)` as LiveKit signs: the body and its `Authorization` header.
pub fn livekit_webhook(
    (key, secret): (&str, &str),
    kind: &str,
    (user, sid): (&str, &str),
    id: &str,
    room: &str,
) -> (String, String) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let body = json!({
        "event": kind,
        "room": {"name": room},
        "participant": {"identity": user, "sid": sid},
        "id": id,
        "createdAt": now_s().to_string(),
    })
    .to_string();
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
    let jwt = livekit_api::access_token::AccessToken::with_api_key(key, secret)
        .with_sha256(&hash)
        .to_jwt()
        .expect("a webhook token signs");
    (body, jwt)
}

/// A fresh data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// An HTTP client with a timeout and no proxy.
pub fn client() -> reqwest::Client {
    // livekit-api switches on reqwest's rustls in this build, and reqwest then needs a process-wide crypto
    // provider before it builds any client, even one that only speaks plain HTTP. ring is the one livekit-api
    // itself uses; a second call finds it installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        // Some tests run the daemon with a 1 s keep-alive; a pooled connection must not outlive it.
        .pool_idle_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .expect("http client")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.arg("--data-dir").arg(dir);
    // Only what a test passes configures the daemon.
    for (var, _) in std::env::vars() {
        if var.starts_with("COHOST_") || var.starts_with("LIVEKIT_") {
            command.env_remove(var);
        }
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
    /// Starts `cohostd` on `dir` and waits until GET /readyz answers 200.
    pub async fn start(dir: &Path) -> Daemon {
        Self::start_with(dir, &[]).await
    }

    /// Starts `cohostd` on `dir` with extra arguments, and waits until GET /readyz answers 200.
    pub async fn start_with(dir: &Path, args: &[&str]) -> Daemon {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let child = command(dir)
                .args(args)
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
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && reply.status() == StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("timed out waiting for /readyz".into())
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
        let body = body.map_or(Body::Empty, |body| Body::Json(body.clone()));
        self.send(method, path, token, &body, &[]).await
    }

    /// One call with any body and extra headers; returns the status and the JSON body (Null if not JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Body,
        headers: &[(String, String)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::Empty => request,
            Body::Json(body) => request.json(body),
            Body::Raw(bytes) => request
                .header("content-type", "application/json")
                .body(bytes.clone()),
        };
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let reply = request.send().await.expect("HTTP call");
        let status = reply.status();
        let text = reply.text().await.expect("HTTP body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A GET expected to succeed; returns the body.
    pub async fn ok_get(&self, path: &str, token: &str) -> Value {
        let (status, reply) = self.call(Method::GET, path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {reply}");
        reply
    }

    /// A POST expected to succeed; returns the body.
    pub async fn ok_post(&self, path: &str, token: &str, body: &Value) -> Value {
        let (status, reply) = self.call(Method::POST, path, Some(token), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {reply}");
        reply
    }

    /// Creates `room` as the token's user and takes it live.
    pub async fn live_room(&self, token: &str, room: &str) {
        self.ok_post("/v1/rooms", token, &json!({"room_id": room}))
            .await;
        self.ok_post(&format!("/v1/rooms/{room}/live"), token, &json!({}))
            .await;
    }

    /// The value of one series of `/metrics` (`name` with its labels, as the page writes it).
    pub async fn metric(&self, series: &str) -> u64 {
        self.metric_as(series).await
    }

    /// The value of one series of `/metrics`, as any number type.
    pub async fn metric_as<T: std::str::FromStr>(&self, series: &str) -> T {
        let page = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the page");
        let prefix = format!("{series} ");
        page.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{series} in /metrics:\n{page}"))
    }

    /// `last_seq` from /healthz.
    pub async fn last_seq(&self) -> u64 {
        let (status, reply) = self.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK, "healthz: {reply}");
        reply["last_seq"].as_u64().expect("last_seq")
    }

    /// Every item of a paged list (`path` may hold a query), in order, walking `next_cursor` with pages of
    /// `limit`; asserts that no page is larger than `limit`.
    pub async fn list_all(&self, path: &str, token: &str, limit: usize) -> Vec<Value> {
        let first = format!(
            "{path}{}limit={limit}",
            if path.contains('?') { '&' } else { '?' }
        );
        let mut items = Vec::new();
        let mut page_path = first.clone();
        for _page in 0..10_000 {
            let page = self.ok_get(&page_path, token).await;
            let got = page["items"].as_array().expect("items");
            assert!(got.len() <= limit, "{page_path}: {page}");
            items.extend(got.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => page_path = format!("{first}&cursor={next}"),
                None => return items,
            }
        }
        panic!("{path}: next_cursor never ends");
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
    let mut run = command(dir);
    let output = run
        .args(["token", "--user", user])
        .stdin(Stdio::null())
        .output();
    let output = output.expect("run cohostd token");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cohostd token failed: {stderr}");
    String::from_utf8(output.stdout)
        .expect("utf-8 token")
        .trim()
        .to_owned()
}

/// A token with these claims, signed HS256 with the daemon's dev secret in `dir`.
pub fn signed(dir: &Path, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(dev_secret(dir).as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("HS256 signs")
}

/// Seconds since the epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
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

/// What a step sends.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body at all (the daemon reads an empty body as `{}`).
    Empty,
    Json(Value),
    /// These bytes, sent as `Content-Type: application/json`.
    Raw(Vec<u8>),
}

/// What a step expects back.
#[derive(Debug, Clone)]
pub enum Expect {
    /// 200, and a body that [`Flow::matches`] this.
    Ok(Value),
    /// The contract's error body with this status and code; nothing is appended.
    Error(u16, &'static str),
    /// One of these statuses; when it is not 200, the contract's error body and nothing appended.
    AnyOf(&'static [u16]),
}

/// Who a step calls as.
#[derive(Debug, Clone)]
enum Caller {
    /// The token `cohostd token` mints for this user.
    User(String),
    /// This bearer token, or no Authorization header.
    Token(Option<String>),
}

/// One HTTP call of a [`Flow`] and what it must answer. `{name}` in the path or a header, and a string
/// `"{name}"` in a JSON body or an expected reply, stand for the value an earlier step saved as `name`.
#[derive(Debug, Clone)]
pub struct Step {
    caller: Caller,
    method: Method,
    path: String,
    body: Body,
    headers: Vec<(String, String)>,
    expect: Expect,
    same_log: bool,
    save: Vec<(&'static str, &'static str)>,
    then: Vec<fn(&Value)>,
    why: String,
}

/// `user` calls `method path` without a body; by default it expects 200 with a JSON object.
pub fn call(method: Method, user: &str, path: &str) -> Step {
    Step {
        caller: Caller::User(user.to_owned()),
        method,
        path: path.to_owned(),
        body: Body::Empty,
        headers: Vec::new(),
        expect: Expect::Ok(json!({})),
        same_log: false,
        save: Vec::new(),
        then: Vec::new(),
        why: String::new(),
    }
}

pub fn get(user: &str, path: &str) -> Step {
    call(Method::GET, user, path)
}

pub fn post(user: &str, path: &str, body: Value) -> Step {
    call(Method::POST, user, path).body(Body::Json(body))
}

pub fn delete(user: &str, path: &str) -> Step {
    call(Method::DELETE, user, path)
}

/// The host of `room` invites `user`.
pub fn invite(host: &str, room: &str, user: &str) -> Step {
    post(
        host,
        &format!("/v1/rooms/{room}/invitations"),
        json!({"user_id": user}),
    )
}

/// A POST of these bytes as `Content-Type: application/json`.
pub fn post_raw(user: &str, path: &str, bytes: &[u8]) -> Step {
    call(Method::POST, user, path).body(Body::Raw(bytes.to_vec()))
}

impl Step {
    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    /// Sends this bearer token (or none) instead of the user's.
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.caller = Caller::Token(token.map(str::to_owned));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Expects 200 and a body that [`Flow::matches`] `want`.
    pub fn ok(mut self, want: Value) -> Self {
        self.expect = Expect::Ok(want);
        self
    }

    /// Expects the contract's error body with `status` and `code`, and nothing appended.
    pub fn err(mut self, status: u16, code: &'static str) -> Self {
        self.expect = Expect::Error(status, code);
        self
    }

    /// Expects one of `statuses` (an error body and nothing appended unless it is 200).
    pub fn any_of(mut self, statuses: &'static [u16]) -> Self {
        self.expect = Expect::AnyOf(statuses);
        self
    }

    /// Also expects the log not to grow (refusals always expect that).
    pub fn same_log(mut self) -> Self {
        self.same_log = true;
        self
    }

    /// Saves the reply's value at this JSON pointer ("" for the whole body) as `name`. A saved value must be
    /// new: no two names stand for the same value.
    pub fn save(mut self, pointer: &'static str, name: &'static str) -> Self {
        self.save.push((pointer, name));
        self
    }

    /// Also runs this check on the reply body.
    pub fn then(mut self, check: fn(&Value)) -> Self {
        self.then.push(check);
        self
    }

    /// Says what the step is about in failure messages.
    pub fn why(mut self, why: impl Into<String>) -> Self {
        self.why = why.into();
        self
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.why.is_empty() {
            write!(f, "{}: ", self.why)?;
        }
        if let Caller::User(user) = &self.caller {
            write!(f, "{user} ")?;
        }
        write!(f, "{} {}", self.method, self.path)?;
        match &self.body {
            Body::Empty => Ok(()),
            Body::Json(body) => write!(f, " {body}"),
            Body::Raw(bytes) => write!(f, " {:?}", String::from_utf8_lossy(bytes)),
        }
    }
}

/// A daemon on a fresh data dir, and the steps run against it: each user's token is minted once, and the values
/// steps save are kept for later steps.
#[derive(Debug)]
pub struct Flow {
    pub d: Daemon,
    /// Dropped after the daemon.
    _dir: tempfile::TempDir,
    tokens: HashMap<String, String>,
    vars: HashMap<String, Value>,
}

impl Flow {
    /// Starts `cohostd` on a fresh data dir.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts `cohostd` on a fresh data dir, with extra arguments.
    pub async fn start_with(args: &[&str]) -> Self {
        let dir = data_dir();
        Flow {
            d: Daemon::start_with(dir.path(), args).await,
            _dir: dir,
            tokens: HashMap::new(),
            vars: HashMap::new(),
        }
    }

    /// The user's token, minted on first use.
    pub fn token(&mut self, user: &str) -> String {
        let d = &self.d;
        self.tokens
            .entry(user.to_owned())
            .or_insert_with(|| d.token(user))
            .clone()
    }

    /// The value a step saved as `name`.
    pub fn var(&self, name: &str) -> &Value {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("nothing saved as {name}"))
    }

    /// `text` with every `{name}` replaced by the string saved as `name`.
    pub fn fill(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = open + rest[open..].find('}').expect("a closing brace");
            let value = self.var(&rest[open + 1..close]);
            out.push_str(&rest[..open]);
            out.push_str(
                value
                    .as_str()
                    .unwrap_or_else(|| panic!("{value} is not a string")),
            );
            rest = &rest[close + 1..];
        }
        out + rest
    }

    /// `value` with every string `"{name}"` in it replaced by the value saved as `name`.
    pub fn fill_json(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => self.saved(text).cloned().unwrap_or_else(|| value.clone()),
            Value::Array(items) => items.iter().map(|item| self.fill_json(item)).collect(),
            Value::Object(fields) => (fields.iter())
                .map(|(key, field)| (key.clone(), self.fill_json(field)))
                .collect(),
            other => other.clone(),
        }
    }

    /// The saved value a string `"{name}"` stands for; `None` for any other string.
    fn saved(&self, text: &str) -> Option<&Value> {
        let name = text.strip_prefix('{')?.strip_suffix('}')?;
        Some(self.var(name))
    }

    /// Runs the steps in order.
    pub async fn run(&mut self, steps: impl IntoIterator<Item = Step>) {
        for step in steps {
            self.step(step).await;
        }
    }

    /// Runs one step, asserts what it expects, and returns the reply body.
    pub async fn step(&mut self, step: Step) -> Value {
        let token = match &step.caller {
            Caller::User(user) => Some(self.token(user)),
            Caller::Token(token) => token.clone(),
        };
        let path = self.fill(&step.path);
        let body = match &step.body {
            Body::Json(body) => Body::Json(self.fill_json(body)),
            body => body.clone(),
        };
        let headers: Vec<(String, String)> = (step.headers.iter())
            .map(|(name, value)| (name.clone(), self.fill(value)))
            .collect();
        let watch_log = step.same_log || !matches!(step.expect, Expect::Ok(_));
        let seq = if watch_log {
            Some(self.d.last_seq().await)
        } else {
            None
        };
        let got = (self.d)
            .send(
                step.method.clone(),
                &path,
                token.as_deref(),
                &body,
                &headers,
            )
            .await;
        let refused = self.assert_expected(&step, &got);
        if let Some(seq) = seq.filter(|_| refused || step.same_log) {
            assert_eq!(self.d.last_seq().await, seq, "{step}: the log grew");
        }
        for check in &step.then {
            check(&got.1);
        }
        for (pointer, name) in &step.save {
            let value = (got.1.pointer(pointer))
                .unwrap_or_else(|| panic!("{step}: no {pointer} in {}", got.1));
            assert!(
                !self.vars.values().any(|saved| saved == value),
                "{step}: {name} = {value} was saved before"
            );
            self.vars.insert((*name).to_owned(), value.clone());
        }
        got.1
    }

    /// Asserts that the reply is what the step expects; returns whether it is a refusal.
    fn assert_expected(&self, step: &Step, got: &(StatusCode, Value)) -> bool {
        let (status, body) = got;
        match step.expect {
            Expect::Ok(ref want) => {
                assert_eq!(*status, StatusCode::OK, "{step}: {body}");
                assert!(self.matches(want, body), "{step}: got {body}, want {want}");
                false
            }
            Expect::Error(status, code) => {
                assert_error(got, status, code, &step.to_string());
                true
            }
            Expect::AnyOf(statuses) => {
                assert!(
                    statuses.contains(&status.as_u16()),
                    "{step}: want one of {statuses:?}: {got:?}"
                );
                let refused = *status != StatusCode::OK;
                if refused {
                    let code = (body["error"]["code"].as_str())
                        .unwrap_or_else(|| panic!("{step}: error code missing: {body}"));
                    assert_error(got, status.as_u16(), code, &step.to_string());
                }
                refused
            }
        }
    }

    /// Whether `got` matches `want`: a string `"{name}"` only the value saved as `name`, exactly; an object
    /// every key `want` names, matching (other keys are not looked at); an array of the same length whose
    /// items match `want`'s one for one, in any order; anything else an equal value.
    pub fn matches(&self, want: &Value, got: &Value) -> bool {
        if let Value::String(text) = want
            && let Some(saved) = self.saved(text)
        {
            return saved == got;
        }
        match want {
            Value::Object(want) => got.as_object().is_some_and(|got| {
                (want.iter())
                    .all(|(key, want)| got.get(key).is_some_and(|got| self.matches(want, got)))
            }),
            Value::Array(want) => got.as_array().is_some_and(|got| {
                want.len() == got.len() && self.pair(want, got, &mut vec![false; got.len()])
            }),
            want => want == got,
        }
    }

    /// Whether each of `want` matches a different unused item of `got`.
    fn pair(&self, want: &[Value], got: &[Value], used: &mut [bool]) -> bool {
        let Some((first, rest)) = want.split_first() else {
            return true;
        };
        (0..got.len()).any(|i| {
            if used[i] || !self.matches(first, &got[i]) {
                return false;
            }
            used[i] = true;
            let paired = self.pair(rest, got, used);
            used[i] = false;
            paired
        })
    }
}

pub use cohost_nats::test_server::target_dir;

/// Pinned PyPI packages, installed with pip into `target/pypi/<name>` once (reused after), for
/// `PYTHONPATH`. Panics with one line naming what failed.
pub fn pip_packages(name: &str, packages: &[&str]) -> PathBuf {
    // One install at a time in this process (its tests run side by side); other processes stage apart.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target_dir().join("pypi").join(name);
    if !dir.join(".installed").is_file()
        && let Err(error) = cohost_nats::test_server::pip_install(&dir, packages)
    {
        panic!("{error}");
    }
    dir
}
