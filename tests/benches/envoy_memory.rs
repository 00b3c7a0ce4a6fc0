//! Envoy's memory with Keygate's key set, of record: RSS with no key and with
//! `KEYGATE_BENCH_KEYS` keys (default 100,000) at `--concurrency` 1, 2 and 4, from a fresh start
//! and after `KEYGATE_BENCH_CHANGED` keys (default 100,000) were replaced while Envoy ran.
//!
//! ```text
//! cargo bench -p keygate-e2e --bench envoy_memory --profile dev
//! KEYGATE_BENCH_KEYS=1000000 cargo bench -p keygate-e2e --bench envoy_memory --profile dev
//! ```
//! Envoy runs `envoy/envoy.yaml` (long-poll) pinned to CPU 0, syncing from a local fake of the
//! control plane's key-set feed: a snapshot at revision 1, then, once the fresh figure is read,
//! one delta per 1,000 changed keys (1,000 removed, 1,000 new), which the filter's leader
//! fetches one after another while its followers follow. A figure is read once every worker's
//! VM reports the expected key count and revision, plus half a second. Besides `VmRSS`, each
//! row gives the worker VMs' linear memory (`keygate.vm.<n>.wasm.memory_bytes`: wasm memory
//! never shrinks, so this is each VM's high-water mark) and the set's own heap
//! (`keygate.vm.<n>.keyset.heap_bytes`), summed over the workers. `KEYGATE_BENCH_WASM` measures
//! another build of the filter (`keygate-plugin-wasm <path>` writes one).
//!
//! A second table gives the same figures for Keygate's pure core as an Envoy dynamic module
//! (`keygate-native-filter`): the same bootstrap with the module in the wasm filter's place, its
//! `control_plane_url` pointed at the same fake feed, which its sync thread (one per process)
//! long-polls with the edge key as the wasm leader does, fresh and after the same deltas. It
//! keeps one set per process. Its gauges (`keygate.keyset.keys`, `keygate.keyset.revision`,
//! `keygate.keyset.heap_bytes`) are set by its sync thread. Instead of the VMs' columns, it gives
//! the set's own heap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keygate_e2e::bench_envoy::{rss_bytes, start_pinned};
use keygate_e2e::envoy::{EDGE_KEY_ENV, bootstrap_with_module, plugin_configuration};
use keygate_e2e::fake_feed::FakeFeed;
use keygate_e2e::native;
use keygate_filter_core::sync::metrics::{HEAP_BYTES, KEYS, REVISION};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::wire::{Delta, KeyEntry, Snapshot};
use keygate_testkit::bench::{env_usize, key_set, load_average};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::json;

