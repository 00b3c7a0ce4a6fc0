//! Envoy's memory with a key set in shared data (issue 23), measured before it is built: RSS at
//! `--concurrency` 1, 2 and 4, from a fresh start, once a filter's leader VM has written
//! 65,536 buckets (`kg/b/<n>`) holding `KEYGATE_BENCH_KEYS` keys' records (default 1,000,000)
//! into Envoy's shared data, against the same filter writing none.
//!
//! ```text
//! cargo bench -p keygate-e2e --bench envoy_shared_data --profile dev
//! ```
//! The filter is `keygate_e2e::bench_shared_data`'s module in WebAssembly text, with the bucket
//! bytes from one of:
//! - **none**: the baseline (no bucket);
//! - **generated**: 60 bytes per key (the wire's entry), and 100 (a bucket that carries each
//!   key's owner and grant beside its entry), from a zeroed region of the VM's own memory (what
//!   shared data costs, and nothing else);
//! - **snapshot, by bucket**: the leader fetches a real encoded snapshot of the keys
//!   (`GET /v1/keyset` of a local fake feed, through Envoy's HTTP client) and copies it into the
//!   VM one bucket-sized slice at a time (`proxy_get_buffer_bytes` with `start`/`size`, into a
//!   scratch area reused);
//! - **snapshot, whole**: the same body copied into the VM at once, as the filter reads its
//!   snapshots today.
//!
//! Envoy is pinned to CPU 0 with a `direct_response` route (no request is sent). Each figure is
//! read once the leader's gauges say it is done (plus 0.5 s), then again 5 s later (Envoy's HTTP client
//! frees the body after the callback; its allocator may keep the pages). The leader's linear
//! memory is its high-water mark: wasm memory never shrinks.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keygate_e2e::bench_envoy::{bench_bootstrap, direct_response_host, rss_bytes, start_pinned};
use keygate_e2e::bench_shared_data::{
    BUCKETS_GAUGE, BYTES_GAUGE, BucketSource, FEED_CLUSTER, LEADER_MEMORY_GAUGE, RECORD_BYTES,
    WRITE_US_GAUGE, shared_set_wat,
};
use keygate_e2e::fake_feed::FakeFeed;
use keygate_protocol::wire::Snapshot;
use keygate_testkit::bench::{env_usize, key_set, load_average};
use keygate_testkit::envoy::{Envoy, EnvoyOptions};
use serde_json::{Value, json};

fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    println!(
        "== Envoy 1.40 memory with {n} keys' buckets in shared data; load average {}",
        load_average()
    );
    let t = Instant::now();
    let mut entries = key_set(n, |_, _| {}, |_| false)?.entries;
    entries.sort_by(|a, b| a.digest.as_bytes().cmp(b.digest.as_bytes()));
    let snapshot = Snapshot {
        revision: 1,
        entries,
    }
    .encode()?;
    println!(
        "keys generated and encoded in {:.1} s: snapshot {} bytes ({:.1} B per key)",
        t.elapsed().as_secs_f64(),
        snapshot.len(),
        snapshot.len() as f64 / n.max(1) as f64
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let feed = rt.block_on(FakeFeed::new(snapshot, Vec::new()).serve())?;
    let dir = tempfile::tempdir()?;
    let sources = [
        ("none", BucketSource::Nothing),
        (
            "generated, 60 B per key",
            BucketSource::Generated {
                keys: n as u64,
                record_bytes: RECORD_BYTES,
            },
        ),
        (
            "generated, 100 B per key",
            BucketSource::Generated {
                keys: n as u64,
                record_bytes: 100,
            },
        ),
        ("snapshot, by bucket", BucketSource::Body { whole: false }),
        ("snapshot, whole", BucketSource::Body { whole: true }),
    ];
    let mut modules = Vec::new();
    for (i, (name, source)) in sources.iter().enumerate() {
        let path = dir.path().join(format!("shared-{i}.wasm"));
        std::fs::write(&path, wat::parse_str(shared_set_wat(*source))?)?;
        modules.push((*name, *source, path));
    }

    println!(
        "\n| --concurrency | buckets from | RSS when written | growth over none | RSS 5 s later | growth | Envoy's heap: allocated / free in its page heap | leader's linear memory | bytes in shared data | the leader's write | Envoy started and written in |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for concurrency in [1, 2, 4] {
        let mut base = None;
        for (name, source, path) in &modules {
            let t = Instant::now();
            let envoy = start_pinned(
                &bootstrap(path, &feed),
                &EnvoyOptions {
                    concurrency,
                    ..EnvoyOptions::default()
                },
            )?;
            let expected = if *source == BucketSource::Nothing {
                0
            } else {
                65_536
            };
            wait_for(&envoy, BUCKETS_GAUGE, expected)?;
            let written_s = t.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_millis(500));
            let pid = envoy.pid().context("no pid")?;
            let rss = rss_bytes(pid)?;
            std::thread::sleep(Duration::from_secs(5));
            let later = rss_bytes(pid)?;
            let (allocated, free) = heap(&envoy)?;
            let leader = envoy.stat(LEADER_MEMORY_GAUGE)?.unwrap_or(0);
            let bytes = envoy.stat(BYTES_GAUGE)?.unwrap_or(0);
            let write_ms = envoy.stat(WRITE_US_GAUGE)?.unwrap_or(0) as f64 / 1e3;
            let (b0, b5) = *base.get_or_insert((rss, later));
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "| {concurrency} | {name} | {:.1} MB | {:+.1} MB | {:.1} MB | {:+.1} MB | {:.1} / {:.1} MB | {:.1} MB | {:.1} MB | {write_ms:.0} ms | {written_s:.1} s |",
                mb(rss),
                (rss as f64 - b0 as f64) / 1e6,
                mb(later),
                (later as f64 - b5 as f64) / 1e6,
                mb(allocated),
                mb(free),
                mb(leader),
                mb(bytes),
            );
            drop(envoy);
        }
    }
    Ok(())
}

/// Envoy's heap (admin `/memory`, tcmalloc's figures): bytes allocated, and bytes free in its
/// page heap (freed by Envoy, kept by the allocator, still resident).
fn heap(envoy: &Envoy) -> anyhow::Result<(u64, u64)> {
    let (status, body) = envoy.admin_get("/memory")?;
    anyhow::ensure!(status == 200, "/memory: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let field = |name: &str| -> anyhow::Result<u64> {
        v[name]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("/memory has no {name}: {body}"))
    };
    Ok((field("allocated")?, field("pageheap_free")?))
}

/// Waits until Envoy's stat `name` is `value`.
fn wait_for(envoy: &Envoy, name: &str, value: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let v = envoy.stat(name)?;
        if v == Some(value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} is {v:?}, expected {value}:\n{}", envoy.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A listener with a `direct_response` route behind the module at `wasm`, and the feed's
/// cluster.
fn bootstrap(wasm: &std::path::Path, feed: &str) -> Value {
    let (host, port) = feed.rsplit_once(':').unwrap_or((feed, "0"));
    let filters = vec![
        json!({
            "name": "kg_shared",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "kg_shared", "root_id": "kg_shared",
                    "vm_config": {"vm_id": "kg_shared", "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm}}}
                }
            }
        }),
        json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }),
    ];
    let cluster = json!({
        "name": FEED_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": FEED_CLUSTER, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {
                "address": host,
                "port_value": port.parse::<u16>().unwrap_or(0)
            }}}
        }]}]}
    });
    bench_bootstrap(direct_response_host(), filters, vec![cluster])
}
