//! Keygate's forward-auth endpoint behind real Envoy 1.40 with Envoy's own
//! `envoy.filters.http.ext_authz` filter (HTTP service), `envoy/ext-authz.yaml` itself, in front
//! of the echo upstream, against a real `keygate serve --forward-auth-config` process: what the
//! upstream receives (identity headers; the key and spoofed identity headers gone), denials that
//! are the filter's own replies byte for byte, a revocation enforced from the next request on,
//! the proxy's edge key required, and fail-closed when the control plane is down.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keygate_e2e::envoy::Reply;
use keygate_e2e::ext_authz::{ExtAuthzStack, bootstrap};
use keygate_filter_core::config::Config as FilterConfig;
use keygate_filter_core::decision::{Decision, KeySetState, Request, decide};
use keygate_gateway::envoy_bootstrap::Addresses;
use keygate_testkit::envoy::envoy_binary;
use serde_json::{Value, json};

/// The filter's configuration forward-auth gets: the e2e routes (`/health` anonymous,
/// `/repos/<org>/…` scoped and allow-listed), keys from `x-api-key`, a bearer token or the
/// `kg_key` cookie, `kg_live` keys only.
fn filter_config() -> Value {
    let routes: Value = serde_json::from_str(keygate_e2e::ROUTES).unwrap();
    json!({
        "routes": routes,
        "key_sources": [{"header": "x-api-key"}, {"bearer": true}, {"cookie": "kg_key"}],
        "accepted_prefixes": ["kg_live"],
    })
}

/// The same configuration as the filter parses it (with the members only the filter needs).
fn parsed_filter_config() -> FilterConfig {
    let mut c = filter_config();
    c["cluster"] = json!("keygate_control_plane");
    c["authority"] = json!("keygate");
    c["edge_key"] = json!("kg_edge_unused");
    FilterConfig::from_json(c.to_string().as_bytes()).expect("the filter's configuration")
}

/// One denial: method, path, headers, the filter's code.
type Row<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

fn unix_now() -> u64 {
    keygate_e2e::unix_secs() as u64
}

/// A denial through Envoy is the filter's own reply for the same request: status, body bytes,
/// `content-type`, `cache-control` and the challenge.
#[track_caller]
fn denied_as_the_filter(
    r: &Reply,
    set: &keygate_protocol::keyset::KeySet,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    code: &str,
) {
    let config = parsed_filter_config();
    let mut view = vec![(":method", method), (":path", path)];
    view.extend_from_slice(headers);
    let Decision::Deny(d) = decide(
        &Request::from_pairs(view),
        KeySetState::Fresh(set),
        unix_now(),
        &config,
    ) else {
        panic!("the filter lets {method} {path} through");
    };
    assert_eq!(d.reason.code(), code, "the filter's reason");
    assert_eq!((r.status, r.code()), (d.status(), code), "{}", r.text);
    assert_eq!(r.text, d.body(), "{method} {path}: the filter's body");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("www-authenticate"), d.www_authenticate);
    // A denial never reached the upstream (the echo's body would have its view).
    assert!(r.body.get("headers").is_none(), "{}", r.text);
}

/// The upstream got none of the client's credentials and no identity it did not earn.
#[track_caller]
fn upstream_without(r: &Reply, names: &[&str]) {
    assert_eq!(r.status, 200, "{}", r.text);
    for name in names {
        assert_eq!(
            r.upstream_header(name),
            None,
            "{name} reached the upstream: {}",
            r.text
        );
    }
}

