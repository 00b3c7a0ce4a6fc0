//! Benchmark: the operator console's keys list page (`GET /keys`, 50 rows, rendered on the
//! server) with 100,000 keys in SQLite, over real HTTP on loopback. The keys go in through the
//! store's write path in bulk (`Db::insert_keys`: the same statements as every issuance, 1,000
//! keys and their audit rows per transaction); then one signed-in session (the admin token,
//! through `POST /sign-in`) times sequential GETs on one keep-alive connection: the first
//! page, a page from the middle (by cursor), and a name search. Target: first-page p99 ≤ 50 ms.
//! Run: `cargo bench -p keygate-control-plane --bench console_keys_list`
//! (`KEYGATE_BENCH_KEYS`, default 100,000; `KEYGATE_BENCH_REQUESTS` per figure, default 500).

use std::time::Instant;

use anyhow::{Context as _, ensure};
use keygate_control_plane::domain::key::{Actor, KeyRecord, audit_view};
use keygate_control_plane::domain::{KeyKind, KeyStatus};
use keygate_control_plane::storage::AuditEntry;
use keygate_control_plane::{AppState, Config, serve};
use keygate_protocol::key;
use keygate_testkit::bench::{env_usize, load_average, percentile};

const ADMIN: &str = "bench-admin-token-0123456789";
/// Keys per bulk transaction.
const BATCH: usize = 1000;
/// The first-page p99 the issue asks for, milliseconds.
const TARGET_P99_MS: f64 = 50.0;

fn record(i: usize, now: i64, admin: &Actor) -> anyhow::Result<(KeyRecord, key::SecretKey)> {
    let secret = key::generate("kg_live").map_err(|e| anyhow::anyhow!("{e}"))?;
    let scopes = match i % 3 {
        0 => vec!["orders:read".to_owned()],
        1 => vec!["orders:read".to_owned(), "orders:write".to_owned()],
        _ => vec!["billing:read".to_owned()],
    };
    Ok((
        KeyRecord {
            id: uuid::Uuid::now_v7(),
            workspace_id: "default".into(),
            name: format!("service {i:06}"),
            description: String::new(),
            kind: KeyKind::Workspace,
            display_prefix: secret.display_prefix(),
            digest: *secret.digest().as_bytes(),
            hash_version: 1,
            scopes,
            resources: Vec::new(),
            status: if i.is_multiple_of(50) {
                KeyStatus::Suspended
            } else {
                KeyStatus::Active
            },
            suspended_by_parent: false,
            expires_at: i
                .is_multiple_of(4)
                .then_some(now + (i as i64 % 60) * 86_400 + 3600),
            created_at: now,
            updated_at: now,
            last_used_at: i.is_multiple_of(3).then_some(now - 60),
            usage_count: i64::from(i.is_multiple_of(3)) * 17,
            revoked_at: None,
            created_by: admin.clone(),
            owner_id: format!("team-{}", i % 200),
            metadata: serde_json::json!({}),
            parent_id: None,
            subject: None,
            limits: None,
            credits: None,
        },
        secret,
    ))
}

/// Times `n` GETs of `path` with the session cookie; checks each is a 200 page holding
/// `expect`. Returns sorted microseconds.
async fn time_gets(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    expect: &str,
    n: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let resp = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await?;
        ensure!(resp.status() == 200, "{path}: {}", resp.status());
        let body = resp.text().await?;
        let us = t.elapsed().as_micros() as u64;
        ensure!(body.contains(expect), "{path}: no `{expect}` in the page");
        if i >= 20 {
            samples.push(us); // the first 20 warm the connection and caches
        }
    }
    samples.sort_unstable();
    Ok(samples)
}

fn report(name: &str, s: &[u64]) -> f64 {
    let ms = |us: u64| us as f64 / 1000.0;
    let p99 = ms(percentile(s, 0.99));
    println!(
        "  {name}: n={} p50={:.2} ms p99={p99:.2} ms max={:.2} ms",
        s.len(),
        ms(percentile(s, 0.5)),
        ms(*s.last().unwrap_or(&0)),
    );
    p99
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let keys = env_usize("KEYGATE_BENCH_KEYS", 100_000);
    let requests = env_usize("KEYGATE_BENCH_REQUESTS", 500);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("keygate.db").display());
    let (state, _) = AppState::new(Config::new(&url, Some(ADMIN.to_owned())))
        .await
        .context("state")?;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let admin = Actor {
        id: "admin".into(),
        name: "admin".into(),
        display_prefix: "admin".into(),
    };
    let t = Instant::now();
    let mut middle = None;
    for start in (0..keys).step_by(BATCH) {
        let mut batch = Vec::with_capacity(BATCH);
        for i in start..(start + BATCH).min(keys) {
            let (k, _secret) = record(i, now, &admin)?;
            if i == keys / 2 {
                middle = Some(k.id);
            }
            batch.push(k);
        }
        let rows: Vec<(KeyRecord, AuditEntry<'_>)> = batch
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    AuditEntry {
                        at: now,
                        workspace_id: Some("default"),
                        actor: &admin,
                        action: "key.create",
                        key_id: Some(k.id),
                        before: None,
                        after: Some(audit_view(k)),
                        reason: None,
                    },
                )
            })
            .collect();
        state.db().insert_keys(&rows).await?;
    }
    let count = state.db().count_keys().await?;
    ensure!(count as usize == keys, "{count} keys stored, {keys} asked");
    println!(
        "console keys list: {keys} keys inserted in {:.1} s (bulk, {BATCH} per transaction)",
        t.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = rx.await;
    }));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = http
        .post(format!("{base}/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("credential={ADMIN}")) // the token is URL-safe
        .send()
        .await?;
    ensure!(resp.status().is_redirection(), "sign-in: {}", resp.status());
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("a session cookie")?
        .to_owned();

    println!("  load average before: {}", load_average());
    let middle = keygate_control_plane::domain::key::format_key_id(middle.context("middle")?);
    let first = time_gets(&http, &base, &cookie, "/keys", "service 000049", requests).await?;
    let p99 = report("GET /keys (first page, 50 of 100,000)", &first);
    let mid = time_gets(
        &http,
        &base,
        &cookie,
        &format!("/keys?cursor={middle}"),
        &format!("service {:06}", keys / 2 + 50),
        requests,
    )
    .await?;
    report("GET /keys?cursor=<the 50,000th> (a middle page)", &mid);
    let search = time_gets(
        &http,
        &base,
        &cookie,
        "/keys?q=service%2009999",
        "service 099990",
        requests.min(200),
    )
    .await?;
    report(
        "GET /keys?q=service 09999 (name search, 10 matches)",
        &search,
    );
    println!("  load average after: {}", load_average());
    println!(
        "  target: first-page p99 <= {TARGET_P99_MS} ms: {}",
        if p99 <= TARGET_P99_MS {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = tx.send(());
    let _ = server.await;
    Ok(())
}
