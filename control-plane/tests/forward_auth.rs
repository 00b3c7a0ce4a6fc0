//! The forward-auth endpoint over real HTTP: Envoy `ext_authz`'s path-suffix style and the
//! Traefik / Caddy / nginx header conventions, the proxy's edge key (and that it is never
//! taken for the request's credential, nor the request's for it), every row of the filter's
//! decision table compared with the filter's own pure decision on a key set synced from
//! `/v1/keyset`, usage counted, a revocation followed promptly on both engines and across two
//! replicas of one PostgreSQL, the disabled endpoint, and bad configurations refused at start.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ADMIN, Engine, InProcessServer, fresh_database};
use keygate_control_plane::http::keys::IssuedKey;
use keygate_filter_core::config::Config as FilterConfig;
use keygate_filter_core::decision::{Decision, KeySetState, Request, decide};
use keygate_protocol::keyset::KeySet;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The decision members of the filter's configuration under test: `/health` anonymous,
/// `GET /repos/<org>/…` needs `repo:read` and `<org>` allowed, other methods `repo:write`;
/// keys from `x-api-key`, `Authorization: Bearer` and the `kg_key` cookie; only `kg_live` keys.
const MEMBERS: &str = r#""routes":[
  {"path_prefix":"/health","anonymous":true},
  {"path_prefix":"/repos/","methods":["GET","HEAD"],"required_scopes":["repo:read"],"resource_from_path_segment":1},
  {"path_prefix":"/repos/","required_scopes":["repo:write"],"resource_from_path_segment":1}],
  "key_sources":[{"header":"x-api-key"},{"bearer":true},{"cookie":"kg_key"}],
  "accepted_prefixes":["kg_live"]"#;

const REMOVE: &str = "x-envoy-auth-headers-to-remove";
const PROXY_KEY: &str = "x-keygate-edge-key";

on_both_engines!(a_revocation_is_followed_promptly);

/// A server with forward-auth on `config` (the JSON text), on a fresh database of `engine`;
/// `open` drops the proxy credential. Returns the server, its directories and an edge key.
async fn start(
    engine: Engine,
    config: &str,
    open: bool,
) -> (InProcessServer, Vec<tempfile::TempDir>, String) {
    let (url, db_dir) = fresh_database(engine);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forward-auth.json");
    std::fs::write(&path, config).expect("write config");
    let s = InProcessServer::start_on(&url, |c| {
        c.forward_auth.config = Some(path);
        c.forward_auth.open = open;
    })
    .await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "proxy", "kind": "edge"})).await;
    (s, db_dir.into_iter().chain([dir]).collect(), edge)
}

/// An answer: status, headers (lowercase names), body text.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The names listed for removal.
    fn removed(&self) -> Vec<String> {
        self.header(REMOVE)
            .map(|v| v.split(',').map(|n| n.trim().to_owned()).collect())
            .unwrap_or_default()
    }

    #[track_caller]
    fn is(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code().as_str()),
            (status, code),
            "{self:?}"
        );
    }
}

/// A call to `path` (from `/v1/forward-auth` on) with `method` and `headers`.
async fn call(s: &InProcessServer, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = s.http.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        s.url(&format!("/v1/forward-auth{path}")),
    );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("forward-auth call");
    let status = resp.status();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").to_owned()))
        .collect();
    let body = resp.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

/// `headers` with the proxy's edge key added.
fn with_edge<'a>(edge: &'a str, headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![(PROXY_KEY, edge)];
    h.extend_from_slice(headers);
    h
}

/// Envoy ext_authz's style: the original method, `/v1/forward-auth<original path>`.
async fn ext_authz(
    s: &InProcessServer,
    edge: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    call(s, method, path, &with_edge(edge, headers)).await
}

