//! The operator console and the filter together, in a real browser and real Envoy: an operator
//! signs in, creates a key and reads its secret once; the key is used through Envoy; its usage
//! appears on the key's chart; the operator revokes it on its page, the badge turns `revoked`
//! and Envoy refuses the key; the operator signs out.

use std::time::{Duration, Instant};

use keygate_e2e::ADMIN_TOKEN;
use keygate_e2e::envoy::EnvoyStack;
use keygate_testkit::browser::{Browser, ONE_AT_A_TIME};
use serde_json::json;

/// The sum of the bars of the key page's usage chart.
async fn chart_sum(b: &Browser) -> i64 {
    b.script(
        "return [...document.querySelectorAll('#usage-chart rect.bar')]\
         .reduce((s, r) => s + Number(r.dataset.count), 0);",
    )
    .await
    .as_i64()
    .expect("a number")
}

#[test]
fn an_operator_creates_a_key_sees_its_use_through_envoy_then_revokes_it_in_the_console() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _one = rt.block_on(ONE_AT_A_TIME.lock());
    // Usage reported every half second, so that the chart fills while the test waits.
    let stack = EnvoyStack::start(
        2,
        json!({"usage_report_interval_ms": 500, "long_poll_wait_s": 5}),
    );
    let console = |path: &str| format!("{}{path}", stack.control_plane.url());
    let b = rt.block_on(Browser::start());

    // Sign in and create a key; its secret is on the page once.
    let (id, secret) = rt.block_on(async {
        b.goto(&console("/sign-in")).await;
        b.fill("#credential", ADMIN_TOKEN).await;
        b.click("#sign-in").await;
        b.find("#new-key").await;
        b.goto(&console("/keys/new")).await;
        b.fill("#name", "checkout service").await;
        b.find("#expiry")
            .await
            .select_by_value("30")
            .await
            .expect("expiry preset");
        b.fill("#scopes", "orders:read").await;
        b.fill("#owner", "team-checkout").await;
        b.click("#create").await;
        (b.text("#key-id").await, b.text("#secret").await)
    });
    assert!(secret.starts_with("kg_live_"), "{secret}");

    // Used through Envoy: it passes with its identity once the filter has synced it.
    stack.wait_status(
        "the new key synced",
        Duration::from_secs(15),
        "/orders/1",
        &secret,
        200,
    );
    for _ in 0..5 {
        let r = stack.get("/orders/1", Some(&secret));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.upstream_header("x-keygate-key-id"), Some(id.as_str()));
        assert_eq!(r.upstream_header("x-keygate-owner"), Some("team-checkout"));
    }

    // Its use reaches the key's chart: as many as the control plane counted, at least those.
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let shown = rt.block_on(async {
            b.goto(&console(&format!("/keys/{id}"))).await;
            b.find("#usage-chart").await;
            chart_sum(&b).await
        });
        let counted = stack.api.key(&id).usage_count;
        if shown >= 6 && shown == counted {
            break shown;
        }
        assert!(
            Instant::now() < deadline,
            "the chart shows {shown}, the control plane counted {counted}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("{shown} requests through Envoy on the key's chart");
    rt.block_on(b.screenshot("key-used-through-envoy"));

    // Revoked on its page: the badge changes, and Envoy refuses the key.
    rt.block_on(async {
        b.click("#revoke").await;
        b.fill("#reason", "rotated out after the test").await;
        b.click("#confirm-revoke").await;
        b.find("#key-id").await;
        assert_eq!(b.text("#status").await, "revoked");
    });
    let denied = stack.wait_status(
        "the revocation at the edge",
        Duration::from_secs(5),
        "/orders/1",
        &secret,
        401,
    );
    // The filter tells a revoked key from none at all to nobody.
    assert_eq!(denied.code(), "unknown_key", "{}", denied.text);

    // Signed out: the pages lead to sign-in again.
    rt.block_on(async {
        b.click("#sign-out").await;
        b.goto(&console(&format!("/keys/{id}"))).await;
        b.find("#credential").await;
        assert_eq!(b.path().await, "/sign-in");
    });
    rt.block_on(b.close());
}
