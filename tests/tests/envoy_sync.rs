//! Key-set sync in real Envoy 1.40: start-up, failing closed before the first sync, failing
//! static through an outage, turning stale, recovering after it, one leader among four workers,
//! revocation on every worker (the leader waking the others through their shared queues), the
//! key-set call rate under churn, and a snapshot larger than Envoy's default limit on an HTTP
//! client's answer.

use std::time::{Duration, Instant};

use keygate_e2e::envoy::{EDGE_KEY_ENV, EnvoyStack, LISTENER, bootstrap};
use keygate_e2e::fake_feed::FakeFeed;
use keygate_e2e::stack::{ServeProcess, wait_for};
use keygate_protocol::wire::{KeyEntry, Snapshot};
use keygate_protocol::{Digest, KeyId, key};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::json;

const CP_CLUSTER_CALLS: &str = "cluster.keygate_control_plane.upstream_rq_total";

#[test]
fn the_first_request_passes_within_a_second_of_envoy_being_up() {
    // The control plane runs and the key exists before Envoy starts, as at a deploy.
    let stack = EnvoyStack::start(2, json!({}));
    let listening = Instant::now();
    let k = stack.api.create_key(json!({"name": "caller"}));
    // (The key was issued after Envoy came up, so the filter's first snapshot must hold it:
    // the bound covers the first sync, not a later poll.)
    let first = wait_for("the first 200", Duration::from_secs(10), || {
        let r = stack.get("/hello", Some(&k.secret));
        if r.status == 200 {
            Ok(listening.elapsed())
        } else {
            Err(format!("{} {}", r.status, r.text))
        }
    });
    assert!(
        first < Duration::from_secs(1),
        "first 200 {first:?} after Envoy's listener was up; Envoy log:\n{}",
        stack.envoy_logs()
    );
}

#[test]
fn before_the_first_sync_keyed_requests_fail_closed_then_pass_once_it_succeeds() {
    let mut stack = EnvoyStack::start(1, json!({"sync_interval_ms": 200}));
    let url = stack.control_plane.url();
    let k = stack.api.create_key(json!({"name": "caller"}));
    // Envoy without a control plane from its first moment.
    stack.stop_envoy();
    stack.control_plane.kill();
    stack.start_envoy();
    for _ in 0..5 {
        let r = stack.get("/hello", Some(&k.secret));
        assert_eq!(
            (r.status, r.code()),
            (503, "keyset_unavailable"),
            "{}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Anonymous routes do not need the set.
    assert_eq!(stack.get("/healthz", None).status, 200);
    stack.control_plane.restart();
    assert_eq!(stack.control_plane.url(), url);
    stack.wait_status(
        "the first sync after the control plane came up",
        Duration::from_secs(8),
        "/hello",
        &k.secret,
        200,
    );
}

#[test]
fn through_an_outage_the_set_serves_then_turns_stale_then_is_fresh_again_within_seconds() {
    let mut stack = EnvoyStack::start(
        1,
        json!({"max_staleness_s": 3, "long_poll_wait_s": null, "sync_interval_ms": 500}),
    );
    let k = stack.api.create_key(json!({"name": "caller"}));
    let doomed = stack.api.create_key(json!({"name": "doomed"}));
    stack.wait_status(
        "first sync",
        Duration::from_secs(10),
        "/hello",
        &k.secret,
        200,
    );
    stack.control_plane.kill();
    // Fail static: the last good set serves while it is younger than max_staleness_s.
    let r = stack.get("/hello", Some(&k.secret));
    assert_eq!(r.status, 200, "{}", r.text);
    // Then fail closed.
    stack.wait_status("stale", Duration::from_secs(10), "/hello", &k.secret, 503);
    assert_eq!(stack.get("/hello", Some(&k.secret)).code(), "keyset_stale");
    // A long outage: the backoff grows all the while.
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        stack.stat("wasmcustom.keygate.sync.failure.unreachable") >= 3,
        "a control plane that is down is counted as unreachable: {:?}",
        stack
            .envoy()
            .stats()
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.contains("keygate.sync"))
            .collect::<Vec<_>>()
    );
    stack.control_plane.restart();
    let back = Instant::now();
    // A key revoked right after the restart is refused, and the set is fresh, within seconds.
    stack.api.key_action(&doomed.id, "revoke");
    stack.wait_status(
        "fresh again",
        Duration::from_secs(6),
        "/hello",
        &k.secret,
        200,
    );
    stack.wait_status(
        "revoked",
        Duration::from_secs(6),
        "/hello",
        &doomed.secret,
        401,
    );
    assert!(
        back.elapsed() < Duration::from_secs(6),
        "{:?}",
        back.elapsed()
    );
}

