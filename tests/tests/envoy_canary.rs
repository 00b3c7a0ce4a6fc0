//! Canary keys in real Envoy 1.40 (issue 28.3): a canary presented to the wasm filter
//! (`envoy/envoy.yaml`, `--concurrency 2`) and to the dynamic module (`envoy/envoy-module.yaml`)
//! gets exactly an unknown key's answer (status, headers, body), and produces exactly one
//! `key.canary_used` event, delivered within 1 s to a real webhook receiver that checks its
//! signature, carrying the path (without the query), the client address, the user agent and
//! the edge id, and never the key. The control plane is a real `keygate serve` (SQLite) with
//! its default settings: a hit's write wakes its webhook sender (no wait for the 500 ms poll).
//!
//! The figure: canary hit → webhook delivered, for `KEYGATE_CANARY_HITS` hits (default 50)
//! through the wasm filter, p50/p99 printed (BENCHMARKS.md):
//!
//! ```text
//! cargo test -p keygate-e2e --test envoy_canary -- --nocapture
//! ```

use std::time::{Duration, Instant};

use keygate_control_plane::test_support::WebhookReceiver;
use keygate_e2e::Api;
use keygate_e2e::envoy::{EDGE_KEY_ENV, EnvoyStack, LISTENER, Reply};
use keygate_e2e::native::{self, NativeEnvoy};
use keygate_e2e::stack::{ServeProcess, wait_for};
use keygate_protocol::key;
use keygate_testkit::bench::{env_usize, percentile};
use reqwest::Method;
use serde_json::{Value, json};

const USER_AGENT: &str = "canary-e2e/1.0";

fn control_plane() -> ServeProcess {
    ServeProcess::start_sqlite(&[])
}

/// A receiver subscribed to `key.canary_used` on `api`'s control plane.
fn receiver(rt: &tokio::runtime::Runtime, api: &Api) -> WebhookReceiver {
    let rx = rt.block_on(WebhookReceiver::start());
    let (st, v) = api.admin(
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": rx.url(), "event_types": ["key.canary_used"]})),
    );
    assert_eq!(st, 201, "{v}");
    rx.set_secret(v["secret"].as_str().unwrap());
    rx
}

/// What a client can see of a local reply: status, headers but the date, body.
fn seen(r: &Reply) -> (u16, Vec<(String, String)>, String) {
    let headers = r
        .headers
        .iter()
        .filter(|(k, _)| k != "date")
        .cloned()
        .collect();
    (r.status, headers, r.text.clone())
}

