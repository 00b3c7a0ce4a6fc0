//! Webhook retention: rows of finished deliveries older than the retention
//! (`--webhook-retention-days`) are pruned — attempts, delivered or failed messages, events no
//! message refers to any more — and canary hit ids past it. A message still pending is never
//! pruned, whatever its age.

use super::{Db, Engine, on_db};

/// What one pruning removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Delivery attempts (the delivery log).
    pub attempts: u64,
    /// Delivered or failed messages.
    pub messages: u64,
    /// Events.
    pub events: u64,
    /// Canary hit ids.
    pub canary_hits: u64,
}

impl Db {
    /// Prunes what finished before `before` (unix seconds), in one transaction.
    pub async fn prune_webhooks(&self, before: i64) -> Result<Pruned, sqlx::Error> {
        let before_ms = before.saturating_mul(1000);
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let attempts = sqlx::query("DELETE FROM webhook_attempts WHERE at < $1")
                .bind(before_ms).execute(&mut *tx).await?.rows_affected();
            let messages = sqlx::query(
                "DELETE FROM webhook_messages WHERE state <> 'pending' AND event_id IN \
                 (SELECT id FROM webhook_events WHERE created_at < $1)",
            )
            .bind(before).execute(&mut *tx).await?.rows_affected();
            let events = sqlx::query(
                "DELETE FROM webhook_events WHERE created_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM webhook_messages m WHERE m.event_id = webhook_events.id)",
            )
            .bind(before).execute(&mut *tx).await?.rows_affected();
            let canary_hits = sqlx::query("DELETE FROM canary_hits WHERE received_at < $1")
                .bind(before).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(Pruned { attempts, messages, events, canary_hits })
        })
    }
}
