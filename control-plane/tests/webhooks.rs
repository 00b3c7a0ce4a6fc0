//! Signed webhooks (issue 28): endpoints through the API, events written with the key change
//! that raises them, delivered by the background task with Standard Webhooks signatures that a
//! real receiver checks; a control plane SIGKILLed mid-delivery delivers after its restart; a
//! receiver that is down gets the events once it is back; a workspace's endpoint sees only its
//! workspace's events.

mod common;

use std::time::Duration;

use common::{ADMIN, Engine, InProcessServer, assert_error, fresh_database};
use keygate_control_plane::test_support::{Answer, ApiClient, Received, WebhookReceiver};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ALL: [&str; 6] = [
    "key.created",
    "key.updated",
    "key.suspended",
    "key.reactivated",
    "key.revoked",
    "key.rotated",
];

/// `POST /v1/webhooks` as `token`; asserts 201 and returns (id, secret).
async fn add_endpoint(api: &ApiClient, token: &str, url: &str, types: &[&str]) -> (String, String) {
    let (st, v) = api
        .call(
            Some(token),
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": url, "event_types": types, "description": "test"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{v}");
    (v["id"].as_str().unwrap().to_owned(), secret)
}

/// The delivery log of an endpoint, newest first.
async fn deliveries(api: &ApiClient, id: &str) -> Vec<Value> {
    let (st, v) = api
        .admin(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

/// The delivery log of an endpoint once `done` holds of it (the receiver sees a 204 before the
/// sender logs the attempt), read every 50 ms for at most 20 s.
async fn deliveries_once(api: &ApiClient, id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = deliveries(api, id).await;
        if done(&log) || std::time::Instant::now() >= deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn delivered(r: &[Received], id: &str) -> bool {
    r.iter()
        .any(|x| x.id == id && x.answered.is_some_and(|s| (200..300).contains(&s)))
}

/// The id of the event about key `key` (empty when none arrived yet).
fn event_about(r: &[Received], key: &str) -> String {
    r.iter()
        .find(|x| x.body["data"]["key"]["id"] == key)
        .map(|x| x.id.clone())
        .unwrap_or_default()
}

fn types_of(r: &[Received]) -> Vec<String> {
    r.iter()
        .map(|x| x.body["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn start(engine: Engine) -> (InProcessServer, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_database(engine);
    let s = InProcessServer::start_on(&url, |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 200;
        c.webhooks.webhook_timeout_ms = 2000;
    })
    .await;
    (s, dir)
}

async fn events_are_signed_and_delivered(engine: Engine) {
    let rx = WebhookReceiver::start().await;
    let (s, _dir) = start(engine).await;
    let api = &s.api;

    // Bad input: structured 400s, nothing registered.
    for body in [
        json!({"url": "ftp://example.com/", "event_types": ["key.created"]}),
        json!({"url": "http://user:pw@example.com/", "event_types": ["key.created"]}),
        json!({"url": "http://example.com/", "event_types": []}),
        json!({"url": "http://example.com/", "event_types": ["key.exploded"]}),
    ] {
        let (st, v) = api.admin(Method::POST, "/v1/webhooks", Some(body)).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    // The API's JSON extractor: an unknown member is 422 (as every route).
    let body = json!({"url": "http://example.com/", "event_types": ["key.created"], "extra": 1});
    let (st, v) = api.admin(Method::POST, "/v1/webhooks", Some(body)).await;
    assert_error(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let (st, v) = api.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(
        (st, v["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    let (st, v) = api.admin(Method::DELETE, "/v1/webhooks/nope", None).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, v) = api.call(None, Method::GET, "/v1/webhooks", None).await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    let (endpoint, secret) = add_endpoint(api, ADMIN, &rx.url(), &ALL).await;
    rx.set_secret(&secret);
    // Listed without its secret.
    let (_, v) = api.admin(Method::GET, "/v1/webhooks", None).await;
    assert_eq!(v["items"][0]["id"], endpoint.as_str());
    assert!(!v.to_string().contains(&secret), "{v}");
    assert!(v["items"][0].get("secret").is_none(), "{v}");

    let k = api
        .create(json!({"name": "hooked", "scopes": ["keys:read"]}))
        .await;
    let id = k.key.id.clone();
    api.key_action(&id, "suspend").await;
    api.key_action(&id, "reactivate").await;
    let rotated = api.rotate(&id, 0).await;
    api.key_action(&id, "revoke").await;

    let got = rx
        .wait_for(Duration::from_secs(20), "five delivered events", |r| {
            r.iter().filter(|x| x.answered == Some(204)).count() >= 5
        })
        .await;
    let mut types = types_of(&got);
    types.sort();
    assert_eq!(
        types,
        [
            "key.created",
            "key.reactivated",
            "key.revoked",
            "key.rotated",
            "key.suspended"
        ]
    );
    for r in &got {
        assert!(r.verified, "signature of {}: {}", r.id, r.raw);
        assert!(r.id.starts_with("msg_"), "{}", r.id);
        assert_eq!(r.body["id"], r.id.as_str());
        assert_eq!(r.body["data"]["key"]["id"], id.as_str(), "{}", r.raw);
        assert_eq!(r.body["data"]["actor"]["id"], "admin");
        for s in [&k.secret, &rotated.secret, &secret] {
            assert!(!r.raw.contains(s.as_str()), "a secret in {}", r.raw);
        }
    }
    let revoked = got
        .iter()
        .find(|r| r.body["type"] == "key.revoked")
        .unwrap();
    assert_eq!(revoked.body["data"]["key"]["status"], "revoked");

    // The delivery log: one delivered attempt per event.
    let log = deliveries_once(api, &endpoint, |l| {
        l.iter().filter(|a| a["delivered"] == true).count() >= 5
    })
    .await;
    assert_eq!(log.len(), 5, "{log:?}");
    for a in &log {
        assert_eq!(
            (a["attempt"].as_i64(), a["status_code"].as_i64()),
            (Some(1), Some(204))
        );
        assert_eq!(a["delivered"], true);
    }

    // Deleted: no further deliveries, its log is gone.
    let (st, _) = api
        .admin(Method::DELETE, &format!("/v1/webhooks/{endpoint}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = api
        .admin(
            Method::GET,
            &format!("/v1/webhooks/{endpoint}/deliveries"),
            None,
        )
        .await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// A workspace key's endpoint gets its workspace's events only; the admin's gets every one.
async fn a_workspace_endpoint_sees_its_workspace(engine: Engine) {
    let (rx_ws, rx_admin) = (
        WebhookReceiver::start().await,
        WebhookReceiver::start().await,
    );
    let (s, _dir) = start(engine).await;
    let api = &s.api;
    let ws = api
        .create(
            json!({"name": "ws", "workspace_id": "acme", "scopes": ["keys:read", "keys:write"]}),
        )
        .await;
    let (_, secret) = add_endpoint(api, &ws.secret, &rx_ws.url(), &["key.revoked"]).await;
    rx_ws.set_secret(&secret);
    let (_, secret) = add_endpoint(api, ADMIN, &rx_admin.url(), &["key.revoked"]).await;
    rx_admin.set_secret(&secret);
    let (st, v) = api
        .call(Some(&ws.secret), Method::GET, "/v1/webhooks", None)
        .await;
    assert_eq!(
        (st, v["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );

    let other = api
        .create(json!({"name": "other", "workspace_id": "globex"}))
        .await;
    let mine = api
        .create(json!({"name": "mine", "workspace_id": "acme"}))
        .await;
    api.key_action(&other.key.id, "revoke").await;
    api.key_action(&mine.key.id, "revoke").await;
    let all = rx_admin
        .wait_for(Duration::from_secs(20), "two revocations", |r| r.len() >= 2)
        .await;
    assert!(
        all.iter()
            .all(|r| r.verified && r.body["type"] == "key.revoked")
    );
    let ours = rx_ws
        .wait_for(Duration::from_secs(20), "acme's revocation", |r| {
            !r.is_empty()
        })
        .await;
    // Every event after acme's was delivered to the admin, so globex's had its chance.
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].verified);
    assert_eq!(ours[0].body["data"]["key"]["id"], mine.key.id.as_str());
    assert_eq!(ours[0].body["data"]["workspace_id"], "acme");
}

/// The receiver is down (its port refuses connections): attempts fail and are logged, with
/// backoff; once it listens the events arrive, verified.
async fn a_receiver_down_for_a_while_gets_the_events(engine: Engine) {
    let port = keygate_testkit::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (s, _dir) = start(engine).await;
    let api = &s.api;
    let (endpoint, secret) = add_endpoint(api, ADMIN, &url, &ALL).await;
    let k = api.create(json!({"name": "while-down"})).await;
    api.key_action(&k.key.id, "revoke").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = deliveries(api, &endpoint).await;
        if log.len() >= 4 {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "failed attempts: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for a in &log {
        assert_eq!(a["delivered"], false, "{a}");
        assert_eq!(a["error"], "could not connect", "{a}");
    }
    let rx = WebhookReceiver::start_on(port).await;
    rx.set_secret(&secret);
    let got = rx
        .wait_for(
            Duration::from_secs(30),
            "both events after the outage",
            |r| r.iter().filter(|x| x.answered == Some(204)).count() >= 2,
        )
        .await;
    assert!(got.iter().all(|r| r.verified));
    let mut types = types_of(&got);
    types.sort();
    types.dedup();
    assert_eq!(types, ["key.created", "key.revoked"]);
    let log = deliveries_once(api, &endpoint, |l| {
        l.iter().filter(|a| a["delivered"] == true).count() >= 2
    })
    .await;
    assert!(
        log.iter().filter(|a| a["delivered"] == true).count() >= 2,
        "{log:?}"
    );
    assert!(
        log.iter().any(|a| a["attempt"].as_i64() > Some(1)),
        "{log:?}"
    );
}

on_both_engines!(
    events_are_signed_and_delivered,
    a_workspace_endpoint_sees_its_workspace,
    a_receiver_down_for_a_while_gets_the_events,
);

/// `keygate serve` SIGKILLed while a delivery is in flight (the receiver holds it): nothing
/// was recorded, and after the restart the same event (same `webhook-id`) is delivered,
/// verified, once the dead process's lease runs out; the other event too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_delivery_delivers_after_restart() {
    let rx = WebhookReceiver::start().await;
    rx.answer(Answer::Hold);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("keygate.db").display());
    let mut kg = tokio::task::block_in_place(|| {
        common::serve(dir.path(), "webhooks-kill", |c| {
            c.env("KEYGATE_DATABASE_URL", &db)
                .env("KEYGATE_ADMIN_TOKEN", ADMIN)
                .env("KEYGATE_WEBHOOK_TIMEOUT_MS", "3000")
                .env("KEYGATE_WEBHOOK_POLL_MS", "50")
                .env("KEYGATE_WEBHOOK_RETRY_BASE_MS", "200")
                .env("RUST_LOG", "info,sqlx=warn");
        })
    });
    let api = ApiClient::new(&kg.base());
    let (endpoint, secret) = add_endpoint(&api, ADMIN, &rx.url(), &["key.revoked"]).await;
    rx.set_secret(&secret);
    let a = api.create(json!({"name": "a"})).await;
    api.key_action(&a.key.id, "revoke").await;
    let held = rx
        .wait_for(Duration::from_secs(10), "the first delivery (held)", |r| {
            !r.is_empty()
        })
        .await;
    let held_id = held[0].id.clone();
    tokio::task::block_in_place(|| kg.kill());
    // A second event written while nobody delivers.
    rx.answer(Answer::Accept);
    tokio::task::block_in_place(|| kg.restart());
    let api = ApiClient::new(&kg.base());
    let b = api.create(json!({"name": "b"})).await;
    api.key_action(&b.key.id, "revoke").await;
    // The held request's own answer goes nowhere (its sender is dead): the event must arrive
    // again, from the restarted process, and be accepted then.
    let again = |r: &[Received]| {
        r.iter()
            .filter(|x| x.id == held_id)
            .skip(1)
            .any(|x| x.answered == Some(204))
    };
    let got = rx
        .wait_for(
            Duration::from_secs(30),
            "both events after the restart",
            |r| again(r) && delivered(r, &event_about(r, &b.key.id)),
        )
        .await;
    assert!(got.iter().all(|r| r.verified), "{got:?}");
    assert!(
        got.iter().filter(|r| r.id == held_id).count() >= 2,
        "{got:?}"
    );
    let keys: Vec<&str> = got
        .iter()
        .filter(|r| r.answered == Some(204))
        .filter_map(|r| r.body["data"]["key"]["id"].as_str())
        .collect();
    assert!(
        keys.contains(&a.key.id.as_str()) && keys.contains(&b.key.id.as_str()),
        "{keys:?}"
    );
    // The receiver sees the 204 before the sender has logged it: read the log until the
    // attempt is there (the bound only limits the wait).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = deliveries(&api, &endpoint).await;
        if log
            .iter()
            .any(|x| x["event_id"] == held_id.as_str() && x["delivered"] == true)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kg.stop();
}

/// PostgreSQL goes away while events wait in the outbox (the receiver is down too): a key
/// write during the outage fails and raises nothing; once both are back, every committed event
/// is delivered, verified, and the failed write's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_database_outage() {
    let cluster = std::sync::Arc::new(keygate_testkit::PgCluster::start().unwrap());
    let port = keygate_testkit::free_port().unwrap();
    let s = InProcessServer::start_on(&cluster.url(), |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 200;
    })
    .await;
    let api = &s.api;
    let url = format!("http://127.0.0.1:{port}/hook");
    let (_, secret) = add_endpoint(api, ADMIN, &url, &ALL).await;
    let before = api.create(json!({"name": "before-outage"})).await;
    api.key_action(&before.key.id, "revoke").await;

    let c = std::sync::Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.stop())
        .await
        .unwrap()
        .unwrap();
    let (st, v) = api
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "during-outage"})),
        )
        .await;
    assert_error(
        st,
        &v,
        StatusCode::SERVICE_UNAVAILABLE,
        "DATABASE_UNAVAILABLE",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = std::sync::Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap()
        .unwrap();

    let rx = WebhookReceiver::start_on(port).await;
    rx.set_secret(&secret);
    let got = rx
        .wait_for(
            Duration::from_secs(30),
            "the events committed before the outage",
            |r| r.iter().filter(|x| x.answered == Some(204)).count() >= 2,
        )
        .await;
    assert!(got.iter().all(|r| r.verified));
    let mut types = types_of(&got);
    types.sort();
    types.dedup();
    assert_eq!(types, ["key.created", "key.revoked"]);
    assert!(
        got.iter()
            .all(|r| r.body["data"]["key"]["name"] == "before-outage"),
        "{got:?}"
    );
    // A write after the outage is delivered as usual.
    let after = api.create(json!({"name": "after-outage"})).await;
    rx.wait_for(Duration::from_secs(20), "the event after the outage", |r| {
        r.iter().any(|x| {
            x.body["data"]["key"]["id"] == after.key.id.as_str() && x.answered == Some(204)
        })
    })
    .await;
    assert!(
        !rx.received()
            .iter()
            .any(|x| x.body["data"]["key"]["name"] == "during-outage")
    );
}
