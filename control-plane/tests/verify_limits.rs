//! `POST /v1/keys/verify` holds a key to its rate limits as the filter does (issue 27), through
//! real HTTP on SQLite and on PostgreSQL: the filter's fixed windows and pools counted in the
//! shared database (a refused call spends no credit and counts in no window), exactly the
//! limit across two replicas on one PostgreSQL, keys without limits answered as before, a parent's change seen by the
//! next verify of its child, forward-auth and verify holding a key to the same resolved policy
//! (a workspace default), and refusals kept by reason (`limited`, `credits_exhausted`) in the
//! usage an edge reports, the usage read back and the metrics.

mod common;

use std::time::Duration;

use common::{ADMIN, Engine, InProcessServer, fresh_database};
use keygate_control_plane::http::keys::verify::VerifyResult;
use keygate_control_plane::test_support::limits::{
    edge_key, forward_auth, metrics_text as metrics, now_s as now, report_usage,
    until_forward_auth_allows, usage_becomes, usage_sums, window_with_room, with_forward_auth,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    verify_counts_a_rate_limit_and_refuses_the_sixth_call_without_spending_a_credit,
    an_owner_pool_is_shared_by_every_key_of_the_owner,
    keys_without_limits_are_answered_as_before,
    a_parents_change_takes_effect_on_the_next_verify_of_its_child,
    forward_auth_and_verify_hold_a_key_to_the_same_workspace_default,
    usage_keeps_refusals_by_reason_and_old_reports_still_count,
    a_call_refused_by_one_limit_counts_in_none_of_the_others,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_verifying_one_key_pass_exactly_the_limit_in_one_window() {
        super::two_replicas_pass_exactly_the_limit(super::Engine::Postgres).await;
    }
}

