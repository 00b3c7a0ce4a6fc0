//! Verify's rate-limit counters and credit spend, in one transaction: a conditional upsert per
//! limit into `rate_limit_windows` (migration 0009), shared by every replica on the database,
//! then the credit (`credits::spend_one`). All or nothing: a call refused by a limit or for
//! credits counts in no window and spends no credit. Ended windows are pruned in the background.

use uuid::Uuid;

use super::credits::{Spend, spend_one};
use super::key_writes::NOTIFY;
use super::{Db, Engine, StoreError, on_db};
use crate::domain::verify_limits::WindowCount;

/// What a verification's counting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyUse {
    /// Counted in every window and charged: the requests left in each window, in the order of
    /// the counters given, and the credit spend (`Unlimited` when not charged).
    Allowed {
        /// Requests left per counter after this one.
        remaining: Vec<i64>,
        /// The credit taken.
        spend: Spend,
    },
    /// Refused by the counter at this index (its window is full): nothing counted or spent.
    Limited(usize),
    /// The balance was 0: nothing counted or spent.
    Exhausted,
}

/// One request more in a window, unless it is full: no row returned when it is.
const TAKE: &str = "INSERT INTO rate_limit_windows \
     (pool, pool_id, name, window_s, window_start, window_end, count) \
     VALUES ($1, $2, $3, $4, $5, $6, 1) \
     ON CONFLICT (pool, pool_id, name, window_s, window_start) \
     DO UPDATE SET count = rate_limit_windows.count + 1 WHERE rate_limit_windows.count < $7 \
     RETURNING count";

impl Db {
    /// Counts one verification of key `id` in each of `counts` (the order given is the order
    /// rows are locked: `domain::verify_limits::window_counts` sorts them) and, with `charge`,
    /// takes one credit, all in one transaction. On PostgreSQL the upsert's row lock makes
    /// concurrent replicas count one after the other, so a window admits exactly its quota.
    pub async fn verify_use(
        &self,
        id: Uuid,
        counts: &[WindowCount],
        charge: bool,
        now: i64,
    ) -> Result<VerifyUse, StoreError> {
        let out = on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let mut remaining = Vec::with_capacity(counts.len());
            for (i, c) in counts.iter().enumerate() {
                let taken: Option<i64> = sqlx::query_scalar(TAKE)
                    .bind(c.pool.to_owned())
                    .bind(c.pool_id.clone())
                    .bind(c.name.clone())
                    .bind(c.window_s)
                    .bind(c.window_start)
                    .bind(c.window_end())
                    .bind(c.quota)
                    .fetch_optional(&mut *tx)
                    .await?;
                match taken {
                    Some(n) => remaining.push((c.quota - n).max(0)),
                    None => {
                        tx.rollback().await?;
                        return Ok(VerifyUse::Limited(i));
                    }
                }
            }
            let spend = if charge {
                spend_one(&mut tx, id, now, p.pick("", NOTIFY)).await?
            } else {
                Spend::Unlimited
            };
            if spend == Spend::Exhausted {
                tx.rollback().await?;
                return Ok(VerifyUse::Exhausted);
            }
            tx.commit().await?;
            VerifyUse::Allowed { remaining, spend }
        });
        if let VerifyUse::Allowed {
            spend: Spend::Spent {
                revision: Some(r), ..
            },
            ..
        } = out
        {
            self.observe_revision(r);
        }
        Ok(out)
    }

    /// Deletes the counters of windows that ended at or before `now`; returns how many.
    pub async fn prune_rate_windows(&self, now: i64) -> Result<u64, sqlx::Error> {
        on_db!(self, p => {
            let done = sqlx::query("DELETE FROM rate_limit_windows WHERE window_end <= $1")
                .bind(now)
                .execute(p)
                .await?;
            Ok(done.rows_affected())
        })
    }
}
