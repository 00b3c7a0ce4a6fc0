//! The edge fleet with real proxies: two Envoy 1.40 processes (concurrency 2) and the
//! development gateway, syncing from two `keygate serve` replicas on one PostgreSQL, seen
//! through the real `keygate` CLI.
//!
//! * `keygate keys revoke ID --wait` returns only once all three proxies enforce the
//!   revocation: requests on every worker, sent right after it returns, are all refused, and
//!   every Envoy VM's own revision gauge has reached the write's revision.
//! * An Envoy cut off from its control plane (its cluster points at a TCP proxy that then cuts
//!   and holds every call) makes `--wait` exit 2 naming it, and shows as `lagging`.
//! * A stopped Envoy becomes `gone`. A restarted one is told apart: it draws a new edge id
//!   (the id lives in the process's shared data), keeps its node id, and the old id stays
//!   `gone`.

use std::time::{Duration, Instant};

use keygate_e2e::cut_proxy::CutProxy;
use keygate_e2e::envoy::{EnvoyStack, NodeOptions};
use keygate_e2e::reqwest::Method;
use keygate_e2e::stack::{Cli, GatewayStack, ServeProcess, WORKERS, wait_for};
use serde_json::{Value, json};

/// Registry timing for the test (seconds): a row rewritten every second, lagging after one
/// second behind, gone after twelve silent (above the filter's 2 s long-poll plus the heartbeat,
/// and long enough to see a cut-off edge lagging before it goes).
const REGISTRY: [&str; 6] = [
    "--edge-heartbeat-s",
    "1",
    "--edge-lagging-after-s",
    "1",
    "--edge-gone-after-s",
    "12",
];

fn edges(cli: &Cli) -> Value {
    cli.json(&["edges", "list"])
}

fn by_node<'v>(fleet: &'v Value, node: Option<&str>) -> Vec<&'v Value> {
    fleet["items"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["node_id"].as_str() == node).collect())
        .unwrap_or_default()
}

/// The one edge not `gone` with this node id.
fn present<'v>(fleet: &'v Value, node: Option<&str>) -> Option<&'v Value> {
    by_node(fleet, node)
        .into_iter()
        .find(|e| e["state"] != "gone")
}

/// Every Envoy VM that keeps a set, with its revision gauge.
fn vm_revisions(stack: &EnvoyStack) -> Vec<(String, u64)> {
    stack
        .envoy()
        .stats()
        .unwrap_or_else(|e| panic!("Envoy stats: {e}"))
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("wasmcustom.keygate.vm.") && name.ends_with(".keyset.revision")
        })
        .collect()
}

/// Requests right now: each proxy answers `status` on every attempt (Envoy spreads its
/// connections over both workers; the gateway takes its workers in turn).
fn every_worker_answers(envoys: &[&EnvoyStack], gw: &GatewayStack, key: &str, status: u16) {
    for (i, e) in envoys.iter().enumerate() {
        for n in 0..8 {
            let r = e.get("/hello", Some(key));
            assert_eq!(r.status, status, "Envoy {i}, request {n}: {}", r.text);
        }
    }
    for n in 0..2 * WORKERS {
        let r = gw.get("/whoami", Some(key));
        assert_eq!(r.status, status, "gateway request {n}: {}", r.text);
    }
}

