//! Helpers of the rate-limit and credit tests: fixed windows with room for a test's calls, a
//! key's policy as the key set carries it to an edge, an edge's usage report, a key's usage
//! summed back, the metrics text, and forward-auth (a server with it on, a call, the wait for
//! its mirror to hold a new key).

use std::time::{Duration, Instant};

use keygate_protocol::policy::Policy;
use keygate_protocol::wire::{self, Message};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{ApiClient, Engine, InProcessServer};

/// The system clock, unix seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Waits until at least `room` seconds are left in the current fixed window of `window_s`
/// seconds, so that a test's calls all land in one window.
pub async fn window_with_room(window_s: i64, room: i64) {
    while window_s - now_s() % window_s < room {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new edge key (admin-issued): its secret.
pub async fn edge_key(api: &ApiClient) -> String {
    api.create(json!({"name": "edge", "kind": "edge"}))
        .await
        .secret
}

/// The key set's snapshot as an edge of this build (key `edge`, reading version 3) reads it:
/// the policy of key `id` (`None`: not in the set).
pub async fn policy_in_set(api: &ApiClient, edge: &str, id: &str) -> Option<Policy> {
    let resp = api
        .http
        .get(api.url("/v1/keyset"))
        .header("accept", wire::ACCEPT_V3)
        .bearer_auth(edge)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /v1/keyset: {e}"));
    assert_eq!(resp.status(), StatusCode::OK, "GET /v1/keyset");
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("key set body: {e}"));
    let Ok(Message::Snapshot(snap)) = wire::decode(&body) else {
        panic!("a read without since is a snapshot that decodes");
    };
    snap.entries
        .into_iter()
        .find(|e| e.key_id.to_string() == id)
        .map(|e| e.policy)
}

/// `POST /v1/usage` as the edge `edge`: batch `batch` of `entries`; `(status, body)`.
pub async fn report_usage(
    api: &ApiClient,
    edge: &str,
    batch: &str,
    entries: Value,
) -> (StatusCode, Value) {
    let body = json!({"batch_id": batch, "entries": entries});
    api.call(Some(edge), Method::POST, "/v1/usage", Some(body))
        .await
}

/// Key `id`'s hourly usage summed: `(count, limited, credits_exhausted)`.
pub async fn usage_sums(api: &ApiClient, id: &str) -> (i64, i64, i64) {
    let path = format!("/v1/keys/{id}/usage?bucket=hour");
    let (st, v) = api.admin(Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let points = v["points"].as_array().cloned().unwrap_or_default();
    let sum = |m: &str| -> i64 { points.iter().filter_map(|p| p[m].as_i64()).sum() };
    (sum("count"), sum("limited"), sum("credits_exhausted"))
}

/// Polls key `id`'s usage (up to 10 s) until it sums to `want` (a server flushes its usage
/// buffer every 50 ms in the tests).
pub async fn usage_becomes(api: &ApiClient, id: &str, want: (i64, i64, i64)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = usage_sums(api, id).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "usage {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `/metrics` text.
pub async fn metrics_text(api: &ApiClient) -> String {
    let resp = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    resp.text()
        .await
        .unwrap_or_else(|e| panic!("metrics body: {e}"))
}

/// A control plane on a fresh database of `engine` with forward-auth on and open (no edge key
/// asked), deciding with the filter configuration `filter_json`, and the directory of that file
/// (keep it while the server runs).
pub async fn with_forward_auth(
    engine: Engine,
    filter_json: &str,
) -> (InProcessServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = dir.path().join("forward-auth.json");
    std::fs::write(&config, filter_json).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    let s = InProcessServer::start_with(engine, |c| {
        c.forward_auth.config = Some(config);
        c.forward_auth.open = true;
    })
    .await;
    (s, dir)
}

/// `GET /v1/forward-auth/orders` with `x-api-key: key`: the answer's status, headers and body.
pub async fn forward_auth(api: &ApiClient, key: &str) -> (StatusCode, HeaderMap, String) {
    let resp = api
        .http
        .get(api.url("/v1/forward-auth/orders"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("forward-auth call: {e}"));
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.text().await.unwrap_or_default();
    (status, headers, body)
}

/// Calls forward-auth with `key` until it is allowed (up to 10 s: the mirror follows the
/// store's writes): the first allowed answer.
pub async fn until_forward_auth_allows(api: &ApiClient, key: &str) -> (HeaderMap, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, headers, body) = forward_auth(api, key).await;
        if st == StatusCode::OK {
            return (headers, body);
        }
        assert!(Instant::now() < deadline, "never allowed: {st} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
