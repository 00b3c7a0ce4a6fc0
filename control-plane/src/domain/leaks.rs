//! Leaked keys reported by GitHub's secret scanning partner program: an alert's matches, what
//! the operator's policy does to a live key, the audit reason (public URL and source), and
//! GitHub's feedback labels.

use serde::{Deserialize, Serialize};

use super::{Action, MAX_REASON_LEN};

/// The audit action of a reported leak (its event: `key.leaked`).
pub const LEAK_ACTION: &str = "key.leak";

/// Matches in one alert, at most (GitHub may batch many; a body over the route's limit is
/// refused before this).
pub const MAX_MATCHES: usize = 1000;

/// One match in an alert, as GitHub sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AlertMatch {
    /// The matched string (a candidate key).
    pub token: String,
    /// The secret type's registered name.
    #[serde(rename = "type")]
    pub token_type: String,
    /// The public URL where it was found (may be empty).
    #[serde(default)]
    pub url: String,
    /// Where on GitHub (`content`, `commit`, `issue_comment`, `npm`, …).
    #[serde(default)]
    pub source: String,
}

/// What a reported leak does to a live key (`--secret-scanning-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LeakPolicy {
    /// Revoke it and its children.
    #[default]
    Revoke,
    /// Suspend it and its children (an operator may reactivate).
    Suspend,
    /// Change nothing; audit and raise `key.leaked` only.
    Notify,
}

impl LeakPolicy {
    /// The status change the policy makes, if any.
    pub fn action(self) -> Option<Action> {
        match self {
            Self::Revoke => Some(Action::Revoke),
            Self::Suspend => Some(Action::Suspend),
            Self::Notify => None,
        }
    }
}

/// GitHub's feedback label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// The token is (or was) a Keygate key.
    TruePositive,
    /// It is not.
    FalsePositive,
}

/// One feedback item, as GitHub accepts it (the hashed form: never the raw token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feedback {
    /// SHA-256 of the token, lowercase hex (for a key: the digest Keygate stores).
    pub token_hash: String,
    /// The alert's `type`.
    pub token_type: String,
    /// Whether it is a key.
    pub label: Label,
}

/// The audit reason of a leak: where it was found, within the reason's length limit.
pub fn leak_reason(m: &AlertMatch) -> String {
    let source = if m.source.is_empty() {
        "unknown"
    } else {
        &m.source
    };
    let url = if m.url.is_empty() { "(no URL)" } else { &m.url };
    let mut reason = format!("leaked: found by GitHub secret scanning in {source} at {url}");
    if reason.len() > MAX_REASON_LEN {
        let mut cut = MAX_REASON_LEN;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_place_and_fit() {
        let m = AlertMatch {
            token: "t".into(),
            token_type: "keygate".into(),
            url: "https://github.com/o/r/blob/1/a.txt".into(),
            source: "content".into(),
        };
        assert_eq!(
            leak_reason(&m),
            "leaked: found by GitHub secret scanning in content at https://github.com/o/r/blob/1/a.txt"
        );
        let long = AlertMatch {
            url: "é".repeat(600),
            ..m
        };
        assert!(leak_reason(&long).len() <= MAX_REASON_LEN);
        assert_eq!(LeakPolicy::default().action(), Some(Action::Revoke));
        assert_eq!(LeakPolicy::Notify.action(), None);
    }
}
