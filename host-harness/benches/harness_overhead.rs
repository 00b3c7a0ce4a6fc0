//! Harness cost per request for filters that only continue: full stream lifecycle (context
//! create, request headers, response headers, done, log, delete) with headers in and out; and a
//! filter that only makes the host calls of an allowed Keygate request.
//! Run: `cargo bench -p keygate-host-harness --bench harness_overhead`.

use std::time::Instant;

use keygate_harness_test_artifacts::SDK_FILTER;
use keygate_host_harness::baseline::NOOP_CONTINUE_WAT;
use keygate_host_harness::{Disposition, Harness, Plugin, Request};

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn measure(label: &str, plugin: Plugin, config: &str) {
    let mut harness = Harness::builder(plugin)
        .plugin_configuration(config.as_bytes().to_vec())
        .build()
        .expect("configure");
    let request = Request::get("/bench")
        .header("user-agent", "bench")
        .header("x-api-key", "kg_live_0123456789abcdef")
        .header("accept", "*/*");
    for _ in 0..2_000 {
        let out = harness.run_request(request.clone()).expect("run");
        assert_eq!(out.disposition, Disposition::Completed);
    }
    let rounds = 5;

    let per_round = 20_000;
    let mut best = f64::MAX;
    let mut total = 0.0;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..per_round {
            let out = harness
                .run_request_taken_on(0, request.clone())
                .expect("run");
            assert_eq!(out.disposition, Disposition::Completed);
        }
        let ns = start.elapsed().as_nanos() as f64 / per_round as f64;
        best = best.min(ns);
        total += ns;
    }
    println!(
        "{label}: {:.0} ns/request mean, {best:.0} ns/request best ({rounds} x {per_round} requests)",
        total / rounds as f64
    );
}

/// The host calls the Keygate filter makes on an allowed request, and nothing else: the
/// harness's share of the filter's own cost.
const HOSTCALLS_WAT: &str = r#"
(module
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 2048) "x-api-key")
  (data (i32.const 2064) "x-keygate-key-id")
  (data (i32.const 2080) "x-keygate-owner")
  (data (i32.const 2096) "x-keygate-scopes")
  (data (i32.const 2128) "01JD3Y9Q2V8F6T4R1N0M7K5H3G")
  (data (i32.const 2160) "owner-1234")
  (data (i32.const 2176) "repo:read repo:write")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $pairs (i32.const 0) (i32.const 16) (i32.const 20)))
    (drop (call $now (i32.const 24)))
    (drop (call $remove (i32.const 0) (i32.const 2048) (i32.const 9)))
    (drop (call $add (i32.const 0) (i32.const 2064) (i32.const 16) (i32.const 2128) (i32.const 26)))
    (drop (call $add (i32.const 0) (i32.const 2080) (i32.const 15) (i32.const 2160) (i32.const 10)))
    (drop (call $add (i32.const 0) (i32.const 2096) (i32.const 16) (i32.const 2176) (i32.const 20)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

fn main() {
    measure(
        "no-op WAT filter (harness only)",
        Plugin::load(NOOP_CONTINUE_WAT.as_bytes()).expect("wat"),
        "",
    );
    measure(
        "proxy-wasm SDK filter, mode continue",
        Plugin::load_file(SDK_FILTER).expect("sdk filter"),
        "continue",
    );
    measure(
        "WAT filter making an allowed request's host calls (header map, clock, remove, 3 adds)",
        Plugin::load(HOSTCALLS_WAT.as_bytes()).expect("wat"),
        "",
    );
}
