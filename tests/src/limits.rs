//! The rate-limit tests' setup in real Envoy: keys given policies ([`limited_key`],
//! [`limit`]) and served by a fake key-set feed ([`serve_keys`]), Envoy 1.40 started on it with
//! the wasm filter ([`wasm_envoy`]) or the dynamic module ([`module_envoy`]), waiting for the
//! set ([`wait_for_the_set`]) and for the start of a fixed window ([`at_the_start_of_a_window`]),
//! and the `RateLimit` field read back ([`ratelimit_items`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keygate_protocol::policy::{LimitPool, Policy, RateLimit};
use keygate_protocol::wire::{KeyEntry, Snapshot};
use keygate_protocol::{KeyId, key};
use serde_json::Value;

use crate::envoy::{EDGE_KEY_ENV, LISTENER, bootstrap};
use crate::fake_feed::FakeFeed;
use crate::native::{NativeEnvoy, module_bootstrap};
use crate::stack::wait_for;

/// A rate limit: `limit` requests per `window_s` seconds, counted over `pool`.
pub fn limit(name: &str, limit: u32, window_s: u32, pool: LimitPool) -> RateLimit {
    RateLimit {
        name: name.into(),
        limit,
        window_s,
        pool,
    }
}

/// A new key (id `[n; 16]`, owned by `owner`, no scopes) with `limits`: its key-set entry and
/// its secret.
pub fn limited_key(n: u8, owner: &str, limits: Vec<RateLimit>) -> (KeyEntry, String) {
    let secret = key::generate("kg_live").unwrap_or_else(|e| panic!("generate: {e}"));
    let entry = KeyEntry {
        digest: secret.digest(),
        key_id: KeyId::from_bytes([n; 16]),
        owner: owner.into(),
        expires_at: None,
        scopes: Vec::new(),
        resources: Vec::new(),
        policy: Policy {
            limits,
            ..Policy::default()
        },
    };
    (entry, secret.expose_secret().to_owned())
}

/// A fake key-set feed serving `entries` as the snapshot at revision 1, on a runtime of its
/// own (keep it as long as the feed is used): its `host:port` and the runtime.
pub fn serve_keys(entries: Vec<KeyEntry>) -> (String, tokio::runtime::Runtime) {
    let snapshot = Snapshot {
        revision: 1,
        entries,
    }
    .encode()
    .unwrap_or_else(|e| panic!("snapshot: {e}"));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let addr = rt
        .block_on(FakeFeed::new(snapshot, Vec::new()).serve())
        .unwrap_or_else(|e| panic!("feed: {e}"));
    (addr, rt)
}

/// Envoy with `workers` workers and the wasm filter (`envoy/envoy.yaml`) syncing from the feed
/// at `feed` (`host:port`), its configuration changed by `overrides`.
pub fn wasm_envoy(workers: usize, feed: &str, overrides: &Value) -> NativeEnvoy {
    NativeEnvoy::start_with_env(
        workers,
        LISTENER,
        &[(EDGE_KEY_ENV, "kg_edge_unchecked")],
        |upstream| bootstrap(feed, upstream, overrides),
    )
}

/// As [`wasm_envoy`], with the dynamic module (`envoy/envoy-module.yaml`).
pub fn module_envoy(workers: usize, feed: &str, overrides: &Value) -> NativeEnvoy {
    NativeEnvoy::start_with_env(
        workers,
        LISTENER,
        &[(EDGE_KEY_ENV, "kg_edge_unchecked")],
        |upstream| module_bootstrap(&format!("http://{feed}"), upstream, overrides),
    )
}

/// Waits (up to 20 s) until a request with `key`, a key without limits, passes: the set is in.
pub fn wait_for_the_set(envoy: &NativeEnvoy, key: &str) {
    wait_for("the key set loaded", Duration::from_secs(20), || {
        let r = envoy.request("GET", "/hello", &[("x-api-key", key)]);
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    });
}

/// Sleeps until 300 ms into the next window of `window_s` seconds (windows are aligned to the
/// epoch), so that requests sent now fall in one window.
pub fn at_the_start_of_a_window(window_s: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_millis((now.as_millis() % (u128::from(window_s) * 1000)) as u64);
    std::thread::sleep(Duration::from_secs(window_s) - into + Duration::from_millis(300));
}

/// The `"name";r=<r>;t=<t>` items of a `RateLimit` field's value: (name, r, t). Panics on an
/// item without `r` or `t`.
pub fn ratelimit_items(value: &str) -> Vec<(String, u32, u32)> {
    value
        .split(", ")
        .map(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim_matches('"').to_owned();
            let mut num = |p: &str| -> u32 {
                parts
                    .next()
                    .and_then(|s| s.strip_prefix(p))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no {p} in {item:?} of {value:?}"))
            };
            let r = num("r=");
            let t = num("t=");
            (name, r, t)
        })
        .collect()
}
