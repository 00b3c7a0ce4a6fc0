//! A/B of two builds of the filter in one process: both load the same 1,000,000-key snapshot and
//! their requests are timed in alternating blocks, so both see the same machine (this machine
//! changes speed by half within seconds, which separate runs cannot tell from a change).
//!
//! `cargo run --release -p keygate-plugin-artifacts --example ab -- a.wasm b.wasm`
//! (`KEYGATE_BENCH_KEYS`, `KEYGATE_BENCH_ROUNDS` as for the `wasm_decision` bench;
//! `KEYGATE_AB_KIND=allowed`, `unknown` or `malformed` times one kind only).

use std::sync::Arc;

use anyhow::ensure;
use keygate_host_harness::baseline::time_each;
use keygate_host_harness::{Disposition, Plugin};
use keygate_plugin_artifacts::{BenchKinds, synced_bench_harness};
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{env_usize, median_p99, repo_key_set};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    ensure!(paths.len() == 2, "usage: ab <a.wasm> <b.wasm>");
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    let rounds = env_usize("KEYGATE_BENCH_ROUNDS", 40);
    let keys = repo_key_set(n)?;
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries: keys.entries,
        }
        .encode()?,
    );
    let [allowed, unknown, malformed] = BenchKinds::new(&keys.secrets)?.requests();
    let mut harnesses = Vec::new();
    for path in &paths {
        harnesses.push(synced_bench_harness(
            Plugin::load_file(path)?,
            snapshot.clone(),
        )?);
    }
    // `KEYGATE_AB_KIND=allowed` (or `unknown`, `malformed`) times one kind only, say under `perf`.
    let only = std::env::var("KEYGATE_AB_KIND").ok();
    let kinds: Vec<_> = [
        ("allowed", &allowed, Disposition::Completed),
        ("unknown", &unknown, Disposition::LocalResponse),
        ("malformed", &malformed, Disposition::LocalResponse),
    ]
    .into_iter()
    .filter(|(label, ..)| only.as_deref().is_none_or(|o| o == *label))
    .collect();
    ensure!(
        !kinds.is_empty(),
        "KEYGATE_AB_KIND must be allowed, unknown or malformed"
    );
    let mut samples = vec![vec![Vec::new(); kinds.len()]; 2];
    for round in 0..=rounds {
        for (k, (_, requests, expect)) in kinds.iter().enumerate() {
            for (which, h) in harnesses.iter_mut().enumerate() {
                let mut warm = Vec::new();
                let out = if round == 0 {
                    &mut warm
                } else {
                    &mut samples[which][k]
                };
                time_each(h, requests, *expect, out)?;
            }
        }
    }
    for (which, path) in paths.iter().enumerate() {
        let figures: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(k, (label, ..))| {
                let (median, _) = median_p99(std::mem::take(&mut samples[which][k]));
                format!("{label} {median} ns")
            })
            .collect();
        println!("{path}: {}", figures.join(", "));
    }
    Ok(())
}
