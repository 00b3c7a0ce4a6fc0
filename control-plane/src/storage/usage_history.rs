//! Usage over time: reads of `usage_hourly` (one key's hours, a workspace's hours, the most
//! used keys of a period) and its retention pruning. The counts are written by
//! [`super::usage`] with each key's counters.

use sqlx::Row;
use uuid::Uuid;

use super::{Db, Engine, on_db};

/// One key's total over a period, for the overview's "top keys".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTotal {
    /// The key.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// Its display prefix.
    pub display_prefix: String,
    /// Requests in the period.
    pub total: i64,
}

impl Db {
    /// One key's hourly counts `(hour, allowed, limited, credits_exhausted)` with
    /// `from <= hour < to`, oldest first (hours without use are absent).
    pub async fn usage_hours(
        &self,
        key: Uuid,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64, i64, i64)>, sqlx::Error> {
        on_db!(self, p => sqlx::query_as(
            "SELECT hour, count, limited, credits_exhausted FROM usage_hourly WHERE key_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
        )
        .bind(key.as_bytes().to_vec()).bind(from).bind(to).fetch_all(p).await)
    }

    /// Every key's hourly counts summed per hour with `from <= hour < to`, oldest first; only
    /// `workspace`'s keys when given.
    pub async fn usage_hours_total(
        &self,
        workspace: Option<&str>,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64, i64, i64)>, sqlx::Error> {
        on_db!(self, p => sqlx::query_as(p.pick(
            "SELECT u.hour, CAST(SUM(u.count) AS BIGINT), CAST(SUM(u.limited) AS BIGINT), CAST(SUM(u.credits_exhausted) AS BIGINT) FROM usage_hourly u JOIN keys k ON k.id = u.key_id \
             WHERE u.hour >= $1 AND u.hour < $2 AND ($3 IS NULL OR k.workspace_id = $3) GROUP BY u.hour ORDER BY u.hour",
            "SELECT u.hour, CAST(SUM(u.count) AS BIGINT), CAST(SUM(u.limited) AS BIGINT), CAST(SUM(u.credits_exhausted) AS BIGINT) FROM usage_hourly u JOIN keys k ON k.id = u.key_id \
             WHERE u.hour >= $1 AND u.hour < $2 AND ($3::text IS NULL OR k.workspace_id = $3) GROUP BY u.hour ORDER BY u.hour",
        ))
        .bind(from).bind(to).bind(workspace.map(str::to_owned)).fetch_all(p).await)
    }

    /// The `limit` most used keys with `from <= hour < to` (most used first), only
    /// `workspace`'s when given.
    pub async fn top_keys(
        &self,
        workspace: Option<&str>,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<KeyTotal>, sqlx::Error> {
        on_db!(self, p => {
            let rows = sqlx::query(p.pick(
                "SELECT k.id, k.name, k.display_prefix, CAST(SUM(u.count) AS BIGINT) AS total FROM usage_hourly u \
                 JOIN keys k ON k.id = u.key_id WHERE u.hour >= $1 AND u.hour < $2 AND ($3 IS NULL OR k.workspace_id = $3) \
                 GROUP BY k.id, k.name, k.display_prefix ORDER BY total DESC, k.id LIMIT $4",
                "SELECT k.id, k.name, k.display_prefix, CAST(SUM(u.count) AS BIGINT) AS total FROM usage_hourly u \
                 JOIN keys k ON k.id = u.key_id WHERE u.hour >= $1 AND u.hour < $2 AND ($3::text IS NULL OR k.workspace_id = $3) \
                 GROUP BY k.id, k.name, k.display_prefix ORDER BY total DESC, k.id LIMIT $4",
            ))
            .bind(from).bind(to).bind(workspace.map(str::to_owned)).bind(limit.clamp(1, 1000))
            .fetch_all(p).await?;
            rows.iter().map(|r| {
                let id: Vec<u8> = r.try_get("id")?;
                Ok(KeyTotal {
                    id: Uuid::from_slice(&id).map_err(|e| sqlx::Error::Decode(e.into()))?,
                    name: r.try_get("name")?,
                    display_prefix: r.try_get("display_prefix")?,
                    total: r.try_get("total")?,
                })
            }).collect()
        })
    }

    /// Deletes hourly counts older than `before` (the retention); returns how many.
    pub async fn prune_usage_hours(&self, before: i64) -> Result<u64, sqlx::Error> {
        on_db!(self, p => sqlx::query("DELETE FROM usage_hourly WHERE hour < $1")
            .bind(before).execute(p).await.map(|r| r.rows_affected()))
    }
}
