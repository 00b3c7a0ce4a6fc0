//! Credits and default limits in the store: a key's balance taken to 0 (its audit row, event
//! and change-log rows in the spending transaction, so every edge sees it `credits_exhausted`),
//! exact spending for verification (`spend_one`, in verify's transaction: `rate_windows`), the refills that are due, and a workspace's default
//! limits (written with its audit row and the change-log rows of every key that inherits them).

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::key_writes::{NOTIFY, family_digests};
use super::rows::key_from_row;
use super::write::{insert_audit, log_changes};
use super::{AuditEntry, Db, Engine, StoreError, key_cols, on_db};
use crate::domain::credits::{EXHAUSTED_ACTION, WORKSPACE_LIMITS_ACTION};
use crate::domain::key::{Actor, audit_view};
use crate::domain::limits::Limits;
use crate::domain::refill::credits_actor;

/// The rows of key `id`'s exhaustion, in `tx` (its balance was `before` and is now 0): the
/// audit row `key.credits_exhausted` (with its webhook event); returns the digests whose
/// policy changed (the key's and its children's), for the caller's change-log rows.
pub(crate) async fn exhaustion_rows<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    id: Uuid,
    before: i64,
    now: i64,
) -> Result<Vec<[u8; 32]>, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (Vec<u8>,): FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    let row = sqlx::query::<DB>(concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"))
        .bind(id.as_bytes().to_vec())
        .fetch_one(&mut **tx)
        .await?;
    let after = key_from_row(&row)?;
    let mut prior = after.clone();
    if let Some(c) = prior.credits.as_mut() {
        c.remaining = before;
    }
    let actor = credits_actor();
    let audit = AuditEntry {
        at: now,
        workspace_id: Some(&after.workspace_id),
        actor: &actor,
        action: EXHAUSTED_ACTION,
        key_id: Some(id),
        before: Some(audit_view(&prior)),
        after: Some(audit_view(&after)),
        reason: Some("credits reached 0"),
    };
    insert_audit(tx, &audit).await?;
    family_digests(tx, id, true).await
}

/// What spending one credit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// The key has no balance (unlimited).
    Unlimited,
    /// One credit taken; this many left.
    Spent {
        /// Credits left (0: this use exhausted it, at `revision`).
        remaining: i64,
        /// The revision of the exhaustion, when this use took the balance to 0.
        revision: Option<i64>,
    },
    /// The balance was already 0: refused, nothing taken.
    Exhausted,
}

/// Takes one credit from key `id` in `tx` (a conditional decrement); the use that takes the
/// balance to 0 also writes the exhaustion (audit row, event, change-log rows with `notify`,
/// the engine's announcement).
pub(crate) async fn spend_one<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    id: Uuid,
    now: i64,
    notify: &'static str,
) -> Result<Spend, sqlx::Error>
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
    let left: Option<Option<i64>> = sqlx::query_scalar::<DB, Option<i64>>(
        "UPDATE keys SET credits_remaining = credits_remaining - 1 \
         WHERE id = $1 AND credits_remaining > 0 RETURNING credits_remaining",
    )
    .bind(id.as_bytes().to_vec())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match left.flatten() {
        Some(0) => {
            let digests = exhaustion_rows(tx, id, 1, now).await?;
            let rev = log_changes(tx, digests.iter(), now, notify).await?;
            Spend::Spent {
                remaining: 0,
                revision: Some(rev),
            }
        }
        Some(n) => Spend::Spent {
            remaining: n,
            revision: None,
        },
        None => {
            let balance: Option<Option<i64>> = sqlx::query_scalar::<DB, Option<i64>>(
                "SELECT credits_remaining FROM keys WHERE id = $1",
            )
            .bind(id.as_bytes().to_vec())
            .fetch_optional(&mut **tx)
            .await?;
            if balance.flatten().is_some() {
                Spend::Exhausted
            } else {
                Spend::Unlimited
            }
        }
    })
}

impl Db {
    /// Keys whose refill is due at `now` (at most `limit`), with the time it was due.
    pub async fn due_refills(&self, now: i64, limit: i64) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        on_db!(self, p => {
            let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
                "SELECT id, next_refill_at FROM keys WHERE next_refill_at <= $1 \
                 AND status <> 'revoked' ORDER BY next_refill_at LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, due)| Uuid::from_slice(&id).ok().map(|u| (u, due)))
                .collect())
        })
    }

    /// A workspace's default rate limits (`None`: none set).
    pub async fn workspace_limits(&self, workspace: &str) -> Result<Option<Limits>, sqlx::Error> {
        let text: Option<Option<String>> = on_db!(self, p => {
            sqlx::query_scalar("SELECT default_limits FROM workspaces WHERE id = $1")
                .bind(workspace.to_owned())
                .fetch_optional(p)
                .await?
        });
        text.flatten()
            .map(|t| {
                Limits::from_stored(&t)
                    .ok_or_else(|| sqlx::Error::Decode("bad stored default_limits".into()))
            })
            .transpose()
    }

    /// Sets (or with `None` clears) a workspace's default limits, in one transaction with its
    /// audit row (`workspace.limits`, with its event) and the change-log rows of every key of
    /// the workspace (they may inherit them, directly or through a parent); advances the
    /// revision watch. Returns the defaults before and the revision.
    pub async fn set_workspace_limits(
        &self,
        workspace: &str,
        limits: Option<&Limits>,
        actor: &Actor,
        now: i64,
    ) -> Result<(Option<Limits>, i64), StoreError> {
        let stored = limits.map(Limits::to_stored);
        let (before, rev) = on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query("INSERT INTO workspaces (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(workspace.to_owned()).bind(now).execute(&mut *tx).await?;
            let before: Option<String> = sqlx::query_scalar(p.pick(
                "SELECT default_limits FROM workspaces WHERE id = $1",
                "SELECT default_limits FROM workspaces WHERE id = $1 FOR UPDATE",
            ))
            .bind(workspace.to_owned()).fetch_one(&mut *tx).await?;
            sqlx::query("UPDATE workspaces SET default_limits = $1 WHERE id = $2")
                .bind(stored.clone()).bind(workspace.to_owned()).execute(&mut *tx).await?;
            let before = before.and_then(|t| Limits::from_stored(&t));
            let view = |l: Option<&Limits>| serde_json::json!({
                "workspace_id": workspace,
                "default_limits": l.map(Limits::views),
            });
            let audit = AuditEntry {
                at: now,
                workspace_id: Some(workspace),
                actor,
                action: WORKSPACE_LIMITS_ACTION,
                key_id: None,
                before: Some(view(before.as_ref())),
                after: Some(view(limits)),
                reason: None,
            };
            insert_audit(&mut tx, &audit).await?;
            let digests: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT digest FROM keys WHERE workspace_id = $1 AND status = 'active' UNION ALL \
                 SELECT r.digest FROM retired_secrets r JOIN keys k ON k.id = r.key_id \
                 WHERE k.workspace_id = $1 AND k.status = 'active'",
            )
            .bind(workspace.to_owned()).fetch_all(&mut *tx).await?;
            let digests: Vec<[u8; 32]> =
                digests.into_iter().filter_map(|d| <[u8; 32]>::try_from(d).ok()).collect();
            let rev = log_changes(&mut tx, digests.iter(), now, p.pick("", NOTIFY)).await?;
            tx.commit().await?;
            (before, rev)
        });
        self.observe_revision(rev);
        Ok((before, rev))
    }
}
