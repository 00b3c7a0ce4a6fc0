//! Keys and the audit log on `Db`: the reads (each a short `on_db!` body, compiled once per
//! engine), and the key set's one write path, `insert_key` and `change_key`, whose transactions
//! are the engine-generic functions of `key_writes` and which advance the revision watch after
//! the commit.

use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::conditions::{Bound, Conditions, bind_all};
use super::key_writes::{Change, change_in_transaction, insert_in_transaction};
use super::rows::key_from_row;
use super::write::insert_audit;
use super::{
    AuditEntry, AuditFilter, AuditRecord, Db, Engine, KeyFilter, StoreError, key_cols, on_db,
};
use crate::domain::key::{Actor, KeyRecord, format_key_id};
use crate::domain::lifecycle::Plan;

impl Db {
    /// Number of generated admin credentials.
    pub async fn admin_count(&self) -> Result<i64, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM admin_credentials").fetch_one(p).await)
    }

    /// Stores a generated admin credential's digest, but only while the database holds neither
    /// an admin credential nor any key, atomically: replicas starting together on an empty
    /// database store one generated key between them. Returns whether it was stored.
    pub async fn insert_first_admin(
        &self,
        digest: &[u8; 32],
        display_prefix: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        on_db!(self, p => {
            // SQLite's BEGIN IMMEDIATE already serializes writers; PostgreSQL needs a table
            // lock so that a concurrent insert is seen by the NOT EXISTS below.
            let mut tx = p.begin_write().await?;
            let lock = p.pick("", "LOCK TABLE admin_credentials IN EXCLUSIVE MODE");
            if !lock.is_empty() {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            let stored = sqlx::query(
                "INSERT INTO admin_credentials (digest, display_prefix, created_at) SELECT $1, $2, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM admin_credentials) AND NOT EXISTS (SELECT 1 FROM keys)",
            )
            .bind(digest.to_vec()).bind(display_prefix.to_owned()).bind(now)
            .execute(&mut *tx).await?.rows_affected() == 1;
            tx.commit().await?;
            Ok(stored)
        })
    }

    /// The display prefix of the admin credential with this digest, if any.
    pub async fn find_admin(&self, digest: &[u8; 32]) -> Result<Option<String>, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar("SELECT display_prefix FROM admin_credentials WHERE digest = $1")
            .bind(digest.to_vec()).fetch_optional(p).await)
    }

    /// The current key-set revision.
    pub async fn revision(&self) -> Result<i64, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar("SELECT revision FROM keyset_revision WHERE id = 1").fetch_one(p).await)
    }

    /// A key by id.
    pub async fn get_key(&self, id: Uuid) -> Result<Option<KeyRecord>, sqlx::Error> {
        on_db!(self, p => {
            let row = sqlx::query(concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"))
                .bind(id.as_bytes().to_vec()).fetch_optional(p).await?;
            row.map(|r| key_from_row(&r)).transpose()
        })
    }

    /// The key whose current or rotated-out secret has this digest; for a rotated-out secret
    /// also the end of its grace period.
    pub async fn find_by_digest(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(KeyRecord, Option<i64>)>, sqlx::Error> {
        on_db!(self, p => {
            let row = sqlx::query(concat!("SELECT ", key_cols!(), " FROM keys WHERE digest = $1"))
                .bind(digest.to_vec()).fetch_optional(p).await?;
            if let Some(r) = row {
                return Ok(Some((key_from_row(&r)?, None)));
            }
            let retired: Option<(Vec<u8>, i64)> =
                sqlx::query_as("SELECT key_id, grace_until FROM retired_secrets WHERE digest = $1")
                    .bind(digest.to_vec()).fetch_optional(p).await?;
            let Some((key_id, grace_until)) = retired else { return Ok(None) };
            let row = sqlx::query(concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"))
                .bind(key_id).fetch_optional(p).await?;
            row.map(|r| key_from_row(&r).map(|k| (k, Some(grace_until)))).transpose()
        })
    }

    /// A page of keys in creation order.
    pub async fn list_keys(&self, f: &KeyFilter) -> Result<Vec<KeyRecord>, sqlx::Error> {
        let mut c = Conditions::default();
        if let Some(w) = &f.workspace_id {
            let v = c.bind(Bound::Text(w.clone()));
            c.push(format!("workspace_id = {v}"));
        }
        if let Some(s) = f.status {
            let v = c.bind(Bound::Text(s.as_str().into()));
            c.push(format!("status = {v}"));
        }
        if let Some(k) = f.kind {
            let v = c.bind(Bound::Text(k.as_str().into()));
            c.push(format!("kind = {v}"));
        }
        if let Some(o) = &f.owner_id {
            let v = c.bind(Bound::Text(o.clone()));
            c.push(format!("owner_id = {v}"));
        }
        if let Some(n) = &f.name_contains {
            let needle = format!("%{}%", like_escape(&n.to_lowercase()));
            let v = c.bind(Bound::Text(needle));
            c.push(format!("lower(name) LIKE {v} ESCAPE '\\'"));
        }
        if let Some(sc) = &f.scope {
            let needle = format!("%\"{}\"%", like_escape(sc));
            let v = c.bind(Bound::Text(needle));
            c.push(format!("scopes LIKE {v} ESCAPE '\\'"));
        }
        if let Some((from, to)) = f.expiring {
            let (from, to) = (c.bind(Bound::Int(from)), c.bind(Bound::Int(to)));
            c.push(format!(
                "status = 'active' AND expires_at > {from} AND expires_at <= {to}"
            ));
        }
        if f.never_used {
            c.push("last_used_at IS NULL".to_owned());
        }
        if let Some(parent) = f.parent {
            let v = c.bind(Bound::Bytes(parent.as_bytes().to_vec()));
            c.push(format!("parent_id = {v}"));
        }
        if let Some(a) = f.after {
            let v = c.bind(Bound::Bytes(a.as_bytes().to_vec()));
            c.push(format!("id > {v}"));
        }
        let mut sql = format!(
            concat!("SELECT ", key_cols!(), " FROM keys WHERE {}"),
            c.clause()
        );
        sql.push_str(&format!(" ORDER BY id LIMIT {}", f.limit.clamp(1, 1000)));
        let values = c.into_values();
        on_db!(self, p => {
            let q = bind_all!(sqlx::query(AssertSqlSafe(sql)), values);
            q.fetch_all(p).await?.iter().map(key_from_row).collect()
        })
    }

    /// Inserts a new key with its audit row and change-log row, in one transaction, and
    /// advances the revision watch. For an exchanged child (`parent_id` set) the parent is
    /// re-checked inside the transaction: still active, and under the child limit.
    pub async fn insert_key(
        &self,
        k: &KeyRecord,
        audit: &AuditEntry<'_>,
    ) -> Result<i64, StoreError> {
        let rev = on_db!(self, p => insert_in_transaction(p, &[(k, audit)]).await?);
        self.observe_revision(rev);
        Ok(rev)
    }

    /// Inserts many keys, each with its audit row, in one transaction with one revision for
    /// them all (bulk loads, such as a benchmark's 100,000 keys), and advances the revision
    /// watch. The same statements and parent checks as [`Db::insert_key`].
    pub async fn insert_keys(
        &self,
        keys: &[(KeyRecord, AuditEntry<'_>)],
    ) -> Result<i64, StoreError> {
        let keys: Vec<(&KeyRecord, &AuditEntry<'_>)> = keys.iter().map(|(k, a)| (k, a)).collect();
        let rev = on_db!(self, p => insert_in_transaction(p, &keys).await?);
        self.observe_revision(rev);
        Ok(rev)
    }

    /// Applies a lifecycle change in one transaction: locks the key, lets `plan` decide from
    /// its current state, writes the key, the audit row, the rotated-out secret, the cascade to
    /// children (each with its own audit row; which children and how is the cascade's rule)
    /// and the change log; then advances the revision watch. `workspace` limits the key to one
    /// workspace (a workspace caller); a key outside it is not found. `plan`'s refusal comes
    /// back as it is: `E` is the caller's error type, which the store's errors convert into.
    #[allow(clippy::too_many_arguments)] // one call site per action; a params struct would only rename them
    pub async fn change_key<F, E>(
        &self,
        id: Uuid,
        workspace: Option<&str>,
        actor: &Actor,
        action: &str,
        reason: Option<&str>,
        now: i64,
        plan: F,
    ) -> Result<(KeyRecord, i64), E>
    where
        F: FnOnce(&KeyRecord) -> Result<Plan, E>,
        E: From<StoreError> + From<sqlx::Error>,
    {
        let change = Change {
            id,
            workspace,
            actor,
            action,
            reason,
            now,
        };
        let (new, rev) = on_db!(self, p => change_in_transaction(p, &change, plan).await?);
        self.observe_revision(rev);
        Ok((new, rev))
    }

    /// A page of audit rows matching `f`: oldest first after the cursor, or newest first
    /// before it.
    pub async fn list_audit(&self, f: &AuditFilter<'_>) -> Result<Vec<AuditRecord>, sqlx::Error> {
        let mut c = Conditions::default();
        if let Some(w) = f.workspace {
            let v = c.bind(Bound::Text(w.to_owned()));
            c.push(format!("workspace_id = {v}"));
        }
        if let Some(k) = f.key {
            let v = c.bind(Bound::Bytes(k.as_bytes().to_vec()));
            c.push(format!("key_id = {v}"));
        }
        if let Some(a) = f.actor {
            let v = c.bind(Bound::Text(a.to_owned()));
            c.push(format!("actor_id = {v}"));
        }
        if let Some(a) = f.action {
            let v = c.bind(Bound::Text(a.to_owned()));
            c.push(format!("action = {v}"));
        }
        if let Some(t) = f.from {
            let v = c.bind(Bound::Int(t));
            c.push(format!("at >= {v}"));
        }
        if let Some(t) = f.to {
            let v = c.bind(Bound::Int(t));
            c.push(format!("at < {v}"));
        }
        let order = if f.newest_first {
            if let Some(cursor) = f.cursor {
                let v = c.bind(Bound::Int(cursor));
                c.push(format!("id < {v}"));
            }
            "DESC"
        } else {
            let v = c.bind(Bound::Int(f.cursor.unwrap_or(0)));
            c.push(format!("id > {v}"));
            "ASC"
        };
        let sql = format!(
            "SELECT id, at, workspace_id, actor_id, actor_name, actor_prefix, action, key_id, \
             (SELECT k.name FROM keys k WHERE k.id = audit_log.key_id) AS key_name, before, after, reason \
             FROM audit_log WHERE {} ORDER BY id {order} LIMIT {}",
            c.clause(),
            f.limit.clamp(1, 1000)
        );
        let values = c.into_values();
        on_db!(self, p => {
            let rows = bind_all!(sqlx::query(AssertSqlSafe(sql)), values).fetch_all(p).await?;
            rows.iter().map(|r| {
                let key_id: Option<Vec<u8>> = r.try_get("key_id")?;
                let before: Option<String> = r.try_get("before")?;
                let after: Option<String> = r.try_get("after")?;
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    workspace_id: r.try_get("workspace_id")?,
                    actor: Actor {
                        id: r.try_get("actor_id")?,
                        name: r.try_get("actor_name")?,
                        display_prefix: r.try_get("actor_prefix")?,
                    },
                    action: r.try_get("action")?,
                    key_id: key_id.and_then(|b| Uuid::from_slice(&b).ok()).map(format_key_id),
                    key_name: r.try_get("key_name")?,
                    before: before.and_then(|s| serde_json::from_str(&s).ok()),
                    after: after.and_then(|s| serde_json::from_str(&s).ok()),
                    reason: r.try_get("reason")?,
                })
            }).collect()
        })
    }

    /// Counts keys (for start-up decisions and benchmarks).
    pub async fn count_keys(&self) -> Result<i64, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM keys").fetch_one(p).await)
    }
}

/// Escapes `LIKE`'s wildcards (`%`, `_`) and its escape character `\\` in a literal.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Db {
    /// Appends one audit row in its own transaction.
    pub async fn insert_audit(&self, entry: &AuditEntry<'_>) -> Result<(), sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            insert_audit(&mut tx, entry).await?;
            tx.commit().await
        })
    }
}
