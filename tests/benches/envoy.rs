//! Figures of record in real Envoy 1.40, in one run: requests per second, per-request cost
//! and Envoy's CPU time per request of one Envoy worker with no filter, the no-op wasm filter
//! (V8), Keygate's host calls alone in wasm, the no-op dynamic module, Keygate's callbacks alone
//! in a dynamic module (and with Keygate's decision made but its edits not), Envoy's native
//! `api_key_auth` holding the same keys (as configured by default, and doing Keygate's job on an
//! allowed request: the key hidden, the caller forwarded), Envoy's `ext_authz`
//! asking Keygate's forward-auth endpoint, Keygate's wasm filter and Keygate's pure core as an
//! Envoy dynamic module (`keygate-native-filter`, a prototype shell).
//!
//! ```text
//! cargo bench -p keygate-e2e --bench envoy --profile dev
//! KEYGATE_BENCH_KEYS=1000000 cargo bench -p keygate-e2e --bench envoy --profile dev
//! ```
//! Envoy with `--concurrency 1` pinned to CPU 0, `wrk -t1 -c16` pinned to CPU 1, each
//! configuration for `KEYGATE_BENCH_SECONDS` (default 5) after a 1 s warm-up, the configurations
//! alternated over `KEYGATE_BENCH_ROUNDS` rounds (default 3), the median round reported. Beside
//! requests per second, Envoy's own CPU time per request (all its threads, from
//! `/proc/<pid>/task/*/schedstat`): other work on the machine moves it less than throughput,
//! though it still moves it (shared caches, a busy SMT sibling). Every request carries a random
//! one of 10,000 valid keys out of `KEYGATE_BENCH_KEYS` (default 100,000), to a
//! `direct_response` route. Differences and ratios between two configurations are also given
//! paired: taken within each round, where the two ran back to back, then their median over the
//! rounds (the machine's drift between rounds cancels).
//!
//! - Keygate's wasm filter syncs from a local fake of the key-set feed (one snapshot, then
//!   `304`s), so its figures are the filter's; the dynamic module reads the same snapshot from a
//!   file when Envoy starts; `api_key_auth` holds every key.
//! - `ext_authz` asks a real `keygate serve --forward-auth-config` (the filter's configuration,
//!   SQLite) on CPU 1 beside `wrk`, over `envoy/ext-authz.yaml`'s filter and cluster. Its keys
//!   are issued through the API, so it holds `KEYGATE_BENCH_EXT_AUTHZ_KEYS` (default 2,000) of
//!   them, not the whole set: its lookup is a hash probe whose cost does not depend on the size.
//! - `KEYGATE_BENCH_SETUPS` (comma-separated: `none`, `noop-wasm`, `host-calls-wasm`,
//!   `host-calls-shared-wasm`, `noop-native`, `host-calls-native`, `decide-native`, `api-key-auth`,
//!   `api-key-auth-forwarding`, `ext-authz`, `keygate-wasm`,
//!   `keygate-wasm-b`, `keygate-native`, `keygate-wasm-limited`, `keygate-native-limited`) runs
//!   only those. The `-limited` ones serve the same keys, each with one rate limit of
//!   1,000,000,000 per hour (never trips): the cost of counting one limit.
//! - `host-calls-shared-wasm` (issue 23's key set in shared data, before it is built): Keygate's
//!   host calls plus one `proxy_get_shared_data` of a pseudo-random one of 65,536 buckets that
//!   its leader VM wrote at start, sized for `KEYGATE_BENCH_SHARED_KEYS` keys (default
//!   `KEYGATE_BENCH_KEYS`) of 60 bytes each (`keygate_e2e::bench_shared_data`).
//! - `KEYGATE_BENCH_RATE_LIMIT_HEADERS=1` turns the filters' `rate_limit_headers` on and gives
//!   the route `envoy/envoy.yaml`'s `response_headers_to_add` (how the wasm filter's fields
//!   reach the response): with the `-limited` setups, the cost of sending the two fields.
//! - An A/B of two builds of the wasm filter in the same run: `KEYGATE_BENCH_WASM_B=<other.wasm>`
//!   adds "Keygate B", and `KEYGATE_BENCH_WASM` replaces this build's module as "Keygate"
//!   (`keygate-plugin-wasm <path>` writes the module of the checked-out source).
//! - The same for two builds of the dynamic module: `KEYGATE_BENCH_NATIVE_B=<directory>` (holding
//!   another build's `libkeygate_native_filter.so`) adds "Keygate B, dynamic module"
//!   (`keygate-native-b`), the same configuration with Envoy's module search path set to it.
//!
//! Memory is `benches/envoy_memory.rs`'s; revocation latency `benches/envoy_revocation.rs`'s. The
//! dynamic module comes from `keygate-native-filter-artifacts`, whose build script builds it with
//! the `release` profile whatever this bench's profile.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keygate_e2e::bench_envoy::{
    Load, WRK_LUA, cpu_ns, host_calls_wat, noop_wat, start_pinned, wrk,
};
use keygate_e2e::bench_shared_data::{
    BUCKETS, BUCKETS_GAUGE, BucketSource, RECORD_BYTES, shared_set_wat,
};
use keygate_e2e::envoy::{envoy_yaml, plugin_configuration};
use keygate_e2e::fake_feed::FakeFeed;
use keygate_e2e::stack::ServeProcess;
use keygate_e2e::{ADMIN_TOKEN, bench_envoy, ext_authz, native};
use keygate_native_filter_artifacts::SEARCH_PATH_ENV;
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::policy::{LimitPool, RateLimit};
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{env_usize, key_set, load_average};
use keygate_testkit::envoy::Envoy;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    NoFilter,
    NoopWasm,
    HostCallsWasm,
    HostCallsSharedWasm,
    NoopNative,
    HostCallsNative,
    DecideNative,
    ApiKeyAuth,
    ApiKeyAuthForwarding,
    ExtAuthz,
    KeygateWasm,
    KeygateWasmB,
    KeygateNative,
    KeygateNativeB,
    KeygateWasmLimited,
    KeygateNativeLimited,
}

