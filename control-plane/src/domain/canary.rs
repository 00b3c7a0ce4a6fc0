//! Canary keys: a key kind that is never valid anywhere but sits in the key set so every edge
//! recognizes it. A hit (a canary presented to an edge, to verify, to forward-auth or as a
//! caller's credential) is denied exactly as an unknown key and raises `key.canary_used`. Here:
//! the hit report's rules (parsed once), what the audit row and the event say about a hit, and
//! what a canary may not do.

use keygate_protocol::canary as wire;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::key::parse_key_id;
use super::{Action, KeyKind, RuleError};

/// The audit action (and webhook event type) of a canary hit.
pub const CANARY_ACTION: &str = "key.canary_used";

/// A hit time more than this far ahead of the receipt is taken as the receipt's.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Who saw the hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitSource {
    /// An edge (the filter in Envoy, the dynamic module), by its report.
    Edge,
    /// The control plane itself: verify, forward-auth, or a caller's credential.
    ControlPlane,
}

impl HitSource {
    /// The name in the audit reason and the event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::ControlPlane => "control_plane",
        }
    }
}

/// One hit as an edge reports it (`keygate_protocol::canary`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHit {
    /// Unique per hit (the edge's); a hit id seen before raises nothing.
    #[serde(default)]
    pub id: Option<String>,
    /// `key_<32 hex>`.
    pub key_id: String,
    /// Unix seconds (0: at receipt).
    #[serde(default)]
    pub at: i64,
    /// The request's path, without its query string.
    #[serde(default)]
    pub path: String,
    /// The client's address as the edge saw it.
    #[serde(default)]
    pub client: String,
    /// The `User-Agent` header.
    #[serde(default)]
    pub user_agent: String,
}

/// A report's body: `{"hits":[…]}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// The hits, at most [`wire::MAX_HITS`].
    pub hits: Vec<RawHit>,
}

/// A hit, parsed: what the audit row and the event carry (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The reporter's hit id, if it gave one.
    pub id: Option<String>,
    /// The canary.
    pub key_id: Uuid,
    /// When (unix seconds, never ahead of the receipt by more than the skew).
    pub at: i64,
    /// Path, without query string (empty when unknown).
    pub path: String,
    /// Client address (empty when unknown).
    pub client: String,
    /// User agent (empty when none was sent).
    pub user_agent: String,
}

/// Why a hit report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HitError {
    /// No hits, or more than a report may carry.
    #[error("hits must hold 1 to {} hits", wire::MAX_HITS)]
    Count,
    /// A hit's field breaks its rule.
    #[error("hits[{index}].{field}: {rule}")]
    Field {
        /// The hit's position.
        index: usize,
        /// The field.
        field: &'static str,
        /// The rule.
        rule: &'static str,
    },
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl Hit {
    /// Parses one reported hit received at `now`.
    ///
    /// # Errors
    /// The first field that breaks its rule.
    pub fn parse(raw: RawHit, index: usize, now: i64) -> Result<Self, HitError> {
        let bad = |field, rule| HitError::Field { index, field, rule };
        if let Some(id) = &raw.id
            && (id.is_empty() || id.len() > wire::MAX_ID_BYTES || !id.chars().all(is_id_char))
        {
            return Err(bad("id", "1 to 64 characters of [A-Za-z0-9_-]"));
        }
        let key_id = parse_key_id(&raw.key_id).ok_or(bad("key_id", "must be key_<32 hex>"))?;
        if raw.at < 0 {
            return Err(bad("at", "must be unix seconds"));
        }
        if !raw.path.is_empty() && !raw.path.starts_with('/') {
            return Err(bad("path", "must start with /"));
        }
        if raw.path.contains(['?', '#']) {
            return Err(bad("path", "must not carry a query string or fragment"));
        }
        if raw.path.len() > wire::MAX_PATH_BYTES {
            return Err(bad("path", "at most 512 bytes"));
        }
        if raw.client.len() > wire::MAX_CLIENT_BYTES {
            return Err(bad("client", "at most 64 bytes"));
        }
        if raw.user_agent.len() > wire::MAX_USER_AGENT_BYTES {
            return Err(bad("user_agent", "at most 256 bytes"));
        }
        let at = if raw.at == 0 || raw.at > now + MAX_CLOCK_SKEW_SECS {
            now
        } else {
            raw.at
        };
        Ok(Self {
            id: raw.id,
            key_id,
            at,
            path: raw.path,
            client: raw.client,
            user_agent: raw.user_agent,
        })
    }

    /// Parses a whole report received at `now`.
    ///
    /// # Errors
    /// Too many or no hits, or the first bad field.
    pub fn parse_report(report: RawReport, now: i64) -> Result<Vec<Self>, HitError> {
        if report.hits.is_empty() || report.hits.len() > wire::MAX_HITS {
            return Err(HitError::Count);
        }
        report
            .hits
            .into_iter()
            .enumerate()
            .map(|(i, raw)| Self::parse(raw, i, now))
            .collect()
    }

    /// The audit row's reason: the hit's facts as JSON text (who saw it and where), which the
    /// event carries as `data.hit`.
    pub fn reason(&self, source: HitSource, edge_id: Option<&str>) -> String {
        json!({
            "source": source.as_str(),
            "edge_id": edge_id,
            "hit_id": self.id,
            "path": self.path,
            "client": self.client,
            "user_agent": self.user_agent,
        })
        .to_string()
    }
}