fn filter_config() -> FilterConfig {
    FilterConfig::from_json(
        format!(r#"{{"cluster":"c","authority":"a","edge_key":"kg_edge_x",{MEMBERS}}}"#).as_bytes(),
    )
    .expect("the filter's configuration")
}

/// The filter's key set, synced the filter's way (`GET /v1/keyset` with the edge key).
async fn synced_set(s: &InProcessServer, edge: &str) -> KeySet {
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(edge)
        .send()
        .await
        .expect("keyset");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut set = KeySet::new();
    set.apply(&resp.bytes().await.expect("bytes"))
        .expect("snapshot applies");
    set
}

/// One row of the decision table: method, path, headers, status, code (`""` on a pass).
type Row<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Compares a forward-auth answer with the filter's own decision on the same request.
#[track_caller]
fn same_as_filter(
    a: &Answer,
    set: &KeySet,
    config: &FilterConfig,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) {
    let mut view = vec![(":method", method), (":path", path)];
    view.extend_from_slice(headers);
    let req = Request::from_pairs(view);
    match decide(&req, KeySetState::Fresh(set), unix_now(), config) {
        Decision::Deny(d) => {
            assert_eq!(a.status.as_u16(), d.status(), "{method} {path}: {a:?}");
            assert_eq!(a.body, d.body(), "{method} {path}: the filter's body");
            assert_eq!(a.header("www-authenticate"), d.www_authenticate);
            assert_eq!(a.header("content-type"), Some("application/json"));
            assert_eq!(a.header("cache-control"), Some("no-store"));
        }
        Decision::Allow(allow) => {
            assert_eq!(a.status, StatusCode::OK, "{method} {path}: {a:?}");
            assert!(a.body.is_empty());
            let set_names: Vec<&str> = match &allow.identity {
                Some(identity) => identity
                    .headers()
                    .into_iter()
                    .map(|(name, value)| {
                        assert_eq!(a.header(name), Some(value), "{name}");
                        name
                    })
                    .collect(),
                None => {
                    for name in ["x-keygate-key-id", "x-keygate-owner", "x-keygate-scopes"] {
                        assert_eq!(a.header(name), None, "no identity on {path}");
                    }
                    Vec::new()
                }
            };
            let removed = a.removed();
            // Every header the filter removes is removed here or replaced by a set value…
            for name in &allow.remove {
                assert!(
                    removed.iter().any(|r| r == name) || set_names.contains(name),
                    "{name} is neither removed nor replaced: {a:?}"
                );
            }
            // …and a name set is never also removed (Envoy removes after it sets).
            for name in &set_names {
                assert!(!removed.iter().any(|r| r == name), "{name}: {a:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_decision_table_is_the_filters() {
    let (s, _dirs, edge) = start(Engine::Sqlite, &format!("{{{MEMBERS}}}"), false).await;
    let config = filter_config();
    let IssuedKey { secret: reader, key: rec, .. } = s
        .create(json!({"name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"}))
        .await;
    let reader_id = rec.id.clone();
    let IssuedKey { secret: writer, .. } = s
        .create(json!({"name": "writer", "scopes": ["repo:read", "repo:write"], "owner_id": "bob"}))
        .await;
    let IssuedKey {
        secret: revoked,
        key: rrec,
        ..
    } = s.create(json!({"name": "revoked"})).await;
    let IssuedKey {
        secret: suspended,
        key: srec,
        ..
    } = s.create(json!({"name": "suspended"})).await;
    let IssuedKey { secret: short, .. } = s
        .create(json!({"name": "short", "scopes": ["repo:read"], "expires_in": 2}))
        .await;
    for (rec, action) in [(&rrec, "revoke"), (&srec, "suspend")] {
        let (st, v) = s
            .admin(
                Method::POST,
                &format!("/v1/keys/{}/{action}", rec.id.as_str()),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    // The filter's set, synced now, as the mirror is (no write after this point).
    let set = synced_set(&s, &edge).await;
    wait_for_revision(&s).await;

    let mut bad_checksum = reader.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = keygate_protocol::key::generate("kg_live").unwrap();
    let other_prefix = keygate_protocol::key::generate("acme_test").unwrap();
    let bearer_writer = format!("Bearer {writer}");
    let cookie_reader = format!("theme=dark; kg_key={reader}; lang=en");
    let cookie_only = format!("kg_key={reader}");

    let rows: Vec<Row<'_>> = vec![
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", reader.as_str())],
            200,
            "",
        ),
        (
            "GET",
            "/repos/acme/x?page=2",
            vec![("authorization", bearer_writer.as_str())],
            200,
            "",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("cookie", cookie_reader.as_str())],
            200,
            "",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("cookie", cookie_only.as_str())],
            200,
            "",
        ),
        (
            "DELETE",
            "/repos/globex/y",
            vec![("x-api-key", writer.as_str())],
            200,
            "",
        ),
        // spoofed identity headers next to a valid key
        (
            "GET",
            "/repos/acme/x",
            vec![
                ("x-api-key", reader.as_str()),
                ("x-keygate-owner", "mallory"),
                ("x-keygate-admin", "1"),
            ],
            200,
            "",
        ),
        // anonymous route, with and without a key, with a spoofed identity
        ("GET", "/health", vec![], 200, ""),
        (
            "GET",
            "/health",
            vec![
                ("x-api-key", reader.as_str()),
                ("x-keygate-key-id", "key_0"),
            ],
            200,
            "",
        ),
        ("GET", "/repos/acme/x", vec![], 401, "missing_key"),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", "not-a-key")],
            401,
            "malformed_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", bad_checksum.as_str())],
            401,
            "malformed_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", other_prefix.expose_secret())],
            401,
            "prefix_not_accepted",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", unknown.expose_secret())],
            401,
            "unknown_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", revoked.as_str())],
            401,
            "unknown_key",
        ),
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", suspended.as_str())],
            401,
            "unknown_key",
        ),
        // the edge key is not a key of the set: as the request's own credential it is unknown
        (
            "GET",
            "/repos/acme/x",
            vec![("x-api-key", edge.as_str())],
            401,
            "unknown_key",
        ),
        (
            "POST",
            "/repos/acme/x",
            vec![("x-api-key", reader.as_str())],
            403,
            "insufficient_scope",
        ),
        (
            "GET",
            "/repos/globex/x",
            vec![("x-api-key", reader.as_str())],
            403,
            "resource_not_allowed",
        ),
        // (dot segments would be resolved by the HTTP client; these reach the server as sent)
        (
            "GET",
            "/health%2F..%2Frepos/globex/x",
            vec![],
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/repos//globex/x",
            vec![("x-api-key", reader.as_str())],
            400,
            "invalid_path",
        ),
    ];
    for (method, path, headers, status, code) in &rows {
        let a = ext_authz(&s, &edge, method, path, headers).await;
        a.is(*status, code);
        same_as_filter(&a, &set, &config, method, path, headers);
        // The proxy's own header is never among those the answer touches.
        assert!(!a.removed().iter().any(|r| r == PROXY_KEY), "{a:?}");
    }

    // What the upstream is told, in detail, for the rows that change headers.
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[("x-api-key", &reader), ("x-keygate-owner", "mallory")],
    )
    .await;
    assert_eq!(a.header("x-keygate-key-id"), Some(reader_id.as_str()));
    assert_eq!(a.header("x-keygate-owner"), Some("alice"));
    assert_eq!(a.header("x-keygate-scopes"), Some("repo:read"));
    assert_eq!(
        a.removed(),
        ["x-api-key"],
        "x-keygate-owner is replaced, not removed"
    );
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[("authorization", &bearer_writer)],
    )
    .await;
    assert_eq!(a.removed(), ["authorization"]);
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[("cookie", &cookie_reader)],
    )
    .await;
    assert_eq!(a.header("cookie"), Some("theme=dark; lang=en"));
    assert!(a.removed().is_empty(), "{a:?}");
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[("cookie", &cookie_only)],
    )
    .await;
    assert_eq!(a.header("cookie"), None);
    assert_eq!(a.removed(), ["cookie"]);
    let a = ext_authz(&s, &edge, "GET", "/health", &[("x-api-key", &reader)]).await;
    let removed: HashSet<String> = a.removed().into_iter().collect();
    let want: HashSet<String> = [
        "x-keygate-key-id",
        "x-keygate-owner",
        "x-keygate-scopes",
        "x-api-key",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(
        removed, want,
        "an anonymous pass removes every identity name and the key"
    );
    let a = ext_authz(&s, &edge, "GET", "/repos/acme/x", &[]).await;
    assert_eq!(
        a.header("www-authenticate"),
        Some(r#"Bearer realm="keygate""#)
    );

    // Expired between syncs: the mirror still holds it, with its expiry, as the filter does.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let path = "/repos/acme/x";
    let headers = [("x-api-key", short.as_str())];
    let a = ext_authz(&s, &edge, "GET", path, &headers).await;
    a.is(401, "expired_key");
    same_as_filter(&a, &set, &config, "GET", path, &headers);

    // Allowed uses reach the key's usage, as the filter's reports do.
    let rec = eventually_key(&s, &reader_id, |k| k["usage_count"].as_i64() >= Some(7)).await;
    assert!(
        rec["last_used_at"].as_i64().unwrap() >= unix_now() as i64 - 60,
        "{rec}"
    );
    // And every decision is counted by reason.
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "keygate_forward_auth_decisions_total{reason=\"allowed\"}",
        "keygate_forward_auth_decisions_total{reason=\"unknown_key\"}",
        "keygate_forward_auth_keyset_revision",
    ] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .unwrap_or_else(|| panic!("{line} missing:\n{metrics}"));
        assert!(value.trim().parse::<f64>().unwrap() >= 1.0, "{line}{value}");
    }
}

