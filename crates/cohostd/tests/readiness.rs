//! `/readyz` for load balancers: not ready while the engine recovers (the API answers 503 and `/healthz` says
//! it is alive and recovering), ready once it serves, not ready again while draining. The fail-stop case is in
//! `fail-stop.rs`. The connection loop and routers are the daemon's own, in process.

mod support;

use std::sync::Arc;

use cohost_credentials::LiveKitConfig;
use cohost_engine::{Config, Engine};
use cohostd::auth::Auth;
use cohostd::http::{AppState, router, starting_router};
use cohostd::serve::{ConnectionStats, Limits, Stopped, serve};
use serde_json::Value;

async fn get(base: &str, path: &str) -> (u16, Value) {
    let reply = support::client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn readyz_follows_recovery_serving_and_draining() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (routers_tx, routers) = tokio::sync::watch::channel(starting_router());
    let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        routers,
        Limits::default(),
        Arc::new(ConnectionStats::default()),
        async move {
            let _ = stop.await;
        },
    ));

    // Recovering: alive, not ready, the API unavailable.
    let (status, body) = get(&base, "/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("recovering")));
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("unavailable"))
    );
    assert_eq!(get(&base, "/v1/rooms/r1").await.0, 503);

    // Open: ready, and the same connection loop now serves the API.
    let dir = support::data_dir();
    let engine = Engine::open(Config::new(dir.path())).unwrap();
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let state = AppState::new(
        engine.clone(),
        LiveKitConfig::dev(),
        Auth::new("a test secret of enough length"),
        closing,
    );
    routers_tx.send(router(state)).unwrap();
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    assert_eq!(get(&base, "/v1/rooms/r1").await.0, 401);

    // Draining: not ready, though still alive.
    closing_tx.send(true).unwrap();
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("draining"),
        "{body}"
    );
    assert_eq!(get(&base, "/healthz").await.0, 200);

    stop_tx.send(()).unwrap();
    assert_eq!(server.await.unwrap(), Stopped::Gracefully);
    engine.shutdown().await;
}
