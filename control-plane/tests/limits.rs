//! Rate limits and credits on keys (issue 27, the control plane's side), through real HTTP on
//! SQLite and on PostgreSQL: issuance with limits and credits (shown by the API, carried by the
//! key set as each key's policy), bad input refused with nothing changed, workspace defaults
//! inherited unless a key says otherwise, a child never above its parent, credits spent by the
//! edges' usage reports and exactly by verify until the key is `credits_exhausted` in the feed
//! (audited, with its webhook event), forward-auth's uses taken at its flush until it refuses
//! the key `429 credits_exhausted`, refills that put it back, once per due time even with two
//! replicas refilling, and the console's key page showing it all.

mod common;

use std::time::Duration;

use common::{Engine, InProcessServer, assert_error, fresh_database};
use keygate_control_plane::http::keys::IssuedKey;
use keygate_control_plane::test_support::WebhookReceiver;
use keygate_control_plane::test_support::limits::{
    edge_key, forward_auth, metrics_text, policy_in_set, report_usage, until_forward_auth_allows,
    usage_sums, with_forward_auth,
};
use keygate_protocol::policy::{KeyState, LimitPool, Policy, RateLimit};
use keygate_protocol::wire::{self, Message};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    issuance_with_limits_and_credits_is_shown_and_carried_in_the_set,
    workspace_defaults_are_inherited_unless_a_key_says_otherwise,
    a_childs_limits_and_credits_never_exceed_its_parents,
    usage_and_verify_spend_credits_until_the_key_is_exhausted_in_the_feed,
    a_refill_puts_the_key_back_once_per_due_time_across_two_replicas,
    the_console_key_page_shows_limits_credits_and_limited_requests,
    forward_auth_spends_credits_at_its_flush_and_then_refuses_the_key,
    a_filter_that_reads_only_version_1_gets_what_it_can_hold,
);

fn limit(name: &str, limit: u32, window_s: u32, pool: LimitPool) -> RateLimit {
    RateLimit {
        name: name.into(),
        limit,
        window_s,
        pool,
    }
}

