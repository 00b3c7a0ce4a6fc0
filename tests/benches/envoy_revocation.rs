//! Revocation latency of record in real Envoy 1.40: from the revoke call to the moment every
//! worker's VM enforces the new revision, with long-poll (`envoy/envoy.yaml` as shipped) and with
//! the filter's defaults (polling every 500 ms).
//!
//! ```text
//! cargo bench -p keygate-e2e --bench envoy_revocation --profile dev
//! ```
//! A real `keygate serve` (SQLite) and Envoy running `envoy/envoy.yaml` with `--concurrency 4`;
//! Envoy's threads pinned to CPU 0, this process and the control plane to CPU 1.
//! `KEYGATE_BENCH_REVOCATIONS` (default 60) keys are issued and synced, then revoked one at a
//! time, a random 0–1,000 ms apart (so revocations land at every phase of the filter's polls and
//! timers).
//! For each, the clock starts before the `POST /v1/keys/{id}/revoke` call and stops when every
//! worker VM's revision gauge (`keygate.vm.<n>.keyset.revision`, set when that VM applies a
//! change) has passed the revision it held before; Envoy's admin is polled every millisecond.
//! After each configuration the revoked keys are checked to be refused on fresh connections
//! (so every worker denies them), which makes the gauge's word good.
//!
//! An A/B: `KEYGATE_BENCH_WASM_B=<other.wasm>` measures a second build in the same run (and
//! `KEYGATE_BENCH_WASM` replaces this build's module), alternated per configuration.
//!
//! The dynamic module (`envoy/envoy-module.yaml`, the same two configurations) keeps one set per
//! process, published to every worker at once, so its clock stops at the first request with the
//! revoked key (a new connection every millisecond) that is refused; eight more on new
//! connections must be refused too. `KEYGATE_BENCH_SHELLS=wasm` or `=module` measures one shell.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keygate_e2e::Api;
use keygate_e2e::envoy::{EDGE_KEY_ENV, EnvoyStack, LISTENER};
use keygate_e2e::native::{self, NativeEnvoy};
use keygate_e2e::stack::ServeProcess;
use keygate_e2e::unix_nanos;
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_testkit::bench::{env_usize, load_average, percentile};
use serde_json::{Value, json};

const WORKERS: usize = 4;
/// The per-VM revision gauges, as Envoy's `/stats` names them.
const REVISION_PREFIX: &str = "wasmcustom.keygate.vm.";
const REVISION_SUFFIX: &str = ".keyset.revision";

fn main() -> anyhow::Result<()> {
    let samples = env_usize("KEYGATE_BENCH_REVOCATIONS", 60);
    ensure!(samples >= 2, "KEYGATE_BENCH_REVOCATIONS must be at least 2");
    pin(std::process::id(), "1", false)?;
    println!(
        "== revocation latency in Envoy 1.40, --concurrency {WORKERS}, {samples} revocations per configuration; load average {}",
        load_average()
    );
    let module_a =
        std::env::var("KEYGATE_BENCH_WASM").unwrap_or_else(|_| KEYGATE_PLUGIN_WASM.into());
    let mut modules = vec![("Keygate", module_a)];
    if let Ok(b) = std::env::var("KEYGATE_BENCH_WASM_B") {
        modules.push(("Keygate B", b));
    }
    let configurations = [
        ("long-poll (envoy.yaml)", json!({})),
        (
            "defaults (poll every 500 ms)",
            json!({"long_poll_wait_s": null, "sync_interval_ms": null}),
        ),
    ];
    let shells = std::env::var("KEYGATE_BENCH_SHELLS").unwrap_or_else(|_| "wasm,module".into());
    let (wasm, native) = (shells.contains("wasm"), shells.contains("module"));
    ensure!(wasm || native, "KEYGATE_BENCH_SHELLS: wasm, module or both");
    let mut rows = Vec::new();
    for (config_name, overrides) in configurations {
        if native {
            let latencies = measure_module(overrides.clone(), samples)
                .with_context(|| format!("dynamic module, {config_name}"))?;
            let ms = |p: f64| percentile(&latencies, p / 100.0) as f64 / 1e3;
            let name = "module";
            println!(
                "{name:<10} {config_name:<30} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                ms(50.0),
                ms(99.0),
                ms(100.0)
            );
            rows.push((
                &"dynamic module",
                config_name,
                ms(50.0),
                ms(99.0),
                ms(100.0),
            ));
        }
        for (module_name, module) in modules.iter().filter(|_| wasm) {
            let latencies = measure(overrides.clone(), module, samples)
                .with_context(|| format!("{module_name}, {config_name}"))?;
            let ms = |p: f64| percentile(&latencies, p / 100.0) as f64 / 1e3;
            println!(
                "{module_name:<10} {config_name:<30} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                ms(50.0),
                ms(99.0),
                ms(100.0)
            );
            rows.push((module_name, config_name, ms(50.0), ms(99.0), ms(100.0)));
        }
    }
    println!("\n| build | configuration | p50 | p99 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for (module, config, p50, p99, max) in rows {
        println!("| {module} | {config} | {p50:.1} ms | {p99:.1} ms | {max:.1} ms |");
    }
    Ok(())
}

