//! The filter in wasm, in the host harness, with 1,000,000 keys loaded: per-request cost of an
//! allowed request, an unknown key and a malformed key (median/p99), beside the harness's own cost
//! for the same requests measured in the same run (no-op filters); the time to deliver and apply
//! the 1M-key snapshot; and the VM's linear memory per key.
//!
//! `cargo bench -p keygate-plugin-artifacts --bench wasm_decision` (`KEYGATE_BENCH_KEYS` changes
//! the size, `KEYGATE_BENCH_ROUNDS` the rounds of 1,000 requests per kind, default 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use keygate_host_harness::{
    CalloutReply, CalloutResponse, Cluster, Disposition, Harness, Plugin, Request,
};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::KeyId;
use keygate_protocol::key;
use keygate_protocol::wire::{CONTENT_TYPE, KeyEntry, Snapshot};

/// A filter whose every HTTP callback returns at once (continue): the harness alone, allow path.
const NOOP_CONTINUE_WAT: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

/// A filter that answers every request with an empty local 401 and does nothing else: the
/// harness alone, deny path.
const NOOP_DENY_WAT: &str = r#"
(module
  (import "env" "proxy_send_local_response"
    (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $local (i32.const 401) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))
"#;

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn gauge(h: &Harness, name: &str) -> u64 {
    h.metric(name).map_or(0, |m| m.value)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Median and p99 in ns of `rounds` passes over `requests` on worker 0, each request timed
/// alone, every one checked to end as `expect`.
fn measure(
    h: &mut Harness,
    requests: &[Request],
    rounds: usize,
    expect: Disposition,
) -> anyhow::Result<(u64, u64)> {
    for r in requests.iter().take(50) {
        let o = h.run_request_on(0, r.clone())?;
        ensure!(o.disposition == expect, "expected {expect:?}, got {o:?}");
        h.take_outcome(o.id);
    }
    let mut samples = Vec::with_capacity(rounds * requests.len());
    for _ in 0..rounds {
        for r in requests {
            let r = r.clone();
            let t = Instant::now();
            let o = h.run_request_on(0, r)?;
            let el = t.elapsed().as_nanos() as u64;
            ensure!(o.disposition == expect, "expected {expect:?}, got {o:?}");
            h.take_outcome(o.id);
            samples.push(el);
        }
    }
    samples.sort_unstable();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    let rounds = env_usize("KEYGATE_BENCH_ROUNDS", 20);
    println!("load average at start: {}", load_average());
    let mut secrets = Vec::new();
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let k = key::generate("kg_live")?;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        entries.push(KeyEntry {
            digest: k.digest(),
            key_id: KeyId::from_bytes(id),
            owner: format!("owner-{}", i % 1000),
            expires_at: None,
            scopes: vec![
                "repo:read".into(),
                if i % 2 == 0 { "repo:write" } else { "admin" }.into(),
            ],
            resources: vec![format!("org{}", i % 100)],
        });
        if i % (n / 1000).max(1) == 0 {
            secrets.push((k.expose_secret().to_owned(), i));
        }
    }
    let snapshot = Arc::new(
        Snapshot {
            revision: 1,
            entries,
        }
        .encode()?,
    );
    println!("keys: {n}; snapshot {} bytes", snapshot.len());

    // The same three request shapes for every filter: path, user-agent, one x-api-key.
    let request = |path: String, key: &str| {
        Request::get(&path)
            .header("user-agent", "bench")
            .header("x-api-key", key)
    };
    let allowed: Vec<Request> = secrets
        .iter()
        .map(|(s, i)| request(format!("/repos/org{}/widgets", i % 100), s))
        .collect();
    let mut unknown = Vec::with_capacity(secrets.len());
    for (_, i) in &secrets {
        // well formed, valid checksum, not in the set: parse + SHA-256 + a lookup that misses
        let k = key::generate("kg_live")?;
        unknown.push(request(
            format!("/repos/org{}/widgets", i % 100),
            k.expose_secret(),
        ));
    }
    let malformed: Vec<Request> = secrets
        .iter()
        .map(|(s, i)| {
            // the last checksum character changed: refused by the parser, no digest, no lookup
            let mut bad = s.clone();
            let last = bad.pop().unwrap_or('0');
            bad.push(if last == 'A' { 'B' } else { 'A' });
            request(format!("/repos/org{}/widgets", i % 100), &bad)
        })
        .collect();

    // The harness's own cost for the same requests, in this run and under this load.
    let mut noop = Harness::builder(Plugin::load(NOOP_CONTINUE_WAT.as_bytes())?).build()?;
    let (noop_allow, noop_allow_p99) =
        measure(&mut noop, &allowed, rounds, Disposition::Completed)?;
    drop(noop);
    let mut noop = Harness::builder(Plugin::load(NOOP_DENY_WAT.as_bytes())?).build()?;
    let (noop_deny, noop_deny_p99) =
        measure(&mut noop, &allowed, rounds, Disposition::LocalResponse)?;
    drop(noop);

    let plugin = Arc::new(Plugin::load_file(KEYGATE_PLUGIN_WASM)?);
    let body = snapshot.clone();
    let config = br#"{"cluster":"keygate","authority":"keygate.internal","edge_key":"kg_edge_x",
        "routes":[{"path_prefix":"/repos/","required_scopes":["repo:read"],"resource_from_path_segment":1}]}"#;
    // the first call is answered 1 s after configure, so the empty filter's memory can be read first
    let mut h = Harness::builder_shared(plugin)
        .workers(1)
        .plugin_configuration(config.to_vec())
        .cluster(
            "keygate",
            Cluster::handler(move |req| {
                if req.header(":path") == Some("/v1/keyset") {
                    CalloutReply::response(CalloutResponse {
                        headers: vec![("content-type".into(), CONTENT_TYPE.into())],
                        body: body.to_vec(),
                        trailers: Vec::new(),
                    })
                    .after(Duration::from_secs(1))
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
            (noop_allow, noop_allow_p99),
        ),
        (
            "unknown well-formed key → 401 (parse + SHA-256 + lookup miss)",
            &unknown,
            Disposition::LocalResponse,
            (noop_deny, noop_deny_p99),
        ),
        (
            "malformed key (bad checksum) → 401 (no lookup)",
            &malformed,
            Disposition::LocalResponse,
            (noop_deny, noop_deny_p99),
        ),
    ];
    println!(
        "per request in the harness, {n} keys loaded, {rounds} x {} requests per kind, each timed alone (full stream: context, request headers, decision, upstream or local reply, response, done, log, delete):",
        allowed.len()
    );
    println!(
        "  harness alone (no-op filters, same requests, this run): continue median {noop_allow} ns (p99 {noop_allow_p99}); local 401 median {noop_deny} ns (p99 {noop_deny_p99}); idle reference from harness_overhead: 3,300 ns"
    );
    for (label, reqs, expect, (base, _)) in kinds {
        let (med, p99) = measure(&mut h, reqs, rounds, expect)?;
        println!(
            "  {label}: median {med} ns, p99 {p99} ns; minus the harness alone: {} ns at the median",
            med as i64 - base as i64
        );
    }
    let allowed_n = gauge(&h, "keygate.decision.allow.allowed");
    let unknown_n = gauge(&h, "keygate.decision.deny.unknown_key");
    let malformed_n = gauge(&h, "keygate.decision.deny.malformed_key");
    println!(
        "decisions counted by the filter: allowed {allowed_n}, unknown_key {unknown_n}, malformed_key {malformed_n}"
    );
    let per_kind = (rounds * allowed.len() + allowed.len().min(50)) as u64;
    ensure!(
        allowed_n >= per_kind && unknown_n == per_kind && malformed_n == per_kind,
        "the filter did not decide as expected (each kind should count {per_kind})"
    );
    println!("load average at end: {}", load_average());
    Ok(())
}
