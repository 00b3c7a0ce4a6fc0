//! Host time: a virtual clock moved by the test, or the real clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The clock the host reports to the guest (`proxy_get_current_time_nanoseconds`,
/// WASI `clock_time_get`) and schedules ticks and callout deliveries by.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Deterministic time, moved only by [`crate::Harness::advance`]. Nanoseconds since the epoch.
    Virtual(Arc<AtomicU64>),
    /// Wall-clock time; monotonic readings come from an `Instant` taken at creation.
    Real {
        /// Start instant.
        start: Instant,
        /// Wall time at `start`, in nanoseconds since the epoch.
        start_wall_nanos: u64,
    },
}

impl Clock {
    /// A virtual clock starting at `start` (nanoseconds since the Unix epoch).
    pub fn virtual_at(start_nanos: u64) -> Self {
        Self::Virtual(Arc::new(AtomicU64::new(start_nanos)))
    }

    /// The real clock.
    pub fn real() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Self::Real {
            start: Instant::now(),
            start_wall_nanos: wall,
        }
    }

    /// Whether time only moves when told to.
    pub fn is_virtual(&self) -> bool {
        matches!(self, Self::Virtual(_))
    }

    /// Current time in nanoseconds since the Unix epoch.
    pub fn now_nanos(&self) -> u64 {
        match self {
            Self::Virtual(now) => now.load(Ordering::SeqCst),
            Self::Real {
                start,
                start_wall_nanos,
            } => start_wall_nanos.saturating_add(start.elapsed().as_nanos() as u64),
        }
    }

    /// Sets virtual time (no effect on the real clock). Time never goes backwards.
    pub(crate) fn set_nanos(&self, nanos: u64) {
        if let Self::Virtual(now) = self {
            now.fetch_max(nanos, Ordering::SeqCst);
        }
    }

    /// `now + d` in nanoseconds, saturating.
    pub(crate) fn after(&self, d: Duration) -> u64 {
        self.now_nanos().saturating_add(d.as_nanos() as u64)
    }
}

/// The default start of the virtual clock: 2025-01-01T00:00:00Z.
pub const DEFAULT_VIRTUAL_START_NANOS: u64 = 1_735_689_600_000_000_000;
