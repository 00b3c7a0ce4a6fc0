//! Credits are fleet-wide, in real Envoy 1.40 (issue 27): a key with 500 credits, two Envoy
//! processes (the wasm filter, concurrency 2, usage reports every 500 ms) on two `keygate
//! serve` replicas over one PostgreSQL, traffic paced over both proxies until both answer
//! `429 credits_exhausted`. The control plane takes each usage report off the balance and, at
//! 0, marks the key `credits_exhausted` in the key set; the requests allowed past the 500 (the
//! overshoot, every allowed request being reported) stay within docs/credits.md's bound
//! `R × (F + L)` (R the measured rate, F the report interval, L = 1 s for the revocation
//! latency). Then a refill (the replicas' refill task, due 2 s after the change) makes the key
//! pass on both proxies again.

use std::time::{Duration, Instant};

use keygate_e2e::envoy::EnvoyStack;
use keygate_e2e::stack::{ServeProcess, wait_for};
use reqwest::Method;
use serde_json::json;

/// The filter's usage report interval, milliseconds (F).
const REPORT_MS: u64 = 500;
/// The revocation latency allowed for in the bound (L): the long-poll wakes at once; a
/// second covers a debug control plane on a loaded machine.
const LATENCY_S: f64 = 1.0;
/// The paced request rate over both proxies, per second.
const RATE: f64 = 200.0;
const CREDITS: i64 = 500;

#[test]
fn a_key_with_500_credits_stops_on_two_envoys_within_the_overshoot_and_a_refill_brings_it_back() {
    let database_url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .expect("fresh PostgreSQL database");
    let args: Vec<String> = ["--refill-check-ms", "100"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let r1 = ServeProcess::start(&database_url, &args);
    let r2 = ServeProcess::start(&database_url, &args);
    let filter = json!({
        "long_poll_wait_s": 2,
        "sync_interval_ms": 200,
        "usage_report_interval_ms": REPORT_MS,
    });
    let a = EnvoyStack::start_with(r1, 2, filter.clone());
    let b = EnvoyStack::start_with(r2, 2, filter);
    let key = a
        .api
        .create_key(json!({"name": "metered", "credits": {"remaining": CREDITS}}));
    for (name, e) in [("a", &a), ("b", &b)] {
        e.wait_status(
            &format!("Envoy {name} has the key"),
            Duration::from_secs(30),
            "/hello",
            &key.secret,
            200,
        );
    }

    // Paced traffic over both proxies until each answers 429 credits_exhausted five times in
    // a row.
    let start = Instant::now();
    let (mut allowed, mut sent, mut refused) = (0u64, 0u64, 0u64);
    let mut first_denied: Option<Duration> = None;
    let mut last_allowed = Duration::ZERO;
    let mut denied_in_a_row = [0u32; 2];
    while denied_in_a_row.iter().any(|n| *n < 5) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still passing after 60 s: {allowed} allowed of {sent}"
        );
        let i = (sent % 2) as usize;
        let r = [&a, &b][i].get("/hello", Some(&key.secret));
        sent += 1;
        match r.status {
            200 => {
                allowed += 1;
                denied_in_a_row[i] = 0;
                last_allowed = start.elapsed();
            }
            429 => {
                assert!(r.text.contains("credits_exhausted"), "{}", r.text);
                refused += 1;
                denied_in_a_row[i] += 1;
                first_denied.get_or_insert(start.elapsed());
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
        let due = start + Duration::from_secs_f64(sent as f64 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let first_denied = first_denied.expect("a denial");
    // Every allowed request is reported: wait for the last reports, then read the total.
    let used = wait_for("the last usage reports", Duration::from_secs(20), || {
        let before = a.api.key(&key.id).usage_count;
        std::thread::sleep(Duration::from_millis(3 * REPORT_MS));
        let after = a.api.key(&key.id).usage_count;
        if before == after {
            Ok(after)
        } else {
            Err(format!("{before} -> {after}"))
        }
    });
    let view = a.api.key(&key.id);
    assert_eq!(view.credits.as_ref().map(|c| c.remaining), Some(0));
    let overshoot = used - CREDITS;
    let rate = allowed as f64 / first_denied.as_secs_f64().max(0.001);
    let bound = rate * (REPORT_MS as f64 / 1000.0 + LATENCY_S);
    println!(
        "credits {CREDITS}: {used} allowed in all ({allowed} by the paced traffic at {rate:.0}/s \
         over 2 Envoys), overshoot {overshoot}, bound R×(F+L) = {bound:.0}; first 429 at \
         {first_denied:?}, last 200 at {last_allowed:?}"
    );
    assert!(used >= CREDITS, "stopped early: {used} of {CREDITS}");
    assert!(
        (overshoot as f64) <= bound,
        "overshoot {overshoot} above the bound {bound:.0}"
    );
    let (st, audit) = a.api.admin(
        Method::GET,
        &format!("/v1/audit?key_id={}&action=key.credits_exhausted", key.id),
        None,
    );
    assert_eq!(st, 200, "{audit}");
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    // Every refusal is reported too, apart from the uses: the key's usage counts exactly the
    // 429s the two proxies answered as `credits_exhausted` (and none as `limited`).
    let usage = format!("/v1/keys/{}/usage?bucket=hour", key.id);
    wait_for(
        "the refusals in the key's usage",
        Duration::from_secs(20),
        || {
            let (st, v) = a.api.admin(Method::GET, &usage, None);
            let sum = |field: &str| -> i64 {
                v["points"]
                    .as_array()
                    .map_or(0, |p| p.iter().filter_map(|p| p[field].as_i64()).sum())
            };
            let (spent, limited) = (sum("credits_exhausted"), sum("limited"));
            if st == 200 && spent == refused as i64 && limited == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{st}: credits_exhausted {spent} of {refused}, limited {limited}: {v}"
                ))
            }
        },
    );

    // A refill due in 2 s: the replicas' refill task puts the balance back, the feed puts the
    // key back to active on both proxies.
    let (st, v) = a.api.admin(
        Method::PATCH,
        &format!("/v1/keys/{}/limits", key.id),
        Some(json!({"credits": {"remaining": 0, "refill": {"amount": CREDITS, "interval": 2}}})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        a.get("/hello", Some(&key.secret)).status,
        429,
        "still exhausted until the refill"
    );
    for (name, e) in [("a", &a), ("b", &b)] {
        e.wait_status(
            &format!("Envoy {name} lets the refilled key through"),
            Duration::from_secs(20),
            "/hello",
            &key.secret,
            200,
        );
    }
    let (st, audit) = a.api.admin(
        Method::GET,
        &format!("/v1/audit?key_id={}&action=key.credits_refill", key.id),
        None,
    );
    assert_eq!(st, 200, "{audit}");
    assert!(
        audit["items"].as_array().is_some_and(|r| !r.is_empty()),
        "{audit}"
    );
}
