//! `filter_wasm`: the real filter `.wasm` in the host harness fed the same arbitrary header maps
//! as `filter_request`, made Envoy-shaped (lower-case names, one `:method` and `:path`, no
//! control characters in values). The guest never traps, and its answer equals the native
//! core's decision on the same headers: the same denial (status and code, nothing upstream) or
//! the same request upstream (credential and client identity headers removed, identity set).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use keygate_host_harness::{
    CalloutReply, CalloutRequest, CalloutResponse, Cluster, Disposition, Harness, Plugin, Request,
};
use keygate_plugin::decision::{Decision, KeySetState, decide};
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
/// values without NUL, CR or LF (Envoy's codecs refuse those before any filter runs).
fn envoy_shaped(raw: &[(String, String)]) -> Vec<(String, String)> {
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
        (":method".to_owned(), method),
        (":path".to_owned(), path),
        (":authority".to_owned(), "example.com".to_owned()),
    ];
    out.extend(rest);
    out
}

fn sorted_lower(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    v.sort();
    v
}

/// The fuzz target.
pub fn check(case: &Case) {
    let f = fixture();
    let index = usize::from(case.config) % f.configs.len();
    let headers = envoy_shaped(&headers_of(f, case));
    let native = decide(
        &keygate_plugin::decision::Request::from_headers(&headers),
        KeySetState::Fresh(&f.set),
        START_S + WARM_UP_S,
        &f.configs[index],
    );
    HARNESSES.with(|cell| {
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
        request.headers = headers.clone();
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
            }
            Decision::Allow(a) => {
                assert_eq!(
                    outcome.disposition,
                    Disposition::Completed,
                    "native allows ({:?}) but the wasm filter did not: {outcome:?}",
                    a.reason
                );
                let upstream = outcome.request.expect("the request went upstream");
                assert_eq!(
                    sorted_lower(&upstream.headers),
                    sorted_lower(&forwarded(&headers, &a)),
                    "the upstream headers differ from the native decision's ({:?})",
                    a.reason
                );
            }
        }
    });
}
