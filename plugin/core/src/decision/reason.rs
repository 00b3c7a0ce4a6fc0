//! Why a request passes or not: [`Reason`], with its stable code, HTTP status,
//! `WWW-Authenticate` challenge and metric name.

/// Why a request was allowed or denied; each has a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A valid key with the needed scopes and resource.
    Allowed,
    /// An anonymous route.
    Anonymous,
    /// The key set is too stale and `failure_mode` is `open`.
    FailOpen,
    /// No key in any configured source.
    MissingKey,
    /// The key does not parse (format or checksum).
    MalformedKey,
    /// The key's prefix is not in `accepted_prefixes`.
    PrefixNotAccepted,
    /// Well-formed but not in the key set (never issued, revoked, suspended).
    UnknownKey,
    /// In the set but past its expiry.
    ExpiredKey,
    /// The key lacks a required scope.
    InsufficientScope,
    /// The key's allow-list does not cover the requested resource.
    ResourceNotAllowed,
    /// No key set yet (before the first successful sync).
    KeysetUnavailable,
    /// The key set is older than `max_staleness_s` and `failure_mode` is `closed`.
    KeysetStale,
    /// The path is not in normal form (dot segments, encoded separators or dot segments,
    /// backslashes, empty segments): an upstream could resolve it to another route.
    InvalidPath,
    /// The key's credits are used up (`KeyState::CreditsExhausted`): 429 until a refill.
    CreditsExhausted,
    /// The key (or its owner's pool) is over one of its rate limits: 429 until the window ends.
    RateLimited,
    /// A canary key (in the set with state `Canary`): answered exactly as [`Reason::UnknownKey`]
    /// (same status, challenge and body), counted apart, and reported at once.
    CanaryKey,
}

impl Reason {
    /// Every reason, for pre-registering metrics.
    pub const ALL: [Reason; 16] = [
        Reason::Allowed,
        Reason::Anonymous,
        Reason::FailOpen,
        Reason::MissingKey,
        Reason::MalformedKey,
        Reason::PrefixNotAccepted,
        Reason::UnknownKey,
        Reason::ExpiredKey,
        Reason::InsufficientScope,
        Reason::ResourceNotAllowed,
        Reason::KeysetUnavailable,
        Reason::KeysetStale,
        Reason::InvalidPath,
        Reason::CreditsExhausted,
        Reason::RateLimited,
        Reason::CanaryKey,
    ];

    /// This reason's position in [`Reason::ALL`], for per-reason tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason a client is told: a canary's answer is an unknown key's, byte for byte; every
    /// other reason is its own.
    pub fn answered_as(self) -> Reason {
        match self {
            Reason::CanaryKey => Reason::UnknownKey,
            r => r,
        }
    }

    /// The machine-readable code (`unknown_key`), for metrics and logs; the answer carries
    /// [`Reason::answered_as`]'s.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::Anonymous => "anonymous",
            Reason::FailOpen => "fail_open",
            Reason::MissingKey => "missing_key",
            Reason::MalformedKey => "malformed_key",
            Reason::PrefixNotAccepted => "prefix_not_accepted",
            Reason::UnknownKey => "unknown_key",
            Reason::ExpiredKey => "expired_key",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::ResourceNotAllowed => "resource_not_allowed",
            Reason::KeysetUnavailable => "keyset_unavailable",
            Reason::KeysetStale => "keyset_stale",
            Reason::InvalidPath => "invalid_path",
            Reason::CreditsExhausted => "credits_exhausted",
            Reason::RateLimited => "rate_limited",
            Reason::CanaryKey => "canary_key",
        }
    }

    /// The `WWW-Authenticate` challenge of a deny with this reason (RFC 6750), for 401 and 403.
    pub fn www_authenticate(self) -> Option<&'static str> {
        Some(match self {
            Reason::MissingKey => r#"Bearer realm="keygate""#,
            Reason::MalformedKey => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="malformed_key""#
            }
            Reason::PrefixNotAccepted => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="prefix_not_accepted""#
            }
            Reason::UnknownKey | Reason::CanaryKey => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="unknown_key""#
            }
            Reason::ExpiredKey => {
                r#"Bearer realm="keygate", error="invalid_token", error_description="expired_key""#
            }
            Reason::InsufficientScope => {
                r#"Bearer realm="keygate", error="insufficient_scope", error_description="insufficient_scope""#
            }
            Reason::ResourceNotAllowed => {
                r#"Bearer realm="keygate", error="insufficient_scope", error_description="resource_not_allowed""#
            }
            Reason::Allowed
            | Reason::Anonymous
            | Reason::FailOpen
            | Reason::KeysetUnavailable
            | Reason::KeysetStale
            | Reason::InvalidPath
            | Reason::CreditsExhausted
            | Reason::RateLimited => return None,
        })
    }

    /// Whether requests with this reason pass.
    pub fn is_allow(self) -> bool {
        matches!(self, Reason::Allowed | Reason::Anonymous | Reason::FailOpen)
    }

    /// The HTTP status of a deny with this reason (200 for allows).
    pub fn status(self) -> u16 {
        match self {
            Reason::Allowed | Reason::Anonymous | Reason::FailOpen => 200,
            Reason::MissingKey
            | Reason::MalformedKey
            | Reason::PrefixNotAccepted
            | Reason::UnknownKey
            | Reason::ExpiredKey
            | Reason::CanaryKey => 401,
            Reason::InsufficientScope | Reason::ResourceNotAllowed => 403,
            Reason::KeysetUnavailable | Reason::KeysetStale => 503,
            Reason::InvalidPath => 400,
            Reason::CreditsExhausted | Reason::RateLimited => 429,
        }
    }

    /// Metric name counting decisions with this reason: `keygate.decision.<outcome>.<code>`.
    pub fn metric_name(self) -> String {
        let outcome = if self.is_allow() { "allow" } else { "deny" };
        format!("keygate.decision.{outcome}.{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc6750_for_every_reason() {
        for r in Reason::ALL {
            let expected = match r.status() {
                401 if r == Reason::MissingKey => Some(r#"Bearer realm="keygate""#.to_owned()),
                401 => Some(format!(
                    r#"Bearer realm="keygate", error="invalid_token", error_description="{}""#,
                    r.answered_as().code()
                )),
                403 => Some(format!(
                    r#"Bearer realm="keygate", error="insufficient_scope", error_description="{}""#,
                    r.code()
                )),
                _ => None,
            };
            assert_eq!(r.www_authenticate().map(str::to_owned), expected, "{r:?}");
        }
    }

    #[test]
    fn a_canary_is_answered_as_an_unknown_key_and_counted_apart() {
        let (c, u) = (Reason::CanaryKey, Reason::UnknownKey);
        assert_eq!(c.answered_as(), u);
        assert_eq!(c.status(), u.status());
        assert_eq!(c.www_authenticate(), u.www_authenticate());
        assert_eq!(c.is_allow(), u.is_allow());
        assert_eq!(c.metric_name(), "keygate.decision.deny.canary_key");
        for r in Reason::ALL.iter().filter(|r| **r != c) {
            assert_eq!(r.answered_as(), *r, "{r:?}");
        }
    }

    #[test]
    fn reason_index_is_the_position_in_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn every_reason_has_a_distinct_code_and_metric() {
        let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert_eq!(
            Reason::UnknownKey.metric_name(),
            "keygate.decision.deny.unknown_key"
        );
        assert_eq!(
            Reason::Allowed.metric_name(),
            "keygate.decision.allow.allowed"
        );
    }
}
