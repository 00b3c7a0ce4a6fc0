//! Events the control plane raises by itself (issue 28.4): `key.expiring` once per key and
//! expiry, delivered signed to a real receiver, not raised again by later ticks, a restart or a
//! second replica, raised again when the expiry changes, and never for keys that do not qualify;
//! `edge.gone` once per edge and silence, with the edge's facts, never for an edge that reports;
//! `key.rate_limited` from edges' usage reports, at most once per key per period, with the count.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ADMIN, Engine, InProcessServer, fresh_database};
use keygate_control_plane::test_support::{Received, WebhookReceiver};
use keygate_protocol::edge;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Starts a control plane on `url` whose expiry task ticks every `check_ms` (a window of one
/// day) and whose webhook sender polls every 50 ms.
async fn start(url: &str, check_ms: u64) -> InProcessServer {
    InProcessServer::start_on(url, |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 200;
        c.expiring_within_days = 1;
        c.expiring_check_ms = check_ms;
    })
    .await
}

/// Registers an endpoint for `types` at the receiver and gives it the secret.
async fn subscribe(s: &InProcessServer, rx: &WebhookReceiver, types: &[&str]) {
    let (st, v) = s
        .call(
            Some(ADMIN),
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": rx.url(), "event_types": types})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    rx.set_secret(v["secret"].as_str().unwrap());
}

/// The distinct event ids of type `ty` about key `key` that arrived.
fn events(r: &[Received], ty: &str, key: &str) -> BTreeSet<String> {
    r.iter()
        .filter(|x| x.body["type"] == ty && x.body["data"]["key"]["id"] == key)
        .map(|x| x.id.clone())
        .collect()
}

/// Audit rows with `action`.
async fn audit_rows(s: &InProcessServer, action: &str) -> Vec<Value> {
    let (st, v) = s.admin(Method::GET, "/v1/audit?limit=1000", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .cloned()
        .collect()
}

async fn create(s: &InProcessServer, body: Value) -> String {
    s.create(body).await.key.id
}

async fn expiring_keys_raise_one_signed_event(engine: Engine) {
    let (url, _dir) = fresh_database(engine);
    let rx = WebhookReceiver::start().await;
    // Set-up on a replica whose expiry task ticks once at start (empty) and then hourly.
    let setup = start(&url, 3_600_000).await;
    subscribe(&setup, &rx, &["key.expiring"]).await;
    let soon = create(&setup, json!({"name": "soon", "expires_in": 3600})).await;
    // Comes within the one-day window about 3 s from now.
    let later = create(&setup, json!({"name": "later", "expires_in": 86_400 + 3})).await;
    let far = create(&setup, json!({"name": "far", "expires_in": 5 * 86_400})).await;
    let never = create(&setup, json!({"name": "never"})).await;
    let suspended = create(&setup, json!({"name": "suspended", "expires_in": 3600})).await;
    setup.key_action(&suspended, "suspend").await;
    let revoked = create(&setup, json!({"name": "revoked", "expires_in": 3600})).await;
    setup.key_action(&revoked, "revoke").await;
    let edge = create(
        &setup,
        json!({"name": "edge", "kind": "edge", "expires_in": 3600}),
    )
    .await;
    setup.stop().await;

    // Two replicas on the same database (a restart, and a second one), ticking every 100 ms.
    let a = start(&url, 100).await;
    let b = start(&url, 100).await;
    let got = rx
        .wait_for(Duration::from_secs(20), "soon's and later's events", |r| {
            !events(r, "key.expiring", &soon).is_empty()
                && !events(r, "key.expiring", &later).is_empty()
        })
        .await;
    let ev = got
        .iter()
        .find(|x| x.body["data"]["key"]["id"] == soon.as_str())
        .unwrap();
    assert!(ev.verified, "signature checked: {:?}", ev.body);
    assert_eq!(ev.body["data"]["action"], "key.expiring");
    assert_eq!(ev.body["data"]["actor"]["name"], "expiry");
    let expiry = ev.body["data"]["key"]["expires_at"].clone();
    assert!(expiry.is_i64(), "{}", ev.body);
    assert_eq!(ev.body["data"]["expires_at"], expiry);
    assert_eq!(
        ev.body["data"]["reason"],
        format!("expires_at={}", expiry.as_i64().unwrap())
    );
    assert!(!ev.raw.contains("secret"), "{}", ev.raw);

    // Many more ticks on both replicas raise nothing more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = rx.received();
    assert!(got.iter().all(|x| x.verified));
    assert_eq!(events(&got, "key.expiring", &soon).len(), 1);
    assert_eq!(events(&got, "key.expiring", &later).len(), 1);
    for k in [&far, &never, &suspended, &revoked, &edge] {
        assert!(events(&got, "key.expiring", k).is_empty(), "{k}");
    }
    assert_eq!(audit_rows(&a, "key.expiring").await.len(), 2);

    // A changed expiry within the window raises it again, once.
    let (st, v) = a
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{soon}"),
            Some(json!({"expires_in": 7200})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let got = rx
        .wait_for(Duration::from_secs(20), "soon's second event", |r| {
            events(r, "key.expiring", &soon).len() >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got2 = rx.received();
    assert_eq!(events(&got2, "key.expiring", &soon).len(), 2);
    let expiries: BTreeSet<i64> = got
        .iter()
        .filter(|x| x.body["data"]["key"]["id"] == soon.as_str())
        .filter_map(|x| x.body["data"]["expires_at"].as_i64())
        .collect();
    assert_eq!(expiries.len(), 2, "two expiries: {expiries:?}");
    let rows = audit_rows(&b, "key.expiring").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r["key_id"].is_string()));
    a.stop().await;
    b.stop().await;
}

on_both_engines!(
    expiring_keys_raise_one_signed_event,
    a_silent_edge_raises_one_signed_gone_event,
    refusals_raise_one_signed_rate_limited_event_per_period
);

const EDGE_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EDGE_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A control plane on `url` whose edges are gone after 2 s of silence, checked every 100 ms.
async fn start_edges(url: &str) -> InProcessServer {
    InProcessServer::start_on(url, |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 200;
        c.edge_heartbeat_s = 1;
        c.edge_gone_after_s = 2;
        c.edge_gone_check_ms = 100;
    })
    .await
}

/// One key-set call as edge `id` (node `node-<first letter>`) holding `revision`.
async fn poll(s: &InProcessServer, key: &str, id: &str, revision: i64) {
    poll_at(&s.http, &s.url(""), key, id, revision).await;
}

/// [`poll`] against the control plane at `base`.
async fn poll_at(http: &reqwest::Client, base: &str, key: &str, id: &str, revision: i64) {
    let st = http
        .get(format!("{base}/v1/keyset?since={revision}"))
        .bearer_auth(key)
        .header(edge::ID_HEADER, id)
        .header(edge::NODE_HEADER, format!("node-{}", &id[..1]))
        .header(edge::REVISION_HEADER, revision.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        st == StatusCode::OK || st == StatusCode::NOT_MODIFIED,
        "{st}"
    );
}

/// The distinct `edge.gone` event ids about edge `id`.
fn gone(r: &[Received], id: &str) -> BTreeSet<String> {
    r.iter()
        .filter(|x| x.body["type"] == "edge.gone" && x.body["data"]["edge"]["edge_id"] == id)
        .map(|x| x.id.clone())
        .collect()
}

async fn a_silent_edge_raises_one_signed_gone_event(engine: Engine) {
    let (url, _dir) = fresh_database(engine);
    let rx = WebhookReceiver::start().await;
    let a = start_edges(&url).await;
    let b = start_edges(&url).await;
    subscribe(&a, &rx, &["edge.gone"]).await;
    let key = a
        .create(json!({"name": "edge", "kind": "edge"}))
        .await
        .secret;
    let rev = a.state.db().revision().await.unwrap();
    poll(&a, &key, EDGE_A, rev).await;
    // Edge B keeps polling (through both replicas, every 200 ms) while A falls silent.
    let (http, bases, k) = (a.http.clone(), [a.url(""), b.url("")], key.clone());
    let keep_b = tokio::spawn(async move {
        loop {
            for base in &bases {
                poll_at(&http, base, &k, EDGE_B, rev).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let got = rx
        .wait_for(Duration::from_secs(20), "edge A's gone event", |r| {
            !gone(r, EDGE_A).is_empty()
        })
        .await;
    let ev = got
        .iter()
        .find(|x| x.body["data"]["edge"]["edge_id"] == EDGE_A)
        .unwrap();
    assert!(ev.verified, "{}", ev.raw);
    assert_eq!(ev.body["data"]["action"], "edge.gone");
    assert_eq!(ev.body["data"]["edge"]["node_id"], "node-a");
    assert_eq!(ev.body["data"]["edge"]["applied_revision"], rev);
    assert!(ev.body["data"]["edge"]["last_seen"].is_i64(), "{}", ev.raw);
    assert!(ev.body["data"]["key"].is_null(), "{}", ev.raw);
    assert!(!ev.raw.contains(&key), "no secret");
    // More ticks on both replicas: still one event; none for B, which kept reporting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = rx.received();
    assert_eq!(gone(&got, EDGE_A).len(), 1);
    assert!(gone(&got, EDGE_B).is_empty());
    let rows = audit_rows(&b, "edge.gone").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0]["key_id"].is_null(), "{rows:?}");
    // A comes back and goes silent again: a second event (a new silence).
    poll(&b, &key, EDGE_A, rev).await;
    rx.wait_for(Duration::from_secs(20), "edge A's second gone event", |r| {
        gone(r, EDGE_A).len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = rx.received();
    assert_eq!(gone(&got, EDGE_A).len(), 2);
    assert!(gone(&got, EDGE_B).is_empty(), "B kept reporting");
    assert!(got.iter().all(|x| x.verified));
    keep_b.abort();
    a.stop().await;
    b.stop().await;
}

/// `POST /v1/usage` as edge key `edge` through `s`: (key id, count, limited) per entry.
async fn report(s: &InProcessServer, edge: &str, batch: &str, entries: &[(&str, u64, u64)]) {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(k, count, limited)| {
            json!({"key_id": k, "count": count, "last_used_at": 0, "limited": limited})
        })
        .collect();
    let (st, v) = s
        .call(
            Some(edge),
            Method::POST,
            "/v1/usage",
            Some(json!({"batch_id": batch, "entries": entries})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// A control plane on `url` raising `key.rate_limited` at most once per key per 3 s.
async fn start_limits(url: &str) -> InProcessServer {
    InProcessServer::start_on(url, |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 200;
        c.rate_limited_event_every_s = 3;
    })
    .await
}

async fn refusals_raise_one_signed_rate_limited_event_per_period(engine: Engine) {
    let (url, _dir) = fresh_database(engine);
    let rx = WebhookReceiver::start().await;
    let a = start_limits(&url).await;
    let b = start_limits(&url).await;
    subscribe(&a, &rx, &["key.rate_limited"]).await;
    let edge = a
        .create(json!({"name": "edge", "kind": "edge"}))
        .await
        .secret;
    let k = create(&a, json!({"name": "busy"})).await;
    let calm = create(&a, json!({"name": "calm"})).await;
    let unknown = "key_0123456789abcdef0123456789abcdef";
    report(
        &a,
        &edge,
        "b1",
        &[(&k, 10, 5), (&calm, 3, 0), (unknown, 1, 9)],
    )
    .await;
    // Within the period: a retried batch, another batch, another replica's batch raise none.
    report(&a, &edge, "b1", &[(&k, 10, 5)]).await;
    report(&a, &edge, "b2", &[(&k, 1, 3)]).await;
    report(&b, &edge, "b3", &[(&k, 1, 4)]).await;
    let got = rx
        .wait_for(Duration::from_secs(20), "busy's event", |r| {
            !events(r, "key.rate_limited", &k).is_empty()
        })
        .await;
    let ev = got
        .iter()
        .find(|x| x.body["data"]["key"]["id"] == k.as_str())
        .unwrap();
    assert!(ev.verified, "{}", ev.raw);
    assert_eq!(ev.body["data"]["action"], "key.rate_limited");
    assert_eq!(ev.body["data"]["rate_limited"]["limited"], 5, "{}", ev.raw);
    assert_eq!(ev.body["data"]["rate_limited"]["period_s"], 3, "{}", ev.raw);
    assert!(!ev.raw.contains(&edge), "no secret");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = rx.received();
    assert_eq!(events(&got, "key.rate_limited", &k).len(), 1);
    assert!(events(&got, "key.rate_limited", &calm).is_empty());
    assert_eq!(
        got.iter()
            .filter(|x| x.body["type"] == "key.rate_limited")
            .count(),
        1,
        "nothing for the unknown key"
    );
    // After the period, refusals raise it again, with that report's count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    report(&b, &edge, "b4", &[(&k, 1, 2)]).await;
    let got = rx
        .wait_for(Duration::from_secs(20), "busy's second event", |r| {
            events(r, "key.rate_limited", &k).len() >= 2
        })
        .await;
    let counts: BTreeSet<i64> = got
        .iter()
        .filter(|x| x.body["data"]["key"]["id"] == k.as_str())
        .filter_map(|x| x.body["data"]["rate_limited"]["limited"].as_i64())
        .collect();
    assert_eq!(counts, BTreeSet::from([5, 2]));
    assert!(got.iter().all(|x| x.verified));
    assert_eq!(audit_rows(&a, "key.rate_limited").await.len(), 2);
    a.stop().await;
    b.stop().await;
}
