//! The connection loop: hyper's HTTP/1.1 builder with a Tokio timer, so that every connection has limits that
//! `axum::serve` does not offer.
//!
//! HTTP/1.1 only: detecting HTTP/2 prior knowledge means waiting for a connection's first bytes with no
//! deadline, so a silent client could hold a connection forever. Browsers speak HTTP/2 only over TLS, which a
//! proxy in front of the daemon terminates; such proxies speak HTTP/1.1 to their upstreams.
//!
//! - **Header-read timeout.** A request's head must arrive within `header_read_timeout`; the same timer bounds
//!   an idle keep-alive connection's wait for its next request. A slow or silent client is closed.
//! - **Body-read timeout.** Enforced where bodies are read (`http::RawBody`), as one deadline for the whole
//!   body, not per chunk, so a client dripping a byte at a time cannot hold a connection open.
//! - **A cap on open connections.** At the cap the loop stops accepting; new connections wait in the kernel's
//!   backlog until one closes, so the process never runs out of file descriptors (the cap is lowered to fit
//!   the process's limit on open files).
//! - **Graceful shutdown with a deadline.** The listener closes, connections finish their requests, and live
//!   collections end on the `closing` signal; whatever is still open after `shutdown_grace` is dropped.
//!
//! - **Write timeout.** A write that makes no progress for `write_timeout` (a client that stopped reading, its
//!   buffers full) closes the connection, so a stalled reader gives back its connection and its stream slot.
//!
//! Otherwise no timeout applies to a response once it has started, so a live collection over SSE runs as long
//! as its client keeps reading. Each request is served by the router current at the time (`routers`), so the daemon can answer
//! `/readyz` while the engine is still recovering and switch to the full API once it is open.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::http::BodyUnread;

/// File descriptors kept back from the connection cap for the store, NATS, LiveKit and logs.
const RESERVED_FDS: u64 = 64;
/// After a failed accept (out of file descriptors, say), the loop waits this long before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The limits of the connection loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must arrive whole within this long; it also bounds an idle keep-alive wait.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this long.
    pub body_read_timeout: Duration,
    /// A response that makes no progress for this long is dropped (never a live collection that keeps sending).
    pub write_timeout: Duration,
    /// Connections open at once; past it the loop stops accepting until one closes.
    pub connections_max: usize,
    /// At shutdown, how long open requests may finish before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            connections_max: 4_096,
            shutdown_grace: Duration::from_secs(15),
        }
    }
}

/// What the loop counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted so far.
    pub accepted: AtomicU64,
    /// Times the loop was at its cap and had to wait for a connection to close.
    pub at_cap: AtomicU64,
    /// Failed `accept` calls (for example, out of file descriptors); each is followed by a short pause.
    pub accept_errors: AtomicU64,
}

/// How the serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished within the grace period.
    Gracefully,
    /// The grace period ran out; this many connections were dropped.
    Dropped(usize),
}

/// Serves `listener` until `shutdown` resolves, then stops gracefully within `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    routers: watch::Receiver<Router>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                stats.at_cap.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(error) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let service = service(routers.clone());
        let connection =
            graceful.watch(builder.serve_connection(TokioIo::new(Box::pin(stream)), service));
        let stats = stats.clone();
        connections.spawn(async move {
            let _ = connection.await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    match tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => Stopped::Gracefully,
        Err(_) => {
            let open = connections.len();
            connections.abort_all();
            while connections.join_next().await.is_some() {}
            Stopped::Dropped(open)
        }
    }
}

/// Each request to the router current at the time, closing the connection after a response whose request
/// body was left unread.
fn service(
    routers: watch::Receiver<Router>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = routers.borrow().clone();
        let mut request = request.map(Body::new);
        let unread = BodyUnread::watch(&mut request);
        async move {
            let mut response = router.oneshot(request).await?;
            if let Some(unread) = unread {
                unread.close_if_unread(&mut response);
            }
            Ok(response)
        }
    })
}

/// The connection cap, lowered to fit the process's limit on open files (read from `/proc/self/limits` where
/// there is one), so the cap is reached before the process runs out of descriptors.
pub fn fit_connections_max(wanted: usize) -> usize {
    let Some(open_files) = open_files_limit() else {
        return wanted;
    };
    let fits = open_files.saturating_sub(RESERVED_FDS).max(1);
    wanted.min(usize::try_from(fits).unwrap_or(usize::MAX))
}

fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::body::Body;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    use super::{ConnectionStats, Limits, serve};

    const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

    /// A request for the endless body, on a socket with a small receive buffer (so the server's writes stall
    /// soon after the client stops reading).
    async fn request(addr: std::net::SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4_096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        client
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_after_the_write_timeout_and_a_reader_is_not() {
        let endless = Router::new().route(
            "/",
            axum::routing::get(|| async {
                let chunk = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
                let chunks =
                    futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                Body::from_stream(chunks)
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_routers_tx, routers) = tokio::sync::watch::channel(endless);
        let limits = Limits {
            write_timeout: WRITE_TIMEOUT,
            ..Limits::default()
        };
        let stats = Arc::new(ConnectionStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, routers, limits, stats.clone(), async {
            let _ = stopped.await;
        }));
        let open = || stats.open.load(Ordering::Relaxed);

        let mut reader = request(addr).await;
        let _stalled = request(addr).await;
        // The reader keeps reading for four write timeouts: its response goes on.
        let (started, mut buf, mut read) = (Instant::now(), vec![0u8; 64 * 1024], 0usize);
        while started.elapsed() < 4 * WRITE_TIMEOUT {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "the reader's response ended after {read} bytes");
            read += n;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while open() > 1 {
            assert!(
                Instant::now() < deadline,
                "the stalled client still holds its connection"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(open(), 1, "the reader's connection stays open");
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 2);
        drop(reader);
        let _ = stop.send(());
        server.await.unwrap();
    }

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        let limit = super::open_files_limit().expect("Linux has /proc/self/limits");
        assert!(limit > 0);
        assert_eq!(super::fit_connections_max(1), 1);
        assert!(super::fit_connections_max(usize::MAX) as u64 <= limit);
    }
}
