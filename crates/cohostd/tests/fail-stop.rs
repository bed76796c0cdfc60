//! After a failed flush the daemon is fail-stop: commands get 503 `unavailable`, `/healthz` answers 503 with
//! the cause (so a supervisor restarts it), and reads are still served. The router runs in process, over an
//! engine on an in-memory disk whose next flush the test fails.

mod support;

use std::sync::Arc;

use cohost_credentials::LiveKitConfig;
use cohost_engine::{Config, Engine};
use cohost_proto::UserId;
use cohost_store::MemoryBackend;
use cohostd::auth::Auth;
use cohostd::http::{AppState, router};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SECRET: &str = "a test secret of enough length";

async fn serve(engine: Engine) -> String {
    let (_closing_tx, closing) = tokio::sync::watch::channel(false);
    let state = AppState::new(engine, LiveKitConfig::dev(), Auth::new(SECRET), closing);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // Keeps the sender alive for as long as the server runs.
        let _closing_tx = _closing_tx;
        axum::serve(listener, router(state)).await
    });
    base
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = support::client()
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_failed_flush_turns_healthz_503_with_its_cause_and_reads_go_on() {
    let disk = MemoryBackend::new();
    let engine = Engine::open(Config::new("unused").with_backend(Arc::new(disk.clone()))).unwrap();
    let base = serve(engine.clone()).await;
    let alice = Auth::new(SECRET).mint(&UserId::new("alice").unwrap(), 600);
    use reqwest::Method;
    let (status, _) = call(Method::GET, format!("{base}/healthz"), "", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        Method::POST,
        format!("{base}/v1/rooms"),
        &alice,
        json!({"room_id": "stage"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    disk.fail_flushes(1);
    let (status, body) = call(
        Method::POST,
        format!("{base}/v1/rooms/stage/live"),
        &alice,
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    for probe in ["/healthz", "/readyz"] {
        let (status, body) = call(Method::GET, format!("{base}{probe}"), "", json!({})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{probe}");
        assert_eq!(body["error"]["code"], "unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("injected flush failure"),
            "{probe}: {message}"
        );
    }

    let (status, body) = call(
        Method::GET,
        format!("{base}/v1/rooms/stage"),
        &alice,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "reads are served: {body}");
    assert_eq!(
        (body["status"].as_str(), body["version"].as_u64()),
        (Some("idle"), Some(1))
    );
    engine.shutdown().await;
}
