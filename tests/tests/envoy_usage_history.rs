//! Usage over time from real Envoy 1.40: requests with a key through the filter are reported
//! by the filter (`POST /v1/usage`) to a real `keygate serve`, and
//! `GET /v1/keys/{id}/usage` answers them in the current hour, as many as the key's
//! `usage_count` (the same transaction writes both) and at least the requests sent.

use std::time::Duration;

use keygate_e2e::envoy::EnvoyStack;
use keygate_e2e::stack::wait_for;
use reqwest::Method;
use serde_json::{Value, json};

#[test]
fn requests_through_envoy_appear_in_the_keys_hourly_usage() {
    let stack = EnvoyStack::start(1, json!({"usage_report_interval_ms": 500}));
    let key = stack.synced_key(json!({"name": "through envoy"}), "/hello");
    const SENT: i64 = 25;
    for _ in 0..SENT {
        let r = stack.get("/hello", Some(&key.secret));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let path = format!("/v1/keys/{}/usage", key.id);
    // The requests of `synced_key`'s wait count too: wait until the series holds at least the
    // 25 sent and agrees with the key's own counter.
    let (series, count): (Value, i64) =
        wait_for("the usage reported", Duration::from_secs(20), || {
            let (st, series) = stack.api.admin(Method::GET, &path, None);
            assert_eq!(st, 200, "{series}");
            let count = stack.api.key(&key.id).usage_count;
            let total = series["total"].as_i64().unwrap_or(-1);
            if total >= SENT && total == count {
                Ok((series, count))
            } else {
                Err(format!("series total {total}, usage_count {count}"))
            }
        });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let points = series["points"].as_array().expect("points");
    let last = points.last().expect("a point");
    assert_eq!(last["at"].as_i64(), Some(now - now % 3600), "{series}");
    // Reported within seconds: this hour, or the previous one right after an hour starts.
    let recent: i64 = points[points.len() - 2..]
        .iter()
        .map(|p| p["count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(recent, count, "{series}");
}