async fn key_count(s: &InProcessServer) -> usize {
    let (st, v) = s.admin(Method::GET, "/v1/keys?limit=1000", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().len()
}

/// Audit rows of `action` about key `id`.
async fn audit_rows(s: &InProcessServer, id: &str, action: &str) -> Vec<Value> {
    let (st, v) = s
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={id}&action={action}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

async fn issuance_with_limits_and_credits_is_shown_and_carried_in_the_set(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let IssuedKey { key, .. } = s
        .create(json!({
            "name": "metered",
            "limits": [
                {"name": "burst", "limit": 100, "window": "10s"},
                {"name": "day", "limit": 5000, "window": 86400, "pool": "owner"}
            ],
            "credits": {"remaining": 500, "refill": {"amount": 500, "interval": "daily"}}
        }))
        .await;
    let limits = serde_json::to_value(&key.limits).unwrap();
    assert_eq!(
        limits,
        json!([
            {"name": "burst", "limit": 100, "window_s": 10, "pool": "key"},
            {"name": "day", "limit": 5000, "window_s": 86400, "pool": "owner"}
        ])
    );
    let credits = key.credits.clone().expect("credits shown");
    assert_eq!(credits.remaining, 500);
    assert_eq!(credits.refill_interval.as_deref(), Some("daily"));
    let next = credits.next_refill_at.expect("next refill");
    assert_eq!(next % 86_400, 0, "daily refills fall at 00:00 UTC");
    let shown = s.key(&key.id).await;
    assert_eq!(shown.credits, key.credits);
    assert_eq!(
        policy_in_set(&s, &edge, &key.id).await,
        Some(Policy {
            state: KeyState::Active,
            limits: vec![
                limit("burst", 100, 10, LimitPool::Key),
                // The owner's pool, scoped to the key's workspace.
                limit("day", 5000, 86_400, LimitPool::OwnerIn("default".into()))
            ],
        })
    );
    // A key without limits is exactly as before: the default policy.
    let IssuedKey { key: plain, .. } = s.create(json!({"name": "plain"})).await;
    assert_eq!(plain.limits, None);
    assert_eq!(plain.credits, None);
    assert_eq!(
        policy_in_set(&s, &edge, &plain.id).await,
        Some(Policy::default())
    );

    // Bad input: the structured error, and no key.
    let before = key_count(&s).await;
    for (body, code) in [
        (
            json!({"name": "x", "limits": [{"name": "Burst", "limit": 1, "window": "1s"}]}),
            "INVALID_LIMITS",
        ),
        (
            json!({"name": "x", "limits": [{"name": "b", "limit": 0, "window": "1s"}]}),
            "INVALID_LIMITS",
        ),
        (
            json!({"name": "x", "limits": [{"name": "b", "limit": 1, "window": "1w"}]}),
            "INVALID_LIMITS",
        ),
        (
            json!({"name": "x", "limits": [{"name": "b", "limit": 1, "window": "32d"}]}),
            "INVALID_LIMITS",
        ),
        (
            json!({"name": "x", "limits": [{"name": "b", "limit": 1, "window": "1s", "pool": "team"}]}),
            "INVALID_LIMITS",
        ),
        (
            json!({"name": "x", "limits": [{"name": "b", "limit": 1, "window": "1s"}, {"name": "b", "limit": 2, "window": "1s"}]}),
            "INVALID_LIMITS",
        ),
        (
            json!({"name": "x", "credits": {"remaining": -1}}),
            "INVALID_CREDITS",
        ),
        (
            json!({"name": "x", "credits": {"remaining": 1, "refill": {"amount": 1, "interval": "weekly"}}}),
            "INVALID_CREDITS",
        ),
    ] {
        let (st, v) = s.admin(Method::POST, "/v1/keys", Some(body)).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, code);
    }
    assert_eq!(key_count(&s).await, before, "nothing was created");

    // A change of limits is audited and travels in the feed.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", plain.id),
            Some(json!({"limits": [{"name": "burst", "limit": 7, "window": "1m"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["limits"][0]["window_s"], 60);
    assert_eq!(
        policy_in_set(&s, &edge, &plain.id).await.unwrap().limits,
        [limit("burst", 7, 60, LimitPool::Key)]
    );
    let rows = audit_rows(&s, &plain.id, "key.limits").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["before"]["limits"], Value::Null);
    assert_eq!(rows[0]["after"]["limits"][0]["limit"], 7);
    // A bad change changes nothing.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", plain.id),
            Some(json!({"limits": [{"name": "burst", "limit": 7, "window": "0s"}]})),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_LIMITS");
    assert_eq!(audit_rows(&s, &plain.id, "key.limits").await.len(), 1);
    s.stop().await;
}

async fn workspace_defaults_are_inherited_unless_a_key_says_otherwise(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let inherits = s.create(json!({"name": "inherits"})).await.key;
    let own = s
        .create(json!({"name": "own", "limits": [{"name": "burst", "limit": 5, "window": "1s"}]}))
        .await
        .key;
    let none = s.create(json!({"name": "none", "limits": []})).await.key;
    let (st, v) = s
        .admin(
            Method::PUT,
            "/v1/workspaces/default/limits",
            Some(json!({"default_limits": [{"name": "day", "limit": 1000, "window": "1d", "pool": "owner"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let day = limit("day", 1000, 86_400, LimitPool::OwnerIn("default".into()));
    assert_eq!(
        policy_in_set(&s, &edge, &inherits.id).await.unwrap().limits,
        std::slice::from_ref(&day)
    );
    assert_eq!(
        policy_in_set(&s, &edge, &own.id).await.unwrap().limits,
        [limit("burst", 5, 1, LimitPool::Key)],
        "its own list replaces the defaults"
    );
    assert!(
        policy_in_set(&s, &edge, &none.id)
            .await
            .unwrap()
            .limits
            .is_empty()
    );
    // A key issued later inherits them too; another workspace does not.
    let later = s.create(json!({"name": "later"})).await.key;
    assert_eq!(
        policy_in_set(&s, &edge, &later.id).await.unwrap().limits,
        [day]
    );
    let elsewhere = s
        .create(json!({"name": "elsewhere", "workspace_id": "other"}))
        .await
        .key;
    assert!(
        policy_in_set(&s, &edge, &elsewhere.id)
            .await
            .unwrap()
            .limits
            .is_empty()
    );
    let (st, v) = s
        .admin(Method::GET, "/v1/workspaces/default/limits", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["default_limits"][0]["name"], "day");
    let (st, v) = s
        .admin(Method::GET, "/v1/audit?action=workspace.limits", None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    // A workspace key cannot set another workspace's defaults, nor lift its own limits or
    // credits; bad defaults change nothing.
    let ws = s
        .create(json!({"name": "ws", "scopes": ["keys:read", "keys:write"], "credits": {"remaining": 3}}))
        .await;
    let (st, v) = s
        .call(
            Some(&ws.secret),
            Method::PATCH,
            &format!("/v1/keys/{}/limits", ws.key.id),
            Some(json!({"credits": null})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    assert_eq!(s.key(&ws.key.id).await.credits.unwrap().remaining, 3);
    let (st, v) = s
        .call(
            Some(&ws.secret),
            Method::PUT,
            "/v1/workspaces/other/limits",
            Some(json!({"default_limits": []})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (st, v) = s
        .admin(
            Method::PUT,
            "/v1/workspaces/default/limits",
            Some(json!({"default_limits": [{"name": "day", "limit": 0, "window": "1d"}]})),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_LIMITS");
    let (_, v) = s
        .admin(Method::GET, "/v1/workspaces/default/limits", None)
        .await;
    assert_eq!(v["default_limits"][0]["limit"], 1000, "unchanged");
    // Cleared: the inheriting key has no limits again.
    let (st, _) = s
        .admin(
            Method::PUT,
            "/v1/workspaces/default/limits",
            Some(json!({"default_limits": null})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        policy_in_set(&s, &edge, &inherits.id).await,
        Some(Policy::default())
    );
    s.stop().await;
}

async fn children(s: &InProcessServer, parent: &str) -> usize {
    let (st, v) = s
        .admin(Method::GET, &format!("/v1/keys?parent_id={parent}"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().len()
}

async fn a_childs_limits_and_credits_never_exceed_its_parents(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let parent = s
        .create(json!({
            "name": "parent",
            "scopes": ["repo:read"],
            "limits": [{"name": "burst", "limit": 10, "window": "1s"}],
            "credits": {"remaining": 100}
        }))
        .await;
    let exchange = |body: Value| {
        let s = &s;
        let secret = parent.secret.clone();
        async move {
            s.call(Some(&secret), Method::POST, "/v1/keys/exchange", Some(body))
                .await
        }
    };
    for body in [
        json!({"subject": "ci", "limits": [{"name": "burst", "limit": 11, "window": "1s"}]}),
        json!({"subject": "ci", "limits": [{"name": "other", "limit": 1, "window": "1s"}]}),
        json!({"subject": "ci", "limits": [{"name": "burst", "limit": 10, "window": "1s", "pool": "owner"}]}),
        json!({"subject": "ci", "credits": {"remaining": 101}}),
    ] {
        let (st, v) = exchange(body).await;
        assert_error(st, &v, StatusCode::FORBIDDEN, "LIMITS_EXCEED_PARENT");
    }
    assert_eq!(children(&s, &parent.key.id).await, 0, "nothing was issued");
    // By default the child holds its parent's limits and its remaining balance.
    let (st, v) = exchange(json!({"subject": "ci"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let child: IssuedKey = serde_json::from_value(v).unwrap();
    assert_eq!(child.key.credits.as_ref().unwrap().remaining, 100);
    assert_eq!(
        policy_in_set(&s, &edge, &child.key.id)
            .await
            .unwrap()
            .limits,
        [limit("burst", 10, 1, LimitPool::Key)]
    );
    // Tighter is fine (600/min is 10/s).
    let (st, v) = exchange(json!({"subject": "ci", "limits": [{"name": "burst", "limit": 600, "window": "1m"}, {"name": "x", "limit": 1, "window": "1s"}], "credits": {"remaining": 5}})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // A change of the child above its parent is refused and changes nothing.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", child.key.id),
            Some(json!({"limits": [{"name": "burst", "limit": 20, "window": "1s"}]})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "LIMITS_EXCEED_PARENT");
    assert!(audit_rows(&s, &child.key.id, "key.limits").await.is_empty());
    // The parent tightened later: the set bounds the child by the parent's new limit.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", parent.key.id),
            Some(json!({"limits": [{"name": "burst", "limit": 2, "window": "1s"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        policy_in_set(&s, &edge, &child.key.id)
            .await
            .unwrap()
            .limits,
        [limit("burst", 2, 1, LimitPool::Key)]
    );
    assert_eq!(children(&s, &parent.key.id).await, 2);
    // The parent runs out: its child is out too, in the set and at verify.
    assert!(s.verify(&child.secret, &[], None).await.valid);
    report(
        &s,
        &edge,
        "parent-out",
        json!([{"key_id": parent.key.id, "count": 100, "last_used_at": 0}]),
    )
    .await;
    assert_eq!(
        policy_in_set(&s, &edge, &child.key.id).await.unwrap().state,
        KeyState::CreditsExhausted
    );
    assert_eq!(
        s.verify(&child.secret, &[], None).await.code,
        "CREDITS_EXHAUSTED"
    );
    s.stop().await;
}

async fn report(s: &InProcessServer, edge: &str, batch: &str, entries: Value) {
    let (st, v) = report_usage(s, edge, batch, entries).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

async fn usage_and_verify_spend_credits_until_the_key_is_exhausted_in_the_feed(e: Engine) {
    let s = InProcessServer::start(e).await;
    let rx = WebhookReceiver::start().await;
    let (st, v) = s
        .admin(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": rx.url(), "event_types": ["key.credits_exhausted"]})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    rx.set_secret(v["secret"].as_str().unwrap());
    let edge = edge_key(&s).await;
    let k = s
        .create(json!({"name": "metered", "credits": {"remaining": 10}}))
        .await;
    let id = k.key.id.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    report(
        &s,
        &edge,
        "b1",
        json!([{"key_id": id, "count": 4, "last_used_at": now, "limited": 2}]),
    )
    .await;
    // The same batch again takes nothing.
    report(
        &s,
        &edge,
        "b1",
        json!([{"key_id": id, "count": 4, "last_used_at": now}]),
    )
    .await;
    assert_eq!(s.key(&id).await.credits.unwrap().remaining, 6);
    // Verify takes one credit each, exactly.
    for left in [5, 4] {
        let r = s.verify(&k.secret, &[], None).await;
        assert!(r.valid, "{r:?}");
        assert_eq!(r.credits_remaining, Some(left));
    }
    assert_eq!(s.key(&id).await.credits.unwrap().remaining, 4);
    assert_eq!(
        policy_in_set(&s, &edge, &id).await.unwrap().state,
        KeyState::Active
    );
    // More than is left: the balance stops at 0 and the key is exhausted in the feed.
    report(
        &s,
        &edge,
        "b2",
        json!([{"key_id": id, "count": 9, "last_used_at": now}]),
    )
    .await;
    assert_eq!(s.key(&id).await.credits.unwrap().remaining, 0);
    assert_eq!(
        policy_in_set(&s, &edge, &id).await.unwrap().state,
        KeyState::CreditsExhausted
    );
    let r = s.verify(&k.secret, &[], None).await;
    assert!(!r.valid);
    assert_eq!(r.code, "CREDITS_EXHAUSTED");
    let rows = audit_rows(&s, &id, "key.credits_exhausted").await;
    assert_eq!(rows.len(), 1, "exhausted once");
    assert_eq!(rows[0]["before"]["credits"]["remaining"], 4);
    assert_eq!(rows[0]["after"]["credits"]["remaining"], 0);
    assert_eq!(rows[0]["actor"]["id"], "keygate");
    let got = rx
        .wait_for(Duration::from_secs(10), "key.credits_exhausted", |r| {
            r.iter().any(|x| x.body["data"]["key"]["id"] == id.as_str())
        })
        .await;
    let ev = got
        .iter()
        .find(|x| x.body["data"]["key"]["id"] == id.as_str())
        .unwrap();
    assert!(ev.verified, "signed");
    assert_eq!(ev.body["type"], "key.credits_exhausted");
    // Usage keeps counting after exhaustion, the balance stays at 0, no second exhaustion.
    report(
        &s,
        &edge,
        "b3",
        json!([{"key_id": id, "count": 3, "last_used_at": now, "limited": 5}]),
    )
    .await;
    assert_eq!(s.key(&id).await.credits.unwrap().remaining, 0);
    assert_eq!(audit_rows(&s, &id, "key.credits_exhausted").await.len(), 1);
    // Verify's own exhaustion: a key with one credit.
    let one = s
        .create(json!({"name": "one", "credits": {"remaining": 1}}))
        .await;
    assert!(s.verify(&one.secret, &[], None).await.valid);
    assert_eq!(
        policy_in_set(&s, &edge, &one.key.id).await.unwrap().state,
        KeyState::CreditsExhausted
    );
    assert_eq!(
        s.verify(&one.secret, &[], None).await.code,
        "CREDITS_EXHAUSTED"
    );
    let metrics = metrics_text(&s).await;
    assert!(
        metrics.contains("keygate_credits_exhaustions_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keygate_usage_limited_total 7"),
        "{metrics}"
    );
    // The limited counts are kept per hour.
    assert_eq!(usage_sums(&s, &id).await.1, 7);
    s.stop().await;
}

async fn a_refill_puts_the_key_back_once_per_due_time_across_two_replicas(e: Engine) {
    let (url, _dir) = fresh_database(e);
    let fast = |c: &mut keygate_control_plane::runtime::config::Config| c.refill_check_ms = 20;
    let a = InProcessServer::start_on(&url, fast).await;
    let b = InProcessServer::start_on(&url, fast).await;
    let edge = edge_key(&a).await;
    let k = a
        .create(json!({"name": "refilled", "credits": {"remaining": 1, "refill": {"amount": 3, "interval": 2}}}))
        .await;
    let id = k.key.id.clone();
    let first_due = k.key.credits.as_ref().unwrap().next_refill_at.unwrap();
    assert!(b.verify(&k.secret, &[], None).await.valid);
    assert_eq!(
        policy_in_set(&a, &edge, &id).await.unwrap().state,
        KeyState::CreditsExhausted
    );
    // Back to active with the refill's amount, through the feed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while policy_in_set(&a, &edge, &id).await.map(|p| p.state) != Some(KeyState::Active) {
        assert!(
            std::time::Instant::now() < deadline,
            "not refilled within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.key(&id).await.credits.unwrap().remaining, 3);
    // Let several more due times pass with both replicas refilling.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let next = a.key(&id).await.credits.unwrap().next_refill_at.unwrap();
    let due_times = (next - first_due) / 2;
    assert!(due_times >= 3, "{due_times} refills due");
    let refills = audit_rows(&a, &id, "key.credits_refill").await;
    assert_eq!(
        refills.len() as i64,
        due_times,
        "one refill per due time, never two"
    );
    let mut seen: Vec<i64> = refills
        .iter()
        .map(|r| r["before"]["credits"]["next_refill_at"].as_i64().unwrap())
        .collect();
    seen.dedup();
    assert_eq!(seen.len() as i64, due_times, "each due time refilled once");
    a.stop().await;
    b.stop().await;
}

async fn the_console_key_page_shows_limits_credits_and_limited_requests(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let k = s
        .create(json!({
            "name": "metered",
            "limits": [{"name": "burst", "limit": 100, "window": "10s", "pool": "owner"}],
            "credits": {"remaining": 50, "refill": {"amount": 50, "interval": "monthly"}}
        }))
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    report(
        &s,
        &edge,
        "c1",
        json!([{"key_id": k.key.id, "count": 6, "last_used_at": now, "limited": 4}]),
    )
    .await;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser
        .post(s.url("/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("credential={}", common::ADMIN))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = browser
        .get(s.url(&format!("/keys/{}", k.key.id)))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<dd id="key-limits">burst: 100 per 10 s, owner&#39;s pool</dd>"#)
            || html.contains("burst: 100 per 10 s, owner"),
        "{html}"
    );
    assert!(
        html.contains("44 remaining (refill to 50, monthly)"),
        "{html}"
    );
    assert!(html.contains(r#"id="key-next-refill""#), "{html}");
    assert!(html.contains(r#"class="bar limited""#), "{html}");
    assert!(html.contains(r#"data-limited="4""#), "{html}");
    s.stop().await;
}

async fn forward_auth_spends_credits_at_its_flush_and_then_refuses_the_key(e: Engine) {
    let (s, _config_dir) = with_forward_auth(
        e,
        r#"{"routes":[{"path_prefix":"/"}],"key_sources":[{"header":"x-api-key"}]}"#,
    )
    .await;
    let k = s
        .create(json!({"name": "metered", "credits": {"remaining": 3}}))
        .await;
    let call = || async {
        let (st, _, body) = forward_auth(&s, &k.secret).await;
        (st, body)
    };
    // The mirror has the key once the first call passes; three passes in all.
    until_forward_auth_allows(&s, &k.secret).await;
    for _ in 0..2 {
        assert_eq!(call().await.0, StatusCode::OK);
    }
    // The flush takes the three credits; at 0 the key is refused as the filter refuses it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = s.key(&k.key.id).await.credits.unwrap().remaining;
        if left == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{left} credits left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (st, body) = call().await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "still {st}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(body.contains("credits_exhausted"), "{body}");
    assert_eq!(
        audit_rows(&s, &k.key.id, "key.credits_exhausted")
            .await
            .len(),
        1
    );
    s.stop().await;
}

/// A filter built before policies does not name `version=2` in its `Accept`: it gets the set as
/// format version 1 can hold it (the limited key without its limits, not the key out of
/// credits), snapshot and delta alike, while a current filter gets every policy.
async fn a_filter_that_reads_only_version_1_gets_what_it_can_hold(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let IssuedKey { key: limited, .. } = s
        .create(json!({"name": "metered", "limits": [{"name": "burst", "limit": 100, "window": "10s"}]}))
        .await;
    let spent = s
        .create(json!({"name": "spent", "credits": {"remaining": 1}}))
        .await;
    let before = spent.revision;
    assert!(
        s.verify(&spent.secret, &[], None).await.valid,
        "its one credit"
    );
    let read = |accept: Option<&'static str>, since: Option<i64>| {
        let s = &s;
        let edge = edge.clone();
        async move {
            let path = since.map_or("/v1/keyset".to_owned(), |r| format!("/v1/keyset?since={r}"));
            let mut req = s.http.get(s.url(&path)).bearer_auth(&edge);
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = resp.bytes().await.unwrap();
            (
                wire::peek_header(&bytes).unwrap().version,
                wire::decode(&bytes).unwrap(),
            )
        }
    };
    let ids = |m: &Message| -> Vec<(String, Policy)> {
        let entries = match m {
            Message::Snapshot(s) => &s.entries,
            Message::Delta(d) => &d.upserts,
        };
        let mut v: Vec<_> = entries
            .iter()
            .map(|e| (e.key_id.to_string(), e.policy.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let burst = Policy {
        state: KeyState::Active,
        limits: vec![limit("burst", 100, 10, LimitPool::Key)],
    };
    let spent_policy = Policy {
        state: KeyState::CreditsExhausted,
        limits: Vec::new(),
    };
    for accept in [
        None,
        Some(wire::CONTENT_TYPE),
        Some("application/vnd.keygate.keyset; version=1"),
    ] {
        let (version, m) = read(accept, None).await;
        assert_eq!(version, wire::VERSION_1, "{accept:?}");
        assert_eq!(
            ids(&m),
            [(limited.id.clone(), Policy::default())],
            "{accept:?}"
        );
    }
    let (version, m) = read(Some(wire::ACCEPT_V2), None).await;
    assert_eq!(version, wire::VERSION_2);
    let mut want = vec![
        (limited.id.clone(), burst),
        (spent.key.id.clone(), spent_policy),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ids(&m), want);
    // The delta that took the spent key out of credits: a removal for the old reader.
    let (version, m) = read(None, Some(before)).await;
    assert_eq!(version, wire::VERSION_1);
    let Message::Delta(d) = m else {
        panic!("a delta from {before}")
    };
    assert!(d.upserts.is_empty(), "{d:?}");
    assert_eq!(d.removals.len(), 1);
    let (_, m) = read(Some(wire::ACCEPT_V2), Some(before)).await;
    let Message::Delta(d) = m else {
        panic!("a delta from {before}")
    };
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].policy.state, KeyState::CreditsExhausted);
    s.stop().await;
}
