//! Rate limits in real Envoy 1.40 (`--concurrency 4`), for both shells, keys given their
//! policies by a fake key-set feed: a key limited to 100 per 10 s passes within the stated
//! bound in a window from many connections and the rest get `429 rate_limited` with
//! `Retry-After`, `RateLimit` and `RateLimit-Policy`; an owner-pooled limit is shared by the
//! owner's keys in its workspace, and the same-named owner of another workspace has a pool of
//! its own; a key without limits behaves as before (every request passes, no new field).

use std::time::Duration;

use keygate_e2e::Reply;
use keygate_e2e::echo::send;
use keygate_e2e::limits::{
    limit, limited_key, module_envoy, serve_keys, wait_for_the_set, wasm_envoy,
};
use keygate_e2e::native::NativeEnvoy;
use keygate_e2e::stack::wait_for;
use keygate_filter_core::limits::chunk;
use keygate_protocol::policy::LimitPool;
use serde_json::json;

const WORKERS: usize = 4;
/// The limited key's limit: 100 per 10 s.
const LIMIT: u32 = 100;
const WINDOW_S: u64 = 10;
/// The owner pool's limit, shared by two keys.
const POOL: u32 = 30;

struct Keys {
    limited: String,
    plain: String,
    /// Two keys of `team` in workspace `ws-a`.
    pooled: [String; 2],
    /// A key of `team` in workspace `ws-b`, with the same pooled limit.
    other_workspace: String,
}

/// The fake feed serving five keys, on a runtime of its own; its `host:port` and the keys.
fn feed() -> (String, Keys, tokio::runtime::Runtime) {
    let window = WINDOW_S as u32;
    let burst = vec![limit("burst", LIMIT, window, LimitPool::Key)];
    let (l, limited) = limited_key(1, "solo", burst);
    let (p, plain) = limited_key(2, "solo", Vec::new());
    let in_ws = |ws: &str| vec![limit("team", POOL, window, LimitPool::OwnerIn(ws.into()))];
    let (a, pooled_a) = limited_key(3, "team", in_ws("ws-a"));
    let (b, pooled_b) = limited_key(4, "team", in_ws("ws-a"));
    let (c, other_workspace) = limited_key(5, "team", in_ws("ws-b"));
    let (addr, rt) = serve_keys(vec![l, p, a, b, c]);
    let keys = Keys {
        limited,
        plain,
        pooled: [pooled_a, pooled_b],
        other_workspace,
    };
    (addr, keys, rt)
}

/// 300 ms into the next 10 s window, so that a burst sent now falls in one window.
fn at_the_start_of_a_window() {
    keygate_e2e::limits::at_the_start_of_a_window(WINDOW_S);
}

/// `n` requests with `keys[i % keys.len()]`, 16 at a time, each on a new connection.
fn burst(envoy: &NativeEnvoy, rt: &tokio::runtime::Runtime, keys: &[&str], n: usize) -> Vec<Reply> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_else(|e| panic!("HTTP client: {e}"));
    let url = format!("{}/hello", envoy.url);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (http, url, gate) = (http.clone(), url.clone(), gate.clone());
                let key = keys[i % keys.len()].to_owned();
                tokio::spawn(async move {
                    let _permit = gate.acquire().await;
                    send(&http, "GET", &url, &[("x-api-key", &key)]).await
                })
            })
            .collect();
        let mut replies = Vec::with_capacity(n);
        for t in tasks {
            replies.push(t.await.unwrap_or_else(|e| panic!("a request task: {e}")));
        }
        replies
    })
}

fn passes(replies: &[Reply]) -> usize {
    replies.iter().filter(|r| r.status == 200).count()
}

/// Every refused reply is the filter's 429 with the draft's fields, consistent with each other.
fn check_refusals(replies: &[Reply], policy: &str, name: &str) {
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!((r.status, r.code()), (429, "rate_limited"), "{}", r.text);
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers));
        assert!((1..=WINDOW_S).contains(&retry), "Retry-After {retry}");
        assert_eq!(r.header("ratelimit-policy"), Some(policy));
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"{name}\";r=0;t={retry}").as_str())
        );
    }
}

/// The bound's slack for a limit of `limit`: `(N-1)·C` for the wasm filter's leases, 0 for
/// the module's exact counters.
fn slack(leased: bool, limit: u32) -> usize {
    if leased {
        (WORKERS - 1) * chunk(limit) as usize
    } else {
        0
    }
}

