//! The console's webhooks and leaks pages in a real browser (headless chromium through
//! `browser/`, against the real `keygate serve` binary): an endpoint registered through the API
//! shows with its recent deliveries (a delivered canary event, its status per attempt); a
//! canary hit reported as an edge reports it shows on the leaks page with its path, client and
//! user agent; a workspace session sees neither the admin's endpoint nor another workspace's
//! hits. Screenshots as `tests/console.rs` saves them.

mod browser;

use std::time::Duration;

use browser::{ADMIN_TOKEN, Browser, Console, ONE_AT_A_TIME, SignIn};
use keygate_control_plane::test_support::WebhookReceiver;
use serde_json::{Value, json};

async fn admin_post(c: &Console, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(c.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
    resp.json().await.expect("JSON")
}

#[tokio::test]
async fn the_webhooks_and_leaks_pages_show_deliveries_and_canary_hits() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start_with(&["--webhook-poll-ms", "50"]);
    let rx = WebhookReceiver::start().await;
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    b.click("#nav-leaks").await;
    assert!(b.has("#no-leaks").await && b.has("#no-hits").await);
    b.click("#nav-webhooks").await;
    assert!(b.has("#empty").await);

    let endpoint = admin_post(
        &c,
        "/v1/webhooks",
        json!({"url": rx.url(), "event_types": ["key.canary_used"], "description": "siem"}),
    )
    .await;
    rx.set_secret(endpoint["secret"].as_str().unwrap());
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let canary = c
        .api_create(
            ADMIN_TOKEN,
            json!({"name": "backup bait", "kind": "canary"}),
        )
        .await;
    let canary_id = canary["key"]["id"].as_str().unwrap().to_owned();
    let ack = admin_post(
        &c,
        "/v1/canary-hits",
        json!({"hits": [{"id": "hit-1", "key_id": canary_id, "path": "/v1/invoices",
                         "client": "198.51.100.4:40022", "user_agent": "python-requests/2.32"}]}),
    )
    .await;
    assert_eq!(ack["written"], 1, "{ack}");
    rx.wait_for(Duration::from_secs(10), "the canary event", |r| {
        r.iter().any(|x| x.answered == Some(204) && x.verified)
    })
    .await;

    b.goto(&c.url("/leaks")).await;
    let hits = b.text("#canary-hits").await;
    for want in [
        "backup bait",
        "/v1/invoices",
        "198.51.100.4:40022",
        "python-requests/2.32",
        "edge",
    ] {
        assert!(hits.contains(want), "{want} in {hits}");
    }
    assert!(
        !b.source()
            .await
            .contains(canary["secret"].as_str().unwrap())
    );
    b.screenshot("leaks").await;

    b.click("#nav-webhooks").await;
    let section = b.text(&format!("#endpoint-{endpoint_id}")).await;
    for want in [
        rx.url().as_str(),
        "siem",
        "key.canary_used",
        "delivered",
        "HTTP 204",
    ] {
        assert!(section.contains(want), "{want} in {section}");
    }
    b.screenshot("webhooks").await;

    // A workspace session: the admin's endpoint and the default workspace's hits are not its.
    let ops = c.workspace_key("acme").await;
    b.click("#sign-out").await;
    b.sign_in(&c, &ops).await;
    b.goto(&c.url("/webhooks")).await;
    assert!(b.has("#empty").await);
    b.goto(&c.url("/leaks")).await;
    assert!(b.has("#no-hits").await);
    b.close().await;
}
