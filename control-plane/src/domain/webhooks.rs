//! Webhook rules: the event types, which audited action raises which event, an event's
//! payload (the key's public view, never a secret), and an endpoint's input (URL, event types,
//! description) parsed once.

use serde_json::{Value, json};

use super::key::Actor;

/// A key was issued (created or exchanged).
pub const KEY_CREATED: &str = "key.created";
/// A key's name, description, scopes, resources, expiry or metadata changed.
pub const KEY_UPDATED: &str = "key.updated";
/// A key was suspended (itself, or by its parent's suspension).
pub const KEY_SUSPENDED: &str = "key.suspended";
/// A suspended key was reactivated.
pub const KEY_REACTIVATED: &str = "key.reactivated";
/// A key was revoked (itself, or by its parent's revocation).
pub const KEY_REVOKED: &str = "key.revoked";
/// A key's secret was rotated.
pub const KEY_ROTATED: &str = "key.rotated";

/// A key was reported leaked (GitHub secret scanning), with the public URL and source.
pub const KEY_LEAKED: &str = "key.leaked";

/// A canary key was presented (at an edge or to the control plane), with path, client and
/// user agent (`domain::canary`).
pub const KEY_CANARY_USED: &str = super::canary::CANARY_ACTION;
/// A key's credits reached 0: every edge now answers `429 credits_exhausted` for it.
pub const KEY_CREDITS_EXHAUSTED: &str = "key.credits_exhausted";
/// A key's credits were refilled (back to `active` in the key set if it was exhausted).
pub const KEY_CREDITS_REFILLED: &str = "key.credits_refilled";
/// A workspace's default rate limits changed (every key inheriting them changes with them).
pub const WORKSPACE_LIMITS_UPDATED: &str = "workspace.limits_updated";

/// A live key comes within `--expiring-within-days` of its expiry (once per key and expiry).
pub const KEY_EXPIRING: &str = super::expiry::EXPIRING_ACTION;

/// An edge of the registry fell silent for longer than `--edge-gone-after-s` (once per silence).
pub const EDGE_GONE: &str = super::edge_gone::EDGE_GONE_ACTION;

/// An edge's usage report counted refusals by a rate limit for a key (at most once per key
/// per `--rate-limited-event-every-s`, an hour by default).
pub const KEY_RATE_LIMITED: &str = super::rate_limited::RATE_LIMITED_ACTION;

/// Every event type an endpoint may subscribe to.
pub const EVENT_TYPES: [&str; 14] = [
    KEY_CREATED,
    KEY_UPDATED,
    KEY_SUSPENDED,
    KEY_REACTIVATED,
    KEY_REVOKED,
    KEY_ROTATED,
    KEY_LEAKED,
    KEY_CANARY_USED,
    KEY_CREDITS_EXHAUSTED,
    KEY_CREDITS_REFILLED,
    WORKSPACE_LIMITS_UPDATED,
    KEY_EXPIRING,
    EDGE_GONE,
    KEY_RATE_LIMITED,
];

/// The event an audited action raises, if any (the GitHub broker's actions raise none).
pub fn event_for_action(action: &str) -> Option<&'static str> {
    Some(match action {
        "key.create" | "key.exchange" => KEY_CREATED,
        "key.update" | super::credits::LIMITS_ACTION => KEY_UPDATED,
        super::credits::EXHAUSTED_ACTION => KEY_CREDITS_EXHAUSTED,
        super::credits::REFILL_ACTION => KEY_CREDITS_REFILLED,
        super::credits::WORKSPACE_LIMITS_ACTION => WORKSPACE_LIMITS_UPDATED,
        "key.suspend" => KEY_SUSPENDED,
        "key.reactivate" => KEY_REACTIVATED,
        "key.revoke" => KEY_REVOKED,
        "key.rotate" => KEY_ROTATED,
        super::leaks::LEAK_ACTION => KEY_LEAKED,
        super::canary::CANARY_ACTION => KEY_CANARY_USED,
        super::expiry::EXPIRING_ACTION => KEY_EXPIRING,
        super::edge_gone::EDGE_GONE_ACTION => EDGE_GONE,
        super::rate_limited::RATE_LIMITED_ACTION => KEY_RATE_LIMITED,
        _ => return None,
    })
}

/// What an event says, from its audit row's parts.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// The event id (`msg_…`, the `webhook-id` header).
    pub id: &'a str,
    /// The event type.
    pub event_type: &'a str,
    /// RFC 3339 time of the change.
    pub timestamp: &'a str,
    /// The audited action.
    pub action: &'a str,
    /// Who.
    pub actor: &'a Actor,
    /// The key's workspace.
    pub workspace_id: Option<&'a str>,
    /// The key's public view after the change (before, for a change with no after).
    pub key: Option<&'a Value>,
    /// The reason given.
    pub reason: Option<&'a str>,
}

