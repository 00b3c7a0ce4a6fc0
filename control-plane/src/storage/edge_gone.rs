//! Edge-gone notices in the store: the registry's edges silent past `gone_after` with no
//! notice for their last report, and a notice's audit row (no key; the edge's facts as the
//! reason, with the webhook event it raises) written once per edge and last-seen time, in one
//! transaction with the notice's record (`edge_gone_notices`), whose insert re-checks the
//! silence: two replicas, or a restart, never raise one twice.

use super::edges::EdgeRow;
use super::notice::Bind::{Int, Text};
use super::{AuditEntry, Db, on_db};
use crate::domain::edge_gone::{EDGE_GONE_ACTION, edges_actor, reason};

impl Db {
    /// Edge ids silent since before `before` (unix seconds) with no notice for their last
    /// report, oldest first, at most `limit`.
    pub async fn edges_due_gone_notice(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar::<_, String>(
            "SELECT e.edge_id FROM edges e WHERE e.last_seen < $1 AND NOT EXISTS \
             (SELECT 1 FROM edge_gone_notices n WHERE n.edge_id = e.edge_id \
             AND n.last_seen = e.last_seen) ORDER BY e.last_seen LIMIT $2")
            .bind(before).bind(limit).fetch_all(p).await)
    }

    /// Raises `edge.gone` for `edge` (read by the caller) at `now`, when it is still silent
    /// since before `before` with the same last report and no notice was recorded for it:
    /// the notice's record, its audit row (no key, no workspace: the admin's endpoints see it)
    /// and webhook event, in one transaction. `Ok(false)` when nothing was written.
    pub async fn record_edge_gone(
        &self,
        edge: &EdgeRow,
        before: i64,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let r = &edge.report;
        let actor = edges_actor();
        let why = reason(
            &r.edge_id,
            r.node_id.as_deref(),
            edge.last_seen,
            r.applied_revision,
        );
        let entry = AuditEntry {
            at: now,
            workspace_id: None,
            actor: &actor,
            action: EDGE_GONE_ACTION,
            key_id: None,
            before: None,
            after: None,
            reason: Some(&why),
        };
        let claim = "INSERT INTO edge_gone_notices (edge_id, last_seen, noticed_at) \
             SELECT edge_id, last_seen, $3 FROM edges \
             WHERE edge_id = $1 AND last_seen = $2 AND last_seen < $4 \
             ON CONFLICT (edge_id, last_seen) DO NOTHING";
        let binds = vec![
            Text(r.edge_id.clone()),
            Int(edge.last_seen),
            Int(now),
            Int(before),
        ];
        self.write_once(Some((claim, binds)), &entry).await
    }
}
