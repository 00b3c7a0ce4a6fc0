//! Failures: why a key-set call failed ([`SyncFailure`]), and the leader's backoff after one.

use super::Syncer;
use crate::config::Config;
use crate::host::{Host, LogLevel};

/// Longest backoff after repeated failures, in milliseconds: after an outage of any length the
/// leader tries again within this (±20 %) of the control plane's return, so the set is fresh
/// (and revocations made meanwhile enforced) seconds after it, not half a minute. One failed
/// connection attempt per proxy every few seconds costs a control plane nothing.
pub const MAX_BACKOFF_MS: u64 = 4_000;

/// Why a sync attempt failed (metric `keygate.sync.failure.<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFailure {
    /// The call could not be started.
    Dispatch,
    /// No HTTP answer (connection refused or reset, no healthy host).
    Unreachable,
    /// 401 or 403: the edge key was refused.
    Unauthorized,
    /// Another non-success status. Envoy answers a call that ran past its timeout with its own
    /// 504 ("upstream request timeout"), so a slow control plane is counted here (the log names
    /// the status).
    Status,
    /// The body did not decode as a key-set message.
    Garbled,
    /// A delta whose base is not our revision.
    BaseMismatch,
}

impl SyncFailure {
    /// Every failure, for pre-registering metrics.
    pub const ALL: [SyncFailure; 6] = [
        SyncFailure::Dispatch,
        SyncFailure::Unreachable,
        SyncFailure::Unauthorized,
        SyncFailure::Status,
        SyncFailure::Garbled,
        SyncFailure::BaseMismatch,
    ];

    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            SyncFailure::Dispatch => "dispatch",
            SyncFailure::Unreachable => "unreachable",
            SyncFailure::Unauthorized => "unauthorized",
            SyncFailure::Status => "status",
            SyncFailure::Garbled => "garbled",
            SyncFailure::BaseMismatch => "base_mismatch",
        }
    }

    /// `keygate.sync.failure.<code>`.
    pub fn metric_name(self) -> String {
        format!("keygate.sync.failure.{}", self.code())
    }
}

/// The wait after `failures` failures in a row: the sync interval doubled per failure, capped
/// at [`MAX_BACKOFF_MS`], with ±20 % jitter so that several proxies do not retry in step. The
/// key-set sync and the canary hit reports both back off this way.
pub fn backoff_ms(host: &mut impl Host, config: &Config, failures: u32) -> u64 {
    let exp = config
        .sync_interval_ms
        .saturating_mul(1u64 << failures.min(16))
        .min(MAX_BACKOFF_MS)
        .max(config.sync_interval_ms);
    let span = exp / 5;
    let jitter = if span == 0 {
        0
    } else {
        host.random_u64() % (2 * span + 1)
    };
    exp - span + jitter
}

impl Syncer {
    pub(super) fn fail(
        &mut self,
        host: &mut impl Host,
        config: &Config,
        now: u64,
        why: SyncFailure,
        detail: &str,
    ) {
        self.failures = self.failures.saturating_add(1);
        self.next_poll_ms = now + backoff_ms(host, config, self.failures);
        host.counter_add(&why.metric_name(), 1);
        host.log(
            LogLevel::Warn,
            &format!(
                "key-set sync failed ({}): {detail}; keeping revision {:?}, retry in {} ms",
                why.code(),
                self.revision(),
                self.next_poll_ms - now
            ),
        );
    }
}
