//! A differential check of the host harness against real Envoy 1.40: the same filter `.wasm`,
//! the same plugin configuration (`envoy/envoy.yaml`'s, as Envoy was given it) and the same
//! control plane, once in the harness (the development gateway, or the harness API where the
//! filter's metrics and logs are compared) and once in Envoy. Every request is sent byte for
//! byte the same to both (a raw HTTP/1.1 client, so neither side's client rewrites the path),
//! and the outcomes are compared exactly: status, local-reply headers and body, and what the
//! upstream (the echo) received. Where the hosts legitimately differ (host-harness/README.md,
//! "Differences from Envoy 1.40"), each difference is asserted as it is, by name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keygate_e2e::envoy::EnvoyStack;
use keygate_e2e::stack::{EDGE_KEY_ENV, GatewayStack, wait_for};
use keygate_e2e::{IssuedKey, keyset_calls, metric};
use keygate_host_harness::{Cluster, Harness, LogLevel, Request};
use serde_json::{Value, json};

const SYNC: Duration = Duration::from_secs(15);

/// The `Host` of every request, the same for both hosts (Envoy's route matches any domain).
const HOST: &str = "keygate.test";

/// Request headers Envoy adds on the way upstream (`use_remote_address: true`: the client's
/// address, the scheme, a request id and the external address; the route's timeout); the
/// development gateway adds none. Compared by name: present in Envoy, absent in the gateway,
/// and every other upstream header must be equal.
const ENVOY_UPSTREAM_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
];

/// Response headers only Envoy adds: `server` always, the upstream's time on a proxied response.
const ENVOY_RESPONSE_HEADERS: [&str; 2] = ["server", "x-envoy-upstream-service-time"];

/// A raw HTTP/1.1 response.
#[derive(Debug, Clone)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Sends one request on a fresh connection (`connection: close`) exactly as given, reads the
/// response to the end.
fn exchange(base_url: &str, method: &str, target: &str, headers: &[(String, String)]) -> Raw {
    let addr = base_url.trim_start_matches("http://");
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("read timeout: {e}"));
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: {HOST}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str("content-length: 0\r\n");
    }
    head.push_str("connection: close\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {target} to {addr}: {e}"));
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{method} {target} from {addr}: {e}"));
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head from {addr}: {bytes:?}"));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size_text:?}: {e}"));
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    out
}

/// Which host answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    Envoy,
    Gateway,
}

/// What is compared between the hosts, after the documented per-host differences have been
/// checked and taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    status: u16,
    /// The filter's error code (`""` on a pass).
    code: String,
    /// Response headers the client saw (repeated names joined with `, `), without `date`
    /// (checked present) and [`ENVOY_RESPONSE_HEADERS`]; `content-length` only on local replies
    /// (a proxied echo body carries each host's own upstream headers).
    response_headers: BTreeMap<String, String>,
    /// The body of a local reply.
    local_body: Option<String>,
    /// What the upstream received (the echo's JSON), without [`ENVOY_UPSTREAM_HEADERS`].
    upstream: Option<Value>,
}

