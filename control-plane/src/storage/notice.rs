//! Once-only notices (a canary hit, an expiry, an edge gone): a claimed row, then the audit
//! row and its webhook event in the same transaction, so nothing is raised twice.

use super::write::insert_audit;
use super::{AuditEntry, Db, Engine, on_db};

/// One bind of a claim's statement.
pub(crate) enum Bind {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Db {
    /// Runs `claim` (an `INSERT … ON CONFLICT DO NOTHING`, `$1`… bound to its binds), then, if
    /// it inserted its row or there is none, writes `entry`: `Ok(false)` when claimed before.
    pub(crate) async fn write_once(
        &self,
        claim: Option<(&'static str, Vec<Bind>)>,
        entry: &AuditEntry<'_>,
    ) -> Result<bool, sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            if let Some((sql, binds)) = claim {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = match b {
                        Bind::Int(v) => q.bind(v),
                        Bind::Text(v) => q.bind(v),
                        Bind::Bytes(v) => q.bind(v),
                    };
                }
                if q.execute(&mut *tx).await?.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            insert_audit(&mut tx, entry).await?;
            tx.commit().await?;
            self.outbox_written(); // wakes the webhook sender
            Ok(true)
        })
    }
}
