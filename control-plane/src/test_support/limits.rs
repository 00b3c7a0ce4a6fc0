//! Helpers of the rate-limit tests: fixed windows with room for a test's calls, and a key's
//! policy as the key set carries it to an edge.

use std::time::Duration;

use keygate_protocol::policy::Policy;
use keygate_protocol::wire::{self, Message};
use reqwest::StatusCode;

use super::ApiClient;

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

/// The key set's snapshot as an edge (key `edge`) reads it: the policy of key `id` (`None`:
/// not in the set).
pub async fn policy_in_set(api: &ApiClient, edge: &str, id: &str) -> Option<Policy> {
    let resp = api
        .http
        .get(api.url("/v1/keyset"))
        .header("accept", wire::ACCEPT_V2)
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