/// Runs the scenario on one Envoy; `shell` names it in messages, `stat` is its counter prefix.
fn scenario(
    envoy: &NativeEnvoy,
    rt: &tokio::runtime::Runtime,
    keys: &Keys,
    shell: &str,
    stat: &str,
    leased: bool,
) {
    wait_for_the_set(envoy, &keys.plain);
    let c = slack(leased, LIMIT);
    let lower = LIMIT as usize - c;
    // The first window this key's counter is used in: workers may race to create it.
    at_the_start_of_a_window();
    let first = burst(envoy, rt, &[&keys.limited], 150);
    let p = passes(&first);
    assert!(
        (lower..=LIMIT as usize + c).contains(&p),
        "{shell}: {p} passes in the counter's first window"
    );
    eprintln!("{shell}: {p} passes of 150 in the counter's first window");
    check_refusals(&first, "\"burst\";q=100;w=10", "burst");
    // The next window: within [L - (N-1)·C, L].
    at_the_start_of_a_window();
    let second = burst(envoy, rt, &[&keys.limited], 150);
    let p = passes(&second);
    assert!(
        (lower..=LIMIT as usize).contains(&p),
        "{shell}: {p} passes, bound [{lower}, {LIMIT}]"
    );
    eprintln!("{shell}: {p} passes of 150 in the next window, bound [{lower}, {LIMIT}]");
    assert_eq!(
        second.len() - p,
        second.iter().filter(|r| r.status == 429).count()
    );
    check_refusals(&second, "\"burst\";q=100;w=10", "burst");
    // An allowed request of a limited key carries no field when the configuration does not ask.
    assert!(
        second
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.header("ratelimit").is_none())
    );

    // The key without limits: every request passes, and no answer carries a new field.
    let plain = burst(envoy, rt, &[&keys.plain], 150);
    assert_eq!(
        passes(&plain),
        150,
        "{shell}: the key without limits was refused"
    );
    for r in &plain {
        for name in ["ratelimit", "ratelimit-policy", "retry-after"] {
            assert_eq!(r.header(name), None, "{shell}: {name} on an unlimited key");
        }
    }

    // Two keys of one owner share its pool.
    at_the_start_of_a_window();
    let pooled = burst(envoy, rt, &[&keys.pooled[0], &keys.pooled[1]], 80);
    let p = passes(&pooled);
    let c = slack(leased, POOL);
    assert!(
        (POOL as usize - c..=POOL as usize + c).contains(&p),
        "{shell}: {p} passes of the pool of {POOL}"
    );
    eprintln!("{shell}: {p} passes of 80 from two keys sharing a pool of {POOL}");
    for (i, k) in keys.pooled.iter().enumerate() {
        let mine = pooled
            .iter()
            .enumerate()
            .filter(|(j, r)| j % 2 == i && r.status == 200)
            .count();
        assert!(
            mine > 0 && mine < p,
            "{shell}: key {i} passed {mine} of {p} ({k:.12})"
        );
    }
    check_refusals(&pooled, "\"team\";q=30;w=10", "team");
    // In the same window, `team` of another workspace: a pool of its own, whole.
    let other = burst(envoy, rt, &[&keys.other_workspace], 40);
    let o = passes(&other);
    assert!(
        (POOL as usize - c..=POOL as usize + c).contains(&o),
        "{shell}: {o} passes of another workspace's pool of {POOL}"
    );
    eprintln!("{shell}: {o} passes of 40 from the same-named owner of another workspace");
    check_refusals(&other, "\"team\";q=30;w=10", "team");

    // Refusals are counted by reason in the filter's stats.
    let refused = (first.len() + second.len() + pooled.len() + other.len())
        - passes(&first)
        - passes(&second)
        - passes(&pooled)
        - o;
    wait_for("the rate_limited counter", Duration::from_secs(5), || {
        let n = envoy.stat(&format!("{stat}.keygate.decision.deny.rate_limited"));
        if n == refused as u64 {
            Ok(())
        } else {
            Err(format!("{n} of {refused}"))
        }
    });
}

#[test]
fn the_wasm_filter_counts_each_limit_across_its_four_workers() {
    let (feed, keys, rt) = feed();
    let envoy = wasm_envoy(WORKERS, &feed, &json!({"sync_interval_ms": 200}));
    scenario(&envoy, &rt, &keys, "wasm", "wasmcustom", true);
}

#[test]
fn the_dynamic_module_counts_each_limit_exactly_in_its_process() {
    let (feed, keys, rt) = feed();
    let envoy = module_envoy(WORKERS, &feed, &json!({"sync_interval_ms": 200}));
    scenario(&envoy, &rt, &keys, "module", "dynamicmodulescustom", false);
}
