//! The edge registry over real HTTP on both engines: simulated edges (plain HTTP clients
//! sending the filter's `keygate-edge-*` headers) poll the key-set feed; `GET /v1/edges`, a
//! write's `?wait=`, `GET /v1/keys/{id}/propagation`, the metrics, the write bound, `gone`
//! after the configured silence, bad reports refused; and two replicas on one PostgreSQL, where
//! a write on one waits for an edge that polls the other.

mod common;

use std::time::{Duration, Instant};

use common::{Engine, InProcessServer, assert_error, fresh_database};
use keygate_protocol::edge;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    edges_report_and_are_listed_with_their_lag,
    a_write_waits_until_every_edge_applied_it,
    silent_edges_go_gone_and_are_not_waited_for,
    bad_edge_reports_are_refused_and_change_nothing,
    only_the_admin_sees_which_edges_enforce_a_write
);

const EDGE_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EDGE_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn server(engine: Engine, gone_after_s: i64) -> (InProcessServer, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_database(engine);
    let s = InProcessServer::start_on(&url, |c| {
        c.edge_heartbeat_s = 1;
        c.edge_lagging_after_s = 1;
        c.edge_gone_after_s = gone_after_s;
    })
    .await;
    (s, dir)
}

async fn edge_key(s: &InProcessServer) -> String {
    s.create(json!({"name": "edge", "kind": "edge"}))
        .await
        .secret
}

/// One key-set call as edge `id` holding `revision` (long-poll `wait` seconds when given).
async fn poll(
    s: &InProcessServer,
    key: &str,
    id: &str,
    revision: i64,
    wait: Option<u64>,
) -> StatusCode {
    let mut path = format!("/v1/keyset?since={revision}");
    if let Some(w) = wait {
        path.push_str(&format!("&wait={w}"));
    }
    s.http
        .get(s.url(&path))
        .bearer_auth(key)
        .header(edge::ID_HEADER, id)
        .header(edge::NODE_HEADER, format!("node-{}", &id[..1]))
        .header(edge::CLUSTER_HEADER, "front")
        .header(edge::REVISION_HEADER, revision.to_string())
        .header(edge::KEYS_HEADER, "3")
        .header(edge::STALENESS_HEADER, "12")
        .header(edge::WORKERS_HEADER, "2")
        .header(edge::VERSION_HEADER, "keygate-filter/test")
        .send()
        .await
        .unwrap()
        .status()
}

