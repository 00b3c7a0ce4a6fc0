//! Integration suite over real HTTP, run on SQLite and on PostgreSQL: every endpoint, status
//! transition and error of the key lifecycle API.

mod common;

use common::{ADMIN, Engine, InProcessServer, assert_error};
use keygate_control_plane::domain::{KeyKind, KeyStatus};
use keygate_control_plane::http::keys::IssuedKey;
use keygate_protocol::key;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_engines!(
    create_show_list_never_return_the_secret,
    list_paginates_and_filters,
    lifecycle_transitions,
    update_changes_fields_and_respects_rules,
    rotate_keeps_old_secret_during_grace,
    verify_reports_every_code,
    authentication_and_permissions,
    workspace_keys_cannot_escalate,
    bad_input_is_rejected_and_changes_nothing,
    exchange_makes_bounded_children_that_follow_their_parent,
    audit_log_records_every_change,
    system_endpoints,
    failed_authentications_are_rate_limited,
    every_route_answers_an_oversize_body_with_the_json_error,
    after_an_oversize_body_the_kept_alive_connection_serves_the_next_request,
    a_full_usage_batch_fits_what_the_usage_route_accepts,
);

async fn audit_count(s: &InProcessServer) -> usize {
    let (st, v) = s.admin(Method::GET, "/v1/audit?limit=1000", None).await;
    assert_eq!(st, StatusCode::OK);
    v["items"].as_array().unwrap().len()
}

async fn create_show_list_never_return_the_secret(e: Engine) {
    let s = InProcessServer::start(e).await;
    let (st, raw) = s
        .admin(
            Method::POST,
            "/v1/keys",
            Some(
                json!({"name": "ci", "scopes": ["keys:read", "graphs:execute"], "owner_id": "user-1",
                       "metadata": {"team": "infra"}, "expires_in": 3600, "description": "for CI"}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{raw}");
    assert!(raw["key"].get("secret").is_none() && raw["key"].get("digest").is_none());
    let IssuedKey {
        secret, key: rec, ..
    } = serde_json::from_value(raw).expect("an issued key");
    let parsed = key::parse(&secret).expect("issued key parses");
    assert_eq!(parsed.prefix(), "kg_live");
    assert_eq!(rec.display_prefix, parsed.display_prefix());
    assert_eq!(rec.status, KeyStatus::Active);
    assert_eq!(rec.kind, KeyKind::Workspace);
    assert_eq!(rec.owner_id, "user-1");
    assert_eq!(rec.hash_version, 1);
    assert_eq!(rec.scopes, ["graphs:execute", "keys:read"]);
    assert_eq!(rec.metadata, json!({"team": "infra"}));
    assert_eq!(rec.created_by.id, "admin");
    assert!(rec.expires_at.unwrap() > rec.created_at);
    let id = rec.id.as_str();
    assert!(id.starts_with("key_") && id.len() == 36);

    let (st, shown) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(shown["name"], "ci");
    let (st, list) = s.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, audit) = s.admin(Method::GET, "/v1/audit", None).await;
    for body in [&shown, &list, &audit] {
        assert!(!body.to_string().contains(&secret), "secret leaked: {body}");
        assert!(
            !body.to_string().contains(parsed.body()),
            "secret body leaked"
        );
    }
    s.stop().await;
}

async fn list_paginates_and_filters(e: Engine) {
    let s = InProcessServer::start(e).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 { "workspace" } else { "repo" };
        let IssuedKey { key: r, .. } = s
            .create(
                json!({"name": format!("k{i}"), "kind": kind, "owner_id": format!("o{}", i % 3)}),
            )
            .await;
        ids.push(r.id.clone());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?limit=2&cursor={c}"),
            None => "/v1/keys?limit=2".into(),
        };
        let (st, page) = s.admin(Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen, ids,
        "pages in creation order, nothing lost or repeated"
    );
    let (_, repo) = s.admin(Method::GET, "/v1/keys?kind=repo", None).await;
    assert_eq!(repo["items"].as_array().unwrap().len(), 2);
    let (_, owner) = s.admin(Method::GET, "/v1/keys?owner_id=o0", None).await;
    assert_eq!(owner["items"].as_array().unwrap().len(), 2);
    s.admin(Method::POST, &format!("/v1/keys/{}/suspend", ids[0]), None)
        .await;
    let (_, susp) = s
        .admin(Method::GET, "/v1/keys?status=suspended", None)
        .await;
    let susp = susp["items"].as_array().unwrap();
    assert_eq!(susp.len(), 1);
    assert_eq!(susp[0]["id"], ids[0].as_str());
    let (st, v) = s.admin(Method::GET, "/v1/keys?status=bogus", None).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, v) = s.admin(Method::GET, "/v1/keys?cursor=nope", None).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, v) = s.admin(Method::GET, "/v1/keys?limit=0", None).await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    s.stop().await;
}