impl Setup {
    const ALL: [Setup; 16] = [
        Setup::NoFilter,
        Setup::NoopWasm,
        Setup::HostCallsWasm,
        Setup::HostCallsSharedWasm,
        Setup::NoopNative,
        Setup::HostCallsNative,
        Setup::DecideNative,
        Setup::ApiKeyAuth,
        Setup::ApiKeyAuthForwarding,
        Setup::ExtAuthz,
        Setup::KeygateWasm,
        Setup::KeygateWasmB,
        Setup::KeygateNative,
        Setup::KeygateNativeB,
        Setup::KeygateWasmLimited,
        Setup::KeygateNativeLimited,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::NoFilter => "no filter",
            Setup::NoopWasm => "no-op wasm filter (V8)",
            Setup::HostCallsWasm => "wasm, Keygate's host calls only",
            Setup::HostCallsSharedWasm => "wasm, host calls + 1 shared-data bucket",
            Setup::NoopNative => "no-op dynamic module",
            Setup::HostCallsNative => "module, Keygate's callbacks only",
            Setup::DecideNative => "module, decision + callbacks only",
            Setup::ApiKeyAuth => "Envoy's api_key_auth",
            Setup::ApiKeyAuthForwarding => "api_key_auth, forwarding + hiding",
            Setup::ExtAuthz => "ext_authz → forward-auth",
            Setup::KeygateWasm => "Keygate, wasm (V8)",
            Setup::KeygateWasmB => "Keygate B, wasm (V8)",
            Setup::KeygateNative => "Keygate, dynamic module",
            Setup::KeygateNativeB => "Keygate B, dynamic module",
            Setup::KeygateWasmLimited => "Keygate, wasm, 1 rate limit",
            Setup::KeygateNativeLimited => "Keygate, module, 1 rate limit",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Setup::NoFilter => "none",
            Setup::NoopWasm => "noop-wasm",
            Setup::HostCallsWasm => "host-calls-wasm",
            Setup::HostCallsSharedWasm => "host-calls-shared-wasm",
            Setup::NoopNative => "noop-native",
            Setup::HostCallsNative => "host-calls-native",
            Setup::DecideNative => "decide-native",
            Setup::ApiKeyAuth => "api-key-auth",
            Setup::ApiKeyAuthForwarding => "api-key-auth-forwarding",
            Setup::ExtAuthz => "ext-authz",
            Setup::KeygateWasm => "keygate-wasm",
            Setup::KeygateWasmB => "keygate-wasm-b",
            Setup::KeygateNative => "keygate-native",
            Setup::KeygateNativeB => "keygate-native-b",
            Setup::KeygateWasmLimited => "keygate-wasm-limited",
            Setup::KeygateNativeLimited => "keygate-native-limited",
        }
    }

    /// Whether every request it answers must pass (the configurations that check keys).
    fn checks_keys(self) -> bool {
        matches!(
            self,
            Setup::ApiKeyAuth
                | Setup::HostCallsSharedWasm
                | Setup::ApiKeyAuthForwarding
                | Setup::ExtAuthz
                | Setup::KeygateWasm
                | Setup::KeygateWasmB
                | Setup::KeygateNative
                | Setup::KeygateNativeB
                | Setup::KeygateWasmLimited
                | Setup::KeygateNativeLimited
        )
    }

    /// Whether its keys each carry one rate limit (high enough never to trip).
    fn limited(self) -> bool {
        matches!(
            self,
            Setup::KeygateWasmLimited | Setup::KeygateNativeLimited
        )
    }
}

