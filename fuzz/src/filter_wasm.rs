//! `filter_wasm`: the real filter `.wasm` in the host harness fed the same arbitrary header maps
//! as `filter_request`, made Envoy-shaped (lower-case names, one `:method` and `:path`, no
//! control characters in values, Latin-1 values sent as Latin-1 bytes, so not UTF-8). The guest
//! never traps, and its answer equals the native core's decision on the same headers as the
//! filter reads them: the same denial (status and code, nothing upstream) or the same request
//! upstream (credential and client identity headers removed, identity set, every other value
//! byte for byte).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use keygate_host_harness::{
    CalloutReply, CalloutRequest, CalloutResponse, Cluster, Disposition, Harness, Plugin, Request,
};
use keygate_filter_core::decision::{Decision, KeySetState, Reason, decide};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::wire::{CONTENT_TYPE, Snapshot};

use crate::request::{Case, EXPIRY, fixture, forwarded, headers_of};

/// Seconds the harness runs before the first case (the first sync lands in it).
const WARM_UP_S: u64 = 2;
/// The harness clock starts here, so keys with an expiry are still valid.
const START_S: u64 = EXPIRY - 1000;

struct State {
    harness: Harness,
    runs: u32,
}

thread_local! {
    static HARNESSES: RefCell<HashMap<usize, State>> = RefCell::new(HashMap::new());
}

/// A harness running the real filter with fixture configuration `index`, synced to the
/// fixture's key set.
fn build(index: usize) -> Harness {
    let f = fixture();
    let config = &f.configs[index];
    let snapshot = Snapshot {
        revision: 1,
        entries: f.keys.iter().filter_map(|k| k.entry.clone()).collect(),
    }
    .encode()
    .expect("the fixture encodes");
    let plugin = Plugin::load_file(KEYGATE_PLUGIN_WASM).expect("the filter loads");
    let feed = move |req: &CalloutRequest| {
        if req
            .header(":path")
            .is_some_and(|p| p.starts_with("/v1/keyset"))
        {
            if req.header(":path").is_some_and(|p| p.contains("since=")) {
                // No change: answered later, as a long poll or the next plain poll would be.
                return CalloutReply::status(304).after(Duration::from_millis(500));
            }
            return CalloutReply::response(CalloutResponse {
                headers: vec![("content-type".into(), CONTENT_TYPE.into())],
                body: snapshot.clone(),
                trailers: Vec::new(),
            });
        }
        CalloutReply::status(200)
    };
    let mut builder = Harness::builder(plugin)
        .plugin_configuration(crate::request::CONFIGS[index].as_bytes().to_vec())
        .virtual_start(START_S * 1_000_000_000)
        .cluster(config.cluster.clone(), Cluster::handler(feed.clone()));
    if config.usage_cluster != config.cluster {
        builder = builder.cluster(config.usage_cluster.clone(), Cluster::handler(feed));
    }
    let mut harness = builder.build().expect("the filter configures");
    harness.advance(Duration::from_secs(WARM_UP_S));
    assert!(
        harness
            .metric("keygate.keyset.keys")
            .is_some_and(|m| m.value > 0),
        "the filter did not sync the fixture's set"
    );
    harness
}

/// Envoy-shaped headers: pseudo-headers first and once, lower-case names of token characters,
/// values without NUL, CR or LF (Envoy's codecs refuse those before any filter runs). Values are
/// bytes on the wire: one with characters in U+0080..=U+00FF is sent as a Latin-1 client sends
/// it (those characters one byte each, obs-text, usually not UTF-8), which Envoy passes through.
fn envoy_shaped(raw: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    let mut method = "GET".to_owned();
    let mut path = "/".to_owned();
    let mut rest = Vec::new();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    for (name, value) in raw {
        if value.contains(['\0', '\r', '\n']) {
            continue;
        }
        match name.as_str() {
            ":method" if !value.is_empty() && value.chars().all(token) => method.clone_from(value),
            ":path" if !value.is_empty() => path.clone_from(value),
            n if !n.is_empty() && n.chars().all(token) => {
                rest.push((n.to_ascii_lowercase(), value.clone()));
            }
            _ => {}
        }
    }
    let mut out = vec![
        (":method".to_owned(), method.into_bytes()),
        (":path".to_owned(), path.into_bytes()),
        (":authority".to_owned(), b"example.com".to_vec()),
    ];
    out.extend(
        rest.into_iter()
            .map(|(k, v)| (k, latin1_where_possible(&v))),
    );
    out
}