#[test]
fn four_workers_make_one_call_at_a_time_and_a_revocation_reaches_every_worker() {
    let stack = EnvoyStack::start(4, json!({}));
    let k = stack.synced_key(json!({"name": "caller"}), "/hello");
    // One leader long-polls: over two quiet seconds the control plane sees at most a few calls.
    let before = stack.stat(CP_CLUSTER_CALLS);
    std::thread::sleep(Duration::from_secs(2));
    let calls = stack.stat(CP_CLUSTER_CALLS) - before;
    assert!(calls <= 2, "{calls} key-set calls in 2 quiet seconds");
    assert_eq!(
        stack.stat("cluster.keygate_control_plane.upstream_rq_active"),
        1
    );
    stack.api.key_action(&k.id, "revoke");
    // Every worker: 24 requests on fresh connections, all refused.
    stack.wait_status(
        "revoked everywhere",
        Duration::from_secs(3),
        "/hello",
        &k.secret,
        401,
    );
}

#[test]
fn the_leader_wakes_every_other_worker_through_its_shared_queue_on_each_change() {
    let stack = EnvoyStack::start(4, json!({}));
    let keys: Vec<_> = (0..5)
        .map(|i| stack.synced_key(json!({"name": format!("woken-{i}")}), "/hello"))
        .collect();
    let woken = || stack.stat("wasmcustom.keygate.sync.woken");
    let before = woken();
    for k in &keys {
        stack.api.key_action(&k.id, "revoke");
        stack.wait_status(
            "revoked everywhere",
            Duration::from_secs(3),
            "/hello",
            &k.secret,
            401,
        );
    }
    // Five changes, three followers each: Envoy ran each follower's `on_queue_ready` on its
    // own thread. (A follower whose tick happens to fall between the leader's publication and
    // the wake-up picks the change up there instead, hence not all fifteen.)
    // The followers add their counts to Envoy's stats on their tick: read until they have.
    wait_for(
        "the followers' wake-ups counted",
        Duration::from_secs(5),
        || {
            let woken = woken() - before;
            if woken >= 10 {
                Ok(())
            } else {
                Err(format!(
                    "followers woken {woken} times for 5 changes on 3 followers"
                ))
            }
        },
    );
}

#[test]
fn a_long_poll_longer_than_the_staleness_bound_is_refused_at_start_with_a_clear_message() {
    let cp = ServeProcess::start_sqlite(&[]);
    let stack = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        EnvoyStack::start_with(
            cp,
            1,
            json!({"long_poll_wait_s": 20, "max_staleness_s": 10}),
        )
    }));
    let Err(panic) = stack else {
        panic!("Envoy started with a long poll that outlasts max_staleness_s");
    };
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("long_poll_wait_s") && msg.contains("must be less than max_staleness_s"),
        "{msg}"
    );
}

#[test]
fn under_churn_the_key_set_call_rate_per_proxy_is_bounded() {
    let stack = EnvoyStack::start(2, json!({}));
    stack.synced_key(json!({"name": "caller"}), "/hello");
    let before = stack.stat(CP_CLUSTER_CALLS);
    let started = Instant::now();
    let issued = stack.api.create_keys(600, json!({"name": "churn"}));
    let secs = started.elapsed().as_secs_f64();
    let calls = stack.stat(CP_CLUSTER_CALLS) - before;
    let per_sec = calls as f64 / secs;
    assert!(
        per_sec <= 11.0,
        "{calls} key-set calls in {secs:.1} s ({per_sec:.1}/s) while {} keys were issued",
        issued.len()
    );
    // An isolated change after the churn still arrives in milliseconds.
    std::thread::sleep(Duration::from_millis(500));
    let revoked = Instant::now();
    stack.api.key_action(&issued[0].id, "revoke");
    stack.wait_status(
        "revoked",
        Duration::from_secs(2),
        "/hello",
        &issued[0].secret,
        401,
    );
    assert!(
        revoked.elapsed() < Duration::from_millis(500),
        "{:?}",
        revoked.elapsed()
    );
}