/// One measured load and Envoy's CPU time per request during it, in µs.
#[derive(Debug, Clone, Copy)]
struct Run {
    load: Load,
    cpu_us: f64,
}

/// The files and addresses every configuration is built from.
struct Fixture {
    feed: String,
    /// The feed of the same keys, each with one rate limit (1,000,000,000 per hour).
    feed_limited: String,
    noop_wasm: PathBuf,
    host_calls_wasm: PathBuf,
    /// The host calls plus one `proxy_get_shared_data` of a bucket (`bench_shared_data`).
    host_calls_shared_wasm: PathBuf,
    keygate_wasm: PathBuf,
    keygate_wasm_b: Option<PathBuf>,
    /// Another build of the dynamic module: the directory holding its library.
    keygate_native_b: Option<PathBuf>,
    snapshot_file: PathBuf,
    snapshot_file_limited: PathBuf,
    api_keys: Vec<Value>,
    /// The forward-auth control plane's address and the edge key Envoy presents to it.
    forward_auth: Option<(String, String)>,
}

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 100_000);
    let rounds = env_usize("KEYGATE_BENCH_ROUNDS", 3);
    let seconds = env_usize("KEYGATE_BENCH_SECONDS", 5);
    let setups: Vec<Setup> = match std::env::var("KEYGATE_BENCH_SETUPS") {
        Ok(list) => {
            let mut chosen = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match Setup::ALL.iter().find(|s| s.key() == name) {
                    Some(s) => chosen.push(*s),
                    None => bail!("KEYGATE_BENCH_SETUPS: unknown configuration {name:?}"),
                }
            }
            chosen
        }
        Err(_) => Setup::ALL.to_vec(),
    };
    let keygate_wasm = std::env::var_os("KEYGATE_BENCH_WASM")
        .map_or_else(|| PathBuf::from(KEYGATE_PLUGIN_WASM), PathBuf::from);
    let keygate_wasm_b = std::env::var_os("KEYGATE_BENCH_WASM_B").map(PathBuf::from);
    let keygate_native_b = std::env::var_os("KEYGATE_BENCH_NATIVE_B").map(PathBuf::from);
    let setups: Vec<Setup> = setups
        .into_iter()
        .filter(|&s| s != Setup::KeygateWasmB || keygate_wasm_b.is_some())
        .filter(|&s| s != Setup::KeygateNativeB || keygate_native_b.is_some())
        .collect();
    ensure!(n >= 1, "KEYGATE_BENCH_KEYS must be at least 1");
    ensure!(
        std::thread::available_parallelism().map_or(1, |p| p.get()) >= 2,
        "needs two CPUs: Envoy on CPU 0, wrk on CPU 1"
    );
    println!(
        "== Keygate's shells in Envoy 1.40 ({n} keys, {rounds} rounds of {seconds} s per configuration); load average {}",
        load_average()
    );

    // ---- keys: the set, 10,000 of its secrets for the requests
    let t = Instant::now();
    let step = (n / 10_000).max(1);
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
    // The same keys, each with one rate limit that never trips: what one limit costs.
    let snapshot_limited = Snapshot {
        revision: 1,
        entries: {
            let mut e = keys.entries.clone();
            for entry in &mut e {
                entry.policy.limits = vec![RateLimit {
                    name: "hourly".into(),
                    limit: 1_000_000_000,
                    window_s: 3600,
                    pool: LimitPool::Key,
                }];
            }
            e.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
            e
        },
    }
    .encode()?;
    let dir = tempfile::tempdir()?;
    let snapshot_file_limited = dir.path().join("keyset-limited.bin");
    std::fs::write(&snapshot_file_limited, &snapshot_limited)?;
    let keys_file = dir.path().join("keys.txt");
    let mut f = std::fs::File::create(&keys_file)?;
    for (secret, _) in keys.secrets.iter().step_by(step) {
        writeln!(f, "{secret}")?;
    }
    drop(f);
    let lua = dir.path().join("keys.lua");
    std::fs::write(&lua, WRK_LUA)?;
    let noop_wasm = dir.path().join("noop.wasm");
    std::fs::write(&noop_wasm, wat::parse_str(noop_wat())?)?;
    let host_calls_wasm = dir.path().join("host_calls.wasm");
    std::fs::write(&host_calls_wasm, wat::parse_str(host_calls_wat())?)?;
    // The buckets of shared data for `KEYGATE_BENCH_SHARED_KEYS` keys (default: the bench's).
    let shared_keys = env_usize("KEYGATE_BENCH_SHARED_KEYS", n);
    let host_calls_shared_wasm = dir.path().join("host_calls_shared.wasm");
    std::fs::write(
        &host_calls_shared_wasm,
        wat::parse_str(shared_set_wat(BucketSource::Generated {
            keys: shared_keys as u64,
            record_bytes: RECORD_BYTES,
        }))?,
    )?;
    println!(
        "shared data: {BUCKETS} buckets of {:.1} records ({:.0} bytes) on average, for {shared_keys} keys",
        shared_keys as f64 / f64::from(BUCKETS),
        shared_keys as f64 * RECORD_BYTES as f64 / f64::from(BUCKETS)
    );
    let snapshot_file = dir.path().join("keyset.bin");
    std::fs::write(&snapshot_file, snapshot.as_slice())?;
    println!(
        "keys: {n} generated in {:.1} s, snapshot {} bytes, {} request keys",
        t.elapsed().as_secs_f64(),
        snapshot.len(),
        keys.secrets.len().div_ceil(step)
    );

    // ---- the fake key-set feed (the wasm filter's)
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let feed = rt.block_on(FakeFeed::new(snapshot.to_vec(), Vec::new()).serve())?;
    let feed_limited = rt.block_on(FakeFeed::new(snapshot_limited, Vec::new()).serve())?;
    // ---- forward-auth: a real control plane, its keys issued through the API
    let forward_auth = if setups.contains(&Setup::ExtAuthz) {
        let count = env_usize("KEYGATE_BENCH_EXT_AUTHZ_KEYS", 2_000);
        let t = Instant::now();
        let fa = rt.block_on(ForwardAuth::start(count, dir.path()))?;
        let mut f = std::fs::File::create(dir.path().join("ext_authz_keys.txt"))?;
        for secret in &fa.secrets {
            writeln!(f, "{secret}")?;
        }
        println!(
            "forward-auth: keygate serve with {count} keys issued in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Some(fa)
    } else {
        None
    };
    let ext_authz_keys = dir.path().join("ext_authz_keys.txt");
    let fixture = Fixture {
        feed,
        feed_limited,
        noop_wasm,
        host_calls_wasm,
        host_calls_shared_wasm,
        keygate_wasm,
        keygate_wasm_b,
        keygate_native_b,
        snapshot_file: snapshot_file.clone(),
        snapshot_file_limited,
        forward_auth: forward_auth
            .as_ref()
            .map(|fa| (fa.process.addr().to_string(), fa.edge_key.clone())),
        api_keys: if setups.contains(&Setup::ApiKeyAuth)
            || setups.contains(&Setup::ApiKeyAuthForwarding)
        {
            keys.secrets
                .iter()
                .map(|(s, i)| json!({"key": s, "client": format!("client-{i}")}))
                .collect()
        } else {
            Vec::new()
        },
    };
    drop(keys);

    // ---- throughput, configurations alternated per round
    let mut loads: BTreeMap<Setup, Vec<Run>> = BTreeMap::new();
    for round in 1..=rounds {
        for &setup in &setups {
            let t = Instant::now();
            let mut options = native::options(1);
            if let (Setup::KeygateNativeB, Some(dir)) = (setup, &fixture.keygate_native_b) {
                options.env.retain(|(name, _)| name != SEARCH_PATH_ENV);
                options
                    .env
                    .push((SEARCH_PATH_ENV.to_owned(), dir.display().to_string()));
            }
            if let Some((_, edge_key)) = &fixture.forward_auth {
                options
                    .env
                    .push((ext_authz::EDGE_KEY_ENV.to_owned(), edge_key.clone()));
            }
            let envoy = start_pinned(&bootstrap(setup, &fixture), &options)?;
            if matches!(
                setup,
                Setup::KeygateWasm | Setup::KeygateWasmB | Setup::KeygateWasmLimited
            ) {
                wait_for_wasm_keys(&envoy, n)?;
            }
            if setup == Setup::HostCallsSharedWasm {
                wait_for_buckets(&envoy)?;
            }
            let request_keys = if setup == Setup::ExtAuthz {
                &ext_authz_keys
            } else {
                &keys_file
            };
            let ready_s = t.elapsed().as_secs_f64();
            let addr = envoy.listener_addr("bench")?.to_string();
            let pid = envoy.pid().context("no pid")?;
            wrk(&addr, &lua, request_keys, 1)?;
            let cpu_before = cpu_ns(pid)?;
            let load = wrk(&addr, &lua, request_keys, seconds)?;
            let cpu_us = (cpu_ns(pid)? - cpu_before) as f64 / 1e3 / load.requests.max(1) as f64;
            if setup.checks_keys() {
                ensure!(
                    load.non_2xx == 0,
                    "{}: {} answers were not 2xx: keys were refused",
                    setup.name(),
                    load.non_2xx
                );
            }
            println!(
                "round {round}: {:<26} {:>9.0} req/s  Envoy CPU {cpu_us:>6.2} µs/req  p50 {:>6.0} µs  p99 {:>6.0} µs  (ready in {ready_s:.1} s)",
                setup.name(),
                load.rps,
                load.p50_us,
                load.p99_us
            );
            loads.entry(setup).or_default().push(Run { load, cpu_us });
            drop(envoy);
        }
    }
    println!(
        "\n| configuration | req/s | per request (1 / req/s) | Envoy CPU per request | p50 | p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut median = BTreeMap::new();
    let mut cpu = BTreeMap::new();
    let paired = paired_ratios(&loads);
    for (&setup, runs) in &loads {
        let mut runs = runs.clone();
        // Each column's median round, independently.
        let mut cpus: Vec<f64> = runs.iter().map(|r| r.cpu_us).collect();
        cpus.sort_by(f64::total_cmp);
        let c = cpus[cpus.len() / 2];
        runs.sort_by(|a, b| a.load.rps.total_cmp(&b.load.rps));
        let m = runs[runs.len() / 2].load;
        println!(
            "| {} | {:.0} | {:.2} µs | {c:.2} µs | {:.0} µs | {:.0} µs |",
            setup.name(),
            m.rps,
            1e6 / m.rps,
            m.p50_us,
            m.p99_us
        );
        median.insert(setup, m);
        cpu.insert(setup, c);
    }
    let per = |s: Setup| median.get(&s).map(|m| 1e6 / m.rps);
    // The difference within each round (the two ran back to back), its median over the rounds:
    // per request, and Envoy's CPU per request.
    let paired_difference = |a: Setup, b: Setup| -> Option<(f64, f64, usize)> {
        let (ra, rb) = (loads.get(&a)?, loads.get(&b)?);
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let wall = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| 1e6 / x.load.rps - 1e6 / y.load.rps);
        let cpu = ra.iter().zip(rb).map(|(x, y)| x.cpu_us - y.cpu_us);
        Some((
            median(wall.collect()),
            median(cpu.collect()),
            ra.len().min(rb.len()),
        ))
    };
    let over = |what: &str, a: Setup, b: Setup| {
        if let (Some(x), Some(y)) = (per(a), per(b)) {
            let cpu = match (cpu.get(&a), cpu.get(&b)) {
                (Some(ca), Some(cb)) => format!("; Envoy CPU {:+.2} µs", ca - cb),
                _ => String::new(),
            };
            println!("{what}: {:+.2} µs per request{cpu}", x - y);
        }
        if let Some((wall, cpu, rounds)) = paired_difference(a, b) {
            println!(
                "  paired per round: {wall:+.2} µs per request; Envoy CPU {cpu:+.2} µs (median of {rounds} rounds)"
            );
        }
    };
    println!();
    over(
        "Keygate's own part, dynamic module, over the no-op dynamic module",
        Setup::KeygateNative,
        Setup::NoopNative,
    );
    over(
        "the dynamic module's callbacks alone (Keygate's, no logic) over the no-op dynamic module",
        Setup::HostCallsNative,
        Setup::NoopNative,
    );
    over(
        "Keygate's logic in the dynamic module (over its callbacks alone)",
        Setup::KeygateNative,
        Setup::HostCallsNative,
    );
    over(
        "the decision alone in the dynamic module (decision + fixed callbacks, over the callbacks alone)",
        Setup::DecideNative,
        Setup::HostCallsNative,
    );
    over(
        "the decision's own edits in the dynamic module (Keygate over decision + fixed callbacks)",
        Setup::KeygateNative,
        Setup::DecideNative,
    );
    over(
        "Keygate's own part, wasm, over the no-op wasm filter (target ≤ 3 µs)",
        Setup::KeygateWasm,
        Setup::NoopWasm,
    );
    over(
        "Keygate's host calls alone in wasm (no logic) over the no-op wasm filter",
        Setup::HostCallsWasm,
        Setup::NoopWasm,
    );
    over(
        "one shared-data bucket read (host calls + the read, over the host calls alone)",
        Setup::HostCallsSharedWasm,
        Setup::HostCallsWasm,
    );
    over(
        "one rate limit per key, wasm (Keygate with a limit over Keygate; target ≤ 1 µs)",
        Setup::KeygateWasmLimited,
        Setup::KeygateWasm,
    );
    over(
        "one rate limit per key, dynamic module (with a limit over without; target ≤ 1 µs)",
        Setup::KeygateNativeLimited,
        Setup::KeygateNative,
    );
    over(
        "Keygate B − Keygate (wasm)",
        Setup::KeygateWasmB,
        Setup::KeygateWasm,
    );
    over(
        "Keygate B − Keygate (dynamic module)",
        Setup::KeygateNativeB,
        Setup::KeygateNative,
    );
    over(
        "ext_authz asking forward-auth over no filter",
        Setup::ExtAuthz,
        Setup::NoFilter,
    );
    over(
        "Keygate as a dynamic module over no filter",
        Setup::KeygateNative,
        Setup::NoFilter,
    );
    over(
        "Keygate as wasm over no filter",
        Setup::KeygateWasm,
        Setup::NoFilter,
    );
    over(
        "the no-op dynamic module over no filter",
        Setup::NoopNative,
        Setup::NoFilter,
    );
    over(
        "the no-op wasm filter over no filter",
        Setup::NoopWasm,
        Setup::NoFilter,
    );
    over(
        "api_key_auth over no filter",
        Setup::ApiKeyAuth,
        Setup::NoFilter,
    );
    for s in [Setup::KeygateNative, Setup::KeygateWasm, Setup::ExtAuthz] {
        if let (Some(k), Some(a)) = (median.get(&s), median.get(&Setup::ApiKeyAuth)) {
            println!(
                "{} throughput ÷ api_key_auth's: {:.2}×",
                s.name(),
                k.rps / a.rps
            );
        }
    }
    for (what, ratios) in paired {
        println!("{what}");
        println!("  per round: {ratios:.3?}");
    }

    Ok(())
}