/// `value` with every character in U+0080..=U+00FF as its Latin-1 byte (when there is one),
/// everything else as UTF-8.
fn latin1_where_possible(value: &str) -> Vec<u8> {
    if !value.chars().any(|c| ('\u{80}'..='\u{ff}').contains(&c)) {
        return value.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(value.len());
    for c in value.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

/// What the filter reads: each byte of a sequence that is not UTF-8 as U+001A SUBSTITUTE (see
/// `keygate_plugin::pairs`), the rest as is.
fn as_filter_reads(wire: &[(String, Vec<u8>)]) -> Vec<(String, String)> {
    wire.iter()
        .map(|(k, v)| {
            let mut text = String::with_capacity(v.len());
            for chunk in v.utf8_chunks() {
                text.push_str(chunk.valid());
                text.extend(chunk.invalid().iter().map(|_| '\u{1a}'));
            }
            (k.clone(), text)
        })
        .collect()
}

fn sorted_lower(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    v.sort();
    v
}

/// Header pairs as bytes on the wire.
type Wire = Vec<(String, Vec<u8>)>;

/// The fuzz target.
pub fn check(case: &Case) {
    let f = fixture();
    let index = usize::from(case.config) % f.configs.len();
    check_wire(index, &envoy_shaped(&headers_of(f, case)));
}

/// Runs the Envoy-shaped request `wire` through the real filter with fixture configuration
/// `index` and checks it against the native decision. Returns the decision's reason and the
/// headers upstream received (`None` when denied).
fn check_wire(index: usize, wire: &[(String, Vec<u8>)]) -> (Reason, Option<Wire>) {
    let f = fixture();
    let headers = as_filter_reads(wire);
    let native = decide(
        &keygate_filter_core::decision::Request::from_headers(&headers),
        KeySetState::Fresh(&f.set),
        START_S + WARM_UP_S,
        &f.configs[index],
    );
    let reason = native.reason();
    let upstream = HARNESSES.with(|cell| {
        let mut all = cell.borrow_mut();
        // Rebuild now and then: usage tallies grow with the keys seen.
        if all.get(&index).is_none_or(|s| s.runs >= 512) {
            all.insert(
                index,
                State {
                    harness: build(index),
                    runs: 0,
                },
            );
        }
        let state = all.get_mut(&index).expect("just built");
        state.runs += 1;
        let h = &mut state.harness;
        let traps = h.traps().len();
        let mut request = Request::new("GET", "/");
        request.headers = wire
            .iter()
            .map(|(k, v)| (k.clone(), v.as_slice().into()))
            .collect();
        let outcome = h.run_request(request).expect("the stream runs");
        assert_eq!(
            h.traps().len(),
            traps,
            "the filter trapped: {:?}",
            h.traps().last()
        );
        h.take_outcome(outcome.id);
        drop(h.take_logs());
        drop(h.take_callouts());
        match native {
            Decision::Deny(d) => {
                assert_eq!(
                    outcome.disposition,
                    Disposition::LocalResponse,
                    "native denies ({:?}) but the wasm filter did not: {outcome:?}",
                    d.reason
                );
                let local = outcome.local_response.expect("a local response");
                assert_eq!(local.status, d.status(), "status of {:?}", d.reason);
                let body: serde_json::Value =
                    serde_json::from_slice(&local.body).expect("the deny body is JSON");
                assert_eq!(body["error"]["code"], d.reason.code());
                assert!(outcome.request.is_none(), "a denied request went upstream");
                None
            }
            Decision::Allow(a) => {
                assert_eq!(
                    outcome.disposition,
                    Disposition::Completed,
                    "native allows ({:?}) but the wasm filter did not: {outcome:?}",
                    a.reason
                );
                let upstream = outcome.request.expect("the request went upstream");
                let got: Vec<(String, Vec<u8>)> = upstream
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                    .collect();
                // Values the filter does not touch reach upstream byte for byte.
                assert_eq!(
                    sorted_lower(&got),
                    sorted_lower(&forwarded(wire, &a)),
                    "the upstream headers differ from the native decision's ({:?})",
                    a.reason
                );
                Some(got)
            }
        }
    });
    (reason, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    #[test]
    fn latin1_values_reach_the_real_filter_and_go_upstream_byte_for_byte() {
        let key = fixture().keys[0].secret.clone();
        let (reason, upstream) = check_wire(
            0,
            &wire(&[
                (":method", b"GET"),
                (":path", b"/"),
                (":authority", b"example.com"),
                ("user-agent", b"caf\xe9 client"),
                ("x-keygate-owner", b"sp\xf6\xf6f"),
                ("x-api-key", key.as_bytes()),
            ]),
        );
        assert_eq!(reason, Reason::Allowed);
        let upstream = upstream.expect("allowed requests go upstream");
        let value = |name: &str| {
            upstream
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
                .collect::<Vec<_>>()
        };
        assert_eq!(value("user-agent"), [b"caf\xe9 client"]);
        assert_eq!(
            value("x-keygate-owner"),
            [b"org_a"],
            "the spoof is stripped"
        );
        assert!(value("x-api-key").is_empty(), "the credential is hidden");
    }

    #[test]
    fn a_key_header_that_is_not_utf8_is_malformed_not_missing() {
        let key = fixture().keys[0].secret.clone();
        let mut latin1 = key.into_bytes();
        latin1.push(0xe9);
        let (reason, upstream) = check_wire(
            0,
            &wire(&[(":method", b"GET"), (":path", b"/"), ("x-api-key", &latin1)]),
        );
        assert_eq!(reason, Reason::MalformedKey);
        assert!(upstream.is_none());
    }

    #[test]
    fn a_key_cookie_next_to_latin1_cookies_is_found_and_only_it_is_stripped() {
        let key = fixture().keys[0].secret.clone();
        let mut cookie = b"theme=caf\xe9; kg_key=".to_vec();
        cookie.extend_from_slice(key.as_bytes());
        cookie.extend_from_slice(b";\tlang=\xe9\xe2 ");
        // configuration 1 reads `kg_key` cookies and hides credentials
        let (reason, upstream) = check_wire(
            1,
            &wire(&[
                (":method", b"GET"),
                (":path", b"/"),
                ("cookie", &cookie),
                ("x-other", b"\xff"),
                ("cookie", b"n=\xc3\xa9"),
            ]),
        );
        assert_eq!(reason, Reason::Allowed);
        let upstream = upstream.expect("allowed requests go upstream");
        let cookies: Vec<&[u8]> = upstream
            .iter()
            .filter(|(k, _)| k == "cookie")
            .map(|(_, v)| v.as_slice())
            .collect();
        // The other cookies stay byte for byte, in one header (Envoy's replace of a header
        // keeps the first copy): the rewrite is built from the bytes sent, not the filter's
        // view (see `keygate_plugin::pairs::AsSent`).
        assert_eq!(cookies, [&b"theme=caf\xe9; lang=\xe9\xe2; n=\xc3\xa9"[..]]);
    }

    #[test]
    fn latin1_where_possible_makes_obs_text() {
        assert_eq!(latin1_where_possible("plain"), b"plain");
        assert_eq!(latin1_where_possible("caf\u{e9}"), b"caf\xe9");
        assert_eq!(latin1_where_possible("\u{e9}\u{20ac}"), b"\xe9\xe2\x82\xac");
        assert_eq!(latin1_where_possible("\u{20ac}"), "\u{20ac}".as_bytes());
    }
}