async fn lifecycle_transitions(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey {
        secret, key: rec, ..
    } = s.create(json!({"name": "life"})).await;
    let id = rec.id.as_str();
    let p = |a: &str| format!("/v1/keys/{id}/{a}");
    assert_eq!(s.verify(&secret, &[], None).await.code, "VALID");

    let (st, v) = s
        .admin(
            Method::POST,
            &p("suspend"),
            Some(json!({"reason": "investigating"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "suspended");
    assert_eq!(s.verify(&secret, &[], None).await.code, "SUSPENDED");
    let (st, v) = s.admin(Method::POST, &p("suspend"), None).await;
    assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");

    let (st, v) = s.admin(Method::POST, &p("reactivate"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "active");
    assert_eq!(s.verify(&secret, &[], None).await.code, "VALID");
    let (st, v) = s.admin(Method::POST, &p("reactivate"), None).await;
    assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");

    let (st, v) = s
        .admin(
            Method::POST,
            &p("revoke"),
            Some(json!({"reason": "leaked in a gist"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "revoked");
    assert!(v["revoked_at"].as_i64().is_some());
    assert_eq!(s.verify(&secret, &[], None).await.code, "REVOKED");
    for a in ["reactivate", "suspend", "revoke", "rotate"] {
        let (st, v) = s.admin(Method::POST, &p(a), None).await;
        assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");
    }
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");
    let (st, v) = s
        .admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_error(st, &v, StatusCode::CONFLICT, "CONFLICT");

    // DELETE revokes too, with the reason from the query string.
    let IssuedKey {
        secret: secret2,
        key: rec2,
        ..
    } = s.create(json!({"name": "del"})).await;
    let id2 = rec2.id.as_str();
    let (st, v) = s
        .admin(
            Method::DELETE,
            &format!("/v1/keys/{id2}?reason=offboarding"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "revoked");
    assert_eq!(s.verify(&secret2, &[], None).await.code, "REVOKED");
    let (_, audit) = s
        .admin(Method::GET, &format!("/v1/audit?key_id={id2}"), None)
        .await;
    let last = audit["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "key.revoke");
    assert_eq!(last["reason"], "offboarding");
    assert_eq!(
        last["key_name"], "del",
        "rows name their key as it is called now"
    );
    s.stop().await;
}

async fn update_changes_fields_and_respects_rules(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey {
        secret, key: rec, ..
    } = s
        .create(json!({"name": "u", "scopes": ["keys:read"]}))
        .await;
    let id = rec.id.as_str();
    assert_eq!(
        s.verify(&secret, &["graphs:execute"], None).await.code,
        "INSUFFICIENT_SCOPE"
    );
    let (st, v) = s
        .admin(Method::PATCH, &format!("/v1/keys/{id}"),
            Some(json!({"name": "renamed", "description": "d", "scopes": ["graphs:execute"], "resources": ["acme/*"],
                        "expires_in": 600, "metadata": {"k": "v"}})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["description"], "d");
    assert_eq!(v["scopes"], json!(["graphs:execute"]));
    assert_eq!(v["resources"], json!(["acme/*"]));
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert!(v["expires_at"].as_i64().is_some());
    assert_eq!(
        s.verify(&secret, &["graphs:execute"], Some("acme/api"))
            .await
            .code,
        "VALID"
    );
    assert_eq!(
        s.verify(&secret, &["graphs:execute"], Some("other/api"))
            .await
            .code,
        "RESOURCE_NOT_ALLOWED"
    );
    assert_eq!(
        s.verify(&secret, &["keys:read"], None).await.code,
        "INSUFFICIENT_SCOPE"
    );
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"status": "revoked"})),
        )
        .await;
    assert_error(st, &v, StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST");
    let (st, v) = s
        .admin(
            Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(json!({"scopes": ["Bad Scope"]})),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (_, shown) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(
        shown["scopes"],
        json!(["graphs:execute"]),
        "a rejected update changes nothing"
    );
    s.stop().await;
}

async fn rotate_keeps_old_secret_during_grace(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey {
        secret: old,
        key: rec,
        ..
    } = s.create(json!({"name": "rot", "scopes": ["a:b"]})).await;
    let id = rec.id.as_str();
    let (st, v) = s
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_period": 3600})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let new = v["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(v["key"]["id"], id);
    assert_ne!(v["key"]["display_prefix"], rec.display_prefix.as_str());
    let vo = s.verify(&old, &["a:b"], None).await;
    assert_eq!(vo.code, "VALID", "old secret works during the grace period");
    assert_eq!(vo.key_id.as_deref(), Some(id));
    assert_eq!(s.verify(&new, &["a:b"], None).await.code, "VALID");
    // Rotating again without grace: the previous secret stops at once.
    let (st, v) = s
        .admin(Method::POST, &format!("/v1/keys/{id}/rotate"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let newest = v["secret"].as_str().unwrap().to_owned();
    assert_eq!(s.verify(&new, &[], None).await.code, "NOT_FOUND");
    assert_eq!(s.verify(&newest, &[], None).await.code, "VALID");
    assert_eq!(
        s.verify(&old, &[], None).await.code,
        "VALID",
        "first grace still running"
    );
    // Revoking the key ends every secret, grace or not.
    s.admin(Method::POST, &format!("/v1/keys/{id}/revoke"), None)
        .await;
    assert_eq!(s.verify(&old, &[], None).await.code, "REVOKED");
    assert_eq!(s.verify(&newest, &[], None).await.code, "REVOKED");
    let (st, v) = s
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_period": -1})),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    let (st, v) = s
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_period": 99_999_999})),
        )
        .await;
    assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    s.stop().await;
}

async fn verify_reports_every_code(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret, key: rec, .. } = s.create(json!({"name": "v", "scopes": ["graphs:execute"], "resources": ["acme/api"], "owner_id": "svc-7"})).await;
    let v = s
        .verify(&secret, &["graphs:execute"], Some("acme/api"))
        .await;
    assert!(v.valid);
    assert_eq!(v.code, "VALID");
    assert_eq!(v.key_id.as_deref(), Some(rec.id.as_str()));
    assert_eq!(v.owner_id.as_deref(), Some("svc-7"));
    assert_eq!(v.scopes, Some(vec!["graphs:execute".to_owned()]));
    // The last checksum character changed (to one it is not: `x` would leave one key in 62
    // unchanged).
    let last = if secret.ends_with('x') { 'y' } else { 'x' };
    for bad in [
        "",
        "nope",
        "kg_live_short",
        &format!("{}{last}", &secret[..secret.len() - 1]),
    ] {
        let v = s.verify(bad, &[], None).await;
        assert_eq!(v.code, "MALFORMED", "{bad}");
        assert!(!v.valid);
        assert!(v.key_id.is_none());
    }
    let unknown = key::generate("kg_live").unwrap();
    assert_eq!(
        s.verify(unknown.expose_secret(), &[], None).await.code,
        "NOT_FOUND"
    );
    assert_eq!(
        s.verify(&secret, &["keys:write"], None).await.code,
        "INSUFFICIENT_SCOPE"
    );
    assert_eq!(
        s.verify(&secret, &[], Some("acme/web")).await.code,
        "RESOURCE_NOT_ALLOWED"
    );
    let IssuedKey { secret: short, .. } = s.create(json!({"name": "short", "expires_in": 1})).await;
    assert_eq!(s.verify(&short, &[], None).await.code, "VALID");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(s.verify(&short, &[], None).await.code, "EXPIRED");
    // Usage from verification is written in batches.
    let id = rec.id.as_str();
    let mut used = 0;
    for _ in 0..50 {
        let (_, k) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
        used = k["usage_count"].as_i64().unwrap();
        if used >= 1 {
            assert!(k["last_used_at"].as_i64().is_some());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(used, 1, "only the one VALID verification counts");
    s.stop().await;
}

async fn authentication_and_permissions(e: Engine) {
    let s = InProcessServer::start(e).await;
    let (st, v) = s.call(None, Method::GET, "/v1/keys", None).await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let (st, v) = s.call(Some("garbage"), Method::GET, "/v1/keys", None).await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let unknown = key::generate("kg_live").unwrap();
    let (st, v) = s
        .call(Some(unknown.expose_secret()), Method::GET, "/v1/keys", None)
        .await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    // x-api-key works as well as Bearer.
    let resp = s
        .http
        .get(s.url("/v1/keys"))
        .header("x-api-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let IssuedKey { secret: repo, .. } = s
        .create(json!({"name": "r", "kind": "repo", "scopes": ["keys:read", "keys:write"]}))
        .await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "e", "kind": "edge"})).await;
    let IssuedKey { secret: reader, .. } = s
        .create(json!({"name": "w", "scopes": ["keys:read"]}))
        .await;
    for t in [&repo, &edge] {
        for (m, p) in [
            (Method::GET, "/v1/keys"),
            (Method::POST, "/v1/keys"),
            (Method::GET, "/v1/audit"),
            (Method::POST, "/v1/keys/verify"),
        ] {
            let (st, v) = s
                .call(Some(t), m, p, Some(json!({"name": "x", "key": "x"})))
                .await;
            assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
        }
    }
    for t in [&repo, &reader] {
        let resp = s
            .http
            .get(s.url("/v1/keyset"))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::FORBIDDEN,
            "only edge keys read the key set"
        );
    }
    let resp = s
        .http
        .get(s.url("/v1/keyset"))
        .bearer_auth(&edge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (st, _) = s.call(Some(&reader), Method::GET, "/v1/keys", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = s
        .call(
            Some(&reader),
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    // A suspended workspace key authenticates no more.
    let IssuedKey {
        secret: w,
        key: wrec,
        ..
    } = s
        .create(json!({"name": "w2", "scopes": ["keys:read"]}))
        .await;
    s.admin(
        Method::POST,
        &format!("/v1/keys/{}/suspend", wrec.id.as_str()),
        None,
    )
    .await;
    let (st, v) = s.call(Some(&w), Method::GET, "/v1/keys", None).await;
    assert_error(st, &v, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    s.stop().await;
}

async fn workspace_keys_cannot_escalate(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: ws, key: wsrec, .. } = s
        .create(json!({"name": "acme-ci", "workspace_id": "acme", "scopes": ["keys:read", "keys:write", "graphs:execute"],
                       "resources": ["acme/*"], "expires_in": 7200}))
        .await;
    let IssuedKey {
        secret: other,
        key: other_rec,
        ..
    } = s
        .create(json!({"name": "globex", "workspace_id": "globex"}))
        .await;
    let call = |m: Method, p: String, b: Option<Value>| {
        let s = &s;
        let ws = ws.clone();
        async move { s.call(Some(&ws), m, &p, b).await }
    };
    let (st, v) = call(Method::POST, "/v1/keys".into(), Some(json!({"name": "ok", "scopes": ["graphs:execute"], "resources": ["acme/api"], "expires_in": 60}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["key"]["workspace_id"], "acme");
    assert_eq!(v["key"]["created_by"]["id"], wsrec.id.as_str());
    assert_eq!(
        v["key"]["created_by"]["display_prefix"],
        wsrec.display_prefix.as_str()
    );
    let child_id = v["key"]["id"].as_str().unwrap().to_owned();
    for (body, what) in [
        (
            json!({"name": "x", "scopes": ["github:tokens"], "resources": ["acme/api"], "expires_in": 60}),
            "scope",
        ),
        (
            json!({"name": "x", "scopes": [], "expires_in": 60}),
            "no allow-list = any resource",
        ),
        (
            json!({"name": "x", "resources": ["globex/api"], "expires_in": 60}),
            "resource",
        ),
        (json!({"name": "x", "resources": ["acme/api"]}), "no expiry"),
        (
            json!({"name": "x", "resources": ["acme/api"], "expires_in": 100_000}),
            "outlives caller",
        ),
        (
            json!({"name": "x", "resources": ["acme/api"], "expires_in": 60, "workspace_id": "globex"}),
            "other workspace",
        ),
    ] {
        let (st, v) = call(Method::POST, "/v1/keys".into(), Some(body)).await;
        assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
        let _ = what;
    }
    let (st, v) = call(
        Method::PATCH,
        format!("/v1/keys/{child_id}"),
        Some(json!({"scopes": ["keys:admin"]})),
    )
    .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    // Other workspaces' keys do not exist for this caller.
    let oid = other_rec.id.as_str();
    let (st, v) = call(Method::GET, format!("/v1/keys/{oid}"), None).await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (st, v) = call(Method::POST, format!("/v1/keys/{oid}/revoke"), None).await;
    assert_error(st, &v, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (_, list) = call(Method::GET, "/v1/keys".into(), None).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["workspace_id"] == "acme"),
        "{list}"
    );
    let (_, ver) = call(
        Method::POST,
        "/v1/keys/verify".into(),
        Some(json!({"key": other})),
    )
    .await;
    assert_eq!(
        ver["code"], "NOT_FOUND",
        "verification is confined to the caller's workspace"
    );
    let (_, audit) = call(Method::GET, "/v1/audit".into(), None).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["workspace_id"] == "acme")
    );
    let (_, shown) = s.admin(Method::GET, &format!("/v1/keys/{oid}"), None).await;
    assert_eq!(shown["status"], "active", "unchanged");
    s.stop().await;
}

async fn bad_input_is_rejected_and_changes_nothing(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { key: rec, .. } = s.create(json!({"name": "base"})).await;
    let id = rec.id.clone();
    let audit_before = audit_count(&s).await;
    // Raw bodies with their content type: (body, content type, status, code).
    let big = format!(
        "{{\"name\":\"x\",\"description\":\"{}\"}}",
        "a".repeat(100_000)
    );
    let json = "application/json";
    let raw_cases: [(&str, &str, StatusCode, &str); 5] = [
        (
            "{\"name\":",
            json,
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
        ),
        (
            "{\"name\":\"x\"}",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "{\"name\":\"x\",\"evil\":1}",
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            "{\"name\":\"x\",\"kind\":\"root\"}",
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            &big,
            json,
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (body, ct, want, code) in raw_cases {
        let resp = s
            .http
            .post(s.url("/v1/keys"))
            .bearer_auth(ADMIN)
            .header("content-type", ct)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let st = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_error(st, &v, want, code);
    }
    // Well-formed JSON with invalid values.
    let many: Vec<String> = (0..100).map(|i| format!("s:{i}")).collect();
    for body in [
        json!({"name": ""}),
        json!({"name": "x".repeat(200)}),
        json!({"name": "x", "description": "d".repeat(2000)}),
        json!({"name": "x", "scopes": many}),
        json!({"name": "x", "scopes": ["UPPER"]}),
        json!({"name": "x", "resources": ["has space"]}),
        json!({"name": "x", "expires_in": -5}),
        json!({"name": "x", "expires_in": 0}),
        json!({"name": "x", "expires_in": 9_999_999_999i64}),
        json!({"name": "x", "expires_at": 1}),
        json!({"name": "x", "expires_in": 10, "expires_at": 99_999_999_999i64}),
        json!({"name": "x", "owner_id": "o".repeat(200)}),
        json!({"name": "x", "metadata": [1, 2]}),
        json!({"name": "x", "metadata": {"a": "b".repeat(5000)}}),
        json!({"name": "x", "workspace_id": "Bad WS"}),
        json!({"name": "x", "prefix": "Bad"}),
    ] {
        let (st, v) = s.admin(Method::POST, "/v1/keys", Some(body.clone())).await;
        assert_error(st, &v, StatusCode::BAD_REQUEST, "INVALID_REQUEST");
    }
    // Calls on ids and paths: (method, path, body, status, code).
    let absent = "key_0123456789abcdef0123456789abcdef";
    let suspend = format!("/v1/keys/{id}/suspend");
    let revoke_absent = format!("/v1/keys/{absent}/revoke");
    let show_absent = format!("/v1/keys/{absent}");
    let calls: [(Method, &str, Option<Value>, StatusCode, &str); 7] = [
        (
            Method::GET,
            "/v1/keys/nope",
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/keys/key_ZZ",
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/keys/key_0123456789ABCDEF0123456789abcdef",
            None,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            &show_absent,
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            &revoke_absent,
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            &suspend,
            Some(json!({"reason": 5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            None,
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ];
    for (method, path, body, want, code) in calls {
        let (st, v) = s.admin(method, path, body).await;
        assert_error(st, &v, want, code);
    }
    let (_, list) = s.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "no key was made"
    );
    assert_eq!(list["items"][0]["status"], "active");
    assert_eq!(
        audit_count(&s).await,
        audit_before,
        "no audit row was written"
    );
    s.stop().await;
}

async fn exchange_makes_bounded_children_that_follow_their_parent(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: parent, key: prec, .. } = s
        .create(json!({"name": "ws", "workspace_id": "acme", "scopes": ["repo:read", "repo:write"], "resources": ["acme/*"]}))
        .await;
    let pid = prec.id.clone();
    let (st, v) = s
        .call(
            Some(&parent),
            Method::POST,
            "/v1/keys/exchange",
            Some(
                json!({"subject": "ci-run-42", "scopes": ["repo:read"], "resources": ["acme/api"]}),
            ),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let child = v["secret"].as_str().unwrap().to_owned();
    let c = &v["key"];
    assert_eq!(c["kind"], "repo");
    assert_eq!(c["parent_id"], pid.as_str());
    assert_eq!(c["subject"], "ci-run-42");
    assert_eq!(c["workspace_id"], "acme");
    let life = c["expires_at"].as_i64().unwrap() - c["created_at"].as_i64().unwrap();
    assert!(
        (3599..=3601).contains(&life),
        "default one hour, got {life}"
    );
    assert_eq!(
        s.verify(&child, &["repo:read"], Some("acme/api"))
            .await
            .code,
        "VALID"
    );
    assert_eq!(
        s.verify(&child, &["repo:write"], None).await.code,
        "INSUFFICIENT_SCOPE"
    );
    // A repo key cannot manage keys or exchange again.
    let (st, v) = s
        .call(
            Some(&child),
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "x"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (st, v) = s.call(Some(&child), Method::GET, "/v1/keys", None).await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    for (body, status) in [
        (
            json!({"subject": "x", "scopes": ["admin:all"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({"subject": "x", "resources": ["globex/api"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({"subject": "x", "expires_in": 86_401}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"subject": ""}), StatusCode::BAD_REQUEST),
    ] {
        let (st, v) = s
            .call(Some(&parent), Method::POST, "/v1/keys/exchange", Some(body))
            .await;
        assert_eq!(st, status, "{v}");
    }
    let (st, v) = s
        .admin(
            Method::POST,
            "/v1/keys/exchange",
            Some(json!({"subject": "x"})),
        )
        .await;
    assert_error(st, &v, StatusCode::FORBIDDEN, "FORBIDDEN");
    // Suspend / reactivate / revoke cascade to the child.
    s.admin(Method::POST, &format!("/v1/keys/{pid}/suspend"), None)
        .await;
    assert_eq!(s.verify(&child, &[], None).await.code, "SUSPENDED");
    s.admin(Method::POST, &format!("/v1/keys/{pid}/reactivate"), None)
        .await;
    assert_eq!(s.verify(&child, &[], None).await.code, "VALID");
    s.admin(Method::POST, &format!("/v1/keys/{pid}/revoke"), None)
        .await;
    assert_eq!(s.verify(&child, &[], None).await.code, "REVOKED");
    let (_, audit) = s
        .admin(
            Method::GET,
            &format!("/v1/audit?key_id={}", c["id"].as_str().unwrap()),
            None,
        )
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.exchange",
            "key.suspend",
            "key.reactivate",
            "key.revoke"
        ]
    );
    assert_eq!(audit["items"][0]["reason"], "ci-run-42");
    s.stop().await;
}

async fn audit_log_records_every_change(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey {
        secret, key: rec, ..
    } = s.create(json!({"name": "a"})).await;
    let id = rec.id.as_str();
    s.admin(
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        Some(json!({"name": "b"})),
    )
    .await;
    let (_, rot) = s
        .admin(
            Method::POST,
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({"grace_period": 10})),
        )
        .await;
    s.admin(
        Method::POST,
        &format!("/v1/keys/{id}/revoke"),
        Some(json!({"reason": "done"})),
    )
    .await;
    let (st, v) = s
        .admin(Method::GET, &format!("/v1/audit?key_id={id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let items = v["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "key.update", "key.rotate", "key.revoke"]
    );
    assert!(items[0]["before"].is_null());
    assert_eq!(items[0]["after"]["name"], "a");
    assert_eq!(items[1]["before"]["name"], "a");
    assert_eq!(items[1]["after"]["name"], "b");
    assert_eq!(items[3]["before"]["status"], "active");
    assert_eq!(items[3]["after"]["status"], "revoked");
    assert_eq!(items[3]["reason"], "done");
    assert_eq!(items[0]["actor"]["id"], "admin");
    assert!(
        items
            .iter()
            .all(|a| a["key_id"] == id && a["at"].as_i64().is_some())
    );
    let text = v.to_string();
    assert!(!text.contains(&secret) && !text.contains(rot["secret"].as_str().unwrap()));
    // Pagination of the audit log.
    let (_, p1) = s.admin(Method::GET, "/v1/audit?limit=2", None).await;
    let cur = p1["next_cursor"].as_i64().unwrap();
    let (_, p2) = s
        .admin(
            Method::GET,
            &format!("/v1/audit?limit=2&cursor={cur}"),
            None,
        )
        .await;
    assert_eq!(p2["items"][0]["id"].as_i64().unwrap(), cur + 1);
    s.stop().await;
}

async fn system_endpoints(e: Engine) {
    let s = InProcessServer::start(e).await;
    let (st, v) = s.call(None, Method::GET, "/healthz", None).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (st, v) = s.call(None, Method::GET, "/readyz", None).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    s.create(json!({"name": "m"})).await;
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("keygate_keys_created_total 1"), "{text}");
    assert!(text.contains("keygate_http_responses_total{class=\"2xx\"}"));
    let (st, doc) = s.call(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(st, StatusCode::OK);
    for p in [
        "/v1/keys",
        "/v1/keys/{id}/rotate",
        "/v1/keys/verify",
        "/v1/keyset",
        "/v1/usage",
        "/v1/audit",
    ] {
        assert!(doc["paths"][p].is_object(), "missing {p}");
    }
    let resp = s.http.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("swagger-ui") && !html.contains("https://"),
        "assets are served locally"
    );
    let resp = s
        .http
        .get(s.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().len() > 100_000);
    s.db_close_check().await;
    s.stop().await;
}

async fn failed_authentications_are_rate_limited(e: Engine) {
    let s = InProcessServer::start(e).await;
    for _ in 0..30 {
        let (st, _) = s.call(Some("wrong"), Method::GET, "/v1/keys", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let resp = s
        .http
        .get(s.url("/v1/keys"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even a good credential waits once blocked"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "RATE_LIMITED");
    let (st, _) = s.call(None, Method::GET, "/healthz", None).await;
    assert_eq!(st, StatusCode::OK, "unauthenticated endpoints stay up");
    s.stop().await;
}

trait ReadyCheck {
    async fn db_close_check(&self);
}

impl ReadyCheck for InProcessServer {
    /// With the database closed, readiness fails and liveness does not.
    async fn db_close_check(&self) {
        self.state.db().close().await;
        let (st, v) = self.call(None, Method::GET, "/readyz", None).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        let (st, _) = self.call(None, Method::GET, "/healthz", None).await;
        assert_eq!(st, StatusCode::OK);
    }
}

async fn after_an_oversize_body_the_kept_alive_connection_serves_the_next_request(e: Engine) {
    let s = InProcessServer::start(e).await;
    // One kept-alive connection: each oversize body is answered 413, and the connection then
    // serves the next request (the server read the rest of the body instead of closing the
    // connection under the client, which then lost its next request to the reset).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    for round in 0..20 {
        let resp = http
            .post(s.url("/v1/keys"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the oversize body: {e:?}"));
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let _ = resp.text().await;
        let next = http
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the next request: {e:?}"));
        assert_eq!(next.status(), StatusCode::OK, "round {round}");
    }
}

async fn every_route_answers_an_oversize_body_with_the_json_error(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { key: rec, .. } = s.create(json!({"name": "target"})).await;
    let id = rec.id.clone();
    // Over the general limit (64 KiB) and over the usage route's own.
    let big = format!(
        "{{\"name\":\"{}\"}}",
        "x".repeat(keygate_protocol::usage::MAX_BODY_BYTES + 1)
    );
    let routes = [
        (Method::POST, "/v1/keys".to_owned()),
        (Method::POST, "/v1/keys/verify".to_owned()),
        (Method::PATCH, format!("/v1/keys/{id}")),
        (Method::POST, format!("/v1/keys/{id}/suspend")),
        (Method::POST, format!("/v1/keys/{id}/rotate")),
        (Method::POST, "/v1/usage".to_owned()),
        (Method::POST, "/api/github/tokens".to_owned()),
        (Method::POST, "/v1/github/tokens".to_owned()),
        (Method::POST, "/v1/repositories".to_owned()),
    ];
    for (method, path) in routes {
        let resp = s
            .http
            .request(method.clone(), s.url(&path))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let st = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: {st} {ct:?} is not JSON: {text}"));
        assert_error(st, &v, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
        assert_eq!(ct.as_deref(), Some("application/json"), "{method} {path}");
    }
    // Nothing changed.
    let (st, v) = s.admin(Method::GET, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["status"], "active");
}

async fn a_full_usage_batch_fits_what_the_usage_route_accepts(e: Engine) {
    let s = InProcessServer::start(e).await;
    let IssuedKey { secret: edge, .. } = s.create(json!({"name": "edge", "kind": "edge"})).await;
    let IssuedKey { key: rec, .. } = s.create(json!({"name": "used"})).await;
    let id = rec.id.clone();
    // The largest batch the contract allows: every entry at its largest accepted values.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let entries: Vec<Value> = (0..keygate_protocol::usage::MAX_BATCH_ENTRIES)
        .map(|_| json!({"key_id": id, "count": 1_000_000_000u64, "last_used_at": now}))
        .collect();
    let body = json!({"batch_id": "b".repeat(128), "entries": entries});
    let text = body.to_string();
    assert!(
        text.len() > 64 * 1024,
        "the batch is over the general limit"
    );
    assert!(text.len() <= keygate_protocol::usage::MAX_BODY_BYTES);
    let (st, v) = s
        .call(Some(&edge), Method::POST, "/v1/usage", Some(body))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], true);
}
