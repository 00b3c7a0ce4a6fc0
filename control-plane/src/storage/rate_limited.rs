//! Rate-limited notices in the store: written in the usage intake's transaction when an edge's
//! report counts refusals for a key, at most once per key per period: a conditional upsert of
//! the key's last notice time (`rate_limited_notices`) decides, so two replicas taking reports
//! at once never raise two; then the audit row `key.rate_limited` (the key's public view, the
//! refusals counted) with its webhook event.

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::rows::key_from_row;
use super::write::insert_audit;
use super::{AuditEntry, key_cols};
use crate::domain::key::audit_view;
use crate::domain::rate_limited::{RATE_LIMITED_ACTION, limits_actor, reason};

/// Raises `key.rate_limited` for key `id` in `tx` (a report counted `limited` refusals at
/// `now`) unless one was raised less than `every_s` seconds ago; unknown keys raise none.
/// Returns whether it was raised.
pub(crate) async fn notice<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    id: Uuid,
    limited: i64,
    every_s: i64,
    now: i64,
) -> Result<bool, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    // A row comes back only when it was inserted, or updated because the last notice is old.
    let fresh: Option<i64> = sqlx::query_scalar::<DB, i64>(
        "INSERT INTO rate_limited_notices (key_id, noticed_at) SELECT id, $2 FROM keys \
         WHERE id = $1 ON CONFLICT (key_id) DO UPDATE SET noticed_at = excluded.noticed_at \
         WHERE rate_limited_notices.noticed_at <= $3 RETURNING noticed_at",
    )
    .bind(id.as_bytes().to_vec())
    .bind(now)
    .bind(now.saturating_sub(every_s))
    .fetch_optional(&mut **tx)
    .await?;
    if fresh.is_none() {
        return Ok(false);
    }
    let row = sqlx::query::<DB>(concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"))
        .bind(id.as_bytes().to_vec())
        .fetch_one(&mut **tx)
        .await?;
    let key = key_from_row(&row)?;
    let actor = limits_actor();
    let why = reason(limited, every_s);
    let audit = AuditEntry {
        at: now,
        workspace_id: Some(&key.workspace_id),
        actor: &actor,
        action: RATE_LIMITED_ACTION,
        key_id: Some(id),
        before: None,
        after: Some(audit_view(&key)),
        reason: Some(&why),
    };
    insert_audit(tx, &audit).await?;
    Ok(true)
}
