//! Usage written to keys: the edges' batches (idempotent per batch id) and the counts this
//! process buffered from verification and forward-auth. Each entry adds to the key's
//! `usage_count` and, in the same transaction, to its hourly count (`usage_hourly`, read by
//! [`super::usage_history`]).
//!
//! Which hour an entry counts in: the hour of its `last_used_at` (the newest use the reporter
//! counted; filters and this process flush every few seconds, so a batch's uses lie within
//! seconds of it), capped at the time of receipt; an entry without a use time (0) counts in
//! the hour of receipt.
//!
//! Credits: each entry's charge comes off its key's balance in the same transaction (never
//! below 0); the entry that takes it to 0 writes the key's exhaustion (`credits::exhaustion_rows`)
//! and the change-log rows that make every edge see it `credits_exhausted`.

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Transaction, Type,
};
use uuid::Uuid;

use super::credits::exhaustion_rows;
use super::key_writes::NOTIFY;
use super::rate_limited::notice;
use super::write::log_changes;
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

/// One key's usage to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRow {
    /// The key.
    pub key_id: Uuid,
    /// Requests allowed.
    pub count: i64,
    /// The newest use, unix seconds (0: unknown).
    pub last_used_at: i64,
    /// Requests refused by a rate limit (the edge's report).
    pub limited: i64,
    /// Requests refused because the key's credits were used up.
    pub credits_exhausted: i64,
    /// Credits to take off the key's balance (the allowed requests, except those a
    /// verification already took exactly).
    pub charge: i64,
}

/// What writing usage did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageApplied {
    /// False when the batch id was seen before (nothing written).
    pub applied: bool,
    /// Keys whose balance this write took to 0.
    pub exhausted: Vec<Uuid>,
    /// The revision of their exhaustion, when there was one.
    pub revision: Option<i64>,
    /// Keys whose refusals raised `key.rate_limited` in this write.
    pub rate_limited: Vec<Uuid>,
}

/// Adds each entry to its key's counters (`usage_count`, `last_used_at`: `update` is the
/// engine's statement) and to its hourly counts, and takes its charge off the key's balance
/// (`balance`: the engine's locking read of it);
/// ids of unknown keys change nothing. A balance taken to 0 writes its exhaustion, and then one
/// change-log row set for all of them (`notify`: the engine's announcement). With
/// `notice_every_s` (an edge's report), an entry's refusals raise `key.rate_limited` at most
/// once per key per that many seconds (`rate_limited::notice`).
async fn apply<DB>(
    tx: &mut Transaction<'static, DB>,
    update: &'static str,
    balance: &'static str,
    notify: &'static str,
    entries: &[UsageRow],
    notice_every_s: Option<i64>,
    now: i64,
) -> Result<UsageApplied, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (Vec<u8>,): FromRow<'r, DB::Row>,
    for<'r> (Option<i64>,): FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    let mut out = UsageApplied {
        applied: true,
        ..UsageApplied::default()
    };
    let mut touched: Vec<[u8; 32]> = Vec::new();
    for e in entries {
        let id = e.key_id.as_bytes().to_vec();
        if e.count > 0 {
            sqlx::query::<DB>(update)
                .bind(e.count)
                .bind(e.last_used_at)
                .bind(id.clone())
                .execute(&mut **tx)
                .await?;
        }
        if e.count > 0 || e.limited > 0 || e.credits_exhausted > 0 {
            // `WHERE EXISTS`: a report naming a key this database does not hold adds no row.
            sqlx::query::<DB>(
                "INSERT INTO usage_hourly (key_id, hour, count, limited, credits_exhausted) \
                 SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM keys WHERE id = $1) \
                 ON CONFLICT (key_id, hour) DO UPDATE SET count = usage_hourly.count + excluded.count, \
                 limited = usage_hourly.limited + excluded.limited, \
                 credits_exhausted = usage_hourly.credits_exhausted + excluded.credits_exhausted",
            )
            .bind(id.clone())
            .bind(usage_hour(e.last_used_at, now))
            .bind(e.count)
            .bind(e.limited)
            .bind(e.credits_exhausted)
            .execute(&mut **tx)
            .await?;
        }
        if let Some(every) = notice_every_s
            && e.limited > 0
            && notice(tx, e.key_id, e.limited, every, now).await?
        {
            out.rate_limited.push(e.key_id);
        }
        if e.charge > 0 {
            // The balance before, under the write lock (SQLite's BEGIN IMMEDIATE) or the row
            // lock (`balance` is PostgreSQL's `FOR UPDATE` read); then the charge, never below 0.
            let before: Option<Option<i64>> = sqlx::query_scalar::<DB, Option<i64>>(balance)
                .bind(id.clone())
                .fetch_optional(&mut **tx)
                .await?;
            let Some(before) = before.flatten().filter(|b| *b > 0) else {
                continue;
            };
            let after = (before - e.charge).max(0);
            sqlx::query::<DB>("UPDATE keys SET credits_remaining = $1 WHERE id = $2")
                .bind(after)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            if after == 0 {
                touched.extend(exhaustion_rows(tx, e.key_id, before, now).await?);
                out.exhausted.push(e.key_id);
            }
        }
    }
    if !out.exhausted.is_empty() {
        out.revision = Some(log_changes(tx, touched.iter(), now, notify).await?);
    }
    Ok(out)
}

