//! The `RateLimit-Policy` / `RateLimit` fields on allowed requests (`rate_limit_headers`) in real
//! Envoy 1.40 (`--concurrency 1`), for both shells, keys given their policies by a fake key-set
//! feed: an allowed request of a limited key carries both, one `RateLimit` item per limit with
//! `r` counting down by one per request and `t` within the window; a key without limits gets
//! neither; with the option off no allowed request carries them, and refusals keep theirs.
//!
//! The wasm filter sets them as filter state that `envoy/envoy.yaml`'s virtual host writes into
//! the response; the dynamic module adds them in its response-headers hook.

use keygate_e2e::Reply;
use keygate_e2e::limits::{
    limit, limited_key, module_envoy, ratelimit_items, serve_keys, wait_for_the_set, wasm_envoy,
};
use keygate_e2e::native::NativeEnvoy;
use keygate_protocol::policy::LimitPool;
use serde_json::{Value, json};

/// The limited key's limits: 100 per 10 s, then 1000 per hour.
const POLICY: &str = r#""burst";q=100;w=10, "hourly";q=1000;w=3600"#;
/// The tiny key's limit: 3 per 10 s.
const TINY: u32 = 3;
const WINDOW_S: u64 = 10;

struct Keys {
    limited: String,
    tiny: String,
    plain: String,
}

/// The fake feed serving three keys, on a runtime of its own; its `host:port` and the keys.
fn feed() -> (String, Keys, tokio::runtime::Runtime) {
    let window = WINDOW_S as u32;
    let own = |name: &str, n: u32, w: u32| limit(name, n, w, LimitPool::Key);
    let two = vec![own("burst", 100, window), own("hourly", 1000, 3600)];
    let (l, limited) = limited_key(1, "solo", two);
    let (t, tiny) = limited_key(2, "solo", vec![own("tiny", TINY, window)]);
    let (p, plain) = limited_key(3, "solo", Vec::new());
    let (addr, rt) = serve_keys(vec![l, t, p]);
    let keys = Keys {
        limited,
        tiny,
        plain,
    };
    (addr, keys, rt)
}

/// 300 ms into the next 10 s window.
fn at_the_start_of_a_window() {
    keygate_e2e::limits::at_the_start_of_a_window(WINDOW_S);
}

/// The values of every response header `name`.
fn all<'a>(r: &'a Reply, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The tiny key's requests in a fresh window: `TINY` pass, the next is the filter's 429 with
/// its fields (once each); whether the passes carry the fields is `fields_on_passes`.
fn tiny_key(envoy: &NativeEnvoy, keys: &Keys, shell: &str, fields_on_passes: bool) {
    for i in 0..TINY {
        let r = envoy.request("GET", "/hello", &[("x-api-key", &keys.tiny)]);
        assert_eq!(r.status, 200, "{shell}: {}", r.text);
        let rl = all(&r, "ratelimit");
        if fields_on_passes {
            assert_eq!(
                all(&r, "ratelimit-policy"),
                [r#""tiny";q=3;w=10"#],
                "{shell}"
            );
            assert_eq!(rl.len(), 1, "{shell}: {rl:?}");
            let [(name, rem, _)] = &ratelimit_items(rl[0])[..] else {
                panic!("{shell}: {rl:?}")
            };
            assert_eq!((name.as_str(), *rem), ("tiny", TINY - 1 - i), "{shell}");
        } else {
            assert!(
                rl.is_empty(),
                "{shell}: RateLimit without the option: {rl:?}"
            );
            assert!(all(&r, "ratelimit-policy").is_empty(), "{shell}");
        }
    }
    let r = envoy.request("GET", "/hello", &[("x-api-key", &keys.tiny)]);
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{shell}");
    let retry = r.header("retry-after").unwrap_or_default().to_owned();
    assert_eq!(
        all(&r, "ratelimit-policy"),
        [r#""tiny";q=3;w=10"#],
        "{shell}"
    );
    assert_eq!(
        all(&r, "ratelimit"),
        [format!("\"tiny\";r=0;t={retry}").as_str()],
        "{shell}"
    );
}

fn with_the_option(envoy: &NativeEnvoy, keys: &Keys, shell: &str) {
    wait_for_the_set(envoy, &keys.plain);
    at_the_start_of_a_window();
    let mut last: Option<Vec<(String, u32, u32)>> = None;
    for _ in 0..5 {
        let r = envoy.request("GET", "/hello", &[("x-api-key", &keys.limited)]);
        assert_eq!(r.status, 200, "{shell}: {}", r.text);
        assert_eq!(all(&r, "ratelimit-policy"), [POLICY], "{shell}");
        let rl = all(&r, "ratelimit");
        assert_eq!(rl.len(), 1, "{shell}: {rl:?}");
        let now = ratelimit_items(rl[0]);
        let names: Vec<&str> = now.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["burst", "hourly"], "{shell}: {rl:?}");
        let (_, _, t) = now[0];
        assert!((1..=WINDOW_S as u32).contains(&t), "{shell}: t={t}");
        assert!((1..=3600).contains(&now[1].2), "{shell}: {rl:?}");
        match &last {
            // The first request of the key in this window.
            None => assert_eq!((now[0].1, now[1].1), (99, 999), "{shell}: {rl:?}"),
            Some(before) => {
                for (b, n) in before.iter().zip(&now) {
                    assert_eq!(n.1 + 1, b.1, "{shell}: {} did not count down: {rl:?}", n.0);
                }
            }
        }
        eprintln!("{shell}: ratelimit: {}", rl[0]);
        last = Some(now);
    }
    // A key without limits: neither field.
    for _ in 0..3 {
        let r = envoy.request("GET", "/hello", &[("x-api-key", &keys.plain)]);
        assert_eq!(r.status, 200, "{shell}");
        for name in ["ratelimit", "ratelimit-policy", "retry-after"] {
            assert_eq!(
                r.header(name),
                None,
                "{shell}: {name} on a key without limits"
            );
        }
    }
    tiny_key(envoy, keys, shell, true);
}

fn without_the_option(envoy: &NativeEnvoy, keys: &Keys, shell: &str) {
    wait_for_the_set(envoy, &keys.plain);
    at_the_start_of_a_window();
    let r = envoy.request("GET", "/hello", &[("x-api-key", &keys.limited)]);
    assert_eq!(r.status, 200, "{shell}");
    for name in ["ratelimit", "ratelimit-policy", "retry-after"] {
        assert_eq!(r.header(name), None, "{shell}: {name} without the option");
    }
    tiny_key(envoy, keys, shell, false);
}

fn wasm(feed: &str, overrides: &Value) -> NativeEnvoy {
    wasm_envoy(1, feed, overrides)
}

fn module(feed: &str, overrides: &Value) -> NativeEnvoy {
    module_envoy(1, feed, overrides)
}

#[test]
fn the_wasm_filter_sends_the_fields_on_allowed_requests_when_asked() {
    let (feed, keys, _rt) = feed();
    let on = json!({"sync_interval_ms": 200, "rate_limit_headers": true});
    with_the_option(&wasm(&feed, &on), &keys, "wasm");
    let off = json!({"sync_interval_ms": 200});
    without_the_option(&wasm(&feed, &off), &keys, "wasm");
}

#[test]
fn the_dynamic_module_sends_the_fields_on_allowed_requests_when_asked() {
    let (feed, keys, _rt) = feed();
    let on = json!({"sync_interval_ms": 200, "rate_limit_headers": true});
    with_the_option(&module(&feed, &on), &keys, "module");
    let off = json!({"sync_interval_ms": 200});
    without_the_option(&module(&feed, &off), &keys, "module");
}
