//! The pure core of key lifecycle: kinds and statuses, allowed transitions, lifetime and
//! non-escalation rules, exchange limits and the verification decision. No I/O here; the HTTP
//! and SQL layers only call these functions.

pub mod canary;
pub mod credits;
pub mod edge_gone;
pub mod edges;
pub mod expiry;
pub mod key;
pub mod leaks;
pub mod lifecycle;
pub mod limits;
pub mod names;
pub mod rate_limited;
pub mod refill;
pub mod verify_limits;
pub mod webhooks;

use keygate_protocol::scope;
use serde::{Deserialize, Serialize};

/// Longest accepted key name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest accepted description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Largest accepted metadata object, serialized, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Longest lifetime a key may be given: 5 years.
pub const MAX_LIFETIME_SECS: i64 = 5 * 365 * 24 * 3600;
/// Default lifetime of an exchanged child key: 1 hour.
pub const DEFAULT_CHILD_LIFETIME_SECS: i64 = 3600;
/// Longest lifetime of an exchanged child key: 24 hours.
pub const MAX_CHILD_LIFETIME_SECS: i64 = 24 * 3600;
/// Longest grace period for a rotated-out secret: 7 days.
pub const MAX_GRACE_SECS: i64 = 7 * 24 * 3600;
/// Most active children a parent key may have at once.
pub const MAX_ACTIVE_CHILDREN: i64 = 1000;
/// Longest audit reason or exchange subject, in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A workspace credential: may call the management API as its scopes allow.
    Workspace,
    /// A repository-scoped credential: only for the edge, never the management API.
    Repo,
    /// The credential a filter uses to sync the key set and report usage.
    Edge,
    /// A canary: looks like any key, is never valid; presenting it raises `key.canary_used`
    /// (`domain::canary`).
    Canary,
}

impl KeyKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::Repo => "repo",
            Self::Edge => "edge",
            Self::Canary => "canary",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "workspace" => Some(Self::Workspace),
            "repo" => Some(Self::Repo),
            "edge" => Some(Self::Edge),
            "canary" => Some(Self::Canary),
            _ => None,
        }
    }
}

/// Lifecycle status of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Usable (until it expires).
    Active,
    /// Temporarily unusable; can be reactivated.
    Suspended,
    /// Final.
    Revoked,
}

impl KeyStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// A lifecycle action on an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Change name, description, scopes, allow-list or expiry.
    Update,
    /// Active → suspended.
    Suspend,
    /// Suspended → active.
    Reactivate,
    /// Active or suspended → revoked (final).
    Revoke,
    /// New secret for an active key.
    Rotate,
}

impl Action {
    /// The audit-log name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => "key.update",
            Self::Suspend => "key.suspend",
            Self::Reactivate => "key.reactivate",
            Self::Revoke => "key.revoke",
            Self::Rotate => "key.rotate",
        }
    }
}

/// A broken lifecycle rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The action is not allowed from the key's current status.
    #[error("cannot {action} a key that is {from}")]
    InvalidTransition {
        /// The attempted action.
        action: &'static str,
        /// The key's status.
        from: &'static str,
    },
    /// The caller tried to grant more than it holds.
    #[error("privilege escalation: {0}")]
    Escalation(String),
    /// A lifetime or expiry is out of range.
    #[error("invalid lifetime: {0}")]
    Lifetime(String),
    /// A field is too long, too many entries, or badly formed.
    #[error("{0}")]
    Invalid(String),
    /// Rate limits or credits refused (`limits::LimitsError::code` is the API's code).
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    /// The parent already has the maximum number of active children.
    #[error("the parent key already has {MAX_ACTIVE_CHILDREN} active children")]
    TooManyChildren,
}

/// The status a key moves to under `action`, or why it may not.
pub fn transition(from: KeyStatus, action: Action) -> Result<KeyStatus, RuleError> {
    use {Action as A, KeyStatus as S};
    let to = match (from, action) {
        (S::Active, A::Update) | (S::Suspended, A::Update) => Some(from),
        (S::Active, A::Suspend) => Some(S::Suspended),
        (S::Suspended, A::Reactivate) => Some(S::Active),
        (S::Active | S::Suspended, A::Revoke) => Some(S::Revoked),
        (S::Active, A::Rotate) => Some(S::Active),
        _ => None,
    };
    to.ok_or(RuleError::InvalidTransition {
        action: match action {
            A::Update => "update",
            A::Suspend => "suspend",
            A::Reactivate => "reactivate",
            A::Revoke => "revoke",
            A::Rotate => "rotate",
        },
        from: from.as_str(),
    })
}

/// What a credential holds and so may hand on: scopes, resource allow-list (empty = any
/// resource) and expiry (`None` = never).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Scope names.
    pub scopes: Vec<String>,
    /// Resource allow-list; empty means unrestricted.
    pub resources: Vec<String>,
    /// Unix seconds, or none.
    pub expires_at: Option<i64>,
}

