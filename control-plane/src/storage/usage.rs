//! Usage written to keys: the edges' batches (idempotent per batch id) and the counts this
//! process buffered from verification and forward-auth.

use uuid::Uuid;

use super::{Db, Engine, on_db};

impl Db {
    /// Applies one usage batch unless its id was seen before; returns whether it was applied.
    pub async fn record_usage_batch(
        &self,
        batch_id: &str,
        entries: &[(Uuid, i64, i64)],
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query("INSERT INTO usage_batches (batch_id, received_at) VALUES ($1, $2) ON CONFLICT (batch_id) DO NOTHING")
                .bind(batch_id.to_owned()).bind(now).execute(&mut *tx).await?.rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            let sql = p.pick(
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = max(COALESCE(last_used_at, 0), $2) WHERE id = $3",
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $3",
            );
            for (id, count, last) in entries {
                sqlx::query(sql).bind(*count).bind(*last).bind(id.as_bytes().to_vec()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Adds usage counted in this process (verification), in one transaction.
    pub async fn add_usage(&self, entries: &[(Uuid, i64, i64)]) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let sql = p.pick(
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = max(COALESCE(last_used_at, 0), $2) WHERE id = $3",
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $3",
            );
            for (id, count, last) in entries {
                sqlx::query(sql).bind(*count).bind(*last).bind(id.as_bytes().to_vec()).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }
}
