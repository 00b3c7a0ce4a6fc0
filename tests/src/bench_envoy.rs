//! Scaffolding of the benchmarks in real Envoy: Envoy pinned to CPU 0, `wrk` pinned to CPU 1,
//! Envoy's RSS and CPU time, and the proxy-wasm filters in WebAssembly text (the no-op, and
//! Keygate's host calls alone).

use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::{Value, json};

/// The wrk script: a GET of `/hello` with a random key of the file given after `--`.
pub const WRK_LUA: &str = r#"
local keys = {}
init = function(args)
  for line in io.lines(args[1]) do keys[#keys + 1] = line end
  math.randomseed(os.time())
end
request = function()
  return wrk.format("GET", "/hello", { ["x-api-key"] = keys[math.random(#keys)] })
end
"#;

/// A proxy-wasm filter in WebAssembly text that does nothing: it exports the callbacks
/// Keygate's trimmed module exports (and a bump allocator), each returning at once. Its cost
/// over no filter is Envoy's own price of a Wasm filter under V8 (`benches/envoy.rs`'s no-op).
pub fn noop_wat() -> String {
    noop_with("", "", "")
}

/// [`noop_wat`] with `imports` and `data` added and `on_request` as the body of
/// `proxy_on_request_headers` before it continues the request.
fn noop_with(imports: &str, data: &str, on_request: &str) -> String {
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

/// The host calls Keygate makes for an allowed request, and nothing else: read the request's
/// header map (the host calls back into the VM to allocate it), remove the key's header, add the
/// three identity headers. Its cost over the no-op filter is the floor of Keygate's design in
/// this runtime: what no trim of the filter's own code can go below.
pub fn host_calls_wat() -> String {
    noop_with(
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

/// One wrk run: requests per second, p50 and p99 latency in microseconds, non-2xx answers.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Answers that were not 2xx or 3xx.
    pub non_2xx: u64,
}

/// Starts Envoy on `bootstrap` with `options` and pins all its threads to CPU 0.
///
/// # Errors
/// Envoy did not start, or `taskset` failed.
pub fn start_pinned(bootstrap: &Value, options: &EnvoyOptions) -> anyhow::Result<Envoy> {
    let envoy = Envoy::start(&bootstrap.to_string(), options)?;
    let pid = envoy.pid().context("no pid")?;
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    ensure!(status.success(), "taskset failed: {status}");
    Ok(envoy)
}

/// `wrk -t1 -c16 -d<seconds>s --latency` pinned to CPU 1, with the script `lua` and its key
/// file `keys`.
///
/// # Errors
/// wrk failed or its output could not be read.
pub fn wrk(
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
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .with_context(|| format!("no request count in {text}"))?;
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
        requests,
        rps,
        p50_us: us(field("50%"))?,
        p99_us: us(field("99%"))?,
        non_2xx,
    })
}

/// The resident set size of process `pid`, in bytes.
///
/// # Errors
/// `/proc/<pid>/status` unreadable or without `VmRSS`.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// The CPU time process `pid` has run, all its threads, in nanoseconds (the first field of each
/// `/proc/<pid>/task/<tid>/schedstat`). Its growth over a load divided by the requests served is
/// the process's CPU per request: unlike requests per second, it does not move when other work
/// on the machine takes the CPU from the process (a shared or noisy machine), only when the
/// process's own work per request does (caches and frequency aside).
///
/// # Errors
/// `/proc/<pid>/task` unreadable.
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(&path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("{}: {text:?}", path.display()))?;
        }
    }
    Ok(total)
}

/// The benches' bootstrap: one listener `bench` on a free loopback port whose `virtual_host`
/// answers (a `direct_response` route, see [`direct_response_host`]) behind `http_filters`,
/// `clusters` beside it, and the admin interface; as `envoy/envoy.yaml`, the key's header with
/// an inline slot (its `inline_headers`, for every configuration alike) and Envoy's limit on an
/// HTTP client's answer raised (a snapshot of a million keys, 60 MB, exceeds the default 32 MiB).
pub fn bench_bootstrap(
    virtual_host: Value,
    http_filters: Vec<Value>,
    clusters: Vec<Value>,
) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "inline_headers": crate::envoy::envoy_yaml()["inline_headers"].clone(),
        "layered_runtime": {"layers": [{"name": "keygate", "static_layer": {
            "http.async_response_buffer_limit": 268_435_456
        }}]},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [virtual_host]},
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
}

/// A virtual host answering every request `200 ok` itself (no upstream).
pub fn direct_response_host() -> Value {
    json!({
        "name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
    })
}