fn observe(host: Host, raw: &Raw, what: &str, head: bool) -> Observed {
    let mut response_headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &raw.headers {
        response_headers
            .entry(k.clone())
            .and_modify(|all| {
                all.push_str(", ");
                all.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    assert!(
        response_headers.remove("date").is_some(),
        "{host:?} {what}: no date header: {raw:?}"
    );
    let echo: Option<Value> = serde_json::from_slice::<Value>(&raw.body)
        .ok()
        .filter(|v| v.get("headers").is_some() && v.get("path").is_some());
    let proxied = raw.status == 200 && (echo.is_some() || raw.body.is_empty());
    match host {
        Host::Envoy => {
            assert_eq!(
                response_headers.remove("server").as_deref(),
                Some("envoy"),
                "{what}"
            );
            let service_time = response_headers.remove("x-envoy-upstream-service-time");
            assert_eq!(service_time.is_some(), proxied, "{what}: {raw:?}");
        }
        Host::Gateway => {
            for name in ENVOY_RESPONSE_HEADERS {
                assert!(!response_headers.contains_key(name), "{what}: {name}");
            }
        }
    }
    let upstream = echo.map(|mut echo| {
        let headers = echo["headers"]
            .as_object_mut()
            .unwrap_or_else(|| panic!("{what}: echo headers"));
        for name in ENVOY_UPSTREAM_HEADERS {
            let found = headers.remove(name);
            match host {
                Host::Envoy => assert!(
                    found.is_some(),
                    "{what}: Envoy did not add {name}: {headers:?}"
                ),
                Host::Gateway => assert!(found.is_none(), "{what}: the gateway added {name}"),
            }
        }
        echo
    });
    if proxied {
        let length = response_headers.remove("content-length");
        // (A HEAD response has the length of the GET's body, which the echo did not send.)
        if let Some(length) = length.filter(|_| !head) {
            assert_eq!(length, raw.body.len().to_string(), "{host:?} {what}");
        }
    }
    let text = String::from_utf8_lossy(&raw.body).into_owned();
    let code = serde_json::from_slice::<Value>(&raw.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Observed {
        status: raw.status,
        code,
        response_headers,
        local_body: (!proxied).then_some(text),
        upstream,
    }
}

/// One request of the differential table.
struct Case {
    name: &'static str,
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    /// `(status, code)` both hosts must answer; `None`: whatever it is, the same in both.
    expect: Option<(u16, &'static str)>,
}

fn case(
    name: &'static str,
    method: &'static str,
    target: &str,
    headers: &[(&str, &str)],
    expect: Option<(u16, &'static str)>,
) -> Case {
    Case {
        name,
        method,
        target: target.to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        expect,
    }
}

/// The e2e routes, every key source and `kg_live`/`kg_edge` as the accepted prefixes, over
/// `envoy/envoy.yaml`'s configuration (hide_credentials, fail closed, sync settings).
fn overrides() -> Value {
    let routes: Value = serde_json::from_str(keygate_e2e::ROUTES).unwrap();
    json!({
        "routes": routes,
        "key_sources": [{"header": "x-api-key"}, {"bearer": true}, {"cookie": "kg_key"}, {"query": "api_key"}],
        "accepted_prefixes": ["kg_live", "kg_edge"],
        "sync_interval_ms": 200,
    })
}

/// Envoy with two workers and the development gateway with two workers, on the same control
/// plane, edge key and plugin configuration.
fn both(overrides: Value) -> (EnvoyStack, GatewayStack) {
    let envoy = EnvoyStack::start(2, overrides);
    let gateway = GatewayStack::start(
        &envoy.control_plane.url(),
        &envoy.edge_key,
        envoy.configuration.clone(),
    );
    assert_eq!(
        gateway.configuration, envoy.configuration,
        "the hosts must run the same plugin configuration"
    );
    (envoy, gateway)
}

fn run(envoy: &EnvoyStack, gateway: &GatewayStack, c: &Case) -> (Observed, Observed) {
    let e = exchange(&envoy.url, c.method, &c.target, &c.headers);
    let g = exchange(&gateway.url, c.method, &c.target, &c.headers);
    (
        observe(Host::Envoy, &e, c.name, c.method == "HEAD"),
        observe(Host::Gateway, &g, c.name, c.method == "HEAD"),
    )
}

fn reader(envoy: &EnvoyStack) -> IssuedKey {
    envoy.api.create_key(json!({
        "name": "reader", "scopes": ["repo:read"], "resources": ["acme"], "owner_id": "alice"
    }))
}

fn wait_synced(envoy: &EnvoyStack, gateway: &GatewayStack, key: &str) {
    envoy.wait_status("Envoy's first sync", SYNC, "/repos/acme/x", key, 200);
    gateway.wait_status("the gateway's first sync", SYNC, "/repos/acme/x", key, 200);
}

#[test]
fn the_decision_table_header_edits_and_local_replies_agree_with_envoy() {
    let (envoy, gateway) = both(overrides());
    let k = reader(&envoy);
    let revoked = envoy.api.create_key(json!({"name": "gone"}));
    envoy.api.key_action(&revoked.id, "revoke");
    wait_synced(&envoy, &gateway, &k.secret);

    let key = k.secret.as_str();
    let other = keygate_protocol::key::generate("kg_live").unwrap();
    let other = other.expose_secret();
    let foreign = keygate_protocol::key::generate("acme_test").unwrap();
    let mut malformed = k.secret.clone();
    let last = malformed.pop().unwrap();
    malformed.push(if last == 'A' { 'B' } else { 'A' });
    let bearer = format!("Bearer {key}");
    let bearer_other = format!("Bearer {other}");
    let cookie = format!("theme=dark; kg_key={key}; lang=en");
    let cookie_other = format!("theme=dark; kg_key={other}; lang=en");
    let spoofed = [
        ("x-keygate-key-id", "key_ffffffffffffffffffffffffffffffff"),
        ("x-keygate-owner", "mallory"),
        ("x-keygate-scopes", "admin"),
        ("x-keygate-admin", "true"),
    ];
    let mut spoofed_with_key = spoofed.to_vec();
    spoofed_with_key.push(("x-api-key", key));

    let cases = [
        case("anonymous route", "GET", "/health", &[], Some((200, ""))),
        case(
            "anonymous route: spoofed identity, keys in every source",
            "GET",
            &format!("/health?api_key={other}&page=2"),
            &[
                ("x-api-key", other),
                ("authorization", &bearer_other),
                ("cookie", &cookie_other),
                spoofed[0],
                spoofed[1],
            ],
            Some((200, "")),
        ),
        case(
            "missing key",
            "GET",
            "/repos/acme/x",
            &[],
            Some((401, "missing_key")),
        ),
        case(
            "missing key, HEAD",
            "HEAD",
            "/repos/acme/x",
            &[],
            Some((401, "")),
        ),
        case(
            "malformed key",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", &malformed)],
            Some((401, "malformed_key")),
        ),
        case(
            "prefix not accepted",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", foreign.expose_secret())],
            Some((401, "prefix_not_accepted")),
        ),
        case(
            "unknown key",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", other)],
            Some((401, "unknown_key")),
        ),
        case(
            "unknown key, bearer",
            "GET",
            "/repos/acme/x",
            &[("authorization", &bearer_other)],
            Some((401, "unknown_key")),
        ),
        case(
            "revoked key",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", &revoked.secret)],
            Some((401, "unknown_key")),
        ),
        case(
            "insufficient scope",
            "POST",
            "/repos/acme/x",
            &[("x-api-key", key)],
            Some((403, "insufficient_scope")),
        ),
        case(
            "resource not allowed",
            "GET",
            "/repos/globex/x",
            &[("x-api-key", key)],
            Some((403, "resource_not_allowed")),
        ),
        case(
            "allowed: x-api-key",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", key)],
            Some((200, "")),
        ),
        case(
            "allowed: HEAD",
            "HEAD",
            "/repos/acme/x",
            &[("x-api-key", key)],
            Some((200, "")),
        ),
        case(
            "allowed: bearer",
            "GET",
            "/repos/acme/x",
            &[("authorization", &bearer)],
            Some((200, "")),
        ),
        case(
            "allowed: cookie",
            "GET",
            "/repos/acme/x",
            &[("cookie", &cookie)],
            Some((200, "")),
        ),
        case(
            "allowed: query",
            "GET",
            &format!("/repos/acme/x?api_key={key}&page=2"),
            &[],
            Some((200, "")),
        ),
        case(
            "allowed: x-api-key wins, the other sources carry another key",
            "GET",
            &format!("/repos/acme/x?page=2&api_key={other}"),
            &[
                ("x-api-key", key),
                ("authorization", &bearer_other),
                ("cookie", &cookie_other),
            ],
            Some((200, "")),
        ),
        case(
            "allowed: spoofed identity headers",
            "GET",
            "/repos/acme/x",
            &spoofed_with_key,
            Some((200, "")),
        ),
        case(
            "allowed: another authorization scheme passes",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", key), ("authorization", "Basic dXNlcjpwYXNz")],
            Some((200, "")),
        ),
        // `x-api-key` has an inline slot (envoy.yaml's `inline_headers`): Envoy joins the two
        // values into one, which is no key; the gateway does the same for that configuration.
        case(
            "two x-api-key headers",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", key), ("x-api-key", other)],
            Some((401, "malformed_key")),
        ),
        case(
            "an empty x-api-key",
            "GET",
            "/repos/acme/x",
            &[("x-api-key", "")],
            Some((401, "missing_key")),
        ),
    ];
    for c in &cases {
        let (e, g) = run(&envoy, &gateway, c);
        assert_eq!(
            e, g,
            "{}: Envoy (left) and the gateway (right) differ",
            c.name
        );
        if let Some((status, code)) = c.expect {
            assert_eq!(
                (e.status, e.code.as_str()),
                (status, code),
                "{}: {e:?}",
                c.name
            );
        }
        if e.local_body.is_some() {
            // Every local reply of the filter: JSON, not cached.
            assert_eq!(
                e.response_headers.get("content-type").map(String::as_str),
                Some("application/json"),
                "{}",
                c.name
            );
            assert_eq!(
                e.response_headers.get("cache-control").map(String::as_str),
                Some("no-store"),
                "{}",
                c.name
            );
        }
        // RFC 6750 challenges: the realm alone without a key, the error and the code otherwise.
        let challenge = match (e.status, e.code.as_str()) {
            (401, "missing_key" | "") => Some(r#"Bearer realm="keygate""#.to_owned()),
            (401, code) => Some(format!(
                r#"Bearer realm="keygate", error="invalid_token", error_description="{code}""#
            )),
            (403, code) => Some(format!(
                r#"Bearer realm="keygate", error="insufficient_scope", error_description="{code}""#
            )),
            _ => None,
        };
        assert_eq!(
            e.response_headers.get("www-authenticate"),
            challenge.as_ref(),
            "{}",
            c.name
        );
        if let Some(up) = &e.upstream {
            // Credentials never reach the upstream, the identity is the filter's own.
            let text = up.to_string();
            for secret in [key, other] {
                assert!(
                    !text.contains(secret),
                    "{}: a key reached the upstream",
                    c.name
                );
            }
            assert_eq!(up["headers"]["host"], HOST, "{}", c.name);
            if c.target.starts_with("/repos/") {
                assert_eq!(up["headers"]["x-keygate-owner"], "alice", "{}", c.name);
                assert_eq!(
                    up["headers"]["x-keygate-key-id"],
                    k.id.as_str(),
                    "{}",
                    c.name
                );
            } else {
                assert!(up["headers"].get("x-keygate-owner").is_none(), "{}", c.name);
            }
        }
    }
    // A few of the upstream views spelled out (they are equal in both hosts by now).
    let upstream_of = |name: &str| {
        let c = cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        let (e, g) = run(&envoy, &gateway, c);
        assert_eq!(e, g, "{name}");
        e.upstream
            .unwrap_or_else(|| panic!("{name}: the upstream saw nothing"))
    };
    let up = upstream_of("allowed: cookie");
    assert_eq!(up["headers"]["cookie"], "theme=dark; lang=en");
    assert_eq!(up["path"], "/repos/acme/x");
    assert_eq!(up["headers"]["x-keygate-scopes"], "repo:read");
    let up = upstream_of("allowed: query");
    assert_eq!(up["path"], "/repos/acme/x?page=2");
    let up = upstream_of("allowed: x-api-key wins, the other sources carry another key");
    assert_eq!(up["path"], "/repos/acme/x?page=2");
    assert!(up["headers"].get("authorization").is_none());
    assert_eq!(up["headers"]["cookie"], "theme=dark; lang=en");
    let up = upstream_of("allowed: spoofed identity headers");
    assert!(up["headers"].get("x-keygate-admin").is_none());
    assert_eq!(up["headers"]["x-keygate-scopes"], "repo:read");
    let up = upstream_of("anonymous route: spoofed identity, keys in every source");
    assert_eq!(up["path"], "/health?page=2");
    assert_eq!(up["headers"]["cookie"], "theme=dark; lang=en");
    assert!(up["headers"].get("authorization").is_none());
    assert!(up["headers"].get("x-keygate-key-id").is_none());
    assert!(up["headers"].get("x-api-key").is_none());
    let up = upstream_of("allowed: another authorization scheme passes");
    assert_eq!(up["headers"]["authorization"], "Basic dXNlcjpwYXNz");
}

#[test]
fn paths_envoy_normalizes_before_the_filter_are_the_documented_difference() {
    // Envoy (normalize_path, merge_slashes, path_with_escaped_slashes_action: REJECT_REQUEST)
    // rewrites or refuses these paths before the filter runs; the gateway hands the filter the
    // path as sent, and the filter refuses it with its own 400 invalid_path. Envoy's answer to
    // the raw path is the gateway's answer to the path Envoy normalized it to.
    let (envoy, gateway) = both(overrides());
    let k = reader(&envoy);
    wait_synced(&envoy, &gateway, &k.secret);
    let key = k.secret.as_str();
    let with_key: &[(&str, &str)] = &[("x-api-key", key)];
    // (name, raw path, headers, the path Envoy makes of it)
    let normalized = [
        (
            "dot segments",
            "/repos/acme/../globex/x",
            with_key,
            "/repos/globex/x",
        ),
        (
            "merged slashes",
            "//repos//acme/x",
            with_key,
            "/repos/acme/x",
        ),
        (
            "anonymous prefix, dot segments",
            "/health/../repos/acme/x",
            &[][..],
            "/repos/acme/x",
        ),
        (
            "encoded dot segments",
            "/repos/acme/%2e%2e/globex/x",
            with_key,
            "/repos/globex/x",
        ),
    ];
    for (name, raw, headers, normal) in normalized {
        let c = case(name, "GET", raw, headers, None);
        let (e, g) = run(&envoy, &gateway, &c);
        assert_eq!(
            (g.status, g.code.as_str()),
            (400, "invalid_path"),
            "{name}: the gateway: {g:?}"
        );
        assert_eq!(
            g.response_headers.get("cache-control").map(String::as_str),
            Some("no-store")
        );
        let (_, g_normal) = run(&envoy, &gateway, &case(name, "GET", normal, headers, None));
        assert_eq!(
            e, g_normal,
            "{name}: Envoy on {raw} (left), the gateway on {normal} (right)"
        );
        assert_ne!(e.status, 400, "{name}: {e:?}");
    }
    // Encoded slashes: Envoy's own 400 (empty body, no content type), before any filter; the
    // gateway's filter answers its JSON 400.
    let c = case(
        "encoded slashes",
        "GET",
        "/repos/acme%2F..%2Fglobex/x",
        with_key,
        None,
    );
    let (e, g) = run(&envoy, &gateway, &c);
    assert_eq!(
        (e.status, e.local_body.as_deref()),
        (400, Some("")),
        "{e:?}"
    );
    assert_eq!(e.response_headers.get("content-type"), None);
    assert_eq!((g.status, g.code.as_str()), (400, "invalid_path"), "{g:?}");
    assert_eq!(
        g.response_headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
}

/// The harness, as the gateway builds it (real time, the VM and root ids, the edge key in the VM
/// environment, info logs), with the plugin configuration Envoy was given and its control-plane
/// cluster: for comparing the filter's metrics and logs, which the gateway does not expose.
fn harness_like(envoy: &EnvoyStack, workers: usize) -> Harness {
    Harness::builder_shared(keygate_e2e::plugin())
        .real_time()
        .workers(workers)
        .vm_id("keygate")
        .root_id("keygate")
        .log_level(LogLevel::Info)
        .env_var(EDGE_KEY_ENV, envoy.edge_key.clone())
        .plugin_configuration(envoy.configuration.to_string().into_bytes())
        .cluster(
            "keygate_control_plane",
            Cluster::http(envoy.control_plane.url()),
        )
        .build()
        .unwrap_or_else(|e| panic!("building the harness: {e}"))
}

fn stat(envoy: &EnvoyStack, name: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.{name}"))
}

/// The `(why): detail` of every "key-set sync failed" line.
fn sync_failures<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    lines
        .filter_map(|l| l.split_once("key-set sync failed ("))
        .map(|(_, rest)| rest.split("; keeping").next().unwrap_or(rest).to_owned())
        .collect()
}

#[test]
fn with_the_control_plane_down_before_the_first_sync_both_fail_closed_alike() {
    let mut envoy = EnvoyStack::start(1, overrides());
    let k = reader(&envoy);
    envoy.stop_envoy();
    envoy.control_plane.kill();
    envoy.start_envoy();
    let gateway = GatewayStack::start(
        &envoy.control_plane.url(),
        &envoy.edge_key,
        envoy.configuration.clone(),
    );
    let mut harness = harness_like(&envoy, 2);

    let keyed = case(
        "keyed request, no key set",
        "GET",
        "/repos/acme/x",
        &[("x-api-key", &k.secret)],
        Some((503, "keyset_unavailable")),
    );
    let anonymous = case("anonymous route", "GET", "/health", &[], Some((200, "")));
    for c in [&keyed, &anonymous] {
        let (e, g) = run(&envoy, &gateway, c);
        assert_eq!(
            e, g,
            "{}: Envoy (left) and the gateway (right) differ",
            c.name
        );
        assert_eq!(
            (e.status, e.code.as_str()),
            c.expect.unwrap(),
            "{}: {e:?}",
            c.name
        );
    }

    // The filter classifies the refused connection the same way in both: Envoy answers the
    // call with its router's 503, which the harness now delivers too.
    wait_for("failed syncs in both", SYNC, || {
        harness.run_for(Duration::from_millis(50));
        let (e, h) = (
            stat(&envoy, "keygate.sync.failure.unreachable"),
            metric(&harness, "keygate.sync.failure.unreachable"),
        );
        if e >= 1 && h >= 1 {
            Ok(())
        } else {
            Err(format!("Envoy {e}, harness {h}"))
        }
    });
    let envoy_log = envoy.envoy_logs();
    let in_envoy = sync_failures(envoy_log.lines());
    let harness_logs = harness.logs();
    let in_harness = sync_failures(harness_logs.iter().map(|l| l.message.as_str()));
    assert_eq!(in_envoy, in_harness, "the filter's failure lines differ");
    assert_eq!(
        in_envoy,
        BTreeSet::from(["unreachable): the proxy could not reach the control plane".to_owned()])
    );
    let failures = |names: Vec<String>| -> BTreeSet<String> {
        names
            .into_iter()
            .filter(|n| n.contains("keygate.sync.failure."))
            .map(|n| n.trim_start_matches("wasmcustom.").to_owned())
            .collect()
    };
    let envoy_stats = envoy.envoy().stats().unwrap();
    assert_eq!(
        failures(envoy_stats.keys().cloned().collect()),
        failures(harness.metrics().into_keys().collect()),
        "failure counters by name"
    );
    assert_eq!(stat(&envoy, "keygate.sync.success"), 0);
    assert_eq!(metric(&harness, "keygate.sync.success"), 0);

    // Back up: both pass once the first sync succeeds.
    envoy.control_plane.restart();
    envoy.wait_status("Envoy recovers", SYNC, "/repos/acme/x", &k.secret, 200);
    gateway.wait_status(
        "the gateway recovers",
        SYNC,
        "/repos/acme/x",
        &k.secret,
        200,
    );
    wait_for("the harness recovers", SYNC, || {
        harness.run_for(Duration::from_millis(50));
        let out = harness
            .run_request(
                Request::get("/repos/acme/x")
                    .header(":authority", HOST)
                    .header("x-api-key", k.secret.as_str()),
            )
            .map_err(|e| e.to_string())?;
        match out.status() {
            Some(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn the_key_set_feed_is_called_as_often_in_both() {
    // envoy/envoy.yaml's own sync settings (1 s interval, 20 s long-polls). One Envoy worker:
    // Envoy then runs two VMs that tick (the main thread's and the worker's), as the harness's
    // two workers; the configuration canary never syncs.
    let envoy = EnvoyStack::start(1, json!({}));
    let mut harness = harness_like(&envoy, 2);
    let both_at = |harness: &mut Harness, calls: u64, success: u64| {
        wait_for(
            &format!("{calls} key-set calls, {success} successes in both"),
            SYNC,
            || {
                harness.run_for(Duration::from_millis(50));
                let seen = (
                    stat(&envoy, "keygate.sync.calls"),
                    stat(&envoy, "keygate.sync.success"),
                    metric(harness, "keygate.sync.calls"),
                    metric(harness, "keygate.sync.success"),
                );
                if seen.0 >= calls && seen.1 >= success && seen.2 >= calls && seen.3 >= success {
                    Ok(seen)
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        )
    };
    // The snapshot, then a long-poll that stays open.
    let seen = both_at(&mut harness, 2, 1);
    assert_eq!(
        seen,
        (2, 1, 2, 1),
        "(Envoy calls, successes, harness calls, successes)"
    );
    assert_eq!(keyset_calls(&harness), 2);
    assert_eq!(
        envoy.stat("cluster.keygate_control_plane.upstream_rq_total"),
        2
    );
    // A change ends the long-poll with a delta; the next long-poll starts.
    let rev_before = stat(&envoy, "keygate.keyset.revision");
    envoy.api.create_key(json!({"name": "new"}));
    let seen = both_at(&mut harness, 3, 2);
    assert_eq!(
        seen,
        (3, 2, 3, 2),
        "(Envoy calls, successes, harness calls, successes)"
    );
    assert_eq!(keyset_calls(&harness), 3);
    assert_eq!(
        envoy.stat("cluster.keygate_control_plane.upstream_rq_total"),
        3
    );
    let rev = stat(&envoy, "keygate.keyset.revision");
    assert!(rev > rev_before, "{rev_before} → {rev}");
    assert_eq!(metric(&harness, "keygate.keyset.revision"), rev);
    // Each host's follower picked up the leader's revisions through shared data.
    let followed = (
        stat(&envoy, "keygate.sync.followed"),
        metric(&harness, "keygate.sync.followed"),
    );
    assert_eq!(followed.0, followed.1, "(Envoy, harness)");
    let per_vm = |names: Vec<String>| -> BTreeSet<String> {
        names
            .into_iter()
            .filter_map(|n| {
                let rest = n
                    .trim_start_matches("wasmcustom.")
                    .strip_prefix("keygate.vm.")?;
                Some(rest.split('.').next()?.to_owned())
            })
            .collect()
    };
    let envoy_vms = per_vm(envoy.envoy().stats().unwrap().into_keys().collect());
    let harness_vms = per_vm(harness.metrics().into_keys().collect());
    assert_eq!(envoy_vms, harness_vms, "VM indices");
    assert_eq!(envoy_vms, BTreeSet::from(["0".to_owned(), "1".to_owned()]));
}
