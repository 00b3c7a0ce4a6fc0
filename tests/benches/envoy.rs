//! Figures of record in real Envoy 1.40 (V8): requests per second and per-request cost of one
//! Envoy worker with no filter, a no-op Wasm filter, Envoy's native `api_key_auth` holding the
//! same keys, and Keygate; and Envoy's memory with Keygate's key set loaded.
//!
//! ```text
//! cargo bench -p keygate-e2e --bench envoy
//! ```
//! One run holds every baseline. Envoy runs with `--concurrency 1` pinned to CPU 0, `wrk -t1
//! -c16` pinned to CPU 1, each configuration for `KEYGATE_BENCH_SECONDS` (default 5) after a 1 s
//! warm-up, the configurations alternated over `KEYGATE_BENCH_ROUNDS` rounds (default 3); the
//! median round is reported. Every request carries a random one of 10,000 valid keys out of
//! `KEYGATE_BENCH_KEYS` (default 100,000), to a `direct_response` route (no upstream); Keygate
//! and `api_key_auth` both hold every key. Keygate
//! syncs its set from a local fake of the control plane's key-set feed (one snapshot, then
//! `304`s), so the figures are the filter's, not the control plane's.
//!
//! An A/B of two builds of the filter in the same run: `KEYGATE_BENCH_WASM_B=<other.wasm>` adds
//! a fifth configuration, "Keygate B", alternated with the others, and `KEYGATE_BENCH_WASM`
//! replaces this build's module as "Keygate" (`keygate-plugin-wasm <path>` writes the module of
//! the checked-out source).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keygate_e2e::envoy::{envoy_yaml, plugin_configuration};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::wire::{CONTENT_TYPE, Snapshot};
use keygate_testkit::bench::{env_usize, key_set, load_average};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::{Value, json};

/// A filter in WebAssembly text exporting the callbacks Keygate's trimmed module exports (and a
/// bump allocator, reset per request), with `imports` and `data` added and `on_request` as the
/// body of `proxy_on_request_headers` before it continues the request.
fn filter_wat(imports: &str, data: &str, on_request: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  {data}
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $heap (i32.const 65536))
    {on_request}
    (i32.const 0))
  (func (export "proxy_on_delete") (param i32)))"#
    )
}

/// A filter that does nothing: each callback returns at once. Its cost over no filter is
/// Envoy's own price of a Wasm filter under V8.
fn noop_wat() -> String {
    filter_wat("", "", "")
}

/// The host calls Keygate makes for an allowed request, and nothing else: read the request's
/// header map (the host calls back into the VM to allocate it), remove the key's header, add the
/// three identity headers. Its cost over the no-op filter is the floor of Keygate's design in
/// this runtime: what no trim of the filter's own code can go below.
fn host_calls_wat() -> String {
    filter_wat(
        r#"(import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 1024) "x-api-key")
  (data (i32.const 1040) "x-keygate-key-id")
  (data (i32.const 1060) "key_0123456789abcdef0123456789abcdef")
  (data (i32.const 1100) "x-keygate-owner")
  (data (i32.const 1120) "owner-1")
  (data (i32.const 1130) "x-keygate-scopes")
  (data (i32.const 1150) "repo:read")"#,
        r#"(drop (call $pairs (i32.const 0) (i32.const 2000) (i32.const 2004)))
    (drop (call $remove (i32.const 0) (i32.const 1024) (i32.const 9)))
    (drop (call $add (i32.const 0) (i32.const 1040) (i32.const 16) (i32.const 1060) (i32.const 36)))
    (drop (call $add (i32.const 0) (i32.const 1100) (i32.const 15) (i32.const 1120) (i32.const 7)))
    (drop (call $add (i32.const 0) (i32.const 1130) (i32.const 16) (i32.const 1150) (i32.const 9)))"#,
    )
}

