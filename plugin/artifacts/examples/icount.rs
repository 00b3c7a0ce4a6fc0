//! Instructions per request, the filter's and the harness alone's, counted by valgrind's
//! callgrind: a figure that does not change with the speed this machine happens to run at.
//!
//! `cargo run --release -p keygate-plugin-artifacts --example icount [-- filter.wasm]`
//!
//! It runs itself under `valgrind --tool=callgrind` once per kind of request (allowed, allowed
//! with one rate limit on every key, unknown key, malformed key), counting only inside the blocks that run the requests, and reads the
//! counts back with `callgrind_annotate`. For each kind it prints the filter's instructions per
//! request, the harness alone's (the no-op filters of `keygate_host_harness::baseline`), their
//! difference (the filter's own part, as the benches time it) and how much of the filter's ran
//! inside the VM (code wasmtime compiled, which has no symbol: the filter itself, the SDK and
//! the trampolines). Instructions are not time: a cache miss costs none. `KEYGATE_BENCH_KEYS`
//! (default 10,000; loading a million keys under valgrind takes minutes),
//! `KEYGATE_ICOUNT_REPEAT` (times each request runs, default 3) and `KEYGATE_ICOUNT_TOP` (how
//! many of the filter's functions to list per kind, by their own instructions per request,
//! named through the perf map wasmtime writes with `KEYGATE_HARNESS_PERFMAP=1`; default 12).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use keygate_host_harness::baseline::{NOOP_CONTINUE_WAT, NOOP_DENY_WAT, time_each};
use keygate_host_harness::{Disposition, Harness, Plugin, Request};
use keygate_plugin_artifacts::{BenchKinds, KEYGATE_PLUGIN_WASM, synced_bench_harness};
use keygate_protocol::policy::{LimitPool, RateLimit};
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{env_usize, repo_key_set};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child that valgrind runs: the kind it times.
const CHILD_ENV: &str = "KEYGATE_ICOUNT_KIND";
const KINDS: [&str; 4] = ["allowed", "limited", "unknown", "malformed"];

/// The requests under the filter: callgrind counts only inside this and [`alone_block`].
#[inline(never)]
fn filter_block(h: &mut Harness, requests: &[Request], expect: Disposition) -> anyhow::Result<()> {
    // Unlike the other block's body, so that the two functions are not merged into one.
    std::hint::black_box(1_u8);
    time_each(h, requests, expect, &mut Vec::new())?;
    Ok(())
}

/// The same requests under the matching no-op filter.
#[inline(never)]
fn alone_block(h: &mut Harness, requests: &[Request], expect: Disposition) -> anyhow::Result<()> {
    std::hint::black_box(2_u8);
    time_each(h, requests, expect, &mut Vec::new())?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let wasm = std::env::args()
        .nth(1)
        .unwrap_or_else(|| KEYGATE_PLUGIN_WASM.to_owned());
    match std::env::var(CHILD_ENV) {
        Ok(kind) => child(&wasm, &kind),
        Err(_) => parent(&wasm),
    }
}

/// Runs one kind's requests: once to warm up, then `repeat` times in each block.
fn child(wasm: &str, kind: &str) -> anyhow::Result<()> {
    let mut keys = repo_key_set(env_usize("KEYGATE_BENCH_KEYS", 10_000))?;
    let repeat = env_usize("KEYGATE_ICOUNT_REPEAT", 3);
    if kind == "limited" {
        // One limit that never trips: the cost of counting it. The warm-up takes each key's
        // first lease of quota (two shared-data calls per 64 requests), so the blocks count
        // the steady state.
        for e in &mut keys.entries {
            e.policy.limits = vec![RateLimit {
                name: "hourly".into(),
                limit: 1_000_000_000,
                window_s: 3600,
                pool: LimitPool::Key,
            }];
        }
    }
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries: keys.entries,
        }
        .encode()?,
    );
    let [allowed, unknown, malformed] = BenchKinds::new(&keys.secrets)?.requests();
    let (requests, expect, noop) = match kind {
        "allowed" | "limited" => (allowed, Disposition::Completed, NOOP_CONTINUE_WAT),
        "unknown" => (unknown, Disposition::LocalResponse, NOOP_DENY_WAT),
        "malformed" => (malformed, Disposition::LocalResponse, NOOP_DENY_WAT),
        other => bail!("unknown kind {other:?}"),
    };
    let mut filter = synced_bench_harness(Plugin::load_file(wasm)?, snapshot)?;
    let mut alone = Harness::builder(Plugin::load(noop.as_bytes())?).build()?;
    time_each(&mut filter, &requests, expect, &mut Vec::new())?;
    time_each(&mut alone, &requests, expect, &mut Vec::new())?;
    for _ in 0..repeat {
        filter_block(&mut filter, &requests, expect)?;
        alone_block(&mut alone, &requests, expect)?;
    }
    println!("{}", requests.len() * repeat);
    Ok(())
}

/// One kind's counts, per request.
struct Counts {
    filter: f64,
    alone: f64,
    in_vm: f64,
    /// The filter's functions in the VM by their own count, dearest first.
    functions: Vec<(String, f64)>,
}