/// Keys replaced per delta.
const PER_DELTA: usize = 1_000;

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 100_000);
    let changed = env_usize("KEYGATE_BENCH_CHANGED", 100_000);
    ensure!(
        changed <= n && changed.is_multiple_of(PER_DELTA),
        "KEYGATE_BENCH_CHANGED must be a multiple of {PER_DELTA} and at most KEYGATE_BENCH_KEYS"
    );
    println!(
        "== Envoy 1.40 memory with Keygate: {n} keys, {changed} changed live; load average {}",
        load_average()
    );
    let t = Instant::now();
    let keys = key_set(n, |_, _| {}, |_| false)?.entries;
    let fresh = key_set(changed, |_, _| {}, |_| false)?.entries;
    let full = feed(&keys, &fresh)?;
    let empty = feed(&[], &[])?;
    println!(
        "keys generated and encoded in {:.1} s: snapshot {} bytes, {} deltas",
        t.elapsed().as_secs_f64(),
        full.snapshot().len(),
        full.delta_count()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let full_addr = rt.block_on(full.clone().serve())?;
    let empty_addr = rt.block_on(empty.clone().serve())?;

    println!(
        "\n| --concurrency | RSS, 0 keys | RSS, {n} keys | growth per key | after {changed} changed live | worker VMs' linear memory (fresh → changed) | key sets' heap |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for concurrency in [1, 2, 4] {
        let base = {
            let envoy = start(&empty_addr, concurrency)?;
            wait_for(&envoy, concurrency, 0, 1)?;
            rss_bytes(envoy.pid().context("no pid")?)?
        };
        full.publish(1);
        let envoy = start(&full_addr, concurrency)?;
        wait_for(&envoy, concurrency, n, 1)?;
        let pid = envoy.pid().context("no pid")?;
        let fresh_rss = rss_bytes(pid)?;
        let fresh_vm = vm_sum(&envoy, "wasm.memory_bytes")?;
        let heap = vm_sum(&envoy, "keyset.heap_bytes")?;
        let last = 1 + full.delta_count() as u64;
        full.publish(last);
        wait_for(&envoy, concurrency, n, last)?;
        let live_rss = rss_bytes(pid)?;
        let live_vm = vm_sum(&envoy, "wasm.memory_bytes")?;
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "| {concurrency} | {:.1} MB | {:.1} MB | {:.0} B | {:.1} MB ({:+.1} MB) | {:.1} → {:.1} MB | {:.1} MB |",
            mb(base),
            mb(fresh_rss),
            fresh_rss.saturating_sub(base) as f64 / n.max(1) as f64,
            mb(live_rss),
            (live_rss as f64 - fresh_rss as f64) / 1e6,
            mb(fresh_vm),
            mb(live_vm),
            mb(heap),
        );
    }

    // ---- the dynamic module: one set per process, synced by the module's own thread
    println!(
        "\n| --concurrency | dynamic module: RSS, 0 keys | RSS, {n} keys | growth per key | after {changed} changed live | the set's heap (fresh → changed) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for concurrency in [1, 2, 4] {
        let base = {
            let envoy = start_native(&empty_addr, concurrency)?;
            wait_for_native(&envoy, 0, 1)?;
            rss_bytes(envoy.pid().context("no pid")?)?
        };
        full.publish(1);
        let envoy = start_native(&full_addr, concurrency)?;
        wait_for_native(&envoy, n, 1)?;
        let pid = envoy.pid().context("no pid")?;
        let fresh_rss = rss_bytes(pid)?;
        let fresh_heap = native_stat(&envoy, HEAP_BYTES)?;
        let last = 1 + full.delta_count() as u64;
        full.publish(last);
        wait_for_native(&envoy, n, last)?;
        let live_rss = rss_bytes(pid)?;
        let live_heap = native_stat(&envoy, HEAP_BYTES)?;
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "| {concurrency} | {:.1} MB | {:.1} MB | {:.0} B | {:.1} MB ({:+.1} MB) | {:.1} → {:.1} MB |",
            mb(base),
            mb(fresh_rss),
            fresh_rss.saturating_sub(base) as f64 / n.max(1) as f64,
            mb(live_rss),
            (live_rss as f64 - fresh_rss as f64) / 1e6,
            mb(fresh_heap),
            mb(live_heap),
        );
    }
    Ok(())
}

/// Envoy running `envoy/envoy.yaml` with this build's filter, syncing from the feed at `feed`,
/// pinned to CPU 0. The upstream is never called.
fn start(feed: &str, concurrency: usize) -> anyhow::Result<Envoy> {
    let module = std::env::var("KEYGATE_BENCH_WASM").unwrap_or_else(|_| KEYGATE_PLUGIN_WASM.into());
    let bootstrap = bootstrap_with_module(feed, feed, &json!({}), &module);
    start_pinned(
        &bootstrap,
        &EnvoyOptions {
            concurrency,
            env: vec![(EDGE_KEY_ENV.to_owned(), "kg_edge_bench".to_owned())],
            ..EnvoyOptions::default()
        },
    )
}

/// The per-VM gauges `keygate.vm.<n>.<name>` of Envoy's stats, by VM index.
fn per_vm(envoy: &Envoy, name: &str) -> anyhow::Result<BTreeMap<u32, u64>> {
    let suffix = format!(".{name}");
    Ok(envoy
        .stats()?
        .into_iter()
        .filter_map(|(stat, v)| {
            let index = stat
                .strip_prefix("wasmcustom.keygate.vm.")?
                .strip_suffix(&suffix)?;
            Some((index.parse().ok()?, v))
        })
        .collect())
}

