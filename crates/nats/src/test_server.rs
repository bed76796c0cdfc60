//! A private `nats-server` for tests and benchmarks: its own free loopback port and store directory, stopped on
//! drop, and restartable on the same port and directory so tests can take NATS away and bring it back.
//! Never the machine's shared server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
}

fn binary() -> PathBuf {
    let candidates = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ];
    for candidate in candidates {
        if Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
        {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "nats-server is not installed: the NATS tests start their own server. \
         Install it with `apt-get install -y nats-server` (.ci/run does this)."
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("bound address").port()
}

impl TestServer {
    /// Starts a server on a free port; with JetStream when `jetstream` is set.
    pub fn start(jetstream: bool) -> Self {
        let store = tempfile::tempdir().expect("a store dir for nats-server");
        let mut server = Self {
            child: None,
            port: free_port(),
            jetstream,
            store,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

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
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = command.spawn().expect("nats-server starts");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server exited at start with {status} (port {} taken?)",
                    self.port
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

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