const BALANCE: &str = "SELECT credits_remaining FROM keys WHERE id = $1";
const BALANCE_FOR_UPDATE: &str = "SELECT credits_remaining FROM keys WHERE id = $1 FOR UPDATE";
const UPDATE_SQLITE: &str = "UPDATE keys SET usage_count = usage_count + $1, last_used_at = max(COALESCE(last_used_at, 0), $2) WHERE id = $3";
const UPDATE_POSTGRES: &str = "UPDATE keys SET usage_count = usage_count + $1, last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $3";

impl Db {
    /// Applies one usage batch (an edge's report) unless its id was seen before (then
    /// `applied` is false and nothing is written); takes each entry's charge off its key's
    /// balance in the same transaction, and advances the revision watch when a balance reached
    /// 0; an entry's refusals raise `key.rate_limited` at most once per key per
    /// `rate_limited_every_s`, and wake the webhook sender.
    pub async fn record_usage_batch(
        &self,
        batch_id: &str,
        entries: &[UsageRow],
        rate_limited_every_s: i64,
        now: i64,
    ) -> Result<UsageApplied, sqlx::Error> {
        let out = on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let inserted = sqlx::query("INSERT INTO usage_batches (batch_id, received_at) VALUES ($1, $2) ON CONFLICT (batch_id) DO NOTHING")
                .bind(batch_id.to_owned()).bind(now).execute(&mut *tx).await?.rows_affected();
            if inserted == 0 {
                return Ok(UsageApplied::default());
            }
            let out = apply(&mut tx, p.pick(UPDATE_SQLITE, UPDATE_POSTGRES), p.pick(BALANCE, BALANCE_FOR_UPDATE), p.pick("", NOTIFY), entries, Some(rate_limited_every_s), now).await?;
            tx.commit().await?;
            out
        });
        if let Some(r) = out.revision {
            self.observe_revision(r);
        }
        if !out.rate_limited.is_empty() {
            self.outbox_written();
        }
        Ok(out)
    }

    /// Adds usage counted in this process (verification, forward-auth), in one transaction,
    /// as [`Db::record_usage_batch`] does.
    pub async fn add_usage(
        &self,
        entries: &[UsageRow],
        now: i64,
    ) -> Result<UsageApplied, sqlx::Error> {
        if entries.is_empty() {
            return Ok(UsageApplied::default());
        }
        let out = on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let out = apply(&mut tx, p.pick(UPDATE_SQLITE, UPDATE_POSTGRES), p.pick(BALANCE, BALANCE_FOR_UPDATE), p.pick("", NOTIFY), entries, None, now).await?;
            tx.commit().await?;
            out
        });
        if let Some(r) = out.revision {
            self.observe_revision(r);
        }
        Ok(out)
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
