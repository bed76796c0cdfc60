//! `/healthz` and `/metrics` show the log's followers. Without NATS and LiveKit admin none runs, and neither page
//! lists one. With LiveKit admin on and LiveKit unreachable, the revoker follows until a co-host is removed, then
//! retries the removal: `/healthz` shows it `retrying` with its lag, last error and retries (and stays 200: the
//! engine takes writes), and `/metrics` has it down, one event behind, with its errors counted.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Flow, delete, invite, post};

async fn healthz(flow: &Flow) -> Value {
    let (status, body) = flow.d.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    body
}

async fn metrics(flow: &Flow) -> String {
    let reply = flow.d.http.get(flow.d.url("/metrics")).send().await;
    reply.expect("GET /metrics").text().await.expect("the page")
}

/// The value of one series (`name{labels}`) on a metrics page, if the page has it.
fn sample(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The revoker's value of the follower metric `metric` (`cohost_follower_{metric}`).
fn revoker_metric(page: &str, metric: &str) -> Option<u64> {
    sample(
        page,
        &format!(r#"cohost_follower_{metric}{{follower="revoker"}}"#),
    )
}

/// A LiveKit URL where nothing listens.
fn unreachable_livekit() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("its address").port();
    format!("ws://127.0.0.1:{port}")
}

#[tokio::test]
async fn without_nats_or_livekit_admin_no_follower_is_shown() {
    let flow = Flow::start().await;
    assert_eq!(healthz(&flow).await["followers"], json!([]));
    let page = metrics(&flow).await;
    assert!(page.contains("cohost_last_seq 0"), "{page}");
    assert!(!page.contains("cohost_follower_"), "{page}");
}

#[tokio::test]
async fn a_revoker_that_cannot_reach_livekit_shows_retrying() {
    let livekit = unreachable_livekit();
    let mut flow = Flow::start_with(&["--livekit-admin=true", "--livekit-url", &livekit]).await;
    let following = json!([{"name": "revoker", "state": "following", "lag": 0, "last_error": null, "retries": 0}]);
    assert_eq!(healthz(&flow).await["followers"], following);
    let page = metrics(&flow).await;
    assert_eq!(revoker_metric(&page, "up"), Some(1));
    assert_eq!(revoker_metric(&page, "errors_total"), Some(0));

    // Seqs 1 to 5: create, go live, invite, accept, remove. The removal needs LiveKit.
    flow.run([
        post("alice", "/v1/rooms", json!({"room_id": "stage-1"})),
        post("alice", "/v1/rooms/stage-1/live", json!({})),
        invite("alice", "stage-1", "bob").save("/invitation_id", "bob1"),
        post("bob", "/v1/invitations/{bob1}/accept", json!({})),
        delete("alice", "/v1/rooms/stage-1/cohosts/bob"),
    ])
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let health = healthz(&flow).await;
        if health["followers"][0]["state"] == "retrying" {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "the revoker never retried: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(health["last_seq"], 5, "{health}");
    let revoker = &health["followers"][0];
    assert_eq!(
        (&revoker["name"], &revoker["lag"]),
        (&json!("revoker"), &json!(1)),
        "{health}"
    );
    let message = revoker["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("removing bob from LiveKit room stage-1 (seq 5): "),
        "{health}"
    );
    assert!(
        revoker["last_error"]["at_ms"].as_u64() > Some(0),
        "{health}"
    );
    assert!(revoker["retries"].as_u64() >= Some(1), "{health}");

    let page = metrics(&flow).await;
    assert_eq!(revoker_metric(&page, "up"), Some(0));
    assert_eq!(revoker_metric(&page, "lag_events"), Some(1));
    let errors = revoker_metric(&page, "errors_total");
    assert!(errors >= Some(1), "{page}");
}