/// The wrk script: a GET of `/hello` with a random key of the file given after `--`.
const WRK_LUA: &str = r#"
local keys = {}
init = function(args)
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  math.randomseed(os.time())
end
request = function()
  return wrk.format("GET", "/hello", { ["x-api-key"] = keys[math.random(#keys)] })
end
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    NoFilter,
    NoopWasm,
    HostCalls,
    ApiKeyAuth,
    Keygate,
    KeygateB,
}

impl Setup {
    const ALL: [Setup; 6] = [
        Setup::NoFilter,
        Setup::NoopWasm,
        Setup::HostCalls,
        Setup::ApiKeyAuth,
        Setup::Keygate,
        Setup::KeygateB,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::NoFilter => "no filter",
            Setup::NoopWasm => "no-op wasm filter (V8)",
            Setup::HostCalls => "Keygate's host calls only",
            Setup::ApiKeyAuth => "Envoy's api_key_auth",
            Setup::Keygate => "Keygate",
            Setup::KeygateB => "Keygate B",
        }
    }
}

/// One wrk run: requests per second, p50 and p99 latency in microseconds, non-2xx answers.
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx: u64,
}

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 100_000);
    let rounds = env_usize("KEYGATE_BENCH_ROUNDS", 3);
    let seconds = env_usize("KEYGATE_BENCH_SECONDS", 5);
    ensure!(n >= 1, "KEYGATE_BENCH_KEYS must be at least 1");
    ensure!(
        std::thread::available_parallelism().map_or(1, |p| p.get()) >= 2,
        "needs two CPUs: Envoy on CPU 0, wrk on CPU 1"
    );
    println!(
        "== keygate in Envoy 1.40 ({n} keys, {rounds} rounds of {seconds} s per configuration); load average {}",
        load_average()
    );

    // ---- keys: the set, 10,000 of its secrets for the requests
    let t = Instant::now();
    let step = (n / 10_000).max(1);
    // Every secret: api_key_auth holds them all; the requests use every `step`-th.
    let keys = key_set(n, |_, _| {}, |_| true)?;
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries: {
                let mut e = keys.entries.clone();
                e.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
                e
            },
        }
        .encode()?,
    );
    let dir = tempfile::tempdir()?;
    let keys_file = dir.path().join("keys.txt");
    let mut f = std::fs::File::create(&keys_file)?;
    for (secret, _) in keys.secrets.iter().step_by(step) {
        writeln!(f, "{secret}")?;
    }
    drop(f);
    let lua = dir.path().join("keys.lua");
    std::fs::write(&lua, WRK_LUA)?;
    let noop = dir.path().join("noop.wasm");
    std::fs::write(&noop, wat::parse_str(noop_wat())?)?;
    let host_calls = dir.path().join("host_calls.wasm");
    std::fs::write(&host_calls, wat::parse_str(host_calls_wat())?)?;
    println!(
        "keys: {n} generated in {:.1} s, snapshot {} bytes, {} request keys",
        t.elapsed().as_secs_f64(),
        snapshot.len(),
        keys.secrets.len().div_ceil(step)
    );

    // ---- the fake key-set feed
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let feed_addr = rt.block_on(start_feed(snapshot.clone()))?;
    let api_keys: Vec<Value> = keys
        .secrets
        .iter()
        .map(|(s, i)| json!({"key": s, "client": format!("client-{i}")}))
        .collect();

    // ---- throughput, configurations alternated per round
    let module_a = std::env::var_os("KEYGATE_BENCH_WASM").map_or_else(
        || std::path::PathBuf::from(KEYGATE_PLUGIN_WASM),
        std::path::PathBuf::from,
    );
    let module_b = std::env::var_os("KEYGATE_BENCH_WASM_B").map(std::path::PathBuf::from);
    let mut loads: BTreeMap<Setup, Vec<Load>> = BTreeMap::new();
    for round in 1..=rounds {
        for setup in Setup::ALL {
            let module = match (setup, &module_b) {
                (Setup::KeygateB, None) => continue,
                (Setup::KeygateB, Some(b)) => b.clone(),
                (Setup::HostCalls, _) => host_calls.clone(),
                _ => module_a.clone(),
            };
            let bootstrap = bootstrap(setup, &feed_addr, &noop, &api_keys, &module);
            let envoy = start_pinned(&bootstrap, 1)?;
            if matches!(setup, Setup::Keygate | Setup::KeygateB) {
                wait_for_keys(&envoy, n)?;
            }
            let addr = envoy.listener_addr("bench")?;
            wrk(&addr.to_string(), &lua, &keys_file, 1)?;
            let load = wrk(&addr.to_string(), &lua, &keys_file, seconds)?;
            if setup != Setup::NoFilter && setup != Setup::NoopWasm {
                ensure!(
                    load.non_2xx == 0,
                    "{}: {} answers were not 2xx: keys were refused",
                    setup.name(),
                    load.non_2xx
                );
            }
            println!(
                "round {round}: {:<26} {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs",
                setup.name(),
                load.rps,
                load.p50_us,
                load.p99_us
            );
            loads.entry(setup).or_default().push(load);
            drop(envoy);
        }
    }
    println!("\n| configuration | req/s | per request | p50 | p99 |");
    println!("| --- | --- | --- | --- | --- |");
    let mut median = BTreeMap::new();
    for (setup, mut runs) in loads {
        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let m = runs[runs.len() / 2];
        println!(
            "| {} | {:.0} | {:.2} µs | {:.0} µs | {:.0} µs |",
            setup.name(),
            m.rps,
            1e6 / m.rps,
            m.p50_us,
            m.p99_us
        );
        median.insert(setup, m);
    }
    let per = |s: Setup| 1e6 / median[&s].rps;
    println!(
        "\nKeygate's own part over the no-op wasm filter: {:.2} µs per request (target ≤ 3 µs)",
        per(Setup::Keygate) - per(Setup::NoopWasm)
    );
    println!(
        "Keygate's host calls alone over the no-op wasm filter: {:.2} µs (the floor of this design)",
        per(Setup::HostCalls) - per(Setup::NoopWasm)
    );
    println!(
        "api_key_auth's own part over no filter: {:.2} µs; the no-op wasm filter over no filter: {:.2} µs",
        per(Setup::ApiKeyAuth) - per(Setup::NoFilter),
        per(Setup::NoopWasm) - per(Setup::NoFilter)
    );
    println!(
        "Keygate's throughput ÷ api_key_auth's: {:.2}× (target ≥ 0.85×)",
        median[&Setup::Keygate].rps / median[&Setup::ApiKeyAuth].rps
    );
    if median.contains_key(&Setup::KeygateB) {
        println!(
            "Keygate B − Keygate: {:+.2} µs per request",
            per(Setup::KeygateB) - per(Setup::Keygate)
        );
    }

    // ---- memory: Envoy's RSS with Keygate holding no key and all of them
    println!("\n| --concurrency | RSS, 0 keys | RSS, {n} keys | growth per key |");
    println!("| --- | --- | --- | --- |");
    let empty = Arc::new(
        Snapshot {
            revision: 1,
            entries: Vec::new(),
        }
        .encode()?,
    );
    let empty_feed = rt.block_on(start_feed(empty))?;
    for concurrency in [1, 2, 4] {
        let rss = |feed: &str, keys: usize| -> anyhow::Result<u64> {
            let module = std::path::Path::new(KEYGATE_PLUGIN_WASM);
            let envoy = start_pinned(
                &bootstrap(Setup::Keygate, feed, &noop, &[], module),
                concurrency,
            )?;
            wait_for_keys(&envoy, keys)?;
            // The followers pick the set up on their next tick.
            std::thread::sleep(Duration::from_millis(500));
            rss_bytes(envoy.pid().context("no pid")?)
        };
        let base = rss(&empty_feed, 0)?;
        let full = rss(&feed_addr, n)?;
        println!(
            "| {concurrency} | {:.1} MB | {:.1} MB | {:.0} B |",
            base as f64 / 1e6,
            full as f64 / 1e6,
            full.saturating_sub(base) as f64 / n as f64
        );
    }
    Ok(())
}

