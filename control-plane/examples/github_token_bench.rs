//! Benchmark: latency of a cached GitHub token request over loopback (`POST /v1/github/tokens`
//! and the seed's `POST /api/github/tokens`), the real server on SQLite, the fake GitHub behind
//! it. Prints p50/p90/p99/max. Run:
//! `cargo run --release -p keygate-control-plane --example github_token_bench [requests]`

use std::time::{Duration, Instant};

use anyhow::Context as _;
use keygate_control_plane::{AppState, Config, serve};
use keygate_fake_github::{FakeGithub, Operation, fixture, fixture_path};
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-token-0123456789";
const INTERNAL: &str = "bench-internal-key-0123456789";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, total: Duration) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name}: n={} p50={:.0}µs p90={:.0}µs p99={:.0}µs max={:.0}µs  ({:.0} req/s sequential)",
        samples.len(),
        us(percentile(&samples, 0.50)),
        us(percentile(&samples, 0.90)),
        us(percentile(&samples, 0.99)),
        us(*samples.last().unwrap_or(&Duration::ZERO)),
        samples.len() as f64 / total.as_secs_f64()
    );
}

async fn measure(
    n: usize,
    req: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    for _ in 0..200 {
        req().send().await?.bytes().await?;
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let resp = req().send().await?;
        anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
        resp.bytes().await?;
        samples.push(t.elapsed());
    }
    Ok((samples, start.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    let fake = FakeGithub::start().await?;
    fake.add_app(1, "Iv23liBench", &[&fixture("app-key-1.pub.pem")])?;
    fake.install(1, "acme", &["widgets"], &[("contents", "write")])?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(
        format!("sqlite:{}", dir.path().join("bench.db").display()),
        Some(ADMIN.into()),
    );
    config.github.github_apps = vec![format!(
        "app-id=1,private-key={},api-url={}",
        fixture_path("app-key-1.pkcs1.pem").display(),
        fake.base_url()
    )];
    config.github.internal_api_key = Some(INTERNAL.into());
    let (state, _) = AppState::new(config).await.context("state")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(listener, state, std::future::pending()));
    let http = reqwest::Client::new();
    let repo: Value = http
        .post(format!("{base}/v1/repositories"))
        .bearer_auth(ADMIN)
        .json(&json!({"organization": "acme", "repository": "widgets"}))
        .send()
        .await?
        .json()
        .await?;
    let key: Value = http
        .post(format!("{base}/v1/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "bench", "kind": "repo", "scopes": ["github:tokens"], "resources": ["acme/widgets"]}))
        .send()
        .await?
        .json()
        .await?;
    let secret = key["secret"].as_str().context("secret")?.to_owned();
    let id = repo["id"].as_i64().context("repo id")?;

    let url = format!("{base}/v1/github/tokens");
    let (samples, total) = measure(n, || {
        http.post(&url)
            .bearer_auth(&secret)
            .json(&json!({"repository": "acme/widgets"}))
    })
    .await?;
    report("POST /v1/github/tokens (cached)", samples, total);

    let url = format!("{base}/api/github/tokens");
    let (samples, total) = measure(n, || {
        http.post(&url)
            .json(&json!({"repositoryId": id, "internalApiKey": INTERNAL}))
    })
    .await?;
    report("POST /api/github/tokens (cached)", samples, total);
    println!(
        "GitHub calls during the run: {} token, {} installation lookups",
        fake.calls(Operation::CreateInstallationAccessToken),
        fake.calls(Operation::GetRepoInstallation)
    );
    Ok(())
}