fn parent(wasm: &str) -> anyhow::Result<()> {
    ensure!(
        Path::new(wasm).exists(),
        "{wasm} does not exist: build the filter first (cargo build -p keygate-plugin-artifacts)"
    );
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("keygate-icount-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let top = env_usize("KEYGATE_ICOUNT_TOP", 12);
    println!("instructions per request (callgrind), filter {wasm}:");
    for kind in KINDS {
        let out = dir.join(format!("callgrind.{kind}"));
        let child = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg("--toggle-collect=icount::filter_block")
            .arg("--toggle-collect=icount::alone_block")
            .arg(&exe)
            .arg(wasm)
            .env(CHILD_ENV, kind)
            .env("KEYGATE_HARNESS_PERFMAP", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running valgrind (Debian package valgrind)")?;
        let perf_map = std::env::temp_dir().join(format!("perf-{}.map", child.id()));
        let run = child.wait_with_output()?;
        ensure!(
            run.status.success(),
            "valgrind failed for {kind}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let requests: f64 = String::from_utf8(run.stdout)?.trim().parse()?;
        let c = counts(&out, &perf_map, requests)?;
        println!(
            "  {kind:<10} filter {:>7.0}, harness alone {:>7.0}, own part {:>7.0} \
             ({:.0} in the VM, {:.0} in the host's calls and callbacks)",
            c.filter,
            c.alone,
            c.filter - c.alone,
            c.in_vm,
            c.filter - c.alone - c.in_vm
        );
        for (name, n) in c.functions.iter().take(top) {
            println!("    {n:>6.0}  {name}");
        }
        std::fs::remove_file(&perf_map).ok();
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Reads one run's counts back with `callgrind_annotate`: the blocks' inclusive counts, and the
/// exclusive counts of code without a symbol (what wasmtime compiled), named through the perf
/// map.
fn counts(out: &Path, perf_map: &Path, requests: f64) -> anyhow::Result<Counts> {
    let annotate = |inclusive: bool| -> anyhow::Result<Vec<(u64, String)>> {
        let run = Command::new("callgrind_annotate")
            .arg(format!(
                "--inclusive={}",
                if inclusive { "yes" } else { "no" }
            ))
            .arg("--threshold=100")
            .arg(out)
            .output()
            .context("running callgrind_annotate")?;
        ensure!(run.status.success(), "callgrind_annotate failed");
        Ok(String::from_utf8(run.stdout)?
            .lines()
            .filter_map(|line| {
                let (count, rest) = line.trim_start().split_once(' ')?;
                let count = count.replace(',', "").parse().ok()?;
                // `(12.34%)  file:function [object]`
                let name = rest.split_once(')')?.1.trim();
                Some((count, name.to_owned()))
            })
            .collect())
    };
    let inclusive = annotate(true)?;
    let block = |name: &str| {
        inclusive
            .iter()
            .find(|(_, f)| f.contains(name))
            .map(|(n, _)| *n as f64 / requests)
            .with_context(|| format!("{name} not in callgrind's output"))
    };
    let (filter, alone) = (
        block("icount::filter_block")?,
        block("icount::alone_block")?,
    );
    // The no-op filters' own code is a few instructions per call; the rest ran in the filter.
    let symbols = perf_map_symbols(perf_map);
    let mut functions: HashMap<String, f64> = HashMap::new();
    let mut in_vm = 0.0;
    for (n, f) in annotate(false)? {
        let Some(code) = f.strip_suffix("[???]") else {
            continue;
        };
        let n = n as f64 / requests;
        in_vm += n;
        let name = code
            .trim()
            .strip_prefix("???:0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .and_then(|address| symbol_at(&symbols, address))
            .unwrap_or("(no symbol)");
        *functions.entry(name.to_owned()).or_default() += n;
    }
    let mut functions: Vec<_> = functions.into_iter().collect();
    functions.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Counts {
        filter,
        alone,
        in_vm,
        functions,
    })
}

/// The perf map's `(start, size, name)` lines, sorted by start; empty when it is missing.
fn perf_map_symbols(path: &Path) -> Vec<(u64, u64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut symbols: Vec<_> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            // wasmtime writes `0x<start> <size> <name>`, both in hex.
            let start = parts.next()?;
            let start = u64::from_str_radix(start.strip_prefix("0x").unwrap_or(start), 16).ok()?;
            let size = u64::from_str_radix(parts.next()?, 16).ok()?;
            // Rust's legacy mangling ends in a hash (`::h0123…`) that only adds noise here.
            let name = parts.next()?;
            let name = match name.rsplit_once("::h") {
                Some((base, hash)) if hash.len() == 16 => base,
                _ => name,
            };
            Some((start, size, name.to_owned()))
        })
        .collect();
    symbols.sort_unstable_by_key(|s| s.0);
    symbols
}

fn symbol_at(symbols: &[(u64, u64, String)], address: u64) -> Option<&str> {
    let i = symbols.partition_point(|s| s.0 <= address).checked_sub(1)?;
    let (start, size, name) = &symbols[i];
    (address < start + size).then_some(name.as_str())
}
