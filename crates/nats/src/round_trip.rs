//! A round trip to the server: returns once the server has processed every operation this connection sent
//! before it. async-nats has no public PING, and its `flush` only writes the socket.
//!
//! The server handles a connection's operations in order, so the barrier is an echo: subscribe to a fresh
//! inbox, publish an empty message to it, and wait for it to come back. Unlike a request answered "no
//! responders", this works when other clients subscribe to `>`. It needs echo, which NATS connections have
//! unless they opt out with `no_echo`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

/// Waits for the server to have processed everything sent on `client` so far, for at most `timeout`.
pub(crate) async fn round_trip(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<(), String> {
    let barrier = async {
        let inbox = client.new_inbox();
        let mut echo = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        client.flush().await.map_err(|e| e.to_string())?;
        echo.next()
            .await
            .map(drop)
            .ok_or_else(|| "the connection closed".to_string())
    };
    tokio::time::timeout(timeout, barrier)
        .await
        .map_err(|_| format!("no echo from the server within {timeout:?}"))?
}
