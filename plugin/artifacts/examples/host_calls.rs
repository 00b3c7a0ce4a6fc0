//! Host calls and VM entries per request of each kind the benches use, and per idle timer
//! tick, for Keygate's module (or another build of it), as a markdown table: what Envoy runs
//! per request, counted by the harness, which runs the same `.wasm` through the same ABI.
//!
//! `cargo run -p keygate-plugin-artifacts --example host_calls [-- filter.wasm]`
//!
//! With `--features keygate-host-harness/call-hook` every count is also checked against
//! wasmtime's own call hook.
//!
//! Deterministic: the same module gives the same table on any machine. `KEYGATE_BENCH_KEYS`
//! (default 1,000: the counts do not depend on it) and `KEYGATE_CALLS_SAMPLES` (requests
//! measured per kind, default 20) change what is run.

use std::sync::Arc;

use keygate_host_harness::Plugin;
use keygate_plugin_artifacts::calls::{markdown_table, per_kind_call_counts};
use keygate_plugin_artifacts::{BenchKinds, KEYGATE_PLUGIN_WASM};
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{env_usize, repo_key_set};

fn main() -> anyhow::Result<()> {
    let wasm = std::env::args()
        .nth(1)
        .unwrap_or_else(|| KEYGATE_PLUGIN_WASM.to_owned());
    let keys = repo_key_set(env_usize("KEYGATE_BENCH_KEYS", 1_000))?;
    let samples = env_usize("KEYGATE_CALLS_SAMPLES", 20);
    let kinds = BenchKinds::new(&keys.secrets)?;
    let snapshot = Snapshot {
        revision: 1,
        entries: keys.entries,
    }
    .encode()?;
    let rows = per_kind_call_counts(
        Plugin::load_file(&wasm)?,
        Arc::new(snapshot),
        &kinds,
        samples,
    )?;
    println!(
        "Host calls and VM entries of {wasm}, per request (on the leader, {} keys) and per \
         idle timer tick; every request of a kind and every idle tick of a worker made the same \
         calls ({samples} requests per kind):\n",
        kinds.allowed.len()
    );
    print!("{}", markdown_table(&rows));
    if rows.iter().all(|r| r.counts.wasmtime.is_some()) {
        println!("\nEvery count agreed with wasmtime's call hook (VM entries equal, calls out ≥).");
    }
    Ok(())
}
