//! The Keygate dynamic module (`keygate-native-filter`, the native shell) in real Envoy 1.40.
//!
//! - It loads (the ABI version Envoy expects), and it decides as the proxy-wasm filter does.
//!   Both shells run `envoy/envoy.yaml`'s configuration side by side: the wasm filter synced
//!   from a real `keygate serve`, the native module holding that control plane's own snapshot;
//!   every request goes to both, and status, reply and what the upstream sees must match.
//! - Synced from a real `keygate serve` (SQLite) by its own thread: the first request passes
//!   within a second of Envoy's start; a revocation reaches every worker (4) within a second
//!   with long-poll; before the first sync keyed requests fail closed; with the control plane
//!   gone the set turns stale after `max_staleness_s` and each listener's `failure_mode`
//!   applies, then it recovers; usage counts reach the control plane; two listeners with the
//!   same source share one sync (one set); the sync sets its gauges and counters in Envoy's stats
//!   with no request flowing; over `https://` the sync trusts the certificate
//!   authority of its `ca_file` and no other (a TLS-terminating Envoy in front of the control
//!   plane, with a test CA).

use std::time::{Duration, Instant};

use keygate_e2e::Api;
use keygate_e2e::envoy::{
    EDGE_KEY_ENV, EnvoyStack, LISTENER, Reply, bootstrap, plugin_configuration,
};
use keygate_e2e::native::{self, NativeEnvoy};
use keygate_e2e::stack::{ServeProcess, wait_for};
use keygate_e2e::tls_front::TlsFront;
use keygate_protocol::key;
use serde_json::{Value, json};

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
    let revoked = stack
        .api
        .create_key(json!({"name": "gone", "scopes": ["repo:read"], "resources": ["acme"]}));
    stack.api.key_action(&revoked.id, "revoke");
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
            "Envoy reports another dynamic-module ABI version than native-filter/src/ffi/abi.rs declares: {logs}"
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

/// A control plane on SQLite, its API, and an edge key.
fn control_plane() -> (ServeProcess, Api, String) {
    let cp = ServeProcess::start_sqlite(&[]);
    let api = Api::new(&cp.url());
    let edge_key = api
        .create_key(json!({"name": "native edge", "kind": "edge"}))
        .secret;
    (cp, api, edge_key)
}

/// `envoy/envoy-module.yaml` (the module's deployment configuration) synced from `cp`, the
/// plugin configuration with `overrides`, and `concurrency` workers; every further
/// `(listener, overrides)` adds a copy of the listener with its own configuration (same source).
fn synced_envoy(
    cp: &ServeProcess,
    edge_key: &str,
    concurrency: usize,
    overrides: &Value,
    more: &[(&str, Value)],
) -> NativeEnvoy {
    let url = cp.url();
    NativeEnvoy::start_with_env(
        concurrency,
        LISTENER,
        &[(EDGE_KEY_ENV, edge_key)],
        |upstream| {
            let mut b = native::module_bootstrap(&url, upstream, overrides);
            let configuration = native::module_configuration(&b);
            for (name, extra) in more {
                let mut c = configuration.clone();
                for (k, v) in extra.as_object().into_iter().flatten() {
                    c[k] = v.clone();
                }
                let mut listener = b["static_resources"]["listeners"][0].clone();
                listener["name"] = json!(name);
                let filters =
                    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
                        .as_array_mut()
                        .unwrap();
                filters[0] = native::synced_filter(&c, &url);
                b["static_resources"]["listeners"]
                    .as_array_mut()
                    .unwrap()
                    .push(listener);
            }
            b
        },
    )
}

/// `times` requests in a row (each on a new connection) answer `status`.
fn all(envoy: &NativeEnvoy, times: usize, key: &str, status: u16) -> Result<Reply, String> {
    let mut last = None;
    for _ in 0..times {
        let r = envoy.request("GET", "/repos/acme/x", &[("x-api-key", key)]);
        if r.status != status {
            return Err(format!("{} {}", r.status, r.text));
        }
        last = Some(r);
    }
    last.ok_or_else(|| "no request".to_owned())
}