/// Waits until the forward-auth mirror holds the database's current revision.
async fn wait_for_revision(s: &InProcessServer) {
    let fa = s.state.forward_auth().expect("forward-auth on");
    let want = s.state.db().revision().await.unwrap() as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    while fa.mirror.revision() < Some(want) {
        assert!(
            Instant::now() < deadline,
            "the mirror did not reach revision {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `GET /v1/keys/{id}` until `ok` holds (usage is flushed every 50 ms here).
async fn eventually_key(s: &InProcessServer, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (st, v) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
        assert_eq!(st, StatusCode::OK);
        if ok(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("key {id} never reached the expected state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traefik_caddy_and_nginx_name_the_original_request_in_headers() {
    let (s, _dirs, edge) = start(Engine::Sqlite, &format!("{{{MEMBERS}}}"), false).await;
    let IssuedKey { secret: reader, .. } = s
        .create(json!({"name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"}))
        .await;
    let bearer = format!("Bearer {reader}");
    // Traefik ForwardAuth: GET to the address, X-Forwarded-Method / X-Forwarded-Uri, the
    // client's headers copied.
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(
            &edge,
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/repos/acme/x?a=1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com"),
                ("x-api-key", &reader),
            ],
        ),
    )
    .await;
    a.is(200, "");
    assert_eq!(a.header("x-keygate-owner"), Some("alice"));
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(
            &edge,
            &[
                ("x-forwarded-method", "POST"),
                ("x-forwarded-uri", "/repos/acme/x"),
                ("x-api-key", &reader),
            ],
        ),
    )
    .await;
    a.is(403, "insufficient_scope");
    // Caddy forward_auth: the same headers, the key as a bearer token.
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(
            &edge,
            &[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/repos/globex/x"),
                ("authorization", &bearer),
            ],
        ),
    )
    .await;
    a.is(403, "resource_not_allowed");
    assert_eq!(
        a.header("www-authenticate"),
        Some(
            r#"Bearer realm="keygate", error="insufficient_scope", error_description="resource_not_allowed""#
        )
    );
    // nginx auth_request: X-Original-URI (and X-Original-Method, by convention), the
    // subrequest's own method otherwise.
    let a = call(
        &s,
        "HEAD",
        "",
        &with_edge(
            &edge,
            &[("x-original-uri", "/repos/acme/x"), ("x-api-key", &reader)],
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(
            &edge,
            &[
                ("x-original-uri", "/repos/acme/x"),
                ("x-original-method", "DELETE"),
                ("x-api-key", &reader),
            ],
        ),
    )
    .await;
    a.is(403, "insufficient_scope");
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(&edge, &[("x-original-uri", "/health")]),
    )
    .await;
    a.is(200, "");
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(&edge, &[("x-original-uri", "/repos/acme/x")]),
    )
    .await;
    a.is(401, "missing_key");
    // A client that adds the other convention's header to move the request is refused.
    let a = call(
        &s,
        "GET",
        "",
        &with_edge(
            &edge,
            &[
                ("x-original-uri", "/repos/globex/x"),
                ("x-forwarded-uri", "/health"),
            ],
        ),
    )
    .await;
    a.is(400, "AMBIGUOUS_ORIGINAL_REQUEST");
    // The bare endpoint without an original URI says how to call it.
    let a = call(&s, "GET", "", &with_edge(&edge, &[])).await;
    a.is(400, "ORIGINAL_URI_MISSING");
    // Envoy's style ignores those headers: the suffix is the request, whatever a client sent.
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[
            ("x-forwarded-uri", "/health"),
            ("x-original-uri", "/health"),
        ],
    )
    .await;
    a.is(401, "missing_key");
    // Any method, the root path included.
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"] {
        let a = ext_authz(&s, &edge, method, "/", &[]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} /: {a:?}");
    }
    let a = ext_authz(&s, &edge, "GET", "/health?x=1", &[]).await;
    a.is(200, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_presents_an_edge_key_never_confused_with_the_requests() {
    let (s, _dirs, edge) = start(Engine::Sqlite, &format!("{{{MEMBERS}}}"), false).await;
    let IssuedKey {
        secret: workspace, ..
    } = s
        .create(json!({"name": "ws", "scopes": ["repo:read"]}))
        .await;
    let bearer_edge = format!("Bearer {edge}");
    // No proxy credential: refused, whatever the request carries.
    let a = call(&s, "GET", "/health", &[]).await;
    a.is(401, "PROXY_UNAUTHENTICATED");
    // The request's own credentials are never the proxy's, even an edge key.
    let a = call(
        &s,
        "GET",
        "/health",
        &[("authorization", bearer_edge.as_str())],
    )
    .await;
    a.is(401, "PROXY_UNAUTHENTICATED");
    let a = call(&s, "GET", "/health", &[("x-api-key", edge.as_str())]).await;
    a.is(401, "PROXY_UNAUTHENTICATED");
    // A bad one, a key of another kind, the admin credential.
    let a = call(&s, "GET", "/health", &[(PROXY_KEY, "kg_live_nope")]).await;
    a.is(401, "PROXY_UNAUTHENTICATED");
    let a = call(&s, "GET", "/health", &[(PROXY_KEY, workspace.as_str())]).await;
    a.is(403, "PROXY_FORBIDDEN");
    let a = call(&s, "GET", "/health", &[(PROXY_KEY, ADMIN)]).await;
    a.is(403, "PROXY_FORBIDDEN");
    // With the edge key: the request's own bearer edge key is the request's, and unknown.
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[("authorization", bearer_edge.as_str())],
    )
    .await;
    a.is(401, "unknown_key");
    // …and the request's workspace key decides the request, not the proxy.
    let a = ext_authz(
        &s,
        &edge,
        "GET",
        "/repos/acme/x",
        &[("x-api-key", workspace.as_str())],
    )
    .await;
    a.is(200, "");
    // A revoked edge key stops working at once.
    let IssuedKey {
        secret: second,
        key: rec,
        ..
    } = s.create(json!({"name": "proxy 2", "kind": "edge"})).await;
    call(&s, "GET", "/health", &[(PROXY_KEY, second.as_str())])
        .await
        .is(200, "");
    let id = rec.id.as_str();
    let (st, v) = s
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    call(&s, "GET", "/health", &[(PROXY_KEY, second.as_str())])
        .await
        .is(401, "PROXY_UNAUTHENTICATED");

    // --forward-auth-open: no proxy credential needed; a proxy header is ignored, and still
    // never a key source.
    let (open, _dirs2, _) = start(Engine::Sqlite, &format!("{{{MEMBERS}}}"), true).await;
    let IssuedKey { secret: key, .. } = open
        .create(json!({"name": "k", "scopes": ["repo:read"]}))
        .await;
    call(&open, "GET", "/health", &[]).await.is(200, "");
    call(&open, "GET", "/repos/acme/x", &[(PROXY_KEY, key.as_str())])
        .await
        .is(401, "missing_key");
    call(
        &open,
        "GET",
        "/repos/acme/x",
        &[("x-api-key", key.as_str())],
    )
    .await
    .is(200, "");
}