/// Revokes `samples` synced keys one by one; the microseconds from each call to every worker VM
/// enforcing it.
fn measure(overrides: Value, module: &str, samples: usize) -> anyhow::Result<Vec<u64>> {
    let mut stack = EnvoyStack::start(WORKERS, overrides);
    // This build's module started the stack; the one measured takes over.
    stack.stop_envoy();
    stack.use_module(module);
    let keys = stack.api.create_keys(samples, json!({"name": "revoked"}));
    stack.start_envoy();
    pin(stack.envoy().pid().context("no Envoy pid")?, "0", true)?;
    let last = keys.last().context("no key")?;
    stack.wait_status(
        "the keys synced",
        Duration::from_secs(30),
        "/hello",
        &last.secret,
        200,
    );
    let t = Instant::now();
    while revisions(&stack).map_or(true, |r| r.iter().any(|&v| v != r[0])) {
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "the workers did not all take up the set: {:?}",
            revisions(&stack)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut latencies = Vec::with_capacity(samples);
    for k in &keys {
        std::thread::sleep(Duration::from_millis(unix_nanos() % 1000));
        let before = revisions(&stack)?;
        let floor = before.iter().copied().max().context("no VM revision")?;
        ensure!(
            before.iter().all(|&r| r == floor),
            "the workers disagree before the revocation: {before:?}"
        );
        let t = Instant::now();
        stack.api.key_action(&k.id, "revoke");
        let api = t.elapsed();
        let mut first = None;
        loop {
            let now = revisions(&stack)?;
            if first.is_none() && now.iter().any(|&r| r > floor) {
                first = Some(t.elapsed());
            }
            if now.iter().all(|&r| r > floor) {
                if std::env::var_os("KEYGATE_BENCH_TRACE").is_some() {
                    eprintln!("api {api:?} first VM {first:?} all {:?}", t.elapsed());
                }
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("a worker still holds revision {floor} 10 s after the revocation");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(u64::try_from(t.elapsed().as_micros())?);
    }
    // The gauge's word checked by requests: every revoked key refused, on every worker.
    for k in keys.iter().step_by((samples / 5).max(1)) {
        stack.wait_status(
            "revoked everywhere",
            Duration::from_secs(2),
            "/hello",
            &k.secret,
            401,
        );
    }
    stack.shutdown();
    latencies.sort_unstable();
    Ok(latencies)
}

/// As [`measure`], for the dynamic module: the microseconds from each revoke call to the first
/// refused request with that key (one set per process: every worker refuses it from then on).
fn measure_module(overrides: Value, samples: usize) -> anyhow::Result<Vec<u64>> {
    // Started after this process was pinned to CPU 1: it inherits the pinning.
    let cp = ServeProcess::start_sqlite(&[]);
    let api = Api::new(&cp.url());
    let edge_key = api
        .create_key(json!({"name": "bench edge", "kind": "edge"}))
        .secret;
    let keys = api.create_keys(samples, json!({"name": "revoked"}));
    let url = cp.url();
    let envoy = NativeEnvoy::start_with_env(
        WORKERS,
        LISTENER,
        &[(EDGE_KEY_ENV, &edge_key)],
        |upstream| native::module_bootstrap(&url, upstream, &overrides),
    );
    pin(envoy.envoy.pid().context("no Envoy pid")?, "0", true)?;
    let last = keys.last().context("no key")?;
    let status = |secret: &str| {
        envoy
            .request("GET", "/hello", &[("x-api-key", secret)])
            .status
    };
    let t = Instant::now();
    while status(&last.secret) != 200 {
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "the keys did not sync"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut latencies = Vec::with_capacity(samples);
    for k in &keys {
        std::thread::sleep(Duration::from_millis(unix_nanos() % 1000));
        ensure!(
            status(&k.secret) == 200,
            "{} refused before its revocation",
            k.id
        );
        let t = Instant::now();
        api.key_action(&k.id, "revoke");
        loop {
            let st = status(&k.secret);
            if st == 401 {
                break;
            }
            ensure!(st == 200, "unexpected status {st}");
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{} still allowed 10 s after its revocation", k.id);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(u64::try_from(t.elapsed().as_micros())?);
        for _ in 0..8 {
            ensure!(status(&k.secret) == 401, "a worker still allows {}", k.id);
        }
    }
    latencies.sort_unstable();
    Ok(latencies)
}

/// Every worker VM's revision (the VMs that hold a set: Envoy's main-thread VM keeps none).
fn revisions(stack: &EnvoyStack) -> anyhow::Result<Vec<u64>> {
    let stats = stack.envoy().stats()?;
    let revs: Vec<u64> = stats
        .iter()
        .filter(|(name, _)| {
            name.strip_prefix(REVISION_PREFIX)
                .and_then(|rest| rest.strip_suffix(REVISION_SUFFIX))
                .is_some_and(|index| index.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|(_, &v)| v)
        .collect();
    ensure!(
        revs.len() == WORKERS,
        "{} VMs report a revision, expected one per worker ({WORKERS})",
        revs.len()
    );
    Ok(revs)
}

/// Pins process `pid` (with `all_threads`, every thread of it) to `cpus`.
fn pin(pid: u32, cpus: &str, all_threads: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new("taskset");
    if all_threads {
        cmd.arg("-a");
    }
    let status = cmd
        .args(["-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    ensure!(status.success(), "taskset failed: {status}");
    Ok(())
}
