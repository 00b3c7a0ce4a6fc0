//! What an Envoy operator sees of the filter in real Envoy 1.40: Prometheus metrics with the
//! documented names and labels, per-VM gauges that mean something, log lines, and
//! `envoy --mode validate` on `envoy/envoy.yaml` without the edge key's secret.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use keygate_e2e::envoy::{EnvoyStack, bootstrap};
use keygate_testkit::envoy::envoy_binary;
use serde_json::json;

/// `name{labels} value` lines of a Prometheus exposition whose name starts with `prefix`.
fn samples(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn prometheus_gets_the_documented_names_labels_and_one_gauge_per_vm() {
    let stack = EnvoyStack::start(2, json!({}));
    let keys = stack.api.create_keys(3, json!({"name": "caller"}));
    stack.wait_status(
        "synced",
        Duration::from_secs(10),
        "/hello",
        &keys[2].secret,
        200,
    );
    stack.get("/hello", Some("kg_live_not_a_key"));
    // Decisions reach Envoy's counters on the filter's next tick.
    keygate_e2e::stack::wait_for(
        "the decision counted",
        Duration::from_secs(5),
        || match stack.stat("wasmcustom.keygate.decision.deny.malformed_key") {
            0 => Err("not yet".to_owned()),
            n => Ok(n),
        },
    );
    let text = stack
        .envoy()
        .prometheus()
        .unwrap_or_else(|e| panic!("prometheus: {e}"));
    let decisions = samples(&text, "keygate_decision_");
    assert!(
        decisions
            .keys()
            .any(|s| s == r#"keygate_decision_allow{keygate_reason="allowed"}"#),
        "{decisions:?}"
    );
    assert!(
        decisions
            .get(r#"keygate_decision_deny{keygate_reason="malformed_key"}"#)
            .is_some_and(|v| *v >= 1.0),
        "{decisions:?}"
    );
    // Each VM that holds a set reports it under its own label: every worker has all 3 keys.
    stack.wait_status(
        "synced",
        Duration::from_secs(10),
        "/hello",
        &keys[0].secret,
        200,
    );
    let per_vm = wait_per_vm(&stack, "keygate_keyset_keys{keygate_vm=");
    let full = per_vm.values().filter(|v| **v == 3.0).count();
    assert!(full >= 2, "per-VM key counts: {per_vm:?}");
    // Only the two workers' VMs hold a set: not the main thread's (nor the canary's).
    assert_eq!(per_vm.len(), 2, "VMs holding a key set: {per_vm:?}");
    let revisions = samples(&text, "keygate_keyset_revision{keygate_vm=");
    assert!(!revisions.is_empty(), "{text}");
    let memory = samples(&text, "keygate_wasm_memory_bytes{keygate_vm=");
    assert!(memory.values().all(|v| *v > 1e6), "{memory:?}");
    // The process's own view (its leader's) has no label.
    assert!(text.contains("\nkeygate_keyset_keys{} 3"), "{text}");
}

fn wait_per_vm(stack: &EnvoyStack, prefix: &str) -> BTreeMap<String, f64> {
    keygate_e2e::stack::wait_for("per-VM gauges", Duration::from_secs(5), || {
        let text = stack.envoy().prometheus().map_err(|e| e.to_string())?;
        let s = samples(&text, prefix);
        if s.values().filter(|v| **v == 3.0).count() >= 2 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
}

#[test]
fn log_lines_carry_one_prefix_and_a_down_control_plane_is_unreachable() {
    let mut stack = EnvoyStack::start(1, json!({"sync_interval_ms": 200}));
    let k = stack.api.create_key(json!({"name": "caller"}));
    stack.wait_status("synced", Duration::from_secs(10), "/hello", &k.secret, 200);
    stack.control_plane.kill();
    keygate_e2e::stack::wait_for("a failed sync", Duration::from_secs(10), || {
        let n = stack.stat("wasmcustom.keygate.sync.failure.unreachable");
        if n >= 1 { Ok(()) } else { Err(format!("{n}")) }
    });
    assert_eq!(stack.stat("wasmcustom.keygate.sync.failure.status"), 0);
    // (Envoy writes its log file every 50 ms here.)
    let logs = keygate_e2e::stack::wait_for("the failure logged", Duration::from_secs(5), || {
        let logs = stack.envoy_logs();
        if logs.contains("key-set sync failed (unreachable)") {
            Ok(logs)
        } else {
            Err("not yet".to_owned())
        }
    });
    let ours: Vec<&str> = logs.lines().filter(|l| l.contains("wasm log")).collect();
    assert!(
        ours.iter().any(|l| l.contains("configured (tick")),
        "{logs}"
    );
    assert!(
        ours.iter()
            .any(|l| l.contains("key-set sync failed (unreachable)"))
    );
    for line in &ours {
        assert!(
            !line.contains("keygate: keygate:"),
            "doubled prefix: {line}"
        );
        assert!(
            !line.contains(&stack.edge_key),
            "the edge key in a log line"
        );
    }
    stack.shutdown();
}

#[test]
fn envoy_validates_envoy_yaml_without_the_edge_key() {
    // The shipped file with this build's module path (validation loads the VM and configures
    // it), and no KEYGATE_EDGE_KEY in the environment, as in a CI job that holds no secrets.
    let b = bootstrap("127.0.0.1:8080", "127.0.0.1:8081", &json!({}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, b.to_string()).unwrap();
    let out = Command::new(envoy_binary().unwrap_or_else(|e| panic!("{e}")))
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .env_remove("KEYGATE_EDGE_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validate failed:\n{text}");
    assert!(text.contains("OK"), "{text}");
}