#[test]
fn every_row_of_the_decision_table_through_ext_authz() {
    let stack = ExtAuthzStack::start(1, &filter_config());
    let reader = stack.api.create_key(
        json!({"name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"}),
    );
    let writer = stack.api.create_key(
        json!({"name": "writer", "scopes": ["repo:read", "repo:write"], "owner_id": "bob"}),
    );
    let revoked = stack.api.create_key(json!({"name": "revoked"}));
    stack.api.key_action(&revoked.id, "revoke");
    let suspended = stack.api.create_key(json!({"name": "suspended"}));
    stack.api.key_action(&suspended.id, "suspend");
    let short = stack.api.create_key(
        json!({"name": "short", "scopes": ["repo:read"], "resources": ["acme"], "expires_in": 2}),
    );
    let ok = stack.wait_status(
        "the reader allowed",
        Duration::from_secs(5),
        "/repos/acme/x",
        &reader.secret,
        200,
    );
    // The key set as the filter would hold it now (no write after this point).
    let set = stack.keyset();

    // Allowed: identity headers upstream, the key gone, the proxy's edge key never there.
    assert_eq!(
        ok.upstream_header("x-keygate-key-id"),
        Some(reader.id.as_str())
    );
    assert_eq!(ok.upstream_header("x-keygate-owner"), Some("alice"));
    assert_eq!(ok.upstream_header("x-keygate-scopes"), Some("repo:read"));
    assert_eq!(ok.upstream_path(), Some("/repos/acme/x"));
    upstream_without(&ok, &["x-api-key", "x-keygate-edge-key"]);
    // Spoofed identity headers: replaced by the key's, or removed.
    let r = stack.request(
        "GET",
        "/repos/acme/x?page=2",
        &[
            ("x-api-key", &reader.secret),
            ("x-keygate-owner", "mallory"),
            ("x-keygate-scopes", "admin"),
            ("x-keygate-admin", "1"),
        ],
    );
    upstream_without(&r, &["x-api-key", "x-keygate-admin"]);
    assert_eq!(r.upstream_header("x-keygate-owner"), Some("alice"));
    assert_eq!(r.upstream_header("x-keygate-scopes"), Some("repo:read"));
    assert_eq!(r.upstream_path(), Some("/repos/acme/x?page=2"));
    // A bearer token: the authorization header is gone.
    let bearer = format!("Bearer {}", writer.secret);
    let r = stack.request("DELETE", "/repos/globex/y", &[("authorization", &bearer)]);
    upstream_without(&r, &["authorization"]);
    assert_eq!(r.upstream_header("x-keygate-owner"), Some("bob"));
    assert_eq!(r.body["method"], "DELETE");
    // A key cookie: the other cookies go on, the key's does not; alone, the header goes.
    let cookies = format!("theme=dark; kg_key={}; lang=en", reader.secret);
    let r = stack.request("GET", "/repos/acme/x", &[("cookie", &cookies)]);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.upstream_header("cookie"), Some("theme=dark; lang=en"));
    let only = format!("kg_key={}", reader.secret);
    let r = stack.request("GET", "/repos/acme/x", &[("cookie", &only)]);
    upstream_without(&r, &["cookie"]);
    assert_eq!(
        r.upstream_header("x-keygate-key-id"),
        Some(reader.id.as_str())
    );
    // Anonymous route: passes without a key; a key and spoofed identity sent anyway are gone.
    let r = stack.get("/health", None);
    upstream_without(
        &r,
        &["x-keygate-key-id", "x-keygate-owner", "x-keygate-scopes"],
    );
    let r = stack.request(
        "GET",
        "/health",
        &[
            ("x-api-key", &reader.secret),
            ("x-keygate-key-id", "key_00000000000000000000000000000000"),
            ("x-keygate-owner", "mallory"),
        ],
    );
    upstream_without(
        &r,
        &[
            "x-api-key",
            "x-keygate-key-id",
            "x-keygate-owner",
            "x-keygate-scopes",
        ],
    );

    // Denials: the filter's replies.
    let mut bad_checksum = reader.secret.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = keygate_protocol::key::generate("kg_live").unwrap();
    let other = keygate_protocol::key::generate("acme_test").unwrap();
    let rows: Vec<Row<'_>> = vec![
        ("GET", "/repos/acme/x", vec![], "missing_key"),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", "not-a-key")],
            "malformed_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", bad_checksum.as_str())],
            "malformed_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", other.expose_secret())],
            "prefix_not_accepted",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", unknown.expose_secret())],
            "unknown_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", revoked.secret.as_str())],
            "unknown_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", suspended.secret.as_str())],
            "unknown_key",
        ),
        // Envoy's own edge key, sent as a request's key, is no key of the set.
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", stack.edge_key.as_str())],
            "unknown_key",
        ),
        (
            "POST",
            "/repos/acme/x",
            vec![("x-api-key", reader.secret.as_str())],
            "insufficient_scope",
        ),
        (
            "GET",
            "/repos/globex/x",
            vec![("x-api-key", reader.secret.as_str())],
            "resource_not_allowed",
        ),
    ];
    for (method, path, headers, code) in &rows {
        let r = stack.request(method, path, headers);
        denied_as_the_filter(&r, &set, method, path, headers, code);
    }
    // A client's X-Forwarded-Uri cannot move an ext_authz request to the anonymous route.
    let headers = [
        ("x-forwarded-uri", "/health"),
        ("x-original-uri", "/health"),
    ];
    let r = stack.request("GET", "/repos/acme/x", &headers);
    denied_as_the_filter(&r, &set, "GET", "/repos/acme/x", &headers, "missing_key");
    // Expired since the set was synced: the expiry is checked against the clock.
    std::thread::sleep(Duration::from_millis(2200));
    let headers = [("x-api-key", short.secret.as_str())];
    let r = stack.request("GET", "/repos/acme/x", &headers);
    denied_as_the_filter(&r, &set, "GET", "/repos/acme/x", &headers, "expired_key");

    // Envoy counted what ext_authz decided; the control plane counted the allowed uses.
    assert!(stack.stat("http.ingress_http.ext_authz.ok") >= 7);
    assert!(stack.stat("http.ingress_http.ext_authz.denied") >= 12);
    assert_eq!(stack.stat("http.ingress_http.ext_authz.error"), 0);
    keygate_e2e::eventually("the reader's usage", 100, Duration::from_millis(50), || {
        let k = stack.api.key(&reader.id);
        (k.usage_count >= 4 && k.last_used_at.is_some()).then_some(())
    });
}

