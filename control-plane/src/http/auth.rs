//! Caller authentication (`Authorization: Bearer <key>` or `x-api-key`), the [`Caller`]
//! extractor, the forward-auth proxy's authentication (its own header, [`authenticate_proxy`]),
//! per-address rate limiting of failed authentications (counted by
//! [`crate::runtime::limiter::AuthLimiter`]), and the audit-writing helper other handlers (the
//! GitHub broker's) use.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use keygate_protocol::{Digest, key};
use uuid::Uuid;

use crate::domain::key::{Actor, format_key_id};
use crate::domain::{Grant, KeyKind, KeyStatus};
use crate::http::error::ApiError;
use crate::runtime::canary::Seen;
use crate::runtime::clock::unix_now;
use crate::runtime::state::AppState;
use crate::storage::AuditEntry;

/// Scope needed to read keys and the audit log.
pub const SCOPE_KEYS_READ: &str = "keys:read";
/// Scope needed to change keys.
pub const SCOPE_KEYS_WRITE: &str = "keys:write";

/// What kind of credential authenticated the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    /// The bootstrap admin: may do everything.
    Admin,
    /// A stored key of this kind.
    Key(KeyKind),
}

/// An authenticated caller. Extract it in a handler to require authentication; then call
/// [`Caller::require_scope`], [`Caller::require_edge`] or inspect the fields.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Admin or key kind.
    pub kind: CallerKind,
    /// The key's workspace (`None` for the admin, who sees every workspace).
    pub workspace_id: Option<String>,
    /// The key's id (`None` for the admin).
    pub key_id: Option<Uuid>,
    /// Scopes held (empty for the admin, who holds all).
    pub scopes: Vec<String>,
    /// Resource allow-list (empty = unrestricted).
    pub resources: Vec<String>,
    /// Expiry of the credential used.
    pub expires_at: Option<i64>,
    /// Owner id of the key (`admin` for the admin).
    pub owner_id: String,
    /// Who, for `created_by` and audit rows.
    pub actor: Actor,
}

impl Caller {
    /// Whether this is the admin.
    pub fn is_admin(&self) -> bool {
        self.kind == CallerKind::Admin
    }

    /// What the caller may hand on; `None` for the admin (everything).
    pub fn grant(&self) -> Option<Grant> {
        (!self.is_admin()).then(|| Grant {
            scopes: self.scopes.clone(),
            resources: self.resources.clone(),
            expires_at: self.expires_at,
        })
    }

    /// Whether the caller holds `scope` (the admin holds every scope).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.is_admin() || self.scopes.iter().any(|s| s == scope)
    }

    /// Allows the admin and `workspace` keys holding `scope`; `repo` and `edge` keys get 403.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        match self.kind {
            CallerKind::Admin => Ok(()),
            CallerKind::Key(KeyKind::Workspace) if self.has_scope(scope) => Ok(()),
            CallerKind::Key(KeyKind::Workspace) => Err(ApiError::forbidden(format!(
                "this key lacks the `{scope}` scope"
            ))),
            CallerKind::Key(k) => Err(ApiError::forbidden(format!(
                "a `{}` key cannot call the management API",
                k.as_str()
            ))),
        }
    }

    /// Allows the admin and `workspace` keys (any scope).
    pub fn require_management(&self) -> Result<(), ApiError> {
        match self.kind {
            CallerKind::Admin | CallerKind::Key(KeyKind::Workspace) => Ok(()),
            CallerKind::Key(k) => Err(ApiError::forbidden(format!(
                "a `{}` key cannot call the management API",
                k.as_str()
            ))),
        }
    }

    /// Allows the admin and `edge` keys (the key-set feed and usage intake).
    pub fn require_edge(&self) -> Result<(), ApiError> {
        match self.kind {
            CallerKind::Admin | CallerKind::Key(KeyKind::Edge) => Ok(()),
            _ => Err(ApiError::forbidden("an `edge` key is required")),
        }
    }

    /// The workspace the caller is confined to (`None` for the admin).
    pub fn workspace_filter(&self) -> Option<&str> {
        self.workspace_id.as_deref()
    }
}

/// Extracts the presented credential: `Authorization: Bearer …`, else `x-api-key`.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = v.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The peer address of the connection (unspecified when the server was not started with
/// connect info, as in-process tests).
pub(crate) fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// 429 when `ip` is over its failed-authentication limit.
pub(crate) fn check_limit(state: &AppState, ip: IpAddr) -> Result<(), ApiError> {
    if let Some(wait) = state.limiter.blocked(ip) {
        state.metrics.rate_limited();
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many failed authentications from this address",
        );
        e.retry_after = Some(wait.as_secs().max(1));
        return Err(e);
    }
    Ok(())
}

/// Counts a 401 against `ip`.
pub(crate) fn note_failure<T>(
    state: &AppState,
    ip: IpAddr,
    r: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if let Err(e) = &r
        && e.status == axum::http::StatusCode::UNAUTHORIZED
    {
        state.metrics.auth_failure();
        state.limiter.fail(ip);
    }
    r
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = client_ip(parts);
        check_limit(state, ip)?;
        let seen = seen_in(parts);
        let r = authenticate(state, presented_token(&parts.headers), Some(&seen)).await;
        note_failure(state, ip, r)
    }
}

