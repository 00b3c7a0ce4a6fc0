//! The sync feed's side of the store: the key set as entries (what can pass: active, not
//! expired, plus rotated-out secrets in their grace period), read as a snapshot or as a delta
//! from the change log, and the change log's upkeep (pruning below a floor).

use sqlx::{AssertSqlSafe, Row};
use uuid::Uuid;

use super::{Db, Engine, on_db};
use crate::domain::limits::{Limits, ParentPolicy, own_or_default, resolve_policy};

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
    /// Its policy: state and rate limits, resolved (`domain::limits::resolve_policy`).
    pub policy: keygate_protocol::policy::Policy,
}

impl SetEntry {
    /// The entry in the wire format's terms (the sync feed's, and the forward-auth mirror's).
    pub fn into_wire(self) -> keygate_protocol::wire::KeyEntry {
        keygate_protocol::wire::KeyEntry {
            policy: self.policy,
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

/// What a key's policy is made of: its workspace (its owner pools' scope), its own limits and
/// balance, its workspace's default limits, its parent's limits and balance
/// (`domain::limits::resolve_policy` decides).
macro_rules! policy_cols {
    () => {
        "k.kind AS kind, k.workspace_id AS workspace_id, k.limits AS limits, \
     k.credits_remaining AS credits_remaining, w.default_limits AS ws_limits, pk.id AS parent, pk.limits AS parent_limits, \
     pk.credits_remaining AS parent_credits"
    };
}

/// Joins of `policy_cols!`.
macro_rules! policy_joins {
    () => {
        "LEFT JOIN workspaces w ON w.id = k.workspace_id LEFT JOIN keys pk ON pk.id = k.parent_id"
    };
}

const SET_SELECT: &str = concat!(
    "SELECT k.digest AS digest, k.id AS id, k.owner_id AS owner_id, k.expires_at AS expires_at, \
     k.scopes AS scopes, k.resources AS resources, ",
    policy_cols!(),
    " FROM keys k ",
    policy_joins!(),
    " WHERE k.status = 'active' AND k.kind <> 'edge' AND (k.expires_at IS NULL OR k.expires_at > $1) \
     UNION ALL \
     SELECT r.digest AS digest, k.id AS id, k.owner_id AS owner_id, \
     CASE WHEN k.expires_at IS NULL OR k.expires_at > r.grace_until THEN r.grace_until ELSE k.expires_at END AS expires_at, \
     k.scopes AS scopes, k.resources AS resources, ",
    policy_cols!(),
    " FROM retired_secrets r JOIN keys k ON k.id = r.key_id ",
    policy_joins!(),
    " WHERE k.status = 'active' AND k.kind <> 'edge' AND r.grace_until > $1 \
     AND (k.expires_at IS NULL OR k.expires_at > $1)"
);

/// A key's resolved policy from a row of `policy_cols!` (`domain::limits::resolve_policy`).
macro_rules! policy_from_row {
    ($row:expr) => {{
        let row = $row;
        let bad = |w: &str| sqlx::Error::Decode(format!("bad stored {w}").into());
        let limits = |col: &str| -> Result<Option<Limits>, sqlx::Error> {
            let text: Option<String> = row.try_get(col)?;
            text.map(|t| Limits::from_stored(&t).ok_or_else(|| bad(col)))
                .transpose()
        };
        let (own, ws, parent_own) = (
            limits("limits")?,
            limits("ws_limits")?,
            limits("parent_limits")?,
        );
        let has_parent = row.try_get::<Option<Vec<u8>>, _>("parent")?.is_some();
        let parent = has_parent.then(|| ParentPolicy {
            limits: own_or_default(parent_own.as_ref(), ws.as_ref()),
            credits_remaining: row.try_get("parent_credits").ok().flatten(),
        });
        let workspace: String = row.try_get("workspace_id")?;
        resolve_policy(
            &workspace,
            own_or_default(own.as_ref(), ws.as_ref()),
            row.try_get("credits_remaining")?,
            parent,
        )
    }};
}

macro_rules! set_entry_from_row {
    ($row:expr) => {{
        let row = $row;
        let bad = |w: &str| sqlx::Error::Decode(format!("bad stored {w}").into());
        let digest: Vec<u8> = row.try_get("digest")?;
        let id: Vec<u8> = row.try_get("id")?;
        let scopes: String = row.try_get("scopes")?;
        let resources: String = row.try_get("resources")?;
        let kind: String = row.try_get("kind")?;
        SetEntry {
            digest: digest.try_into().map_err(|_| bad("digest"))?,
            key_id: Uuid::from_slice(&id).map_err(|_| bad("id"))?,
            owner_id: row.try_get("owner_id")?,
            expires_at: row.try_get("expires_at")?,
            scopes: serde_json::from_str(&scopes).map_err(|_| bad("scopes"))?,
            resources: serde_json::from_str(&resources).map_err(|_| bad("resources"))?,
            // A canary's state is `Canary` whatever else its policy says (`domain::canary`).
            policy: crate::storage::canary::marked(
                kind == crate::domain::KeyKind::Canary.as_str(),
                policy_from_row!(row),
            ),
        }
    }};
}

/// Above this many changed digests, a delta is compared with the snapshot size.
const DELTA_COMPARE_THRESHOLD: usize = 256;

impl Db {
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

    /// Key `id`'s policy resolved as the key set carries it (its own limits or its workspace's
    /// defaults, bounded by its parent's; `credits_exhausted` when its balance or its parent's
    /// is 0), without the canary mark: what `POST /v1/keys/verify` enforces. `None`: no such key.
    pub async fn key_policy(
        &self,
        id: Uuid,
    ) -> Result<Option<keygate_protocol::policy::Policy>, sqlx::Error> {
        on_db!(self, p => {
            let row = sqlx::query(concat!(
                "SELECT ",
                policy_cols!(),
                " FROM keys k ",
                policy_joins!(),
                " WHERE k.id = $1"
            ))
            .bind(id.as_bytes().to_vec())
            .fetch_optional(p)
            .await?;
            match row {
                Some(r) => Ok(Some(policy_from_row!(&r))),
                None => Ok(None),
            }
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

    /// The change log's floor (readers below it get a snapshot) and the oldest revision it
    /// still holds (none when empty).
    pub async fn change_log_bounds(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        on_db!(self, p => {
            let floor = sqlx::query_scalar("SELECT floor FROM keyset_revision WHERE id = 1").fetch_one(p).await?;
            let oldest = sqlx::query_scalar("SELECT MIN(revision) FROM keyset_changes").fetch_one(p).await?;
            Ok((floor, oldest))
        })
    }
}
