//! The console's usage, overview, audit, GitHub and list pages in a real browser (headless
//! chromium through `browser/`, against the real `keygate serve` binary), one scenario per
//! test: usage reported through the real `POST /v1/usage` (an edge key, as the filter reports)
//! appears on the key page's chart and on the overview; the audit page's filters; the keys
//! list's search and filters and a key's children; the GitHub registry page; at a phone's
//! width (390 px) no page scrolls sideways. Screenshots as `tests/console.rs` saves them.

mod browser;

use browser::{ADMIN_TOKEN, Browser, Console, ONE_AT_A_TIME, SignIn};
use fantoccini::Locator;
use serde_json::json;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A new key's id (created through the API as the admin).
async fn key(c: &Console, body: serde_json::Value) -> String {
    let v = c.api_create(ADMIN_TOKEN, body).await;
    v["key"]["id"].as_str().expect("id").to_owned()
}

/// An edge key's secret.
async fn edge(c: &Console) -> String {
    let v = c
        .api_create(ADMIN_TOKEN, json!({"name": "edge eu-1", "kind": "edge"}))
        .await;
    v["secret"].as_str().expect("secret").to_owned()
}

/// The sum of the `data-count` of the bars of the chart `css`.
async fn chart_sum(b: &Browser, css: &str) -> i64 {
    let v = b
        .script(&format!(
            "return [...document.querySelectorAll('{css} rect.bar')]\
             .reduce((s, r) => s + Number(r.dataset.count), 0);"
        ))
        .await;
    v.as_i64().expect("a number")
}

/// The texts of the elements matching `css`.
async fn texts(b: &Browser, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in b
        .client
        .find_all(Locator::Css(css))
        .await
        .expect("find_all")
    {
        out.push(e.text().await.expect("text"));
    }
    out
}

#[tokio::test]
async fn usage_reported_by_an_edge_appears_on_the_key_page_chart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    let id = key(
        &c,
        json!({"name": "orders service", "scopes": ["orders:read"]}),
    )
    .await;
    let edge = edge(&c).await;
    b.sign_in(&c, ADMIN_TOKEN).await;

    b.goto(&c.url(&format!("/keys/{id}"))).await;
    assert_eq!(b.text("#usage-total").await, "0");
    assert!(
        b.has("#usage-empty").await,
        "the empty state says what to expect"
    );
    assert_eq!(chart_sum(&b, "#usage-chart").await, 0);
    let bars = b
        .client
        .find_all(Locator::Css("#usage-chart rect.bar"))
        .await
        .expect("bars")
        .len();
    assert_eq!(bars, 24, "one bar per hour of the last 24");

    // The edge reports: two hours ago and now (two batches, as a filter's flushes).
    let t = now();
    c.report_usage(&edge, "eu-1-0001", &[(&id, 30, t - 2 * 3600)])
        .await;
    c.report_usage(&edge, "eu-1-0002", &[(&id, 12, t)]).await;
    b.client.refresh().await.expect("reload");
    b.find("#usage-chart").await;
    assert_eq!(b.text("#usage-total").await, "42");
    assert!(!b.has("#usage-empty").await);
    assert_eq!(chart_sum(&b, "#usage-chart").await, 42);
    let counts = b
        .script(
            "return [...document.querySelectorAll('#usage-chart rect.bar')]\
             .map(r => Number(r.dataset.count)).filter(c => c > 0);",
        )
        .await;
    assert_eq!(counts, json!([30, 12]), "each batch in its own hour");
    // Uses and last use on the details too.
    assert!(b.source().await.contains("(42 uses)"));
    b.script("document.getElementById('usage-title').scrollIntoView();")
        .await;
    b.screenshot("key-usage").await;

    // The other periods hold the same requests.
    for (range, bars) in [("7d", 168), ("30d", 30)] {
        b.click_and_wait(&format!("#range-{range}")).await;
        b.find(&format!("#range-{range}[aria-current]")).await;
        assert_eq!(b.text("#usage-total").await, "42", "{range}");
        assert_eq!(chart_sum(&b, "#usage-chart").await, 42);
        let n = b
            .client
            .find_all(Locator::Css("#usage-chart rect.bar"))
            .await
            .expect("bars")
            .len();
        assert_eq!(n, bars, "{range}");
    }
    b.close().await;
}

