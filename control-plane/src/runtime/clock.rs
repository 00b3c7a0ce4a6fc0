//! The wall clock in the unit the control plane stores: unix seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time in unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
