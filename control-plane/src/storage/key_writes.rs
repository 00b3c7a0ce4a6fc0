//! The key set's write transactions, generic over the engine: issuing a key (with the parent
//! re-checked for an exchanged child) and a lifecycle change (lock the key, let the caller's
//! plan decide from its current state, write the key, its audit row, a rotated-out secret, the
//! cascade to its children as the domain's `Cascade` says, and the change log).

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::rows::key_from_row;
use super::write::{insert_audit, json_list, log_changes, update_key_row};
use super::{AuditEntry, Engine, StoreError, key_cols};
use crate::domain;
use crate::domain::key::{Actor, KeyRecord, audit_view};
use crate::domain::lifecycle::Plan;
use crate::domain::limits::Limits;

/// PostgreSQL's announcement of a new revision (SQLite has none: one process).
pub(crate) const NOTIFY: &str = "SELECT pg_notify('keygate_keyset', $1)";

/// Inserts each key with its audit row, and one change-log row for them all, in one
/// transaction; returns the new revision (one key: an issuance; many: a bulk load). For an
/// exchanged child (`parent_id` set) the parent is re-checked inside the transaction: still
/// active, and under the child limit.
pub(crate) async fn insert_in_transaction<P>(
    pool: &P,
    keys: &[(&KeyRecord, &AuditEntry<'_>)],
) -> Result<i64, StoreError>
where
    P: Engine,
    for<'r> (Option<String>,): FromRow<'r, <P::Database as Database>::Row>,
    for<'c> &'c mut <P::Database as Database>::Connection: Executor<'c, Database = P::Database>,
    <P::Database as Database>::Arguments: IntoArguments<P::Database>,
    for<'a> &'a str: ColumnIndex<<P::Database as Database>::Row>,
    for<'r> (i64,): FromRow<'r, <P::Database as Database>::Row>,
    for<'r> (Vec<u8>,): FromRow<'r, <P::Database as Database>::Row>,
    for<'q> i64: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<i64>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> String: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<String>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Vec<u8>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<Vec<u8>>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
{
    let mut tx = pool.begin_write().await?;
    for (k, audit) in keys {
        insert_rows(pool, &mut tx, k, audit).await?;
    }
    let digests: Vec<[u8; 32]> = keys.iter().map(|(k, _)| k.digest).collect();
    let at = keys
        .iter()
        .map(|(k, _)| k.created_at)
        .max()
        .unwrap_or_default();
    let revision = log_changes(&mut tx, &digests, at, pool.pick("", NOTIFY)).await?;
    tx.commit().await?;
    Ok(revision)
}

/// One key's rows (the parent check, its workspace, the key, its audit row) in `tx`.
async fn insert_rows<P>(
    pool: &P,
    tx: &mut sqlx::Transaction<'static, P::Database>,
    k: &KeyRecord,
    audit: &AuditEntry<'_>,
) -> Result<(), StoreError>
where
    P: Engine,
    for<'r> (Option<String>,): FromRow<'r, <P::Database as Database>::Row>,
    for<'c> &'c mut <P::Database as Database>::Connection: Executor<'c, Database = P::Database>,
    <P::Database as Database>::Arguments: IntoArguments<P::Database>,
    for<'a> &'a str: ColumnIndex<<P::Database as Database>::Row>,
    for<'r> (i64,): FromRow<'r, <P::Database as Database>::Row>,
    for<'r> (Vec<u8>,): FromRow<'r, <P::Database as Database>::Row>,
    for<'q> i64: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<i64>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> String: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<String>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Vec<u8>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<Vec<u8>>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
{
    if let Some(parent) = k.parent_id {
        let status: Option<String> = sqlx::query_scalar::<P::Database, Option<String>>(pool.pick(
            "SELECT status FROM keys WHERE id = $1",
            "SELECT status FROM keys WHERE id = $1 FOR UPDATE",
        ))
        .bind(parent.as_bytes().to_vec())
        .fetch_optional(&mut **tx)
        .await?
        .flatten();
        if status.as_deref() != Some("active") {
            return Err(StoreError::ParentNotActive);
        }
        let children: i64 = sqlx::query_scalar::<P::Database, i64>(
            "SELECT COUNT(*) FROM keys WHERE parent_id = $1 AND status = 'active' \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(parent.as_bytes().to_vec())
        .bind(k.created_at)
        .fetch_one(&mut **tx)
        .await?;
        domain::check_child_count(children)?;
    }
    sqlx::query::<P::Database>(
        "INSERT INTO workspaces (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(k.workspace_id.clone())
    .bind(k.created_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query::<P::Database>(concat!(
        "INSERT INTO keys (",
        key_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)"
    ))
    .bind(k.id.as_bytes().to_vec())
    .bind(k.workspace_id.clone())
    .bind(k.name.clone())
    .bind(k.description.clone())
    .bind(k.kind.as_str().to_owned())
    .bind(k.display_prefix.clone())
    .bind(k.digest.to_vec())
    .bind(k.hash_version)
    .bind(json_list(&k.scopes))
    .bind(json_list(&k.resources))
    .bind(k.status.as_str().to_owned())
    .bind(i64::from(k.suspended_by_parent))
    .bind(k.expires_at)
    .bind(k.created_at)
    .bind(k.updated_at)
    .bind(k.last_used_at)
    .bind(k.usage_count)
    .bind(k.revoked_at)
    .bind(k.created_by.id.clone())
    .bind(k.created_by.name.clone())
    .bind(k.created_by.display_prefix.clone())
    .bind(k.owner_id.clone())
    .bind(k.metadata.to_string())
    .bind(k.parent_id.map(|u| u.as_bytes().to_vec()))
    .bind(k.subject.clone())
    .bind(k.limits.as_ref().map(Limits::to_stored))
    .bind(k.credits.map(|c| c.remaining))
    .bind(k.credits.and_then(|c| c.refill).map(|r| r.amount))
    .bind(
        k.credits
            .and_then(|c| c.refill)
            .map(|r| r.interval.as_text()),
    )
    .bind(k.credits.and_then(|c| c.next_refill_at))
    .execute(&mut **tx)
    .await?;
    insert_audit(tx, audit).await?;
    Ok(())
}

/// Who changes which key, how, and when.
pub(crate) struct Change<'a> {
    /// The key.
    pub id: Uuid,
    /// The caller's workspace (`None`: the admin, every workspace).
    pub workspace: Option<&'a str>,
    /// Who.
    pub actor: &'a Actor,
    /// The audit action.
    pub action: &'a str,
    /// The reason given.
    pub reason: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
}

/// Runs one lifecycle change on `pool`; returns the key after it and the new revision.
/// A key outside `change.workspace` is not found; `plan`'s refusal comes back as it is.
pub(crate) async fn change_in_transaction<P, F, E>(
    pool: &P,
    change: &Change<'_>,
    plan: F,
) -> Result<(KeyRecord, i64), E>
where
    P: Engine,
    F: FnOnce(&KeyRecord) -> Result<Plan, E>,
    E: From<StoreError> + From<sqlx::Error>,
    for<'c> &'c mut <P::Database as Database>::Connection: Executor<'c, Database = P::Database>,
    <P::Database as Database>::Arguments: IntoArguments<P::Database>,
    for<'a> &'a str: ColumnIndex<<P::Database as Database>::Row>,
    for<'r> (i64,): FromRow<'r, <P::Database as Database>::Row>,
    for<'r> (Vec<u8>,): FromRow<'r, <P::Database as Database>::Row>,
    for<'q> i64: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<i64>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> String: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<String>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Vec<u8>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
    for<'q> Option<Vec<u8>>: Encode<'q, P::Database> + Decode<'q, P::Database> + Type<P::Database>,
{
    let Change {
        id,
        workspace,
        actor,
        action,
        reason,
        now,
    } = *change;
    let mut tx = pool.begin_write().await?;
    let select = pool.pick(
        concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"),
        concat!(
            "SELECT ",
            key_cols!(),
            " FROM keys WHERE id = $1 FOR UPDATE"
        ),
    );
    let row = sqlx::query::<P::Database>(select)
        .bind(id.as_bytes().to_vec())
        .fetch_optional(&mut *tx)
        .await?;
    let old = match row {
        Some(r) => key_from_row(&r)?,
        None => return Err(StoreError::KeyNotFound.into()),
    };
    if workspace.is_some_and(|w| w != old.workspace_id) {
        return Err(StoreError::KeyNotFound.into());
    }
    let Plan {
        new,
        retire,
        cascade,
    } = plan(&old)?;
    update_key_row(&mut tx, &new).await?;
    let mut touched: Vec<[u8; 32]> = vec![old.digest];
    if new.digest != old.digest {
        touched.push(new.digest);
    }
    if let Some((digest, until)) = retire {
        sqlx::query::<P::Database>(
            "INSERT INTO retired_secrets (digest, key_id, grace_until) VALUES ($1, $2, $3)",
        )
        .bind(digest.to_vec())
        .bind(id.as_bytes().to_vec())
        .bind(until)
        .execute(&mut *tx)
        .await?;
    }
    let retired: Vec<Vec<u8>> = sqlx::query_scalar::<P::Database, Vec<u8>>(
        "SELECT digest FROM retired_secrets WHERE key_id = $1 AND grace_until > $2",
    )
    .bind(id.as_bytes().to_vec())
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    touched.extend(
        retired
            .into_iter()
            .filter_map(|d| <[u8; 32]>::try_from(d).ok()),
    );
    if old.limits != new.limits
        || old.credits.map(|c| c.exhausted()) != new.credits.map(|c| c.exhausted())
    {
        // Its children's policies follow it (`domain::limits::resolve_policy`).
        touched.extend(family_digests(&mut tx, id, false).await?);
    }
    let audit = AuditEntry {
        at: now,
        workspace_id: Some(&old.workspace_id),
        actor,
        action,
        key_id: Some(id),
        before: Some(audit_view(&old)),
        after: Some(audit_view(&new)),
        reason,
    };
    insert_audit(&mut tx, &audit).await?;
    if let Some(c) = cascade {
        let select = pool.pick(
            concat!(
                "SELECT ",
                key_cols!(),
                " FROM keys WHERE parent_id = $1 ORDER BY id"
            ),
            concat!(
                "SELECT ",
                key_cols!(),
                " FROM keys WHERE parent_id = $1 ORDER BY id FOR UPDATE"
            ),
        );
        let rows = sqlx::query::<P::Database>(select)
            .bind(id.as_bytes().to_vec())
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let child = key_from_row(r)?;
            if !c.applies_to(&child) {
                continue;
            }
            let after = c.apply(&child, now);
            update_key_row(&mut tx, &after).await?;
            touched.push(child.digest);
            let audit = AuditEntry {
                at: now,
                workspace_id: Some(&child.workspace_id),
                actor,
                action: c.child_action(),
                key_id: Some(child.id),
                before: Some(audit_view(&child)),
                after: Some(audit_view(&after)),
                reason: Some("cascaded from parent key"),
            };
            insert_audit(&mut tx, &audit).await?;
        }
    }
    let revision = log_changes(&mut tx, touched.iter(), change.now, pool.pick("", NOTIFY)).await?;
    tx.commit().await?;
    Ok((new, revision))
}

/// The digests in the key set that a change of key `id`'s policy touches: its children's
/// current and rotated-out secrets, and with `itself` its own too.
pub(crate) async fn family_digests<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    id: Uuid,
    itself: bool,
) -> Result<Vec<[u8; 32]>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'r> (Vec<u8>,): FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    let sql = if itself {
        "SELECT digest FROM keys WHERE id = $1 OR parent_id = $1 UNION ALL \
         SELECT r.digest FROM retired_secrets r JOIN keys c ON c.id = r.key_id \
         WHERE c.id = $1 OR c.parent_id = $1"
    } else {
        "SELECT digest FROM keys WHERE parent_id = $1 UNION ALL \
         SELECT r.digest FROM retired_secrets r JOIN keys c ON c.id = r.key_id \
         WHERE c.parent_id = $1"
    };
    let rows: Vec<Vec<u8>> = sqlx::query_scalar::<DB, Vec<u8>>(sql)
        .bind(id.as_bytes().to_vec())
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|d| <[u8; 32]>::try_from(d).ok())
        .collect())
}
