//! Canary hits in the store: a canary's policy state in the key set, and a hit's audit row
//! (`key.canary_used`, with the webhook event it raises) written once per hit id, in one
//! transaction with the id's record.

use keygate_protocol::policy::{KeyState, Policy};

use super::notice::Bind::{Bytes, Int, Text};
use super::{AuditEntry, Db, on_db};
use crate::domain::canary::{CANARY_ACTION, Hit, HitSource};
use crate::domain::key::{Actor, KeyRecord, audit_view};

/// The key-set policy of an entry: a canary's state is `Canary`, whatever its limits or
/// credits would make it; any other key's policy is unchanged.
pub(crate) fn marked(canary: bool, mut policy: Policy) -> Policy {
    if canary {
        policy.state = KeyState::Canary;
    }
    policy
}

/// Who saw a hit, for its audit row.
#[derive(Debug, Clone, Copy)]
pub struct Witness<'a> {
    /// An edge (by its report) or the control plane.
    pub source: HitSource,
    /// The reporting edge's id, when it sent one.
    pub edge_id: Option<&'a str>,
    /// The credential that reported it (the edge key), or the control plane.
    pub actor: &'a Actor,
}

impl Db {
    /// Writes `hit` on the canary `key`: its audit row `key.canary_used` (the hit's facts as the
    /// reason, the key's public view as `before`) and its webhook event, in one transaction with
    /// the hit id's record. A hit whose id was recorded before writes nothing: `Ok(false)`.
    pub async fn record_canary_hit(
        &self,
        hit: &Hit,
        key: &KeyRecord,
        witness: &Witness<'_>,
        received_at: i64,
    ) -> Result<bool, sqlx::Error> {
        let reason = hit.reason(witness.source, witness.edge_id);
        let entry = AuditEntry {
            at: hit.at,
            workspace_id: Some(&key.workspace_id),
            actor: witness.actor,
            action: CANARY_ACTION,
            key_id: Some(key.id),
            before: Some(audit_view(key)),
            after: None,
            reason: Some(&reason),
        };
        let sql = "INSERT INTO canary_hits (id, key_id, at, received_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";
        // A hit without an id (the control plane's own) has nothing to claim.
        let claim = hit.id.as_ref().map(|id| {
            let key_id = Bytes(key.id.as_bytes().to_vec());
            (
                sql,
                vec![Text(id.clone()), key_id, Int(hit.at), Int(received_at)],
            )
        });
        self.write_once(claim, &entry).await
    }

    /// Whether a canary hit with this id was recorded (tests, and the console).
    pub async fn canary_hit_seen(&self, id: &str) -> Result<bool, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM canary_hits WHERE id = $1")
            .bind(id.to_owned()).fetch_one(p).await.map(|n| n > 0))
    }
}