#[test]
fn revoke_wait_covers_every_proxy_and_names_the_cut_off_one_and_stopped_ones_go() {
    let database_url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .expect("fresh PostgreSQL database");
    let args: Vec<String> = REGISTRY.iter().map(|a| (*a).to_owned()).collect();
    let r1 = ServeProcess::start(&database_url, &args);
    let r2 = ServeProcess::start(&database_url, &args);
    let cli = r1.admin_cli();
    let r2_url = r2.url();
    let cut = CutProxy::start(r2.addr());
    let filter = json!({"long_poll_wait_s": 2, "sync_interval_ms": 200});
    let node = |id: &str, via: Option<String>| NodeOptions {
        via,
        node_id: Some(id.to_owned()),
    };
    let mut envoy_a = EnvoyStack::start_node(r1, node("envoy-a", None), 2, filter.clone());
    let envoy_b = EnvoyStack::start_node(
        r2,
        node("envoy-b", Some(cut.addr().to_string())),
        2,
        filter.clone(),
    );
    let gw_key = cli
        .create_key(&["--name", "gateway edge", "--kind", "edge"])
        .secret;
    let gw = GatewayStack::start(&r2_url, &gw_key, json!({"long_poll_wait_s": 2}));

    // The fleet: three edges, each with its own id and edge key, all live.
    let fleet = wait_for("three live edges", Duration::from_secs(30), || {
        let f = edges(&cli);
        let live = f["items"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|e| {
                    e["state"] == "live"
                        && e["applied_revision"] == f["revision"]
                        && (e["node_id"].is_null() || e["workers"] == 2)
                })
                .count()
        });
        if live == 3 { Ok(f) } else { Err(f.to_string()) }
    });
    let a0 = present(&fleet, Some("envoy-a"))
        .unwrap_or_else(|| panic!("envoy-a: {fleet}"))
        .clone();
    let b0 = present(&fleet, Some("envoy-b"))
        .unwrap_or_else(|| panic!("envoy-b: {fleet}"))
        .clone();
    let g0 = present(&fleet, None)
        .unwrap_or_else(|| panic!("the gateway: {fleet}"))
        .clone();
    assert_eq!(a0["node_cluster"], "keygate-e2e");
    assert_eq!(a0["workers"], 2, "{a0}");
    // The gateway's second VM is presumed the idle main-thread VM until a request wakes it
    // (the filter's rule for Envoy's VMs): it counts itself then.
    assert!(
        g0["workers"]
            .as_u64()
            .is_some_and(|w| (1..=WORKERS as u64).contains(&w)),
        "{g0}"
    );
    let ids = [&a0, &b0, &g0].map(|e| e["edge_id"].as_str().unwrap().to_owned());
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    assert_ne!(a0["edge_key_id"], b0["edge_key_id"]);
    assert_eq!(a0["address"], "127.0.0.1");
    let table = cli.run(&["edges", "list"]);
    assert!(
        table.ok && table.stdout.contains("envoy-b") && table.stdout.contains("live"),
        "{}",
        table.stdout
    );

    // Create with --wait: usable on every worker of every proxy when the command returns.
    let out = cli.run(&[
        "keys", "create", "--name", "leaked", "--wait", "10", "--json",
    ]);
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    let victim: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(victim["propagation"]["complete"], true, "{victim}");
    let secret = victim["secret"].as_str().unwrap().to_owned();
    let id = victim["key"]["id"].as_str().unwrap().to_owned();
    every_worker_answers(&[&envoy_a, &envoy_b], &gw, &secret, 200);

    // Revoke with --wait: refused everywhere the moment it returns.
    let started = Instant::now();
    let out = cli.run(&["keys", "revoke", &id, "--reason", "leaked", "--wait", "10"]);
    let took = started.elapsed();
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("applied by every edge (3)"),
        "{}",
        out.stdout
    );
    every_worker_answers(&[&envoy_a, &envoy_b], &gw, &secret, 401);
    let revoked_at: u64 = {
        let v = cli.json(&["keys", "show", &id]);
        assert_eq!(v["status"], "revoked");
        edges(&cli)["revision"].as_u64().unwrap()
    };
    for (name, stack) in [("envoy-a", &envoy_a), ("envoy-b", &envoy_b)] {
        let vms = vm_revisions(stack);
        assert!(vms.len() >= 2, "{name}: {vms:?}");
        assert!(
            vms.iter().all(|(_, r)| *r >= revoked_at),
            "{name}: {vms:?} < {revoked_at}"
        );
    }
    eprintln!("revoke --wait with three proxies took {took:?}");

    // Envoy B is cut off: the next revoke's --wait exits 2 and names it; it is lagging.
    let k2 = cli.create_key(&["--name", "second"]);
    let out = cli.run(&["keys", "suspend", &k2.id, "--wait", "10"]);
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    let out = cli.run(&["keys", "reactivate", &k2.id, "--wait", "10"]);
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    every_worker_answers(&[&envoy_a, &envoy_b], &gw, &k2.secret, 200);
    cut.hold();
    let out = cli.run(&["keys", "revoke", &k2.id, "--wait", "3"]);
    assert_eq!(out.code, Some(2), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 of 3 edges behind"), "{}", out.stdout);
    let behind_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("behind:"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        behind_line.contains(&ids[1]) && behind_line.contains("envoy-b"),
        "{behind_line}"
    );
    assert!(!behind_line.contains(&ids[0]) && !behind_line.contains(&ids[2]));
    assert!(
        out.stderr.contains("some edges had not applied"),
        "{}",
        out.stderr
    );
    // What the report says is what the proxies do: B still lets the key through.
    assert_eq!(envoy_a.get("/hello", Some(&k2.secret)).status, 401);
    assert_eq!(envoy_b.get("/hello", Some(&k2.secret)).status, 200);
    let lagging = wait_for("envoy-b lagging", Duration::from_secs(10), || {
        let f = edges(&cli);
        match present(&f, Some("envoy-b")) {
            Some(b) if b["state"] == "lagging" => Ok(b.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(lagging["lag_revisions"].as_i64().unwrap() >= 1, "{lagging}");
    assert!(lagging["lag_seconds"].as_i64().unwrap() >= 1, "{lagging}");
    let (_, metrics) = envoy_a.api.admin(Method::GET, "/metrics", None);
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains("keygate_edges{state=\"lagging\"} 1"),
        "{metrics}"
    );

    // Back in touch, B catches up and is live again.
    cut.resume();
    wait_for("envoy-b live again", Duration::from_secs(20), || {
        let f = edges(&cli);
        match present(&f, Some("envoy-b")) {
            Some(b) if b["state"] == "live" && b["applied_revision"] == f["revision"] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(envoy_b.get("/hello", Some(&k2.secret)).status, 401);

    // A stopped Envoy goes gone; restarted, it is a new edge with the same node id.
    envoy_a.stop_envoy();
    wait_for("envoy-a gone", Duration::from_secs(30), || {
        let f = edges(&cli);
        let a = by_node(&f, Some("envoy-a"));
        if a.len() == 1 && a[0]["state"] == "gone" {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    });
    let out = cli.run(&[
        "keys",
        "create",
        "--name",
        "while-a-is-gone",
        "--wait",
        "10",
    ]);
    assert!(
        out.ok && out.stdout.contains("applied by every edge (2)"),
        "{}",
        out.stdout
    );
    envoy_a.start_envoy();
    let restarted = wait_for("envoy-a back", Duration::from_secs(30), || {
        let f = edges(&cli);
        match present(&f, Some("envoy-a")) {
            Some(a) if a["state"] == "live" => Ok(f.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    let a_now = by_node(&restarted, Some("envoy-a"));
    assert_eq!(a_now.len(), 2, "{a_now:?}");
    let old = a_now
        .iter()
        .find(|e| e["edge_id"] == ids[0].as_str())
        .unwrap();
    let new = a_now
        .iter()
        .find(|e| e["edge_id"] != ids[0].as_str())
        .unwrap();
    assert_eq!(old["state"], "gone");
    assert_eq!(new["state"], "live");
    assert_eq!(new["node_cluster"], "keygate-e2e");
}
