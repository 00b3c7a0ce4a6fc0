//! Installation access tokens: minting them (`POST
//! /app/installations/{installation_id}/access_tokens`, scoped to repositories and permissions,
//! plain or stateless) and revoking them (`DELETE /installation/token`), with what the fake
//! records of each.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::authenticate_app;
use crate::model;
use crate::responses::{DOCS, error, not_found_body, ok_json};
use crate::state::{Shared, unix_now};

/// One request body the fake received on the access-token endpoint.
#[derive(Debug, Clone)]
pub struct RecordedTokenRequest {
    /// The installation in the path.
    pub installation_id: u64,
    /// The JSON body as sent (`Value::Null` when empty).
    pub body: Value,
    /// The `X-GitHub-Stateless-S2S-Token` header, if sent.
    pub stateless_header: Option<String>,
}

/// What the fake knows about a token it minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The installation it belongs to.
    pub installation_id: u64,
    /// Expiry, unix seconds (on the fake's clock).
    pub expires_at: i64,
    /// Whether `DELETE /installation/token` revoked it.
    pub revoked: bool,
    /// Repository names it was scoped to (empty: all of the installation's).
    pub repositories: Vec<String>,
    /// Permissions it carries.
    pub permissions: BTreeMap<String, String>,
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    repositories: Option<Vec<String>>,
    repository_ids: Option<Vec<u64>>,
    permissions: Option<BTreeMap<String, String>>,
}

fn level(v: &str) -> u8 {
    match v {
        "read" => 1,
        "write" => 2,
        "admin" => 3,
        _ => 0,
    }
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const B64URL: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";

pub(crate) async fn create_token(
    State(shared): State<Arc<Shared>>,
    Path(installation_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let app_id = match authenticate_app(&shared, &headers) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let stateless_header = headers
        .get("x-github-stateless-s2s-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body_value: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return *error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let mut g = shared.lock();
    let Ok(installation_id) = installation_id.parse::<u64>() else {
        return not_found_body();
    };
    g.token_requests.push(RecordedTokenRequest {
        installation_id,
        body: body_value.clone(),
        stateless_header: stateless_header.clone(),
    });
    let req: TokenRequest = if body_value.is_null() {
        TokenRequest {
            repositories: None,
            repository_ids: None,
            permissions: None,
        }
    } else {
        match serde_json::from_value(body_value) {
            Ok(r) => r,
            Err(e) => {
                return ok_json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    model::validation_error(&format!("Invalid request.\n\n{e}"), DOCS),
                );
            }
        }
    };
    let inst = match g.installations.get(&installation_id) {
        Some(i) if i.app_id == app_id => i.clone(),
        _ => return not_found_body(),
    };
    if inst.suspended {
        return *error(
            StatusCode::FORBIDDEN,
            "This installation has been suspended",
        );
    }
    let mut names: Vec<String> = Vec::new();
    for r in req.repositories.iter().flatten() {
        match inst.repos.keys().find(|n| n.eq_ignore_ascii_case(r)) {
            Some(n) => names.push(n.clone()),
            None => return repo_not_accessible(),
        }
    }
    for id in req.repository_ids.iter().flatten() {
        match inst.repos.iter().find(|(_, v)| *v == id) {
            Some((n, _)) => names.push(n.clone()),
            None => return repo_not_accessible(),
        }
    }
    names.sort();
    names.dedup();
    let permissions = match &req.permissions {
        Some(p) => {
            for (k, v) in p {
                if level(v) == 0
                    || level(inst.permissions.get(k).map(String::as_str).unwrap_or("")) < level(v)
                {
                    return ok_json(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        model::validation_error(
                            "The permissions requested are not granted to this installation.",
                            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
                        ),
                    );
                }
            }
            p.clone()
        }
        None => inst.permissions.clone(),
    };
    let stateless = match stateless_header.as_deref() {
        Some("enabled") => true,
        Some("disabled") => false,
        _ => g.stateless_default,
    };
    let token = if stateless {
        format!(
            "ghs_{}.{}.{}",
            random_chars(36, B64URL),
            random_chars(400, B64URL),
            random_chars(78, B64URL)
        )
    } else {
        format!("ghs_{}", random_chars(36, ALNUM))
    };
    let expires_at = unix_now() + g.clock_offset + g.token_ttl;
    g.tokens.insert(
        token.clone(),
        TokenRecord {
            installation_id,
            expires_at,
            revoked: false,
            repositories: names.clone(),
            permissions: permissions.clone(),
        },
    );
    let owner = model::simple_user(
        &shared.api_base,
        &shared.web_base,
        &inst.account,
        inst.account_id,
        &inst.account_type,
    );
    let mut out = json!({
        "token": token,
        "expires_at": rfc3339(expires_at),
        "permissions": permissions,
        "repository_selection": if names.is_empty() { "all" } else { "selected" },
    });
    if !names.is_empty() {
        let repos: Vec<Value> = names
            .iter()
            .map(|n| {
                model::repository(
                    &shared.api_base,
                    &shared.web_base,
                    &owner,
                    &inst.account,
                    n,
                    inst.repos[n],
                )
            })
            .collect();
        out["repositories"] = Value::Array(repos);
    }
    ok_json(StatusCode::CREATED, out)
}

fn repo_not_accessible() -> Response {
    ok_json(
        StatusCode::UNPROCESSABLE_ENTITY,
        model::validation_error(
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
            "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app",
        ),
    )
}

pub(crate) async fn revoke_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    let mut g = shared.lock();
    let now = unix_now() + g.clock_offset;
    match g.tokens.get_mut(token) {
        Some(t) if !t.revoked && t.expires_at > now => {
            t.revoked = true;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => *error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}
