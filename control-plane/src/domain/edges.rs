//! The edge registry's rules: an edge's lag (in revisions and in seconds) and state (`live`,
//! `lagging`, `gone`) from its report and the clock, when a report must be written (the bound
//! on the registry's write load), and what "applied" means for a write's propagation. No I/O.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An edge's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// Reporting, and within `lagging_after` of the current revision.
    Live,
    /// Reporting (not yet gone), but holding a revision older than the current one for longer
    /// than `lagging_after`.
    Lagging,
    /// Silent for longer than `gone_after`: no longer counted among the fleet.
    Gone,
}

impl EdgeState {
    /// Every state, in the order metrics list them.
    pub const ALL: [EdgeState; 3] = [EdgeState::Live, EdgeState::Lagging, EdgeState::Gone];

    /// The state's name in answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeState::Live => "live",
            EdgeState::Lagging => "lagging",
            EdgeState::Gone => "gone",
        }
    }
}

/// The registry's timing settings, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeRules {
    /// A report is written at least this often per edge even when nothing changed (its
    /// `last_seen`), and at most this often when nothing but the time changed.
    pub heartbeat_s: i64,
    /// An edge behind the current revision for longer than this is `lagging`.
    pub lagging_after_s: i64,
    /// An edge silent for longer than this is `gone`. Must exceed the filter's long-poll wait
    /// (a parked edge reports when its call arrives and when it is answered) plus the heartbeat.
    pub gone_after_s: i64,
}

impl Default for EdgeRules {
    fn default() -> Self {
        Self {
            heartbeat_s: 15,
            lagging_after_s: 5,
            gone_after_s: 90,
        }
    }
}

/// How far an edge is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lag {
    /// Revisions between what it applied and the current one.
    pub revisions: i64,
    /// Age of the oldest change it has not applied (0 when up to date).
    pub seconds: i64,
}

/// The lag of an edge that applied `applied` (none: no set yet) when the current revision is
/// `current`; `first_unapplied_at` is when the oldest change after `applied` was committed
/// (none when unknown: logged before times were kept, or pruned), in which case the lag in
/// seconds counts from `first_seen`.
pub fn lag(
    current: i64,
    applied: Option<i64>,
    first_unapplied_at: Option<i64>,
    first_seen: i64,
    now: i64,
) -> Lag {
    let applied = applied.unwrap_or(-1);
    if applied >= current {
        return Lag::default();
    }
    let since = first_unapplied_at.unwrap_or(first_seen);
    Lag {
        revisions: current - applied.max(0),
        seconds: (now - since).max(0),
    }
}

/// The state of an edge last seen at `last_seen` with lag `lag`.
pub fn state(rules: &EdgeRules, last_seen: i64, lag: Lag, now: i64) -> EdgeState {
    if now - last_seen > rules.gone_after_s {
        EdgeState::Gone
    } else if lag.revisions > 0 && lag.seconds > rules.lagging_after_s {
        EdgeState::Lagging
    } else {
        EdgeState::Live
    }
}

/// Whether an edge has applied revision `target`: it reported a revision at or past it (an
/// edge asks for `since=R` only once it holds R).
pub fn has_applied(applied: Option<i64>, target: i64) -> bool {
    applied.is_some_and(|a| a >= target)
}

/// Whether a report must be written to the registry: the first from this edge in this
/// process, any change of what it reports but the time (`changed`), or the row's `last_seen`
/// older than the heartbeat. So each replica writes at most one row per edge per heartbeat
/// plus one per revision the edge applies (the filter polls at most 10 times a second).
pub fn must_write(last_written: Option<i64>, changed: bool, now: i64, heartbeat_s: i64) -> bool {
    match last_written {
        None => true,
        Some(at) => changed || now - at >= heartbeat_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: EdgeRules = EdgeRules {
        heartbeat_s: 15,
        lagging_after_s: 5,
        gone_after_s: 90,
    };

    #[test]
    fn an_edge_at_the_current_revision_has_no_lag() {
        assert_eq!(lag(7, Some(7), None, 0, 100), Lag::default());
        assert_eq!(lag(7, Some(9), Some(50), 0, 100), Lag::default());
    }

    #[test]
    fn lag_counts_revisions_and_the_age_of_the_oldest_unapplied_change() {
        assert_eq!(
            lag(10, Some(7), Some(60), 0, 100),
            Lag {
                revisions: 3,
                seconds: 40
            }
        );
        // No set yet: behind by every revision, since it was first seen when times are unknown.
        assert_eq!(
            lag(4, None, None, 90, 100),
            Lag {
                revisions: 4,
                seconds: 10
            }
        );
    }

    #[test]
    fn state_is_gone_after_the_silence_then_lagging_after_the_lag() {
        let behind = Lag {
            revisions: 1,
            seconds: 6,
        };
        let fresh = Lag {
            revisions: 1,
            seconds: 5,
        };
        assert_eq!(state(&RULES, 100, Lag::default(), 190), EdgeState::Live);
        assert_eq!(state(&RULES, 100, Lag::default(), 191), EdgeState::Gone);
        assert_eq!(state(&RULES, 100, behind, 110), EdgeState::Lagging);
        assert_eq!(state(&RULES, 100, fresh, 110), EdgeState::Live);
        assert_eq!(state(&RULES, 0, behind, 110), EdgeState::Gone);
    }

    #[test]
    fn applied_means_at_or_past_the_revision() {
        assert!(has_applied(Some(5), 5));
        assert!(has_applied(Some(6), 5));
        assert!(!has_applied(Some(4), 5));
        assert!(!has_applied(None, 1));
    }

    #[test]
    fn a_report_is_written_first_on_change_and_on_the_heartbeat_only() {
        assert!(must_write(None, false, 100, 15));
        assert!(must_write(Some(99), true, 100, 15));
        assert!(!must_write(Some(90), false, 104, 15));
        assert!(must_write(Some(90), false, 105, 15));
    }

    #[test]
    fn states_have_their_names() {
        let names: Vec<_> = EdgeState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["live", "lagging", "gone"]);
    }
}
