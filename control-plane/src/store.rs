//! The queries: reads, and write transactions that carry their audit row and key-set change
//! log rows. Each body is compiled once per engine by [`on_db!`].

use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use crate::db::{
    Actor, AuditEntry, AuditRecord, Db, Engine, KeyFilter, KeyRecord, format_key_id, key_cols,
    key_from_row, on_db,
};
use crate::domain::{self, KeyKind, KeyStatus};
use crate::error::ApiError;

/// Appends an audit row inside transaction `$tx`.
macro_rules! insert_audit {
    ($tx:ident, $e:expr) => {{
        let e: &AuditEntry<'_> = $e;
        sqlx::query(
            "INSERT INTO audit_log (at, workspace_id, actor_id, actor_name, actor_prefix, action, key_id, \
             before, after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Bumps the revision counter (row-locked until commit, so revisions commit in order) and
/// logs the touched digests; on PostgreSQL also queues a NOTIFY delivered at commit.
macro_rules! log_changes {
    ($pool:ident, $tx:ident, $digests:expr) => {{
        let rev: i64 = sqlx::query_scalar(
            "UPDATE keyset_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(&mut *$tx)
        .await?;
        for d in $digests {
            sqlx::query("INSERT INTO keyset_changes (revision, digest) VALUES ($1, $2)")
                .bind(rev)
                .bind(d.to_vec())
                .execute(&mut *$tx)
                .await?;
        }
        let notify = $pool.pick("", "SELECT pg_notify('keygate_keyset', $1)");
        if !notify.is_empty() {
            sqlx::query(notify)
                .bind(rev.to_string())
                .execute(&mut *$tx)
                .await?;
        }
        rev
    }};
}

/// Writes every mutable column of a key.
macro_rules! update_key_row {
    ($tx:ident, $k:expr) => {{
        let k: &KeyRecord = $k;
        sqlx::query(
            "UPDATE keys SET name = $1, description = $2, scopes = $3, resources = $4, status = $5, \
             suspended_by_parent = $6, expires_at = $7, updated_at = $8, revoked_at = $9, digest = $10, \
             display_prefix = $11, metadata = $12 WHERE id = $13",
        )
        .bind(k.name.clone())
        .bind(k.description.clone())
        .bind(json(&k.scopes))
        .bind(json(&k.resources))
        .bind(k.status.as_str())
        .bind(i64::from(k.suspended_by_parent))
        .bind(k.expires_at)
        .bind(k.updated_at)
        .bind(k.revoked_at)
        .bind(k.digest.to_vec())
        .bind(k.display_prefix.clone())
        .bind(k.metadata.to_string())
        .bind(k.id.as_bytes().to_vec())
        .execute(&mut *$tx)
        .await?;
    }};
}

fn json(v: &[String]) -> String {
    serde_json::Value::from(v.to_vec()).to_string()
}

/// What a lifecycle change does, decided by the caller's pure closure from the current record.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The record after the change.
    pub new: KeyRecord,
    /// A rotated-out digest and the end of its grace period.
    pub retire: Option<([u8; 32], i64)>,
    /// What happens to the key's exchanged children.
    pub cascade: Option<Cascade>,
}

/// The effect of a parent's change on its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    /// Suspend active children (marked as suspended by their parent).
    Suspend,
    /// Reactivate children that the parent's suspension suspended.
    Reactivate,
    /// Revoke every child not yet revoked.
    Revoke,
}

/// One entry of the key set as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SetEntry {
    /// Digest of a secret that can pass.
    pub digest: [u8; 32],
    /// Key id.
    pub key_id: Uuid,
    /// Owner id.
    pub owner_id: String,
    /// Expiry of this secret.
    pub expires_at: Option<i64>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Allow-list.
    pub resources: Vec<String>,
}

impl SetEntry {
    /// The entry in the wire format's terms (the sync feed's, and the forward-auth mirror's).
    pub fn into_wire(self) -> keygate_protocol::wire::KeyEntry {
        keygate_protocol::wire::KeyEntry {
            digest: keygate_protocol::Digest::from_bytes(self.digest),
            key_id: keygate_protocol::KeyId::from_bytes(*self.key_id.as_bytes()),
            owner: self.owner_id,
            expires_at: self.expires_at.map(|t| t.max(0) as u64),
            scopes: self.scopes,
            resources: self.resources,
        }
    }
}

/// The answer to a key-set read.
#[derive(Debug, Clone, PartialEq)]
pub enum SetRead {
    /// All entries at `revision`.
    Snapshot {
        /// The revision it brings the reader to.
        revision: i64,
        /// Every entry.
        entries: Vec<SetEntry>,
    },
    /// Changes from `base` to `revision`.
    Delta {
        /// The reader's revision.
        base: i64,
        /// The revision it brings the reader to.
        revision: i64,
        /// New or changed entries.
        upserts: Vec<SetEntry>,
        /// Digests that left the set.
        removals: Vec<[u8; 32]>,
    },
}

const SET_SELECT: &str = "SELECT k.digest AS digest, k.id AS id, k.owner_id AS owner_id, k.expires_at AS expires_at, \
     k.scopes AS scopes, k.resources AS resources FROM keys k \
     WHERE k.status = 'active' AND k.kind <> 'edge' AND (k.expires_at IS NULL OR k.expires_at > $1) \
     UNION ALL \
     SELECT r.digest AS digest, k.id AS id, k.owner_id AS owner_id, \
     CASE WHEN k.expires_at IS NULL OR k.expires_at > r.grace_until THEN r.grace_until ELSE k.expires_at END AS expires_at, \
     k.scopes AS scopes, k.resources AS resources FROM retired_secrets r JOIN keys k ON k.id = r.key_id \
     WHERE k.status = 'active' AND k.kind <> 'edge' AND r.grace_until > $1 \
     AND (k.expires_at IS NULL OR k.expires_at > $1)";

macro_rules! set_entry_from_row {
    ($row:expr) => {{
        let row = $row;
        let bad = |w: &str| sqlx::Error::Decode(format!("bad stored {w}").into());
        let digest: Vec<u8> = row.try_get("digest")?;
        let id: Vec<u8> = row.try_get("id")?;
        let scopes: String = row.try_get("scopes")?;
        let resources: String = row.try_get("resources")?;
        SetEntry {
            digest: digest.try_into().map_err(|_| bad("digest"))?,
            key_id: Uuid::from_slice(&id).map_err(|_| bad("id"))?,
            owner_id: row.try_get("owner_id")?,
            expires_at: row.try_get("expires_at")?,
            scopes: serde_json::from_str(&scopes).map_err(|_| bad("scopes"))?,
            resources: serde_json::from_str(&resources).map_err(|_| bad("resources"))?,
        }
    }};
}

/// Above this many changed digests, a delta is compared with the snapshot size.
const DELTA_COMPARE_THRESHOLD: usize = 256;

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
            row.map(|r| key_from_row!(&r)).transpose()
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
                return Ok(Some((key_from_row!(&r)?, None)));
            }
            let retired: Option<(Vec<u8>, i64)> =
                sqlx::query_as("SELECT key_id, grace_until FROM retired_secrets WHERE digest = $1")
                    .bind(digest.to_vec()).fetch_optional(p).await?;
            let Some((key_id, grace_until)) = retired else { return Ok(None) };
            let row = sqlx::query(concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"))
                .bind(key_id).fetch_optional(p).await?;
            row.map(|r| key_from_row!(&r).map(|k| (k, Some(grace_until)))).transpose()
        })
    }

    /// A page of keys in creation order.
    pub async fn list_keys(&self, f: &KeyFilter) -> Result<Vec<KeyRecord>, sqlx::Error> {
        enum B {
            T(String),
            Bytes(Vec<u8>),
        }
        let mut sql = String::from(concat!("SELECT ", key_cols!(), " FROM keys WHERE 1 = 1"));
        let mut binds = Vec::new();
        let mut push = |cond: &str, b: B| {
            binds.push(b);
            sql.push_str(&format!(" AND {cond} ${}", binds.len()));
        };
        if let Some(w) = &f.workspace_id {
            push("workspace_id =", B::T(w.clone()));
        }
        if let Some(s) = f.status {
            push("status =", B::T(s.as_str().into()));
        }
        if let Some(k) = f.kind {
            push("kind =", B::T(k.as_str().into()));
        }
        if let Some(o) = &f.owner_id {
            push("owner_id =", B::T(o.clone()));
        }
        if let Some(a) = f.after {
            push("id >", B::Bytes(a.as_bytes().to_vec()));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", f.limit.clamp(1, 1000)));
        on_db!(self, p => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for b in binds {
                q = match b { B::T(t) => q.bind(t), B::Bytes(v) => q.bind(v) };
            }
            q.fetch_all(p).await?.iter().map(|r| key_from_row!(r)).collect()
        })
    }

    /// Inserts a new key with its audit row and change-log row, in one transaction. For an
    /// exchanged child (`parent_id` set) the parent is re-checked inside the transaction:
    /// still active, and under the child limit.
    pub async fn insert_key(&self, k: &KeyRecord, audit: &AuditEntry<'_>) -> Result<i64, ApiError> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            if let Some(parent) = k.parent_id {
                let status: Option<String> = sqlx::query_scalar(
                    p.pick("SELECT status FROM keys WHERE id = $1", "SELECT status FROM keys WHERE id = $1 FOR UPDATE"),
                ).bind(parent.as_bytes().to_vec()).fetch_optional(&mut *tx).await?;
                if status.as_deref() != Some("active") {
                    return Err(ApiError::conflict("the parent key is not active"));
                }
                let children: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM keys WHERE parent_id = $1 AND status = 'active' \
                     AND (expires_at IS NULL OR expires_at > $2)",
                ).bind(parent.as_bytes().to_vec()).bind(k.created_at).fetch_one(&mut *tx).await?;
                domain::check_child_count(children)?;
            }
            sqlx::query("INSERT INTO workspaces (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(k.workspace_id.clone()).bind(k.created_at).execute(&mut *tx).await?;
            sqlx::query(concat!("INSERT INTO keys (", key_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"))
                .bind(k.id.as_bytes().to_vec())
                .bind(k.workspace_id.clone())
                .bind(k.name.clone())
                .bind(k.description.clone())
                .bind(k.kind.as_str())
                .bind(k.display_prefix.clone())
                .bind(k.digest.to_vec())
                .bind(k.hash_version)
                .bind(json(&k.scopes))
                .bind(json(&k.resources))
                .bind(k.status.as_str())
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
                .execute(&mut *tx).await?;
            insert_audit!(tx, audit);
            let rev = log_changes!(p, tx, [k.digest]);
            tx.commit().await?;
            Ok(rev)
        })
    }

    /// Applies a lifecycle change in one transaction: locks the key, lets `plan` decide from
    /// its current state, writes the key, the audit row, the rotated-out secret, the cascade to
    /// children (each with its own audit row) and the change log. `workspace` limits the key
    /// to one workspace (a workspace caller); a key outside it is not found.
    #[allow(clippy::too_many_arguments)] // one call site per action; a params struct would only rename them
    pub async fn change_key<F>(
        &self,
        id: Uuid,
        workspace: Option<&str>,
        actor: &Actor,
        action: &str,
        reason: Option<&str>,
        now: i64,
        plan: F,
    ) -> Result<(KeyRecord, i64), ApiError>
    where
        F: FnOnce(&KeyRecord) -> Result<Plan, ApiError>,
    {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let row = sqlx::query(p.pick(
                concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1"),
                concat!("SELECT ", key_cols!(), " FROM keys WHERE id = $1 FOR UPDATE"),
            )).bind(id.as_bytes().to_vec()).fetch_optional(&mut *tx).await?;
            let old = match row {
                Some(r) => key_from_row!(&r)?,
                None => return Err(ApiError::not_found("no such key")),
            };
            if workspace.is_some_and(|w| w != old.workspace_id) {
                return Err(ApiError::not_found("no such key"));
            }
            let Plan { new, retire, cascade } = plan(&old)?;
            update_key_row!(tx, &new);
            let mut touched: Vec<[u8; 32]> = vec![old.digest];
            if new.digest != old.digest {
                touched.push(new.digest);
            }
            if let Some((d, until)) = retire {
                sqlx::query("INSERT INTO retired_secrets (digest, key_id, grace_until) VALUES ($1, $2, $3)")
                    .bind(d.to_vec()).bind(id.as_bytes().to_vec()).bind(until).execute(&mut *tx).await?;
            }
            let retired: Vec<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM retired_secrets WHERE key_id = $1 AND grace_until > $2")
                .bind(id.as_bytes().to_vec()).bind(now).fetch_all(&mut *tx).await?;
            touched.extend(retired.into_iter().filter_map(|d| <[u8; 32]>::try_from(d).ok()));
            insert_audit!(tx, &AuditEntry {
                at: now,
                workspace_id: Some(&old.workspace_id),
                actor,
                action,
                key_id: Some(id),
                before: Some(crate::api::keys::audit_view(&old)),
                after: Some(crate::api::keys::audit_view(&new)),
                reason,
            });
            if let Some(c) = cascade {
                let (cond, child_action) = match c {
                    Cascade::Suspend => ("status = 'active'", "key.suspend"),
                    Cascade::Reactivate => ("status = 'suspended' AND suspended_by_parent = 1", "key.reactivate"),
                    Cascade::Revoke => ("status <> 'revoked'", "key.revoke"),
                };
                let sql = format!("SELECT {} FROM keys WHERE parent_id = $1 AND {cond}", key_cols!());
                let rows = sqlx::query(AssertSqlSafe(sql)).bind(id.as_bytes().to_vec()).fetch_all(&mut *tx).await?;
                for r in &rows {
                    let child = key_from_row!(r)?;
                    let mut after = child.clone();
                    after.updated_at = now;
                    match c {
                        Cascade::Suspend => { after.status = KeyStatus::Suspended; after.suspended_by_parent = true; }
                        Cascade::Reactivate => { after.status = KeyStatus::Active; after.suspended_by_parent = false; }
                        Cascade::Revoke => { after.status = KeyStatus::Revoked; after.revoked_at = Some(now); }
                    }
                    update_key_row!(tx, &after);
                    touched.push(child.digest);
                    insert_audit!(tx, &AuditEntry {
                        at: now,
                        workspace_id: Some(&child.workspace_id),
                        actor,
                        action: child_action,
                        key_id: Some(child.id),
                        before: Some(crate::api::keys::audit_view(&child)),
                        after: Some(crate::api::keys::audit_view(&after)),
                        reason: Some("cascaded from parent key"),
                    });
                }
            }
            let rev = log_changes!(p, tx, touched.iter());
            tx.commit().await?;
            Ok((new, rev))
        })
    }

    /// A page of audit rows, oldest first, after the cursor `after`.
    pub async fn list_audit(
        &self,
        workspace: Option<&str>,
        key: Option<Uuid>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, sqlx::Error> {
        let sql = "SELECT id, at, workspace_id, actor_id, actor_name, actor_prefix, action, key_id, before, after, reason \
                   FROM audit_log WHERE ($1 IS NULL OR workspace_id = $1) AND ($2 IS NULL OR key_id = $2) \
                   AND id > $3 ORDER BY id LIMIT $4";
        on_db!(self, p => {
            let rows = sqlx::query(p.pick(sql, "SELECT id, at, workspace_id, actor_id, actor_name, actor_prefix, action, \
                   key_id, before, after, reason FROM audit_log WHERE ($1::text IS NULL OR workspace_id = $1) \
                   AND ($2::bytea IS NULL OR key_id = $2) AND id > $3 ORDER BY id LIMIT $4"))
                .bind(workspace.map(str::to_owned))
                .bind(key.map(|k| k.as_bytes().to_vec()))
                .bind(after.unwrap_or(0))
                .bind(limit.clamp(1, 1000))
                .fetch_all(p).await?;
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
                    before: before.and_then(|s| serde_json::from_str(&s).ok()),
                    after: after.and_then(|s| serde_json::from_str(&s).ok()),
                    reason: r.try_get("reason")?,
                })
            }).collect()
        })
    }

    /// Reads the key set: a delta from `since` when possible and smaller, else a snapshot.
    /// The revision is read first; every change at or below it has committed (the counter row
    /// is locked until commit), so nothing at or below the answered revision can appear later.
    pub async fn read_set(&self, since: Option<i64>, now: i64) -> Result<SetRead, sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin().await?;
            let (revision, floor): (i64, i64) =
                sqlx::query_as("SELECT revision, floor FROM keyset_revision WHERE id = 1").fetch_one(&mut *tx).await?;
            if let Some(base) = since.filter(|s| *s >= floor && *s <= revision) {
                let changed: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT DISTINCT digest FROM keyset_changes WHERE revision > $1 AND revision <= $2",
                ).bind(base).bind(revision).fetch_all(&mut *tx).await?;
                let mut use_delta = true;
                if changed.len() > DELTA_COMPARE_THRESHOLD {
                    let total: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM ({SET_SELECT}) s")))
                        .bind(now).fetch_one(&mut *tx).await?;
                    use_delta = (changed.len() as i64) <= total;
                }
                if use_delta {
                    let sql = format!(
                        "SELECT * FROM ({SET_SELECT}) s WHERE s.digest IN \
                         (SELECT digest FROM keyset_changes WHERE revision > $2 AND revision <= $3)"
                    );
                    let rows = sqlx::query(AssertSqlSafe(sql)).bind(now).bind(base).bind(revision)
                        .fetch_all(&mut *tx).await?;
                    let mut upserts = Vec::with_capacity(rows.len());
                    for r in &rows {
                        upserts.push(set_entry_from_row!(r));
                    }
                    let present: std::collections::HashSet<[u8; 32]> = upserts.iter().map(|e| e.digest).collect();
                    let removals = changed.into_iter()
                        .filter_map(|d| <[u8; 32]>::try_from(d).ok())
                        .filter(|d| !present.contains(d))
                        .collect();
                    tx.commit().await?;
                    return Ok(SetRead::Delta { base, revision, upserts, removals });
                }
            }
            let rows = sqlx::query(SET_SELECT).bind(now).fetch_all(&mut *tx).await?;
            let mut entries = Vec::with_capacity(rows.len());
            for r in &rows {
                entries.push(set_entry_from_row!(r));
            }
            tx.commit().await?;
            Ok(SetRead::Snapshot { revision, entries })
        })
    }

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
            let sql = p.pick(
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = max(COALESCE(last_used_at, 0), $2) WHERE id = $3",
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $3",
            );
            for (id, count, last) in entries {
                sqlx::query(sql).bind(*count).bind(*last).bind(id.as_bytes().to_vec()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Adds usage counted in this process (verification), in one transaction.
    pub async fn add_usage(&self, entries: &[(Uuid, i64, i64)]) -> Result<(), sqlx::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let sql = p.pick(
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = max(COALESCE(last_used_at, 0), $2) WHERE id = $3",
                "UPDATE keys SET usage_count = usage_count + $1, last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) WHERE id = $3",
            );
            for (id, count, last) in entries {
                sqlx::query(sql).bind(*count).bind(*last).bind(id.as_bytes().to_vec()).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// Drops change-log rows more than `keep` revisions old and raises the floor; readers
    /// from below the floor get a snapshot.
    pub async fn prune_changes(&self, keep: i64) -> Result<(), sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            let rev: i64 = sqlx::query_scalar(p.pick(
                "SELECT revision FROM keyset_revision WHERE id = 1",
                "SELECT revision FROM keyset_revision WHERE id = 1 FOR UPDATE",
            )).fetch_one(&mut *tx).await?;
            let floor = rev - keep;
            if floor > 0 {
                sqlx::query("DELETE FROM keyset_changes WHERE revision <= $1").bind(floor).execute(&mut *tx).await?;
                sqlx::query("UPDATE keyset_revision SET floor = $1 WHERE id = 1 AND floor < $1").bind(floor).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// Counts keys (for start-up decisions and benchmarks).
    pub async fn count_keys(&self) -> Result<i64, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM keys").fetch_one(p).await)
    }
}

/// Kinds that may call the management API.
pub fn is_management_kind(kind: KeyKind) -> bool {
    kind == KeyKind::Workspace
}

impl Db {
    /// Appends one audit row in its own transaction.
    pub async fn insert_audit(&self, entry: &AuditEntry<'_>) -> Result<(), sqlx::Error> {
        on_db!(self, p => {
            let mut tx = p.begin_write().await?;
            insert_audit!(tx, entry);
            tx.commit().await
        })
    }
}
