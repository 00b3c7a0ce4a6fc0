//! The filter in wasm, in the host harness, with 1,000,000 keys loaded: per-request cost of an
//! allowed request, an unknown key and a malformed key (median/p99), beside the harness's own cost
//! for the same requests measured in the same run (no-op filters); the time to deliver and apply
//! the 1M-key snapshot; and the VM's linear memory per key.
//!
//! Then a delta adds `KEYGATE_BENCH_OVERLAY` keys (default 4,000, fewer than the key set merges
//! at, so they stay in its overlay, as after any delta) and the requests are timed again.
//!
//! `cargo bench -p keygate-plugin-artifacts --bench wasm_decision` (`KEYGATE_BENCH_KEYS` changes
//! the size, `KEYGATE_BENCH_ROUNDS` the rounds of 1,000 requests per kind, default 20).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use keygate_host_harness::baseline::{self, Kind};
use keygate_host_harness::{CalloutReply, Cluster, Disposition, Harness, Plugin, Request};
use keygate_plugin_artifacts::{
    BENCH_FILTER_CONFIG, BenchKinds, KEYGATE_PLUGIN_WASM, keyset_reply,
};
use keygate_protocol::wire::{Delta, Snapshot};
use keygate_testkit::bench::{env_usize, key_set, load_average, median_p99, repo_key_set};

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gauge(h: &Harness, name: &str) -> u64 {
    h.metric(name).map_or(0, |m| m.value)
}

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    let rounds = env_usize("KEYGATE_BENCH_ROUNDS", 20);
    let overlay = env_usize("KEYGATE_BENCH_OVERLAY", 4_000);
    println!("load average at start: {}", load_average());
    let keys = repo_key_set(n)?;
    let (entries, secrets) = (keys.entries, keys.secrets);
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries,
        }
        .encode()?,
    );
    println!("keys: {n}; snapshot {} bytes", snapshot.len());

    // The same three request shapes for every filter: path, user-agent, one x-api-key.
    let [allowed, unknown, malformed] = BenchKinds::new(&secrets)?.requests();

    let plugin = Arc::new(Plugin::load_file(KEYGATE_PLUGIN_WASM)?);
    let body = snapshot.clone();
    // A delta waits here until the requests were timed with the snapshot alone.
    let delta: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let pending = delta.clone();
    let config = BENCH_FILTER_CONFIG.as_bytes();
    // the first call is answered 1 s after configure, so the empty filter's memory can be read first
    let mut h = Harness::builder_shared(plugin)
        .workers(1)
        .plugin_configuration(config.to_vec())
        .cluster(
            "keygate",
            Cluster::handler(move |req| {
                if req.header(":path") == Some("/v1/keyset") {
                    keyset_reply(body.to_vec()).after(Duration::from_secs(1))
                } else if let Some(body) = pending.lock().ok().and_then(|mut d| d.take()) {
                    keyset_reply(body)
                } else {
                    CalloutReply::status(304)
                }
            }),
        )
        .build()?;
    h.advance(Duration::from_millis(500));
    let mem_empty = gauge(&h, "keygate.wasm.memory_bytes");
    ensure!(mem_empty > 0, "the memory gauge was not reported");
    let t = Instant::now();
    h.advance(Duration::from_millis(600));
    let apply = t.elapsed();
    h.advance(Duration::from_millis(300));
    let keys = gauge(&h, "keygate.keyset.keys");
    ensure!(
        keys == n as u64,
        "the filter holds {keys} keys, expected {n}"
    );
    let mem_full = gauge(&h, "keygate.wasm.memory_bytes");
    let heap = gauge(&h, "keygate.keyset.heap_bytes");
    let grown = mem_full.saturating_sub(mem_empty);
    println!(
        "in wasm: snapshot of {n} keys delivered (copied into the guest) + decoded/applied + published to shared data in {:.3} s (wall, one harness advance)",
        apply.as_secs_f64()
    );
    println!(
        "in wasm: linear memory {mem_empty} → {mem_full} bytes: {:.1} B/key grown; {:.1} B/key beyond the {}-byte snapshot buffer held while applying; key set heap {heap} bytes = {:.1} B/key",
        grown as f64 / n as f64,
        grown.saturating_sub(snapshot.len() as u64) as f64 / n as f64,
        snapshot.len(),
        heap as f64 / n as f64,
    );

    let kinds = [
        (
            "allowed (parse + SHA-256 + lookup + scope + resource + identity headers)",
            &allowed,
            Disposition::Completed,
        ),
        (
            "unknown well-formed key → 401 (parse + SHA-256 + lookup miss)",
            &unknown,
            Disposition::LocalResponse,
        ),
        (
            "malformed key (bad checksum) → 401 (no lookup)",
            &malformed,
            Disposition::LocalResponse,
        ),
    ];
    time_kinds(&mut h, &kinds, rounds, &format!("{n} keys loaded"))?;

    // The same requests once a delta has put keys in the set's overlay.
    let added = key_set(overlay, |_, _| {}, |_| false)?;
    *delta.lock().map_err(|_| anyhow::anyhow!("delta lock"))? = Some(
        Delta {
            base_revision: 1,
            revision: 2,
            upserts: added.entries,
            removals: Vec::new(),
        }
        .encode()?,
    );
    h.advance(Duration::from_millis(1_000));
    let now_held = gauge(&h, "keygate.keyset.keys");
    ensure!(
        now_held == (n + overlay) as u64,
        "after the delta the filter holds {now_held} keys, expected {}",
        n + overlay
    );
    time_kinds(
        &mut h,
        &kinds,
        rounds,
        &format!("{n} keys + {overlay} from a delta (in the overlay)"),
    )?;
    // The filter adds its decisions to the host's counters on its timer tick.
    h.advance(Duration::from_millis(100));
    let allowed_n = gauge(&h, "keygate.decision.allow.allowed");
    let unknown_n = gauge(&h, "keygate.decision.deny.unknown_key");
    let malformed_n = gauge(&h, "keygate.decision.deny.malformed_key");
    println!(
        "decisions counted by the filter: allowed {allowed_n}, unknown_key {unknown_n}, malformed_key {malformed_n}"
    );
    let per_kind = (2 * (rounds + 1) * allowed.len()) as u64;
    ensure!(
        allowed_n >= per_kind && unknown_n == per_kind && malformed_n == per_kind,
        "the filter did not decide as expected (each kind should count {per_kind})"
    );
    println!("load average at end: {}", load_average());
    Ok(())
}