/// `POST /v1/keys/verify` as the admin, the body as JSON.
async fn verify_raw(s: &InProcessServer, secret: &str) -> Value {
    let (st, v) = s
        .call(
            Some(ADMIN),
            Method::POST,
            "/v1/keys/verify",
            Some(json!({"key": secret})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

fn members(v: &Value) -> Vec<String> {
    let mut m: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    m.sort();
    m
}

async fn verify_counts_a_rate_limit_and_refuses_the_sixth_call_without_spending_a_credit(
    e: Engine,
) {
    let s = InProcessServer::start(e).await;
    let k = s
        .create(json!({
            "name": "limited",
            "limits": [{"name": "burst", "limit": 5, "window": "10s"}],
            "credits": {"remaining": 100}
        }))
        .await;
    window_with_room(10, 4).await;
    for i in 0..5 {
        let r = s.verify(&k.secret, &[], None).await;
        assert!(r.valid, "call {i}: {r:?}");
        assert_eq!(r.credits_remaining, Some(99 - i));
        let l = r.ratelimits.as_deref().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (
                l[0].name.as_str(),
                l[0].limit,
                l[0].window_s,
                l[0].remaining
            ),
            ("burst", 5, 10, 4 - i)
        );
        assert!((1..=10).contains(&l[0].reset_s) && !l[0].exceeded, "{l:?}");
    }
    let refused = verify_raw(&s, &k.secret).await;
    assert_eq!(refused["valid"], false, "{refused}");
    assert_eq!(refused["code"], "RATE_LIMITED");
    // The shape of every other refusal, plus the limit that refused.
    assert_eq!(
        members(&refused),
        [
            "code",
            "expires_at",
            "key_id",
            "owner_id",
            "ratelimits",
            "scopes",
            "valid"
        ]
    );
    assert!(refused["key_id"].is_null() && refused["scopes"].is_null());
    let r: VerifyResult = serde_json::from_value(refused).unwrap();
    let l = &r.ratelimits.unwrap()[0];
    assert_eq!(
        (l.name.as_str(), l.remaining, l.exceeded),
        ("burst", 0, true)
    );
    assert!((1..=10).contains(&l.reset_s), "{l:?}");
    assert_eq!(
        s.key(&k.key.id).await.credits.unwrap().remaining,
        95,
        "the refused call spent no credit"
    );
    // Its refusal is kept as `limited` and counted by reason.
    usage_becomes(&s, &k.key.id, (5, 1, 0)).await;
    let m = metrics(&s).await;
    assert!(
        m.contains(r#"keygate_verifications_total{code="RATE_LIMITED"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"keygate_limited_requests_total{source="verify",reason="rate_limited"} 1"#),
        "{m}"
    );
    // The next window admits the key again.
    let short = s
        .create(json!({"name": "short", "limits": [{"name": "s", "limit": 1, "window": "2s"}]}))
        .await;
    window_with_room(2, 1).await;
    assert!(s.verify(&short.secret, &[], None).await.valid);
    let r = s.verify(&short.secret, &[], None).await;
    assert_eq!(r.code, "RATE_LIMITED");
    let reset = r.ratelimits.unwrap()[0].reset_s;
    tokio::time::sleep(Duration::from_millis(reset as u64 * 1000 + 50)).await;
    assert!(s.verify(&short.secret, &[], None).await.valid);
    s.stop().await;
}

async fn a_call_refused_by_one_limit_counts_in_none_of_the_others(e: Engine) {
    let s = InProcessServer::start(e).await;
    let k = s
        .create(json!({"name": "two", "limits": [
            {"name": "wide", "limit": 10, "window": "60s"},
            {"name": "narrow", "limit": 1, "window": "60s"}
        ]}))
        .await;
    window_with_room(60, 10).await;
    let r = s.verify(&k.secret, &[], None).await;
    let got: Vec<_> = r
        .ratelimits
        .unwrap()
        .iter()
        .map(|l| (l.name.clone(), l.remaining))
        .collect();
    assert_eq!(
        got,
        [("wide".into(), 9), ("narrow".into(), 0)],
        "the key's order"
    );
    for _ in 0..3 {
        let r = s.verify(&k.secret, &[], None).await;
        assert_eq!(r.code, "RATE_LIMITED");
        assert_eq!(r.ratelimits.unwrap()[0].name, "narrow");
    }
    // Without the narrow limit, the wide one shows the three refusals were not counted.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", k.key.id),
            Some(json!({"limits": [{"name": "wide", "limit": 10, "window": "60s"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = s.verify(&k.secret, &[], None).await;
    assert_eq!(r.ratelimits.unwrap()[0].remaining, 8);
    s.stop().await;
}

async fn an_owner_pool_is_shared_by_every_key_of_the_owner(e: Engine) {
    let s = InProcessServer::start(e).await;
    let pooled = json!([{"name": "team", "limit": 3, "window": "60s", "pool": "owner"}]);
    let a = s
        .create(json!({"name": "a", "owner_id": "acme", "limits": pooled}))
        .await;
    let b = s
        .create(json!({"name": "b", "owner_id": "acme", "limits": pooled}))
        .await;
    let other = s
        .create(json!({"name": "c", "owner_id": "globex", "limits": pooled}))
        .await;
    window_with_room(60, 10).await;
    let remaining = |r: &VerifyResult| r.ratelimits.as_ref().unwrap()[0].remaining;
    let r = s.verify(&a.secret, &[], None).await;
    assert!(r.valid && remaining(&r) == 2, "{r:?}");
    let r = s.verify(&b.secret, &[], None).await;
    assert!(r.valid && remaining(&r) == 1, "one pool for both: {r:?}");
    let r = s.verify(&a.secret, &[], None).await;
    assert!(r.valid && remaining(&r) == 0, "{r:?}");
    for secret in [&a.secret, &b.secret] {
        assert_eq!(s.verify(secret, &[], None).await.code, "RATE_LIMITED");
    }
    // Another owner's pool is its own.
    let r = s.verify(&other.secret, &[], None).await;
    assert!(r.valid && remaining(&r) == 2, "{r:?}");
    s.stop().await;
}

async fn keys_without_limits_are_answered_as_before(e: Engine) {
    let s = InProcessServer::start(e).await;
    let plain = s.create(json!({"name": "plain"})).await;
    for _ in 0..30 {
        let v = verify_raw(&s, &plain.secret).await;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(
            members(&v),
            [
                "code",
                "expires_at",
                "key_id",
                "owner_id",
                "scopes",
                "valid"
            ],
            "no ratelimits, no credits: {v}"
        );
    }
    // With credits only: the credit as before, no ratelimits member.
    let metered = s
        .create(json!({"name": "metered", "credits": {"remaining": 2}}))
        .await;
    let v = verify_raw(&s, &metered.secret).await;
    assert_eq!(v["credits_remaining"], 1, "{v}");
    assert!(v.get("ratelimits").is_none(), "{v}");
    // A refusal for something else carries no ratelimits either.
    let v = verify_raw(&s, "kg_live_notakey").await;
    assert_eq!(v["code"], "MALFORMED");
    assert_eq!(
        members(&v),
        [
            "code",
            "expires_at",
            "key_id",
            "owner_id",
            "scopes",
            "valid"
        ]
    );
    s.stop().await;
}

async fn a_parents_change_takes_effect_on_the_next_verify_of_its_child(e: Engine) {
    let s = InProcessServer::start(e).await;
    let parent = s
        .create(json!({
            "name": "parent",
            "scopes": ["repo:read"],
            "limits": [{"name": "burst", "limit": 100, "window": "60s"}]
        }))
        .await;
    let (st, v) = s
        .call(
            Some(&parent.secret),
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "ci"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let child = v["secret"].as_str().unwrap().to_owned();
    window_with_room(60, 10).await;
    // Twice: the second answer comes from the cached record.
    for left in [99, 98] {
        let r = s.verify(&child, &[], None).await;
        assert!(r.valid, "{r:?}");
        let l = &r.ratelimits.unwrap()[0];
        assert_eq!((l.limit, l.remaining), (100, left));
    }
    // The parent tightened: the child's next verify holds it to the new limit.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", parent.key.id),
            Some(json!({"limits": [{"name": "burst", "limit": 3, "window": "60s"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = s.verify(&child, &[], None).await;
    assert!(r.valid, "{r:?}");
    let l = &r.ratelimits.unwrap()[0];
    assert_eq!((l.limit, l.remaining), (3, 0), "the window's count is kept");
    assert_eq!(s.verify(&child, &[], None).await.code, "RATE_LIMITED");
    // The parent's limits lifted: the child is back to its own (the parent's at exchange),
    // in the same window's count.
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{}/limits", parent.key.id),
            Some(json!({"limits": []})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = s.verify(&child, &[], None).await;
    assert!(r.valid, "{r:?}");
    let l = &r.ratelimits.unwrap()[0];
    assert_eq!((l.limit, l.remaining), (100, 96));
    // The parent revoked: the child is refused on its next verify.
    s.key_action(&parent.key.id, "revoke").await;
    assert_eq!(s.verify(&child, &[], None).await.code, "REVOKED");
    s.stop().await;
}

async fn forward_auth_and_verify_hold_a_key_to_the_same_workspace_default(e: Engine) {
    let (s, _config_dir) = with_forward_auth(
        e,
        r#"{"routes":[{"path_prefix":"/"}],"key_sources":[{"header":"x-api-key"}],"rate_limit_headers":true}"#,
    )
    .await;
    let (st, v) = s
        .admin(
            Method::PUT,
            "/v1/workspaces/default/limits",
            Some(json!({"default_limits": [{"name": "ws", "limit": 3, "window": "60s"}]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let k = s.create(json!({"name": "inherits"})).await;
    window_with_room(60, 15).await;
    let call = || async {
        let (st, headers, body) = forward_auth(&s, &k.secret).await;
        let policy = headers
            .get("ratelimit-policy")
            .map(|v| v.to_str().unwrap().to_owned());
        (st, policy, body)
    };
    // The mirror has the key (with the workspace's default) once the first call passes.
    let (first, _) = until_forward_auth_allows(&s, &k.secret).await;
    assert_eq!(
        first.get("ratelimit-policy").map(|v| v.to_str().unwrap()),
        Some(r#""ws";q=3;w=60"#)
    );
    for _ in 0..2 {
        assert_eq!(call().await.0, StatusCode::OK);
    }
    let (st, policy, body) = call().await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("rate_limited"), "{body}");
    assert_eq!(policy.as_deref(), Some(r#""ws";q=3;w=60"#));
    // Verify holds the key to the same limit (its own count, in the database).
    for left in [2, 1, 0] {
        let r = s.verify(&k.secret, &[], None).await;
        assert!(r.valid, "{r:?}");
        let l = &r.ratelimits.unwrap()[0];
        assert_eq!((l.name.as_str(), l.limit, l.window_s), ("ws", 3, 60));
        assert_eq!(l.remaining, left);
    }
    assert_eq!(s.verify(&k.secret, &[], None).await.code, "RATE_LIMITED");
    let m = metrics(&s).await;
    assert!(
        m.contains(
            r#"keygate_limited_requests_total{source="forward_auth",reason="rate_limited"} 1"#
        ),
        "{m}"
    );
    // Both refusals are the key's `limited`.
    usage_becomes(&s, &k.key.id, (6, 2, 0)).await;
    s.stop().await;
}

async fn usage_keeps_refusals_by_reason_and_old_reports_still_count(e: Engine) {
    let s = InProcessServer::start(e).await;
    let edge = edge_key(&s).await;
    let k = s.create(json!({"name": "reported"})).await;
    let id = k.key.id.clone();
    let t = now();
    let report = |batch: &'static str, entries: Value| report_usage(&s, &edge, batch, entries);
    let (st, v) = report(
        "both",
        json!([{"key_id": id, "count": 2, "last_used_at": t, "limited": 3, "credits_exhausted": 4}]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // A report from an edge built before either reason, and one from before `credits_exhausted`.
    let (st, v) = report(
        "old",
        json!([{"key_id": id, "count": 1, "last_used_at": t}]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = report(
        "older-limited",
        json!([{"key_id": id, "count": 1, "last_used_at": t, "limited": 1}]),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(usage_sums(&s, &id).await, (4, 4, 4));
    // Bad input changes nothing.
    let (st, v) = report(
        "too-many",
        json!([{"key_id": id, "count": 1, "last_used_at": t, "credits_exhausted": 2_000_000_000u64}]),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "INVALID_REQUEST", "{v}");
    assert_eq!(usage_sums(&s, &id).await, (4, 4, 4));
    let m = metrics(&s).await;
    for line in [
        r#"keygate_limited_requests_total{source="edge",reason="rate_limited"} 4"#,
        r#"keygate_limited_requests_total{source="edge",reason="credits_exhausted"} 4"#,
        "keygate_usage_limited_total 4",
    ] {
        assert!(m.contains(line), "{line} in {m}");
    }
    // Verify's refusal for credits is kept as `credits_exhausted`, not as `limited`.
    let one = s
        .create(json!({"name": "one", "credits": {"remaining": 1}}))
        .await;
    assert!(s.verify(&one.secret, &[], None).await.valid);
    for _ in 0..2 {
        assert_eq!(
            s.verify(&one.secret, &[], None).await.code,
            "CREDITS_EXHAUSTED"
        );
    }
    usage_becomes(&s, &one.key.id, (1, 0, 2)).await;
    let m = metrics(&s).await;
    assert!(
        m.contains(
            r#"keygate_limited_requests_total{source="verify",reason="credits_exhausted"} 2"#
        ),
        "{m}"
    );
    s.stop().await;
}

/// Two replicas on one database verify one key (limit 20 per 60 s, 1,000 credits) with 60
/// calls at once, 30 each: exactly 20 pass, and exactly 20 credits are spent.
async fn two_replicas_pass_exactly_the_limit(e: Engine) {
    let (url, _dir) = fresh_database(e);
    let a = InProcessServer::start_on(&url, |_| {}).await;
    let b = InProcessServer::start_on(&url, |_| {}).await;
    let k = a
        .create(json!({
            "name": "shared",
            "limits": [{"name": "burst", "limit": 20, "window": "60s"}],
            "credits": {"remaining": 1000}
        }))
        .await;
    window_with_room(60, 20).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let api = if i % 2 == 0 {
            a.api.clone()
        } else {
            b.api.clone()
        };
        let secret = k.secret.clone();
        calls.spawn(async move { api.verify(&secret, &[], None).await });
    }
    let (mut valid, mut limited) = (0, 0);
    while let Some(r) = calls.join_next().await {
        let r = r.unwrap();
        match r.code.as_str() {
            "VALID" => valid += 1,
            "RATE_LIMITED" => limited += 1,
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert_eq!((valid, limited), (20, 40));
    assert_eq!(a.key(&k.key.id).await.credits.unwrap().remaining, 980);
    a.stop().await;
    b.stop().await;
}