async fn fleet(s: &InProcessServer) -> Value {
    let (st, v) = s.admin(Method::GET, "/v1/edges", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

fn edge_of<'v>(fleet: &'v Value, id: &str) -> &'v Value {
    fleet["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["edge_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {fleet}"))
}

async fn metric(s: &InProcessServer, line_start: &str) -> f64 {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn edges_report_and_are_listed_with_their_lag(engine: Engine) {
    let (s, _dir) = server(engine, 60).await;
    let key = edge_key(&s).await;
    let created = s.create(json!({"name": "svc"})).await;
    assert!(created.revision >= 2, "a create answers with its revision");
    let rev = created.revision;
    assert_eq!(
        poll(&s, &key, EDGE_A, rev, None).await,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(poll(&s, &key, EDGE_B, rev - 1, None).await, StatusCode::OK);
    let f = fleet(&s).await;
    assert_eq!(f["revision"], rev);
    let a = edge_of(&f, EDGE_A);
    assert_eq!(a["node_id"], "node-a");
    assert_eq!(a["node_cluster"], "front");
    assert_eq!(a["address"], "127.0.0.1");
    assert_eq!(a["applied_revision"], rev);
    assert_eq!(a["lag_revisions"], 0);
    assert_eq!(a["state"], "live");
    assert_eq!(a["workers"], 2);
    assert_eq!(a["key_count"], 3);
    assert_eq!(a["version"], "keygate-filter/test");
    let edge_key_id = a["edge_key_id"].as_str().unwrap();
    assert!(edge_key_id.starts_with("key_"), "{a}");
    let b = edge_of(&f, EDGE_B);
    assert_eq!(b["lag_revisions"], 1);
    assert!(b["lag_seconds"].as_i64().unwrap() <= 1, "{b}");

    // Lagging once behind for longer than lagging_after (1 s); the metrics say so.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let f = fleet(&s).await;
    assert_eq!(edge_of(&f, EDGE_B)["state"], "lagging", "{f}");
    assert!(edge_of(&f, EDGE_B)["lag_seconds"].as_i64().unwrap() >= 2);
    assert_eq!(metric(&s, "keygate_edges{state=\"lagging\"}").await, 1.0);
    assert_eq!(metric(&s, "keygate_edges_max_lag_revisions").await, 1.0);
    assert!(metric(&s, "keygate_edges_max_lag_seconds").await >= 2.0);

    // Write bound: polls that change nothing are written once per heartbeat (1 s), not each.
    let writes = metric(&s, "keygate_edge_registry_writes_total").await;
    let start = Instant::now();
    let mut polls = 0;
    while start.elapsed() < Duration::from_millis(900) {
        poll(&s, &key, EDGE_A, rev, None).await;
        polls += 1;
    }
    let written = metric(&s, "keygate_edge_registry_writes_total").await - writes;
    assert!(polls >= 20, "{polls}");
    assert!(
        written <= 2.0,
        "{written} writes for {polls} unchanged polls"
    );

    // The admin only.
    let (st, v) = s.call(Some(&key), Method::GET, "/v1/edges", None).await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    s.stop().await;
}

async fn a_write_waits_until_every_edge_applied_it(engine: Engine) {
    let (s, _dir) = server(engine, 60).await;
    let key = edge_key(&s).await;
    let victim = s.create(json!({"name": "leaked"})).await;
    let rev = victim.revision;
    poll(&s, &key, EDGE_A, rev, None).await;
    poll(&s, &key, EDGE_B, rev, None).await;

    // Edge A follows (long-poll, then re-polls with the new revision); B does not.
    let follower = {
        let (s2, key) = (s.base.clone(), key.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let resp = http
                .get(format!("{s2}/v1/keyset?since={rev}&wait=10"))
                .bearer_auth(&key)
                .header(edge::ID_HEADER, EDGE_A)
                .send()
                .await
                .unwrap();
            let new: i64 = resp.headers()["x-keygate-revision"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            http.get(format!("{s2}/v1/keyset?since={new}"))
                .bearer_auth(&key)
                .header(edge::ID_HEADER, EDGE_A)
                .header(edge::REVISION_HEADER, new.to_string())
                .send()
                .await
                .unwrap();
            new
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path = format!("/v1/keys/{}/revoke?wait=2", victim.key.id);
    let started = Instant::now();
    let (st, v) = s.admin(Method::POST, &path, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "revoked");
    let revoked_at = v["revision"].as_i64().unwrap();
    assert_eq!(follower.await.unwrap(), revoked_at);
    let p = &v["propagation"];
    assert_eq!(p["revision"], revoked_at);
    assert_eq!(p["complete"], false, "{v}");
    let status: Vec<(String, String)> = p["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["edge_id"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            (EDGE_A.to_owned(), "applied".to_owned()),
            (EDGE_B.to_owned(), "behind".to_owned())
        ]
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited the whole deadline"
    );

    // The key's propagation: who enforces its revocation.
    let (st, v) = s
        .admin(
            Method::GET,
            &format!("/v1/keys/{}/propagation", victim.key.id),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["key"]["status"], "revoked");
    assert_eq!(v["propagation"]["revision"], revoked_at);
    assert_eq!(v["propagation"]["complete"], false);

    // B catches up: a wait now returns at once, complete.
    poll(&s, &key, EDGE_B, revoked_at, None).await;
    let other = s.create(json!({"name": "other"})).await;
    poll(&s, &key, EDGE_A, other.revision, None).await;
    poll(&s, &key, EDGE_B, other.revision, None).await;
    let started = Instant::now();
    let path = format!("/v1/keys/{}/suspend?wait=5", other.key.id);
    let (st, v) = s.admin(Method::POST, &path, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        v["propagation"]["complete"], false,
        "suspension is a new revision: {v}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    let (_, v) = s
        .admin(
            Method::GET,
            &format!("/v1/keys/{}/propagation", other.key.id),
            None,
        )
        .await;
    assert_eq!(v["propagation"]["complete"], false);
    let suspended_at = v["propagation"]["revision"].as_i64().unwrap();
    poll(&s, &key, EDGE_A, suspended_at, None).await;
    poll(&s, &key, EDGE_B, suspended_at, None).await;
    let (_, v) = s
        .admin(
            Method::GET,
            &format!("/v1/keys/{}/propagation", other.key.id),
            None,
        )
        .await;
    assert_eq!(v["propagation"]["complete"], true, "{v}");
    s.stop().await;
}

/// A workspace key learns how many edges enforce its write, and how many are behind, but not
/// their ids or Envoy node ids: the fleet is the operator's (`GET /v1/edges` is admin-only).
async fn only_the_admin_sees_which_edges_enforce_a_write(engine: Engine) {
    let (s, _dir) = server(engine, 60).await;
    let key = edge_key(&s).await;
    let ws = s
        .create(json!({"name": "acme-ops", "workspace_id": "acme", "scopes": ["keys:read", "keys:write"]}))
        .await
        .secret;
    let (st, v) = s
        .call(
            Some(&ws),
            Method::POST,
            "/v1/keys?wait=0",
            Some(json!({"name": "svc"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["key"]["id"].as_str().unwrap().to_owned();
    let rev = v["revision"].as_i64().unwrap();
    poll(&s, &key, EDGE_A, rev, None).await;
    poll(&s, &key, EDGE_B, rev - 1, None).await;

    let path = format!("/v1/keys/{id}/propagation");
    let (st, admin) = s.admin(Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{admin}");
    let (st, tenant) = s.call(Some(&ws), Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{tenant}");
    let seen = |v: &Value| -> Vec<(Value, Value, Value)> {
        v["propagation"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["edge_id"].clone(),
                    e["node_id"].clone(),
                    e["status"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        seen(&admin),
        [
            (json!(EDGE_A), json!("node-a"), json!("applied")),
            (json!(EDGE_B), json!("node-b"), json!("behind")),
        ]
    );
    assert_eq!(
        seen(&tenant),
        [
            (json!("edge-1"), Value::Null, json!("applied")),
            (json!("edge-2"), Value::Null, json!("behind")),
        ]
    );
    assert_eq!(tenant["propagation"]["complete"], false);

    // The same on a write's `?wait=`.
    let (st, v) = s
        .call(
            Some(&ws),
            Method::POST,
            &format!("/v1/keys/{id}/suspend?wait=0"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let text = v["propagation"].to_string();
    assert!(!text.contains(EDGE_A) && !text.contains("node-"), "{text}");
    assert_eq!(
        v["propagation"]["edges"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    s.stop().await;
}

async fn silent_edges_go_gone_and_are_not_waited_for(engine: Engine) {
    let (s, _dir) = server(engine, 1).await;
    let key = edge_key(&s).await;
    let k = s.create(json!({"name": "k"})).await;
    poll(&s, &key, EDGE_A, k.revision, None).await;
    assert_eq!(edge_of(&fleet(&s).await, EDGE_A)["state"], "live");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(edge_of(&fleet(&s).await, EDGE_A)["state"], "gone");
    assert_eq!(metric(&s, "keygate_edges{state=\"gone\"}").await, 1.0);
    let started = Instant::now();
    let path = format!("/v1/keys/{}/revoke?wait=5", k.key.id);
    let (st, v) = s.admin(Method::POST, &path, Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["propagation"]["complete"], true, "{v}");
    assert_eq!(v["propagation"]["edges"], json!([]));
    assert!(started.elapsed() < Duration::from_secs(2));
    s.stop().await;
}

async fn bad_edge_reports_are_refused_and_change_nothing(engine: Engine) {
    let (s, _dir) = server(engine, 60).await;
    let key = edge_key(&s).await;
    for (name, value) in [
        (edge::ID_HEADER, "NOT-AN-ID"),
        (edge::REVISION_HEADER, "-1"),
        (edge::KEYS_HEADER, "many"),
    ] {
        let mut req = s.http.get(s.url("/v1/keyset")).bearer_auth(&key);
        if name != edge::ID_HEADER {
            req = req.header(edge::ID_HEADER, EDGE_A);
        }
        let resp = req.header(name, value).send().await.unwrap();
        let st = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    assert_eq!(fleet(&s).await["items"], json!([]));
    // A write's wait is bounded, and a bad one changes nothing.
    let k = s.create(json!({"name": "k"})).await;
    let path = format!("/v1/keys/{}/revoke?wait=61", k.key.id);
    let (st, v) = s.admin(Method::POST, &path, Some(json!({}))).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    assert_eq!(s.key(&k.key.id).await.status.as_str(), "active");
    // Without an edge id a call is served as before, and records nothing.
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(fleet(&s).await["items"], json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_waits_for_an_edge_polling_the_other() {
    let (url, _) = fresh_database(Engine::Postgres);
    let tweak = |c: &mut keygate_control_plane::Config| c.edge_heartbeat_s = 1;
    let a = InProcessServer::start_on(&url, tweak).await;
    let b = InProcessServer::start_on(&url, tweak).await;
    let key = edge_key(&a).await;
    let k = a.create(json!({"name": "k"})).await;
    poll(&b, &key, EDGE_A, k.revision, None).await;
    let f = fleet(&a).await;
    assert_eq!(edge_of(&f, EDGE_A)["applied_revision"], k.revision);
    let follower = {
        let (base, key) = (b.base.clone(), key.clone());
        let since = k.revision;
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let resp = http
                .get(format!("{base}/v1/keyset?since={since}&wait=10"))
                .bearer_auth(&key)
                .header(edge::ID_HEADER, EDGE_A)
                .send()
                .await
                .unwrap();
            let new: String = resp.headers()["x-keygate-revision"]
                .to_str()
                .unwrap()
                .into();
            http.get(format!("{base}/v1/keyset?since={new}"))
                .bearer_auth(&key)
                .header(edge::ID_HEADER, EDGE_A)
                .header(edge::REVISION_HEADER, new)
                .send()
                .await
                .unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let path = format!("/v1/keys/{}/revoke?wait=10", k.key.id);
    let (st, v) = a.admin(Method::POST, &path, Some(json!({}))).await;
    let took = started.elapsed();
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["propagation"]["complete"], true, "{v}");
    assert!(
        took < Duration::from_secs(2),
        "event-driven across replicas: {took:?}"
    );
    follower.await.unwrap();
    a.stop().await;
    b.stop().await;
}