/// Throughput ratios paired within each round (the two configurations ran back to back, so a
/// drift of the machine between rounds cancels): Keygate's shells ÷ `api_key_auth`, each B
/// build ÷ its A, and each shell with one rate limit ÷ without; the median of the rounds first.
fn paired_ratios(loads: &BTreeMap<Setup, Vec<Run>>) -> Vec<(String, Vec<f64>)> {
    let pairs = [
        (Setup::KeygateNative, Setup::ApiKeyAuth),
        (Setup::KeygateNativeB, Setup::ApiKeyAuth),
        (Setup::KeygateWasm, Setup::ApiKeyAuth),
        (Setup::KeygateNative, Setup::ApiKeyAuthForwarding),
        (Setup::KeygateNativeB, Setup::ApiKeyAuthForwarding),
        (Setup::KeygateWasm, Setup::ApiKeyAuthForwarding),
        (Setup::ApiKeyAuthForwarding, Setup::ApiKeyAuth),
        (Setup::HostCallsWasm, Setup::NoopWasm),
        (Setup::HostCallsSharedWasm, Setup::HostCallsWasm),
        (Setup::HostCallsSharedWasm, Setup::NoopWasm),
        (Setup::KeygateWasm, Setup::HostCallsWasm),
        (Setup::KeygateNativeB, Setup::KeygateNative),
        (Setup::KeygateWasmB, Setup::KeygateWasm),
        (Setup::KeygateNativeLimited, Setup::KeygateNative),
        (Setup::KeygateWasmLimited, Setup::KeygateWasm),
    ];
    let mut out = Vec::new();
    for (a, b) in pairs {
        let (Some(ra), Some(rb)) = (loads.get(&a), loads.get(&b)) else {
            continue;
        };
        let mut ratios: Vec<f64> = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| x.load.rps / y.load.rps)
            .collect();
        let per_round = ratios.clone();
        ratios.sort_by(f64::total_cmp);
        out.push((
            format!(
                "{} ÷ {}, throughput paired per round: median {:.3}× over {} rounds",
                a.name(),
                b.name(),
                ratios[ratios.len() / 2],
                ratios.len()
            ),
            per_round,
        ));
    }
    out
}

