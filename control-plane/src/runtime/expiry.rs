//! The expiry-notice task (issue 28.4): every tick it reads the active keys that expire within
//! the window and have no notice for their current expiry, and raises `key.expiring` for each
//! through `Db::record_expiry_notice`, whose conditional insert of the notice (keyed by key and
//! expiry, in the audit row's transaction) makes it once-only across ticks, restarts and
//! replicas.

use std::time::Duration;

use crate::domain::expiry::{qualifies, window_secs};
use crate::runtime::clock::unix_now;
use crate::storage::Db;

/// Most notices one pass raises (the rest wait for the next tick).
const BATCH: i64 = 500;

/// Raises every notice due at `now` for a window of `within_days` days; returns how many this
/// call raised.
pub async fn notify_expiring(db: &Db, within_days: i64, now: i64) -> Result<usize, sqlx::Error> {
    let window = window_secs(within_days);
    let mut raised = 0;
    for id in db.keys_due_expiry_notice(now, window, BATCH).await? {
        let Some(key) = db.get_key(id).await? else {
            continue;
        };
        if qualifies(&key, now, window) && db.record_expiry_notice(&key, now).await? {
            raised += 1;
        }
    }
    Ok(raised)
}

/// Runs [`notify_expiring`] every `every`, forever.
pub async fn notify_expiring_forever(db: Db, within_days: i64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = notify_expiring(&db, within_days, unix_now()).await {
            tracing::warn!(error = %e, "expiry notices failed; retrying at the next tick");
        }
    }
}