/// Checks that `requested` is within `holder` (no privilege escalation). `None` is the admin,
/// who holds everything.
pub fn check_within(holder: Option<&Grant>, requested: &Grant) -> Result<(), RuleError> {
    let Some(holder) = holder else { return Ok(()) };
    if let Some(s) = requested.scopes.iter().find(|s| !holder.scopes.contains(s)) {
        return Err(RuleError::Escalation(format!(
            "scope `{s}` is not held by the caller"
        )));
    }
    if !holder.resources.is_empty() {
        if requested.resources.is_empty() {
            return Err(RuleError::Escalation(
                "the caller is limited to an allow-list, so the new key needs one within it".into(),
            ));
        }
        if let Some(r) = requested
            .resources
            .iter()
            .find(|r| !scope::resource_allowed(&holder.resources, r))
        {
            return Err(RuleError::Escalation(format!(
                "resource `{r}` is not in the caller's allow-list"
            )));
        }
    }
    if let Some(limit) = holder.expires_at {
        match requested.expires_at {
            None => {
                return Err(RuleError::Escalation(
                    "the caller expires, so the new key must expire no later than it".into(),
                ));
            }
            Some(e) if e > limit => {
                return Err(RuleError::Escalation(
                    "the new key would outlive the caller".into(),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Resolves `expires_in` (seconds from now) or `expires_at` (unix seconds) into an expiry,
/// refusing both at once, non-positive lifetimes, past expiries and lifetimes over
/// [`MAX_LIFETIME_SECS`].
pub fn resolve_expiry(
    now: i64,
    expires_in: Option<i64>,
    expires_at: Option<i64>,
) -> Result<Option<i64>, RuleError> {
    match (expires_in, expires_at) {
        (Some(_), Some(_)) => Err(RuleError::Lifetime(
            "give expires_in or expires_at, not both".into(),
        )),
        (Some(secs), None) => {
            if secs <= 0 {
                return Err(RuleError::Lifetime("expires_in must be positive".into()));
            }
            if secs > MAX_LIFETIME_SECS {
                return Err(RuleError::Lifetime(format!(
                    "expires_in is at most {MAX_LIFETIME_SECS} seconds"
                )));
            }
            Ok(Some(now + secs))
        }
        (None, Some(at)) => {
            if at <= now {
                return Err(RuleError::Lifetime(
                    "expires_at must be in the future".into(),
                ));
            }
            if at - now > MAX_LIFETIME_SECS {
                return Err(RuleError::Lifetime(format!(
                    "expires_at is at most {MAX_LIFETIME_SECS} seconds ahead"
                )));
            }
            Ok(Some(at))
        }
        (None, None) => Ok(None),
    }
}

/// The lifetime of an exchanged child: default one hour, at most 24 hours, and never beyond
/// the parent's own expiry.
pub fn child_expiry(
    now: i64,
    requested_secs: Option<i64>,
    parent_expires_at: Option<i64>,
) -> Result<i64, RuleError> {
    let secs = requested_secs.unwrap_or(DEFAULT_CHILD_LIFETIME_SECS);
    if secs <= 0 {
        return Err(RuleError::Lifetime("expires_in must be positive".into()));
    }
    if secs > MAX_CHILD_LIFETIME_SECS {
        return Err(RuleError::Lifetime(format!(
            "an exchanged key lives at most {MAX_CHILD_LIFETIME_SECS} seconds"
        )));
    }
    let at = now + secs;
    match parent_expires_at {
        Some(p) if requested_secs.is_some() && at > p => Err(RuleError::Escalation(
            "the child would outlive its parent".into(),
        )),
        Some(p) => Ok(at.min(p)),
        None => Ok(at),
    }
}

/// Checks that another active child may be made.
pub fn check_child_count(active_children: i64) -> Result<(), RuleError> {
    if active_children >= MAX_ACTIVE_CHILDREN {
        Err(RuleError::TooManyChildren)
    } else {
        Ok(())
    }
}

/// Checks a rotation grace period.
pub fn check_grace(grace_secs: i64) -> Result<(), RuleError> {
    if !(0..=MAX_GRACE_SECS).contains(&grace_secs) {
        return Err(RuleError::Invalid(format!(
            "grace_period must be between 0 and {MAX_GRACE_SECS} seconds"
        )));
    }
    Ok(())
}

/// Validates a free text field (description, reason, subject) against a byte limit.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), RuleError> {
    if value.len() > max {
        return Err(RuleError::Invalid(format!(
            "{field} is at most {max} bytes"
        )));
    }
    Ok(())
}

/// Validates scope names and their count; returns them sorted and deduplicated.
pub fn normalize_scopes(scopes: &[String]) -> Result<Vec<String>, RuleError> {
    if scopes.len() > scope::MAX_SCOPES_PER_KEY {
        return Err(RuleError::Invalid(format!(
            "at most {} scopes per key",
            scope::MAX_SCOPES_PER_KEY
        )));
    }
    for s in scopes {
        scope::validate_scope(s)
            .map_err(|e| RuleError::Invalid(format!("scope `{}`: {e}", truncate(s))))?;
    }
    let mut out = scopes.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

/// Validates resource names and their count; returns them sorted and deduplicated.
pub fn normalize_resources(resources: &[String]) -> Result<Vec<String>, RuleError> {
    if resources.len() > scope::MAX_RESOURCES_PER_KEY {
        return Err(RuleError::Invalid(format!(
            "at most {} resources per key",
            scope::MAX_RESOURCES_PER_KEY
        )));
    }
    for r in resources {
        scope::validate_resource(r)
            .map_err(|e| RuleError::Invalid(format!("resource `{}`: {e}", truncate(r))))?;
    }
    let mut out = resources.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Validates a metadata value: a JSON object of bounded size.
pub fn check_metadata(value: &serde_json::Value) -> Result<(), RuleError> {
    if !value.is_object() {
        return Err(RuleError::Invalid("metadata must be a JSON object".into()));
    }
    if value.to_string().len() > MAX_METADATA_BYTES {
        return Err(RuleError::Invalid(format!(
            "metadata is at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Outcome code of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    /// The key passes.
    Valid,
    /// Not a well-formed key (bad prefix, charset, length or checksum).
    Malformed,
    /// No such key.
    NotFound,
    /// Past its expiry (or its rotation grace period).
    Expired,
    /// Suspended.
    Suspended,
    /// Revoked.
    Revoked,
    /// Lacks a required scope.
    InsufficientScope,
    /// The resource is not in the key's allow-list.
    ResourceNotAllowed,
    /// The key's credits are used up (until a refill).
    CreditsExhausted,
    /// The key, or its owner's pool, is over one of its rate limits (until the window ends).
    RateLimited,
}

/// What verification needs to know about a stored key found by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Current status.
    pub status: KeyStatus,
    /// Effective expiry of this secret: the key's, or for a rotated-out secret the earlier of
    /// the key's and the grace end.
    pub expires_at: Option<i64>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Resource allow-list (empty = any).
    pub resources: Vec<String>,
}

/// Decides a verification: the first failing check wins, in the order
/// not found → revoked → suspended → expired → scope → resource.
pub fn decide(
    candidate: Option<&Candidate>,
    now: i64,
    required_scopes: &[String],
    resource: Option<&str>,
) -> VerifyCode {
    let Some(c) = candidate else {
        return VerifyCode::NotFound;
    };
    match c.status {
        KeyStatus::Revoked => return VerifyCode::Revoked,
        KeyStatus::Suspended => return VerifyCode::Suspended,
        KeyStatus::Active => {}
    }
    if c.expires_at.is_some_and(|e| e <= now) {
        return VerifyCode::Expired;
    }
    if required_scopes.iter().any(|s| !c.scopes.contains(s)) {
        return VerifyCode::InsufficientScope;
    }
    if let Some(r) = resource
        && !c.resources.is_empty()
        && !scope::resource_allowed(&c.resources, r)
    {
        return VerifyCode::ResourceNotAllowed;
    }
    VerifyCode::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(scopes: &[&str], resources: &[&str], expires_at: Option<i64>) -> Grant {
        Grant {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            expires_at,
        }
    }

    #[test]
    fn transitions_follow_the_lifecycle() {
        use {Action as A, KeyStatus as S};
        assert_eq!(transition(S::Active, A::Suspend), Ok(S::Suspended));
        assert_eq!(transition(S::Suspended, A::Reactivate), Ok(S::Active));
        assert_eq!(transition(S::Active, A::Revoke), Ok(S::Revoked));
        assert_eq!(transition(S::Suspended, A::Revoke), Ok(S::Revoked));
        assert_eq!(transition(S::Active, A::Rotate), Ok(S::Active));
        assert!(transition(S::Active, A::Reactivate).is_err());
        assert!(transition(S::Suspended, A::Suspend).is_err());
        assert!(transition(S::Suspended, A::Rotate).is_err());
        for a in [A::Update, A::Suspend, A::Reactivate, A::Revoke, A::Rotate] {
            assert!(
                transition(S::Revoked, a).is_err(),
                "revoked is final for {a:?}"
            );
        }
    }

    #[test]
    fn admin_may_grant_anything() {
        assert!(check_within(None, &g(&["anything:at_all"], &[], None)).is_ok());
    }

    #[test]
    fn scopes_cannot_escalate() {
        let holder = g(&["keys:read", "keys:write"], &[], None);
        assert!(check_within(Some(&holder), &g(&["keys:read"], &[], None)).is_ok());
        let e = check_within(
            Some(&holder),
            &g(&["keys:read", "github:tokens"], &[], None),
        )
        .unwrap_err();
        assert!(matches!(e, RuleError::Escalation(m) if m.contains("github:tokens")));
    }

    #[test]
    fn allow_list_cannot_widen() {
        let holder = g(&[], &["acme/api"], None);
        assert!(check_within(Some(&holder), &g(&[], &["acme/api"], None)).is_ok());
        assert!(
            check_within(Some(&holder), &g(&[], &[], None)).is_err(),
            "empty = unrestricted"
        );
        assert!(check_within(Some(&holder), &g(&[], &["acme/web"], None)).is_err());
    }

    #[test]
    fn lifetime_cannot_escalate() {
        let holder = g(&[], &[], Some(1000));
        assert!(check_within(Some(&holder), &g(&[], &[], Some(999))).is_ok());
        assert!(check_within(Some(&holder), &g(&[], &[], Some(1000))).is_ok());
        assert!(check_within(Some(&holder), &g(&[], &[], Some(1001))).is_err());
        assert!(check_within(Some(&holder), &g(&[], &[], None)).is_err());
    }

    #[test]
    fn expiry_resolution() {
        assert_eq!(resolve_expiry(100, Some(50), None), Ok(Some(150)));
        assert_eq!(resolve_expiry(100, None, Some(200)), Ok(Some(200)));
        assert_eq!(resolve_expiry(100, None, None), Ok(None));
        assert!(resolve_expiry(100, Some(0), None).is_err());
        assert!(resolve_expiry(100, Some(-5), None).is_err());
        assert!(resolve_expiry(100, Some(MAX_LIFETIME_SECS + 1), None).is_err());
        assert!(resolve_expiry(100, None, Some(100)).is_err());
        assert!(resolve_expiry(100, Some(1), Some(200)).is_err());
    }

    #[test]
    fn child_lifetimes() {
        assert_eq!(child_expiry(0, None, None), Ok(DEFAULT_CHILD_LIFETIME_SECS));
        assert_eq!(child_expiry(0, Some(60), None), Ok(60));
        assert!(child_expiry(0, Some(MAX_CHILD_LIFETIME_SECS + 1), None).is_err());
        assert!(child_expiry(0, Some(0), None).is_err());
        // Default lifetime is clipped to the parent's; an explicit one beyond it is refused.
        assert_eq!(child_expiry(0, None, Some(100)), Ok(100));
        assert!(matches!(
            child_expiry(0, Some(200), Some(100)),
            Err(RuleError::Escalation(_))
        ));
        assert!(check_child_count(MAX_ACTIVE_CHILDREN - 1).is_ok());
        assert_eq!(
            check_child_count(MAX_ACTIVE_CHILDREN),
            Err(RuleError::TooManyChildren)
        );
    }

    #[test]
    fn verify_decision_order() {
        let c = Candidate {
            status: KeyStatus::Active,
            expires_at: Some(100),
            scopes: vec!["keys:read".into()],
            resources: vec!["acme/api".into()],
        };
        let read = vec!["keys:read".to_string()];
        assert_eq!(decide(None, 0, &[], None), VerifyCode::NotFound);
        assert_eq!(
            decide(Some(&c), 50, &read, Some("acme/api")),
            VerifyCode::Valid
        );
        assert_eq!(decide(Some(&c), 100, &read, None), VerifyCode::Expired);
        assert_eq!(
            decide(Some(&c), 50, &["keys:write".into()], None),
            VerifyCode::InsufficientScope
        );
        assert_eq!(
            decide(Some(&c), 50, &read, Some("acme/web")),
            VerifyCode::ResourceNotAllowed
        );
        let s = Candidate {
            status: KeyStatus::Suspended,
            ..c.clone()
        };
        assert_eq!(decide(Some(&s), 500, &read, None), VerifyCode::Suspended);
        let r = Candidate {
            status: KeyStatus::Revoked,
            ..c
        };
        assert_eq!(decide(Some(&r), 500, &read, None), VerifyCode::Revoked);
    }

    #[test]
    fn field_limits() {
        assert!(check_metadata(&serde_json::json!({"a": 1})).is_ok());
        assert!(check_metadata(&serde_json::json!([1])).is_err());
        assert!(check_metadata(&serde_json::json!({"a": "x".repeat(MAX_METADATA_BYTES)})).is_err());
        assert!(check_grace(0).is_ok());
        assert!(check_grace(-1).is_err());
        assert!(check_grace(MAX_GRACE_SECS + 1).is_err());
    }
}
