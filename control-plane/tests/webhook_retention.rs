//! Webhook retention (issue 28's leftover) on both engines: pruning removes the delivery log,
//! delivered and failed messages and their events that finished before the cutoff, and canary
//! hit ids; it never removes a message still pending, nor anything newer than the cutoff.
//! `--webhook-retention-days` (default 30) sets the cutoff of the hourly task.

mod common;

use std::time::Duration;

use common::{Engine, InProcessServer, fresh_database};
use keygate_control_plane::runtime::webhooks::WebhookArgs;
use keygate_control_plane::storage::webhook_retention::Pruned;
use keygate_control_plane::test_support::{Answer, WebhookReceiver};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(finished_deliveries_are_pruned_by_age_and_pending_ones_kept);

async fn deliveries(s: &InProcessServer, endpoint: &str) -> Vec<Value> {
    let (st, v) = s
        .api
        .admin(
            Method::GET,
            &format!("/v1/webhooks/{endpoint}/deliveries"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn endpoint(s: &InProcessServer, rx: &WebhookReceiver) -> String {
    let (st, v) = s
        .api
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": rx.url(), "event_types": ["key.created", "key.canary_used"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    rx.set_secret(v["secret"].as_str().unwrap());
    v["id"].as_str().unwrap().to_owned()
}

async fn finished_deliveries_are_pruned_by_age_and_pending_ones_kept(engine: Engine) {
    assert_eq!(WebhookArgs::default().webhook_retention_days, 30);
    let (url, _dir) = fresh_database(engine);
    let s = InProcessServer::start_on(&url, |c| {
        c.webhooks.webhook_poll_ms = 50;
        c.webhooks.webhook_retry_base_ms = 60_000;
        c.webhooks.webhook_timeout_ms = 2000;
    })
    .await;
    let ok = WebhookReceiver::start().await;
    let down = WebhookReceiver::start().await;
    down.answer(Answer::Status(503));
    let delivered_to = endpoint(&s, &ok).await;
    let pending_at = endpoint(&s, &down).await;
    s.api.create(json!({"name": "one"})).await;
    s.api.create(json!({"name": "two"})).await;
    // A canary hit leaves its id.
    let canary = s
        .api
        .create(json!({"name": "bait", "kind": "canary"}))
        .await;
    let (st, v) = s
        .api
        .admin(
            Method::POST,
            "/v1/canary-hits",
            Some(json!({"hits": [{"id": "old-hit", "key_id": canary.key.id, "path": "/"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    ok.wait_for(Duration::from_secs(10), "four delivered", |r| {
        r.iter().filter(|x| x.answered == Some(204)).count() >= 4
    })
    .await;
    down.wait_for(Duration::from_secs(10), "four refused", |r| r.len() >= 4)
        .await;
    // A receiver sees each attempt before the sender logs it: read the logs until all are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (a, b) = (
            deliveries(&s, &delivered_to).await.len(),
            deliveries(&s, &pending_at).await.len(),
        );
        if (a, b) == (4, 4) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "logged: {a}, {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = s.state.db();
    let now = keygate_control_plane::runtime::clock::unix_now();

    // A cutoff in the past prunes nothing.
    let none = db.prune_webhooks(now - 3600).await.unwrap();
    assert_eq!(none, Pruned::default());
    assert_eq!(deliveries(&s, &delivered_to).await.len(), 4);
    assert!(db.canary_hit_seen("old-hit").await.unwrap());

    // Everything before the cutoff: the delivered rows and the log go, the pending messages and
    // the events they need stay.
    let pruned = db.prune_webhooks(now + 10).await.unwrap();
    assert_eq!(pruned.attempts, 8, "{pruned:?}");
    assert_eq!(pruned.messages, 4, "{pruned:?}");
    assert_eq!(
        pruned.events, 0,
        "pending messages still need their events: {pruned:?}"
    );
    assert_eq!(pruned.canary_hits, 1, "{pruned:?}");
    assert!(deliveries(&s, &delivered_to).await.is_empty());
    assert!(!db.canary_hit_seen("old-hit").await.unwrap());

    let (st, v) = s
        .api
        .admin(Method::DELETE, &format!("/v1/webhooks/{pending_at}"), None)
        .await;
    assert!(st.is_success(), "{v}");
    // Without the endpoint its messages are gone (deleted with it): now the events go too.
    let pruned = db.prune_webhooks(now + 10).await.unwrap();
    assert_eq!(pruned.events, 4, "{pruned:?}");
}