#[tokio::test]
async fn the_overview_lists_the_ten_keys_expiring_soonest_whatever_their_order() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    // Each key issued later expires sooner: issue order is not expiry order.
    for i in 0..12 {
        key(
            &c,
            json!({"name": format!("expiring {i:02}"), "expires_in": 6 * 86_400 - i * 3600}),
        )
        .await;
    }
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    b.goto(&c.url("/overview")).await;
    let shown: Vec<String> = texts(&b, "#expiring-keys li")
        .await
        .iter()
        .map(|t| t.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let soonest: Vec<String> = (2..12).rev().map(|i| format!("expiring {i:02}")).collect();
    assert_eq!(shown, soonest, "the ten soonest, soonest first");
    b.find("a[href='/keys?expiring=7']").await;
    b.close().await;
}

#[tokio::test]
async fn the_overview_shows_usage_top_keys_never_used_and_expiring_keys() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    let edge = edge(&c).await;
    let busy = key(
        &c,
        json!({"name": "checkout api", "owner_id": "team-checkout"}),
    )
    .await;
    let quiet = key(&c, json!({"name": "reports cron", "owner_id": "team-data"})).await;
    let soon = key(
        &c,
        json!({"name": "partner trial", "owner_id": "partner-acme", "expires_in": 3 * 86_400}),
    )
    .await;
    key(&c, json!({"name": "later", "expires_in": 30 * 86_400})).await;
    let t = now();
    c.report_usage(
        &edge,
        "b-1",
        &[
            (&busy, 900, t - 5 * 3600),
            (&busy, 340, t),
            (&quiet, 25, t - 3600),
        ],
    )
    .await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    b.click("#nav-overview").await;
    b.find("#overview-chart").await;
    assert_eq!(b.path().await, "/overview");
    assert_eq!(b.text("#overview-total").await, "1,265");
    assert_eq!(chart_sum(&b, "#overview-chart").await, 1265);
    let top = texts(&b, "#top-keys li").await;
    assert_eq!(top.len(), 2, "{top:?}");
    assert!(
        top[0].starts_with("checkout api") && top[0].contains("1,240"),
        "{top:?}"
    );
    assert!(
        top[1].starts_with("reports cron") && top[1].contains("25"),
        "{top:?}"
    );
    let expiring = texts(&b, "#expiring-keys li").await;
    assert_eq!(expiring.len(), 1, "{expiring:?}: 30 days is not within 7");
    assert!(expiring[0].starts_with("partner trial"));
    let never = texts(&b, "#never-used-keys li").await.join("\n");
    for name in ["partner trial", "later", "edge eu-1"] {
        assert!(never.contains(name), "{name} in {never}");
    }
    for name in ["checkout api", "reports cron"] {
        assert!(!never.contains(name), "{name} was used: {never}");
    }
    b.screenshot("overview").await;

    // Its links lead to the key's page.
    b.click(&format!("#expiring-keys a[href='/keys/{soon}']"))
        .await;
    assert_eq!(b.text("#key-id").await, soon);
    // Seven days hold the same.
    b.goto(&c.url("/overview?range=7d")).await;
    assert_eq!(b.text("#overview-total").await, "1,265");
    b.close().await;
}