/// A bootstrap: listener `bench` on a free loopback port, a `direct_response` route, the
/// filter of `setup` in front, and the `keygate_control_plane` cluster at `feed`.
fn bootstrap(
    setup: Setup,
    feed: &str,
    noop: &std::path::Path,
    api_keys: &[Value],
    module: &std::path::Path,
) -> Value {
    let mut filters = Vec::new();
    match setup {
        Setup::NoFilter => {}
        Setup::NoopWasm | Setup::HostCalls => filters.push(json!({
            "name": "noop",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "noop", "root_id": "noop",
                    "vm_config": {"vm_id": "noop", "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": if setup == Setup::HostCalls { module } else { noop }}}}
                }
            }
        })),
        Setup::ApiKeyAuth => filters.push(json!({
            "name": "envoy.filters.http.api_key_auth",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": api_keys,
                "key_sources": [{"header": "x-api-key"}]
            }
        })),
        Setup::Keygate | Setup::KeygateB => {
            // envoy/envoy.yaml's filter and plugin configuration, with its own control plane.
            let shipped = envoy_yaml();
            let mut configuration = plugin_configuration(&shipped);
            configuration["authority"] = json!(feed);
            configuration["edge_key"] = json!("kg_edge_bench");
            if let Some(c) = configuration.as_object_mut() {
                c.remove("edge_key_env");
            }
            filters.push(json!({
                "name": "keygate",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": "keygate", "root_id": "keygate", "failure_policy": "FAIL_RELOAD",
                        "vm_config": {"vm_id": "keygate", "runtime": "envoy.wasm.runtime.v8",
                            "code": {"local": {"filename": module}}},
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": configuration.to_string()
                        }
                    }
                }
            }));
        }
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let (host, port) = feed.rsplit_once(':').unwrap_or((feed, "0"));
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
                        }]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": [{
                "name": "keygate_control_plane",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "keygate_control_plane", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": host, "port_value": port.parse::<u16>().unwrap_or(0)}}}
                }]}]}
            }]
        }
    })
}

