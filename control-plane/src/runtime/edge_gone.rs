//! The edge-gone task (issue 28.4): every tick it reads the registry's edges silent for longer
//! than `--edge-gone-after-s` with no notice for their last report, and raises `edge.gone` for
//! each through `Db::record_edge_gone`, whose conditional insert of the notice (keyed by edge
//! and last-seen time, in the audit row's transaction) makes it once-only across ticks,
//! restarts and replicas.

use std::time::Duration;

use crate::runtime::clock::unix_now;
use crate::storage::Db;

/// Most notices one pass raises (the rest wait for the next tick).
const BATCH: i64 = 500;

/// Raises every edge-gone notice due at `now` (silent for more than `gone_after_s`); returns
/// how many this call raised.
pub async fn notify_gone(db: &Db, gone_after_s: i64, now: i64) -> Result<usize, sqlx::Error> {
    let before = now - gone_after_s;
    let due = db.edges_due_gone_notice(before, BATCH).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut raised = 0;
    for edge in db.list_edges().await? {
        if due.contains(&edge.report.edge_id) && db.record_edge_gone(&edge, before, now).await? {
            raised += 1;
        }
    }
    Ok(raised)
}

/// Runs [`notify_gone`] every `every`, forever.
pub async fn notify_gone_forever(db: Db, gone_after_s: i64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = notify_gone(&db, gone_after_s, unix_now()).await {
            tracing::warn!(error = %e, "edge-gone notices failed; retrying at the next tick");
        }
    }
}