#[tokio::test]
async fn the_audit_page_filters_by_key_actor_action_and_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    let ops = c.workspace_key("acme").await;
    let a = key(&c, json!({"name": "alpha", "workspace_id": "acme"})).await;
    let z = key(&c, json!({"name": "zulu", "workspace_id": "acme"})).await;
    c.api_post(&format!("/v1/keys/{a}/suspend")).await;
    c.api_post(&format!("/v1/keys/{a}/reactivate")).await;
    c.api_post(&format!("/v1/keys/{z}/revoke")).await;
    let by_ops = c.api_create(&ops, json!({"name": "made by ops"})).await;
    let by_ops = by_ops["key"]["id"].as_str().expect("id").to_owned();

    b.sign_in(&c, ADMIN_TOKEN).await;
    b.click("#nav-audit").await;
    b.find("#audit").await;
    let actions = texts(&b, "#audit td.action").await;
    assert_eq!(
        actions,
        [
            "key.create",
            "key.revoke",
            "key.reactivate",
            "key.suspend",
            "key.create",
            "key.create",
            "key.create"
        ],
        "newest first"
    );
    // Keys by their names, each a link to its page.
    let names = texts(&b, "#audit a.key").await;
    assert_eq!(
        names[..6],
        ["made by ops", "zulu", "alpha", "alpha", "zulu", "alpha"],
        "{names:?}"
    );
    b.find(&format!("#audit a.key[href='/keys/{z}']")).await;
    b.screenshot("audit").await;

    // Action.
    b.find("#action")
        .await
        .select_by_value("key.revoke")
        .await
        .expect("action");
    b.click_and_wait("#filter").await;
    b.find("#audit").await;
    assert_eq!(texts(&b, "#audit td.action").await, ["key.revoke"]);
    assert!(b.source().await.contains(&z));
    // Key.
    b.goto(&c.url("/audit")).await;
    b.fill("#key", &a).await;
    b.click_and_wait("#filter").await;
    b.find("#audit").await;
    assert_eq!(
        texts(&b, "#audit td.action").await,
        ["key.reactivate", "key.suspend", "key.create"]
    );
    // Actor: the workspace key's own create, by following its link.
    b.goto(&c.url("/audit")).await;
    b.click_and_wait(&format!(
        "#audit a.actor[href='/audit?actor={}']",
        ops_id(&c, &ops).await
    ))
    .await;
    b.find("#audit").await;
    assert_eq!(texts(&b, "#audit td.action").await, ["key.create"]);
    assert!(b.source().await.contains(&by_ops));
    // Time: nothing from tomorrow on, everything from today.
    let day = |t: i64| {
        let d = time::OffsetDateTime::from_unix_timestamp(t).expect("time");
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    };
    for (from, rows) in [(day(now() + 86_400), 0), (day(now()), 7)] {
        b.goto(&c.url("/audit")).await;
        b.script(&format!(
            "document.getElementById('from').value = '{from}'; \
             document.getElementById('to').value = '{from}';"
        ))
        .await;
        b.click_and_wait("#filter").await;
        b.find("#filter").await;
        assert_eq!(texts(&b, "#audit td.action").await.len(), rows, "{from}");
        if rows == 0 {
            assert!(b.text("#empty").await.contains("No event matches"));
        }
    }
    // A workspace's session sees its workspace's events (all 7 are in acme), never another's.
    key(&c, json!({"name": "elsewhere", "workspace_id": "zeta"})).await;
    b.goto(&c.url("/audit")).await;
    assert_eq!(texts(&b, "#audit td.action").await.len(), 8);
    b.click("#sign-out").await;
    b.sign_in(&c, &ops).await;
    b.goto(&c.url("/audit")).await;
    b.find("#audit").await;
    assert_eq!(texts(&b, "#audit td.action").await.len(), 7);
    assert!(!b.source().await.contains("elsewhere"));
    // A bad filter is a 400 page, not a crash.
    b.goto(&c.url("/audit?action=key.explode")).await;
    assert!(b.source().await.contains("action: one of"));
    b.close().await;
}

/// The key id of the workspace key `secret` (from its own audit rows' actor).
async fn ops_id(c: &Console, secret: &str) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .get(c.url("/v1/audit?order=desc&limit=1"))
        .bearer_auth(secret)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("JSON");
    v["items"][0]["actor"]["id"]
        .as_str()
        .expect("actor id")
        .to_owned()
}

