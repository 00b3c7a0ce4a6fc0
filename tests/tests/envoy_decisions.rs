//! The filter in real Envoy 1.40 (`envoy/envoy.yaml`, the real `.wasm`, a real `keygate serve`):
//! every row of the decision table, what the upstream sees of each key source with
//! `hide_credentials`, spoofed identity headers, and Envoy's path normalization in front of the
//! filter's own path check.

use std::time::Duration;

use keygate_e2e::IssuedKey;
use keygate_e2e::envoy::{EnvoyStack, Reply};
use serde_json::json;

const SYNC: Duration = Duration::from_secs(15);

/// The e2e routes (`/health` anonymous; `/repos/<org>/…` scoped and allow-listed), every key
/// source, and `kg_live`/`kg_edge` as the only accepted prefixes.
fn decision_stack() -> EnvoyStack {
    let routes: serde_json::Value = serde_json::from_str(keygate_e2e::ROUTES).unwrap();
    EnvoyStack::start(
        1,
        json!({
            "routes": routes,
            "key_sources": [{"header": "x-api-key"}, {"bearer": true}, {"cookie": "kg_key"}, {"query": "api_key"}],
            "accepted_prefixes": ["kg_live", "kg_edge"],
        }),
    )
}

/// A key for `/repos/acme/…` (`repo:read`, owner `alice`), synced to every worker.
fn reader(stack: &EnvoyStack) -> IssuedKey {
    stack.synced_key(
        json!({"name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"}),
        "/repos/acme/x",
    )
}

fn denied(r: &Reply, status: u16, code: &str) {
    assert_eq!((r.status, r.code()), (status, code), "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[test]
fn every_row_of_the_decision_table_in_envoy() {
    let stack = decision_stack();
    let k = reader(&stack);
    let short = stack.api.create_key(
        json!({"name": "short", "scopes": ["repo:read"], "resources": ["acme"], "expires_in": 2}),
    );
    let revoked = stack.api.create_key(json!({"name": "gone"}));
    stack.api.key_action(&revoked.id, "revoke");
    let ok = stack.wait_status("synced", SYNC, "/repos/acme/x", &k.secret, 200);
    assert_eq!(ok.upstream_header("x-keygate-key-id"), Some(k.id.as_str()));
    assert_eq!(ok.upstream_header("x-keygate-owner"), Some("alice"));
    assert_eq!(ok.upstream_header("x-keygate-scopes"), Some("repo:read"));

    // anonymous route: passes without a key
    let r = stack.get("/health", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.upstream_header("x-keygate-key-id"), None);
    // no key
    let r = stack.get("/repos/acme/x", None);
    denied(&r, 401, "missing_key");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="keygate""#)
    );
    // malformed: last checksum character changed
    let mut bad = k.secret.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    denied(
        &stack.get("/repos/acme/x", Some(&bad)),
        401,
        "malformed_key",
    );
    // a well-formed key with a prefix not accepted here
    let other = keygate_protocol::key::generate("acme_test").unwrap();
    denied(
        &stack.get("/repos/acme/x", Some(other.expose_secret())),
        401,
        "prefix_not_accepted",
    );
    // never issued / revoked
    let unknown = keygate_protocol::key::generate("kg_live").unwrap();
    denied(
        &stack.get("/repos/acme/x", Some(unknown.expose_secret())),
        401,
        "unknown_key",
    );
    denied(
        &stack.get("/repos/acme/x", Some(&revoked.secret)),
        401,
        "unknown_key",
    );
    // scope and allow-list
    denied(
        &stack.request("POST", "/repos/acme/x", &[("x-api-key", &k.secret)]),
        403,
        "insufficient_scope",
    );
    denied(
        &stack.get("/repos/globex/x", Some(&k.secret)),
        403,
        "resource_not_allowed",
    );
    // expired between syncs (its expiry is checked against the clock)
    std::thread::sleep(Duration::from_millis(3100));
    let r = stack.get("/repos/acme/x", Some(&short.secret));
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        ["expired_key", "unknown_key"].contains(&r.code()),
        "an expired key: {}",
        r.text
    );
    // Every decision is counted in Envoy's stats.
    assert!(stack.stat("wasmcustom.keygate.decision.allow.allowed") >= 1);
    assert!(stack.stat("wasmcustom.keygate.decision.deny.unknown_key") >= 2);
}

