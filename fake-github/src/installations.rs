//! The read endpoints for Apps and installations: the authenticated App (`GET /app`), its
//! installations (listed, by id, or found by repository, organization or user), in GitHub's
//! documented shapes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::authenticate_app;
use crate::model;
use crate::responses::{not_found_body, ok_json};
use crate::state::{Inner, Installation, Shared};

fn installation_json(shared: &Shared, g: &Inner, inst: &Installation) -> Value {
    let api = &shared.api_base;
    let web = &shared.web_base;
    let slug = g
        .apps
        .get(&inst.app_id)
        .map(|a| a.slug.clone())
        .unwrap_or_default();
    let client_id = g
        .apps
        .get(&inst.app_id)
        .map(|a| a.client_id.clone())
        .unwrap_or_default();
    json!({
        "id": inst.id,
        "account": account_json(api, web, inst),
        "repository_selection": "selected",
        "access_tokens_url": format!("{api}/app/installations/{}/access_tokens", inst.id),
        "repositories_url": format!("{api}/installation/repositories"),
        "html_url": format!("{web}/organizations/{}/settings/installations/{}", inst.account, inst.id),
        "app_id": inst.app_id,
        "client_id": client_id,
        "app_slug": slug,
        "target_id": inst.account_id,
        "target_type": inst.account_type,
        "permissions": inst.permissions,
        "events": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": if inst.suspended { json!("2026-01-02T00:00:00Z") } else { Value::Null }
    })
}

/// An installation's account. GitHub's description of `GET /app/installations` types it as
/// `allOf: [Simple User, Enterprise]`, so it carries both shapes' required fields.
fn account_json(api: &str, web: &str, inst: &Installation) -> Value {
    let mut account =
        model::simple_user(api, web, &inst.account, inst.account_id, &inst.account_type);
    account["name"] = json!(inst.account);
    account["slug"] = json!(inst.account.to_ascii_lowercase());
    account["created_at"] = json!("2026-01-01T00:00:00Z");
    account["updated_at"] = json!("2026-01-01T00:00:00Z");
    account
}

pub(crate) async fn get_app(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    let Some(app) = g.apps.get(&app_id) else {
        return not_found_body();
    };
    let owner = model::simple_user(
        &shared.api_base,
        &shared.web_base,
        "keygate-tests",
        1,
        "Organization",
    );
    ok_json(
        StatusCode::OK,
        json!({
            "id": app.id,
            "slug": app.slug,
            "client_id": app.client_id,
            "node_id": format!("MDM6QXBw{}", app.id),
            "owner": owner,
            "name": app.slug,
            "description": "Keygate test App",
            "external_url": "https://keygate.invalid",
            "html_url": format!("{}/apps/{}", shared.web_base, app.slug),
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
            "permissions": {"contents": "write", "metadata": "read"},
            "events": [],
            "installations_count": g.installations.values().filter(|i| i.app_id == app.id).count()
        }),
    )
}

pub(crate) async fn list_installations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    let list: Vec<Value> = g
        .installations
        .values()
        .filter(|i| i.app_id == app_id)
        .map(|i| installation_json(&shared, &g, i))
        .collect();
    ok_json(StatusCode::OK, Value::Array(list))
}

pub(crate) async fn get_installation(
    State(shared): State<Arc<Shared>>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    match installation_id
        .parse::<u64>()
        .ok()
        .and_then(|id| g.installations.get(&id))
    {
        Some(i) if i.app_id == app_id => ok_json(StatusCode::OK, installation_json(&shared, &g, i)),
        _ => not_found_body(),
    }
}

fn find_installation(
    shared: &Shared,
    headers: &HeaderMap,
    pred: impl Fn(&Installation) -> bool,
) -> Response {
    let app_id = match authenticate_app(shared, headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let g = shared.lock();
    match g
        .installations
        .values()
        .find(|i| i.app_id == app_id && pred(i))
    {
        Some(i) => ok_json(StatusCode::OK, installation_json(shared, &g, i)),
        None => not_found_body(),
    }
}

pub(crate) async fn get_repo_installation(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    find_installation(&shared, &headers, |i| {
        i.account.eq_ignore_ascii_case(&owner)
            && i.repos.keys().any(|r| r.eq_ignore_ascii_case(&repo))
    })
}

pub(crate) async fn get_org_installation(
    State(shared): State<Arc<Shared>>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    find_installation(&shared, &headers, |i| {
        i.account.eq_ignore_ascii_case(&org) && i.account_type == "Organization"
    })
}

pub(crate) async fn get_user_installation(
    State(shared): State<Arc<Shared>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    find_installation(&shared, &headers, |i| i.account.eq_ignore_ascii_case(&user))
}
