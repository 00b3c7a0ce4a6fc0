//! The edge registry on `Db`: one row per edge (proxy process) as its key-set calls report it,
//! upserted (first seen kept, the rest replaced), listed, and the change log's commit times an
//! edge's lag in seconds is read from. When to write is the runtime's (`runtime/edges.rs`,
//! after `domain::edges::must_write`); this file only stores and reads.

use std::collections::BTreeMap;

use sqlx::Row;
use uuid::Uuid;

use super::{Db, Engine, on_db};

/// What an edge reported on one key-set call, and where from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeReport {
    /// The edge's id (`keygate_protocol::edge::is_edge_id`).
    pub edge_id: String,
    /// Envoy's `node.id`.
    pub node_id: Option<String>,
    /// Envoy's `node.cluster`.
    pub node_cluster: Option<String>,
    /// The peer address of its connection.
    pub address: Option<String>,
    /// The edge key it presented.
    pub edge_key_id: Option<Uuid>,
    /// The revision its set holds (none before its first set).
    pub applied_revision: Option<i64>,
    /// Keys in its set.
    pub key_count: Option<i64>,
    /// Milliseconds since the last successful answer its set reflects.
    pub staleness_ms: Option<i64>,
    /// Workers in its process.
    pub workers: Option<i64>,
    /// The filter's version.
    pub version: Option<String>,
}

/// A registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRow {
    /// The last report.
    pub report: EdgeReport,
    /// First report, unix seconds.
    pub first_seen: i64,
    /// Last written report, unix seconds.
    pub last_seen: i64,
}

impl Db {
    /// Writes `report` as seen at `now`: a new row, or the edge's row with everything but its
    /// first-seen time replaced; then announces it (this process's edge watch, and on
    /// PostgreSQL `NOTIFY keygate_edges` for the other replicas).
    pub async fn upsert_edge(&self, report: &EdgeReport, now: i64) -> Result<(), sqlx::Error> {
        let r = report;
        on_db!(self, p => { sqlx::query(
            "INSERT INTO edges (edge_id, node_id, node_cluster, address, edge_key_id, applied_revision, \
             key_count, staleness_ms, workers, version, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             ON CONFLICT (edge_id) DO UPDATE SET node_id = excluded.node_id, \
             node_cluster = excluded.node_cluster, address = excluded.address, \
             edge_key_id = excluded.edge_key_id, applied_revision = excluded.applied_revision, \
             key_count = excluded.key_count, staleness_ms = excluded.staleness_ms, \
             workers = excluded.workers, version = excluded.version, last_seen = excluded.last_seen")
            .bind(&r.edge_id).bind(&r.node_id).bind(&r.node_cluster).bind(&r.address)
            .bind(r.edge_key_id.map(|k| k.as_bytes().to_vec()))
            .bind(r.applied_revision).bind(r.key_count).bind(r.staleness_ms).bind(r.workers)
            .bind(&r.version).bind(now)
            .execute(p).await?;
            let notify = p.pick("", "SELECT pg_notify('keygate_edges', '')");
            if !notify.is_empty() {
                sqlx::query(notify).execute(p).await?;
            }
        });
        self.observe_edge_report();
        Ok(())
    }

    /// Every edge in the registry, oldest first-seen first.
    pub async fn list_edges(&self) -> Result<Vec<EdgeRow>, sqlx::Error> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT edge_id, node_id, node_cluster, address, edge_key_id, applied_revision, \
                 key_count, staleness_ms, workers, version, first_seen, last_seen FROM edges \
                 ORDER BY first_seen, edge_id")
                .fetch_all(p).await?;
            rows.iter().map(|r| {
                let key: Option<Vec<u8>> = r.try_get("edge_key_id")?;
                Ok(EdgeRow {
                    report: EdgeReport {
                        edge_id: r.try_get("edge_id")?,
                        node_id: r.try_get("node_id")?,
                        node_cluster: r.try_get("node_cluster")?,
                        address: r.try_get("address")?,
                        edge_key_id: key.and_then(|k| Uuid::from_slice(&k).ok()),
                        applied_revision: r.try_get("applied_revision")?,
                        key_count: r.try_get("key_count")?,
                        staleness_ms: r.try_get("staleness_ms")?,
                        workers: r.try_get("workers")?,
                        version: r.try_get("version")?,
                    },
                    first_seen: r.try_get("first_seen")?,
                    last_seen: r.try_get("last_seen")?,
                })
            }).collect()
        })
    }

    /// When each revision after `after` was committed (revisions logged before commit times
    /// were kept are absent), for edges' lag in seconds.
    pub async fn revision_times_after(
        &self,
        after: i64,
    ) -> Result<BTreeMap<i64, i64>, sqlx::Error> {
        on_db!(self, p => {
            let rows = sqlx::query(
                "SELECT revision, MIN(changed_at) AS at FROM keyset_changes \
                 WHERE revision > $1 AND changed_at IS NOT NULL GROUP BY revision")
                .bind(after).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get("revision")?, r.try_get("at")?))).collect()
        })
    }

    /// The revision at which the key `id`'s current state entered the key set (the last
    /// change logged for its secret or its rotated-out ones); 0 when none is retained.
    pub async fn key_revision(&self, id: Uuid) -> Result<i64, sqlx::Error> {
        on_db!(self, p => {
            let rev: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(c.revision) FROM keyset_changes c WHERE c.digest IN \
                 (SELECT digest FROM keys WHERE id = $1 UNION SELECT digest FROM retired_secrets WHERE key_id = $1)")
                .bind(id.as_bytes().to_vec()).fetch_one(p).await?;
            Ok(rev.unwrap_or(0))
        })
    }
}
