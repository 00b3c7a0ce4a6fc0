//! Usage written to keys: the edges' batches (idempotent per batch id) and the counts this
//! process buffered from verification and forward-auth. Each entry adds to the key's
//! `usage_count` and, in the same transaction, to its hourly count (`usage_hourly`, read by
//! [`super::usage_history`]).
//!
//! Which hour an entry counts in: the hour of its `last_used_at` (the newest use the reporter
//! counted; filters and this process flush every few seconds, so a batch's uses lie within
//! seconds of it), capped at the time of receipt; an entry without a use time (0) counts in
//! the hour of receipt.

use sqlx::{Database, Encode, Executor, IntoArguments, Transaction, Type};
use uuid::Uuid;

use super::{Db, Engine, on_db};

/// Seconds in a usage bucket of `usage_hourly`.
pub const HOUR: i64 = 3600;

/// The start of the hour an entry last used at `last_used_at`, received at `now`, counts in.
pub fn usage_hour(last_used_at: i64, now: i64) -> i64 {
    let t = if last_used_at > 0 {
        last_used_at.min(now)
    } else {
        now
    };
    t - t.rem_euclid(HOUR)
}

/// Adds each entry to its key's counters (`usage_count`, `last_used_at`: `update` is the
/// engine's statement) and to its hourly count; ids of unknown keys change nothing.
async fn apply<DB>(
    tx: &mut Transaction<'_, DB>,
    update: &'static str,
    entries: &[(Uuid, i64, i64)],
    now: i64,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    for (id, count, last) in entries {
        sqlx::query::<DB>(update)
            .bind(*count)
            .bind(*last)
            .bind(id.as_bytes().to_vec())
            .execute(&mut **tx)
            .await?;
        if *count == 0 {
            continue;
        }
        // `WHERE EXISTS`: a report naming a key this database does not hold adds no row.
        sqlx::query::<DB>(
            "INSERT INTO usage_hourly (key_id, hour, count) SELECT $1, $2, $3 \
             WHERE EXISTS (SELECT 1 FROM keys WHERE id = $1) \
             ON CONFLICT (key_id, hour) DO UPDATE SET count = usage_hourly.count + excluded.count",
        )
        .bind(id.as_bytes().to_vec())
        .bind(usage_hour(*last, now))
        .bind(*count)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

const UPDATE_SQLITE: &str = "UPDATE keys SET usage_count = usage_count + $1, last_used_at = max(COALESCE(last_used_at, 0), $2) WHERE id = $3";
const UPDATE_POSTGRES: &str = "UPDATE keys SET usage_count = usage_count + $1, last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $3";

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
            apply(&mut tx, p.pick(UPDATE_SQLITE, UPDATE_POSTGRES), entries, now).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Adds usage counted in this process (verification), in one transaction.
    pub async fn add_usage(
        &self,
        entries: &[(Uuid, i64, i64)],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            apply(&mut tx, p.pick(UPDATE_SQLITE, UPDATE_POSTGRES), entries, now).await?;
            tx.commit().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_in_the_hour_of_its_last_use_capped_at_receipt() {
        let now = 10 * HOUR + 120;
        assert_eq!(usage_hour(9 * HOUR + 3599, now), 9 * HOUR);
        assert_eq!(usage_hour(10 * HOUR, now), 10 * HOUR);
        assert_eq!(
            usage_hour(11 * HOUR + 5, now),
            10 * HOUR,
            "not in the future"
        );
        assert_eq!(usage_hour(0, now), 10 * HOUR, "no use time: receipt");
    }
}
