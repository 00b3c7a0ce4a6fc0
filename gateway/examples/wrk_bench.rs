//! The gateway benchmark with `wrk` over loopback: requests per second and latency percentiles
//! straight to the echo upstream, through the gateway with a pass-through filter, and through
//! the gateway with the Keygate filter holding 1,000,000 keys. The ratio is the figure that
//! counts.
//!
//! `cargo run --release -p keygate-gateway --example wrk_bench` (needs `wrk`, Debian package
//! `wrk`). Environment: `KEYGATE_BENCH_KEYS` (default 1000000), `WRK_SECONDS` (10),
//! `WRK_CONNECTIONS` (32), `WRK_THREADS` (2), `GATEWAY_WORKERS` (2).
//!
//! The Keygate filter syncs its key set over real HTTP from a feed server in this process that
//! serves one snapshot in the protocol's wire format (issuing a million keys through the control
//! plane's API would take most of an hour and measures something else).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use keygate_gateway::{Gateway, GatewayConfig, PluginSettings, RunningGateway};
use keygate_host_harness::Plugin;
use keygate_protocol::wire::{self, Snapshot};
use keygate_testkit::bench::{env_usize, key_set, load_average};
use tokio::net::TcpListener;

/// The host allocates on every request (streams, header maps, copies into the guest); Envoy
/// links tcmalloc, this process mimalloc (glibc's malloc made the host's share larger).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REVISION: u64 = 1;

/// The feed: `GET /v1/keyset` → the snapshot; with `since` → 304 after a short wait (a long
/// poll that sees no change); `POST /v1/usage` → 200.
async fn serve_feed(listener: TcpListener, snapshot: Arc<Bytes>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let snapshot = snapshot.clone();
                async move {
                    let query = req.uri().query().unwrap_or("");
                    let mut resp = if req.uri().path() == "/v1/usage" {
                        Response::new(Full::new(Bytes::from_static(b"{}")))
                    } else if query.contains("since=") {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NOT_MODIFIED;
                        r
                    } else {
                        let mut r = Response::new(Full::new((*snapshot).clone()));
                        r.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static(wire::CONTENT_TYPE),
                        );
                        r
                    };
                    resp.headers_mut()
                        .insert("x-keygate-revision", REVISION.to_string().parse()?);
                    Ok::<_, anyhow::Error>(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One wrk run's figures.
#[derive(Debug)]
struct WrkResult {
    requests_per_second: f64,
    p50: String,
    p90: String,
    p99: String,
    non_2xx: u64,
    errors: String,
}

fn wrk(url: &str, header: Option<&str>) -> anyhow::Result<WrkResult> {
    let seconds = env_usize("WRK_SECONDS", 10);
    let connections = env_usize("WRK_CONNECTIONS", 32);
    let threads = env_usize("WRK_THREADS", 2);
    let mut cmd = Command::new("wrk");
    cmd.args([
        "--latency",
        &format!("-t{threads}"),
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
    ]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let find = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|r| r.trim().to_owned()))
    };
    let requests_per_second = find("Requests/sec:")
        .context("wrk: no Requests/sec")?
        .parse()?;
    let non_2xx = find("Non-2xx or 3xx responses:")
        .map(|v| v.parse().unwrap_or(u64::MAX))
        .unwrap_or(0);
    Ok(WrkResult {
        requests_per_second,
        p50: find("50%").unwrap_or_default(),
        p90: find("90%").unwrap_or_default(),
        p99: find("99%").unwrap_or_default(),
        non_2xx,
        errors: find("Socket errors:").unwrap_or_else(|| "none".into()),
    })
}