/// Authenticates the caller of forward-auth, the proxy, by the `edge` key in
/// [`crate::forward_auth::PROXY_KEY_HEADER`]; never by `Authorization` or `x-api-key`, which
/// belong to the request being authorized. Failures count against the address as any failed
/// authentication does.
///
/// # Errors
/// 401 `PROXY_UNAUTHENTICATED` (no key, or not a valid one), 403 `PROXY_FORBIDDEN` (a valid
/// key of another kind, the admin credential included: a proxy holds only an edge key), 429.
pub async fn authenticate_proxy(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    let ip = client_ip(parts);
    check_limit(state, ip)?;
    let header = crate::forward_auth::PROXY_KEY_HEADER;
    let token = parts
        .headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unauthenticated = |why: &str| {
        ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "PROXY_UNAUTHENTICATED",
            format!(
                "{why}: the caller of forward-auth (the proxy) presents an `edge` key in \
                 {header} (keygate serve --forward-auth-open turns this off on a private network)"
            ),
        )
    };
    let r = match token {
        None => Err(unauthenticated("no proxy credential")),
        Some(token) => match authenticate(state, Some(token), Some(&seen_in(parts))).await {
            Ok(c) if c.kind == CallerKind::Key(KeyKind::Edge) => Ok(()),
            Ok(_) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "PROXY_FORBIDDEN",
                format!("the key in {header} is not an `edge` key"),
            )),
            Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
                Err(unauthenticated("the proxy credential is not valid"))
            }
            Err(e) => Err(e),
        },
    };
    note_failure(state, ip, r)
}

/// Authenticates a presented credential (the admin token, a generated admin key or a stored
/// key). Does not count failures: the callers do ([`note_failure`]).
pub(crate) async fn authenticate(
    state: &AppState,
    token: Option<&str>,
    seen: Option<&Seen>,
) -> Result<Caller, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::unauthenticated(
            "missing credential (Authorization: Bearer or x-api-key)",
        ));
    };
    if token.len() > key::MAX_KEY_LEN {
        return Err(ApiError::unauthenticated("invalid credential"));
    }
    let digest = Digest::of(token);
    if state.admin_token.as_ref().is_some_and(|d| *d == digest) {
        return Ok(admin_caller("admin".into()));
    }
    let parsed = key::parse(token).map_err(|_| ApiError::unauthenticated("invalid credential"))?;
    let admin_key = parsed.prefix() == crate::runtime::state::ADMIN_KEY_PREFIX;
    authenticate_digest(state, &digest, admin_key, seen).await
}

/// Where a request presented its credential (path, client, user agent), for a canary hit.
pub(crate) fn seen_in(parts: &Parts) -> Seen {
    Seen::new(
        parts.uri.path(),
        &client_ip(parts).to_string(),
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Authenticates by the digest of a credential presented earlier (a console session keeps only
/// that): the admin token, a generated admin key (looked up when `admin_key`), else a stored key,
/// which must still be active and unexpired. A canary is refused exactly as an unknown key, and
/// raises its hit (with `seen`, where it was presented) in the background.
pub(crate) async fn authenticate_digest(
    state: &AppState,
    digest: &Digest,
    admin_key: bool,
    seen: Option<&Seen>,
) -> Result<Caller, ApiError> {
    if state.admin_token.as_ref().is_some_and(|d| d == digest) {
        return Ok(admin_caller("admin".into()));
    }
    if admin_key && let Some(prefix) = state.db.find_admin(digest.as_bytes()).await? {
        return Ok(admin_caller(prefix));
    }
    let found = state
        .verify_cache
        .lookup(&state.db, digest.as_bytes())
        .await?;
    let Some(found) = found else {
        return Err(ApiError::unauthenticated("invalid credential"));
    };
    let (k, grace_until) = (&found.key, &found.grace_until);
    if !crate::domain::canary::can_pass(k.kind) {
        if let Some(seen) = seen {
            state.canaries.raise(&state.db, k.id, seen.clone());
        }
        return Err(ApiError::unauthenticated("invalid credential"));
    }
    let now = unix_now();
    let expires_at = match (k.expires_at, grace_until) {
        (Some(a), Some(b)) => Some(a.min(*b)),
        (a, b) => a.or(*b),
    };
    if k.status != KeyStatus::Active || expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::unauthenticated("invalid credential"));
    }
    Ok(Caller {
        kind: CallerKind::Key(k.kind),
        workspace_id: Some(k.workspace_id.clone()),
        key_id: Some(k.id),
        scopes: k.scopes.clone(),
        resources: k.resources.clone(),
        expires_at,
        owner_id: k.owner_id.clone(),
        actor: Actor {
            id: format_key_id(k.id),
            name: k.name.clone(),
            display_prefix: k.display_prefix.clone(),
        },
    })
}

fn admin_caller(display_prefix: String) -> Caller {
    Caller {
        kind: CallerKind::Admin,
        workspace_id: None,
        key_id: None,
        scopes: Vec::new(),
        resources: Vec::new(),
        expires_at: None,
        owner_id: "admin".into(),
        actor: Actor {
            id: "admin".into(),
            name: "admin".into(),
            display_prefix,
        },
    }
}

/// Appends one audit row in its own transaction, for actions that change nothing else in
/// the database (for example a GitHub token handed out by the broker). Changes to keys
/// write their audit row inside their own transaction instead.
pub async fn write_audit(state: &AppState, entry: &AuditEntry<'_>) -> Result<(), ApiError> {
    state.db.insert_audit(entry).await.map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_then_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "kg_b".parse().unwrap());
        assert_eq!(presented_token(&h), Some("kg_b"));
        h.insert(header::AUTHORIZATION, "Bearer kg_a".parse().unwrap());
        assert_eq!(presented_token(&h), Some("kg_a"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_token(&h), Some("kg_b"));
    }
}
