//! The filter in wasm, in the host harness: per-request cost with 1,000,000 keys loaded
//! (median/p99, harness overhead included), time to deliver and apply the 1M-key snapshot, and
//! wasm memory per key.
//!
//! `cargo bench -p keygate-plugin-artifacts --bench wasm_decision` (`KEYGATE_BENCH_KEYS` changes the size).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_host_harness::{
    CalloutReply, CalloutResponse, Cluster, Disposition, Harness, Plugin, Request,
};
use keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM;
use keygate_protocol::KeyId;
use keygate_protocol::key;
use keygate_protocol::wire::{CONTENT_TYPE, KeyEntry, Snapshot};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn gauge(h: &Harness, name: &str) -> u64 {
    h.metric(name).map_or(0, |m| m.value)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("KEYGATE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
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
    let t = Instant::now();
    h.advance(Duration::from_millis(600));
    let apply = t.elapsed();
    h.advance(Duration::from_millis(300));
    let keys = gauge(&h, "keygate.keyset.keys");
    anyhow::ensure!(
        keys == n as u64,
        "the filter holds {keys} keys, expected {n}"
    );
    let mem_full = gauge(&h, "keygate.wasm.memory_bytes");
    let heap = gauge(&h, "keygate.keyset.heap_bytes");
    println!(
        "in wasm: snapshot delivered + applied + published in {:.3} s (wall, harness copy included)",
        apply.as_secs_f64()
    );
    println!(
        "in wasm: key set heap {heap} bytes ({:.1} B/key); linear memory {} → {} bytes ({:.1} B/key high-water, includes the {}-byte response buffer and its shared-data copy)",
        heap as f64 / n as f64,
        mem_empty,
        mem_full,
        (mem_full - mem_empty) as f64 / n as f64,
        snapshot.len()
    );

    let requests: Vec<Request> = secrets
        .iter()
        .map(|(s, i)| {
            Request::get(&format!("/repos/org{}/widgets", i % 100))
                .header("user-agent", "bench")
                .header("x-api-key", s)
        })
        .collect();
    for r in requests.iter().take(10) {
        let o = h.run_request_on(0, r.clone())?;
        anyhow::ensure!(
            o.disposition == Disposition::Completed,
            "not allowed: {o:?}"
        );
    }
    let rounds = 20;
    let mut samples = Vec::with_capacity(rounds * requests.len());
    for _ in 0..rounds {
        for r in &requests {
            let r = r.clone();
            let t = Instant::now();
            let o = h.run_request_on(0, r)?;
            samples.push(t.elapsed().as_nanos() as u64);
            debug_assert_eq!(o.disposition, Disposition::Completed);
        }
    }
    samples.sort_unstable();
    println!(
        "in wasm via harness (full stream: headers, decision, upstream, response, done), {} samples: median {} ns, p99 {} ns",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    println!(
        "allowed decisions counted: {}",
        gauge(&h, "keygate.decision.allow.allowed")
    );
    Ok(())
}