#[test]
fn a_revocation_is_denied_by_the_next_request_and_the_proxy_needs_its_edge_key() {
    let stack = ExtAuthzStack::start(2, &filter_config());
    let key = stack.api.create_key(json!({"name": "caller"}));
    stack.wait_status("allowed", Duration::from_secs(5), "/x", &key.secret, 200);
    let revoked_at = Instant::now();
    stack.api.key_action(&key.id, "revoke");
    // The first request after the revoke call answered is refused: the control plane decides
    // only once its key set holds every change it has seen committed.
    let r = stack.get("/x", Some(&key.secret));
    eprintln!(
        "revocation denied through ext_authz by the first request, {:?} after the revoke call was sent",
        revoked_at.elapsed()
    );
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.code(), "unknown_key");

    // Envoy's edge key revoked: forward-auth refuses the proxy (a denial Envoy hands on, with
    // a code that says it is the proxy's credential, not the client's).
    let other = stack.api.create_key(json!({"name": "other caller"}));
    stack.wait_status("allowed", Duration::from_secs(5), "/x", &other.secret, 200);
    let (st, list) = stack.api.admin(
        keygate_e2e::reqwest::Method::GET,
        "/v1/keys?limit=100",
        None,
    );
    assert_eq!(st, 200, "{list}");
    let edge_id = list["items"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == "edge"))
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("no edge key in {list}"))
        .to_owned();
    stack.api.key_action(&edge_id, "revoke");
    let r = stack.get("/x", Some(&other.secret));
    assert_eq!(
        (r.status, r.code()),
        (401, "PROXY_UNAUTHENTICATED"),
        "{}",
        r.text
    );
}

#[test]
fn envoy_fails_closed_when_the_control_plane_is_gone() {
    let mut stack = ExtAuthzStack::start(1, &filter_config());
    let key = stack.api.create_key(json!({"name": "caller"}));
    stack.wait_status("allowed", Duration::from_secs(5), "/x", &key.secret, 200);
    stack.control_plane.kill();
    for path in ["/x", "/health"] {
        let r = stack.get(path, Some(&key.secret));
        // status_on_error: 503, never a pass.
        assert_eq!(r.status, 503, "{path}: {}", r.text);
        assert!(
            r.body.get("headers").is_none(),
            "reached the upstream: {}",
            r.text
        );
    }
    assert!(stack.stat("http.ingress_http.ext_authz.error") >= 2);
}

#[test]
fn envoy_validates_ext_authz_yaml_without_the_edge_key() {
    let b = bootstrap(&Addresses {
        listener: "127.0.0.1:0",
        admin: "127.0.0.1:0",
        control_plane: "127.0.0.1:8080",
        upstream: "127.0.0.1:8081",
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext-authz.json");
    std::fs::write(&path, b.to_string()).unwrap();
    let out = Command::new(envoy_binary().unwrap_or_else(|e| panic!("{e}")))
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .env_remove("KEYGATE_EDGE_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK"),
        "validate failed:\n{text}"
    );
}
