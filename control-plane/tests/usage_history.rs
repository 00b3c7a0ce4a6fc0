//! Usage over time through real HTTP, on SQLite and on PostgreSQL: `POST /v1/usage` (an edge
//! key, as the filter reports) and verification feed the hourly counts that
//! `GET /v1/keys/{id}/usage` answers per hour and per day; a batch counts once; a workspace
//! reads only its own keys; bad parameters get the structured 400 and change nothing; hours
//! older than the retention are pruned by the background task.

mod common;

use std::time::Duration;

use common::{ADMIN, Engine, InProcessServer, assert_error, fresh_database};
use keygate_control_plane::http::keys::IssuedKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    reports_and_verifications_become_hourly_and_daily_counts,
    usage_is_confined_to_the_workspace_and_bad_parameters_are_refused,
    hours_older_than_the_retention_are_pruned,
);

const HOUR: i64 = 3600;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hour_of(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

/// `(at, count)` of every nonzero point of a series.
fn nonzero(series: &Value) -> Vec<(i64, i64)> {
    series["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["at"].as_i64().unwrap(), p["count"].as_i64().unwrap()))
        .filter(|(_, c)| *c != 0)
        .collect()
}

async fn report(s: &InProcessServer, edge: &str, batch: &str, entries: Value) -> Value {
    let (st, v) = s
        .call(
            Some(edge),
            Method::POST,
            "/v1/usage",
            Some(json!({"batch_id": batch, "entries": entries})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn reports_and_verifications_become_hourly_and_daily_counts(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "edge", "kind": "edge"})).await;
    let IssuedKey { secret, key, .. } = s.create(json!({"name": "orders"})).await;
    let IssuedKey { key: other, .. } = s.create(json!({"name": "other"})).await;
    let t = now();
    let earlier = t - 2 * HOUR;
    let v = report(
        &s,
        &edge,
        "b-1",
        json!([
            {"key_id": key.id, "count": 5, "last_used_at": earlier},
            {"key_id": key.id, "count": 3, "last_used_at": t},
            {"key_id": other.id, "count": 7, "last_used_at": t},
            {"key_id": format!("key_{}", "0".repeat(32)), "count": 9, "last_used_at": t},
        ]),
    )
    .await;
    assert_eq!(v["applied"], true);
    // The same batch again (a retry) counts once.
    let v = report(
        &s,
        &edge,
        "b-1",
        json!([{"key_id": key.id, "count": 5, "last_used_at": t}]),
    )
    .await;
    assert_eq!(v["applied"], false);
    // Two verifications, counted in this process and flushed.
    for _ in 0..2 {
        assert!(s.verify(&secret, &[], None).await.valid);
    }

    let path = format!("/v1/keys/{}/usage", key.id);
    let mut series = Value::Null;
    for _ in 0..100 {
        let (st, v) = s.admin(Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        series = v;
        if series["total"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(series["total"], 10, "{series}");
    assert_eq!(series["bucket"], "hour");
    assert_eq!(series["key_id"], key.id.as_str());
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 24, "the last 24 hours by default");
    assert_eq!(series["to"].as_i64().unwrap(), hour_of(t) + HOUR);
    assert_eq!(
        nonzero(&series),
        [(hour_of(earlier), 5), (hour_of(t), 5)],
        "each entry in the hour of its last use; verifications in the hour they happened"
    );

    // By day, over a range given explicitly.
    let from = t - 3 * 24 * HOUR;
    let (st, days) = s
        .admin(
            Method::GET,
            &format!("{path}?bucket=day&from={from}&to={t}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{days}");
    assert_eq!(days["total"], 10);
    assert_eq!(days["points"].as_array().unwrap().len(), 4);
    let by_day: i64 = nonzero(&days).iter().map(|p| p.1).sum();
    assert_eq!(by_day, 10);
    assert!(nonzero(&days).iter().all(|(at, _)| at % (24 * HOUR) == 0));

    // A narrower hourly window holds only its own hour.
    let (_, narrow) = s
        .admin(
            Method::GET,
            &format!(
                "{path}?from={}&to={}",
                hour_of(earlier),
                hour_of(earlier) + HOUR
            ),
            None,
        )
        .await;
    assert_eq!(nonzero(&narrow), [(hour_of(earlier), 5)]);
    let (_, o) = s
        .admin(Method::GET, &format!("/v1/keys/{}/usage", other.id), None)
        .await;
    assert_eq!(o["total"], 7, "{o}");
}

async fn usage_is_confined_to_the_workspace_and_bad_parameters_are_refused(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "edge", "kind": "edge"})).await;
    let IssuedKey { secret: ops_a, .. } = s
        .create(json!({"name": "a ops", "workspace_id": "a", "scopes": ["keys:read"]}))
        .await;
    let IssuedKey { secret: ops_b, .. } = s
        .create(json!({"name": "b ops", "workspace_id": "b", "scopes": ["keys:read"]}))
        .await;
    let IssuedKey {
        secret: no_scope, ..
    } = s
        .create(json!({"name": "a svc", "workspace_id": "a"}))
        .await;
    let IssuedKey { key, .. } = s
        .create(json!({"name": "a key", "workspace_id": "a"}))
        .await;
    report(
        &s,
        &edge,
        "b-1",
        json!([{"key_id": key.id, "count": 4, "last_used_at": now()}]),
    )
    .await;
    let path = format!("/v1/keys/{}/usage", key.id);
    let (st, v) = s.call(Some(&ops_a), Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 4);
    let (st, v) = s.call(Some(&ops_b), Method::GET, &path, None).await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (st, v) = s.call(Some(&no_scope), Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = s.call(Some(&edge), Method::GET, &path, None).await;
    assert!(
        st == StatusCode::FORBIDDEN || st == StatusCode::NOT_FOUND,
        "{st} {v}"
    );
    let (st, v) = s.call(None, Method::GET, &path, None).await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");

    let t = now();
    for bad in [
        "?bucket=week".to_owned(),
        "?from=abc".to_owned(),
        "?from=-5".to_owned(),
        format!("?from={t}&to={}", t - HOUR),
        format!("?from={t}&to={t}"),
        format!("?from=0&to={t}"),
        format!("?to={}", t + 400 * 24 * HOUR),
        "?limit=5".to_owned(),
    ] {
        let (st, v) = s.admin(Method::GET, &format!("{path}{bad}"), None).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    let (st, v) = s.admin(Method::GET, "/v1/keys/key_nope/usage", None).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, v) = s
        .admin(
            Method::GET,
            &format!("/v1/keys/key_{}/usage", "0".repeat(32)),
            None,
        )
        .await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
    // Nothing changed: still 4.
    let (_, v) = s.admin(Method::GET, &path, None).await;
    assert_eq!(v["total"], 4);
    // The endpoint is in the OpenAPI document.
    let (_, doc) = s.call(None, Method::GET, "/openapi.json", None).await;
    assert!(
        doc["paths"]["/v1/keys/{id}/usage"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
}

async fn hours_older_than_the_retention_are_pruned(e: Engine) {
    let (url, _dir) = fresh_database(e);
    let a = InProcessServer::start_on(&url, |_| {}).await;
    let IssuedKey { secret: edge, .. } = a.create(json!({"name": "edge", "kind": "edge"})).await;
    let IssuedKey { key, .. } = a.create(json!({"name": "old and new"})).await;
    let t = now();
    let old = t - 40 * 24 * HOUR;
    report(
        &a,
        &edge,
        "b-1",
        json!([{"key_id": key.id, "count": 6, "last_used_at": old},
               {"key_id": key.id, "count": 2, "last_used_at": t}]),
    )
    .await;
    let path = format!(
        "/v1/keys/{}/usage?bucket=day&from={}",
        key.id,
        t - 60 * 24 * HOUR
    );
    let (_, v) = a.admin(Method::GET, &path, None).await;
    assert_eq!(
        v["total"], 8,
        "kept with the default retention (90 days): {v}"
    );
    a.stop().await;

    // Restarted with 30 days: the background task prunes at start-up.
    let b = InProcessServer::start_on(&url, |c| c.usage_retention_days = 30).await;
    let mut total = Value::Null;
    for _ in 0..100 {
        let (st, v) = b.call(Some(ADMIN), Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK);
        total = v["total"].clone();
        if total == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total, 2, "the 40-day-old hour was pruned, today's kept");
}