async fn a_revocation_is_followed_promptly(e: Engine) {
    let (s, _dirs, edge) = start(e, &format!("{{{MEMBERS}}}"), false).await;
    let call = |key: String| {
        let (s, edge) = (&s, edge.clone());
        async move { ext_authz(s, &edge, "GET", "/repos/acme/x", &[("x-api-key", &key)]).await }
    };
    for round in 0..5 {
        // Read your writes on this replica: a key is known as soon as its creation answered,
        // and refused as soon as its revocation answered (the call waits for the key set to
        // apply a change the process has seen committed, never for the database).
        let IssuedKey {
            secret: key,
            key: rec,
            ..
        } = s
            .create(json!({"name": format!("k{round}"), "scopes": ["repo:read"]}))
            .await;
        call(key.clone()).await.is(200, "");
        let id = rec.id.clone();
        let (st, v) = s
            .admin(
                Method::POST,
                &format!("/v1/keys/{id}/revoke"),
                Some(json!({})),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let answered = Instant::now();
        call(key).await.is(401, "unknown_key");
        eprintln!(
            "{e:?}: revoked key denied by the first call, {:?} after the revoke answered",
            answered.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_follow_each_others_writes() {
    let (url, _) = fresh_database(Engine::Postgres);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forward-auth.json");
    std::fs::write(&path, format!("{{{MEMBERS}}}")).unwrap();
    let writer = InProcessServer::start_on(&url, |_| {}).await;
    let p = path.clone();
    let reader = InProcessServer::start_on(&url, move |c| c.forward_auth.config = Some(p)).await;
    let IssuedKey { secret: edge, .. } = writer
        .create(json!({"name": "proxy", "kind": "edge"}))
        .await;
    let IssuedKey {
        secret: key,
        key: rec,
        ..
    } = writer
        .create(json!({"name": "k", "scopes": ["repo:read"]}))
        .await;
    let id = rec.id.clone();
    let wait = |want: StatusCode| {
        let (reader, edge, key) = (&reader, edge.clone(), key.clone());
        async move {
            let t = Instant::now();
            loop {
                let a = ext_authz(
                    reader,
                    &edge,
                    "GET",
                    "/repos/acme/x",
                    &[("x-api-key", &key)],
                )
                .await;
                if a.status == want {
                    return t.elapsed();
                }
                assert!(t.elapsed() < Duration::from_secs(3), "want {want}: {a:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let created = wait(StatusCode::OK).await;
    let (st, v) = writer
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let revoked = wait(StatusCode::UNAUTHORIZED).await;
    eprintln!(
        "another replica's writes reached forward-auth: created {created:?}, revoked {revoked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configuration_the_endpoint_says_it_is_off() {
    let s = InProcessServer::start(Engine::Sqlite).await;
    for path in ["", "/repos/x", "/"] {
        let a = call(&s, "GET", path, &[]).await;
        a.is(404, "FORWARD_AUTH_DISABLED");
        assert!(a.body.contains("--forward-auth-config"), "{a:?}");
    }
}

/// Runs `keygate serve` with `args` and `env` on a fresh SQLite file and returns its exit
/// status and stderr; panics if it is still running after 30 s (it started instead of refusing).
fn serve_refuses(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
    command
        .arg("serve")
        .args(args)
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_ADMIN_TOKEN", ADMIN)
        .env(
            "KEYGATE_DATABASE_URL",
            format!("sqlite:{}", dir.join("refused.db").display()),
        )
        .envs(env.iter().copied());
    // A name of its own per start: the output files are appended to.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut process =
        keygate_testkit::process::Supervised::spawn(&format!("refused-{n}"), command, dir)
            .expect("spawn keygate serve");
    let Some(status) = process.wait_exit(Duration::from_secs(30)) else {
        process.kill();
        panic!(
            "keygate serve {args:?} started instead of refusing:\n{}",
            process.stderr()
        );
    };
    assert!(!status.success(), "{args:?}: {status}");
    process.stderr()
}

#[test]
fn a_bad_configuration_is_refused_at_start_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let cases = [
        (file("unknown.json", r#"{"routes":[],"bogus":1}"#), "bogus"),
        (
            file("route.json", r#"{"routes":[{"path_prefix":"health"}]}"#),
            "routes[0].path_prefix",
        ),
        (
            file("query.json", r#"{"key_sources":[{"query":"api_key"}]}"#),
            "key_sources[0]",
        ),
        (file("array.json", "[]"), "must be a JSON object"),
        (
            dir.path().join("absent.json").display().to_string(),
            "cannot read it",
        ),
    ];
    for (path, want) in &cases {
        let err = serve_refuses(dir.path(), &["--forward-auth-config", path], &[]);
        assert!(
            err.contains("--forward-auth-config") && err.contains(*want),
            "{path}: {err}"
        );
    }
    // From the environment too, and --forward-auth-open alone.
    let err = serve_refuses(
        dir.path(),
        &[],
        &[("KEYGATE_FORWARD_AUTH_CONFIG", &cases[0].0)],
    );
    assert!(err.contains("bogus"), "{err}");
    let err = serve_refuses(dir.path(), &["--forward-auth-open"], &[]);
    assert!(
        err.contains("--forward-auth-open needs --forward-auth-config"),
        "{err}"
    );
}
