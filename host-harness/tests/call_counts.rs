//! `HarnessBuilder::count_calls`: exact host calls (by import) and VM entries (by export), per
//! worker, for filters whose calls are known: a hand-written one, and the official-SDK test
//! filter (whose counts are the SDK's, pinned here). With the crate feature `call-hook` every
//! count is also checked against wasmtime's own tally.

use std::time::Duration;

use keygate_harness_test_artifacts::SDK_FILTER;
use keygate_host_harness::{
    CallCounts, Disposition, Harness, HarnessBuilder, Plugin, Request, UpstreamResponse,
};

/// Reads the request headers (one allocation callback), adds two headers, logs once; sets a
/// 100 ms tick that reads the clock.
const KNOWN_WAT: &str = r#"
(module
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "x-oneyesx-two")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (global.get $heap)
    (global.set $heap (i32.add (global.get $heap) (local.get $size))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $period (i32.const 100)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (drop (call $now (i32.const 0))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $pairs (i32.const 0) (i32.const 0) (i32.const 4)))
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 21) (i32.const 3)))
    (drop (call $add (i32.const 0) (i32.const 24) (i32.const 5) (i32.const 21) (i32.const 3)))
    (drop (call $log (i32.const 2) (i32.const 16) (i32.const 5)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_delete") (param i32)))
"#;

fn known(workers: usize) -> Harness {
    Harness::builder(Plugin::load(KNOWN_WAT.as_bytes()).unwrap())
        .workers(workers)
        .count_calls(true)
        .build()
        .unwrap()
}

fn sdk(mode: &str) -> HarnessBuilder {
    Harness::builder(Plugin::load_file(SDK_FILTER).unwrap())
        .plugin_configuration(mode.as_bytes().to_vec())
        .count_calls(true)
}

/// `(name, count)` pairs as the maps of [`CallCounts`].
fn map(pairs: &[(&str, u64)]) -> std::collections::BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Asserts the counts (and, with the feature `call-hook`, that wasmtime saw as many crossings:
/// over a window in which the guest's memory did not grow, which is a libcall to wasmtime).
#[track_caller]
fn assert_counts(got: &CallCounts, host_calls: &[(&str, u64)], vm_entries: &[(&str, u64)]) {
    assert_eq!(got.host_calls, map(host_calls), "host calls");
    assert_eq!(got.vm_entries, map(vm_entries), "VM entries");
    assert_cross_checked(got);
}

#[track_caller]
fn assert_cross_checked(got: &CallCounts) {
    if cfg!(feature = "call-hook") {
        let tally = got
            .wasmtime
            .expect("wasmtime's tally with the feature call-hook");
        assert_eq!(
            tally.calling_host,
            got.host_call_total(),
            "wasmtime's host calls"
        );
        assert_eq!(
            tally.calling_wasm,
            got.vm_entry_total(),
            "wasmtime's VM entries"
        );
    } else {
        assert_eq!(got.wasmtime, None);
    }
}

#[test]
fn a_known_filter_is_counted_call_for_call() {
    let mut h = known(1);
    // Start-up: the root context, configure (no `_initialize`, no `proxy_on_vm_start` exported:
    // a host skips what a module does not export).
    assert_counts(
        &h.call_counts(),
        &[("proxy_set_tick_period_milliseconds", 1)],
        &[("proxy_on_context_create", 1), ("proxy_on_configure", 1)],
    );
    h.reset_call_counts();
    assert!(h.call_counts().is_empty());

    let out = h
        .run_request(Request::get("/a").header("x-k", "v"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::Completed);
    assert_eq!(out.request_header("x-one"), Some("yes"));
    let one = h.call_counts();
    assert_counts(
        &one,
        &[
            ("proxy_add_header_map_value", 2),
            ("proxy_get_header_map_pairs", 1),
            ("proxy_log", 1),
        ],
        &[
            ("proxy_on_context_create", 1),
            // called back from inside proxy_get_header_map_pairs
            ("proxy_on_memory_allocate", 1),
            ("proxy_on_request_headers", 1),
            ("proxy_on_response_headers", 1),
            ("proxy_on_delete", 1),
        ],
    );
    assert_eq!((one.host_call_total(), one.vm_entry_total()), (4, 5));
    assert_eq!(one.host_call("proxy_log"), 1);
    assert_eq!(one.host_call("proxy_http_call"), 0);
    assert_eq!(one.vm_entry("proxy_on_request_headers"), 1);

    // Counts add up request after request; a tick is one entry and one clock read.
    for _ in 0..9 {
        h.run_request(Request::get("/b")).unwrap();
    }
    h.advance(Duration::from_millis(100));
    let ten = h.call_counts();
    assert_eq!(ten.host_call("proxy_add_header_map_value"), 20);
    assert_eq!(ten.vm_entry("proxy_on_memory_allocate"), 10);
    assert_eq!(ten.host_call("proxy_get_current_time_nanoseconds"), 1);
    assert_eq!(ten.vm_entry("proxy_on_tick"), 1);
    assert_eq!(
        (ten.host_call_total(), ten.vm_entry_total()),
        (10 * 4 + 1, 10 * 5 + 1)
    );
    assert_cross_checked(&ten);
}

#[test]
fn counts_are_per_worker_and_the_harness_sums_them() {
    let mut h = known(3);
    h.reset_call_counts();
    h.run_request_on(1, Request::get("/a")).unwrap();
    h.run_request_on(1, Request::get("/a")).unwrap();
    h.advance(Duration::from_millis(250)); // two ticks on every worker
    let tick = |n: u64| {
        vec![
            ("proxy_get_current_time_nanoseconds", n),
            ("proxy_on_tick", n),
        ]
    };
    for worker in [0, 2] {
        let c = h.worker(worker).unwrap().call_counts();
        assert_counts(&c, &tick(2)[..1], &tick(2)[1..]);
    }
    let busy = h.worker(1).unwrap().call_counts();
    assert_eq!(busy.vm_entry("proxy_on_request_headers"), 2);
    assert_eq!(busy.vm_entry("proxy_on_tick"), 2);
    assert_eq!((busy.host_call_total(), busy.vm_entry_total()), (10, 12));
    let all = h.call_counts();
    assert_eq!(all.vm_entry("proxy_on_tick"), 6);
    assert_eq!(all.vm_entry("proxy_on_request_headers"), 2);
    assert_eq!((all.host_call_total(), all.vm_entry_total()), (14, 16));
    assert_cross_checked(&all);
}

#[test]
fn without_count_calls_nothing_is_counted() {
    let mut h = Harness::builder(Plugin::load(KNOWN_WAT.as_bytes()).unwrap())
        .build()
        .unwrap();
    let out = h.run_request(Request::get("/a")).unwrap();
    assert_eq!(out.request_header("x-two"), Some("yes"));
    assert_eq!(h.call_counts(), CallCounts::default());
    // The same module counts in another harness of the same process (linked again, counting).
    let plugin = std::sync::Arc::new(Plugin::load(KNOWN_WAT.as_bytes()).unwrap());
    let mut plain = Harness::builder_shared(plugin.clone()).build().unwrap();
    let mut counting = Harness::builder_shared(plugin)
        .count_calls(true)
        .build()
        .unwrap();
    plain.run_request(Request::get("/a")).unwrap();
    counting.run_request(Request::get("/a")).unwrap();
    assert!(plain.call_counts().is_empty());
    assert_eq!(counting.call_counts().host_call_total(), 1 + 4);
}

#[test]
fn the_sdk_filter_reading_and_editing_headers() {
    let mut h = sdk("headers").build().unwrap();
    // Start-up: `_initialize`, the root context, vm_start, configure (which reads the two
    // configurations, one of them empty: no allocation) and its log line.
    assert_counts(
        &h.call_counts(),
        &[("proxy_get_buffer_bytes", 2), ("proxy_log", 1)],
        &[
            ("_initialize", 1),
            ("proxy_on_configure", 1),
            ("proxy_on_context_create", 1),
            ("proxy_on_memory_allocate", 1),
            ("proxy_on_vm_start", 1),
        ],
    );
    h.reset_call_counts();
    let out = h
        .run_request(
            Request::get("/p")
                .header("x-replace", "old")
                .upstream(UpstreamResponse::status(200).body("up")),
        )
        .unwrap();
    assert_eq!(out.request_header("x-added"), Some("yes"));
    // The filter (`test-filters/sdk-filter`, mode `headers`): on the request headers a get
    // (`:path`), an add, three sets and a removal, the whole map; on the response headers two
    // sets; in `on_log` two gets, a set and a debug line. Every get of a value or a map hands
    // data to the guest: one allocation callback each. The SDK exports every callback, so the
    // response body, done and log are entered too.
    assert_counts(
        &h.call_counts(),
        &[
            ("proxy_add_header_map_value", 1),
            ("proxy_get_header_map_pairs", 1),
            ("proxy_get_header_map_value", 3),
            ("proxy_log", 1),
            ("proxy_remove_header_map_value", 1),
            ("proxy_replace_header_map_value", 6),
        ],
        &[
            ("proxy_on_context_create", 1),
            ("proxy_on_delete", 1),
            ("proxy_on_done", 1),
            ("proxy_on_log", 1),
            ("proxy_on_memory_allocate", 4),
            ("proxy_on_request_headers", 1),
            ("proxy_on_response_body", 1),
            ("proxy_on_response_headers", 1),
        ],
    );
}

#[test]
fn the_sdk_filter_in_wasi_mode_counts_its_wasi_imports() {
    let mut h = sdk("wasi")
        .env_var("HARNESS_TEST_VAR", "v")
        .build()
        .unwrap();
    // The first request reads the environment and draws the hash keys (then cached).
    h.run_request(Request::get("/w")).unwrap();
    h.reset_call_counts();
    let out = h.run_request(Request::get("/w")).unwrap();
    assert_eq!(out.request_header("x-env"), Some("v"));
    // `println!` and `eprintln!` are a `fd_write` each, `SystemTime::now` a `clock_time_get`.
    assert_counts(
        &h.call_counts(),
        &[
            ("proxy_get_current_time_nanoseconds", 1),
            ("proxy_get_header_map_value", 1),
            ("proxy_replace_header_map_value", 3),
            ("wasi_snapshot_preview1.clock_time_get", 1),
            ("wasi_snapshot_preview1.fd_write", 2),
        ],
        &[
            ("proxy_on_context_create", 1),
            ("proxy_on_delete", 1),
            ("proxy_on_done", 1),
            ("proxy_on_log", 1),
            ("proxy_on_memory_allocate", 1),
            ("proxy_on_request_headers", 1),
            ("proxy_on_response_headers", 1),
        ],
    );
}

#[test]
fn the_sdk_filter_on_its_tick_on_two_workers() {
    let mut h = sdk("ticks").workers(2).build().unwrap();
    h.advance(Duration::from_millis(100));
    h.reset_call_counts();
    h.advance(Duration::from_millis(100));
    // Per worker and tick: the shared counter's read (and its value handed over) and
    // compare-and-swap write, a metric defined and incremented.
    for worker in 0..2 {
        assert_counts(
            &h.worker(worker).unwrap().call_counts(),
            &[
                ("proxy_define_metric", 1),
                ("proxy_get_shared_data", 1),
                ("proxy_increment_metric", 1),
                ("proxy_set_shared_data", 1),
            ],
            &[("proxy_on_memory_allocate", 1), ("proxy_on_tick", 1)],
        );
    }
    assert_eq!(h.shared_data("ticks").unwrap().0, b"4");
}

#[test]
fn counts_go_on_across_the_rebuild_after_a_trap() {
    let mut h = sdk("trap").build().unwrap();
    h.run_request(Request::get("/ok")).unwrap();
    h.reset_call_counts();
    let out = h
        .run_request(Request::get("/boom").header("x-panic", "1"))
        .unwrap();
    assert_eq!(out.disposition, Disposition::FailedClosed);
    assert_eq!(h.worker(0).unwrap().rebuilds(), 1);
    // The trapped stream (a get, its value, the panic's log line; no done, log or delete: the
    // instance is gone), then the new instance's start-up.
    let c = h.call_counts();
    assert_eq!(
        c.host_calls,
        map(&[
            ("proxy_get_buffer_bytes", 2),
            ("proxy_get_header_map_value", 1),
            ("proxy_log", 2),
        ])
    );
    assert_eq!(
        c.vm_entries,
        map(&[
            ("_initialize", 1),
            ("proxy_on_configure", 1),
            ("proxy_on_context_create", 2),
            ("proxy_on_memory_allocate", 2),
            ("proxy_on_request_headers", 1),
            ("proxy_on_vm_start", 1),
        ])
    );
}