/// The event's JSON body, Standard Webhooks' shape `{type, timestamp, data}`. `key` is the
/// audit log's view of the key: id, name, display prefix, scopes, status… never the secret or
/// its digest.
pub fn event_payload(f: &EventFacts<'_>) -> Value {
    let mut payload = json!({
        "id": f.id,
        "type": f.event_type,
        "timestamp": f.timestamp,
        "data": {
            "action": f.action,
            "actor": f.actor,
            "workspace_id": f.workspace_id,
            "key": f.key,
            "reason": f.reason,
        },
    });
    // A canary hit's facts (path, client, user agent, who saw it) are its audit reason's JSON.
    if f.action == super::canary::CANARY_ACTION
        && let Some(hit) = super::canary::details(f.reason)
    {
        payload["data"]["hit"] = hit;
    }
    // An edge-gone notice's facts (edge id, node id, last seen, applied revision) are its
    // audit reason's JSON.
    if f.action == super::edge_gone::EDGE_GONE_ACTION {
        payload["data"]["edge"] = super::edge_gone::details(f.reason).unwrap_or_default();
    }
    // A rate-limited notice's facts (the refusals counted, the period) are its audit reason's
    // JSON.
    if f.action == super::rate_limited::RATE_LIMITED_ACTION {
        payload["data"]["rate_limited"] =
            super::rate_limited::details(f.reason).unwrap_or_default();
    }
    // An expiry notice names the expiry it is about (unix seconds).
    if f.action == super::expiry::EXPIRING_ACTION {
        payload["data"]["expires_at"] = f.key.map(|k| k["expires_at"].clone()).unwrap_or_default();
    }
    payload
}

/// A webhook endpoint's input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// `http://` or `https://` URL with a host, no user information.
    pub url: String,
    /// Distinct event types from [`EVENT_TYPES`], at least one.
    pub event_types: Vec<String>,
    /// Free text, at most 256 bytes.
    pub description: String,
}

/// Why an endpoint's input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The URL is not an absolute http(s) URL with a host, or is too long.
    #[error(
        "url must be an absolute http:// or https:// URL with a host, without user information, at most 2048 bytes"
    )]
    Url,
    /// No event type, or an unknown one.
    #[error("event_types must list one or more of: {}", EVENT_TYPES.join(", "))]
    EventTypes,
    /// The description is too long.
    #[error("description must be at most 256 bytes")]
    Description,
}

impl EndpointSpec {
    /// Parses an endpoint's input.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn parse(
        url: &str,
        event_types: &[String],
        description: Option<&str>,
    ) -> Result<Self, EndpointError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or(EndpointError::Url)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if url.len() > 2048
            || authority.is_empty()
            || authority.contains('@')
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(EndpointError::Url);
        }
        let mut types: Vec<String> = Vec::new();
        for t in event_types {
            if !EVENT_TYPES.contains(&t.as_str()) {
                return Err(EndpointError::EventTypes);
            }
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
        if types.is_empty() {
            return Err(EndpointError::EventTypes);
        }
        let description = description.unwrap_or("").to_owned();
        if description.len() > 256 {
            return Err(EndpointError::Description);
        }
        Ok(Self {
            url: url.to_owned(),
            event_types: types,
            description,
        })
    }
}

/// The delay before retry `attempt` (1 = the first retry): `base_ms` doubled per attempt, at
/// most an hour.
pub fn retry_delay_ms(base_ms: u64, attempt: u32) -> u64 {
    let factor = 1u64 << attempt.saturating_sub(1).min(20);
    base_ms.saturating_mul(factor).min(3_600_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn endpoint_input_is_parsed() {
        let s = EndpointSpec::parse(
            "https://hooks.example.com/keygate?x=1",
            &types(&["key.revoked", "key.created", "key.revoked"]),
            Some("ops"),
        )
        .unwrap();
        assert_eq!(s.event_types, types(&["key.revoked", "key.created"]));
        for bad in [
            "ftp://x",
            "https://",
            "https://user:pw@host/",
            "https://host/a b",
            "/relative",
        ] {
            assert_eq!(
                EndpointSpec::parse(bad, &types(&["key.created"]), None),
                Err(EndpointError::Url),
                "{bad}"
            );
        }
        assert_eq!(
            EndpointSpec::parse("http://h", &[], None),
            Err(EndpointError::EventTypes)
        );
        assert_eq!(
            EndpointSpec::parse("http://h", &types(&["key.exploded"]), None),
            Err(EndpointError::EventTypes)
        );
        assert_eq!(
            EndpointSpec::parse("http://h", &types(&["key.created"]), Some(&"x".repeat(257))),
            Err(EndpointError::Description)
        );
    }

    #[test]
    fn actions_map_to_events_and_retries_back_off() {
        assert_eq!(event_for_action("key.exchange"), Some(KEY_CREATED));
        assert_eq!(event_for_action("key.revoke"), Some(KEY_REVOKED));
        assert_eq!(event_for_action("github.token.issue"), None);
        assert_eq!(
            event_for_action("key.credits_exhausted"),
            Some(KEY_CREDITS_EXHAUSTED)
        );
        assert_eq!(
            event_for_action("key.credits_refill"),
            Some(KEY_CREDITS_REFILLED)
        );
        assert_eq!(event_for_action("key.limits"), Some(KEY_UPDATED));
        assert_eq!(event_for_action("key.expiring"), Some(KEY_EXPIRING));
        assert_eq!(event_for_action("edge.gone"), Some(EDGE_GONE));
        assert_eq!(event_for_action("key.rate_limited"), Some(KEY_RATE_LIMITED));
        assert_eq!(retry_delay_ms(1000, 1), 1000);
        assert_eq!(retry_delay_ms(1000, 4), 8000);
        assert_eq!(retry_delay_ms(1000, 40), 3_600_000);
    }
}