#[test]
fn no_key_from_any_source_reaches_the_upstream() {
    let stack = decision_stack();
    let k = reader(&stack);
    let other = keygate_protocol::key::generate("kg_live").unwrap();
    let other = other.expose_secret();
    let bearer = format!("Bearer {other}");
    let cookie = format!("theme=dark; kg_key={other}; lang=en");
    let path = format!("/repos/acme/x?api_key={other}&page=2");

    // The valid key in x-api-key wins; the three other sources carry another key.
    let r = stack.request(
        "GET",
        &path,
        &[
            ("x-api-key", &k.secret),
            ("authorization", &bearer),
            ("cookie", &cookie),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.upstream_header("x-keygate-key-id"), Some(k.id.as_str()));
    assert_no_key(&r, &[&k.secret, other]);
    assert_eq!(r.upstream_header("x-api-key"), None);
    assert_eq!(r.upstream_header("authorization"), None);
    assert_eq!(r.upstream_header("cookie"), Some("theme=dark; lang=en"));
    assert_eq!(r.upstream_path(), Some("/repos/acme/x?page=2"));

    // Each source alone.
    let plain = "/repos/acme/x".to_owned();
    let alone: [(String, Vec<(&str, String)>); 4] = [
        (plain.clone(), vec![("x-api-key", k.secret.clone())]),
        (
            plain.clone(),
            vec![("authorization", format!("Bearer {}", k.secret))],
        ),
        (plain, vec![("cookie", format!("kg_key={}; a=b", k.secret))]),
        (format!("/repos/acme/x?api_key={}", k.secret), vec![]),
    ];
    for (path, headers) in &alone {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = stack.request("GET", path, &hs);
        assert_eq!(r.status, 200, "{path} {headers:?}: {}", r.text);
        assert_no_key(&r, &[&k.secret]);
        assert_eq!(r.upstream_path(), Some("/repos/acme/x"));
    }

    // An anonymous route: keys in a cookie or the query are not forwarded either.
    let r = stack.request(
        "GET",
        &format!("/health?api_key={other}"),
        &[
            ("cookie", &cookie),
            ("authorization", &bearer),
            ("x-api-key", other),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_no_key(&r, &[other]);
    assert_eq!(r.upstream_path(), Some("/health"));
    assert_eq!(r.upstream_header("cookie"), Some("theme=dark; lang=en"));

    // Another authorization scheme is not a key source: it reaches the upstream.
    let r = stack.request(
        "GET",
        "/repos/acme/x",
        &[
            ("x-api-key", &k.secret),
            ("authorization", "Basic dXNlcjpwYXNz"),
        ],
    );
    assert_eq!(
        r.upstream_header("authorization"),
        Some("Basic dXNlcjpwYXNz")
    );
}

fn assert_no_key(r: &Reply, keys: &[&str]) {
    for key in keys {
        assert!(
            !r.text.contains(key),
            "a key reached the upstream: {}",
            r.text
        );
    }
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let stack = decision_stack();
    let k = reader(&stack);
    let spoof = [
        ("x-keygate-key-id", "key_ffffffffffffffffffffffffffffffff"),
        ("x-keygate-owner", "mallory"),
        ("x-keygate-scopes", "admin"),
        ("x-keygate-admin", "true"),
    ];
    let mut headers = spoof.to_vec();
    headers.push(("x-api-key", &k.secret));
    let r = stack.request("GET", "/repos/acme/x", &headers);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.upstream_header("x-keygate-owner"), Some("alice"));
    assert_eq!(r.upstream_header("x-keygate-key-id"), Some(k.id.as_str()));
    assert_eq!(r.upstream_header("x-keygate-scopes"), Some("repo:read"));
    assert_eq!(r.upstream_header("x-keygate-admin"), None);
    // On an anonymous route too.
    let r = stack.request("GET", "/health", &spoof);
    assert_eq!(r.status, 200, "{}", r.text);
    for (name, _) in spoof {
        assert_eq!(r.upstream_header(name), None, "{name} forwarded");
    }
}

#[test]
fn envoy_normalizes_the_path_before_the_filter_sees_it() {
    let stack = decision_stack();
    let k = reader(&stack);
    // Dot segments are resolved by Envoy (normalize_path): the filter sees /repos/globex/x and
    // checks the allow-list against `globex`.
    let r = stack.get("/repos/acme/../globex/x", Some(&k.secret));
    denied(&r, 403, "resource_not_allowed");
    // Slashes are merged (merge_slashes): //repos//acme/x is /repos/acme/x.
    let r = stack.get("//repos//acme/x", Some(&k.secret));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.upstream_path(), Some("/repos/acme/x"));
    // An anonymous prefix cannot be used to reach another route.
    let r = stack.get("/health/../repos/acme/x", None);
    denied(&r, 401, "missing_key");
    // Encoded slashes are refused by Envoy itself (path_with_escaped_slashes_action: REJECT_REQUEST).
    let r = stack.get("/repos/acme%2F..%2Fglobex/x", Some(&k.secret));
    assert_eq!(r.status, 400, "{}", r.text);
    // An encoded dot segment is decoded and resolved by Envoy (RFC 3986 normalization).
    let r = stack.get("/repos/acme/%2e%2e/globex/x", Some(&k.secret));
    assert!(
        r.status == 403 || (r.status == 400 && r.code() == "invalid_path"),
        "{} {}",
        r.status,
        r.text
    );
}
