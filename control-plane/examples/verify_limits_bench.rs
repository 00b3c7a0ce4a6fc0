//! Benchmark: what one rate limit costs `POST /v1/keys/verify` (counted in the shared
//! database, `Db::verify_use`) and `/v1/forward-auth` (counted in the process), against a key
//! without limits, over real HTTP on loopback, the real server on SQLite and on a throwaway
//! PostgreSQL cluster. Latency: one call in flight, the two keys interleaved, p50/p99;
//! throughput: 32 in flight for a few seconds. Run:
//! `cargo run --release -p keygate-control-plane --example verify_limits_bench [samples]`
//! (`samples`: calls per key for the latency figures, default 3000).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keygate_control_plane::{AppState, Config, serve};
use keygate_testkit::PgCluster;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token-0123456789";
const CONCURRENCY: usize = 32;
const RUN: Duration = Duration::from_secs(3);

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

#[derive(Clone)]
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn issue(&self, body: Value) -> anyhow::Result<String> {
        let resp = self
            .http
            .post(format!("{}/v1/keys", self.base))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().as_u16() == 201, "issue: {}", resp.status());
        let v: Value = resp.json().await?;
        Ok(v["secret"].as_str().context("secret")?.to_owned())
    }

    /// One verification; fails unless valid (and, for a limited key, counted).
    async fn verify(&self, secret: &str, limited: bool) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/keys/verify", self.base))
            .bearer_auth(ADMIN)
            .json(&json!({"key": secret}))
            .send()
            .await?;
        let body = resp.bytes().await?;
        let has = |s: &[u8]| body.windows(s.len()).any(|w| w == s);
        anyhow::ensure!(
            has(b"\"valid\":true") && has(b"\"ratelimits\"") == limited,
            "verify: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// One forward-auth call; fails unless allowed.
    async fn forward(&self, secret: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .get(format!("{}/v1/forward-auth/orders", self.base))
            .header("x-api-key", secret)
            .send()
            .await?;
        anyhow::ensure!(resp.status().as_u16() == 200, "forward: {}", resp.status());
        Ok(())
    }

    async fn call(&self, forward: bool, secret: &str, limited: bool) -> anyhow::Result<()> {
        if forward {
            self.forward(secret).await
        } else {
            self.verify(secret, limited).await
        }
    }
}

async fn latency(
    c: &Client,
    forward: bool,
    keys: [(&str, &str, bool); 2],
    samples: usize,
) -> anyhow::Result<()> {
    let mut times = [Vec::with_capacity(samples), Vec::with_capacity(samples)];
    for (_, secret, limited) in keys {
        for _ in 0..200 {
            c.call(forward, secret, limited).await?;
        }
    }
    for _ in 0..samples {
        for (i, (_, secret, limited)) in keys.iter().enumerate() {
            let t = Instant::now();
            c.call(forward, secret, *limited).await?;
            times[i].push(t.elapsed());
        }
    }
    let what = if forward {
        "GET /v1/forward-auth"
    } else {
        "POST /v1/keys/verify"
    };
    for (i, (name, _, _)) in keys.iter().enumerate() {
        times[i].sort();
        println!(
            "  {what} {name}: n={samples} p50={:.3}ms p99={:.3}ms (1 in flight)",
            pct(&times[i], 0.50),
            pct(&times[i], 0.99)
        );
    }
    Ok(())
}

async fn throughput(c: &Client, name: &str, secret: &str, limited: bool) -> anyhow::Result<()> {
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (c, done, stop, secret) = (c.clone(), done.clone(), stop.clone(), secret.to_owned());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.verify(&secret, limited).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let took = start.elapsed();
    for t in tasks {
        t.await??;
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "  POST /v1/keys/verify {name}: {:.0} verified/s ({CONCURRENCY} in flight, one key)",
        n as f64 / took.as_secs_f64()
    );
    Ok(())
}

async fn run_engine(engine: &str, url: &str, samples: usize) -> anyhow::Result<()> {
    println!("== {engine}");
    let dir = tempfile::tempdir()?;
    let fa = dir.path().join("forward-auth.json");
    std::fs::write(
        &fa,
        r#"{"routes":[{"path_prefix":"/"}],"key_sources":[{"header":"x-api-key"}]}"#,
    )?;
    let mut config = Config::new(url, Some(ADMIN.into()));
    config.forward_auth.config = Some(fa);
    config.forward_auth.open = true;
    let (state, _) = AppState::new(config).await.context("state")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let c = Client {
        base: format!("http://{}", listener.local_addr()?),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(CONCURRENCY)
            .build()?,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    let plain = c.issue(json!({"name": "plain"})).await?;
    // One limit that this run never reaches: every call is counted and passes.
    let limited = c
        .issue(json!({"name": "limited",
            "limits": [{"name": "day", "limit": 4_000_000_000u64, "window": "1d"}]}))
        .await?;
    // The forward-auth mirror follows the store: wait until it has both keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.forward(&plain).await.is_err() || c.forward(&limited).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "forward-auth never had the keys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let keys = [
        ("no limits", plain.as_str(), false),
        ("one limit", limited.as_str(), true),
    ];
    latency(&c, false, keys, samples).await?;
    latency(&c, true, keys, samples).await?;
    throughput(&c, "no limits", &plain, false).await?;
    throughput(&c, "one limit", &limited, true).await?;
    let _ = tx.send(());
    let _ = server.await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let samples: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3000);
    println!("load average: {}", keygate_testkit::bench::load_average());
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite:{}", dir.path().join("bench.db").display());
    run_engine("SQLite (WAL, synchronous=NORMAL)", &sqlite, samples).await?;
    let pg = PgCluster::start().context("start PostgreSQL")?;
    let url = pg.fresh_database().context("create database")?;
    run_engine(
        "PostgreSQL (throwaway cluster: fsync=off, synchronous_commit=off)",
        &url,
        samples,
    )
    .await?;
    Ok(())
}
