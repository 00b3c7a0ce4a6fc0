//! Harness cost per request for filters that only continue: full stream lifecycle (context
//! create, request headers, response headers, done, log, delete) with headers in and out.
//! Run: `cargo bench -p keygate-host-harness --bench harness_overhead`.

use std::time::Instant;

use keygate_harness_test_artifacts::SDK_FILTER;
use keygate_host_harness::baseline::NOOP_CONTINUE_WAT;
use keygate_host_harness::{Disposition, Harness, Plugin, Request};

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
            let out = harness.run_request(request.clone()).expect("run");
            assert_eq!(out.disposition, Disposition::Completed);
            harness.take_outcome(out.id);
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
}