/// The sum of a per-VM gauge over the VMs that hold a set.
fn vm_sum(envoy: &Envoy, name: &str) -> anyhow::Result<u64> {
    let with_set = per_vm(envoy, "keyset.revision")?;
    Ok(per_vm(envoy, name)?
        .into_iter()
        .filter(|(i, _)| with_set.contains_key(i))
        .map(|(_, v)| v)
        .sum())
}

/// Waits until `workers` VMs hold `keys` keys at `revision`, then half a second more (for the
/// allocator to settle).
fn wait_for(envoy: &Envoy, workers: usize, keys: usize, revision: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let revisions = per_vm(envoy, "keyset.revision")?;
        let counts = per_vm(envoy, "keyset.keys")?;
        let done = revisions.len() == workers
            && revisions.values().all(|&r| r == revision)
            && revisions
                .keys()
                .all(|i| counts.get(i) == Some(&(keys as u64)));
        if done {
            std::thread::sleep(Duration::from_millis(500));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the workers hold revisions {revisions:?} and key counts {counts:?}; expected {workers} at revision {revision} with {keys} keys"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Envoy running `envoy/envoy.yaml` with the dynamic module in the wasm filter's place, synced
/// from the feed at `feed` (`control_plane_url`), pinned to CPU 0. The upstream is the feed
/// (never reached: the requests sent carry no key).
fn start_native(feed: &str, concurrency: usize) -> anyhow::Result<Envoy> {
    let wasm = bootstrap_with_module(feed, feed, &json!({}), KEYGATE_PLUGIN_WASM);
    let filter = native::synced_filter(&plugin_configuration(&wasm), &format!("http://{feed}"));
    let bootstrap = native::replace_wasm_filter(&wasm, filter);
    let mut options = native::options(concurrency);
    options
        .env
        .push((EDGE_KEY_ENV.to_owned(), "kg_edge_bench".to_owned()));
    start_pinned(&bootstrap, &options)
}

/// A module gauge of Envoy's stats (`dynamicmodulescustom.<name>`), `0` when absent.
fn native_stat(envoy: &Envoy, name: &str) -> anyhow::Result<u64> {
    Ok(envoy
        .stat(&format!("dynamicmodulescustom.{name}"))?
        .unwrap_or(0))
}

/// Waits until the module's one set holds `keys` keys at `revision` (its gauges in Envoy's
/// stats, which its sync thread sets), then half a second more (for the allocator to settle).
fn wait_for_native(envoy: &Envoy, keys: usize, revision: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = native_stat(envoy, REVISION)?;
        let k = native_stat(envoy, KEYS)?;
        if r == revision && k == keys as u64 {
            std::thread::sleep(Duration::from_millis(500));
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the module holds revision {r} with {k} keys; expected revision {revision} with {keys} keys"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A feed of `keys` as the snapshot and, per [`PER_DELTA`] keys of `fresh`, a delta that
/// removes as many of `keys` (in order) and adds those.
fn feed(keys: &[KeyEntry], fresh: &[KeyEntry]) -> anyhow::Result<Arc<FakeFeed>> {
    let mut entries = keys.to_vec();
    entries.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
    let snapshot = Snapshot {
        revision: 1,
        entries,
    }
    .encode()?;
    let deltas = fresh
        .chunks(PER_DELTA)
        .zip(keys.chunks(PER_DELTA))
        .enumerate()
        .map(|(i, (added, removed))| {
            Delta {
                base_revision: 1 + i as u64,
                revision: 2 + i as u64,
                upserts: added.to_vec(),
                removals: removed.iter().map(|e| e.digest).collect(),
            }
            .encode()
        })
        .collect::<Result<_, _>>()?;
    Ok(FakeFeed::new(snapshot, deltas))
}