/// A feed whose snapshot holds one real key and `filler` more entries (digests that no key
/// has): its address, the real key's secret and the runtime serving it.
fn large_feed(filler: u64) -> (String, String, tokio::runtime::Runtime) {
    let real = key::generate("kg_live").unwrap_or_else(|e| panic!("generate: {e}"));
    let entry = |digest: [u8; 32], i: u64| KeyEntry {
        policy: Default::default(),
        digest: Digest::from_bytes(digest),
        key_id: KeyId::from_bytes(u128::from(i).to_be_bytes()),
        owner: "bulk".to_owned(),
        expires_at: None,
        scopes: Vec::new(),
        resources: Vec::new(),
    };
    // splitmix64: distinct, well-spread digests without hashing anything.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut entries: Vec<KeyEntry> = (1..=filler)
        .map(|i| {
            let mut d = [0u8; 32];
            for chunk in d.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_be_bytes());
            }
            entry(d, i)
        })
        .collect();
    entries.push(entry(*real.digest().as_bytes(), 0));
    entries.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
    let snapshot = Snapshot {
        revision: 1,
        entries,
    }
    .encode()
    .unwrap_or_else(|e| panic!("encode: {e}"));
    assert!(
        snapshot.len() > 32 << 20,
        "the snapshot ({} bytes) must exceed Envoy's default 32 MiB",
        snapshot.len()
    );
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let addr = rt
        .block_on(FakeFeed::new(snapshot, Vec::new()).serve())
        .unwrap_or_else(|e| panic!("feed: {e}"));
    (addr, real.expose_secret().to_owned(), rt)
}

fn start_envoy(bootstrap: &serde_json::Value) -> Envoy {
    Envoy::start(
        &bootstrap.to_string(),
        &EnvoyOptions {
            concurrency: 1,
            env: vec![(EDGE_KEY_ENV.to_owned(), "kg_edge_unchecked".to_owned())],
            ..EnvoyOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting Envoy: {e}"))
}

#[test]
fn a_snapshot_over_envoys_default_client_buffer_limit_loads_with_envoy_yamls_runtime() {
    // About 600,000 keys: a 36 MB snapshot, over the 32 MiB Envoy's HTTP client buffers by
    // default (`http.async_response_buffer_limit`), which envoy/envoy.yaml raises.
    let filler = 600_000;
    let (feed, secret, rt) = large_feed(filler);
    let shipped = bootstrap(&feed, &feed, &json!({}));
    let envoy = start_envoy(&shipped);
    let keys = wait_for(
        "the large set loaded",
        Duration::from_secs(90),
        || match envoy.stat("wasmcustom.keygate.keyset.keys") {
            Ok(Some(n)) if n == filler + 1 => Ok(n),
            other => Err(format!("keys gauge {other:?}")),
        },
    );
    assert_eq!(keys, filler + 1);
    let addr = envoy
        .listener_addr(LISTENER)
        .unwrap_or_else(|e| panic!("listener: {e}"));
    let status = |key: &str| {
        rt.block_on(
            reqwest::Client::new()
                .get(format!("http://{addr}/hello"))
                .header("x-api-key", key)
                .send(),
        )
        .unwrap_or_else(|e| panic!("request: {e}"))
        .status()
        .as_u16()
    };
    // The real key passes the filter on to the upstream (the fake feed plays it here, and has
    // no `/hello`: 404); a key the set does not hold is refused by the filter.
    assert_eq!(status(&secret), 404);
    let unknown = key::generate("kg_live").unwrap_or_else(|e| panic!("generate: {e}"));
    assert_eq!(status(unknown.expose_secret()), 401);
    drop(envoy);

    // The same file without its runtime layer: Envoy drops the answer as if none came.
    let mut bare = shipped;
    bare.as_object_mut()
        .map(|b| b.remove("layered_runtime"))
        .unwrap_or_else(|| panic!("the bootstrap is an object"))
        .unwrap_or_else(|| panic!("envoy/envoy.yaml has a layered_runtime"));
    let envoy = start_envoy(&bare);
    wait_for("a failed sync", Duration::from_secs(60), || {
        match envoy.stat("wasmcustom.keygate.sync.failure.unreachable") {
            Ok(Some(n)) if n >= 1 => Ok(n),
            other => Err(format!("unreachable failures {other:?}")),
        }
    });
    assert_eq!(
        envoy
            .stat("wasmcustom.keygate.keyset.keys")
            .unwrap_or_else(|e| panic!("stats: {e}")),
        None,
        "without the runtime layer no set loads"
    );
}
