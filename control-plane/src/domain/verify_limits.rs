//! Rate limits as `POST /v1/keys/verify` counts them: the filter's buckets (the key's own
//! counter, or one per workspace and owner for `pool: owner`) and its fixed windows aligned to
//! the epoch
//! (`keygate_filter_core::limits::window`), with the whole limit as the quota (verify counts in
//! the shared database, so there is no fleet to divide it among). The counters are listed in
//! one stable order, so that concurrent verifications lock shared counters in the same order.

use keygate_filter_core::limits::window;
use keygate_protocol::policy::{LimitPool, RateLimit};
use uuid::Uuid;

use super::key::format_key_id;

/// One limit's counter for one verification: which bucket and window it counts in, and how
/// many requests that window admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCount {
    /// `key` or `owner`.
    pub pool: &'static str,
    /// The key id (`key_<hex>`), or for an owner pool `<workspace id>/<owner id>` (a
    /// workspace id has no `/`, so the first one ends it; an unscoped pool, which this control
    /// plane never resolves, is the owner id alone).
    pub pool_id: String,
    /// The limit's name.
    pub name: String,
    /// The window's length, seconds.
    pub window_s: i64,
    /// The window's start, unix seconds (a multiple of `window_s`).
    pub window_start: i64,
    /// Requests the window admits (the limit).
    pub quota: i64,
    /// Seconds until the window ends (1 to `window_s`).
    pub reset_s: i64,
    /// The limit's position in the key's policy.
    pub position: usize,
}

impl WindowCount {
    /// The window's end, unix seconds.
    pub fn window_end(&self) -> i64 {
        self.window_start + self.window_s
    }
}

/// The counters a verification of key `key_id` (owned by `owner`) at `now` (unix seconds)
/// counts in, one per limit, sorted by bucket.
pub fn window_counts(
    limits: &[RateLimit],
    key_id: Uuid,
    owner: &str,
    now: i64,
) -> Vec<WindowCount> {
    let now_ms = u64::try_from(now).unwrap_or(0).saturating_mul(1000);
    let mut out: Vec<WindowCount> = limits
        .iter()
        .enumerate()
        .map(|(position, l)| {
            let (index, reset_s) = window(now_ms, l.window_s);
            let window_s = i64::from(l.window_s.max(1));
            let (pool, pool_id) = match &l.pool {
                LimitPool::Key => ("key", format_key_id(key_id)),
                LimitPool::Owner => ("owner", owner.to_owned()),
                LimitPool::OwnerIn(workspace) => ("owner", format!("{workspace}/{owner}")),
            };
            WindowCount {
                pool,
                pool_id,
                name: l.name.clone(),
                window_s,
                window_start: i64::try_from(index).unwrap_or(i64::MAX / 2) * window_s,
                quota: i64::from(l.limit),
                reset_s: i64::from(reset_s),
                position,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.pool, &a.pool_id, &a.name, a.window_s).cmp(&(b.pool, &b.pool_id, &b.name, b.window_s))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, limit: u32, window_s: u32, pool: LimitPool) -> RateLimit {
        RateLimit {
            name: name.into(),
            limit,
            window_s,
            pool,
        }
    }

    #[test]
    fn counters_are_the_filters_buckets_and_windows_in_a_stable_order() {
        let id = Uuid::from_u128(7);
        let limits = [
            limit("burst", 5, 10, LimitPool::Key),
            limit("day", 100, 86_400, LimitPool::Owner),
            limit("a", 1, 60, LimitPool::Key),
        ];
        let now = 1_763_899_207; // 7 s into a 10 s window
        let c = window_counts(&limits, id, "acme", now);
        let got: Vec<_> = c
            .iter()
            .map(|w| (w.pool, w.name.as_str(), w.position))
            .collect();
        assert_eq!(
            got,
            vec![("key", "a", 2), ("key", "burst", 0), ("owner", "day", 1)]
        );
        let burst = &c[1];
        assert_eq!(burst.pool_id, format_key_id(id));
        assert_eq!(
            (burst.window_start, burst.reset_s, burst.quota),
            (1_763_899_200, 3, 5)
        );
        assert_eq!(burst.window_end(), 1_763_899_210);
        // the filter's own window for the same instant
        let (index, reset) = window(now as u64 * 1000, 10);
        assert_eq!(
            (index as i64 * 10, i64::from(reset)),
            (burst.window_start, burst.reset_s)
        );
        assert_eq!(c[2].pool_id, "acme");
        assert_eq!(c[2].window_start % 86_400, 0);
    }

    #[test]
    fn an_owner_pool_is_counted_per_workspace_and_owner() {
        let id = Uuid::from_u128(8);
        let pool_id = |ws: &str| {
            let l = [limit("team", 3, 60, LimitPool::OwnerIn(ws.into()))];
            window_counts(&l, id, "acme", 1_763_899_207)[0]
                .pool_id
                .clone()
        };
        assert_eq!(pool_id("ws-a"), "ws-a/acme");
        assert_ne!(pool_id("ws-a"), pool_id("ws-b"));
    }
}
