//! Expiry notices in the store: the keys due a `key.expiring` notice, and a notice's audit row
//! (with the webhook event it raises) written once per key and expiry, in one transaction with
//! the notice's record (`key_expiry_notices`, keyed by key and expiry), whose insert re-checks
//! the key: two replicas, or a restart, never raise one twice.

use uuid::Uuid;

use super::notice::Bind::{Bytes, Int};
use super::{AuditEntry, Db, on_db};
use crate::domain::expiry::{EXPIRING_ACTION, expiry_actor, reason};
use crate::domain::key::{KeyRecord, audit_view};

impl Db {
    /// Ids of active workspace and repository keys expiring in `(now, now + window_s]` with
    /// no notice for their current expiry, soonest first, at most `limit`.
    pub async fn keys_due_expiry_notice(
        &self,
        now: i64,
        window_s: i64,
        limit: i64,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        on_db!(self, p => {
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
                "SELECT k.id FROM keys k WHERE k.status = 'active' \
                 AND k.kind IN ('workspace', 'repo') AND k.expires_at > $1 AND k.expires_at <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM key_expiry_notices n \
                 WHERE n.key_id = k.id AND n.expires_at = k.expires_at) \
                 ORDER BY k.expires_at LIMIT $3",
            )
            .bind(now)
            .bind(now.saturating_add(window_s))
            .bind(limit)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().filter_map(|(id,)| Uuid::from_slice(&id).ok()).collect())
        })
    }

    /// Raises `key.expiring` for `key` (read by the caller, found due) at `now`: records the
    /// notice for its expiry, if the key is still active with that expiry and no notice was
    /// recorded for it, and in the same transaction its audit row (the key's public view and
    /// the expiry) and webhook event. `Ok(false)` when nothing was written.
    pub async fn record_expiry_notice(
        &self,
        key: &KeyRecord,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let Some(expires_at) = key.expires_at else {
            return Ok(false);
        };
        let actor = expiry_actor();
        let why = reason(expires_at);
        let entry = AuditEntry {
            at: now,
            workspace_id: Some(&key.workspace_id),
            actor: &actor,
            action: EXPIRING_ACTION,
            key_id: Some(key.id),
            before: None,
            after: Some(audit_view(key)),
            reason: Some(&why),
        };
        let claim = "INSERT INTO key_expiry_notices (key_id, expires_at, noticed_at) \
             SELECT id, expires_at, $3 FROM keys \
             WHERE id = $1 AND expires_at = $2 AND status = 'active' \
             ON CONFLICT (key_id, expires_at) DO NOTHING";
        let binds = vec![Bytes(key.id.as_bytes().to_vec()), Int(expires_at), Int(now)];
        self.write_once(Some((claim, binds)), &entry).await
    }

    /// How many expiry notices were recorded for a key (tests, and the console).
    pub async fn expiry_notices(&self, id: Uuid) -> Result<i64, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM key_expiry_notices WHERE key_id = $1")
            .bind(id.as_bytes().to_vec()).fetch_one(p).await)
    }
}