/// Times each kind under the filter and under the harness alone (no-op filters), in rounds
/// interleaved so that both see the same load (round 0 warms up and is not counted), and
/// prints the medians.
fn time_kinds(
    h: &mut Harness,
    kinds: &[(&str, &Vec<Request>, Disposition)],
    rounds: usize,
    label: &str,
) -> anyhow::Result<()> {
    let timed: Vec<Kind<'_>> = kinds
        .iter()
        .map(|(_, requests, expect)| Kind {
            requests,
            expect: *expect,
        })
        .collect();
    let timings = baseline::interleaved(h, &timed, rounds)?;
    let block = kinds[0].1.len();
    let paired = timings
        .filter
        .iter()
        .zip(&timings.harness_alone)
        .map(|(f, a)| baseline::own_part_spread(f, a, block).map(|s| s.median))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("no complete round was timed"))?;
    let filter: Vec<(u64, u64)> = timings.filter.into_iter().map(median_p99).collect();
    let base: Vec<(u64, u64)> = timings.harness_alone.into_iter().map(median_p99).collect();
    println!(
        "per request in the harness, {label}, {rounds} x {} requests per kind, each timed alone (full stream: context, request headers, decision, upstream or local reply, response, done, log, delete):",
        kinds[0].1.len()
    );
    println!(
        "  harness alone (no-op filters, same requests, rounds interleaved with the filter's): continue median {} ns (p99 {}); local 401 median {} / {} ns (p99 {} / {})",
        base[0].0, base[0].1, base[1].0, base[2].0, base[1].1, base[2].1
    );
    for (k, (label, ..)) in kinds.iter().enumerate() {
        println!(
            "  {label}: median {} ns, p99 {} ns; minus the harness alone: {} ns at the median; round by round (each block minus the harness-alone block after it): {} ns at the median of the rounds",
            filter[k].0,
            filter[k].1,
            filter[k].0 as i64 - base[k].0 as i64,
            paired[k]
        );
    }
    Ok(())
}
