//! The list and audit queries the console's pages are built on, through the API on SQLite and
//! on PostgreSQL: `GET /v1/keys` searched by name and filtered by scope, "expiring within",
//! "never used" and parent (the key page's children); `GET /v1/audit` filtered by actor,
//! action and time range, newest first; bad values are structured 400s.

mod common;

use common::{Engine, InProcessServer, assert_error};
use keygate_control_plane::http::keys::IssuedKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    keys_are_searched_by_name_and_filtered_by_scope_expiry_use_and_parent,
    the_audit_log_is_filtered_by_actor_action_and_time,
);

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {v}"))
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

async fn list(s: &InProcessServer, query: &str) -> Vec<String> {
    let (st, v) = s
        .admin(Method::GET, &format!("/v1/keys?{query}"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{query}: {v}");
    names(&v)
}

async fn keys_are_searched_by_name_and_filtered_by_scope_expiry_use_and_parent(e: Engine) {
    let s = InProcessServer::start(e).await;
    s.create(json!({"name": "Orders API", "scopes": ["orders:read"], "expires_in": 3 * 86_400}))
        .await;
    s.create(
        json!({"name": "orders batch", "scopes": ["orders:write"], "expires_in": 20 * 86_400}),
    )
    .await;
    s.create(json!({"name": "100%_done", "scopes": ["orders:readonly"]}))
        .await;
    let IssuedKey { secret: used, .. } = s
        .create(json!({"name": "billing", "scopes": ["billing:read"], "expires_in": 2 * 86_400}))
        .await;
    assert!(s.verify(&used, &[], None).await.valid);

    assert_eq!(list(&s, "name=order").await, ["Orders API", "orders batch"]);
    assert_eq!(list(&s, "name=ORDERS%20A").await, ["Orders API"]);
    assert_eq!(
        list(&s, "name=%25_").await,
        ["100%_done"],
        "% and _ are literal"
    );
    assert_eq!(list(&s, "name=_d").await, ["100%_done"]);
    assert_eq!(
        list(&s, "scope=orders:read").await,
        ["Orders API"],
        "whole scope names"
    );
    assert_eq!(
        list(&s, "expiring_within=604800").await,
        ["Orders API", "billing"]
    );
    assert_eq!(
        list(&s, "expiring_within=604800&name=orders").await,
        ["Orders API"]
    );
    // Verification usage is flushed every 50 ms.
    let mut never = Vec::new();
    for _ in 0..100 {
        never = list(&s, "never_used=true").await;
        if !never.contains(&"billing".to_owned()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(never, ["100%_done", "Orders API", "orders batch"]);

    // Children: the keys exchanged from a parent.
    let IssuedKey { secret: parent, key: p, .. } = s
        .create(json!({"name": "ws", "workspace_id": "acme", "scopes": ["repo:read"], "resources": ["acme/*"]}))
        .await;
    for subject in ["run-1", "run-2"] {
        let (st, v) = s
            .call(
                Some(&parent),
                Method::POST,
                "/v1/keys/exchange",
                Some(json!({"subject": subject, "scopes": ["repo:read"]})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = s
        .admin(Method::GET, &format!("/v1/keys?parent_id={}", p.id), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|k| k["parent_id"] == p.id.as_str()));

    for bad in [
        "expiring_within=0",
        "expiring_within=99999999",
        "never_used=maybe",
        "parent_id=nope",
        &format!("name={}", "x".repeat(129)),
    ] {
        let (st, v) = s.admin(Method::GET, &format!("/v1/keys?{bad}"), None).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
}

async fn the_audit_log_is_filtered_by_actor_action_and_time(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey {
        secret: ops,
        key: opsk,
        ..
    } = s
        .create(
            json!({"name": "ops", "workspace_id": "acme", "scopes": ["keys:read", "keys:write"]}),
        )
        .await;
    let (st, v) = s
        .call(
            Some(&ops),
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "made by ops"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let made = v["key"]["id"].as_str().unwrap().to_owned();
    s.key_action(&made, "suspend").await;
    s.key_action(&made, "revoke").await;

    let get = |q: String| {
        let s = &s;
        async move {
            let (st, v) = s.admin(Method::GET, &format!("/v1/audit?{q}"), None).await;
            assert_eq!(st, StatusCode::OK, "{q}: {v}");
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["action"].as_str().unwrap().to_owned(),
                        a["actor"]["id"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let by_ops = get(format!("actor={}", opsk.id)).await;
    assert_eq!(by_ops, [("key.create".to_owned(), opsk.id.clone())]);
    let revokes = get("action=key.revoke".into()).await;
    assert_eq!(revokes, [("key.revoke".to_owned(), "admin".to_owned())]);
    let newest = get("order=desc&limit=2".into()).await;
    assert_eq!(
        newest.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["key.revoke", "key.suspend"]
    );
    let all = get(String::new()).await;
    assert_eq!(all.len(), 4, "{all:?}");
    // Time range: everything is from the last minute; nothing before an hour ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(get(format!("from={}", now - 60)).await.len(), 4);
    assert!(get(format!("to={}", now - 3600)).await.is_empty());
    // Newest-first pages chain by cursor without repeats.
    let (_, p1) = s
        .admin(Method::GET, "/v1/audit?order=desc&limit=3", None)
        .await;
    let c = p1["next_cursor"].as_i64().expect("a next page");
    let (_, p2) = s
        .admin(
            Method::GET,
            &format!("/v1/audit?order=desc&limit=3&cursor={c}"),
            None,
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["items"][0]["action"], "key.create");
    assert_eq!(p2["items"][0]["key_id"], opsk.id.as_str());
    // The workspace key sees only its workspace's rows.
    s.create(json!({"name": "elsewhere", "workspace_id": "zeta"}))
        .await;
    assert_eq!(get(String::new()).await.len(), 5);
    let (st, v) = s.call(Some(&ops), Method::GET, "/v1/audit", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 4, "{v}");
    let (st, v) = s
        .call(
            Some(&ops),
            Method::GET,
            "/v1/audit?action=key.create&order=desc",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");

    for bad in [
        "actor=bob",
        "action=key.explode",
        "from=-1",
        "from=10&to=5",
        "order=sideways",
    ] {
        let (st, v) = s
            .admin(Method::GET, &format!("/v1/audit?{bad}"), None)
            .await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
}
