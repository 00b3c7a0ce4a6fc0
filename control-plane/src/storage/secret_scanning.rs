//! GitHub secret scanning alerts already acted on, by the SHA-256 of their signed body, so a
//! replayed alert changes nothing.

use super::{Db, on_db};

impl Db {
    /// Whether an alert with this body digest was acted on.
    pub async fn alert_seen(&self, body_digest: &[u8; 32]) -> Result<bool, sqlx::Error> {
        on_db!(self, p => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM secret_scanning_alerts WHERE body_digest = $1",
        )
        .bind(body_digest.to_vec()).fetch_one(p).await.map(|n| n > 0))
    }

    /// Records that an alert was acted on (after its changes: a crash before this lets GitHub's
    /// retry act again, and acting twice changes nothing more).
    pub async fn record_alert(&self, body_digest: &[u8; 32], at: i64) -> Result<(), sqlx::Error> {
        on_db!(self, p => sqlx::query(
            "INSERT INTO secret_scanning_alerts (body_digest, received_at) VALUES ($1, $2) \
             ON CONFLICT (body_digest) DO NOTHING",
        )
        .bind(body_digest.to_vec()).bind(at).execute(p).await.map(|_| ()))
    }
}
