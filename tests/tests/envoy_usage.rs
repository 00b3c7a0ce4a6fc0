//! Usage reporting from real Envoy 1.40 to a real `keygate serve`: every allowed request is
//! counted once, however many distinct keys a report interval sees, and later counts are never
//! blocked behind an earlier batch.

use std::collections::BTreeMap;
use std::time::Duration;

use keygate_e2e::IssuedKey;
use keygate_e2e::envoy::EnvoyStack;
use keygate_e2e::stack::wait_for;
use reqwest::Method;
use serde_json::json;

/// `usage_count` and `last_used_at` of every key but the edge key, by id.
fn usage(stack: &EnvoyStack) -> BTreeMap<String, (i64, Option<i64>)> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?limit=1000&cursor={c}"),
            None => "/v1/keys?limit=1000".to_owned(),
        };
        let (st, page) = stack.api.admin(Method::GET, &path, None);
        assert_eq!(st, 200, "{page}");
        for k in page["items"].as_array().into_iter().flatten() {
            if k["kind"] == "edge" {
                continue;
            }
            out.insert(
                k["id"].as_str().unwrap_or_default().to_owned(),
                (
                    k["usage_count"].as_i64().unwrap_or(-1),
                    k["last_used_at"].as_i64(),
                ),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Sends `times(i)` allowed requests with the `i`-th key, counting them in `expected`.
fn round(
    stack: &EnvoyStack,
    keys: &[IssuedKey],
    expected: &mut BTreeMap<String, i64>,
    times: impl Fn(usize) -> usize,
) {
    for (i, k) in keys.iter().enumerate() {
        for _ in 0..times(i) {
            let r = stack.get("/hello", Some(&k.secret));
            assert_eq!(r.status, 200, "{}", r.text);
            *expected.entry(k.id.clone()).or_default() += 1;
        }
    }
}

#[test]
fn every_allowed_request_is_counted_once_across_thousands_of_distinct_keys() {
    // 5,000 distinct keys in one report interval of one worker: a batch of them all is far over
    // what the control plane accepts (its general 64 KiB body limit, and the usage route's own).
    // `KEYGATE_E2E_USAGE_KEYS=100000` runs the same scenario at the size (minutes: the
    // keys are issued one by one through the API).
    let keys_n = keygate_testkit::bench::env_usize("KEYGATE_E2E_USAGE_KEYS", 5_000);
    let stack = EnvoyStack::start(1, json!({"usage_report_interval_ms": 1000}));
    let keys = stack.api.create_keys(keys_n, json!({"name": "user"}));
    stack.wait_status(
        "the last key synced",
        Duration::from_secs(15),
        "/hello",
        &keys[keys_n - 1].secret,
        200,
    );
    // The requests that found the key synced are counted too: start from the counts once those
    // are reported (two reads a report interval and more apart agree).
    let warmup = wait_for(
        "the warm-up counts reported",
        Duration::from_secs(30),
        || {
            let before = usage(&stack);
            std::thread::sleep(Duration::from_millis(1500));
            let after = usage(&stack);
            if before == after {
                Ok(after)
            } else {
                Err("still changing".to_owned())
            }
        },
    );
    let mut expected: BTreeMap<String, i64> =
        warmup.iter().map(|(id, (n, _))| (id.clone(), *n)).collect();
    // Round one: every key once, every tenth key three times.
    round(&stack, &keys, &mut expected, |i| {
        if i % 10 == 0 { 3 } else { 1 }
    });
    let total: i64 = expected.values().sum();
    wait_for("every count reported", Duration::from_secs(30), || {
        let seen = usage(&stack);
        let sum: i64 = seen.values().map(|(n, _)| n).sum();
        if sum == total {
            Ok(())
        } else {
            Err(format!("{sum} of {total} requests counted"))
        }
    });
    // Round two, after round one's batches: later counts are not blocked.
    round(&stack, &keys, &mut expected, |i| usize::from(i % 3 == 0));
    let total: i64 = expected.values().sum();
    let seen = wait_for("round two reported", Duration::from_secs(30), || {
        let seen = usage(&stack);
        let sum: i64 = seen.values().map(|(n, _)| n).sum();
        if sum == total {
            Ok(seen)
        } else {
            Err(format!("{sum} of {total} requests counted"))
        }
    });
    for k in &keys {
        let (count, last) = seen[&k.id];
        assert_eq!(count, expected[&k.id], "usage_count of {}", k.id);
        assert!(last.is_some(), "last_used_at of {} is not set", k.id);
    }
    assert_eq!(stack.stat("wasmcustom.keygate.usage.batches_dropped"), 0);
    let sent = stack.stat("wasmcustom.keygate.usage.batches_sent");
    assert!(sent >= 4, "{sent} batches for {keys_n} keys in two rounds");
}