#[test]
fn synced_the_first_request_passes_at_once_and_a_revocation_reaches_every_worker_within_a_second() {
    let (cp, api, edge_key) = control_plane();
    let key = api.create_key(json!({"name": "k", "scopes": ["repo:read"]}));
    let other = api.create_key(json!({"name": "other", "scopes": ["repo:read"]}));
    let started = Instant::now();
    let envoy = synced_envoy(&cp, &edge_key, 4, &json!({"long_poll_wait_s": 5}), &[]);
    let ready = Instant::now();
    let first = wait_for("the first request passes", Duration::from_secs(1), || {
        all(&envoy, 1, &key.secret, 200)
    });
    assert_eq!(
        first.upstream_header("x-keygate-key-id"),
        Some(key.id.as_str())
    );
    eprintln!(
        "first request allowed {:?} after Envoy was ready ({:?} after its start)",
        ready.elapsed(),
        started.elapsed()
    );
    all(&envoy, 12, &key.secret, 200).unwrap();

    api.key_action(&key.id, "revoke");
    let revoked = Instant::now();
    wait_for(
        "the revocation on every worker",
        Duration::from_secs(1),
        || all(&envoy, 12, &key.secret, 401),
    );
    eprintln!(
        "revocation enforced on 12 connections after {:?}",
        revoked.elapsed()
    );
    all(&envoy, 8, &other.secret, 200).unwrap();
    assert_eq!(
        envoy.stat("dynamicmodulescustom.keygate.keyset.keys"),
        1,
        "one set, of the one live key (edge keys are not in it): {:?}",
        envoy.envoy.stats()
    );
    assert_eq!(envoy.stat("dynamicmodulescustom.keygate.native.syncs"), 1);
    assert!(envoy.stat("dynamicmodulescustom.keygate.sync.success") >= 2);
}

#[test]
fn synced_fails_closed_before_the_first_sync_turns_stale_without_the_control_plane_and_recovers() {
    let (mut cp, api, edge_key) = control_plane();
    let key = api.create_key(json!({"name": "k", "scopes": ["repo:read"]}));
    cp.kill();
    // `max_staleness_s` must exceed a long poll's wait plus its timeout.
    let overrides = json!({
        "long_poll_wait_s": 1,
        "request_timeout_ms": 1000,
        "max_staleness_s": 3,
        "failure_mode": "closed",
    });
    let envoy = synced_envoy(
        &cp,
        &edge_key,
        2,
        &overrides,
        &[("open", json!({"failure_mode": "open"}))],
    );
    let open = |k: &str| envoy.request_to("open", "/repos/acme/x", &[("x-api-key", k)]);

    // No set yet: fail closed, whatever the failure mode (as the wasm filter).
    for _ in 0..4 {
        let r = envoy.request("GET", "/repos/acme/x", &[("x-api-key", &key.secret)]);
        assert_eq!(
            (r.status, r.code()),
            (503, "keyset_unavailable"),
            "{}",
            r.text
        );
        let r = open(&key.secret);
        assert_eq!(
            (r.status, r.code()),
            (503, "keyset_unavailable"),
            "{}",
            r.text
        );
    }

    cp.restart();
    let back = Instant::now();
    wait_for(
        "the first sync after the control plane came up",
        Duration::from_secs(8),
        || all(&envoy, 4, &key.secret, 200),
    );
    eprintln!(
        "first sync {:?} after the control plane came up",
        back.elapsed()
    );
    assert_eq!(open(&key.secret).status, 200);

    cp.kill();
    let gone = Instant::now();
    let stale = wait_for(
        "stale after max_staleness_s",
        Duration::from_secs(10),
        || all(&envoy, 2, &key.secret, 503),
    );
    assert_eq!(stale.code(), "keyset_stale", "{}", stale.text);
    let waited = gone.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "stale after {waited:?}: before max_staleness_s (3 s) less the last answer's age"
    );
    let r = open(&key.secret);
    assert_eq!(
        r.status, 200,
        "failure_mode open lets it through: {}",
        r.text
    );
    assert_eq!(
        r.upstream_header("x-keygate-key-id"),
        None,
        "without identity"
    );
    // An unknown key passes too when open (the set is not consulted): as the wasm filter.
    let unknown = key::generate("kg_live").unwrap();
    assert_eq!(open(unknown.expose_secret()).status, 200);

    cp.restart();
    wait_for("fresh again", Duration::from_secs(10), || {
        all(&envoy, 4, &key.secret, 200)
    });
    let r = open(&key.secret);
    assert_eq!(r.upstream_header("x-keygate-key-id"), Some(key.id.as_str()));
    assert_eq!(
        envoy.stat("dynamicmodulescustom.keygate.native.syncs"),
        1,
        "two listeners, one source: one sync, one set: {:?}",
        envoy.envoy.stats()
    );
    assert!(envoy.stat("dynamicmodulescustom.keygate.sync.failure.unreachable") >= 1);
}

