//! The statements every key write shares, as functions generic over the engine (the same SQL
//! runs on both): the audit row (with the webhook event it raises), a key row's mutable columns, and the revision bump with its
//! change-log rows. Each runs inside the caller's transaction.

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Transaction, Type};

use super::AuditEntry;
use crate::domain::key::KeyRecord;
use crate::domain::limits::Limits;

/// Appends an audit row.
pub(crate) async fn insert_audit<DB>(
    tx: &mut Transaction<'_, DB>,
    e: &AuditEntry<'_>,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
{
    sqlx::query::<DB>(
        "INSERT INTO audit_log (at, workspace_id, actor_id, actor_name, actor_prefix, action, \
         key_id, before, after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.at)
    .bind(e.workspace_id.map(str::to_owned))
    .bind(e.actor.id.clone())
    .bind(e.actor.name.clone())
    .bind(e.actor.display_prefix.clone())
    .bind(e.action.to_owned())
    .bind(e.key_id.map(|k| k.as_bytes().to_vec()))
    .bind(e.before.as_ref().map(|v| v.to_string()))
    .bind(e.after.as_ref().map(|v| v.to_string()))
    .bind(e.reason.map(str::to_owned))
    .execute(&mut **tx)
    .await?;
    super::webhook_outbox::enqueue(tx, e).await
}

/// Writes every mutable column of a key.
pub(crate) async fn update_key_row<DB>(
    tx: &mut Transaction<'_, DB>,
    k: &KeyRecord,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query::<DB>(
        "UPDATE keys SET name = $1, description = $2, scopes = $3, resources = $4, status = $5, \
         suspended_by_parent = $6, expires_at = $7, updated_at = $8, revoked_at = $9, \
         digest = $10, display_prefix = $11, metadata = $12, limits = $13, credits_remaining = $14, \
         refill_amount = $15, refill_interval = $16, next_refill_at = $17 WHERE id = $18",
    )
    .bind(k.name.clone())
    .bind(k.description.clone())
    .bind(json_list(&k.scopes))
    .bind(json_list(&k.resources))
    .bind(k.status.as_str().to_owned())
    .bind(i64::from(k.suspended_by_parent))
    .bind(k.expires_at)
    .bind(k.updated_at)
    .bind(k.revoked_at)
    .bind(k.digest.to_vec())
    .bind(k.display_prefix.clone())
    .bind(k.metadata.to_string())
    .bind(k.limits.as_ref().map(Limits::to_stored))
    .bind(k.credits.map(|c| c.remaining))
    .bind(k.credits.and_then(|c| c.refill).map(|r| r.amount))
    .bind(k.credits.and_then(|c| c.refill).map(|r| r.interval.as_text()))
    .bind(k.credits.and_then(|c| c.next_refill_at))
    .bind(k.id.as_bytes().to_vec())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Bumps the revision counter (row-locked until commit, so revisions commit in order) and
/// logs the touched digests at `now`; `notify` (PostgreSQL's `pg_notify` statement, empty on SQLite)
/// queues the revision's announcement, delivered at commit. Returns the new revision.
pub(crate) async fn log_changes<'d, DB>(
    tx: &mut Transaction<'_, DB>,
    digests: impl IntoIterator<Item = &'d [u8; 32]>,
    now: i64,
    notify: &'static str,
) -> Result<i64, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
{
    let revision: i64 = sqlx::query_scalar::<DB, i64>(
        "UPDATE keyset_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut **tx)
    .await?;
    for d in digests {
        sqlx::query::<DB>(
            "INSERT INTO keyset_changes (revision, digest, changed_at) VALUES ($1, $2, $3)",
        )
        .bind(revision)
        .bind(d.to_vec())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if !notify.is_empty() {
        sqlx::query::<DB>(notify)
            .bind(revision.to_string())
            .execute(&mut **tx)
            .await?;
    }
    Ok(revision)
}

/// A list column's JSON text.
pub(crate) fn json_list(v: &[String]) -> String {
    serde_json::Value::from(v.to_vec()).to_string()
}
