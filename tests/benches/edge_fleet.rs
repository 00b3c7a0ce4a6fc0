//! The edge fleet's costs of record.
//!
//! ```text
//! cargo bench -p keygate-e2e --bench edge_fleet --profile dev
//! ```
//! (the `keygate` binary of the same profile must be built:
//! `cargo build -p keygate-control-plane --bin keygate`).
//!
//! 1. **`revoke --wait` latency.** Two `keygate serve` replicas on one PostgreSQL; Envoy 1.40
//!    A (`--concurrency 2`) syncs from replica 1, Envoy B (`--concurrency 2`) and the
//!    development gateway (2 workers) from replica 2, all long-polling as `envoy/envoy.yaml`
//!    ships (20 s). `KEYGATE_BENCH_REVOKES` (default 100) times: a key is issued with
//!    `?wait=10` (every edge has it), 200 ms pass, then the clock runs around
//!    `POST /v1/keys/{id}/revoke?wait=10` on replica 1 (what `keygate keys revoke ID --wait 10`
//!    sends), whose answer must say every edge applied it.
//! 2. **1,000 edges polling.** One `keygate serve` on PostgreSQL and `KEYGATE_BENCH_EDGES`
//!    (default 1,000) simulated edges in this process, each long-polling `/v1/keyset` with
//!    `wait=20` and the filter's report headers, re-polling at once after a change (no sooner
//!    than 100 ms after its previous poll, as the filter). For `KEYGATE_BENCH_SECONDS`
//!    (default 30) at rest, then as long with one key revoked per second: the control plane's
//!    CPU (its threads' run time, `/proc/<pid>/task/*/schedstat`) and its edge-registry writes
//!    (`keygate_edge_registry_writes_total`) per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use keygate_e2e::bench_envoy::cpu_ns;
use keygate_e2e::envoy::EnvoyStack;
use keygate_e2e::stack::{GatewayStack, ServeProcess};
use keygate_e2e::{ADMIN_TOKEN, unix_nanos};
use keygate_protocol::edge;
use keygate_testkit::bench::{env_usize, load_average, percentile};
use serde_json::{Value, json};

fn main() -> anyhow::Result<()> {
    println!("== edge fleet; load average {}", load_average());
    revoke_wait_latency(env_usize("KEYGATE_BENCH_REVOKES", 100))?;
    fleet_load(
        env_usize("KEYGATE_BENCH_EDGES", 1_000),
        env_usize("KEYGATE_BENCH_SECONDS", 30) as u64,
    )?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let resp = http
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    ensure!(status.is_success(), "{url}: {status} {v}");
    Ok(v)
}

fn revoke_wait_latency(samples: usize) -> anyhow::Result<()> {
    let database_url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .context("fresh PostgreSQL database")?;
    let r1 = ServeProcess::start(&database_url, &[]);
    let r2 = ServeProcess::start(&database_url, &[]);
    let (r1_url, r2_url) = (r1.url(), r2.url());
    let envoy_a = EnvoyStack::start_with(r1, 2, json!({}));
    let envoy_b = EnvoyStack::start_with(r2, 2, json!({}));
    let rt = runtime()?;
    let http = reqwest::Client::new();
    let gw_key = rt.block_on(admin(
        &http,
        reqwest::Method::POST,
        &format!("{r1_url}/v1/keys"),
        json!({"name": "gateway edge", "kind": "edge"}),
    ))?["secret"]
        .as_str()
        .context("secret")?
        .to_owned();
    let gw = GatewayStack::start(&r2_url, &gw_key, json!({"long_poll_wait_s": 20}));
    // Until the three edges are in the registry.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let f = rt.block_on(admin(
            &http,
            reqwest::Method::GET,
            &format!("{r1_url}/v1/edges"),
            json!(null),
        ))?;
        let live = f["items"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["state"] == "live").count());
        if live == 3 {
            break;
        }
        ensure!(Instant::now() < deadline, "three live edges: {f}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples {
        let issued = rt.block_on(admin(
            &http,
            reqwest::Method::POST,
            &format!("{r1_url}/v1/keys?wait=10"),
            json!({"name": format!("bench-{i}")}),
        ))?;
        ensure!(issued["propagation"]["complete"] == true, "{issued}");
        std::thread::sleep(Duration::from_millis(200));
        let id = issued["key"]["id"].as_str().context("id")?;
        let start = unix_nanos();
        let v = rt.block_on(admin(
            &http,
            reqwest::Method::POST,
            &format!("{r1_url}/v1/keys/{id}/revoke?wait=10"),
            json!({}),
        ))?;
        took.push(unix_nanos() - start);
        ensure!(v["propagation"]["complete"] == true, "{v}");
        ensure!(
            v["propagation"]["edges"].as_array().map(Vec::len) == Some(3),
            "{v}"
        );
    }
    drop((envoy_a, envoy_b, gw));
    took.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "revoke ?wait (3 proxies, long-poll, 2 replicas on PostgreSQL), {samples} revocations: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.99)),
        ms(*took.last().unwrap_or(&0)),
    );
    Ok(())
}

