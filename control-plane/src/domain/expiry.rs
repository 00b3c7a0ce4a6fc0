//! Expiry notices (issue 28.4): a live key that will expire within the configured window
//! raises `key.expiring` once per key and expiry. Here: the action, who raises it, the window,
//! which keys qualify, and what the audit row's reason says.

use super::key::{Actor, KeyRecord};
use super::{KeyKind, KeyStatus};

/// The audit action (and webhook event type) of an expiry notice.
pub const EXPIRING_ACTION: &str = "key.expiring";

/// The control plane's own actor for expiry notices.
pub fn expiry_actor() -> Actor {
    Actor {
        id: "keygate".into(),
        name: "expiry".into(),
        display_prefix: "keygate".into(),
    }
}

/// The notice window in seconds for `days` days (at least one second).
pub fn window_secs(days: i64) -> i64 {
    days.saturating_mul(86_400).max(1)
}

/// Whether `k` is due a notice at `now` with a window of `window_s` seconds: an active
/// workspace or repository key (not an edge key, not a canary) whose expiry is still ahead
/// and at most `window_s` away.
pub fn qualifies(k: &KeyRecord, now: i64, window_s: i64) -> bool {
    matches!(k.kind, KeyKind::Workspace | KeyKind::Repo)
        && k.status == KeyStatus::Active
        && k.expires_at
            .is_some_and(|e| e > now && e <= now.saturating_add(window_s))
}

/// The audit row's reason: the expiry, as unix seconds.
pub fn reason(expires_at: i64) -> String {
    format!("expires_at={expires_at}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_days_in_seconds() {
        assert_eq!(window_secs(7), 604_800);
        assert_eq!(window_secs(0), 1);
        assert_eq!(reason(12), "expires_at=12");
    }
}
