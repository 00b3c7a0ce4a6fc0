//! The refill task (issue 27): every tick it reads the keys whose refill is due from their
//! stored `next_refill_at` (so a restart, or a replica that was down, loses or repeats
//! nothing) and refills each through the one write path, `Db::change_key`, whose plan
//! (`domain::credits::refill_plan`) re-reads the key under its row lock and refuses a refill
//! that is no longer due: two replicas never refill a key twice for one due time.

use std::time::Duration;

use crate::domain::credits::REFILL_ACTION;
use crate::domain::refill::{RefillSkip, credits_actor, refill_plan};
use crate::runtime::clock::unix_now;
use crate::runtime::metrics::Metrics;
use crate::storage::{Db, StoreError};

/// Most refills one pass makes (the rest wait for the next tick).
const BATCH: i64 = 500;

/// Why one refill did not happen.
#[derive(Debug, thiserror::Error)]
enum RefillError {
    /// Already made, or no longer due.
    #[error(transparent)]
    Skip(#[from] RefillSkip),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RefillError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Makes every refill due at `now`; returns how many this call made.
pub async fn refill_due(db: &Db, metrics: &Metrics, now: i64) -> Result<usize, StoreError> {
    let mut made = 0;
    for (id, due) in db.due_refills(now, BATCH).await? {
        let actor = credits_actor();
        let result = db
            .change_key(id, None, &actor, REFILL_ACTION, None, now, |old| {
                Ok::<_, RefillError>(refill_plan(old, due, now)?)
            })
            .await;
        match result {
            Ok(_) => {
                made += 1;
                metrics.credit_refill();
            }
            Err(RefillError::Skip(_)) | Err(RefillError::Store(StoreError::KeyNotFound)) => {}
            Err(RefillError::Store(e)) => return Err(e),
        }
    }
    Ok(made)
}

/// Runs [`refill_due`] every `every`, forever.
pub async fn refill_forever(db: Db, metrics: std::sync::Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = refill_due(&db, &metrics, unix_now()).await {
            tracing::warn!(error = %e, "credit refills failed; retrying at the next tick");
        }
    }
}