/// One simulated edge: long-polls until `stop`, counting its calls.
async fn edge_loop(
    http: reqwest::Client,
    base: String,
    key: String,
    id: String,
    calls: Arc<AtomicU64>,
    stop: Arc<AtomicU64>,
) {
    let mut revision: Option<u64> = None;
    while stop.load(Ordering::Relaxed) == 0 {
        let started = Instant::now();
        let mut req = match revision {
            Some(r) => http
                .get(format!("{base}/v1/keyset?since={r}&wait=20"))
                .header(edge::REVISION_HEADER, r.to_string()),
            None => http.get(format!("{base}/v1/keyset")),
        };
        req = req
            .bearer_auth(&key)
            .header(edge::ID_HEADER, &id)
            .header(edge::NODE_HEADER, format!("sim-{}", &id[..8]))
            .header(edge::WORKERS_HEADER, "4")
            .header(edge::VERSION_HEADER, "simulated");
        calls.fetch_add(1, Ordering::Relaxed);
        match req.send().await {
            Ok(resp) => {
                if let Some(r) = resp
                    .headers()
                    .get("x-keygate-revision")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                {
                    revision = Some(r);
                }
                let _ = resp.bytes().await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
        let gap = Duration::from_millis(100).saturating_sub(started.elapsed());
        tokio::time::sleep(gap).await;
    }
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {name}"))
}

fn fleet_load(edges: usize, seconds: u64) -> anyhow::Result<()> {
    let database_url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .context("fresh PostgreSQL database")?;
    let cp = ServeProcess::start(&database_url, &[]);
    let base = cp.url();
    let pid = cp.pid().context("control plane pid")?;
    let rt = runtime()?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(edges + 16)
        .timeout(Duration::from_secs(30))
        .build()?;
    let key = rt.block_on(admin(
        &http,
        reqwest::Method::POST,
        &format!("{base}/v1/keys"),
        json!({"name": "sim edges", "kind": "edge"}),
    ))?["secret"]
        .as_str()
        .context("secret")?
        .to_owned();
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let _guard = rt.enter();
    let tasks: Vec<_> = (0..edges)
        .map(|i| {
            rt.spawn(edge_loop(
                http.clone(),
                base.clone(),
                key.clone(),
                format!("{:032x}", 0x5eed_0000_u64 + i as u64),
                Arc::clone(&calls),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Let every edge take its snapshot and park.
    std::thread::sleep(Duration::from_secs(5));
    for churn in [false, true] {
        let writes0 = rt.block_on(metric(&http, &base, "keygate_edge_registry_writes_total"))?;
        let calls0 = calls.load(Ordering::Relaxed);
        let cpu0 = cpu_ns(pid)?;
        let start = Instant::now();
        let mut revoked = 0;
        while start.elapsed() < Duration::from_secs(seconds) {
            if churn {
                let k = rt.block_on(admin(
                    &http,
                    reqwest::Method::POST,
                    &format!("{base}/v1/keys"),
                    json!({"name": "churn"}),
                ))?;
                let id = k["key"]["id"].as_str().context("id")?.to_owned();
                rt.block_on(admin(
                    &http,
                    reqwest::Method::POST,
                    &format!("{base}/v1/keys/{id}/revoke"),
                    json!({}),
                ))?;
                revoked += 1;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = (cpu_ns(pid)? - cpu0) as f64 / 1e9;
        let writes =
            rt.block_on(metric(&http, &base, "keygate_edge_registry_writes_total"))? - writes0;
        let polls = calls.load(Ordering::Relaxed) - calls0;
        let f = rt.block_on(admin(
            &http,
            reqwest::Method::GET,
            &format!("{base}/v1/edges"),
            json!(null),
        ))?;
        let live = f["items"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["state"] == "live").count());
        println!(
            "{edges} simulated edges, {}: {:.0} s, key-set calls {:.0}/s, registry writes {:.1}/s, control-plane CPU {:.1}% of one core; {live} live in the registry",
            if churn {
                format!("a key created and revoked every second ({revoked} pairs)")
            } else {
                "at rest".to_owned()
            },
            secs,
            polls as f64 / secs,
            writes / secs,
            cpu / secs * 100.0,
        );
    }
    stop.store(1, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    drop(cp);
    Ok(())
}
