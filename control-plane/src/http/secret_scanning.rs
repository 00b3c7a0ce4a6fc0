//! `POST /v1/github/secret-scanning`: GitHub's secret scanning partner alerts. No credential:
//! the body must carry GitHub's signature (checked before anything else, over the raw body);
//! an unsigned, badly signed or replayed alert changes nothing. Each match is checked (format,
//! checksum, digest lookup); a key's leak is audited with the public URL and source (event
//! `key.leaked`) and the policy applied (revoke by default, suspend, or notify), cascading to its
//! children. The answer is GitHub's feedback array (`token_hash`, `token_type`, `label`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use keygate_protocol::{Digest, key};
use sha2::Digest as _;

use crate::domain::key::{Actor, audit_view};
use crate::domain::leaks::{AlertMatch, Feedback, LEAK_ACTION, Label, MAX_MATCHES, leak_reason};
use crate::domain::lifecycle::status_plan;
use crate::domain::{KeyStatus, RuleError};
use crate::http::error::ApiError;
use crate::runtime::clock::unix_now;
use crate::runtime::secret_scanning::AlertAuthError;
use crate::runtime::state::AppState;
use crate::storage::{AuditEntry, StoreError};

/// The route's path.
pub const PATH: &str = "/v1/github/secret-scanning";

/// Largest alert body accepted (GitHub batches matches).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Who the audit log names for a reported leak.
fn actor() -> Actor {
    Actor {
        id: "github-secret-scanning".into(),
        name: "GitHub secret scanning".into(),
        display_prefix: String::new(),
    }
}

impl From<AlertAuthError> for ApiError {
    fn from(e: AlertAuthError) -> Self {
        match e {
            AlertAuthError::KeysUnavailable(_) => {
                tracing::warn!(error = %e, "secret scanning alert refused");
                let mut err = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SIGNING_KEYS_UNAVAILABLE",
                    e.to_string(),
                );
                err.retry_after = Some(5);
                err
            }
            _ => Self::new(StatusCode::UNAUTHORIZED, "BAD_SIGNATURE", e.to_string()),
        }
    }
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

#[utoipa::path(post, path = "/v1/github/secret-scanning", tag = "github",
    request_body(content = String, description = "GitHub's alert: a JSON array of {token, type, url, source}", content_type = "application/json"),
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "which published key signed the body"),
        ("Github-Public-Key-Signature" = String, Header, description = "base64 DER ECDSA P-256 SHA-256 signature of the raw body"),
    ),
    responses((status = 200, description = "feedback: [{token_hash, token_type, label}]"), (status = 401, body = crate::http::error::ErrorBody), (status = 400, body = crate::http::error::ErrorBody)))]
/// Acts on a GitHub secret scanning alert.
pub async fn secret_scanning_alert(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    let (Some(id), Some(sig)) = (
        header(&headers, "github-public-key-identifier"),
        header(&headers, "github-public-key-signature"),
    ) else {
        return Err(AlertAuthError::Unsigned.into());
    };
    state.alerts.verify(id, sig, &body).await?;
    let matches: Vec<AlertMatch> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "the alert is not a JSON array of {{token, type, url, source}}: {e}"
        ))
    })?;
    if matches.len() > MAX_MATCHES {
        return Err(ApiError::invalid(format!(
            "at most {MAX_MATCHES} matches per alert"
        )));
    }
    let body_digest: [u8; 32] = sha2::Sha256::digest(&body).into();
    let replay = state.db.alert_seen(&body_digest).await?;
    let policy = state.config.secret_scanning.secret_scanning_policy;
    let mut feedback = Vec::with_capacity(matches.len());
    for m in &matches {
        let digest = Digest::of(&m.token);
        let found = match key::parse(&m.token) {
            Ok(_) => state
                .db
                .find_by_digest(digest.as_bytes())
                .await?
                .map(|(k, _)| k),
            Err(_) => None,
        };
        feedback.push(Feedback {
            token_hash: digest.to_hex(),
            token_type: m.token_type.clone(),
            label: if found.is_some() {
                Label::TruePositive
            } else {
                Label::FalsePositive
            },
        });
        let Some(k) = found else { continue };
        if replay {
            continue;
        }
        let reason = leak_reason(m);
        let now = unix_now();
        let mut audited = false;
        if let Some(action) = policy.action()
            && k.status != KeyStatus::Revoked
        {
            // The leak's audit row and event are written in the change's own transaction.
            match state
                .db
                .change_key_noting(
                    k.id,
                    &actor(),
                    action.as_str(),
                    LEAK_ACTION,
                    Some(&reason),
                    now,
                    |old| status_plan(old, action, now).map_err(StoreError::Rule),
                )
                .await
            {
                Ok(_) => audited = true,
                // Already suspended (policy suspend), or revoked meanwhile: still audited.
                Err(StoreError::Rule(RuleError::InvalidTransition { .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Nothing changed (policy notify, or no transition): the leak's row on its own.
        if !audited {
            state
                .db
                .insert_audit(&AuditEntry {
                    at: now,
                    workspace_id: Some(&k.workspace_id),
                    actor: &actor(),
                    action: LEAK_ACTION,
                    key_id: Some(k.id),
                    before: Some(audit_view(&k)),
                    after: Some(audit_view(&k)),
                    reason: Some(&reason),
                })
                .await?;
        }
        tracing::warn!(key = %crate::domain::key::format_key_id(k.id), source = %m.source, "GitHub secret scanning reported a leaked key");
    }
    if !replay {
        state.db.record_alert(&body_digest, unix_now()).await?;
    }
    Ok(Json(feedback))
}