#[test]
fn synced_over_https_from_a_control_plane_its_ca_file_trusts_and_never_from_one_it_does_not() {
    let (cp, api, edge_key) = control_plane();
    let front = TlsFront::start(cp.addr());
    let key = api.create_key(json!({"name": "k", "scopes": ["repo:read"]}));
    let control_plane = cp.addr().to_string();
    // Listener `ingress` trusts the front's CA (`ca_file`); `untrusting` keeps Mozilla's roots,
    // which never signed the front's certificate.
    let envoy =
        NativeEnvoy::start_with_env(2, LISTENER, &[(EDGE_KEY_ENV, &edge_key)], |upstream| {
            let wasm = bootstrap(&control_plane, upstream, &json!({"long_poll_wait_s": 5}));
            let configuration = plugin_configuration(&wasm);
            let trusting = native::synced_filter_trusting(
                &configuration,
                &front.url,
                Some(front.ca_file.as_path()),
            );
            let mut b = native::replace_wasm_filter(&wasm, trusting);
            let mut listener = b["static_resources"]["listeners"][0].clone();
            listener["name"] = json!("untrusting");
            listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0] =
                native::synced_filter_trusting(&configuration, &front.url, None);
            listener["address"]["socket_address"]["port_value"] = json!(0);
            b["static_resources"]["listeners"]
                .as_array_mut()
                .unwrap()
                .push(listener);
            b
        });
    let untrusting = |k: &str| envoy.request_to("untrusting", "/repos/acme/x", &[("x-api-key", k)]);

    wait_for("the key synced over https", SYNC, || {
        all(&envoy, 4, &key.secret, 200)
    });
    api.key_action(&key.id, "revoke");
    wait_for("the revocation over https", SYNC, || {
        all(&envoy, 4, &key.secret, 401)
    });
    assert!(
        front.connections() >= 1,
        "the sync went through the TLS front"
    );

    // The other source never gets a set: a certificate it cannot verify is no answer.
    let r = untrusting(&key.secret);
    assert_eq!(
        (r.status, r.code()),
        (503, "keyset_unavailable"),
        "{}",
        r.text
    );
    assert_eq!(
        envoy.stat("dynamicmodulescustom.keygate.native.syncs"),
        2,
        "two sources (the CA is part of one): {:?}",
        envoy.envoy.stats()
    );
    assert!(
        envoy.stat("dynamicmodulescustom.keygate.sync.failure.unreachable") >= 1,
        "{:?}",
        envoy.envoy.stats()
    );
}

#[test]
fn synced_the_sync_sets_its_gauges_in_envoys_stats_without_any_request() {
    let (cp, api, edge_key) = control_plane();
    for i in 0..3 {
        api.create_key(json!({"name": format!("k{i}"), "scopes": ["repo:read"]}));
    }
    let envoy = synced_envoy(&cp, &edge_key, 2, &json!({"long_poll_wait_s": 5}), &[]);
    // Not one request: the sync thread flushes through the configuration.
    wait_for("the key-set gauges", Duration::from_secs(5), || match envoy
        .stat("dynamicmodulescustom.keygate.keyset.keys")
    {
        3 => Ok(()),
        n => Err(format!("{n} keys: {:?}", envoy.envoy.stats())),
    });
    let revision = envoy.stat("dynamicmodulescustom.keygate.keyset.revision");
    assert!(revision >= 4, "revision {revision}");
    assert_eq!(envoy.stat("dynamicmodulescustom.keygate.native.syncs"), 1);
    // A revocation moves them, still without a request.
    let doomed = api.create_key(json!({"name": "doomed", "scopes": ["repo:read"]}));
    api.key_action(&doomed.id, "revoke");
    wait_for("the gauges follow the feed", Duration::from_secs(5), || {
        let now = envoy.stat("dynamicmodulescustom.keygate.keyset.revision");
        let keys = envoy.stat("dynamicmodulescustom.keygate.keyset.keys");
        if now >= revision + 2 && keys == 3 {
            Ok(())
        } else {
            Err(format!("revision {now}, {keys} keys"))
        }
    });
    assert_eq!(
        envoy.stat("http.ingress_http.downstream_rq_total"),
        0,
        "no request reached Envoy"
    );
}

#[test]
fn synced_usage_counts_reach_the_control_plane() {
    let (cp, api, edge_key) = control_plane();
    let a = api.create_key(json!({"name": "a", "scopes": ["repo:read"]}));
    let b = api.create_key(json!({"name": "b", "scopes": ["repo:read"]}));
    let envoy = synced_envoy(
        &cp,
        &edge_key,
        2,
        &json!({"long_poll_wait_s": 5, "usage_report_interval_ms": 200}),
        &[],
    );
    wait_for("synced", Duration::from_secs(5), || {
        all(&envoy, 1, &a.secret, 200)
    });
    all(&envoy, 6, &a.secret, 200).unwrap();
    all(&envoy, 3, &b.secret, 200).unwrap();
    let unknown = key::generate("kg_live").unwrap();
    all(&envoy, 2, unknown.expose_secret(), 401).unwrap();
    wait_for("usage reported", Duration::from_secs(10), || {
        let counts = [&a, &b].map(|k| api.key(&k.id).usage_count);
        if counts == [7, 3] {
            Ok(())
        } else {
            Err(format!("{counts:?}"))
        }
    });
    assert!(api.key(&a.id).last_used_at.is_some());
    // Counted once: a while later, still the same.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(api.key(&a.id).usage_count, 7);
    // The sync thread counts its reports in Envoy's stats itself (no request needed).
    wait_for(
        "the reports counted",
        Duration::from_secs(5),
        || match envoy.stat("dynamicmodulescustom.keygate.usage.batches_sent") {
            0 => Err(format!("{:?}", envoy.envoy.stats())),
            n => Ok(n),
        },
    );
}
