//! A leaked key reported by GitHub secret scanning is denied at the edge (issue 28.2): a real
//! `keygate serve` verifying alerts against the fake GitHub's published keys, the filter in
//! real Envoy 1.40 (`envoy/envoy.yaml`, long-poll), and alerts signed by the fake's signer. For
//! each of `KEYGATE_LEAK_ALERTS` keys (default 20), each with an exchanged child, the clock
//! starts before the alert's POST and stops at the first request Envoy refuses with the key;
//! the child is refused too. Prints p50/p99 (BENCHMARKS.md, "alert → denied at the edge").
//!
//! ```text
//! cargo test -p keygate-e2e --test envoy_leak -- --nocapture
//! ```

use std::time::{Duration, Instant};

use keygate_e2e::envoy::EnvoyStack;
use keygate_e2e::stack::ServeProcess;
use keygate_fake_github::FakeGithub;
use keygate_testkit::bench::{env_usize, percentile};
use reqwest::Method;
use serde_json::json;

#[test]
fn a_leaked_key_and_its_child_are_denied_at_the_edge_within_the_revocation_latency() {
    let samples = env_usize("KEYGATE_LEAK_ALERTS", 20);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gh = rt.block_on(FakeGithub::start()).unwrap();
    let cp =
        ServeProcess::start_sqlite(&["--secret-scanning-keys-url".into(), gh.alert_keys_url()]);
    let stack = EnvoyStack::start_with(cp, 2, json!({}));
    let http = reqwest::Client::new();
    let alert_url = format!("{}/v1/github/secret-scanning", stack.control_plane.url());
    let mut micros = Vec::with_capacity(samples);
    for i in 0..samples {
        let parent = stack.synced_key(
            json!({"name": format!("leaky-{i}"), "scopes": ["repo:read"]}),
            "/hello",
        );
        let (st, child) = stack.api.call(
            &parent.secret,
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "ci", "scopes": ["repo:read"]})),
        );
        assert_eq!(st, 201, "{child}");
        let child = child["secret"].as_str().unwrap().to_owned();
        stack.wait_status(
            "the child synced",
            Duration::from_secs(15),
            "/hello",
            &child,
            200,
        );
        let body = serde_json::to_vec(&json!([{
            "token": parent.secret, "type": "keygate_api_key",
            "url": "https://github.com/octocat/Hello-World/blob/1/leak.env", "source": "content",
        }]))
        .unwrap();
        let (id, sig) = gh.sign_alert(&body);
        let started = Instant::now();
        let answer = rt.block_on(async {
            let r = http
                .post(&alert_url)
                .header("content-type", "application/json")
                .header("Github-Public-Key-Identifier", id)
                .header("Github-Public-Key-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
        assert_eq!(answer.0, 200, "{}", answer.1);
        assert!(answer.1.contains("true_positive"), "{}", answer.1);
        loop {
            let r = stack.get("/hello", Some(&parent.secret));
            if r.status != 200 {
                micros.push(started.elapsed().as_micros() as u64);
                assert_eq!((r.status, r.code()), (401, "unknown_key"), "{}", r.text);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the leaked key still passes Envoy 5 s after the alert"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Every worker, and the child.
        stack.wait_status(
            "the parent denied",
            Duration::from_secs(5),
            "/hello",
            &parent.secret,
            401,
        );
        stack.wait_status(
            "the child denied",
            Duration::from_secs(5),
            "/hello",
            &child,
            401,
        );
    }
    micros.sort_unstable();
    let (p50, p99) = (percentile(&micros, 0.50), percentile(&micros, 0.99));
    println!(
        "alert → first denial in Envoy ({samples} alerts, long-poll, --concurrency 2): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        *micros.last().unwrap() as f64 / 1000.0
    );
    // The revocation latency of record with long-poll is p99 ≤ 200 ms (BENCHMARKS.md); an alert
    // adds its signature check and lookup.
    assert!(p99 < 1_000_000, "p99 {p99} µs");
}