/// `KEYGATE_BENCH_RATE_LIMIT_HEADERS=1` (see the module's docs).
fn rate_limit_headers() -> bool {
    std::env::var("KEYGATE_BENCH_RATE_LIMIT_HEADERS").is_ok_and(|v| v == "1")
}

/// A bootstrap: listener `bench` on a free loopback port, a `direct_response` route, the filter
/// of `setup` in front, and the `keygate_control_plane` cluster at the fake feed.
fn bootstrap(setup: Setup, fixture: &Fixture) -> Value {
    // envoy/envoy.yaml's plugin configuration, with its own control plane: the wasm filter and
    // the dynamic module get the same.
    let feed = if setup.limited() {
        &fixture.feed_limited
    } else {
        &fixture.feed
    };
    let snapshot_file = if setup.limited() {
        &fixture.snapshot_file_limited
    } else {
        &fixture.snapshot_file
    };
    let configuration = || {
        let mut configuration = plugin_configuration(&envoy_yaml());
        configuration["authority"] = json!(feed);
        configuration["edge_key"] = json!("kg_edge_bench");
        if let Some(c) = configuration.as_object_mut() {
            c.remove("edge_key_env");
        }
        if rate_limit_headers() {
            configuration["rate_limit_headers"] = json!(true);
        }
        configuration
    };
    let mut filters = Vec::new();
    match setup {
        Setup::NoFilter => {}
        Setup::NoopWasm | Setup::HostCallsWasm | Setup::HostCallsSharedWasm => filters.push(json!({
            "name": "noop",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "noop", "root_id": "noop",
                    "vm_config": {"vm_id": "noop", "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": match setup {
                            Setup::NoopWasm => &fixture.noop_wasm,
                            Setup::HostCallsWasm => &fixture.host_calls_wasm,
                            _ => &fixture.host_calls_shared_wasm,
                        }}}}
                }
            }
        })),
        Setup::NoopNative => filters.push(native::noop_filter()),
        Setup::HostCallsNative => filters.push(native::host_calls_filter()),
        Setup::DecideNative => filters.push(native::decide_only_filter(
            &configuration(),
            &fixture.snapshot_file,
        )),
        Setup::ApiKeyAuth => filters.push(json!({
            "name": "envoy.filters.http.api_key_auth",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": fixture.api_keys,
                "key_sources": [{"header": "x-api-key"}]
            }
        })),
        // The same job as Keygate's on an allowed request, as far as `api_key_auth` can do it:
        // the key's header removed and the caller named in a header upstream (one header where
        // Keygate adds three: key id, owner, scopes).
        Setup::ApiKeyAuthForwarding => filters.push(json!({
            "name": "envoy.filters.http.api_key_auth",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": fixture.api_keys,
                "key_sources": [{"header": "x-api-key"}],
                "forwarding": {"header": "x-client-id", "hide_credentials": true}
            }
        })),
        Setup::ExtAuthz => {
            let mut shipped = ext_authz::ext_authz_yaml();
            let (addr, _) = fixture
                .forward_auth
                .as_ref()
                .expect("forward-auth runs when ext-authz is measured");
            ext_authz::ext_authz_config_mut(&mut shipped)["http_service"]["server_uri"]["uri"] =
                json!(format!("http://{addr}"));
            let filter = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
                [0]["typed_config"]["http_filters"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["name"] == ext_authz::FILTER))
                .cloned()
                .expect("envoy/ext-authz.yaml has its ext_authz filter");
            filters.push(filter);
        }
        Setup::KeygateWasm | Setup::KeygateWasmB | Setup::KeygateWasmLimited => filters.push(json!({
            "name": "keygate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "keygate", "root_id": "keygate", "failure_policy": "FAIL_RELOAD",
                    "vm_config": {"vm_id": "keygate", "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": if setup != Setup::KeygateWasmB {
                            &fixture.keygate_wasm
                        } else {
                            fixture.keygate_wasm_b.as_ref().expect("B runs only when given")
                        }}}},
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": configuration().to_string()
                    }
                }
            }
        })),
        Setup::KeygateNative | Setup::KeygateNativeB | Setup::KeygateNativeLimited => filters.push(
            native::keygate_filter(&configuration(), snapshot_file),
        ),
    }
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let (host, port) = feed.rsplit_once(':').unwrap_or((feed, "0"));
    let mut cluster = json!({
        "name": "keygate_control_plane",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "keygate_control_plane", "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": host, "port_value": port.parse::<u16>().unwrap_or(0)}}}
        }]}]}
    });
    if let (Setup::ExtAuthz, Some((addr, _))) = (setup, &fixture.forward_auth) {
        // envoy/ext-authz.yaml's own cluster, at the forward-auth control plane.
        let mut shipped = ext_authz::ext_authz_yaml();
        keygate_gateway::envoy_bootstrap::set_cluster_endpoint(
            &mut shipped,
            ext_authz::CONTROL_PLANE_CLUSTER,
            addr,
        )
        .expect("envoy/ext-authz.yaml has the control-plane cluster");
        if let Some(c) = shipped["static_resources"]["clusters"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["name"] == ext_authz::CONTROL_PLANE_CLUSTER)
            })
        {
            cluster = c.clone();
        }
    }
    let mut virtual_host = bench_envoy::direct_response_host();
    if rate_limit_headers() {
        virtual_host["response_headers_to_add"] = envoy_yaml()["static_resources"]["listeners"][0]
            ["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
            ["response_headers_to_add"]
            .clone();
    }
    bench_envoy::bench_bootstrap(virtual_host, filters, vec![cluster])
}

