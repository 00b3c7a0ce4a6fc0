//! The development gateway sends `RateLimit-Policy` / `RateLimit` on allowed requests as Envoy
//! does with `envoy/envoy.yaml` (`rate_limit_headers`): the wasm filter sets them as properties
//! (filter state), and the gateway adds the response headers that `envoy.yaml`'s routes fill from
//! filter state. A key without limits gets neither; with the option off, no allowed request does.

use std::time::Duration;

use keygate_e2e::Reply;
use keygate_e2e::limits::{
    at_the_start_of_a_window, limit, limited_key, ratelimit_items, serve_keys,
};
use keygate_e2e::stack::{GatewayStack, wait_for};
use keygate_protocol::policy::LimitPool;
use serde_json::json;

/// The limited key's limits: 100 per 10 s, then 1000 per hour.
const POLICY: &str = r#""burst";q=100;w=10, "hourly";q=1000;w=3600"#;
const WINDOW_S: u64 = 10;

fn no_fields(r: &Reply, why: &str) {
    for name in ["ratelimit", "ratelimit-policy", "retry-after"] {
        assert_eq!(r.header(name), None, "{name} {why}");
    }
}

#[test]
fn the_gateway_adds_the_fields_envoy_yaml_fills_from_the_filters_state() {
    let own = |name: &str, n: u32, w: u32| limit(name, n, w, LimitPool::Key);
    let two = vec![
        own("burst", 100, WINDOW_S as u32),
        own("hourly", 1000, 3600),
    ];
    let (l, limited) = limited_key(1, "solo", two);
    let (p, plain) = limited_key(2, "solo", Vec::new());
    let (feed, _rt) = serve_keys(vec![l, p]);
    let feed = format!("http://{feed}");

    let on = GatewayStack::start(
        &feed,
        "kg_edge_unchecked",
        json!({"rate_limit_headers": true}),
    );
    wait_for("the key set loaded", Duration::from_secs(20), || {
        let r = on.get("/whoami", Some(&plain));
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    });
    at_the_start_of_a_window(WINDOW_S);
    let mut seen_burst = Vec::new();
    for _ in 0..4 {
        let r = on.get("/whoami", Some(&limited));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.header("ratelimit-policy"), Some(POLICY));
        let value = r
            .header("ratelimit")
            .unwrap_or_else(|| panic!("no RateLimit: {r:?}"));
        let now = ratelimit_items(value);
        let names: Vec<&str> = now.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["burst", "hourly"], "{value}");
        assert!((1..=WINDOW_S as u32).contains(&now[0].2), "{value}");
        assert!((1..=3600).contains(&now[1].2), "{value}");
        // Four requests of a fresh window: at most 99 left after the first, never more than
        // the limit after any (the gateway's workers lease chunks of the count).
        assert!(now[0].1 <= 99 && now[1].1 <= 999, "{value}");
        seen_burst.push(now[0].1);
    }
    assert!(
        seen_burst.iter().min() < seen_burst.iter().max(),
        "r never counted down over four requests: {seen_burst:?}"
    );
    for _ in 0..2 {
        let r = on.get("/whoami", Some(&plain));
        assert_eq!(r.status, 200, "{}", r.text);
        no_fields(&r, "on a key without limits");
    }
    drop(on);

    let off = GatewayStack::start(&feed, "kg_edge_unchecked", json!({}));
    wait_for("the key set loaded", Duration::from_secs(20), || {
        let r = off.get("/whoami", Some(&limited));
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    });
    let r = off.get("/whoami", Some(&limited));
    assert_eq!(r.status, 200, "{}", r.text);
    no_fields(&r, "without rate_limit_headers");
}
