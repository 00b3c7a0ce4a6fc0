//! Benchmark: key issuance (`POST /v1/keys`) and verification (`POST /v1/keys/verify`)
//! throughput with concurrent clients, and `GET /v1/keys` page latency over a large key set,
//! over real HTTP on loopback, the real server on SQLite and on a throwaway PostgreSQL
//! cluster. Targets on SQLite: ≥ 1,000 issued/s, ≥ 10,000 verified/s. Run:
//! `cargo run --release -p keygate-control-plane --example keys_bench [keys] [fill-seconds]`
//! (`keys`: keys in the database for the list figures, default 100,000; `fill-seconds`: the
//! most time spent inserting them per engine, default 150; fewer are inserted when it runs out,
//! and the bench says how many).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keygate_control_plane::{AppState, Config, serve};
use keygate_testkit::PgCluster;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token-0123456789";
/// Requests in flight for the throughput figures.
const CONCURRENCY: usize = 32;
/// Length of each throughput run.
const RUN: Duration = Duration::from_secs(4);
/// Length of each latency run.
const LATENCY_RUN: Duration = Duration::from_secs(3);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report_latency(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    if samples.is_empty() {
        println!("  {name}: no samples");
        return;
    }
    println!(
        "  {name}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
    );
}

struct Bench {
    base: String,
    http: reqwest::Client,
}

impl Bench {
    async fn issue(&self, i: usize) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/v1/keys", self.base))
            .bearer_auth(ADMIN)
            .json(
                &json!({"name": format!("bench-{i}"), "scopes": ["bench:read"],
                          "owner_id": format!("owner-{}", i % 1000)}),
            )
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == reqwest::StatusCode::CREATED,
            "issue: status {}",
            resp.status()
        );
        let v: Value = resp.json().await?;
        Ok(v["secret"].as_str().context("secret")?.to_owned())
    }

    async fn verify(&self, secret: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/keys/verify", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({"key": secret, "scopes": ["bench:read"]}))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "verify: status {}",
            resp.status()
        );
        let body = resp.bytes().await?;
        const VALID: &[u8] = b"\"valid\":true";
        anyhow::ensure!(
            body.windows(VALID.len()).any(|w| w == VALID),
            "verify: not valid: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    async fn list(&self, query: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/keys{query}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "list: status {}", resp.status());
        Ok(resp.json().await?)
    }
}

/// Issues keys from `CONCURRENCY` clients until `deadline` or until `total` have been issued;
/// returns the count and (up to `keep`) the secrets.
async fn issue_many(
    bench: &Arc<Bench>,
    counter: &Arc<AtomicUsize>,
    total: usize,
    deadline: Instant,
    keep: usize,
) -> anyhow::Result<(usize, Vec<String>)> {
    let issued = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (bench, counter, issued) = (bench.clone(), counter.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            while Instant::now() < deadline {
                if issued.fetch_add(1, Ordering::Relaxed) >= total {
                    issued.fetch_sub(1, Ordering::Relaxed);
                    break;
                }
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let secret = bench.issue(i).await?;
                if kept.len() < keep / CONCURRENCY {
                    kept.push(secret);
                }
            }
            anyhow::Ok(kept)
        }));
    }
    let mut secrets = Vec::new();
    for t in tasks {
        secrets.extend(t.await??);
    }
    Ok((issued.load(Ordering::Relaxed), secrets))
}

async fn run_engine(engine: &str, url: &str, keys: usize, fill: Duration) -> anyhow::Result<()> {
    println!("== {engine}");
    let config = Config::new(url, Some(ADMIN.into()));
    let (state, _) = AppState::new(config).await.context("state")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    let bench = Arc::new(Bench {
        base,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()?,
    });
    let counter = Arc::new(AtomicUsize::new(0));

    // Warm-up: connections, prepared statements.
    issue_many(&bench, &counter, CONCURRENCY * 4, Instant::now() + RUN, 0).await?;

    // Issuance throughput.
    let start = Instant::now();
    let (n, secrets) = issue_many(&bench, &counter, usize::MAX, start + RUN, 4096).await?;
    let took = start.elapsed();
    println!(
        "  POST /v1/keys: {n} issued in {:.2}s = {:.0} issued/s ({CONCURRENCY} in flight)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    // Verification throughput of valid keys, after one pass to load them.
    let secrets = Arc::new(secrets);
    for s in secrets.iter() {
        bench.verify(s).await?;
    }
    let verified = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let (bench, secrets, verified, stop) = (
            bench.clone(),
            secrets.clone(),
            verified.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                bench.verify(&secrets[i % secrets.len()]).await?;
                verified.fetch_add(1, Ordering::Relaxed);
                i += CONCURRENCY;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let n = verified.load(Ordering::Relaxed);
    let took = start.elapsed();
    for t in tasks {
        t.await??;
    }
    println!(
        "  POST /v1/keys/verify: {n} valid in {:.2}s = {:.0} verified/s ({CONCURRENCY} in flight, {} distinct keys)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        secrets.len()
    );

    // Fill to `keys` for the list figures.
    let have = counter.load(Ordering::Relaxed);
    let start = Instant::now();
    if have < keys {
        issue_many(&bench, &counter, keys - have, start + fill, 0).await?;
    }
    let have = counter.load(Ordering::Relaxed);
    let took = start.elapsed();
    println!(
        "  filled to {have} keys in {:.1}s{}",
        took.as_secs_f64(),
        if have < keys {
            format!(
                " (stopped by the {}s fill limit, short of {keys})",
                fill.as_secs()
            )
        } else {
            String::new()
        }
    );

    // List latency: the first page, sequentially, for a bounded time.
    for query in ["", "?limit=1000"] {
        let mut samples = Vec::new();
        let start = Instant::now();
        while start.elapsed() < LATENCY_RUN {
            let t = Instant::now();
            bench.list(query).await?;
            samples.push(t.elapsed());
        }
        let what = if query.is_empty() {
            "first page, 100 keys (default limit)".to_owned()
        } else {
            "first page, 1000 keys".to_owned()
        };
        report_latency(&format!("GET /v1/keys {what}"), samples);
    }
    // Every page at every depth: a full walk with limit=1000.
    let mut samples = Vec::new();
    let mut seen = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=1000&cursor={c}"),
            None => "?limit=1000".into(),
        };
        let t = Instant::now();
        let page = bench.list(&query).await?;
        samples.push(t.elapsed());
        seen += page["items"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    report_latency(
        &format!("GET /v1/keys full walk, limit=1000 ({seen} keys listed)"),
        samples,
    );

    let _ = tx.send(());
    let _ = server.await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let keys: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let fill = Duration::from_secs(args.next().map(|s| s.parse()).transpose()?.unwrap_or(150));
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
    run_engine("SQLite (WAL, synchronous=NORMAL)", &sqlite, keys, fill).await?;
    let pg = PgCluster::start().context("start PostgreSQL")?;
    let url = pg.fresh_database().context("create database")?;
    run_engine(
        "PostgreSQL (throwaway cluster: fsync=off, synchronous_commit=off)",
        &url,
        keys,
        fill,
    )
    .await?;
    Ok(())
}