/// Waits until the wasm filter's leader reports `n` keys (the process-wide gauge).
fn wait_for_wasm_keys(envoy: &Envoy, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
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

/// Waits until the shared-data filter's leader has written its buckets.
fn wait_for_buckets(envoy: &Envoy) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let buckets = envoy.stat(BUCKETS_GAUGE)?;
        if buckets == Some(u64::from(BUCKETS)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the leader wrote {buckets:?} buckets, expected {BUCKETS}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real `keygate serve --forward-auth-config` on SQLite, with an edge key and `count` keys
/// issued through its API (the figures' ext_authz row asks it).
struct ForwardAuth {
    process: ServeProcess,
    edge_key: String,
    secrets: Vec<String>,
}

impl ForwardAuth {
    async fn start(count: usize, dir: &std::path::Path) -> anyhow::Result<Self> {
        let config = dir.join("forward-auth.json");
        std::fs::write(&config, plugin_configuration(&envoy_yaml()).to_string())?;
        let process = ServeProcess::start_sqlite(&[
            "--forward-auth-config".to_owned(),
            config.display().to_string(),
        ]);
        pin_to_cpu1(process.pid().context("no control-plane pid")?)?;
        let http = reqwest::Client::new();
        let url = format!("{}/v1/keys", process.url());
        let post = |body: Value| http.post(&url).bearer_auth(ADMIN_TOKEN).json(&body);
        let edge_key = issue(post(json!({"name": "bench edge", "kind": "edge"}))).await?;
        let mut secrets = Vec::with_capacity(count);
        let indices: Vec<usize> = (0..count).collect();
        for chunk in indices.chunks(32) {
            let mut calls = tokio::task::JoinSet::new();
            for i in chunk {
                calls.spawn(issue(post(json!({"name": format!("bench-{i}")}))));
            }
            while let Some(secret) = calls.join_next().await {
                secrets.push(secret??);
            }
        }
        Ok(Self {
            process,
            edge_key,
            secrets,
        })
    }
}

/// Sends a key-creation call; the secret.
async fn issue(req: reqwest::RequestBuilder) -> anyhow::Result<String> {
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    ensure!(status.as_u16() == 201, "creating a key: {status} {v}");
    v["secret"]
        .as_str()
        .map(str::to_owned)
        .context("no secret in the answer")
}

/// Pins process `pid` (every thread) to CPU 1, beside `wrk`.
fn pin_to_cpu1(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    ensure!(status.success(), "taskset failed: {status}");
    Ok(())
}