async fn gateway(
    plugin: &Path,
    configuration: Vec<u8>,
    upstream: &str,
    clusters: Vec<(String, String)>,
) -> anyhow::Result<RunningGateway> {
    let settings = PluginSettings {
        configuration,
        vm_id: "bench".into(),
        root_id: "bench".into(),
        ..PluginSettings::default()
    };
    Ok(Gateway::start(GatewayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream: upstream.to_owned(),
        plugin: Arc::new(Plugin::load_file(plugin)?),
        settings,
        clusters,
        workers: env_usize("GATEWAY_WORKERS", 2),
        filter_state_headers: keygate_gateway::envoy_bootstrap::shipped_filter_state_headers()?,
        inline_request_headers: keygate_gateway::envoy_bootstrap::shipped_inline_request_headers()?,
    })
    .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("KEYGATE_BENCH_KEYS", 1_000_000);
    println!("load average at start: {}", load_average());

    // A million keys in the wire format; one of them is the key wrk sends.
    let started = Instant::now();
    let keys = key_set(
        n,
        |_, e| e.scopes = vec!["widgets:read".into()],
        |i| i == n / 2,
    )?;
    let entries = keys.entries;
    let secret = keys.secrets[0].0.clone();
    let snapshot = Arc::new(Bytes::from(
        Snapshot {
            revision: REVISION,
            entries,
        }
        .encode()?,
    ));
    println!(
        "keys: {n}; snapshot {} bytes, built in {:.1?}",
        snapshot.len(),
        started.elapsed()
    );

    let echo_listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo = format!("http://{}", echo_listener.local_addr()?);
    tokio::spawn(keygate_gateway::serve_echo(
        echo_listener,
        std::future::pending::<()>(),
    ));
    let feed_listener = TcpListener::bind("127.0.0.1:0").await?;
    let feed = format!("http://{}", feed_listener.local_addr()?);
    tokio::spawn(serve_feed(feed_listener, snapshot));

    let passthrough = gateway(
        Path::new(keygate_harness_test_artifacts::SDK_FILTER),
        b"continue".to_vec(),
        &echo,
        Vec::new(),
    )
    .await?;
    let config = serde_json::json!({
        "cluster": "feed",
        "authority": feed.trim_start_matches("http://"),
        "edge_key": "kg_edge_bench_not_checked_by_the_feed",
        "sync_interval_ms": 1000,
        "long_poll_wait_s": 2,
    });
    let keygate = gateway(
        Path::new(keygate_plugin_artifacts::KEYGATE_PLUGIN_WASM),
        serde_json::to_vec(&config)?,
        &echo,
        vec![("feed".into(), feed.clone())],
    )
    .await?;

    // Wait until every worker holds the set: the key passes on each of them.
    let http = reqwest::Client::new();
    let keygate_url = format!("http://{}/widgets", keygate.local_addr());
    let synced = Instant::now();
    let mut passes = 0;
    while passes < 8 {
        let status = http
            .get(&keygate_url)
            .header("x-api-key", &secret)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        passes = if status == 200 { passes + 1 } else { 0 };
        if synced.elapsed() > Duration::from_secs(120) {
            bail!("the Keygate gateway did not accept the key within 120 s (last {status})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "key set loaded by the gateway's workers in {:.1?}",
        synced.elapsed()
    );

    let key_header = format!("x-api-key: {secret}");
    let runs = [
        ("upstream (echo) directly", format!("{echo}/widgets"), None),
        (
            "gateway, pass-through filter",
            format!("http://{}/widgets", passthrough.local_addr()),
            None,
        ),
        (
            "gateway, Keygate filter, 1M keys, valid key",
            keygate_url.clone(),
            Some(key_header.as_str()),
        ),
        (
            "gateway, Keygate filter, 1M keys, no key (401)",
            keygate_url.clone(),
            None,
        ),
    ];
    let mut results = Vec::new();
    for (name, url, header) in &runs {
        let url = url.clone();
        let header = header.map(str::to_owned);
        let r = tokio::task::spawn_blocking(move || wrk(&url, header.as_deref())).await??;
        println!(
            "{name:<48} {:>9.0} req/s  p50 {:>9}  p90 {:>9}  p99 {:>9}  non-2xx {}  socket errors {}",
            r.requests_per_second, r.p50, r.p90, r.p99, r.non_2xx, r.errors
        );
        results.push(r);
    }
    let (direct, pass, keyed) = (&results[0], &results[1], &results[2]);
    println!(
        "Keygate / pass-through throughput: {:.2}; Keygate / direct: {:.2}",
        keyed.requests_per_second / pass.requests_per_second,
        keyed.requests_per_second / direct.requests_per_second
    );
    if keyed.non_2xx != 0 {
        bail!("{} requests with the valid key were not 2xx", keyed.non_2xx);
    }
    if results[3].non_2xx == 0 {
        bail!("requests without a key were not denied");
    }
    println!("load average at end: {}", load_average());
    passthrough.shutdown().await;
    keygate.shutdown().await;
    Ok(())
}