#[tokio::test]
async fn the_keys_list_searches_names_filters_scope_and_expiry_and_a_key_shows_its_children() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    key(
        &c,
        json!({"name": "Orders API", "scopes": ["orders:read"], "expires_in": 2 * 86_400}),
    )
    .await;
    key(
        &c,
        json!({"name": "orders batch", "scopes": ["orders:write"]}),
    )
    .await;
    key(
        &c,
        json!({"name": "billing", "scopes": ["billing:read"], "expires_in": 20 * 86_400}),
    )
    .await;
    let parent = c
        .api_create(
            ADMIN_TOKEN,
            json!({"name": "ci parent", "workspace_id": "acme", "scopes": ["repo:read"], "resources": ["acme/*"]}),
        )
        .await;
    let parent_secret = parent["secret"].as_str().expect("secret");
    let parent_id = parent["key"]["id"].as_str().expect("id");
    for subject in ["run-7", "run-8"] {
        let resp = reqwest::Client::new()
            .post(c.url("/v1/keys/exchange"))
            .bearer_auth(parent_secret)
            .json(&json!({"subject": subject, "scopes": ["repo:read"]}))
            .send()
            .await
            .expect("exchange");
        assert_eq!(resp.status(), 201);
    }
    b.sign_in(&c, ADMIN_TOKEN).await;
    let names = || async { texts(&b, "#keys a.key-name").await };

    b.fill("#q", "ORDERS").await;
    b.click_and_wait("#filter").await;
    b.find("#keys").await;
    assert_eq!(names().await, ["Orders API", "orders batch"]);
    b.fill("#scope", "orders:write").await;
    b.click_and_wait("#filter").await;
    b.find("#keys").await;
    assert_eq!(names().await, ["orders batch"]);
    b.goto(&c.url("/keys")).await;
    b.find("#expiring")
        .await
        .select_by_value("7")
        .await
        .expect("expiring");
    b.click_and_wait("#filter").await;
    b.find("#keys").await;
    let soon = names().await;
    // Active keys expiring within 7 days: the 2-day key and the exchanged children (1 hour).
    assert!(soon.contains(&"Orders API".to_owned()), "{soon:?}");
    for name in ["billing", "orders batch", "ci parent"] {
        assert!(!soon.contains(&name.to_owned()), "{name} in {soon:?}");
    }
    assert_eq!(soon.len(), 3, "{soon:?}");
    b.find("#used")
        .await
        .select_by_value("never")
        .await
        .expect("used");
    b.fill("#q", "zzz").await;
    b.click_and_wait("#filter").await;
    assert!(b.text("#empty").await.contains("No key matches"));
    b.screenshot("keys-filtered").await;

    // The parent's page lists its two children.
    b.goto(&c.url(&format!("/keys/{parent_id}"))).await;
    let children = texts(&b, "#children tbody tr").await;
    assert_eq!(children.len(), 2, "{children:?}");
    assert!(children.iter().all(|r| r.contains("active")));
    b.goto(&c.url("/keys")).await;
    b.find("#keys").await;
    let first = b
        .script("return document.querySelector('#keys a.key-name').getAttribute('href');")
        .await;
    b.goto(&c.url(first.as_str().expect("href"))).await;
    assert!(
        b.has("#no-children").await,
        "a key without children says so"
    );
    b.close().await;
}

#[tokio::test]
async fn the_github_page_lists_the_broker_registry() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pem = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fake-github/fixtures/app-key-1.pkcs1.pem");
    let app = format!(
        "name=main,app-id=1,private-key={},api-url=http://127.0.0.1:9",
        pem.display()
    );
    let c = Console::start_with(&["--github-app", &app]);
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    b.click("#nav-github").await;
    assert!(b.text("#empty").await.contains("keygate repos add"));
    for (org, repo) in [("acme", "widgets"), ("acme", "gadgets")] {
        let resp = reqwest::Client::new()
            .post(c.url("/v1/repositories"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"organization": org, "repository": repo}))
            .send()
            .await
            .expect("register");
        assert_eq!(resp.status(), 201);
    }
    b.client.refresh().await.expect("reload");
    b.find("#repositories").await;
    assert_eq!(
        texts(&b, "#repositories td.repo").await,
        ["acme/widgets", "acme/gadgets"]
    );
    assert!(b.text("#repositories").await.contains("not yet seen"));
    b.screenshot("github").await;
    // A workspace key without `github:repositories` is refused, as by the API.
    let ops = c.workspace_key("acme").await;
    b.click("#sign-out").await;
    b.sign_in(&c, &ops).await;
    b.goto(&c.url("/github")).await;
    assert!(!b.has("#repositories").await);
    assert!(b.source().await.contains("403"));
    b.close().await;
}

#[tokio::test]
async fn the_edges_page_shows_each_proxy_its_revision_and_whether_it_lags() {
    let _one = ONE_AT_A_TIME.lock().await;
    // An edge behind the current revision counts as lagging at once.
    let c = Console::start_with(&["--edge-lagging-after-s", "0"]);
    let b = Browser::start().await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    b.click("#nav-edges").await;
    assert!(b.text("#empty").await.contains("kind edge"));

    let edge = edge(&c).await;
    let held = c.revision(&edge).await;
    key(&c, json!({"name": "newer"})).await;
    let current = c.revision(&edge).await;
    let (fresh, behind) = ("a".repeat(32), "b".repeat(32));
    c.report_edge(&edge, &fresh, "envoy-eu-1", current).await;
    c.report_edge(&edge, &behind, "envoy-us-1", held).await;
    // Lagging is behind for longer than `--edge-lagging-after-s` (0): a whole second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    b.goto(&c.url("/edges")).await;
    assert_eq!(b.text("#current-revision").await, current.to_string());
    let fresh_row = b.text(&format!("#edge-{fresh}")).await;
    assert!(
        fresh_row.contains("envoy-eu-1 (ingress)") && fresh_row.contains("live"),
        "{fresh_row}"
    );
    assert!(fresh_row.contains("up to date"), "{fresh_row}");
    let behind_row = b.text(&format!("#edge-{behind}")).await;
    assert!(
        behind_row.contains("lagging") && behind_row.contains(" behind, for "),
        "{behind_row}"
    );
    let counts = b.text("#edge-counts").await;
    assert!(
        counts.contains("1 live") && counts.contains("1 lagging"),
        "{counts}"
    );
    b.screenshot("edges").await;

    // The fleet is the admin's, as in the API.
    let ops = c.workspace_key("acme").await;
    b.click("#sign-out").await;
    b.sign_in(&c, &ops).await;
    b.goto(&c.url("/edges")).await;
    assert!(!b.has("#edges").await);
    assert!(b.source().await.contains("403"));
    b.close().await;
}

