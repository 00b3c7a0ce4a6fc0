//! `edge` keys are admin-only, on both engines: a `workspace` key holding `keys:write` can
//! neither issue an edge key (which would read every workspace's key set from the feed) nor
//! change the admin's edge key in its workspace (rotation would hand it the edge secret), nor
//! exchange itself into one. Refusals are 403 `EDGE_KEY_ADMIN_ONLY` and change nothing.

mod common;

use common::{Engine, InProcessServer, assert_error};
use keygate_control_plane::http::keys::IssuedKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(workspace_keys_cannot_issue_or_change_edge_keys);

const CODE: &str = "EDGE_KEY_ADMIN_ONLY";

async fn keyset_status(s: &InProcessServer, token: &str) -> StatusCode {
    s.http
        .get(s.url("/v1/keyset"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// (number of keys, number of audit rows, feed revision) as the admin sees them.
async fn footprint(s: &InProcessServer) -> (usize, usize, i64) {
    let (_, keys) = s.admin(Method::GET, "/v1/keys?limit=1000", None).await;
    let (_, audit) = s.admin(Method::GET, "/v1/audit?limit=1000", None).await;
    (
        keys["items"].as_array().unwrap().len(),
        audit["items"].as_array().unwrap().len(),
        s.state.db().revision().await.unwrap(),
    )
}

async fn workspace_keys_cannot_issue_or_change_edge_keys(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: ws, .. } = s
        .create(json!({"name": "ops", "scopes": ["keys:read", "keys:write"]}))
        .await;
    let IssuedKey {
        secret: edge,
        key: edge_rec,
        ..
    } = s.create(json!({"name": "edge", "kind": "edge"})).await;
    let edge_id = edge_rec.id.clone();
    assert_eq!(
        edge_rec.workspace_id, "default",
        "the admin's edge key lives in the workspace key's own workspace"
    );
    let before = footprint(&s).await;

    // Issuing an edge key: refused, with nothing written.
    let (st, v) = s
        .call(
            Some(&ws),
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "sneaky", "kind": "edge"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, CODE);
    assert!(v.get("secret").is_none());

    // Changing the admin's edge key: every lifecycle call is refused, rotation above all.
    let edge_calls: [(Method, String, Option<Value>); 6] = [
        (
            Method::POST,
            format!("/v1/keys/{edge_id}/rotate"),
            Some(json!({"grace_period": 60})),
        ),
        (
            Method::PATCH,
            format!("/v1/keys/{edge_id}"),
            Some(json!({"name": "mine now"})),
        ),
        (Method::POST, format!("/v1/keys/{edge_id}/suspend"), None),
        (Method::POST, format!("/v1/keys/{edge_id}/revoke"), None),
        (Method::DELETE, format!("/v1/keys/{edge_id}"), None),
        (Method::POST, format!("/v1/keys/{edge_id}/reactivate"), None),
    ];
    for (method, path, body) in edge_calls.clone() {
        let (st, v) = s.call(Some(&ws), method.clone(), &path, body).await;
        assert_error(st, &v, StatusCode::FORBIDDEN, CODE);
        assert!(v.get("secret").is_none(), "{method} {path}: {v}");
    }

    // Exchanging into an edge key: exchange has no `kind`, the request is rejected.
    let (st, v) = s
        .call(
            Some(&ws),
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "ci", "kind": "edge"})),
        )
        .await;
    assert_error(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");

    assert_eq!(footprint(&s).await, before, "the refusals changed nothing");
    let (_, shown) = s
        .admin(Method::GET, &format!("/v1/keys/{edge_id}"), None)
        .await;
    assert_eq!(
        (shown["name"].as_str(), shown["status"].as_str()),
        (Some("edge"), Some("active"))
    );
    assert_eq!(keyset_status(&s, &edge).await, StatusCode::OK);
    assert_eq!(
        keyset_status(&s, &ws).await,
        StatusCode::FORBIDDEN,
        "a workspace key does not read the feed"
    );

    // The same workspace key still manages other kinds, and exchange still makes repo keys.
    for kind in ["workspace", "repo"] {
        let (st, v) = s
            .call(
                Some(&ws),
                Method::POST,
                "/v1/keys",
                Some(json!({"name": kind, "kind": kind, "scopes": ["keys:read"]})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(v["key"]["kind"], kind);
        let id = v["key"]["id"].as_str().unwrap();
        let (st, v) = s
            .call(
                Some(&ws),
                Method::POST,
                &format!("/v1/keys/{id}/rotate"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    let (st, v) = s
        .call(
            Some(&ws),
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "ci"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["key"]["kind"], "repo");

    // The admin keeps full control of edge keys.
    let (st, v) = s
        .admin(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "edge-2", "kind": "edge"})),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let edge2 = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(keyset_status(&s, &edge2).await, StatusCode::OK);
    for (method, path, body) in edge_calls {
        let (st, v) = s.admin(method.clone(), &path, body).await;
        // Revoke makes the later DELETE and reactivate 409s; everything before is allowed.
        if path.ends_with("/reactivate") || method == Method::DELETE {
            assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");
        } else {
            assert_eq!(st, StatusCode::OK, "{method} {path}: {v}");
        }
    }
    assert_eq!(keyset_status(&s, &edge).await, StatusCode::UNAUTHORIZED);
    s.stop().await;
}