/// Starts Envoy and pins all its threads to CPU 0.
fn start_pinned(bootstrap: &Value, concurrency: usize) -> anyhow::Result<Envoy> {
    let envoy = Envoy::start(
        &bootstrap.to_string(),
        &EnvoyOptions {
            concurrency,
            ..EnvoyOptions::default()
        },
    )?;
    let pid = envoy.pid().context("no pid")?;
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    ensure!(status.success(), "taskset failed: {status}");
    Ok(envoy)
}

/// Waits until the filter's leader reports `n` keys (the process-wide gauge).
fn wait_for_keys(envoy: &Envoy, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = envoy.stat("wasmcustom.keygate.keyset.keys")?;
        if keys == Some(n as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the filter holds {keys:?} keys, expected {n}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wrk -t1 -c16 -d<seconds>s --latency` pinned to CPU 1.
fn wrk(
    addr: &str,
    lua: &std::path::Path,
    keys: &std::path::Path,
    seconds: usize,
) -> anyhow::Result<Load> {
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c16", "--latency"])
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(lua)
        .arg(format!("http://{addr}/hello"))
        .arg("--")
        .arg(keys)
        .output()
        .context("wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "wrk failed: {text}");
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let rps = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in {text}"))?;
    let us = |v: Option<String>| -> anyhow::Result<f64> {
        let v = v.with_context(|| format!("no latency percentile in {text}"))?;
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let num: f64 = num.parse()?;
        Ok(match unit {
            "us" => num,
            "ms" => num * 1e3,
            "s" => num * 1e6,
            _ => bail!("latency unit {unit:?}"),
        })
    };
    let non_2xx = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Load {
        rps,
        p50_us: us(field("50%"))?,
        p99_us: us(field("99%"))?,
        non_2xx,
    })
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// A fake of the control plane's feed on a free loopback port: `GET /v1/keyset` answers
/// `snapshot` (revision 1) without `since`, else `304` after the long-poll wait; `POST
/// /v1/usage` is acknowledged.
async fn start_feed(snapshot: Arc<Vec<u8>>) -> anyhow::Result<String> {
    use axum::extract::Query;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};

    let app = axum::Router::new()
        .route(
            "/v1/keyset",
            get(move |Query(q): Query<BTreeMap<String, String>>| {
                let snapshot = snapshot.clone();
                async move {
                    if q.contains_key("since") {
                        let wait: u64 = q.get("wait").and_then(|w| w.parse().ok()).unwrap_or(0);
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    (
                        [
                            (header::CONTENT_TYPE, CONTENT_TYPE),
                            (header::HeaderName::from_static("x-keygate-revision"), "1"),
                        ],
                        snapshot.to_vec(),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/v1/usage",
            post(|| async { axum::Json(json!({"applied": true})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}