#[tokio::test]
async fn every_input_has_a_label_and_a_key_is_created_from_the_keyboard() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let id = key(&c, json!({"name": "labelled"})).await;
    let b = Browser::start().await;
    b.goto(&c.url("/sign-in")).await;
    let unlabelled = "return [...document.querySelectorAll('input, select, textarea')]\
        .filter(e => e.type !== 'hidden')\
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))\
        .map(e => e.outerHTML);";
    assert_eq!(b.script(unlabelled).await, json!([]), "sign-in");
    b.sign_in(&c, ADMIN_TOKEN).await;
    for path in [
        "/keys".to_owned(),
        "/keys/new".to_owned(),
        format!("/keys/{id}"),
        format!("/keys/{id}/revoke"),
        "/overview".to_owned(),
        "/audit".to_owned(),
        "/edges".to_owned(),
        "/github".to_owned(),
    ] {
        b.goto(&c.url(&path)).await;
        b.find("main").await;
        assert_eq!(b.script(unlabelled).await, json!([]), "{path}");
    }

    // The create form from the keyboard alone: type, Tab between fields, Enter submits.
    b.goto(&c.url("/keys/new")).await;
    let name = b.find("#name").await;
    name.click().await.expect("focus");
    name.send_keys("typed service").await.expect("type");
    let focused = "return document.activeElement.id;";
    assert_eq!(b.script(focused).await, json!("name"));
    name.send_keys("\u{E004}").await.expect("tab");
    assert_ne!(b.script(focused).await, json!("name"), "Tab moves on");
    name.send_keys("\u{E007}").await.expect("enter");
    b.find("#key-id").await;
    assert!(b.text("#secret").await.starts_with("kg_demo_"));
    b.close().await;
}

#[tokio::test]
async fn at_a_phone_width_no_page_scrolls_sideways() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Console::start();
    let b = Browser::start().await;
    let edge = edge(&c).await;
    let id = key(
        &c,
        json!({"name": "a rather long key name for the payments reconciliation service",
               "owner_id": "team-payments-reconciliation", "scopes": ["payments:read", "payments:write"],
               "resources": ["payments/reconciliation/*"], "expires_in": 3 * 86_400}),
    )
    .await;
    key(
        &c,
        json!({"name": "search indexer", "owner_id": "team-search"}),
    )
    .await;
    c.report_usage(&edge, "b-1", &[(&id, 77, now())]).await;
    b.resize(390, 844).await;
    b.sign_in(&c, ADMIN_TOKEN).await;
    let width = b.script("return window.innerWidth;").await;
    assert!(width.as_i64().expect("width") <= 390, "{width}");
    for (path, shot) in [
        ("/keys".to_owned(), "phone-keys"),
        (format!("/keys/{id}"), "phone-key"),
        ("/overview".to_owned(), "phone-overview"),
        ("/audit".to_owned(), "phone-audit"),
        ("/edges".to_owned(), "phone-edges"),
        ("/keys/new".to_owned(), "phone-key-new"),
    ] {
        b.goto(&c.url(&path)).await;
        b.find("main").await;
        if let Some(o) = b.overflow().await {
            b.screenshot(&format!("{shot}-overflow")).await;
            panic!("{path} overflows at 390 px: {o}");
        }
        b.screenshot(shot).await;
    }
    // The chart is drawn at the page's width.
    b.goto(&c.url(&format!("/keys/{id}"))).await;
    let w = b
        .script("return document.getElementById('usage-chart').getBoundingClientRect().width;")
        .await;
    assert!(w.as_f64().expect("width") <= 390.0, "{w}");
    assert_eq!(b.text("#usage-total").await, "77");
    b.close().await;
}