/// Waits until `rx` holds `n` delivered events (looking every millisecond, so the figure is not
/// a polling interval); the time it took from `since`.
fn delivered(rx: &WebhookReceiver, n: usize, since: Instant) -> Duration {
    loop {
        let got = rx
            .received()
            .iter()
            .filter(|x| x.answered == Some(204))
            .count();
        if got >= n {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{n} canary events not delivered within 5 s: {got}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Checks the one event of a hit: signed, the canary's, the hit's facts, never the key.
fn check_event(e: &keygate_control_plane::test_support::Received, key_id: &str, secret: &str) {
    assert!(e.verified, "the signature checks: {}", e.raw);
    assert_eq!(e.body["type"], "key.canary_used");
    assert_eq!(e.body["data"]["key"]["id"], key_id);
    let hit = &e.body["data"]["hit"];
    assert_eq!(hit["source"], "edge", "{hit}");
    assert_eq!(hit["path"], "/hello", "the path without its query: {hit}");
    assert_eq!(hit["user_agent"], USER_AGENT, "{hit}");
    let client = hit["client"].as_str().unwrap_or_default();
    assert!(
        client.starts_with("127.0.0.1:"),
        "Envoy's source.address: {hit}"
    );
    assert!(
        hit["edge_id"]
            .as_str()
            .is_some_and(keygate_protocol::edge::is_edge_id),
        "{hit}"
    );
    assert!(!e.raw.contains(secret), "never the key: {}", e.raw);
}

#[test]
fn a_canary_in_the_wasm_filter_is_an_unknown_key_and_one_event_within_a_second() {
    let hits = env_usize("KEYGATE_CANARY_HITS", 50).max(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stack = EnvoyStack::start_with(control_plane(), 2, json!({}));
    let rx = receiver(&rt, &stack.api);
    let canary = stack
        .api
        .create_key(json!({"name": "bait", "kind": "canary", "scopes": ["repo:read"]}));
    // A key issued after it passes on every worker: the canary is in every worker's set.
    stack.synced_key(json!({"name": "live"}), "/hello");
    let prefix = key::parse(&canary.secret).unwrap().prefix().to_owned();
    let unknown = key::generate(&prefix).unwrap();

    let ask = |k: &str| {
        stack.request(
            "GET",
            "/hello?api_key=ignored&x=1",
            &[("x-api-key", k), ("user-agent", USER_AGENT)],
        )
    };
    let mut micros = Vec::with_capacity(hits);
    for i in 0..hits {
        let u = ask(unknown.expose_secret());
        let started = Instant::now();
        let c = ask(&canary.secret);
        assert_eq!(seen(&c), seen(&u), "a canary's answer is an unknown key's");
        assert_eq!((c.status, c.code()), (401, "unknown_key"));
        micros.push(delivered(&rx, i + 1, started).as_micros() as u64);
    }
    // Exactly one event per hit, none for the unknown key.
    std::thread::sleep(Duration::from_millis(500));
    let got = rx.received();
    assert_eq!(got.len(), hits, "one event per hit");
    for e in &got {
        check_event(e, &canary.id, &canary.secret);
    }
    let ids: std::collections::HashSet<&Value> = got
        .iter()
        .map(|e| &e.body["data"]["hit"]["hit_id"])
        .collect();
    assert_eq!(ids.len(), hits, "a hit id per hit");
    assert_eq!(stack.stat("wasmcustom.keygate.canary.hits"), hits as u64);
    micros.sort_unstable();
    let (p50, p99) = (percentile(&micros, 0.50), percentile(&micros, 0.99));
    println!(
        "canary hit → webhook delivered (wasm filter, --concurrency 2, {hits} hits, default control plane): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        *micros.last().unwrap() as f64 / 1000.0
    );
    assert!(
        *micros.last().unwrap() < 1_000_000,
        "every hit's event within 1 s: {micros:?}"
    );
}

#[test]
fn a_canary_in_the_dynamic_module_is_an_unknown_key_and_one_event_within_a_second() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cp = control_plane();
    let api = Api::new(&cp.url());
    let rx = receiver(&rt, &api);
    let edge_key = api
        .create_key(json!({"name": "native edge", "kind": "edge"}))
        .secret;
    let canary = api.create_key(json!({"name": "bait", "kind": "canary"}));
    let live = api.create_key(json!({"name": "live", "scopes": ["repo:read"]}));
    let url = cp.url();
    let envoy = NativeEnvoy::start_with_env(2, LISTENER, &[(EDGE_KEY_ENV, &edge_key)], |up| {
        native::module_bootstrap(&url, up, &json!({}))
    });
    wait_for("the module synced", Duration::from_secs(10), || {
        let r = envoy.request("GET", "/hello", &[("x-api-key", &live.secret)]);
        (r.status == 200)
            .then_some(())
            .ok_or(format!("{} {}", r.status, r.text))
    });
    let prefix = key::parse(&canary.secret).unwrap().prefix().to_owned();
    let unknown = key::generate(&prefix).unwrap();
    let ask = |k: &str| {
        envoy.request(
            "GET",
            "/hello?x=1",
            &[("x-api-key", k), ("user-agent", USER_AGENT)],
        )
    };
    for i in 0..3 {
        let u = ask(unknown.expose_secret());
        let started = Instant::now();
        let c = ask(&canary.secret);
        assert_eq!(seen(&c), seen(&u), "a canary's answer is an unknown key's");
        assert_eq!(c.status, 401);
        let took = delivered(&rx, i + 1, started);
        assert!(took < Duration::from_secs(1), "hit {i}: {took:?}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let got = rx.received();
    assert_eq!(got.len(), 3, "one event per hit");
    for e in &got {
        check_event(e, &canary.id, &canary.secret);
    }
    wait_for(
        "the module's canary counters",
        Duration::from_secs(5),
        || {
            let n = envoy.stat("dynamicmodulescustom.keygate.canary.hits");
            (n == 3).then_some(()).ok_or(format!("{n}"))
        },
    );
}
