//! First start of the real `keygate` binary on an empty database with no
//! `KEYGATE_ADMIN_TOKEN`: one admin key is generated and printed once on stdout, works as the
//! admin over HTTP, survives a restart (no second key printed), and never reaches the logs.

mod common;

use std::path::Path;

use common::ServeProcess;
use reqwest::StatusCode;
use serde_json::{Value, json};

const BANNER: &str = "Generated bootstrap admin key (shown once, store it now): ";

/// `keygate serve` on `db` with trace-level logging and no admin token.
fn start(dir: &Path, db: &Path, run: &str) -> ServeProcess {
    common::serve(dir, run, |c| {
        c.env_remove("KEYGATE_ADMIN_TOKEN")
            .env("KEYGATE_DATABASE_URL", format!("sqlite:{}", db.display()))
            .env("RUST_LOG", "trace")
            .current_dir(dir);
    })
}

async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let st = resp.status();
    let text = resp.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_one_admin_key_that_works_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    assert!(!db.exists(), "the database starts empty");
    let http = reqwest::Client::new();

    // First start: one key, printed once, on stdout.
    let first = start(dir.path(), &db, "first");
    let out = first.stdout();
    let banners: Vec<&str> = out.lines().filter(|l| l.starts_with(BANNER)).collect();
    assert_eq!(banners.len(), 1, "exactly one generated key: {out}");
    let admin = banners[0][BANNER.len()..].trim().to_owned();
    let parsed = keygate_protocol::key::parse(&admin).expect("the printed key is well formed");
    assert_eq!(parsed.prefix(), "kg_admin");
    assert_eq!(out.matches(&admin).count(), 1, "printed once: {out}");

    // It is the admin: it can create a key in any workspace, list everything, read the audit.
    let (st, v) = call(
        &http,
        &admin,
        reqwest::Method::POST,
        first.url("/v1/keys"),
        Some(json!({"name": "made-by-bootstrap", "workspace_id": "team-a", "kind": "edge"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let made = v["key"]["id"].as_str().unwrap().to_owned();
    let issued = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(v["key"]["created_by"]["id"], "admin");
    let admin_body = admin.rsplit_once('_').unwrap().1;
    assert_eq!(
        v["key"]["created_by"]["display_prefix"],
        format!("kg_admin_{}", &admin_body[..8]),
        "created_by records the bootstrap key's display prefix"
    );
    let (st, v) = call(
        &http,
        &admin,
        reqwest::Method::GET,
        first.url("/v1/audit"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"][0]["action"], "key.create");
    // A different key with the admin prefix is not the admin.
    let forged = keygate_protocol::key::generate("kg_admin").unwrap();
    let (st, v) = call(
        &http,
        forged.expose_secret(),
        reqwest::Method::GET,
        first.url("/v1/keys"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    let (first_out, first_err) = first.stop();

    // Restart on the same database: no new key, the first one still works.
    let second = start(dir.path(), &db, "second");
    let (st, v) = call(
        &http,
        &admin,
        reqwest::Method::GET,
        second.url(&format!("/v1/keys/{made}")),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "made-by-bootstrap");
    let (st, v) = call(
        &http,
        &admin,
        reqwest::Method::GET,
        second.url("/v1/keys"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (second_out, second_err) = second.stop();
    assert!(
        !second_out.contains(BANNER) && !second_out.contains("kg_admin_"),
        "no second key on restart: {second_out}"
    );
    assert!(second_out.contains("keygate listening on"), "{second_out}");

    // The logs (stderr, trace level) never carry the admin key or the key it issued.
    assert!(
        first_err.contains("listening"),
        "logs captured: {first_err}"
    );
    let body = admin_body;
    let issued_body = issued.rsplit_once('_').unwrap().1;
    for (name, log) in [("first", &first_err), ("second", &second_err)] {
        assert!(!log.contains(body), "admin key in the {name} run's log");
        assert!(
            !log.contains(issued_body),
            "issued key in the {name} run's log"
        );
    }
    assert!(!first_out.contains(issued_body));
}

/// Replicas starting together on one empty database generate one admin key between them:
/// the guarded insert is atomic on both engines (eight concurrent attempts, one stored), and
/// on PostgreSQL, of two `AppState`s opened together with no admin token exactly one gets a
/// key to print.
async fn one_generated_admin_between_concurrent_starts(database_url: String) {
    use keygate_control_plane::{AppState, Config, Db};
    let db = Db::connect(&database_url).await.unwrap();
    let attempts: Vec<_> = (0..8u8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.insert_first_admin(&[i; 32], &format!("kg_admin_{i:08}"), 1)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored = 0;
    for a in attempts {
        stored += usize::from(a.await.unwrap());
    }
    assert_eq!(stored, 1, "one of eight concurrent attempts stores a key");
    assert_eq!(db.admin_count().await.unwrap(), 1);
    assert!(
        !db.insert_first_admin(&[9; 32], "kg_admin_late", 1)
            .await
            .unwrap(),
        "never a second one"
    );
    db.close().await;

    // End to end, with replicas (a PostgreSQL set-up), on a second empty database. (Two
    // processes migrating one new SQLite file at the same instant is not supported: sqlx takes
    // no migration lock on SQLite.)
    if database_url.starts_with("sqlite:") {
        return;
    }
    let fresh = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .unwrap();
    let (a, b) = tokio::join!(
        AppState::new(Config::new(fresh.clone(), None)),
        AppState::new(Config::new(fresh.clone(), None)),
    );
    let (a, ga) = a.unwrap();
    let (b, gb) = b.unwrap();
    assert_eq!(
        usize::from(ga.is_some()) + usize::from(gb.is_some()),
        1,
        "exactly one replica prints a generated key"
    );
    assert_eq!(a.db().admin_count().await.unwrap(), 1);
    a.db().close().await;
    b.db().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_generated_admin_between_concurrent_starts_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    one_generated_admin_between_concurrent_starts(format!(
        "sqlite:{}",
        dir.path().join("race.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_generated_admin_between_concurrent_starts_postgres() {
    let url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .unwrap();
    one_generated_admin_between_concurrent_starts(url).await;
}
