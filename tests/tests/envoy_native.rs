//! The Keygate dynamic module (`keygate-native-filter`, the prototype native shell) in real
//! Envoy 1.40: it loads (the ABI version Envoy expects), and it decides as the proxy-wasm filter
//! does. Both shells run `envoy/envoy.yaml`'s configuration side by side: the wasm filter synced
//! from a real `keygate serve`, the native module holding that control plane's own snapshot;
//! every request goes to both, and status, reply and what the upstream sees must match.

use std::time::Duration;

use keygate_e2e::envoy::{EnvoyStack, LISTENER, Reply, bootstrap};
use keygate_e2e::native::{self, NativeEnvoy};
use keygate_protocol::key;
use serde_json::json;

const SYNC: Duration = Duration::from_secs(15);

/// A request (method, path, headers) and the status both shells must answer.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

/// The request headers and the upstream's view compared between the two shells.
const UPSTREAM_HEADERS: [&str; 6] = [
    "x-keygate-key-id",
    "x-keygate-owner",
    "x-keygate-scopes",
    "x-api-key",
    "authorization",
    "cookie",
];

/// What a reply says of the filter's work: status, the local reply, or what the upstream got.
fn seen(r: &Reply) -> serde_json::Value {
    if r.status == 200 {
        json!({
            "status": r.status,
            "path": r.upstream_path(),
            "headers": UPSTREAM_HEADERS.map(|h| r.upstream_header(h)),
        })
    } else {
        json!({
            "status": r.status,
            "body": r.text,
            "content-type": r.header("content-type"),
            "cache-control": r.header("cache-control"),
            "www-authenticate": r.header("www-authenticate"),
        })
    }
}

#[test]
fn the_native_module_decides_as_the_wasm_filter_in_envoy() {
    let routes: serde_json::Value = serde_json::from_str(keygate_e2e::ROUTES).unwrap();
    let overrides = json!({
        "routes": routes,
        "key_sources": [{"header": "x-api-key"}, {"bearer": true}, {"cookie": "kg_key"}, {"query": "api_key"}],
        "accepted_prefixes": ["kg_live", "kg_edge"],
    });
    let mut stack = EnvoyStack::start(1, overrides.clone());
    let reader = stack.synced_key(
        json!({"name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"}),
        "/repos/acme/x",
    );
    let revoked =
        stack.create_key(json!({"name": "gone", "scopes": ["repo:read"], "resources": ["acme"]}));
    stack.key_action(&revoked.id, "revoke");
    stack.wait_status(
        "revocation synced",
        SYNC,
        "/repos/acme/x",
        &revoked.secret,
        401,
    );

    // The control plane's snapshot, as the filter fetches it, for the native module.
    let snapshot = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/keyset", stack.control_plane.url()))
            .bearer_auth(&stack.edge_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let snapshot_file = dir.path().join("keyset.bin");
    std::fs::write(&snapshot_file, &snapshot).unwrap();

    let control_plane = stack.control_plane.addr().to_string();
    let configuration = stack.configuration.clone();
    let native = NativeEnvoy::start(1, LISTENER, |upstream| {
        native::replace_wasm_filter(
            &bootstrap(&control_plane, upstream, &overrides),
            native::keygate_filter(&configuration, &snapshot_file),
        )
    });
    // Envoy writes its log file through a buffer flushed every few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let logs = native.envoy.logs();
        if logs.contains("Dynamic module ABI version v0.2.0 matched") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && !logs.contains("Dynamic module ABI version"),
            "Envoy reports another dynamic-module ABI version than native-filter/src/ffi.rs declares: {logs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let unknown = key::generate("kg_live").unwrap();
    let other_prefix = key::generate("acme_test").unwrap();
    let r = reader.secret.as_str();
    let bearer = format!("Bearer {r}");
    let cookie = format!("a=1; kg_key={r}; b=2");
    let query = format!("/repos/acme/x?api_key={r}&q=1");
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/repos/acme/x", vec![("x-api-key", r)], 200),
        (
            "GET",
            "/repos/acme/x",
            vec![("authorization", &bearer)],
            200,
        ),
        ("GET", "/repos/acme/x", vec![("cookie", &cookie)], 200),
        ("GET", &query, vec![], 200),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", r), ("x-keygate-owner", "mallory")],
            200,
        ),
        ("GET", "/health", vec![("x-api-key", r)], 200),
        ("GET", "/health", vec![], 200),
        ("GET", "/repos/globex/x", vec![("x-api-key", r)], 403),
        ("POST", "/repos/acme/x", vec![("x-api-key", r)], 403),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", &revoked.secret)],
            401,
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", unknown.expose_secret())],
            401,
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", "kg_live_notakey")],
            401,
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", other_prefix.expose_secret())],
            401,
        ),
        ("GET", "/repos/acme/x", vec![], 401),
    ];
    for (method, path, headers, status) in &cases {
        let wasm = stack.request(method, path, headers);
        let from_native = native.request(method, path, headers);
        assert_eq!(
            from_native.status, *status,
            "{method} {path} {headers:?}: {}",
            from_native.text
        );
        assert_eq!(
            seen(&from_native),
            seen(&wasm),
            "{method} {path} {headers:?}: the native module (left) and the wasm filter (right) differ"
        );
    }
    let ok = native.request("GET", "/repos/acme/x", &[("x-api-key", r)]);
    assert_eq!(
        ok.upstream_header("x-keygate-key-id"),
        Some(reader.id.as_str())
    );
    assert_eq!(ok.upstream_header("x-keygate-owner"), Some("alice"));
    assert_eq!(ok.upstream_header("x-api-key"), None);

    // The decision counters, under the dynamic modules' stats namespace.
    let allowed = native.stat("dynamicmodulescustom.keygate.decision.allow.allowed");
    let unknown_keys = native.stat("dynamicmodulescustom.keygate.decision.deny.unknown_key");
    assert_eq!(
        (allowed, unknown_keys),
        (6, 2),
        "{:?}",
        native.envoy.stats()
    );
    stack.shutdown();
}

#[test]
fn the_noop_module_passes_every_request() {
    let native = NativeEnvoy::start(1, LISTENER, |upstream| {
        native::replace_wasm_filter(
            &bootstrap("127.0.0.1:9", upstream, &json!({})),
            native::noop_filter(),
        )
    });
    let r = native.request("GET", "/anything", &[]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.upstream_path(), Some("/anything"));
}