/// The hit's facts of a canary audit row's reason (for the event's `data.hit`).
pub fn details(reason: Option<&str>) -> Option<Value> {
    reason
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .filter(Value::is_object)
}

/// Whether a key of this kind ever authenticates or passes: a canary never does.
pub fn can_pass(kind: KeyKind) -> bool {
    kind != KeyKind::Canary
}

/// A canary cannot be rotated (into a live key or another canary: issue a new one instead).
///
/// # Errors
/// [`RuleError::InvalidTransition`] for a canary's rotation.
pub fn check_action(kind: KeyKind, action: Action) -> Result<(), RuleError> {
    if kind == KeyKind::Canary && action == Action::Rotate {
        return Err(RuleError::InvalidTransition {
            action: "rotate",
            from: "a canary",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(path: &str) -> RawHit {
        RawHit {
            id: Some("w1-7".into()),
            key_id: format!("key_{}", "ab".repeat(16)),
            at: 1_000,
            path: path.into(),
            client: "203.0.113.9".into(),
            user_agent: "curl/8".into(),
        }
    }

    #[test]
    fn a_reported_hit_parses_into_its_facts() {
        let h = Hit::parse(raw("/v1/things"), 0, 2_000).unwrap();
        assert_eq!(h.at, 1_000);
        assert_eq!(h.path, "/v1/things");
        let reason = h.reason(HitSource::Edge, Some("e1"));
        let d = details(Some(&reason)).unwrap();
        assert_eq!(d["path"], "/v1/things");
        assert_eq!(d["client"], "203.0.113.9");
        assert_eq!(d["user_agent"], "curl/8");
        assert_eq!(d["source"], "edge");
        assert_eq!(d["edge_id"], "e1");
        assert_eq!(d["hit_id"], "w1-7");
    }

    #[test]
    fn a_hit_with_a_query_or_an_overlong_field_is_refused() {
        assert!(matches!(
            Hit::parse(raw("/x?api_key=kg_live_x"), 3, 0),
            Err(HitError::Field {
                index: 3,
                field: "path",
                ..
            })
        ));
        assert!(Hit::parse(raw("relative"), 0, 0).is_err());
        let mut r = raw("/x");
        r.user_agent = "u".repeat(wire::MAX_USER_AGENT_BYTES + 1);
        assert!(Hit::parse(r, 0, 0).is_err());
        let mut r = raw("/x");
        r.id = Some("no spaces".into());
        assert!(Hit::parse(r, 0, 0).is_err());
        let mut r = raw("/x");
        r.key_id = "kg_live_secret".into();
        assert!(Hit::parse(r, 0, 0).is_err());
    }

    #[test]
    fn a_time_far_ahead_or_zero_is_the_receipt_time() {
        let mut r = raw("/");
        r.at = 10_000;
        assert_eq!(Hit::parse(r, 0, 1_000).unwrap().at, 1_000);
        let mut r = raw("/");
        r.at = 0;
        assert_eq!(Hit::parse(r, 0, 1_000).unwrap().at, 1_000);
    }

    #[test]
    fn a_report_holds_one_to_max_hits() {
        assert_eq!(
            Hit::parse_report(RawReport { hits: vec![] }, 0),
            Err(HitError::Count)
        );
        let many = RawReport {
            hits: (0..=wire::MAX_HITS).map(|_| raw("/")).collect(),
        };
        assert_eq!(Hit::parse_report(many, 0), Err(HitError::Count));
    }

    #[test]
    fn a_canary_never_passes_and_is_never_rotated() {
        assert!(!can_pass(KeyKind::Canary));
        assert!(can_pass(KeyKind::Repo));
        assert!(check_action(KeyKind::Canary, Action::Rotate).is_err());
        assert!(check_action(KeyKind::Canary, Action::Revoke).is_ok());
        assert!(check_action(KeyKind::Workspace, Action::Rotate).is_ok());
    }
}
